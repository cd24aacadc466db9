"""No silent loss: bytes flipped at random in data files of cleanly closed and
of crashed (SIGKILLed writer) stores, in headers and bodies of the newest and
of older files. Every trial must either read back every acknowledged value
exactly or fail the open with CorruptionError; after a clean close every flip
must be detected. Repair must drop only what it reports: the repaired store
holds exactly the acknowledged records minus the reported ranges.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from recstrata.errors import CorruptionError
from recstrata.store import Store, repair

DIM = 4
NKEYS = 400
KEYS = np.arange(NKEYS, dtype=np.int64)


def row(seq_tag: int, key: int) -> np.ndarray:
    return np.array([seq_tag, key, key * 3 + seq_tag, -seq_tag], np.float32)


# ------------------------------------------------------------------ model --

def decode(store_dir: Path) -> dict[str, list[tuple[int, int, int, bool, np.ndarray]]]:
    """Records of every data file of table 1: basename -> [(offset, seq, key, tombstone,
    vector)], whole records only, in file order (file layout: docs/store.md)."""
    out = {}
    for f in sorted((store_dir / "t1").glob("*.dat")):
        b = f.read_bytes()
        if len(b) < 64:  # a creation cut short by the kill: recovery removes it
            continue
        base_seq = int.from_bytes(b[32:40], "little")
        rs = int.from_bytes(b[40:44], "little")
        assert rs == 16 + 4 * DIM
        recs = []
        for off in range(64, len(b) - rs + 1, rs):
            meta = int.from_bytes(b[off + 4:off + 8], "little")
            key = int.from_bytes(b[off + 8:off + 16], "little", signed=True)
            vec = np.frombuffer(b[off + 16:off + rs], np.float32)
            recs.append((off, base_seq + (meta & ((1 << 30) - 1)), key, bool(meta & (1 << 30)), vec,
                         bool(meta & (1 << 31))))
        out[f.name] = recs
    return out


def model_state(records, dropped=()) -> dict[int, np.ndarray]:
    """What recovery must build from `records` minus the `dropped` ranges
    (file basename, offset, bytes): per key the record with the highest
    sequence (ties: the later file); a tombstone means absent."""
    best: dict[int, tuple[int, bool, np.ndarray]] = {}
    for name in sorted(records):
        for off, seq, key, tomb, vec, _end in records[name]:
            if any(n == name and o <= off < o + max(nb, 1) for n, o, nb in dropped):
                continue
            if key not in best or seq >= best[key][0]:
                best[key] = (seq, tomb, vec)
    return {k: v for k, (s, t, v) in best.items() if not t}


def without_torn_tail(records):
    """The records a crash recovery keeps: those after the last batch end of
    the newest file (an unfinished batch) go."""
    last = max(records)
    recs = records[last]
    ends = [i for i, r in enumerate(recs) if r[5]]
    return {**records, last: recs[:ends[-1] + 1] if ends else []}


def read_all(path) -> dict[int, np.ndarray]:
    with Store(path) as s:
        rows, found = s.table("t").lookup(KEYS)
    return {int(k): rows[k].copy() for k in KEYS if found[k]}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- flipping --

def flip(path: Path, rnd: random.Random, newest: bool, header: bool) -> tuple[str, int]:
    """Damages one byte of a data file: flips one bit or XORs a random byte."""
    files = [f for f in sorted((path / "t1").glob("*.dat")) if f.stat().st_size > 0]
    f = files[-1] if newest else rnd.choice(files[:-1])
    size = f.stat().st_size
    off = rnd.randrange(0, 64) if header or size <= 64 else rnd.randrange(64, size)
    mask = 1 << rnd.randrange(8) if rnd.random() < 0.5 else rnd.randrange(1, 256)
    with open(f, "r+b") as fh:
        fh.seek(off)
        b = fh.read(1)[0]
        fh.seek(off)
        fh.write(bytes([b ^ mask]))
    return f.name, off


CATEGORIES = [(n, h) for n in (True, False) for h in (True, False)]  # newest?, header?


def check_repair(trial_dir: Path, pristine_records, acknowledged_states) -> int:
    """Repairs trial_dir; the result must be the pristine records minus exactly
    the reported ranges, and must reopen strictly. Returns records dropped."""
    report = repair(trial_dir)
    assert report["recovery"] == "repair"
    dropped = [(Path(d["file"]).name, d["offset"], d["bytes"]) for d in report["dropped"]]
    assert dropped, "repair of a damaged store reported nothing"
    got = read_all(trial_dir)  # strict open of the repaired store
    assert same(got, model_state(pristine_records, dropped)), (
        f"repair dropped more than it reported: {report['dropped']}")
    # Nothing acknowledged is gone unless reported: with no drops the model is
    # an acknowledged state (checked once per base by the caller).
    assert any(same(model_state(without_torn_tail(pristine_records)), s)
               for s in acknowledged_states)
    return sum(d["records"] for d in report["dropped"])


# ------------------------------------------------------------ clean stores --

CLEAN_MODES = {
    "dram": dict(tiers="dram", compaction="off", file_target_bytes=4096),
    "ssd-compacted": dict(tiers="dram+ssd", dram_capacity_bytes=2000, compaction="sync",
                          compaction_stale_ratio=0.3, file_target_bytes=4096, shard_bits=1),
}


def build_clean(path: Path, opts, rnd: random.Random) -> dict[int, np.ndarray]:
    state: dict[int, np.ndarray] = {}
    with Store(path, **opts) as s:
        t = s.create_table("t", DIM)
        bulk = np.arange(0, NKEYS, 2, dtype=np.int64)
        t.bulk_load(bulk, np.stack([row(0, int(k)) for k in bulk]))
        state.update({int(k): row(0, int(k)) for k in bulk})
        for i in range(1, 120):
            keys = np.array(rnd.sample(range(NKEYS), rnd.randrange(1, 25)), np.int64)
            if i % 6 == 0:
                t.delete(keys)
                for k in keys:
                    state.pop(int(k), None)
            else:
                t.upsert(keys, np.stack([row(i, int(k)) for k in keys]))
                state.update({int(k): row(i, int(k)) for k in keys})
    return state


@pytest.mark.parametrize("mode", sorted(CLEAN_MODES))
def test_flips_in_cleanly_closed_store_are_always_detected(tmp_path, mode):
    rnd = random.Random(f"clean-{mode}")
    base = tmp_path / "base"
    state = build_clean(base, CLEAN_MODES[mode], rnd)
    assert len(list((base / "t1").glob("*.dat"))) >= 3
    assert same(read_all(base), state)  # a clean reopen leaves the record valid
    pristine = decode(base)
    assert same(model_state(pristine), state)
    trials = detected = repaired = 0
    for trial in range(160):
        d = tmp_path / f"x{trial % 2}"
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(base, d)
        newest, header = CATEGORIES[trial % 4]
        name, off = flip(d, rnd, newest, header)
        trials += 1
        try:
            got = read_all(d)
        except CorruptionError as e:
            detected += 1
            assert name in str(e) and "offset" in str(e), str(e)
            if trial % 8 < 4:  # repair a share of them, every category
                check_repair(d, pristine, [state])
                repaired += 1
            continue
        assert same(got, state), f"silent loss: {name} offset {off}"
    # Nothing can be torn after a clean close: every flip is damage.
    assert detected == trials, f"{trials - detected} flips of {trials} went undetected"
    assert repaired >= 70


def test_clean_store_missing_or_short_file_is_corruption(tmp_path):
    base = tmp_path / "s"
    build_clean(base, CLEAN_MODES["dram"], random.Random(3))
    files = sorted((base / "t1").glob("*.dat"))
    data = files[-1].read_bytes()
    files[-1].write_bytes(data[:-(16 + 4 * DIM)])  # the last record, cut at a record boundary
    with pytest.raises(CorruptionError, match="clean close recorded"):
        Store(base)
    files[-1].write_bytes(data)
    files[0].unlink()
    with pytest.raises(CorruptionError, match="missing"):
        Store(base)
    report = repair(base)
    assert [d["reason"] for d in report["dropped"]] == ["missing"]


# ---------------------------------------------------------- crashed stores --

CHILD = r"""
import sys, json, numpy as np
from recstrata.store import Store
path, opts = sys.argv[1], json.loads(sys.argv[2])
with Store(path, **opts) as s:
    t = s.create_table("t", %(dim)d)
    print("ready", flush=True)
    for i in range(1, 100000):
        rng = np.random.default_rng(i)
        keys = rng.choice(%(nkeys)d, size=int(rng.integers(1, 40)), replace=False).astype(np.int64)
        rows = np.stack([np.full(len(keys), i), keys, keys * 3 + i, np.full(len(keys), -i)],
                        axis=1).astype(np.float32)
        t.upsert(keys, rows)
        print(i, flush=True)
