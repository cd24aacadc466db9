"""The artifacts perf/bench_bundle_rss.py measures, built step by step (its docstring says why
each step runs in a process of its own, and what each one builds).

`run_step(NAME, ...)` runs ``python perf/bundle_rss_build.py --step NAME --out-dir DIR
--size-gib X``, whose last stdout line is the step's JSON dict. `verification_requests` and
`_stamp` (the artifacts' cache key) live here too: the build's checks use the former.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bundle_models as bm  # noqa: E402
from harness import rss_mib  # noqa: E402

N_SPARSE, DIM = bm.N_SPARSE, bm.DIM
WIDTH = DIM + 1                       # WDL: 16 embedding columns + 1 first-order column
BATCH = 64
# Per-feature cardinalities of the Criteo Kaggle (DAC) data set, C1..C26.
CRITEO_CARDINALITIES = (1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683,
                        8351593, 3194, 27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15,
                        286181, 105, 142572)


MIN_ROWS = 3


SMALL_ROWS = [1000 + 7 * i for i in range(N_SPARSE)]   # the tf2onnx stand-in (distinct counts)


def table_rows(size_gib: float) -> list[int]:
    """Criteo-shaped row counts whose float32 [rows, 17] tables hold ~size_gib GiB."""
    total_rows = size_gib * 2**30 / (WIDTH * 4)
    scale = total_rows / sum(CRITEO_CARDINALITIES)
    return [max(MIN_ROWS, int(round(c * scale))) for c in CRITEO_CARDINALITIES]


def table_bytes(rows: list[int]) -> int:
    return sum(r * WIDTH * 4 for r in rows)


class _StandIn:
    """Stands in for the full-size RecModel once its process has ended (a TF process keeps the
    memory of the RecModel's random initialisation, ~2x the tables, until it exits): the full
    config, the RecModel's table values (read-only memory maps of the files step_model wrote
    them to) and its dense stage (the same weights, set on a RecModel of the same config with
    tiny tables, whose other methods -- feature_info etc., independent of table sizes -- are
    used as they are). `take` gives a table fewer rows (the tf2onnx stand-in; zero-padded when
    the real table is smaller)."""

    def __init__(self, cfg, small_model, files: dict, file_rows: dict, take: dict | None = None):
        self.cfg = cfg
        self._small = small_model
        self.dense_stage = small_model.dense_stage
        self._files, self._file_rows, self._take = files, file_rows, take or file_rows

    def embedding_tables(self) -> dict:
        out = {}
        schemes = self.cfg.tables()
        for t, meta in self._small.embedding_tables().items():
            full = np.memmap(self._files[t], dtype=np.float32, mode="r",
                             shape=(self._file_rows[t], WIDTH))
            sub = full[:self._take[t]]
            if sub.shape[0] < self._take[t]:
                sub = np.concatenate([sub, np.zeros((self._take[t] - sub.shape[0], WIDTH),
                                                    np.float32)])
            scheme = schemes[t][0]
            out[t] = dict(meta, scheme=scheme.to_dict(), subtable_rows=list(scheme.subtable_rows),
                          subtables=[sub])
            if list(scheme.subtable_rows) != [self._take[t]]:
                raise RuntimeError(f"table {t}: config rows {scheme.subtable_rows} != {self._take[t]}")
        return out

    def __getattr__(self, name):
        return getattr(self._small, name)


def _peak() -> float:
    return rss_mib()["peak_mib"]


def _keras_batch(feeds: dict) -> dict:
    """A request in the RecModel's own batch layout (ids [B, 1] + lengths)."""
    b = {}
    for k, v in feeds.items():
        if k == "dense":
            b[k] = v
        else:
            b[k] = v.reshape(-1, 1)
            b[k + "/len"] = np.ones(len(v), np.int32)
    return b


