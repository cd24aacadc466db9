"""ModelManager: version discovery, policies, availability-preserving reloads, drain, failures.

The models are tiny SavedModels built here: ``y = 0 * sum(x) + c`` with ``c`` a
variable, so every version answers a different constant and a test can tell
which version served each request.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from recstrata.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from recstrata.serving import ModelManager, UnavailableError, VersionPolicy

from serving_helpers import X, build_const_model, const_models, put_version  # noqa: F401


def value_of(mgr: ModelManager, name: str = "m", version: int | None = None) -> float:
    y = mgr.predict(name, X, version=version)["y"]
    assert y.shape == (3,) and np.all(y == y[0])
    return float(y[0])


def wait_for(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def states(mgr, name="m"):
    return {v["version"]: v["state"] for v in mgr.status(name)["versions"]}


def test_latest_policy_serves_newest_and_ignores_non_version_entries(tmp_path, const_models):
    put_version(tmp_path, 1, const_models[1])
    put_version(tmp_path, 2, const_models[2])
    shutil.copytree(const_models[3], tmp_path / "3.tmp")  # complete, but not a version name
    (tmp_path / "4").write_text("a file, not a directory")
    with ModelManager({"m": tmp_path}) as mgr:
        st = mgr.status("m")
        assert st["serving"] == [2] and st["default_version"] == 2 and st["policy"] == "latest"
        assert value_of(mgr) == 2.0
        assert value_of(mgr, version=2) == 2.0
        with pytest.raises(NotFoundError, match="version 1 of model 'm' is not serving"):
            mgr.predict("m", X, version=1)
        assert states(mgr) == {2: "AVAILABLE"}


@pytest.mark.parametrize("policy, serving, default", [
    ("all", [1, 2, 3], 3),
    ("latest:2", [2, 3], 3),
    ("specific:1,3", [1, 3], 3),
    (VersionPolicy.specific([2, 7]), [2], 2),  # 7 is not on disk: ignored
])
def test_version_policies(tmp_path, const_models, policy, serving, default):
    for v in (1, 2, 3):
        put_version(tmp_path, v, const_models[v])
    with ModelManager({"m": {"base_path": tmp_path, "policy": policy}}) as mgr:
        st = mgr.status("m")
        assert st["serving"] == serving
        assert st["default_version"] == default
        for v in serving:
            assert value_of(mgr, version=v) == float(v)
        assert value_of(mgr) == float(default)


def test_policy_parse_rejects_garbage():
    for bad in ("newest", "latest:0", "latest:x", "specific:", "specific:0,2", "all:2"):
        with pytest.raises(InvalidArgumentError):
            VersionPolicy.parse(bad)
    # The host applies policies (tests/test_host.py); here: what the host is given.
    assert VersionPolicy.parse("latest:3").to_config() == {"latest": {"num_versions": 3}}
    assert VersionPolicy.parse("specific:3,1").to_config() == {"specific": {"versions": [1, 3]}}
    assert VersionPolicy.parse("all").to_config() == {"all": {}}
    with pytest.raises(InvalidArgumentError, match="unknown version policy"):
        ModelManager({"m": {"base_path": "/nonexistent", "policy": VersionPolicy("newest")}})


def test_half_written_version_is_not_loaded_until_complete(tmp_path, const_models):
    put_version(tmp_path, 1, const_models[1])
    with ModelManager({"m": tmp_path}) as mgr:
        # A copy in progress: variables are there, saved_model.pb is not yet.
        shutil.copytree(const_models[2], tmp_path / "2", ignore=shutil.ignore_patterns("saved_model.pb"))
        mgr.poll()
        st = mgr.status("m")
        assert st["serving"] == [1] and st["incomplete_versions"] == [2]
        assert 2 not in states(mgr)
        assert value_of(mgr) == 1.0
        shutil.copy(const_models[2] / "saved_model.pb", tmp_path / "2" / "saved_model.pb")
        actions = mgr.poll()
        assert any("version 2 available" in a for a in actions)
        assert value_of(mgr) == 2.0
        assert mgr.status("m")["incomplete_versions"] == []


def test_failed_load_keeps_old_version_serving_and_is_retried_when_dir_changes(tmp_path, const_models):
    put_version(tmp_path, 1, const_models[1])
    with ModelManager({"m": tmp_path}, retry_seconds=3600) as mgr:
        bad = tmp_path / "2"
        bad.mkdir()
        (bad / "saved_model.pb").write_bytes(b"this is not a protobuf")
        mgr.poll()
        v2 = [v for v in mgr.status("m")["versions"] if v["version"] == 2][0]
        assert v2["state"] == "FAILED" and v2["load_failures"] == 1 and v2["error"]
        assert mgr.status("m")["serving"] == [1]
        assert value_of(mgr) == 1.0
        mgr.poll()  # unchanged directory, retry interval not reached: no new attempt
        v2 = [v for v in mgr.status("m")["versions"] if v["version"] == 2][0]
        assert v2["load_failures"] == 1
        shutil.rmtree(bad)
        shutil.copytree(const_models[2], bad)  # the writer fixed it
        mgr.poll()
        assert states(mgr)[2] == "AVAILABLE" and value_of(mgr) == 2.0
        assert wait_for(lambda: states(mgr)[1] == "END")


def test_first_load_failure_reports_unavailable_with_the_reason(tmp_path):
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"\x00garbage")
    with ModelManager({"m": tmp_path, "empty": tmp_path / "none"}) as mgr:
        with pytest.raises(UnavailableError, match="version 1 failed to load"):
            mgr.predict("m", X)
        with pytest.raises(UnavailableError, match="cannot list base path"):
            mgr.predict("empty", X)
        assert mgr.status("empty")["base_error"]
        with pytest.raises(NotFoundError, match="no model named 'nope'"):
            mgr.predict("nope", X)


def test_old_version_closed_only_after_in_flight_requests_drain(tmp_path, const_models):
    put_version(tmp_path, 1, const_models[1])
    with ModelManager({"m": tmp_path}) as mgr:
        lease = mgr.lease("m")
        old_model = lease.model
        assert lease.version == 1
        put_version(tmp_path, 2, const_models[2])
        mgr.poll()
        # New requests go to v2; v1 is retired but still open for the request in flight.
        assert value_of(mgr) == 2.0
        v1 = [v for v in mgr.status("m")["versions"] if v["version"] == 1][0]
        assert v1["state"] == "UNLOADING" and v1["in_flight"] == 1
        assert not old_model.closed
        assert float(old_model.run(X)["y"][0]) == 1.0  # the in-flight request completes on v1
        lease.__exit__(None, None, None)
        assert wait_for(lambda: old_model.closed)
        assert wait_for(lambda: states(mgr)[1] == "END")


def test_swap_under_concurrent_load_has_no_failed_request(tmp_path, const_models):
    put_version(tmp_path, 1, const_models[1])
    mgr = ModelManager({"m": tmp_path}, poll_seconds=0.05)  # background poll thread
    old_model = mgr.lease("m")
    old_model.__exit__(None, None, None)
    old_model = old_model.model
    seen: list[list[float]] = [[] for _ in range(4)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def client(i):
        while not stop.is_set():
            try:
                seen[i].append(value_of(mgr))
            except BaseException as exc:  # any failure fails the test
                errors.append(exc)
                return

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        assert wait_for(lambda: all(len(s) >= 5 for s in seen))
        put_version(tmp_path, 2, const_models[2])
        assert wait_for(lambda: all(s and s[-1] == 2.0 for s in seen), timeout=30)
        n_before = [len(s) for s in seen]
        assert wait_for(lambda: all(len(s) >= n + 3 for s, n in zip(seen, n_before)))
    finally:
        stop.set()
        for t in threads:
            t.join()
        mgr.close()
    assert errors == []
    for s in seen:
        assert set(s) == {1.0, 2.0}
        first_two = s.index(2.0)
        assert all(v == 1.0 for v in s[:first_two]) and all(v == 2.0 for v in s[first_two:])
    assert old_model.closed


def test_removed_newest_version_falls_back_to_previous(tmp_path, const_models):
    put_version(tmp_path, 1, const_models[1])
    put_version(tmp_path, 2, const_models[2])
    with ModelManager({"m": tmp_path}) as mgr:
        assert value_of(mgr) == 2.0
        shutil.rmtree(tmp_path / "2")
        mgr.poll()
        assert mgr.status("m")["serving"] == [1]
        assert value_of(mgr) == 1.0


def test_pin_rolls_back_and_unpin_returns_to_the_policy(tmp_path, const_models):
    for v in (1, 2):
        put_version(tmp_path, v, const_models[v])
    with ModelManager({"m": tmp_path}) as mgr:
        assert value_of(mgr) == 2.0
        mgr.pin("m", 1)
        assert value_of(mgr) == 1.0 and mgr.status("m")["pinned"] and mgr.status("m")["serving"] == [1]
        with pytest.raises(NotFoundError):
            mgr.pin("m", 9)
        assert value_of(mgr) == 1.0  # a failed pin changes nothing
        mgr.unpin("m")
        assert value_of(mgr) == 2.0 and not mgr.status("m")["pinned"]
        mgr.set_policy("m", "all")
        assert mgr.status("m")["serving"] == [1, 2] and mgr.status("m")["policy"] == "all"


def test_unsupported_options_are_refused(tmp_path, const_models):
    put_version(tmp_path, 1, const_models[1])
    with pytest.raises(TypeError):  # the native host has no "resource" reload mode
        ModelManager({"m": tmp_path}, reload="resource")
    with pytest.raises(InvalidArgumentError, match="base_path"):
        ModelManager({"m": {"path": tmp_path}})
    with pytest.raises(InvalidArgumentError):
        ModelManager({})


def _thread_nices() -> set[int]:
    """Nice values of this process's threads now (/proc/self/task/*/stat field 19)."""
    out = set()
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = open(f"/proc/self/task/{tid}/stat").read()
        except OSError:  # the thread ended meanwhile
            continue
        out.add(int(stat.rsplit(")", 1)[1].split()[16]))
    return out