"""


def crash_state(n: int) -> dict[int, np.ndarray]:
    """Acknowledged state after the child's batches 1..n (batch i has sequence i)."""
    state = {}
    for i in range(1, n + 1):
        keys, rows = child_batch(i)
        state.update({int(k): rows[j] for j, k in enumerate(keys)})
    return state


def run_and_kill(path: Path, opts, min_lines: int) -> int:
    """Runs the writer child and SIGKILLs it once it has acknowledged at least
    min_lines batches; returns the last acknowledged batch."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD % {"dim": DIM, "nkeys": NKEYS},
                             str(path), json.dumps(opts)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline().strip() == "ready"
    lines: list[str] = []
    got = threading.Event()

    def pump():
        for ln in proc.stdout:
            lines.append(ln)
            if len(lines) >= min_lines:
                got.set()
        got.set()

    threading.Thread(target=pump, daemon=True).start()
    got.wait(60)
    assert proc.poll() is None, "writer child died on its own"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.05)
    done = [ln for ln in lines if ln.endswith("\n")]
    return int(done[-1]) if done else 0


CRASH_MODES = {
    "fsync": dict(tiers="dram", compaction="off", file_target_bytes=4096),
    "none-ssd": dict(tiers="dram+ssd", durability="none", dram_capacity_bytes=2000,
                     compaction="off", file_target_bytes=4096, shard_bits=1),
}


def child_batch(i: int):
    rng = np.random.default_rng(i)
    keys = rng.choice(NKEYS, size=int(rng.integers(1, 40)), replace=False).astype(np.int64)
    return keys, np.stack([row(i, int(k)) for k in keys])


def with_inflight_batch(base: Path, out: Path, committed: int) -> None:
    """`out` = the crashed store `base` plus batch committed+1 written whole to
    a new append file and no clean-close record: cutting that file anywhere
    gives what a kill during the batch's write (never acknowledged) leaves."""
    shutil.copytree(base, out)
    before = {f.name for f in (out / "t1").glob("*.dat")}
    with Store(out) as s:
        s.table("t").upsert(*child_batch(committed + 1))
    new = [f for f in (out / "t1").glob("*.dat") if f.name not in before]
    assert len(new) == 1 and new[0] == max((out / "t1").glob("*.dat"))
    m = out / "MANIFEST"
    doc = json.loads(m.read_text())
    doc.pop("clean_close")
    m.write_text(json.dumps(doc))


