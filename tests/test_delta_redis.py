"""Deltas of Redis-backed bundles (docs/store.md "Deltas, written once"): the export binds its key
space to its bundle.json; each delta is written into the real Redis Cluster (tests/redis_cluster.py)
once, by the host that takes its lease, and every other host follows the key space's ledger.

The oracle is a host serving a copy of the same bundle from its local store, applying the same delta
files itself (the path tests/test_delta.py checks against the trained tables).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from recstrata.host import Host  # noqa: E402

from delta_helpers import ROWS, deltas_status, edit_tables, feeds, make_model, tables_of, wait_for  # noqa: E402
from serving_helpers import assert_outputs, put_version  # noqa: E402

IDS = np.arange(0, ROWS, 37)


def _redis_model_config(cluster, model):
    return {"feature_store_type": "cluster_redis", "redis_url": cluster.url, "redis_model_name": model,
            "redis_poll_ms": 100, "bundle_dram_capacity_bytes": 4 << 10}


def _ledger(cluster, model, space):
    lines = cluster.cli_cluster("HGETALL", f"rsd:{{{model}:{space}}}").split()
    return dict(zip(lines[::2], lines[1::2]))


def _copy_delta(src_version_dir, dst_version_dir, seq):
    """Ships delta `seq` to another host's copy of the version (temporary name, then rename)."""
    (dst_version_dir / "deltas").mkdir(exist_ok=True)
    tmp = dst_version_dir / "deltas" / f".{seq}.tmp"
    shutil.copytree(src_version_dir / "deltas" / str(seq), tmp)
    os.rename(tmp, dst_version_dir / "deltas" / str(seq))


@pytest.fixture
def exported(redis_cluster, tmp_path, request):
    """(model, bundle dir, redis model name, key space, its tables) of a fresh Redis export."""
    from recstrata.training.export import export_bundle

    name = "d" + request.node.name[-20:].replace("_", "")
    model = make_model()
    info = export_bundle(model, tmp_path / "export", tiers="dram", redis_url=redis_cluster.url,
                         redis_model=name, redis_key_space="S1")
    assert info["redis"]["serving"] == "S1"
    return model, tmp_path / "export", name, "S1", tables_of(model)


def _hosts(tmp_path, bundle, cluster, name, n):
    """n version-1 copies of the bundle under their own base paths, plus a local-store oracle copy."""
    bases = []
    for i in range(n + 1):
        base = tmp_path / f"base{i}"
        base.mkdir()
        put_version(base, 1, bundle)
        bases.append(base)
    cfgs = [{"models": [{"name": "m", "base_path": str(b), "model_config": _redis_model_config(cluster, name)}]}
            for b in bases[:n]]
    cfgs.append({"models": [{"name": "m", "base_path": str(bases[n])}]})
    return bases, cfgs


def test_export_binds_the_key_space_to_its_bundle(exported, redis_cluster):
    from recstrata.checksum import crc32c

    _model, bundle, name, space, _t = exported
    led = _ledger(redis_cluster, name, space)
    assert led == {"base_crc32c": f"{crc32c((bundle / 'bundle.json').read_bytes()):08x}",
                   "applied_sequence": "0", "applying": "0"}