def step_model(out: Path, rows: list[int]) -> dict:
    """The full-size RecModel: its tables to raw float32 files (ONNX Runtime's external data and
    the source of every other artifact), its dense-stage weights, and its own predictions on the
    verification requests (the reference every served output is compared with)."""
    from recstrata.training.models import RecModel
    from recstrata.training.spec import parse_config

    t0 = time.perf_counter()
    cfg = parse_config(bm.config(rows))
    model = RecModel(cfg, name="rec_model")
    model.build_with_dummy()
    info = {"model_s": time.perf_counter() - t0, "peak_after_model_mib": _peak()}
    onnx_dir = out / "onnx"
    onnx_dir.mkdir(parents=True, exist_ok=True)
    for f in cfg.sparse:            # one table at a time (embedding_tables() copies them all)
        layer = model.embedding_stage.tables[f.table]
        if len(layer.subtables) != 1:
            raise RuntimeError(f"{f.table}: {len(layer.subtables)} sub-tables, want 1 (plain)")
        arr = np.asarray(layer.subtables[0].numpy(), dtype=np.float32)
        if arr.shape != (rows[int(f.name[1:]) - 1], WIDTH):
            raise RuntimeError(f"{f.table}: shape {arr.shape}")
        arr.tofile(onnx_dir / f"emb_{f.name}.bin")
        del arr
    np.savez(out / "dense_weights.npz", *model.dense_stage.get_weights())
    ref = np.stack([model.predict_batch(_keras_batch(r)).reshape(-1)
                    for r in bm.load_requests(out / "verify")])
    np.save(out / "verify" / "ref_keras.npy", ref)
    info.update(seconds=time.perf_counter() - t0, peak_mib=_peak())
    print(f"  RecModel built, tables written ({info['seconds']:.0f} s, peak "
          f"{info['peak_mib']:.0f} MiB)", flush=True)
    return info


def _stand_ins(out: Path, rows: list[int]):
    """(full-size stand-in, tf2onnx stand-in) for the RecModel of step_model."""
    from recstrata.training.models import RecModel
    from recstrata.training.spec import parse_config

    small_cfg = parse_config(bm.config(SMALL_ROWS))
    small = RecModel(small_cfg, name="rec_model")
    small.build_with_dummy()
    z = np.load(out / "dense_weights.npz")
    small.dense_stage.set_weights([z[f"arr_{i}"] for i in range(len(z.files))])
    cfg = parse_config(bm.config(rows))
    files = {f.table: str(out / "onnx" / f"emb_{f.name}.bin") for f in cfg.sparse}
    file_rows = {f.table: rows[i] for i, f in enumerate(cfg.sparse)}
    full = _StandIn(cfg, small, files, file_rows)
    tiny = _StandIn(small_cfg, small, files, file_rows,
                    {f.table: SMALL_ROWS[i] for i, f in enumerate(small_cfg.sparse)})
    return full, tiny


def step_export(out: Path, rows: list[int]) -> dict:
    """export_bundle (tiers dram+ssd, DRAM caches at 10%), then the copy for the mmap system."""
    from recstrata.training.export import export_bundle

    t0 = time.perf_counter()
    full, _ = _stand_ins(out, rows)
    bi = export_bundle(full, out / "bundle_ssd10", tiers="dram+ssd", dram_fraction=0.10)
    info = {"export_seconds": dict(bi["seconds"]), "peak_after_export_mib": _peak()}
    t = time.perf_counter()
    shutil.copytree(out / "bundle_ssd10", out / "bundle_ssd10_mmap")
    info.update(copy_s=time.perf_counter() - t, seconds=time.perf_counter() - t0, peak_mib=_peak())
    print(f"  bundle exported and copied ({info['seconds']:.0f} s, peak {info['peak_mib']:.0f} MiB)",
          flush=True)
    return info


def step_ingraph(out: Path, rows: list[int]) -> dict:
    """bundle_models.build_ingraph on the full tables and on the tf2onnx stand-in."""
    t0 = time.perf_counter()
    full, tiny = _stand_ins(out, rows)
    bm.build_ingraph(full, full.cfg, out / "ingraph")
    bm.build_ingraph(tiny, tiny.cfg, out / "ingraph_small")
    info = {"seconds": time.perf_counter() - t0, "peak_mib": _peak()}
    print(f"  in-graph SavedModels written ({info['seconds']:.0f} s, peak {info['peak_mib']:.0f} MiB)",
          flush=True)
    return info