def test_loader_thread_runs_at_lower_priority(tmp_path, const_models):
    put_version(tmp_path, 1, const_models[1])
    base_nice = os.getpriority(os.PRIO_PROCESS, 0)
    seen: set[int] = set()
    stop = threading.Event()

    def sample():  # the native loader thread lives while version 2 loads and warms up
        while not stop.is_set():
            seen.update(_thread_nices())

    # Many warmup runs keep the loader thread alive long enough to be seen.
    with ModelManager({"m": tmp_path}, config={"warmup_runs": 3000}, load_nice=5) as mgr:
        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            put_version(tmp_path, 2, const_models[2])
            mgr.poll()
        finally:
            stop.set()
            sampler.join()
        assert value_of(mgr) == 2.0
        assert min(19, base_nice + 5) in seen
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base_nice
        v2 = [v for v in mgr.status("m")["versions"] if v["version"] == 2][0]
        assert v2["loader"] == "nice +5"


def test_close_refuses_requests_and_closes_every_version(tmp_path, const_models):
    for v in (1, 2):
        put_version(tmp_path, v, const_models[v])
    mgr = ModelManager({"m": {"base_path": tmp_path, "policy": "all"}}, poll_seconds=0.05)
    models = []
    for v in (1, 2):
        with mgr.lease("m", v) as lease:
            models.append(lease.model)
    mgr.close()
    mgr.close()  # idempotent
    assert all(m.closed for m in models)
    with pytest.raises(FailedPreconditionError):
        mgr.predict("m", X)
    assert mgr.poll() == []