def test_a_delta_is_written_once_and_the_other_host_follows(exported, redis_cluster, tmp_path):
    from recstrata.training.delta import DeltaWriter

    _model, bundle, name, space, tables = exported
    (b0, b1, oracle_base), cfgs = _hosts(tmp_path, bundle, redis_cluster, name, 2)
    s1, s2 = edit_tables(tables, 1, 200), edit_tables(tables, 2, 200)
    with Host(cfgs[0]) as h0, Host(cfgs[1]) as h1, Host(cfgs[2]) as oracle:
        before = oracle.run("m", feeds(IDS))
        for h in (h0, h1):
            assert_outputs(h.run("m", feeds(IDS)), before)
            assert deltas_status(h)["mode"] == "shared"

        # delta 1 reaches host 0's files only: host 0 writes it, host 1 follows the ledger
        DeltaWriter(b0 / "1", tables).write(s1)
        _copy_delta(b0 / "1", oracle_base / "1", 1)
        h1.reload("m")
        assert deltas_status(h1)["applied_sequence"] == 0  # nothing is in Redis yet
        h0.reload("m")
        oracle.reload("m")
        want = oracle.run("m", feeds(IDS))
        assert not np.allclose(want["prob"], before["prob"])
        st0 = deltas_status(h0)
        assert (st0["applied_sequence"], st0["applied"], st0["followed"]) == (1, 1, 0)
        assert st0["rows_applied"] == deltas_status(oracle)["rows_applied"] > 0
        assert _ledger(redis_cluster, name, space)["applied_sequence"] == "1"
        assert_outputs(h0.run("m", feeds(IDS)), want)
        h1.reload("m")
        st1 = deltas_status(h1)
        assert (st1["applied_sequence"], st1["applied"], st1["followed"], st1["rows_applied"]) == (1, 0, 1, 0)
        assert_outputs(h1.run("m", feeds(IDS)), want)  # its stale cached rows were dropped at once
        assert "rs_host_deltas_followed_total" in h1.metrics_text()

        # delta 2 reaches both hosts' files: the first pass writes it, the second only follows
        DeltaWriter(b0 / "1", s1).write(s2)
        for dst in (b1, oracle_base):
            if dst is b1:
                _copy_delta(b0 / "1", dst / "1", 1)
            _copy_delta(b0 / "1", dst / "1", 2)
        h1.reload("m")
        h0.reload("m")
        oracle.reload("m")
        want = oracle.run("m", feeds(IDS))
        st0, st1 = deltas_status(h0), deltas_status(h1)
        assert (st1["applied"], st1["followed"]) == (1, 1)
        assert (st0["applied"], st0["followed"]) == (1, 1)
        assert st0["applied_sequence"] == st1["applied_sequence"] == 2
        assert st0["last_error"] == st1["last_error"] == ""
        for h in (h0, h1):
            assert_outputs(h.run("m", feeds(IDS)), want)
    led = _ledger(redis_cluster, name, space)
    assert (led["applied_sequence"], led["applying"]) == ("2", "0")
    assert redis_cluster.cli_cluster("EXISTS", f"rsd:{{{name}:{space}}}:lease").strip() == "0"


def test_deltas_of_another_export_are_refused(exported, redis_cluster, tmp_path):
    from recstrata.training.delta import DeltaWriter

    _model, bundle, name, space, tables = exported
    (b0, _oracle), cfgs = _hosts(tmp_path, bundle, redis_cluster, name, 1)
    # the same tables, another bundle.json: its CRC-32C is not the one the key space was bound to
    with open(b0 / "1" / "bundle.json", "a") as fh:
        fh.write("\n")
    with Host(cfgs[0]) as h:
        before = h.run("m", feeds(IDS))
        DeltaWriter(b0 / "1", tables).write(edit_tables(tables, 3, 200))
        h.reload("m")
        st = deltas_status(h)
        assert st["applied_sequence"] == 0 and st["refused"] == 1 and st["blocked_at"] == 1
        assert "another export" in st["last_error"]
        assert_outputs(h.run("m", feeds(IDS)), before)
    assert _ledger(redis_cluster, name, space)["applied_sequence"] == "0"


CHILD = textwrap.dedent("""
    import json, sys
    from recstrata.host import Host
    with Host(json.loads(sys.argv[1])) as host:
        print("ready", flush=True)
        sys.stdin.readline()
        host.reload("m")
        print("applied", flush=True)
""")


