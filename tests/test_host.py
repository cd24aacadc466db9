"""The native model host (rs_host through recstrata.host): discovery, policies,
swaps and rollbacks under load, leases and drain, failures, bad input, metrics.

Models are the const SavedModels of serving_helpers (y = value), copied into
version directories, so every answer tells which version served it: model
"a" answers the version number, model "b" ten times it.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time

import numpy as np
import pytest

from recstrata.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from recstrata.host import Host, policy_json

from serving_helpers import X, build_const_model, put_version


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """{("a"|"b", version): SavedModel dir}; a answers v, b answers 10 * v."""
    root = tmp_path_factory.mktemp("host_templates")
    out = {}
    for v in (1, 2, 3):
        out["a", v] = build_const_model(root / f"a{v}", float(v))
        out["b", v] = build_const_model(root / f"b{v}", 10.0 * v)
    return out


def scale(model: str) -> float:
    return 1.0 if model == "a" else 10.0


def value(host: Host, model: str, version: int = 0) -> tuple[float, int]:
    out, v = host.run_versioned(model, X, version)
    y = out["y"]
    assert y.shape == (3,) and np.all(y == y[0])
    return float(y[0]), v


def make_bases(tmp_path, templates, versions=(1, 2)):
    bases = {}
    for m in ("a", "b"):
        bases[m] = tmp_path / m
        bases[m].mkdir()
        for v in versions:
            put_version(bases[m], v, templates[m, v])
    return bases


def config(bases, **extra):
    models = [{"name": m, "base_path": str(b)} for m, b in bases.items()]
    return {"models": models, "model_config": {"warmup_runs": 1}, **extra}


def states(host, model):
    return {v["version"]: v["state"] for v in host.status(model)["versions"]}


def wait_for(pred, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


# ---- discovery and policies ---------------------------------------------------------


def test_latest_policy_serves_newest_and_ignores_non_version_entries(tmp_path, templates):
    bases = make_bases(tmp_path, templates)
    shutil.copytree(templates["a", 3], bases["a"] / "3.tmp")   # complete, not a version name
    shutil.copytree(templates["a", 3], bases["a"] / "0")       # versions start at 1
    (bases["a"] / "4").write_text("a file, not a directory")
    (bases["a"] / "5").mkdir()                                   # incomplete: no saved_model.pb
    with Host(config(bases)) as host:
        st = host.status("a")
        assert st["serving"] == [2] and st["default_version"] == 2 and st["policy"] == "latest"
        assert st["incomplete_versions"] == [5] and st["ready"] is True
        assert value(host, "a") == (2.0, 2)
        assert value(host, "b", 2) == (20.0, 2)
        with pytest.raises(NotFoundError, match=r"version 1 of model 'a' is not serving \(serving: 2\)"):
            host.run("a", X, version=1)
        assert states(host, "a") == {2: "ready"}


@pytest.mark.parametrize("policy, serving, default", [
    ({"all": {}}, [1, 2, 3], 3),
    ({"latest": {"num_versions": 2}}, [2, 3], 3),
    ({"specific": {"versions": [1, 3]}}, [1, 3], 3),
    ({"specific": {"versions": [1, 7]}}, [1], 1),
])
def test_version_policies(tmp_path, templates, policy, serving, default):
    bases = make_bases(tmp_path, templates, versions=(1, 2, 3))
    cfg = config({"a": bases["a"]})
    cfg["models"][0]["version_policy"] = policy
    with Host(cfg) as host:
        st = host.status("a")
        assert st["serving"] == serving and st["default_version"] == default
        for v in serving:
            assert value(host, "a", v) == (float(v), v)
        assert value(host, "a") == (float(default), default)


def test_predict_bytes_and_leases(tmp_path, templates):
    from recstrata.wire import predict_pb2 as pb

    bases = make_bases(tmp_path, templates)
    cfg = config(bases)
    cfg["models"][1]["version_policy"] = {"all": {}}
    req = pb.PredictRequest()
    req.inputs["x"].dtype = pb.DT_FLOAT
    req.inputs["x"].array_shape.dim.extend([3, 2])
    req.inputs["x"].float_val.extend([1.0] * 6)
    with Host(cfg) as host:
        body, v = host.predict_bytes_versioned("b", req.SerializeToString(), 1)
        assert v == 1 and list(pb.PredictResponse.FromString(body).outputs["y"].float_val) == [10.0] * 3
        assert b'"name":"x"' in host.predict_bytes("b", b"")  # empty request: the signature
        with host.acquire("b") as lease:
            assert lease.version == 2
            assert float(lease.run(X)["y"][0]) == 20.0
            resp = pb.PredictResponse.FromString(lease.predict_bytes(req.SerializeToString()))
            assert list(resp.outputs["y"].float_val) == [20.0] * 3
        with pytest.raises(FailedPreconditionError, match="released"):
            lease.run(X)


# ---- swaps, rollbacks, drain ---------------------------------------------------------


def test_swap_and_rollback_under_concurrent_load_have_no_failed_request(tmp_path, templates):
    bases = make_bases(tmp_path, templates)
    host = Host(config(bases))
    lock = threading.Lock()
    phase = [0]                     # even: stable, odd: a swap is running
    expected = {"a": 2, "b": 2}
    stop = threading.Event()
    failures, wrong, stable_checked = [], [], [0]

    def client(i):
        n = 0
        while not stop.is_set():
            model = "ab"[(i + n) % 2]
            with lock:
                p0, want = phase[0], expected[model]
            try:
                got, v = value(host, model)
            except Exception as exc:  # any failure counts
                failures.append(repr(exc))
                continue
            with lock:
                p1 = phase[0]
            if got != scale(model) * v:
                wrong.append(f"{model}: {got} from version {v}")
            elif p0 == p1 and p0 % 2 == 0:
                stable_checked[0] += 1
                if v != want:
                    wrong.append(f"phase {p0}: {model} answered by {v}, expected {want}")
            n += 1

    def swap(op, a, b):
        with lock:
            phase[0] += 1
        op()
        with lock:
            expected.update(a=a, b=b)
            phase[0] += 1
        time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.05)
        swap(lambda: (put_version(bases["a"], 3, templates["a", 3]), host.reload("a")), 3, 2)
        swap(lambda: host.pin("a", 1), 1, 2)
        swap(lambda: (put_version(bases["b"], 3, templates["b", 3]), host.reload()), 1, 3)
        swap(lambda: host.pin("b", 2), 1, 2)
        for _ in range(2):
            swap(lambda: host.unpin("a"), 3, 2)
            swap(lambda: host.pin("a", 2), 2, 2)
        swap(lambda: host.set_policy("a", "latest"), 3, 2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    try:
        assert failures == [] and wrong == []
        assert stable_checked[0] > 0
        st = host.status()
        served = {m["name"]: m["serving"] for m in st["models"]}
        assert served == {"a": [3], "b": [2]}
        assert wait_for(lambda: all(s in ("ready", "end") for s in states(host, "a").values()))
    finally:
        host.close()


def test_lease_keeps_a_retired_version_open_until_released(tmp_path, templates):
    bases = make_bases(tmp_path, templates, versions=(1,))
    with Host(config(bases)) as host:
        lease = host.acquire("a")
        assert lease.version == 1
        put_version(bases["a"], 2, templates["a", 2])
        host.reload("a")
        assert value(host, "a") == (2.0, 2)
        assert states(host, "a") == {2: "ready", 1: "unloading"}
        v1 = [v for v in host.status("a")["versions"] if v["version"] == 1][0]
        assert v1["in_flight"] == 1
        assert float(lease.run(X)["y"][0]) == 1.0  # still answered by version 1
        lease.release()
        assert wait_for(lambda: states(host, "a")[1] == "end")
        with pytest.raises(NotFoundError):
            host.run("a", X, version=1)


def test_lease_describes_its_version_without_counting_a_request(tmp_path, templates):
    bases = make_bases(tmp_path, templates, versions=(1,))
    with Host(config(bases)) as host:
        with host.acquire("a") as lease:
            d = lease.describe()
            assert [i["name"] for i in d["signature"]["inputs"]] == ["x"]
            assert [o["name"] for o in d["signature"]["outputs"]] == ["y"]
        assert host.status("a")["versions"][0]["requests"] == 0
        lease2 = host.acquire("a")
        lease2.release()
        with pytest.raises(FailedPreconditionError, match="lease is released"):
            lease2.describe()


def test_lease_outlives_host_close(tmp_path, templates):
    bases = make_bases(tmp_path, templates, versions=(1,))
    host = Host(config(bases))
    lease = host.acquire("b")
    host.close()
    assert float(lease.run(X)["y"][0]) == 10.0
    lease.release()


def test_pin_errors_leave_policy_unchanged(tmp_path, templates):
    bases = make_bases(tmp_path, templates)
    with Host(config(bases)) as host:
        with pytest.raises(NotFoundError, match="version 9 of model 'a' is not a complete version directory"):
            host.pin("a", 9)
        (bases["a"] / "1" / "saved_model.pb").write_bytes(b"garbage")  # version 1 now fails to load
        with pytest.raises(Exception, match="pin: version 1 of model 'a' could not be served"):
            host.pin("a", 1)
        st = host.status("a")
        assert st["policy"] == "latest" and not st["pinned"] and st["serving"] == [2]
        assert value(host, "a") == (2.0, 2)
        host.pin("a", 2)
        assert host.status("a")["pinned"] and host.status("a")["policy"] == "specific:2"
        host.unpin("a")
        assert not host.status("a")["pinned"]


# ---- failures --------------------------------------------------------------------------


def test_failed_load_keeps_old_version_serving_and_is_retried_when_dir_changes(tmp_path, templates):
    bases = make_bases(tmp_path, templates, versions=(1,))
    with Host(config(bases)) as host:
        bad = bases["a"] / "2"
        bad.mkdir()
        (bad / "saved_model.pb").write_bytes(b"not a SavedModel")
        host.reload("a")
        st = host.status("a")
        assert st["serving"] == [1]
        v2 = [v for v in st["versions"] if v["version"] == 2][0]
        assert v2["state"] == "failed" and v2["error"] and v2["load_failures"] == 1
        assert value(host, "a") == (1.0, 1)
        host.reload("a")  # directory unchanged, retry_seconds not over: not retried
        assert [v for v in host.status("a")["versions"] if v["version"] == 2][0]["load_failures"] == 1
        shutil.rmtree(bad)
        put_version(bases["a"], 2, templates["a", 2])
        host.reload("a")
        assert host.status("a")["serving"] == [2] and value(host, "a") == (2.0, 2)


def test_first_load_failure_reports_unavailable_with_the_reason(tmp_path):
    base = tmp_path / "m"
    (base / "1").mkdir(parents=True)
    (base / "1" / "saved_model.pb").write_bytes(b"junk")
    empty = tmp_path / "empty"
    empty.mkdir()
    with Host({"models": [{"name": "m", "base_path": str(base)}, {"name": "e", "base_path": str(empty)},
                          {"name": "gone", "base_path": str(tmp_path / "nope")}]}) as host:
        assert host.status("m")["ready"] is False
        with pytest.raises(FailedPreconditionError, match="'m' has no version serving .version 1 failed to load"):
            host.run("m", X)
        with pytest.raises(FailedPreconditionError, match="no complete version directory"):
            host.run("e", X)
        with pytest.raises(FailedPreconditionError, match="cannot list base path"):
            host.run("gone", X)
        assert "cannot list base path" in host.status("gone")["base_error"]


def test_deleted_version_dir_while_serving(tmp_path, templates):
    bases = make_bases(tmp_path, templates)
    with Host(config(bases)) as host:
        assert value(host, "a") == (2.0, 2)
        shutil.rmtree(bases["a"] / "2")
        assert value(host, "a") == (2.0, 2)  # the open version still answers
        host.reload("a")                     # falls back to the newest left on disk
        assert host.status("a")["serving"] == [1] and value(host, "a") == (1.0, 1)
        shutil.rmtree(bases["a"] / "1")
        host.reload("a")                     # nothing wanted is on disk: keep serving
        assert host.status("a")["serving"] == [1] and value(host, "a") == (1.0, 1)
        shutil.rmtree(bases["a"])
        host.reload("a")
        assert "cannot list base path" in host.status("a")["base_error"] and value(host, "a") == (1.0, 1)


def test_close_racing_with_predicts(tmp_path, templates):
    bases = make_bases(tmp_path, templates)
    host = Host(config(bases))
    results, errors, started = [], [], threading.Barrier(5)

    def client():
        started.wait()
        for _ in range(400):
            try:
                results.append(value(host, "a"))
            except FailedPreconditionError as exc:
                errors.append(str(exc))
                return
            except Exception as exc:  # anything else is a bug
                errors.append(f"unexpected {exc!r}")
                return

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    started.wait()
    time.sleep(0.02)
    host.close()
    for t in threads:
        t.join()
    assert results and all(r == (2.0, 2) for r in results)
    assert all(e == "host is closed" for e in errors), errors
    with pytest.raises(FailedPreconditionError, match="host is closed"):
        host.run("a", X)
    host.close()  # idempotent


def test_background_discovery_picks_up_new_versions(tmp_path, templates):
    bases = make_bases(tmp_path, templates, versions=(1,))
    with Host(config(bases, poll_interval_seconds=0.1)) as host:
        assert value(host, "a") == (1.0, 1)
        put_version(bases["a"], 2, templates["a", 2])
        assert wait_for(lambda: host.status("a")["serving"] == [2])
        assert value(host, "a") == (2.0, 2)
        # the pass that published version 2 counts once it has finished (it retires version 1 first)
        assert wait_for(lambda: host.status()["polls"] > 1)


# ---- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize("cfg, needle", [
    ("", "empty"),
    ("{", "host config"),
    ("[]", "host config"),
    ({"models": []}, '"models" is empty'),
    ({"models": [{"name": "m"}]}, "has no base_path"),
    ({"models": [{"name": "", "base_path": "/x"}]}, "model name must be non-empty"),
    ({"models": [{"name": "a/b", "base_path": "/x"}]}, "without '/'"),
    ({"models": [{"name": "m", "base_path": "/x"}] * 2}, "listed twice"),
    ({"models": [{"name": "m", "base_path": "/x", "colour": "red"}]}, "colour"),
    ({"models": [{"name": "m", "base_path": "/x", "model_config": 3}]}, "models[0].model_config must be a JSON object"),
    ({"models": [{"name": "m", "base_path": "/x", "version_policy": {"specific": {"versions": []}}}]},
     "needs at least one version"),
    ({"models": [{"name": "m", "base_path": "/x", "version_policy": {"specific": {"versions": [0]}}}]}, "not >= 1"),
    ({"models": [{"name": "m", "base_path": "/x", "version_policy": {"latest": {}, "all": {}}}]}, "host config"),
    ({"models": [{"name": "m", "base_path": "/x"}], "poll_interval_seconds": -1}, "poll_interval_seconds"),
    ({"models": [{"name": "m", "base_path": "/x"}], "poll_interval_seconds": "soon"}, "host config"),
])
def test_bad_config_is_invalid_argument(cfg, needle):
    with pytest.raises(InvalidArgumentError) as exc:
        Host(cfg if isinstance(cfg, str) else json.dumps(cfg))
    assert needle in str(exc.value)


def test_bad_model_config_fails_the_version_not_the_host(tmp_path, templates):
    bases = make_bases(tmp_path, templates, versions=(1,))
    cfg = config(bases)
    cfg["models"][0]["model_config"] = {"session_num": "many"}
    with Host(cfg) as host:
        v1 = host.status("a")["versions"][0]
        assert v1["state"] == "failed" and "session_num" in v1["error"]
        assert value(host, "b") == (10.0, 1)  # the other model is fine


def test_unknown_model_version_and_bad_calls(tmp_path, templates):
    bases = make_bases(tmp_path, templates)
    with Host(config(bases)) as host:
        with pytest.raises(NotFoundError, match="no model named 'zz' .models: a, b."):
            host.run("zz", X)
        with pytest.raises(NotFoundError):
            host.acquire("a", 7)
        with pytest.raises(NotFoundError):
            host.reload("zz")
        with pytest.raises(InvalidArgumentError, match="negative"):
            host.run("a", X, version=-1)
        with pytest.raises(InvalidArgumentError, match="bad version policy"):
            host.set_policy("a", {"newest": {}})
        with pytest.raises(InvalidArgumentError):
            policy_json("sometimes")
        with pytest.raises(InvalidArgumentError):  # the model's own check: wrong dtype
            host.run("a", {"x": np.ones((3, 2), np.float64)})
        with pytest.raises(InvalidArgumentError):
            host.predict_bytes("a", b"\x12\x01")
        doc = host.status("a")
        assert [v["errors"] for v in doc["versions"] if v["version"] == 2] == [2]


# ---- metrics ----------------------------------------------------------------------------

_SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? '
                     r'(-?[0-9.eE+-]+|\+Inf|NaN)$')


def parse_metrics(text: str) -> dict:
    """{(name, frozenset(labels)): value}; every line must be valid exposition text."""
    out = {}
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        assert _SAMPLE.match(line), f"bad exposition line: {line!r}"
    from prometheus_client.parser import text_string_to_metric_families

    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name, frozenset(s.labels.items())] = s.value
    return out


def test_metrics_text_parses_and_counts_move(tmp_path, templates):
    bases = make_bases(tmp_path, templates)
    bad = bases["b"] / "3"
    bad.mkdir()
    (bad / "saved_model.pb").write_bytes(b"junk")
    with Host(config(bases)) as host:
        m0 = parse_metrics(host.metrics_text())
        A2 = frozenset({("model", "a"), ("version", "2")})
        assert m0["rs_host_requests_total", A2] == 0
        assert m0["rs_host_model_ready", frozenset({("model", "a")})] == 1
        assert m0["rs_host_load_failures_total", frozenset({("model", "b")})] == 1
        assert m0["rs_host_load_seconds", A2] > 0
        for _ in range(5):
            host.run("a", X)
        with pytest.raises(InvalidArgumentError):
            host.run("a", {"x": np.ones((3, 2), np.float64)})
        m1 = parse_metrics(host.metrics_text())
        assert m1["rs_host_requests_total", A2] == 6 and m1["rs_host_errors_total", A2] == 1
        count = m1["rs_host_request_duration_seconds_count", A2]
        assert count == 5 and m1["rs_host_request_duration_seconds_bucket", A2 | {("le", "+Inf")}] == 5
        assert m1["rs_host_request_duration_seconds_sum", A2] > 0
        assert m1["rs_host_version_ready", A2] == 1
        put_version(bases["a"], 3, templates["a", 3])
        host.reload("a")
        m2 = parse_metrics(host.metrics_text())
        assert m2["rs_host_version_ready", A2] == 0 and m2["rs_host_requests_total", A2] == 6  # kept
        assert m2["rs_host_loads_total", frozenset({("model", "a")})] == 2


BUNDLE_CONFIG = {
    "name": "hostb", "label": "label",
    "sparse": [{"name": "uid", "dim": 4, "embedding": {"kind": "plain", "rows": 1000}}],
    "dense": [{"name": "d0"}],
    "model": {"type": "wdl", "hidden": [8]},
    "data": {"format": "synthetic", "synthetic": {"num_train": 10, "num_eval": 10}},
}


def test_bundle_versions_export_store_tier_metrics(tmp_path):
    pytest.importorskip("tensorflow")
    from recstrata.processor import Model
    from recstrata.training.export import export_bundle
    from recstrata.training.models import RecModel
    from recstrata.training.spec import parse_config

    model = RecModel(parse_config(BUNDLE_CONFIG), name="rec_model")
    model.build_with_dummy()
    bundle = export_bundle(model, tmp_path / "export", tiers="dram")
    base = tmp_path / "base"
    base.mkdir()
    put_version(base, 1, bundle["path"])
    feeds = {"uid": np.arange(4, dtype=np.int64), "dense": np.ones((4, 1), np.float32)}
    with Host({"models": [{"name": "rec", "base_path": str(base)}]}) as host:
        out = host.run("rec", feeds)
        with Model(bundle["path"]) as direct:
            expected = direct.run(feeds)
        assert out.keys() == expected.keys()
        for k in out:
            np.testing.assert_array_equal(out[k], expected[k])
        m = parse_metrics(host.metrics_text())
        hits = {k: v for k, v in m.items() if k[0] in ("rs_host_store_dram_hits_total", "rs_host_store_dram_misses_total")}
        assert hits and all(("model", "rec") in k[1] for k in hits)
        assert sum(hits.values()) > 0  # lookups were counted by the store
        # roll back to a bundle version that is still draining: revived, not
        # opened twice (its store directory can be open only once)
        lease = host.acquire("rec")
        put_version(base, 2, bundle["path"])
        host.reload("rec")
        assert states(host, "rec") == {2: "ready", 1: "unloading"}
        host.pin("rec", 1)
        assert host.status("rec")["serving"] == [1] and states(host, "rec")[1] == "ready"
        for k, v in host.run("rec", feeds).items():
            np.testing.assert_array_equal(v, expected[k])
        lease.release()


def test_loader_thread_priority(tmp_path, templates):
    bases = make_bases(tmp_path, templates, versions=(1,))
    cfg = config(bases)
    cfg["models"][1]["model_config"] = {"inter_op_parallelism_threads": 2}  # pooled: normal priority
    with Host(cfg) as host:
        assert host.status("a")["versions"][0]["loader"] == "nice +10"
        assert host.status("b")["versions"][0]["loader"] == "normal priority"
    with Host(config(bases, load_nice=0)) as host:
        assert host.status("a")["versions"][0]["loader"] == "normal priority"
    with pytest.raises(InvalidArgumentError, match="load_nice must be in 0..19"):
        Host(config(bases, load_nice=25))


def test_draining_version_is_revived_not_loaded_twice(tmp_path, templates):
    bases = make_bases(tmp_path, templates, versions=(1, 2))
    with Host(config({"a": bases["a"]})) as host:
        lease = host.acquire("a")               # holds version 2
        host.pin("a", 1)                        # 2 retires, stays open for the lease
        assert states(host, "a") == {2: "unloading", 1: "ready"}
        host.unpin("a")                         # 2 is wanted again: put back, not reloaded
        assert host.status("a")["serving"] == [2] and value(host, "a") == (2.0, 2)
        m = parse_metrics(host.metrics_text())
        A = frozenset({("model", "a")})
        assert m["rs_host_revivals_total", A] == 1 and m["rs_host_loads_total", A] == 2  # 2 and 1, once each
        lease.release()
        assert value(host, "a") == (2.0, 2)     # the lease's release does not close a serving version
        host.pin("a", 1)
        assert wait_for(lambda: states(host, "a")[2] == "end")  # nobody holds it: closed
        shutil.rmtree(bases["a"] / "2")
        put_version(bases["a"], 2, templates["a", 3])  # a different version 2 on disk
        lease = host.acquire("a")                       # holds version 1
        host.unpin("a")                                 # loads the new 2 (fresh load)
        assert value(host, "a") == (3.0, 2)
        host.pin("a", 1)                                # 1 was draining with an unchanged dir: revived
        assert parse_metrics(host.metrics_text())["rs_host_revivals_total", A] == 2
        lease.release()