def step_convert(out: Path) -> dict:
    """tf2onnx on the small in-graph model (bundle_models.convert_onnx)."""
    t = time.perf_counter()
    bm.convert_onnx(str(out / "ingraph_small"), str(out / "onnx" / "small.onnx"))
    return {"seconds": time.perf_counter() - t, "peak_mib": _peak()}


def step_tfref(out: Path) -> dict:
    """The in-graph SavedModel's outputs on the verification requests (TF is the reference)."""
    import tensorflow as tf

    t = time.perf_counter()
    reqs = bm.load_requests(out / "verify")
    sig = tf.saved_model.load(str(out / "ingraph")).signatures["serving_default"]
    ref = np.stack([sig(**{k: tf.constant(v) for k, v in r.items()})["prob"].numpy().reshape(-1)
                    for r in reqs])
    np.save(out / "verify" / "ref_tf.npy", ref)
    return {"seconds": time.perf_counter() - t, "peak_mib": _peak()}


def step_onnx(out: Path, rows: list[int]) -> dict:
    """Grafts the full tables (external data) and row counts into the tf2onnx-converted small
    model, then checks it against TF on the verification requests."""
    import onnx
    import onnxruntime as ort
    from onnx import external_data_helper, numpy_helper

    t = time.perf_counter()
    onnx_dir = out / "onnx"
    m = onnx.load(str(onnx_dir / "small.onnx"))
    by_rows = {r: i for i, r in enumerate(SMALL_ROWS)}
    tables: dict[int, object] = {}
    for init in m.graph.initializer:
        if (init.data_type == onnx.TensorProto.FLOAT and len(init.dims) == 2
                and init.dims[1] == WIDTH and init.dims[0] in by_rows):
            i = by_rows[init.dims[0]]
            if i in tables:
                raise RuntimeError(f"two table initializers with {init.dims[0]} rows")
            tables[i] = init
    if len(tables) != N_SPARSE:
        raise RuntimeError(f"found {len(tables)} table initializers in small.onnx, want {N_SPARSE}")
    for i, init in tables.items():
        small = numpy_helper.to_array(init)
        path = onnx_dir / f"emb_C{i + 1}.bin"
        full = np.memmap(path, dtype=np.float32, mode="r", shape=(rows[i], WIDTH))
        n = min(rows[i], SMALL_ROWS[i])
        if not np.array_equal(small[:n], full[:n]):
            raise RuntimeError(f"table C{i + 1}: small.onnx's rows are not the full table's first rows")
        external_data_helper.set_external_data(init, location=path.name, offset=0,
                                               length=rows[i] * WIDTH * 4)
        init.ClearField("raw_data")
        init.ClearField("float_data")
        init.dims[:] = [rows[i], WIDTH]
        del full
    # FloorMod(ids, rows): tf2onnx writes int64 FloorMod as ids - floor(ids / C) * C (or Mod),
    # with C an int64 constant per table: every int64 one-element constant whose value is a
    # stand-in row count becomes that table's full row count (the stand-in counts 1000 + 7 i
    # occur nowhere else in this model; the check against TF below would catch it if they did)
    int64 = onnx.TensorProto.INT64
    consts = [(t, numpy_helper.to_array(t)) for t in m.graph.initializer if t.data_type == int64]
    consts += [(a.t, numpy_helper.to_array(a.t)) for n in m.graph.node if n.op_type == "Constant"
               for a in n.attribute if a.name == "value" and a.t.data_type == int64]
    patched: dict[int, int] = {}
    for holder, val in consts:
        if val.dtype == np.int64 and val.size == 1 and int(val.reshape(-1)[0]) in by_rows:
            i = by_rows[int(val.reshape(-1)[0])]
            holder.CopyFrom(numpy_helper.from_array(np.array(rows[i], np.int64).reshape(val.shape),
                                                    holder.name))
            patched[i] = patched.get(i, 0) + 1
    if len(patched) != N_SPARSE:
        raise RuntimeError(f"found row-count constants of {len(patched)} tables, want {N_SPARSE}")
    model_path = onnx_dir / "model.onnx"
    onnx.save_model(m, str(model_path))
    onnx.checker.check_model(str(model_path))
    del m
    gc.collect()

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    alias = {i.name.split(":")[0]: i.name for i in sess.get_inputs()}
    reqs = bm.load_requests(out / "verify")
    got = np.stack([sess.run(None, {alias[k]: v for k, v in r.items()})[0].reshape(-1)
                    for r in reqs])
    ref = np.load(out / "verify" / "ref_tf.npy")
    diff = float(np.abs(got - ref).max())
    ok = diff <= 1e-5
    return {"seconds": time.perf_counter() - t, "peak_mib": _peak(), "max_abs_diff_vs_tf": diff,
            "ok": ok, "row_count_constants_patched": sum(patched.values()),
            "onnx_mib": model_path.stat().st_size / 2**20,
            "small_onnx_mib": (onnx_dir / "small.onnx").stat().st_size / 2**20}