def test_a_writer_killed_mid_apply_is_rolled_forward_by_another_host(exported, redis_cluster, tmp_path):
    from recstrata.training.delta import DeltaWriter

    _model, bundle, name, space, tables = exported
    (b0, b1, oracle_base), cfgs = _hosts(tmp_path, bundle, redis_cluster, name, 2)
    DeltaWriter(b0 / "1", tables).write(edit_tables(tables, 4, 200))
    for dst in (b1, oracle_base):
        _copy_delta(b0 / "1", dst / "1", 1)
    # the writer sleeps after each sub-table's batch and holds a 2 s lease
    env = dict(os.environ, RECSTRATA_TEST_DELTA_TABLE_DELAY_MS="60000", RECSTRATA_DELTA_LEASE_MS="2000")
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(cfgs[0])], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        # the delta files are already there: the child applies them while it loads version 1
        assert wait_for(lambda: child.poll() is not None
                        or _ledger(redis_cluster, name, space).get("applying") == "1", timeout=120)
        assert child.poll() is None
        time.sleep(0.3)  # inside the first sub-table's sleep: its rows are in Redis, the next not
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    killed_at = time.monotonic()
    led = _ledger(redis_cluster, name, space)
    assert (led["applied_sequence"], led["applying"]) == ("0", "1")

    with Host(cfgs[1]) as h, Host(cfgs[2]) as oracle:
        want = oracle.run("m", feeds(IDS))  # loading applied the delta to the oracle's own store
        st = deltas_status(h)
        if time.monotonic() - killed_at < 1.5:  # the dead writer's lease still held it back
            assert st["applied_sequence"] == 0 and st["lease_waits"] >= 1
        def rolled_forward():
            h.reload("m")
            return deltas_status(h)["applied_sequence"] >= 1

        assert wait_for(rolled_forward, timeout=30), deltas_status(h)
        st = deltas_status(h)
        assert (st["applied"], st["followed"], st["last_error"]) == (1, 0, "")
        assert_outputs(h.run("m", feeds(IDS)), want)
    led = _ledger(redis_cluster, name, space)
    assert (led["applied_sequence"], led["applying"]) == ("1", "0")


def test_a_dense_stage_is_swapped_by_every_host_and_rows_written_once(exported, redis_cluster, tmp_path):
    from recstrata import errors
    from recstrata.processor import Model
    from recstrata.training.delta import DeltaWriter
    from recstrata.training.export import export_bundle

    model, bundle, name, space, tables = exported
    (b0, b1, b2, _oracle), cfgs = _hosts(tmp_path, bundle, redis_cluster, name, 3)
    rng = np.random.default_rng(5)
    for v in model.checkpoint_variables().values():
        if v.dtype.is_floating:
            v.assign(v + rng.normal(scale=0.1, size=v.shape).astype(v.dtype.as_numpy_dtype))
    full = export_bundle(model, tmp_path / "full", tiers="dram")
    with Model(full["path"]) as m:
        want = m.run(feeds(IDS))
    with Host(cfgs[2]) as h2:  # serving before the delta; it will never get the delta's files
        info = DeltaWriter(b0 / "1", tables).write(model, dense=True)
        assert info["dense"] and info["rows"] > 0
        _copy_delta(b0 / "1", b1 / "1", 1)
        with Host(cfgs[0]) as h0, Host(cfgs[1]) as h1:
            # host 0 wrote the delta while it loaded (rows, then its dense stage swapped in);
            # host 1 opened on the ledger's state: the delta's dense stage from its own copy
            s0, s1 = deltas_status(h0), deltas_status(h1)
            assert (s0["applied"], s0["dense_swaps"], s1["applied"], s1["dense_swaps"]) == (1, 1, 0, 0)
            for h, st in ((h0, s0), (h1, s1)):
                assert (st["applied_sequence"], st["dense_sequence"], st["last_error"]) == (1, 1, ""), st
                assert_outputs(h.run("m", feeds(IDS)), want)
        # without the files host 2 serves the new rows with its old dense stage, and says so
        h2.reload("m")
        st = deltas_status(h2)
        assert (st["applied_sequence"], st["followed"], st["dense_swaps"]) == (1, 1, 0), st
        assert "changed the dense stage" in st["last_error"] and st["failed"] == 1
    assert _ledger(redis_cluster, name, space)["dense_sequence"] == "1"
    # a fresh open without the files is refused rather than serving that mix
    with pytest.raises(errors.CorruptionError, match="changed the dense stage"):
        Model(str(b2 / "1"), _redis_model_config(redis_cluster, name))
