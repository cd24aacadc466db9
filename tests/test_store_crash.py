"""Crash safety: a writer child process is killed with SIGKILL at random
points (also while compaction runs, sync and async); after reopening, every
batch the child saw committed must be intact, the batch in flight must be
wholly present or wholly absent, and nothing corrupt may be served.

Also: bytes corrupted in a data file are detected (open fails with
CorruptionError, or with skip_corrupt_records the damaged record is not
served), a torn tail is cut off after a crash (and is corruption after a
clean close), and a store or data file written by another format version is
refused with IncompatibleError. tests/test_store_integrity.py flips bytes at
random.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from recstrata.errors import CorruptionError, IncompatibleError
from recstrata.store import Store

DIM = 4
NKEYS = 300

CHILD = r"""
import sys, numpy as np
from recstrata.store import Store
path, opts = sys.argv[1], __import__("json").loads(sys.argv[2])
with Store(path, **opts) as s:
    t = s.create_table("t", %(dim)d) if "t" not in s.table_names() else s.table("t")
    print("ready", flush=True)
    for i in range(1, 100000):
        keys, rows, is_delete = batch(i)
        if is_delete:
            t.delete(keys)
        else:
            t.upsert(keys, rows)
        print(i, flush=True)
"""


BATCH_SRC = f"""
import numpy as np
def batch(i):
    \"\"\"Batch i of the deterministic workload: (keys, rows, is_delete).\"\"\"
    rng = np.random.default_rng(i)
    keys = rng.choice({NKEYS}, size=int(rng.integers(1, 60)), replace=True).astype(np.int64)
    if i % 7 == 3:
        return keys, None, True
    rows = np.stack([np.full(len(keys), i), keys, keys * 2 + i, np.full(len(keys), -i)],
                    axis=1).astype(np.float32)
    return keys, rows, False