BUNDLE_CONFIG = {
    "name": "mgr", "label": "label",
    "sparse": [{"name": "uid", "dim": 4, "embedding": {"kind": "plain", "rows": 1000}}],
    "dense": [{"name": "d0"}],
    "model": {"type": "wdl", "hidden": [8]},
    "data": {"format": "synthetic", "synthetic": {"num_train": 10, "num_eval": 10}},
}


def test_bundle_versions_are_served_and_half_written_bundles_skipped(tmp_path, const_models):
    pytest.importorskip("tensorflow")
    from recstrata.training.export import export_bundle
    from recstrata.training.models import RecModel
    from recstrata.training.spec import parse_config

    model = RecModel(parse_config(BUNDLE_CONFIG), name="rec_model")
    model.build_with_dummy()
    bundle = export_bundle(model, tmp_path / "export", tiers="dram")
    base = tmp_path / "base"
    base.mkdir()
    put_version(base, 1, const_models[1])
    with ModelManager({"m": base}) as mgr:
        # version 2 is a bundle still being copied: everything but its manifest
        shutil.copytree(bundle["path"], base / "2", ignore=shutil.ignore_patterns("bundle.json"))
        mgr.poll()
        assert mgr.status("m")["serving"] == [1] and mgr.status("m")["incomplete_versions"] == [2]
        shutil.copy(Path(bundle["path"]) / "bundle.json", base / "2" / "bundle.json")
        mgr.poll()
        assert mgr.status("m")["serving"] == [2]
        feeds = {"uid": np.arange(4, dtype=np.int64), "dense": np.ones((4, 1), np.float32)}
        # only bundle versions export store tables
        assert re.search(r'^rs_host_store_rows\{model="m",version="2",table="uid"\} \d+$',
                         mgr.metrics_text(), re.M), mgr.metrics_text()
        from recstrata.processor import Model

        with Model(bundle["path"]) as direct:  # the exported bundle opened on its own
            expected = direct.run(feeds)
        out = mgr.predict("m", feeds)
        assert out.keys() == expected.keys()
        for k in out:
            np.testing.assert_array_equal(out[k], expected[k])
