"""Randomised operation sequences on the store checked against a dict model.

Hypothesis drives upserts (with repeated keys), deletes, bulk loads, lookups,
compactions and reopens, in every tier mode; after each step the store must
answer exactly like a plain ``dict`` of key -> row. Small data files and
caches force rotation, compaction and eviction within a few steps.
"""

from __future__ import annotations

import shutil
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from recstrata.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from recstrata.store import Store

DIM = 3
# A small pool (collisions) plus extreme int64 values.
KEYS = st.one_of(st.integers(0, 40), st.sampled_from([-(2**63), 2**63 - 1, -1, 2**40 + 7]))


def _rows(keys, salt):
    k = np.asarray(keys, dtype=np.float64)
    return np.stack([k % 1000, np.full_like(k, salt), k % 7 + salt], axis=1).astype(np.float32)


class StoreModel(RuleBasedStateMachine):
    OPTIONS: dict = {}
    PERSISTENT = True
    DENSE_KEYS = 0      # > 0: keys 0 .. DENSE_KEYS-1 use the direct index, the rest hashing

    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="rs_store_model_") if self.PERSISTENT else None
        self.model: dict[int, np.ndarray] = {}
        self.salt = 0
        self.store = Store(self.dir, **self.OPTIONS)
        self.table = self.store.create_table("t", DIM, default_value=[-1, -2, -3],
                                             dense_keys=self.DENSE_KEYS)

    def teardown(self):
        self.store.close()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    @rule(keys=st.lists(KEYS, min_size=1, max_size=12))
    def upsert(self, keys):
        self.salt += 1
        rows = _rows(keys, self.salt)
        self.table.upsert(keys, rows)
        for k, r in zip(keys, rows):
            self.model[k] = r

    @rule(keys=st.lists(KEYS, min_size=0, max_size=6))
    def delete(self, keys):
        self.table.delete(keys)
        for k in keys:
            self.model.pop(k, None)

    @rule(keys=st.lists(KEYS, min_size=1, max_size=30))
    def bulk_load(self, keys):
        self.salt += 1
        rows = _rows(keys, self.salt)
        self.table.bulk_load(keys, rows)
        for k, r in zip(keys, rows):
            self.model[k] = r

    @rule(keys=st.lists(KEYS, min_size=0, max_size=20))
    def lookup(self, keys):
        self.check(keys)

    @rule()
    def compact(self):
        self.store.compact()

    @precondition(lambda self: self.PERSISTENT)
    @rule()
    def reopen(self):
        self.store.close()
        self.store = Store(self.dir)  # options come back from the MANIFEST
        self.table = self.store.table("t")

    def check(self, keys):
        rows, found = self.table.lookup(keys)
        assert rows.shape == (len(keys), DIM)
        for i, k in enumerate(keys):
            if k in self.model:
                assert found[i], k
                np.testing.assert_array_equal(rows[i], self.model[k])
            else:
                assert not found[i], k
                np.testing.assert_array_equal(rows[i], [-1, -2, -3])

    @invariant()
    def rows_and_all_keys(self):
        assert self.table.stats()["rows"] == len(self.model)
        self.check(list(self.model) + [12345678])


