"""Bundles served with feature_store_type "cluster_redis": the tables are read
from a real Redis Cluster (tests/redis_cluster.py) under a DRAM cache.

Export writes two key spaces of one model (weights A, then B) and publishes
them (serving B, backup A). A host serves B's rows; two host *processes* share
the tables through the tier and a rollback (`recstrata redis-pointer
rollback`) switches both to A; the tier's counters reach the host's metrics;
a hung node fails the requests that miss DRAM with an error, never defaults.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from recstrata import errors  # noqa: E402
from recstrata.host import Host  # noqa: E402
from recstrata.processor import Model  # noqa: E402

from serving_helpers import assert_outputs, put_version  # noqa: E402

CONFIG = {
    "name": "redisb", "label": "label",
    "sparse": [{"name": "uid", "dim": 4, "embedding": {"kind": "plain", "rows": 2000}},
               {"name": "sid", "dtype": "string", "dim": 4,
                "embedding": {"kind": "multihash", "strategy": "qr", "vocab": 5000, "m": 70}}],
    "dense": [{"name": "d0"}],
    "model": {"type": "wdl", "hidden": [8]},
    "data": {"format": "synthetic", "synthetic": {"num_train": 10, "num_eval": 10}},
}
MODEL = "rec"


def feeds(lo=0, n=8):
    return {"uid": np.arange(lo, lo + n, dtype=np.int64),
            "sid": np.array([f"s{i}" for i in range(lo, lo + n)], dtype=object),
            "dense": np.ones((n, 1), np.float32)}


def redis_config(cluster, **kw):
    c = {"feature_store_type": "cluster_redis", "redis_url": cluster.url,
         "redis_model_name": MODEL, "redis_poll_ms": 100, "bundle_dram_capacity_bytes": 8 << 10}
    c.update(kw)
    return c


@pytest.fixture(scope="module")
def bundles(redis_cluster, tmp_path_factory):
    from recstrata.training.export import export_bundle
    from recstrata.training.models import RecModel
    from recstrata.training.spec import parse_config

    root = tmp_path_factory.mktemp("redis_bundles")
    model = RecModel(parse_config(CONFIG), name="rec_model")
    model.build_with_dummy()
    a = export_bundle(model, root / "A", redis_url=redis_cluster.url, redis_model=MODEL,
                      redis_key_space="A")
    assert a["redis"]["serving"] == "A"
    for name, v in model.checkpoint_variables().items():
        if name.startswith("embedding."):
            v.assign(v + 0.25)  # new embedding rows, same dense stage
    b = export_bundle(model, root / "B", redis_url=redis_cluster.url, redis_model=MODEL,
                      redis_key_space="B")
    assert (b["redis"]["serving"], b["redis"]["backup"]) == ("B", "A")
    expected = {}
    for name, bd in (("A", a), ("B", b)):
        with Model(bd["path"]) as m:  # the bundle's own (local) store
            expected[name] = {lo: m.run(feeds(lo)) for lo in (0, 100)}
    assert not np.allclose(expected["A"][0]["prob"], expected["B"][0]["prob"])
    return root, a, b, expected


def metric(text, name):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_host_serves_the_serving_key_space_with_tier_metrics(redis_cluster, bundles, tmp_path):
    root, a, b, expected = bundles
    base = tmp_path / "base"
    base.mkdir()
    put_version(base, 1, b["path"])
    cfg = {"models": [{"name": "rec", "base_path": str(base), "model_config": redis_config(redis_cluster)}]}
    with Host(cfg) as host:
        for lo in (0, 100):
            assert_outputs(host.run("rec", feeds(lo)), expected["B"][lo])
        text = host.metrics_text()
        assert metric(text, "rs_host_store_remote_hits_total") > 0
        assert metric(text, "rs_host_redis_round_trips_total") > 0
        assert metric(text, "rs_host_redis_bytes_in_total") > 0
        assert metric(text, "rs_host_store_remote_errors_total") == 0


def test_bad_redis_configs(redis_cluster, bundles):
    _root, _a, b, _exp = bundles
    with pytest.raises(errors.InvalidArgumentError, match="redis_model_name"):
        Model(b["path"], {"feature_store_type": "cluster_redis", "redis_url": redis_cluster.url})
    with pytest.raises(errors.UnimplementedError, match="standalone"):
        Model(b["path"], {"feature_store_type": "redis", "redis_url": redis_cluster.url})
    with pytest.raises(errors.NotFoundError, match="holds no tables"):
        Model(b["path"], redis_config(redis_cluster, redis_model_name="never-exported"))
    with pytest.raises(errors.IOFailureError, match="no seed node"):
        Model(b["path"], redis_config(redis_cluster, redis_url="127.0.0.1:1"))


CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    from recstrata.host import Host
    cfg = json.loads(sys.argv[1])
    with Host(cfg) as host:
        print("ready", flush=True)
        for line in sys.stdin:
            lo = int(line)
            f = {"uid": np.arange(lo, lo + 8, dtype=np.int64),
                 "sid": np.array([f"s{i}" for i in range(lo, lo + 8)], dtype=object),
                 "dense": np.ones((8, 1), np.float32)}
            out = host.run("rec", f)
            print(json.dumps({k: v.tolist() for k, v in out.items()}), flush=True)
""")


