"""Exporter: a trained model (or its checkpoint directory) -> a recstrata bundle directory.

A bundle (docs/bundle-format.md) is::

    OUT_DIR/
      bundle.json   manifest (format version, signature, features, tables, dense inputs,
                    outputs, file sizes) -- written last
      dense/        the dense stage as a plain SavedModel (tf.Module + tf.function signature):
                    inputs (layout "blocks", the default) embeddings [B, sum of dims] (every
                    sparse feature's pooled embedding, side by side), first_order [B, F]
                    (WDL / DeepFM: every feature's pooled first-order weight) and dense [B, D]
                    (raw dense values, NaN = missing); outputs prob [B] and logit [B]
      store/        the tiered store (rs::store) holding every sub-table, row key = row index

Contracts
- Atomic: everything is written under a temporary sibling name, fsynced, and renamed into place;
  a reader never sees half a bundle (the processor also refuses a directory whose files do not
  match the manifest). An existing OUT_DIR is refused unless ``overwrite=True``.
- The dense stage is saved from the model's own ``dense_stage``: by default frozen (weights as
  graph constants, a v1-builder SavedModel), or with every variable written once
  (``freeze_dense=False``; no Keras ``model.export``, which stores each variable twice).
- Row keys are the training package's (recstrata.training.keys); the processor derives them
  natively and bit-identically, so the tables are stored exactly as trained.
- The manifest is a ``recstrata.bundle.Manifest`` message (the schema the processor parses,
  processor/proto/recstrata/bundle/manifest.proto); names and versions of the format come from
  ``recstrata.bundle.format``.
- Needs TensorFlow and the native library (the tables are written with ``recstrata.store``).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from typing import Any, Callable

import numpy as np

from recstrata.bundle import manifest as mf
from recstrata.bundle.format import (
    DENSE_DIR,
    FORMAT,
    FORMAT_VERSION,
    FORMAT_VERSION_NO_SLICES,
    KEY_SCHEMA_VERSION,
    SIGNATURE,
    STORE_DIR,
)

OUTPUTS = ("prob", "logit")
POOLED = "pooled"   # the dense stage input holding every pooled vector (layout "concat")
EMBEDDINGS = "embeddings"    # layout "blocks": every pooled embedding, side by side
FIRST_ORDER = "first_order"  # layout "blocks": every pooled first-order weight (wdl, deepfm)
POOLED_LAYOUTS = ("blocks", "concat", "per_feature")

__all__ = ["export_bundle", "BundleInfo", "FORMAT_VERSION", "dense_input_name", "lengths_input_name"]


def dense_input_name(i: int) -> str:
    """Alias of the dense-stage input receiving sparse feature i's pooled vector."""
    return f"pooled_{i}"


def lengths_input_name(feature: str) -> str:
    """Request alias of a multi-valued feature's lengths input."""
    return f"{feature}_lengths"


class BundleInfo(dict):
    """What export_bundle wrote: path, manifest, table bytes, timings (a dict)."""


# ----------------------------------------------------------------------------- dense stage