SETTINGS = settings(max_examples=25, stateful_step_count=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


class VolatileModel(StoreModel):
    PERSISTENT = False


class DramModel(StoreModel):
    OPTIONS = dict(tiers="dram", file_target_bytes=4096, compaction="sync",
                   compaction_stale_ratio=0.2, durability="none")


class SsdModel(StoreModel):
    OPTIONS = dict(tiers="dram+ssd", dram_capacity_bytes=400, file_target_bytes=4096,
                   compaction="sync", compaction_stale_ratio=0.2, durability="none",
                   shard_bits=1)


class SsdPreadLruModel(StoreModel):
    OPTIONS = dict(tiers="dram+ssd", dram_capacity_bytes=300, cache_policy="lru",
                   read_path="pread", file_target_bytes=4096, compaction="async",
                   compaction_stale_ratio=0.3, shard_bits=0)


class SsdDirectIndexModel(SsdModel):
    DENSE_KEYS = 25     # half of the small key pool, plus the extreme keys, stay hashed


class DramDirectIndexModel(DramModel):
    DENSE_KEYS = 41     # the whole small key pool


TestVolatile = VolatileModel.TestCase
TestDram = DramModel.TestCase
TestSsd = SsdModel.TestCase
TestSsdPreadLru = SsdPreadLruModel.TestCase
TestSsdDirectIndex = SsdDirectIndexModel.TestCase
TestDramDirectIndex = DramDirectIndexModel.TestCase
for _case in (TestVolatile, TestDram, TestSsd, TestSsdPreadLru, TestSsdDirectIndex,
              TestDramDirectIndex):
    _case.settings = SETTINGS


def test_table_errors(tmp_path):
    with Store(tmp_path / "s") as s:
        s.create_table("a", 4)
        with pytest.raises(AlreadyExistsError):
            s.create_table("a", 4)
        with pytest.raises(NotFoundError):
            s.table("b")
        with pytest.raises(InvalidArgumentError):
            s.create_table("c", 0)
        with pytest.raises(InvalidArgumentError):
            s.create_table("d", 2, default_value=[1, 2, 3])
        with pytest.raises(ValueError):
            s.table("a").upsert([1, 2], np.zeros((2, 3), np.float32))
        assert sorted(s.table_names()) == ["a"]
    with pytest.raises(InvalidArgumentError):
        Store(tmp_path / "x", tiers="tape")
    with pytest.raises(InvalidArgumentError):
        Store(tmp_path / "y", no_such_option=1)
    with pytest.raises(InvalidArgumentError):
        Store(None, tiers="dram+ssd")
    with pytest.raises(NotFoundError):
        Store(tmp_path / "missing", create_if_missing=False)


def test_second_process_open_is_refused(tmp_path):
    import subprocess
    import sys

    with Store(tmp_path / "s") as s:
        s.create_table("a", 2)
        code = ("from recstrata.store import Store\n"
                "from recstrata.errors import FailedPreconditionError\n"
                f"try:\n    Store({str(tmp_path / 's')!r})\nexcept FailedPreconditionError:\n"
                "    raise SystemExit(7)\n")
        assert subprocess.run([sys.executable, "-c", code]).returncode == 7


def test_empty_batches_and_options_roundtrip(tmp_path):
    with Store(tmp_path / "s", tiers="dram+ssd", dram_capacity_bytes=1 << 20) as s:
        t = s.create_table("a", 2)
        rows, found = t.lookup([])
        assert rows.shape == (0, 2) and found.shape == (0,)
        t.upsert([], np.zeros((0, 2), np.float32))
        t.delete([])
    with Store(tmp_path / "s") as s:  # tier config persisted in the MANIFEST
        assert s.stats()["tiers"] == "dram+ssd"


def test_closed_store_refuses_calls_and_stats_count(tmp_path):
    from recstrata.errors import FailedPreconditionError

    s = Store(tmp_path / "s", tiers="dram+ssd", dram_capacity_bytes=1000)
    t = s.create_table("a", 2)
    t.upsert(np.arange(100), np.ones((100, 2), np.float32))
    t.lookup(np.arange(150))
    st = t.stats()
    assert st["rows"] == 100 and st["ssd_misses"] == 50
    assert st["dram_hits"] + st["ssd_hits"] == 100
    s.close()
    s.close()  # idempotent
    with pytest.raises(FailedPreconditionError):
        t.lookup([1])
    with pytest.raises(FailedPreconditionError):
        t.upsert([1], np.ones((1, 2), np.float32))


def test_direct_index_memory_and_reopen(tmp_path):
    # 100k row-indexed keys: the direct index takes 8 bytes per key, the hash index several
    # times that; both answer the same, also after a reopen (recovery rebuilds either index).
    n = 100_000
    keys = np.arange(n, dtype=np.int64)
    rows = _rows(keys, 3)
    opts = dict(tiers="dram+ssd", dram_capacity_bytes=1 << 16, durability="none")
    with Store(str(tmp_path / "s"), **opts) as s:
        direct = s.create_table("direct", DIM, dense_keys=n)
        hashed = s.create_table("hashed", DIM)
        direct.bulk_load(keys, rows)
        hashed.bulk_load(keys, rows)
        direct.upsert(np.array([-5, n + 3], np.int64), _rows([-5, n + 3], 4))  # outside: hashed
        stats = s.stats()["tables"]
        assert stats["direct"]["index_bytes"] <= n * 8 + 16 * 1024      # + small hash shards
        assert stats["hashed"]["index_bytes"] >= 4 * stats["direct"]["index_bytes"]
    with Store(str(tmp_path / "s"), **opts) as s:
        probe = np.array([0, 17, n - 1, -5, n + 3, n + 4], np.int64)
        got, found = s.table("direct").lookup(probe)
        assert found.tolist() == [True, True, True, True, True, False]
        np.testing.assert_array_equal(got[:3], rows[[0, 17, n - 1]])
        np.testing.assert_array_equal(got[3:5], _rows([-5, n + 3], 4))
        np.testing.assert_array_equal(s.table("hashed").lookup(probe[:3])[0], rows[[0, 17, n - 1]])


def test_dense_keys_is_validated(tmp_path):
    with Store(str(tmp_path / "s")) as s:
        with pytest.raises(InvalidArgumentError, match="dense_keys"):
            s.create_table("huge", 2, dense_keys=1 << 40)