def test_two_host_processes_share_tables_and_roll_back_together(redis_cluster, bundles, tmp_path):
    root, a, b, expected = bundles
    procs = []
    try:
        for i in range(2):
            base = tmp_path / f"base{i}"
            base.mkdir()
            put_version(base, 1, b["path"])
            cfg = {"models": [{"name": "rec", "base_path": str(base),
                               "model_config": redis_config(redis_cluster)}]}
            p = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(cfg)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, env=dict(os.environ))
            procs.append(p)
        for p in procs:
            assert p.stdout.readline().strip() == "ready"

        def ask(p, lo):
            p.stdin.write(f"{lo}\n")
            p.stdin.flush()
            return {k: np.asarray(v, np.float32) for k, v in json.loads(p.stdout.readline()).items()}

        def wait_all(space):
            end = time.monotonic() + 15
            while True:
                try:
                    for p in procs:
                        for lo in (0, 100):
                            assert_outputs(ask(p, lo), expected[space][lo])
                    return
                except AssertionError:
                    if time.monotonic() > end:
                        raise
                    time.sleep(0.05)

        wait_all("B")
        cli = [sys.executable, "-m", "recstrata.cli", "redis-pointer", "--redis-url", redis_cluster.url,
               "--redis-model", MODEL]
        r = subprocess.run(cli + ["rollback"], capture_output=True, text=True, check=True)
        assert json.loads(r.stdout)["serving"] == "A"
        wait_all("A")  # both hosts switched (their DRAM caches were dropped)
        r = subprocess.run(cli + ["rollback"], capture_output=True, text=True, check=True)
        assert json.loads(r.stdout) == {"serving": "B", "backup": "A", "active": "B"}
        wait_all("B")
    finally:
        for p in procs:
            if p.poll() is None:
                p.stdin.close()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()


def test_a_hung_node_fails_cold_requests_with_an_error_and_hot_ones_serve(redis_cluster, bundles):
    _root, _a, b, expected = bundles
    cfg = redis_config(redis_cluster, redis_command_timeout_ms=200, redis_connect_timeout_ms=200,
                       bundle_dram_capacity_bytes=1 << 20)
    with Model(b["path"], cfg) as m:
        assert_outputs(m.run(feeds(0)), expected["B"][0])  # ids 0..7 now in DRAM
        redis_cluster.pause(0)
        try:
            t0 = time.monotonic()
            assert_outputs(m.run(feeds(0)), expected["B"][0])  # hot: served from DRAM
            failures = 0
            for lo in range(200, 2000, 40):  # cold ids: some of their rows live on node 0
                t0 = time.monotonic()
                try:
                    m.run(feeds(lo))
                except errors.IOFailureError as e:
                    assert "remote tier could not be read" in str(e)
                    failures += 1
                assert time.monotonic() - t0 < 2.0  # bounded by the timeouts, never hangs
            assert failures > 0
            stats = m.stats()
        finally:
            redis_cluster.resume(0)
    tables = stats["bundle"]["tables"]
    assert sum(s["remote_errors"] for t in tables for s in t["subtables"]) > 0
    assert stats["bundle"]["remote"]["timeouts"] >= 1