def step_store_stats(out: Path) -> dict:
    """The bundle's store opened alone (recstrata.store, pread): its own index_bytes
    (SSD-tier key index: direct arrays + hash shards) and the memory of a process holding just
    the store (plus the libraries recstrata loads)."""
    from recstrata.store import Store

    before = rss_mib()
    t = time.perf_counter()
    store = Store(str(out / "bundle_ssd10" / "store"), read_path="pread")
    open_s = time.perf_counter() - t
    tables = list(store.stats()["tables"].values())
    info = {"open_s": open_s, "index_bytes": sum(x.get("index_bytes", 0) for x in tables),
            "rows": sum(x["rows"] for x in tables),
            "dram_capacity_bytes": sum(x["dram_capacity_bytes"] for x in tables),
            "memory_before_open": before, "memory_open": rss_mib(), "peak_mib": _peak()}
    store.close()
    return info


def run_step(name: str, out: Path, size_gib: float, say) -> dict:
    """Runs one build step in its own process; its last stdout line is a JSON dict."""
    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--step", name,
                          "--out-dir", str(out), "--size-gib", repr(size_gib)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    lines = []
    for line in p.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("  "):
            say(line.strip())
    err = p.stderr.read()
    p.wait()
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"build step {name} failed (exit {p.returncode}): {err[-3000:]}")
    info = json.loads(lines[-1])
    info["wall_s"] = time.perf_counter() - t
    say(f"step {name}: {info['wall_s']:.0f} s, peak RSS {info.get('peak_mib', 0):.0f} MiB")
    return info


def verification_requests(rows: list[int], zipf: list[dict]) -> list[dict]:
    """Four of the measured Zipf requests, one with uniform ids over every table, one with each
    table's first and last rows (the tail of a big table is where a grafted table would show a
    mis-sized or misplaced external-data reference)."""
    rng = np.random.default_rng(7)
    uni = {f"C{i + 1}": rng.integers(0, r, BATCH, dtype=np.int64) for i, r in enumerate(rows)}
    uni["dense"] = rng.lognormal(0, 1, (BATCH, bm.N_DENSE)).astype(np.float32)
    edge = {f"C{i + 1}": np.where(np.arange(BATCH) % 2 == 0, r - 1, 0).astype(np.int64)
            for i, r in enumerate(rows)}
    edge["dense"] = rng.lognormal(0, 1, (BATCH, bm.N_DENSE)).astype(np.float32)
    return zipf[:4] + [uni, edge]


def _stamp(rows: list[int]) -> str:
    import recstrata.training.export as export_mod

    src = "".join(inspect.getsource(f) for f in (
        bm.config, bm.build_ingraph, bm.convert_onnx, _StandIn, _keras_batch, step_model,
        _stand_ins, step_export, step_ingraph, step_convert, step_tfref, step_onnx,
        verification_requests))
    return hashlib.sha256(json.dumps([bm.config(rows), SMALL_ROWS], sort_keys=True).encode()
                          + Path(export_mod.__file__).read_bytes() + src.encode()).hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--step", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--size-gib", type=float, required=True)
    args = ap.parse_args(argv)
    out, rows = Path(args.out_dir), table_rows(args.size_gib)
    fn = {"model": lambda: step_model(out, rows), "export": lambda: step_export(out, rows),
          "ingraph": lambda: step_ingraph(out, rows), "convert": lambda: step_convert(out),
          "tfref": lambda: step_tfref(out), "onnx": lambda: step_onnx(out, rows),
          "store_stats": lambda: step_store_stats(out)}[args.step]
    print(json.dumps(fn()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