def _dense_module(model, pooled_layout: str):
    """A tf.Module whose serving signature runs the model's dense stage.

    pooled_layout "blocks": inputs ``embeddings`` [B, sum of dims] and (wdl, deepfm)
    ``first_order`` [B, F], fed by the processor column slices of each pooled vector, so the
    graph is the dense stage alone (DenseStage.call_blocks: no per-feature split or slice ops;
    ~90 fewer graph nodes per call for 26 features); "concat": one input ``pooled``
    [B, sum of widths] holding every pooled vector side by side (split inside the graph);
    "per_feature": one input ``pooled_<i>`` [B, width] per feature.
    The module tracks the dense stage's tf.Variables directly (each once); the Keras stage
    itself is only closed over by the traced function, so nothing is saved twice.
    """
    import tensorflow as tf

    stage = model.dense_stage
    infos = model.feature_info()
    num_dense = len(model.cfg.dense)
    names = [f["name"] for f in infos]
    widths = [int(f["width"]) for f in infos]
    dims = [int(d) for d in stage.dims]
    first = stage.has_first_order
    if pooled_layout == "blocks":
        specs = [tf.TensorSpec([None, sum(dims)], tf.float32, name=EMBEDDINGS)]
        if first:
            specs.append(tf.TensorSpec([None, len(dims)], tf.float32, name=FIRST_ORDER))
    elif pooled_layout == "concat":
        specs = [tf.TensorSpec([None, sum(widths)], tf.float32, name=POOLED)]
    else:
        specs = [tf.TensorSpec([None, w], tf.float32, name=dense_input_name(i))
                 for i, w in enumerate(widths)]
    nsp = len(specs)
    if num_dense:
        specs.append(tf.TensorSpec([None, num_dense], tf.float32, name="dense"))

    def serve_blocks(*tensors):
        dense = (tensors[nsp] if num_dense
                 else tf.zeros([tf.shape(tensors[0])[0], 0], tf.float32))
        logit = stage.call_blocks(tensors[0], tensors[1] if first else None, dense,
                                  training=False)
        logit = tf.reshape(tf.cast(logit, tf.float32), [-1])
        return {"prob": tf.sigmoid(logit), "logit": logit}

    def serve(*tensors):
        pooled = (tf.split(tensors[0], widths, axis=1) if pooled_layout == "concat"
                  else tensors[:nsp])
        inputs = dict(zip(names, pooled))
        if num_dense:
            inputs["dense"] = tensors[nsp]
        else:
            inputs["dense"] = tf.zeros([tf.shape(tensors[0])[0], 0], tf.float32)
        logit = tf.reshape(tf.cast(stage(inputs, training=False), tf.float32), [-1])
        return {"prob": tf.sigmoid(logit), "logit": logit}

    module = tf.Module()
    module.variables_ = [w.value if hasattr(w, "value") else w for w in stage.weights]
    module.serve = tf.function(serve_blocks if pooled_layout == "blocks" else serve,
                               input_signature=specs)
    return module, module.serve.get_concrete_function()


