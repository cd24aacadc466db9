"""Concurrent readers and a writer: no torn rows, no stale cache entries,
compaction (sync and async) running under concurrent reads.

Every row the writer stores is self-describing: [key, version, version, ...],
so a reader can tell a whole row (old or new) from a mix. Native calls
release the GIL, so the Python threads below really run in parallel.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from recstrata.store import Store

DIM = 16
NKEYS = 2000


def _rows(keys, version):
    rows = np.empty((len(keys), DIM), np.float32)
    rows[:, 0] = keys
    rows[:, 1:] = version[:, None] if np.ndim(version) else version
    return rows


def _check_rows(keys, rows, found, max_version):
    assert found.all()
    np.testing.assert_array_equal(rows[:, 0], keys)
    v = rows[:, 1]
    # whole rows only: every element equals the row's version
    assert (rows[:, 1:] == v[:, None]).all(), "torn row"
    assert (v >= 0).all() and (v <= max_version).all()


CONFIGS = {
    "dram": dict(tiers="dram", compaction="async", compaction_stale_ratio=0.2,
                 file_target_bytes=64 << 10, durability="none"),
    "ssd-async": dict(tiers="dram+ssd", dram_capacity_bytes=200 * 100, compaction="async",
                      compaction_stale_ratio=0.2, file_target_bytes=64 << 10,
                      durability="none"),
    "ssd-sync-pread": dict(tiers="dram+ssd", dram_capacity_bytes=200 * 100, compaction="sync",
                           compaction_stale_ratio=0.2, file_target_bytes=64 << 10,
                           durability="none", read_path="pread", cache_policy="lru"),
    "volatile": None,
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_readers_and_writer_never_see_torn_or_stale_rows(tmp_path, config):
    opts = CONFIGS[config]
    store = Store(None) if opts is None else Store(tmp_path / "s", **opts)
    with store:
        t = store.create_table("t", DIM)
        keys = np.arange(NKEYS, dtype=np.int64)
        t.bulk_load(keys, _rows(keys, 0))
        version = [0]    # highest version any writer call may have stored
        committed = [0]  # highest version whose upsert returned
        stop = threading.Event()
        errors: list[BaseException] = []

        def reader(seed):
            rng = np.random.default_rng(seed)
            try:
                while not stop.is_set():
                    k = rng.zipf(1.2, 512) % NKEYS
                    hi = committed[0]
                    rows, found = t.lookup(k)
                    _check_rows(k, rows, found, version[0])
                    # Rows committed before the lookup began are at least that new
                    # for the keys written in every batch (key 0 is).
                    if (k == 0).any():
                        assert rows[k == 0][0, 1] >= hi
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(3)]
        for th in threads:
            th.start()
        rng = np.random.default_rng(99)
        try:
            for v in range(1, 150):
                k = np.unique(np.concatenate([[0], rng.integers(0, NKEYS, 200)]))
                version[0] = v
                t.upsert(k, _rows(k, float(v)))
                committed[0] = v
        finally:
            stop.set()
            for th in threads:
                th.join()
        assert not errors, errors[0]
        if opts is not None:
            store.compact()
        # After the dust settles every key reads its final version.
        final = t.lookup(np.arange(NKEYS))[0]
        np.testing.assert_array_equal(final[:, 0], np.arange(NKEYS))
        assert final[0, 1] == 149
        stats = t.stats()
        if opts is not None and opts["tiers"] == "dram+ssd":
            assert stats["evictions"] > 0 and stats["ssd_hits"] > 0
        if opts is not None:
            assert stats["compactions"] > 0


def test_concurrent_writers_serialize(tmp_path):
    with Store(tmp_path / "s", durability="none") as s:
        t = s.create_table("t", DIM)

        def writer(base):
            for i in range(50):
                k = np.arange(base, base + 20, dtype=np.int64)
                t.upsert(k, _rows(k, float(i)))

        ths = [threading.Thread(target=writer, args=(b,)) for b in (0, 1000, 2000)]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        k = np.concatenate([np.arange(b, b + 20) for b in (0, 1000, 2000)])
        rows, found = t.lookup(k)
        _check_rows(k, rows, found, 49)
        assert (rows[:, 1] == 49).all()
        assert s.stats()["last_sequence"] == 150
    with Store(tmp_path / "s") as s:
        rows, found = s.table("t").lookup(k)
        assert (rows[:, 1] == 49).all()
