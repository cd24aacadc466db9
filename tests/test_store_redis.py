"""The Redis Cluster tier (tiers "dram+redis") against a real 3-master cluster.

Reads through the tier equal the local tiers', the key layout is the one
docs/store.md documents, MOVED and ASK are followed while a slot migrates, a
killed (SIGKILL) or hung (SIGSTOP) node fails only the requests that need it,
within the timeouts, with counted errors, while rows cached in DRAM keep
serving; damaged values are refused, never served; the serving pointer
switches (publish / rollback) reach every open store.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import redis_cluster as rc
from recstrata import errors
from recstrata.store import Store

DIM = 8


def crc16(data: bytes) -> int:
    """CRC16-XMODEM, written independently of the C++ one."""
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def key_slot(key: str) -> int:
    s = key.find("{")
    if s >= 0:
        e = key.find("}", s + 1)
        if e > s + 1:
            key = key[s + 1:e]
    return crc16(key.encode()) % 16384


def remote(cluster, model="m", space="v1", **kw):
    opts = dict(tiers="dram+redis", redis_url=cluster.url, redis_model=model,
                dram_capacity_bytes=kw.pop("dram_capacity_bytes", 1 << 20))
    if space is not None:
        opts["redis_key_space"] = space
    opts.update(kw)
    return Store(None, **opts)


def rows_for(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def loaded(redis_cluster):
    """Model "m", key space "v1", table "emb": keys 0..4999 (published)."""
    keys = np.arange(5000, dtype=np.int64)
    rows = rows_for(5000)
    s = remote(redis_cluster)
    s.create_table("emb", DIM).bulk_load(keys, rows)
    s.remote_pointer("publish")
    s.close()
    return keys, rows


def test_crc16_matches_the_cluster(redis_cluster):
    for key in ["rs:m:v1:emb:1", "foo", "{user1000}.following", "a{}b", "x{y}z{w}"]:
        assert int(redis_cluster.cli(0, "CLUSTER", "KEYSLOT", key)) == key_slot(key), key


def test_reads_equal_the_local_tier(redis_cluster, loaded, tmp_path):
    keys, rows = loaded
    local = Store(str(tmp_path / "local"), tiers="dram+ssd", dram_capacity_bytes=16 << 10)
    lt = local.create_table("emb", DIM)
    lt.bulk_load(keys, rows)
    r = remote(redis_cluster, space=None, dram_capacity_bytes=16 << 10)  # follows the pointer
    rt = r.table("emb")
    rng = np.random.default_rng(1)
    for _ in range(20):
        q = rng.integers(-100, 6000, size=300).astype(np.int64)  # some absent keys
        a, fa = lt.lookup(q)
        b, fb = rt.lookup(q)
        np.testing.assert_array_equal(fa, fb)
        np.testing.assert_array_equal(a, b)
    st = r.stats()
    t = st["tables"]["emb"]
    assert t["rows"] == 5000
    assert t["remote_hits"] > 0 and t["remote_misses"] > 0 and t["dram_hits"] > 0
    assert t["remote_errors"] == 0 and t["failed_lookups"] == 0
    rem = st["remote"]
    assert rem["key_space"] == "v1" and rem["nodes"] == 3
    # the routing agrees with the cluster: no key was ever redirected
    assert rem["moved"] == 0 and rem["ask"] == 0 and rem["round_trips"] > 0
    assert rem["bytes_in"] >= t["remote_hits"] * (16 + 4 * DIM)


def test_key_layout_is_the_documented_one(redis_cluster, loaded):
    keys, rows = loaded
    # rs:<model>:<space>:<table>:<id>, value = "RSE1" dim crc 0 + float32 row
    assert int(redis_cluster.cli_cluster("STRLEN", "rs:m:v1:emb:42")) == 16 + 4 * DIM
    assert redis_cluster.cli_cluster("HGET", "rsp:m", "serving").strip() == "v1"
    assert redis_cluster.cli_cluster("HGET", "rsm:m:v1", "emb#dim").strip() == str(DIM)
    assert redis_cluster.cli_cluster("HGET", "rsm:m:v1", "emb#rows").strip() == "5000"
    assert redis_cluster.cli_cluster("GETRANGE", "rs:m:v1:emb:42", "0", "3").strip() == "RSE1"


def test_writes_count_rows_and_are_row_atomic_under_concurrent_reads(redis_cluster):
    s = remote(redis_cluster, model="w", space="a", dram_capacity_bytes=64 << 10)
    t = s.create_table("t", DIM)
    keys = np.arange(2000, dtype=np.int64)
    t.upsert(keys, np.zeros((2000, DIM), np.float32))
    t.upsert(keys[:10], np.zeros((10, DIM), np.float32))  # overwrites: no new rows
    assert s.stats()["tables"]["t"]["rows"] == 2000
    stop = threading.Event()
    bad: list = []

    def reader():
        rng = np.random.default_rng()
        while not stop.is_set():
            out, found = t.lookup(rng.integers(0, 2000, size=64).astype(np.int64))
            # every row is one whole version: all columns equal
            if not found.all() or not (out == out[:, :1]).all():
                bad.append(out)

    th = [threading.Thread(target=reader) for _ in range(3)]
    for x in th:
        x.start()
    for v in range(1, 6):
        t.upsert(keys, np.full((2000, DIM), float(v), np.float32))
    stop.set()
    for x in th:
        x.join()
    assert not bad
    out, _ = t.lookup(keys)
    assert (out == 5.0).all()  # no stale row left in the DRAM cache
    t.delete(keys[:500])
    assert s.stats()["tables"]["t"]["rows"] == 1500
    out, found = t.lookup(keys[:600])
    assert not found[:500].any() and found[500:].all()


def test_damaged_values_are_refused(redis_cluster, loaded):
    keys, rows = loaded
    r = remote(redis_cluster, space="v1", dram_capacity_bytes=1 << 20)
    t = r.table("emb")
    redis_cluster.cli_cluster("SET", "rs:m:v1:emb:4000", "garbage")
    redis_cluster.cli_cluster("SETRANGE", "rs:m:v1:emb:4001", "20", "x")  # a float byte: checksum
    for k in (4000, 4001):
        with pytest.raises(errors.CorruptionError, match="damaged"):
            t.lookup(np.array([3, k], dtype=np.int64))
    assert r.stats()["tables"]["emb"]["remote_corrupt"] == 2
    out, found = t.lookup(np.array([3, 4002], dtype=np.int64))  # healthy keys still serve
    np.testing.assert_array_equal(out, rows[[3, 4002]])


def test_publish_and_rollback_switch_every_open_store(redis_cluster):
    keys = np.arange(100, dtype=np.int64)
    for space, v in (("s1", 1.0), ("s2", 2.0)):
        w = remote(redis_cluster, model="p", space=space)
        w.create_table("t", DIM).bulk_load(keys, np.full((100, DIM), v, np.float32))
        if space == "s1":
            w.remote_pointer("publish")
        readers = readers if space == "s2" else [remote(redis_cluster, model="p", space=None, redis_poll_ms=50)
                                                 for _ in range(2)]
        if space == "s2":
            for r in readers:  # cache the s1 rows
                assert (r.table("t").lookup(keys)[0] == 1.0).all()
            ptr = w.remote_pointer("publish")
            assert ptr["serving"] == "s2" and ptr["backup"] == "s1"

    def wait_for(value):
        end = time.monotonic() + 10
        while time.monotonic() < end:
            if all((r.table("t").lookup(keys)[0] == value).all() for r in readers):
                return
            time.sleep(0.02)
        raise AssertionError(f"readers did not switch to {value}")

    wait_for(2.0)
    ptr = readers[0].remote_pointer("rollback")
    assert ptr == {"serving": "s1", "backup": "s2", "active": "s1"}
    wait_for(1.0)
    assert all(r.stats()["remote"]["switches"] >= 2 for r in readers)
    with pytest.raises(errors.FailedPreconditionError, match="serving, backup"):
        readers[0].remote_pointer("drop", "s2")
    # a third space: s2 falls out of the pointer and can be dropped
    w = remote(redis_cluster, model="p", space="s3")
    w.create_table("t", DIM).bulk_load(keys, np.full((100, DIM), 3.0, np.float32))
    w.remote_pointer("publish")
    readers[0].remote_pointer("drop", "s2")
    assert redis_cluster.cli_cluster("EXISTS", "rs:p:s2:t:5").strip() == "0"
    assert redis_cluster.cli_cluster("EXISTS", "rsm:p:s2").strip() == "0"
    assert redis_cluster.cli_cluster("EXISTS", "rs:p:s1:t:5").strip() == "1"


def test_moved_and_ask_during_a_slot_migration(redis_cluster, loaded):
    keys, rows = loaded
    # the slot of key 77 and every loaded key in it
    slot = key_slot("rs:m:v1:emb:77")
    in_slot = [k for k in range(5000) if key_slot(f"rs:m:v1:emb:{k}") == slot]
    src = redis_cluster.node_of_slot(slot)
    dst = (src + 1) % 3
    sid, did = redis_cluster.node_id(src), redis_cluster.node_id(dst)
    r = remote(redis_cluster, space="v1", dram_capacity_bytes=1)  # ~no cache: every read goes to Redis
    t = r.table("emb")
    q = np.array(in_slot + [1, 2, 3], dtype=np.int64)

    def check():
        out, found = t.lookup(q)
        assert found.all()
        np.testing.assert_array_equal(out, rows[q])

    check()
    redis_cluster.cli(dst, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", sid)
    redis_cluster.cli(src, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", did)
    names = [f"rs:m:v1:emb:{k}" for k in in_slot]
    half = names[: max(1, len(names) // 2)]
    redis_cluster.cli(src, "MIGRATE", "127.0.0.1", str(redis_cluster.ports[dst]), "", "0", "5000", "KEYS", *half)
    check()  # migrated keys: ASK -> ASKING + GET on the importing node
    assert r.stats()["remote"]["ask"] > 0
    redis_cluster.cli(src, "MIGRATE", "127.0.0.1", str(redis_cluster.ports[dst]), "", "0", "5000", "KEYS",
                      *names[len(half):])
    for i in range(3):
        redis_cluster.cli(i, "CLUSTER", "SETSLOT", str(slot), "NODE", did)
    check()  # the slot moved: MOVED, map updated, retried
    st = r.stats()["remote"]
    assert st["moved"] > 0  # (the map reload itself is rate-limited to one per 50 ms)
    moved = st["moved"]
    check()  # the refreshed map routes straight to the new owner
    assert r.stats()["remote"]["moved"] == moved
    assert r.stats()["tables"]["emb"]["remote_errors"] == 0


@pytest.mark.parametrize("failure", ["kill", "pause"])
def test_a_dead_or_hung_node_never_hangs_a_request(tmp_path, failure):
    why = rc.available()
    if why:
        pytest.skip(why)
    with rc.RedisTestCluster(tmp_path / "c") as c:
        keys = np.arange(3000, dtype=np.int64)
        rows = rows_for(3000, seed=3)
        w = remote(c, model="f", space="v1")
        w.create_table("t", DIM).bulk_load(keys, rows)
        w.close()
        # which node owns each key's slot (from CLUSTER NODES)
        ranges = []
        for i in range(3):
            for line in c.cli(i, "CLUSTER", "NODES").splitlines():
                f = line.split()
                if "myself" in f[2]:
                    for part in f[8:]:
                        lo, _, hi = part.partition("-")
                        ranges.append((int(lo), int(hi or lo), i))
        owner = lambda k: next(n for lo, hi, n in ranges if lo <= key_slot(f"rs:f:v1:t:{k}") <= hi)  # noqa: E731
        on0 = np.array([k for k in range(3000) if owner(k) == 0], dtype=np.int64)
        elsewhere = np.array([k for k in range(3000) if owner(k) != 0], dtype=np.int64)
        timeout_ms = 200
        r = remote(c, model="f", space="v1", dram_capacity_bytes=1 << 20,
                   redis_command_timeout_ms=timeout_ms, redis_connect_timeout_ms=timeout_ms,
                   redis_down_ms=1500)
        t = r.table("t")
        hot = np.concatenate([on0[:50], elsewhere[:50]])
        np.testing.assert_array_equal(t.lookup(hot)[0], rows[hot])  # now cached in DRAM
        (c.kill if failure == "kill" else c.pause)(0)
        try:
            # hot rows keep serving from DRAM
            for _ in range(5):
                np.testing.assert_array_equal(t.lookup(hot)[0], rows[hot])
            # a miss on the failed node: an error, within the timeouts, never a default vector
            cold = np.concatenate([on0[100:110], elsewhere[100:110]])
            for attempt in range(3):
                t0 = time.monotonic()
                with pytest.raises(errors.IOFailureError, match="remote tier could not be read"):
                    t.lookup(cold)
                took = time.monotonic() - t0
                # one connect + one reply timeout at most (generous bound for a busy machine)
                assert took < 5 * timeout_ms / 1000 + 1.0, took
            # misses served by the healthy nodes still work
            ok = elsewhere[200:260]
            np.testing.assert_array_equal(t.lookup(ok)[0], rows[ok])
            st = r.stats()
            assert st["tables"]["t"]["remote_errors"] >= 30
            assert st["tables"]["t"]["failed_lookups"] >= 3
            assert st["remote"]["errors"] > 0
            assert st["remote"]["timeouts"] >= 1
            assert st["remote"]["fast_failures"] > 0  # later requests did not wait again
        finally:
            if failure == "pause":
                c.resume(0)
        if failure == "pause":
            # the node is back: after the down period the same keys serve again
            end = time.monotonic() + 10
            while True:
                try:
                    np.testing.assert_array_equal(t.lookup(cold)[0], rows[cold])
                    break
                except errors.IOFailureError:
                    if time.monotonic() > end:
                        raise
                    time.sleep(0.2)


def test_bad_options(redis_cluster):
    with pytest.raises(errors.InvalidArgumentError, match="needs redis_url"):
        Store(None, tiers="dram+redis", redis_model="m")
    with pytest.raises(errors.InvalidArgumentError, match="needs redis_model"):
        Store(None, tiers="dram+redis", redis_url=redis_cluster.url)
    with pytest.raises(errors.InvalidArgumentError, match="host:port"):
        Store(None, tiers="dram+redis", redis_url="nohost", redis_model="m")
    with pytest.raises(errors.InvalidArgumentError, match="need tiers"):
        Store(None, tiers="dram", redis_url=redis_cluster.url)
    with pytest.raises(errors.IOFailureError, match="no seed node answered"):
        Store(None, tiers="dram+redis", redis_url="127.0.0.1:1", redis_model="m")
    with pytest.raises(errors.FailedPreconditionError, match="no serving key space"):
        remote(redis_cluster, model="nothing-here", space=None).create_table("t", 4)
    with pytest.raises(errors.FailedPreconditionError, match="tiers"):
        Store(None).remote_pointer("get")
    s = remote(redis_cluster, model="m2", space="x")
    s.create_table("t", 4)
    with pytest.raises(errors.AlreadyExistsError):
        remote(redis_cluster, model="m2", space="x", dram_capacity_bytes=1024).create_table("t", 4)
    with pytest.raises(errors.FailedPreconditionError, match="no backup"):
        s.remote_pointer("rollback")


def test_a_write_on_one_host_reaches_the_others_cached_copies(redis_cluster):
    keys = np.arange(200, dtype=np.int64)
    w = remote(redis_cluster, model="c", space="c1")
    w.create_table("t", DIM).bulk_load(keys, np.full((200, DIM), 1.0, np.float32))
    w.remote_pointer("publish")
    readers = [remote(redis_cluster, model="c", space=None, redis_poll_ms=50) for _ in range(2)]
    for r in readers:
        assert (r.table("t").lookup(keys)[0] == 1.0).all()  # now cached
        assert r.stats()["tables"]["t"]["dram_rows"] == 200
    w.table("t").upsert(keys[:20], np.full((20, DIM), 7.0, np.float32))
    w.table("t").delete(keys[20:30])
    end = time.monotonic() + 10
    while True:
        outs = [r.table("t").lookup(keys) for r in readers]
        if all((o[:20] == 7.0).all() and not f[20:30].any() for o, f in outs):
            break
        assert time.monotonic() < end, "the change notices did not reach the other stores"
        time.sleep(0.02)
    for o, f in outs:
        assert (o[30:] == 1.0).all() and f[30:].all()
    assert all(r.stats()["remote"]["changed_keys_dropped"] >= 30 for r in readers)