def _save_frozen(concrete, out_path: str) -> None:
    """Saves ``concrete`` as a SavedModel whose weights are graph constants.

    The serving graph then holds exactly the dense stage's ops: no variable handles, reads or
    function-call wrappers per call, and TensorFlow's oneDNN matmuls see constant weights (which
    lets them keep the weights in their preferred layout across calls instead of reordering them
    on each). Written with the v1 SavedModel builder ("serve" tag, "serving_default" signature
    keyed by the input specs' names), which every TensorFlow loader reads.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)

    from tensorflow.python.util import deprecation

    frozen = convert_variables_to_constants_v2(concrete)
    graph_def = frozen.graph.as_graph_def()
    in_names = [spec.name for spec in concrete.structured_input_signature[0]]
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")   # tensor names kept
        with tf.compat.v1.Session(graph=graph) as sess, deprecation.silence():
            inputs = {n: graph.get_tensor_by_name(t.name) for n, t in zip(in_names, frozen.inputs)}
            # frozen.outputs follow tf.nest order of the dict: its keys sorted
            keys = sorted(concrete.structured_outputs)
            outputs = {k: graph.get_tensor_by_name(t.name) for k, t in zip(keys, frozen.outputs)}
            sig = tf.compat.v1.saved_model.signature_def_utils.predict_signature_def(inputs,
                                                                                     outputs)
            builder = tf.compat.v1.saved_model.Builder(out_path)
            builder.add_meta_graph_and_variables(
                sess, [tf.saved_model.SERVING],
                signature_def_map={SIGNATURE: sig}, strip_default_attrs=True)
            builder.save()


# ----------------------------------------------------------------------------- helpers

def _fsync_tree(root: str) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(dirpath, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _file_list(root: str, sub: str) -> list:
    """A FileEntry (path relative to ``root``, size) for every file under ``root``/``sub``."""
    out = []
    for dirpath, _dirs, files in os.walk(os.path.join(root, sub)):
        for name in files:
            p = os.path.join(dirpath, name)
            out.append(mf.FileEntry(path=os.path.relpath(p, root), size=os.path.getsize(p)))
    out.sort(key=lambda e: e.path)
    return out


def _load(model_or_path):
    if isinstance(model_or_path, (str, os.PathLike)):
        from recstrata.training.trainer import load_trained

        model, _cfg = load_trained(os.fspath(model_or_path))
        return model
    if not hasattr(model_or_path, "embedding_tables") or not hasattr(model_or_path, "dense_stage"):
        raise TypeError("export_bundle needs a recstrata RecModel or a checkpoint directory, got "
                        f"{type(model_or_path).__name__}")
    return model_or_path


# ----------------------------------------------------------------------------- export

def export_bundle(model_or_path: Any, out_dir: str | os.PathLike, *, tiers: str = "dram",
                  dram_fraction: float | None = None, dram_capacity_bytes: int | None = None,
                  dram_min_bytes: int = 0,
                  cache_policy: str | None = None, single_valued_layout: str = "single",
                  pooled_layout: str = "blocks", freeze_dense: bool = True,
                  overwrite: bool = False,
                  redis_url: str | None = None, redis_password: str = "",
                  redis_model: str | None = None, redis_key_space: str | None = None,
                  redis_publish: bool = True,
                  log: Callable[[str], None] | None = None) -> BundleInfo:
    """Split a trained model into a bundle at ``out_dir`` (see the module docstring).

    model_or_path: a ``RecModel`` or a training checkpoint directory (config.json + checkpoint).
    tiers: the store's tiers, "dram" (everything in memory) or "dram+ssd".
    dram_min_bytes: with dram_fraction, no sub-table's DRAM cache is below this many bytes
      (small sub-tables, e.g. of compressed schemes, are then cached whole: 5% of a 300-row
      table would hold a handful of rows beside its index).
    dram_fraction: with "dram+ssd", each sub-table's DRAM cache is this share of its bytes
      (e.g. 0.05); dram_capacity_bytes instead gives one byte budget per sub-table.
    single_valued_layout: "single" (ids [B], every example has one id) or "lengths"
      (ids [B, 1] + lengths [B], so a missing value can be sent as length 0).
    pooled_layout: "blocks" (the default and fastest: embeddings and first-order weights in
      one dense-stage input each, format version 2), "concat" (one input for all pooled
      vectors, split in the graph) or "per_feature" (one input per sparse feature); the
      last two write format version 1, which older processors read.
    freeze_dense: save the dense stage with its weights as graph constants (the default: fewer
      ops per call, and oneDNN keeps constant weights in its own layout); False keeps them as
      variables (a TF2 SavedModel with a variables/ checkpoint, each variable once).
    redis_url: also write every sub-table once to this Redis Cluster ("host:port,..."), as key
      space ``redis_key_space`` (default: a fresh "v<ms since epoch>-<hex>") of model
      ``redis_model`` (required then), through the store's "dram+redis" write path; hosts
      serve it with feature_store_type "cluster_redis". With ``redis_publish`` (default) the
      space becomes the model's serving one afterwards (the previous serving space becomes the
      backup a rollback returns to; the older backup is dropped). docs/store.md, "Remote tier".
    """
    say = log or (lambda s: None)
    if redis_url and not redis_model:
        raise ValueError("redis_url needs redis_model (the model name in the Redis keys)")
    if redis_url and not redis_key_space:
        redis_key_space = f"v{int(time.time() * 1000)}-{uuid.uuid4().hex[:6]}"
    if tiers not in ("dram", "dram+ssd"):
        raise ValueError(f"tiers must be 'dram' or 'dram+ssd', got {tiers!r}")
    if single_valued_layout not in ("single", "lengths"):
        raise ValueError(f"single_valued_layout must be 'single' or 'lengths', got {single_valued_layout!r}")
    if pooled_layout not in POOLED_LAYOUTS:
        raise ValueError(f"pooled_layout must be one of {POOLED_LAYOUTS}, got {pooled_layout!r}")
    if dram_fraction is not None and not 0.0 < dram_fraction <= 1.0:
        raise ValueError(f"dram_fraction must be in (0, 1], got {dram_fraction}")
    out_dir = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(out_dir) and not overwrite:
        raise FileExistsError(f"{out_dir} exists (pass overwrite=True / --overwrite to replace it)")
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)

    t0 = time.perf_counter()
    model = _load(model_or_path)
    try:
        return _export(model, out_dir, parent, tiers, dram_fraction, dram_capacity_bytes,
                       dram_min_bytes, cache_policy, single_valued_layout, pooled_layout,
                       freeze_dense, say, t0, redis_url, redis_password, redis_model,
                       redis_key_space, redis_publish)
    finally:
        if model is not model_or_path and hasattr(model, "close"):
            model.close()     # loaded here: its temporary dynamic store goes


def _export(model, out_dir, parent, tiers, dram_fraction, dram_capacity_bytes, dram_min_bytes,
            cache_policy, single_valued_layout, pooled_layout, freeze_dense, say, t0,
            redis_url, redis_password, redis_model, redis_key_space, redis_publish):
    import tensorflow as tf

    cfg = model.cfg
    tables = model.embedding_tables()
    infos = model.feature_info()

    tmp = os.path.join(parent, f".{os.path.basename(out_dir)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        # 1. dense stage
        say("exporting the dense stage (SavedModel)")
        module, concrete = _dense_module(model, pooled_layout)
        if freeze_dense:
            _save_frozen(concrete, os.path.join(tmp, DENSE_DIR))
        else:
            tf.saved_model.save(module, os.path.join(tmp, DENSE_DIR),
                                signatures={SIGNATURE: concrete})
        t_dense = time.perf_counter()

        # 2. tables -> store
        from recstrata.store import Store

        store_options: dict[str, Any] = {"create_if_missing": True, "tiers": tiers,
                                         "durability": "none"}
        if cache_policy:
            store_options["cache_policy"] = cache_policy
        manifest = mf.Manifest(
            format=FORMAT,
            format_version=FORMAT_VERSION if pooled_layout == "blocks" else FORMAT_VERSION_NO_SLICES,
            key_schema_version=KEY_SCHEMA_VERSION,
            producer=f"recstrata {_version()} export",
            signature_name=SIGNATURE,
            dense=mf.DenseStage(dir=DENSE_DIR, signature=SIGNATURE),
            store=mf.StoreSpec(dir=STORE_DIR, tiers=tiers, cache_policy=cache_policy or ""))
        table_bytes = 0
        remote = None
        if redis_url:
            remote = Store(None, tiers="dram+redis", redis_url=redis_url, redis_password=redis_password,
                           redis_model=redis_model, redis_key_space=redis_key_space,
                           dram_capacity_bytes=1 << 16)
        if remote is not None and any(t.get("dynamic") for t in tables.values()):
            raise ValueError("export to Redis (redis_url) does not write dynamic tables yet; "
                             "export them to the bundle's local store")
        if any(t.get("dynamic") for t in tables.values()):
            # Dynamic tables: the training store's own files, hard-linked from a snapshot
            # of the cleanly closed store (append-only files never change after a clean
            # close), not a numpy round trip. The other tables are bulk-loaded beside them.
            say("linking the dynamic tables' store files")
            snap = os.path.join(tmp, ".dynamic-snapshot")
            model.dynamic_store.snapshot(snap)
            os.rename(os.path.join(snap, "store"), os.path.join(tmp, STORE_DIR))
            shutil.rmtree(snap)
            store_options["compaction"] = "off"
        with Store(os.path.join(tmp, STORE_DIR), **store_options) as store:
            for ti, (tname, t) in enumerate(tables.items()):
                table = manifest.tables.add(name=tname, dim=int(t["width"]),
                                            key_scheme=mf.KeyScheme(**t["scheme"]),
                                            default_value=0.0)
                if t.get("dynamic"):
                    st = store.table(t["store_table"])
                    rows = int(st.stats()["rows"])
                    table.subtables.add(store_table=t["store_table"], rows=rows,
                                        dim=int(t["width"]), store_dim=int(st.dim))
                    table_bytes += rows * 4 * int(t["width"])
                    say(f"dynamic table {tname}: {rows:,} rows linked from the training store")
                    continue
                for j, arr in enumerate(t["subtables"]):
                    arr = np.asarray(arr, dtype=np.float32)
                    store_name = f"t{ti}_s{j}"
                    if j == 0 and "hot_ids" in t:
                        # freq_aware: the frozen hot set, rows keyed by the ids themselves
                        if remote is not None:
                            raise ValueError("export to Redis (redis_url) does not write "
                                             "freq_aware tables yet")
                        say(f"writing table {tname}'s {arr.shape[0]:,} hot rows")
                        hot = store.create_table(store_name, arr.shape[1])
                        if arr.shape[0]:
                            hot.bulk_load(np.asarray(t["hot_ids"], np.int64), arr)
                        table_bytes += arr.nbytes
                        table.subtables.add(store_table=store_name, rows=arr.shape[0], dim=arr.shape[1])
                        continue
                    cache_bytes = None
                    if tiers == "dram+ssd":
                        if dram_capacity_bytes is not None:
                            cache_bytes = int(dram_capacity_bytes)
                        elif dram_fraction is not None:
                            cache_bytes = max(1, int(dram_min_bytes), int(dram_fraction * arr.nbytes))
                    say(f"bulk-loading table {tname} sub-table {j}: {arr.shape[0]:,} x {arr.shape[1]}")
                    _bulk_load(store, store_name, arr, cache_bytes)
                    if remote is not None:
                        say(f"writing it to redis key space {redis_key_space}")
                        _bulk_load(remote, store_name, arr, None)
                    table_bytes += arr.nbytes
                    table.subtables.add(store_table=store_name, rows=arr.shape[0], dim=arr.shape[1])
            store.flush()
        t_store = time.perf_counter()

        # 3. manifest (last)
        offset = 0
        emb_offset = 0
        dims = [int(d) for d in model.dense_stage.dims]
        for i, f in enumerate(infos):
            multi = f["max_values"] > 1 or single_valued_layout == "lengths"
            feature = manifest.sparse_features.add(name=f["name"], id_type=f["dtype"],
                                                   table=f["table"], multivalued=multi,
                                                   combiner=f["combiner"])
            if pooled_layout == "blocks":
                # columns [0, dim) -> embeddings, column dim (wdl / deepfm) -> first_order
                d = dims[i]
                feature.slices.add(first_column=0, width=d, dense_input=EMBEDDINGS,
                                   dense_offset=emb_offset)
                if int(f["width"]) > d:
                    feature.slices.add(first_column=d, width=int(f["width"]) - d,
                                       dense_input=FIRST_ORDER, dense_offset=i)
                emb_offset += d
            elif pooled_layout == "concat":
                feature.dense_input, feature.dense_offset = POOLED, offset
                offset += int(f["width"])
            else:
                feature.dense_input = dense_input_name(i)
            if multi:
                feature.lengths_input = lengths_input_name(f["name"])
                feature.max_values = int(f["max_values"])
        if cfg.dense:
            manifest.dense_features.add(name="dense", dtype="float32", width=len(cfg.dense),
                                        dense_input="dense")
        for o in OUTPUTS:
            manifest.outputs.add(name=o, dtype="float32", shape=[-1])
        manifest.files.extend(_file_list(tmp, DENSE_DIR))
        _fsync_tree(tmp)
        mf.write(tmp, manifest)
        _fsync_tree(tmp)

        # 4. the redis key space is bound to this bundle (its deltas are then written to the
        #    space once, by whichever host takes each one's lease), then becomes the serving one
        redis_info = None
        if remote is not None:
            from recstrata.checksum import crc32c

            with open(os.path.join(tmp, "bundle.json"), "rb") as fh:
                remote.remote_pointer("bind_base", f"{crc32c(fh.read()):08x}")
            before = remote.remote_pointer("get")
            redis_info = remote.remote_pointer("publish") if redis_publish else before
            old_backup = before.get("backup")
            if redis_publish and old_backup and old_backup not in (redis_info["serving"], redis_info["backup"]):
                say(f"dropping redis key space {old_backup} (no longer serving or backup)")
                remote.remote_pointer("drop", old_backup)
            redis_info = dict(redis_info, key_space=redis_key_space, model=redis_model)
            remote.close()

        # 5. publish atomically
        old = None
        if os.path.exists(out_dir):
            old = os.path.join(parent, f".{os.path.basename(out_dir)}.old-{uuid.uuid4().hex[:8]}")
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        fd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    t_end = time.perf_counter()
    return BundleInfo(path=out_dir, manifest=mf.to_dict(manifest), table_bytes=table_bytes,
                      seconds={"dense": t_dense - t0, "store": t_store - t_dense,
                               "total": t_end - t0}, redis=redis_info)


def _bulk_load(store, name: str, rows: np.ndarray, cache_bytes: int | None) -> None:
    """Writes ``rows`` as table ``name`` of ``store``, row key = row index, ~64 MiB per batch."""
    n, dim = rows.shape
    # row keys are the row indices: a direct index (8 bytes per row)
    table = store.create_table(name, dim, dram_capacity_bytes=cache_bytes, dense_keys=n)
    keys = np.arange(n, dtype=np.int64)
    chunk = max(1, (64 << 20) // max(1, 4 * dim))
    for lo in range(0, n, chunk):
        table.bulk_load(keys[lo:lo + chunk], rows[lo:lo + chunk])


def _version() -> str:
    try:
        import recstrata

        return recstrata.__version__
    except Exception:  # pragma: no cover
        return "?"


# ----------------------------------------------------------------------------- requests

def bundle_feeds(manifest: dict, examples: dict) -> dict:
    """Request feeds of a bundle for parsed examples (the training package's raw layout).

    ``examples``: ``{feature: ids [n, k] (int64 or str/bytes objects), feature + "/len": [n],
    "dense": [n, D]}`` as the synthetic generator and the CSV readers produce them. Returns
    ``{input alias: array}`` in the bundle's request layout: single-valued ids [n], multi-valued
    ids [n, k] plus ``<feature>_lengths`` int32 [n], dense [n, D] float32.
    A single-valued feature in the "single" layout cannot carry a missing value (length 0):
    that raises one ValueError naming every such feature with its count and first rows in
    ``examples`` (export with single_valued_layout="lengths" to serve those).
    """
    feeds: dict = {}
    missing = []   # (feature, rows without a value) of every single-valued feature
    for f in manifest["sparse_features"]:
        name = f["name"]
        ids = np.asarray(examples[name])
        if ids.ndim == 1:
            ids = ids[:, None]
        lens = np.asarray(examples.get(name + "/len", np.ones(len(ids), np.int32)), np.int32)
        if f["id_type"] == "int64":
            ids = ids.astype(np.int64)
        else:
            ids = ids.astype(object)
        if f.get("multivalued"):
            feeds[name] = ids
            feeds[f.get("lengths_input") or lengths_input_name(name)] = lens
        else:
            bad = np.flatnonzero(lens != 1)
            if bad.size:
                missing.append((name, bad))
            feeds[name] = np.ascontiguousarray(ids[:, 0])
    if missing:
        n = len(next(iter(feeds.values())))
        each = "; ".join(
            f"{name!r}: {bad.size} (rows {', '.join(str(int(r)) for r in bad[:5])}"
            f"{', ...' if bad.size > 5 else ''})" for name, bad in missing)
        raise ValueError(
            f"examples without a value in single-valued features, of the {n} examples given: "
            f"{each}. This bundle serves them in the single-valued ids [B] layout, which "
            f"cannot express a missing value: export with --single-valued-layout lengths "
            f"(single_valued_layout=\"lengths\")")
    for d in manifest.get("dense_features", []):
        feeds[d["name"]] = np.ascontiguousarray(examples[d["name"]], dtype=np.float32)
    return feeds


def read_manifest(bundle_dir: str | os.PathLike) -> dict:
    """The bundle's manifest (bundle.json) as a dict (checked against the schema)."""
    return mf.to_dict(mf.read(bundle_dir))