"""
exec(BATCH_SRC)  # defines batch() here; the child gets the same source
CHILD_SRC = BATCH_SRC + CHILD % {"dim": DIM}


def expected_state(n_batches):
    state = {}
    for i in range(1, n_batches + 1):
        keys, rows, is_delete = batch(i)  # noqa: F821 (defined by exec above)
        for j, k in enumerate(keys):
            if is_delete:
                state.pop(int(k), None)
            else:
                state[int(k)] = rows[j]
    return state


def run_and_kill(path, opts, kill_after_s):
    """Runs the writer child, SIGKILLs it after kill_after_s; returns the last
    batch number whose call had returned (i.e. committed) before the kill."""
    import threading

    proc = subprocess.Popen([sys.executable, "-c", CHILD_SRC, str(path), json.dumps(opts)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline().strip() == "ready"
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    time.sleep(kill_after_s)
    assert proc.poll() is None, "writer child died on its own"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reader.join()
    done = [ln for ln in lines if ln.endswith("\n")]
    return int(done[-1]) if done else 0


def verify(path, committed):
    with Store(path) as s:
        t = s.table("t")
        keys = np.arange(NKEYS, dtype=np.int64)
        rows, found = t.lookup(keys)
        stats = s.stats()["tables"]["t"]
    candidates = [expected_state(committed), expected_state(committed + 1)]
    for state in candidates:
        ok = all(bool(found[k]) == (k in state) for k in range(NKEYS)) and all(
            np.array_equal(rows[k], state[k]) for k in state)
        if ok:
            return stats
    missing = [k for k in range(NKEYS) if bool(found[k]) != (k in candidates[0])]
    raise AssertionError(f"state after crash matches neither batch {committed} nor "
                         f"{committed + 1}; first differing keys {missing[:10]}")


MODES = {
    "sync": dict(tiers="dram+ssd", dram_capacity_bytes=2000, compaction="sync",
                 compaction_stale_ratio=0.25, file_target_bytes=8192, shard_bits=2),
    "async": dict(tiers="dram+ssd", dram_capacity_bytes=2000, compaction="async",
                  compaction_stale_ratio=0.25, file_target_bytes=8192, shard_bits=2,
                  read_path="pread"),
    "dram": dict(tiers="dram", compaction="sync", compaction_stale_ratio=0.3,
                 file_target_bytes=16384),
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_kill_writer_at_random_points(tmp_path, mode):
    rnd = random.Random(hash(mode) & 0xFFFF)
    path = tmp_path / "s"
    committed_total = 0
    for round_ in range(3):
        # The child replays the workload from batch 1, so each round starts
        # from an empty store.
        if path.exists():
            import shutil

            shutil.rmtree(path)
        committed = run_and_kill(path, MODES[mode], rnd.uniform(0.3, 1.2))
        stats = verify(path, committed)
        assert stats["corrupt_records"] == 0
        committed_total += committed
        # Reopen twice: recovery must be idempotent (truncation already done).
        verify(path, committed)
    assert committed_total > 20, "the child committed too few batches to test anything"


def test_kill_during_compaction_keeps_committed_data(tmp_path):
    """Compaction-heavy settings: most batches trigger a sync compaction, so a
    random kill lands inside one often; several kills in a row on one store."""
    opts = dict(tiers="dram+ssd", dram_capacity_bytes=1000, compaction="sync",
                compaction_stale_ratio=0.05, file_target_bytes=4096, shard_bits=1)
    rnd = random.Random(5)
    for round_ in range(4):
        path = tmp_path / f"s{round_}"
        committed = run_and_kill(path, opts, rnd.uniform(0.2, 0.9))
        stats = verify(path, committed)
        assert stats["corrupt_records"] == 0


# ---------------------------------------------------------------- corruption --

def _fill(path, **opts):
    with Store(path, file_target_bytes=4096, compaction="off", **opts) as s:
        t = s.create_table("t", DIM)
        for i in range(20):
            keys = np.arange(i * 10, i * 10 + 10, dtype=np.int64)
            t.upsert(keys, np.full((10, DIM), i, np.float32))
    return sorted((path / "t1").glob("*.dat"))


def _flip(file, offset):
    with open(file, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


def test_corrupt_byte_in_sealed_file_fails_open(tmp_path):
    files = _fill(tmp_path / "s")
    assert len(files) >= 2
    _flip(files[0], 64 + 16 + 3)  # inside the first record's vector
    with pytest.raises(CorruptionError):
        Store(tmp_path / "s")
    with Store(tmp_path / "s", skip_corrupt_records=True) as s:
        rows, found = s.table("t").lookup(np.arange(200))
        assert not found[0]  # the damaged row is not served
        assert found[1:].all()
        assert s.stats()["tables"]["t"]["corrupt_records"] == 1


def test_corruption_after_open_is_reported_not_served(tmp_path):
    _fill(tmp_path / "s")
    with Store(tmp_path / "s", tiers="dram+ssd", dram_capacity_bytes=100) as s:
        files = sorted((tmp_path / "s" / "t1").glob("*.dat"))
        _flip(files[1], 64 + 16 + 5)
        t = s.table("t")
        bad = None
        for k in range(200):
            try:
                t.lookup([k])
            except CorruptionError as e:
                bad = k
                assert "checksum" in str(e)
        assert bad is not None


def _as_crashed(path):
    """Drops the clean-close record, as a crash before close leaves the MANIFEST."""
    m = path / "MANIFEST"
    doc = json.loads(m.read_text())
    doc.pop("clean_close")
    m.write_text(json.dumps(doc))


def test_torn_tail_is_cut_off(tmp_path):
    files = _fill(tmp_path / "s")
    tail = files[-1]
    size = tail.stat().st_size
    with open(tail, "r+b") as f:  # a torn last batch: half a record
        f.truncate(size - 20)
    with pytest.raises(CorruptionError, match="clean close recorded"):
        Store(tmp_path / "s")  # after a clean close nothing may be torn
    _as_crashed(tmp_path / "s")
    with Store(tmp_path / "s") as s:
        rows, found = s.table("t").lookup(np.arange(200))
        assert found[:190].all() and not found[190:].any()  # batch 19 dropped whole
        assert s.stats()["tables"]["t"]["truncated_bytes"] > 0
    with Store(tmp_path / "s") as s:
        assert s.stats()["tables"]["t"]["truncated_bytes"] == 0


def test_incompatible_manifest_version(tmp_path):
    _fill(tmp_path / "s")
    m = tmp_path / "s" / "MANIFEST"
    doc = json.loads(m.read_text())
    doc["format_version"] = 99
    m.write_text(json.dumps(doc))
    with pytest.raises(IncompatibleError, match="format version 99"):
        Store(tmp_path / "s")


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_incompatible_data_file_version(tmp_path):
    files = _fill(tmp_path / "s")
    with open(files[0], "r+b") as f:
        header = bytearray(f.read(64))
        assert _crc32c(bytes(header[:60])) == int.from_bytes(header[60:], "little")
        header[8:12] = (99).to_bytes(4, "little")  # format_version
        header[60:] = _crc32c(bytes(header[:60])).to_bytes(4, "little")
        f.seek(0)
        f.write(header)
    with pytest.raises(IncompatibleError):
        Store(tmp_path / "s")