@pytest.mark.parametrize("mode", sorted(CRASH_MODES))
def test_flips_in_crashed_store_never_lose_acknowledged_batches(tmp_path, mode):
    rnd = random.Random(f"crash-{mode}")
    trials = detected = opened = repaired = torn_trials = 0
    for kill in range(2):
        base = tmp_path / f"base{kill}"
        committed = run_and_kill(base, CRASH_MODES[mode], rnd.randrange(60, 160))
        assert committed >= 60
        assert "clean_close" not in json.loads((base / "MANIFEST").read_text())
        acknowledged = [crash_state(committed), crash_state(committed + 1)]
        inflight = tmp_path / f"inflight{kill}"
        with_inflight_batch(base, inflight, committed)
        for trial in range(80):
            d = tmp_path / f"x{trial % 2}"
            shutil.rmtree(d, ignore_errors=True)
            if trial % 2 == 0:  # killed between batches
                shutil.copytree(base, d)
            else:  # killed while writing batch committed+1: its file cut anywhere
                shutil.copytree(inflight, d)
                tail = max((d / "t1").glob("*.dat"))
                with open(tail, "r+b") as fh:
                    fh.truncate(rnd.randrange(64, tail.stat().st_size + 1))
                torn_trials += 1
            pristine = decode(d)
            newest, header = CATEGORIES[(trial // 2) % 4]  # every category in both kinds
            name, off = flip(d, rnd, newest, header)
            trials += 1
            try:
                got = read_all(d)
            except CorruptionError as e:
                detected += 1
                assert name in str(e) and "offset" in str(e), str(e)
                if trial % 8 < 4:
                    check_repair(d, pristine, acknowledged)
                    repaired += 1
                continue
            opened += 1
            assert any(same(got, s) for s in acknowledged), (
                f"silent loss after a crash: {name} offset {off} (acknowledged {committed})")
    # Flips in an old file or a header, and in acknowledged records of the
    # newest file, are damage; only bytes of the torn in-flight batch may go.
    assert detected >= trials * 0.75, (detected, trials)
    assert repaired >= 60
    print(f"{mode}: {trials} trials, {detected} detected, {opened} opened intact, "
          f"{repaired} repaired, {torn_trials} with a torn in-flight batch")


def test_store_repair_cli_reports_and_fixes(tmp_path, capsys):
    from recstrata.cli import main

    base = tmp_path / "s"
    state = build_clean(base, CLEAN_MODES["dram"], random.Random(11))
    pristine = decode(base)
    # A record that holds its key's current row (so the repair visibly drops it).
    name, rec_off = next((n, r[0]) for n in sorted(pristine) for r in pristine[n]
                         if not r[3] and r[2] in state and np.array_equal(r[4], state[r[2]]))
    f = base / "t1" / name
    off = rec_off + 20  # inside its vector
    with open(f, "r+b") as fh:
        fh.seek(off)
        b = fh.read(1)[0]
        fh.seek(off)
        fh.write(bytes([b ^ 0x10]))
    with pytest.raises(CorruptionError, match=f"{f.name} at offset {off - 20}"):
        Store(base)
    assert main(["store-repair", str(base)]) == 3
    out = capsys.readouterr().out
    assert f"dropped 1 record(s), {16 + 4 * DIM} bytes of table 't' at offset {off - 20}" in out
    assert (f.parent / (f.name + ".corrupt")).exists()
    assert same(read_all(base), model_state(pristine, [(f.name, off - 20, 16 + 4 * DIM)]))
    assert not same(read_all(base), state)  # the damaged record's row really went
    assert main(["store-repair", str(base)]) == 0  # nothing left to drop
    assert "0 range(s) dropped" in capsys.readouterr().out


def test_require_clean_and_verify_full_refuse_a_crashed_store(tmp_path):
    base = tmp_path / "s"
    state = build_clean(base, CLEAN_MODES["dram"], random.Random(5))
    m = base / "MANIFEST"
    doc = json.loads(m.read_text())
    files = doc["clean_close"]["tables"][0]["files"]
    assert len(files) >= 3 and all(int(f["size"]) > 64 and "crc32c" in f for f in files)
    doc.pop("clean_close")
    m.write_text(json.dumps(doc))
    for opts in ({"recovery": "require_clean"}, {"verify": "full"}):
        with pytest.raises(CorruptionError, match="not closed cleanly"):
            Store(base, **opts)
    with Store(base) as s:  # the crash rules: nothing torn, everything there
        assert s.stats()["recovery"] == "crash" and s.stats()["dropped"] == []
    assert same(read_all(base), state)
    with Store(base, verify="full") as s:  # the close above recorded it again
        assert s.stats()["recovery"] == "clean"
