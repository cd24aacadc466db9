"""Dynamic embedding tables during training: the native tiered store behind TF custom ops.

``librecstrata_tfops.so`` (processor/src/tfops, built with the processor) holds the tables:
rows keyed by the raw id in an ``rs_store`` (DRAM budget per table, the rest in its SSD tier),
each row ``[embedding (width) | Adagrad accumulator (width)]``. This module loads it
(``tf.load_op_library`` for the ops, ctypes for the control calls on the same library) and
provides:

* :class:`DynamicStore` - one store directory per worker holding every dynamic table, shared
  by the worker's replicas: ``snapshot(dir)`` (hard links of the cleanly closed store's files
  plus the admission / eviction state), ``restore(dir)``, ``stats()``, ``close()``;
* :class:`DynamicEmbedding` - the Keras layer of one dynamic table (no TF variables): lookups
  through the ``RecstrataDynamicLookup`` op, pooling as for every scheme;
* :func:`prefetch` / :func:`apply_gradients` - what the trainer's step does: look up the unique
  ids of the batch (watched by the tape), then hand the row gradients and occurrence counts to
  ``RecstrataDynamicApply``; the last replica of the step applies every replica's gradients at
  once (summed per id in replica order), counts occurrences into the admission sketch, creates
  admitted rows and evicts;
* multi-worker sharding (:class:`Sharding`, :func:`owner`, :func:`sharded_rows`,
  :func:`sharded_apply`): worker ``owner(id)`` holds the row of ``id``; a step all-gathers
  every replica's unique ids, the owners look their rows up, an all-reduce gives every replica
  its rows, and the row gradients come back to the owners through an all-gather.

Semantics, sharding and limits: docs/training.md ("Dynamic tables").
"""

from __future__ import annotations

import atexit
import ctypes
import dataclasses
import json
import os
import shutil
import tempfile
import threading
import uuid
from typing import Any

import numpy as np

from recstrata.training.dynamic_spec import DynamicKeys, is_dynamic

LIBRARY = "lib/librecstrata_tfops.so"
SNAPSHOT_SUFFIX = ".dyn"      # a checkpoint prefix ckpt-N has its dynamic snapshot in ckpt-N.dyn
SHARD_SUFFIX = ".dyn.w"       # multi-worker: worker k's shard of ckpt-N is ckpt-N.dyn.w<k>
SHARD_SEED = 0x72735F7368617264   # fixed seed of the owner hash ("rs_shard"); never change it
STORE_PREFIX = "dyn_"         # store table name of dynamic table t: dyn_<t>

_lock = threading.Lock()
_ops = None
_lib = None


class _Config(ctypes.Structure):
    _fields_ = [("width", ctypes.c_int32), ("num_replicas", ctypes.c_int32),
                ("seed", ctypes.c_int64), ("init_stddev", ctypes.c_double),
                ("admit_threshold", ctypes.c_int64), ("sketch_depth", ctypes.c_int64),
                ("sketch_width", ctypes.c_int64), ("max_rows", ctypes.c_int64),
                ("ttl_steps", ctypes.c_int64), ("evict_every_steps", ctypes.c_int64),
                ("age_scale_steps", ctypes.c_double), ("learning_rate", ctypes.c_double),
                ("initial_accumulator", ctypes.c_double), ("epsilon", ctypes.c_double),
                ("dram_capacity_bytes", ctypes.c_int64)]


class DynamicTableError(RuntimeError):
    """A dynamic table or its store failed (the message says what and where)."""


def library_path() -> str:
    from recstrata._paths import find_built_file

    return str(find_built_file(LIBRARY))


def _load():
    global _ops, _lib
    with _lock:
        if _ops is None:
            import tensorflow as tf

            path = library_path()
            ops = tf.load_op_library(path)
            lib = ctypes.CDLL(path)
            lib.rsdyn_free.argtypes = [ctypes.c_void_p]
            lib.rsdyn_config_size.restype = ctypes.c_int
            if lib.rsdyn_config_size() != ctypes.sizeof(_Config):
                raise DynamicTableError(f"{path}: config struct size {lib.rsdyn_config_size()} != "
                                        f"{ctypes.sizeof(_Config)} (stale build?)")
            cp, vp = ctypes.c_char_p, ctypes.c_void_p
            err = ctypes.POINTER(ctypes.c_void_p)
            for name, args in {"rsdyn_store_open": [cp, cp, cp, err],
                               "rsdyn_store_close": [cp, err],
                               "rsdyn_table_create": [cp, cp, ctypes.POINTER(_Config), err],
                               "rsdyn_store_snapshot": [cp, cp, err],
                               "rsdyn_store_restore": [cp, cp, err],
                               "rsdyn_store_restore_union": [cp, ctypes.POINTER(cp),
                                                             ctypes.c_size_t, err],
                               "rsdyn_clone_store": [cp, cp, err],
                               "rsdyn_store_stats_json": [cp, err, err],
                               "rsdyn_table_lookup": [cp, vp, ctypes.c_size_t, vp, err],
                               "rsdyn_table_evict": [cp, ctypes.POINTER(ctypes.c_int64), err]}.items():
                fn = getattr(lib, name)
                fn.argtypes, fn.restype = args, ctypes.c_int
            _ops, _lib = ops, lib
    return _ops, _lib


def ops():
    """The loaded op module (``recstrata_dynamic_lookup``, ``_apply``, ``_evict``, ``_snapshot``)."""
    return _load()[0]


def _call(fn, *args) -> None:
    lib = _load()[1]
    err = ctypes.c_void_p()
    rc = fn(*args, ctypes.byref(err))
    if rc != 0:
        msg = ctypes.string_at(err.value).decode("utf-8", "replace") if err.value else "error"
        lib.rsdyn_free(err)
        raise DynamicTableError(msg)


def clone_store(src: str, dst: str) -> None:
    """Copy a cleanly closed store directory: data files hard-linked, MANIFEST copied."""
    _call(_load()[1].rsdyn_clone_store, os.fsencode(src), os.fsencode(dst))


@dataclasses.dataclass
class TableInfo:
    name: str            # the config's table name
    key: str             # registry key of the ops: "<store id>/dyn_<name>"
    store_table: str     # name inside the store
    width: int
    scheme: DynamicKeys


class DynamicStore:
    """One worker's store of dynamic tables (see the module docstring).

    ``directory`` None: a temporary directory, deleted at close. ``num_replicas``: the
    replicas that contribute to each step (the worker's local replicas).
    """

    def __init__(self, directory: str | None = None, num_replicas: int = 1,
                 read_path: str = "pread"):
        _load()
        self.temporary = directory is None
        self.directory = os.path.abspath(directory or tempfile.mkdtemp(prefix="recstrata-dyn-"))
        self.num_replicas = int(num_replicas)
        self.id = f"s{uuid.uuid4().hex[:12]}"
        self.tables: dict[str, TableInfo] = {}
        self.closed = False
        self.sharding: Sharding | None = None   # set for a multi-worker shard
        # pread: rows read from the SSD tier go through the page cache, never mapped into the
        # process, so its resident memory stays the DRAM budget plus the index
        opts = {"create_if_missing": True, "tiers": "dram+ssd", "durability": "none",
                "cache_admission": "always", "read_path": read_path}
        _call(_load()[1].rsdyn_store_open, self.id.encode(), os.fsencode(self.directory),
              json.dumps(opts).encode())
        atexit.register(self.close)

    def create_table(self, name: str, scheme: DynamicKeys, width: int) -> TableInfo:
        if not is_dynamic(scheme):
            raise TypeError(f"table {name}: not a dynamic scheme")
        c = _Config(width=int(width), num_replicas=self.num_replicas, seed=int(scheme.seed),
                    init_stddev=scheme.init_stddev, admit_threshold=scheme.admit_threshold,
                    sketch_depth=scheme.sketch_depth, sketch_width=scheme.sketch_width,
                    max_rows=scheme.max_rows, ttl_steps=scheme.ttl_steps,
                    evict_every_steps=scheme.evict_every_steps,
                    age_scale_steps=scheme.age_scale_steps, learning_rate=scheme.learning_rate,
                    initial_accumulator=scheme.initial_accumulator, epsilon=scheme.epsilon,
                    dram_capacity_bytes=scheme.dram_budget_bytes)
        st = STORE_PREFIX + name
        _call(_load()[1].rsdyn_table_create, self.id.encode(), st.encode(), ctypes.byref(c))
        info = TableInfo(name, f"{self.id}/{st}", st, int(width), scheme)
        self.tables[name] = info
        return info

    def snapshot(self, out_dir: str) -> None:
        """Consistent copy of every table (rows, slots, sketch, eviction state) at ``out_dir``."""
        self._check()
        _call(_load()[1].rsdyn_store_snapshot, self.id.encode(), os.fsencode(os.path.abspath(out_dir)))

    def restore(self, snap_dir: str) -> None:
        """Replace every table by the snapshot at ``snap_dir`` (written by :meth:`snapshot`)."""
        self._check()
        _call(_load()[1].rsdyn_store_restore, self.id.encode(), os.fsencode(os.path.abspath(snap_dir)))

    def restore_union(self, snap_dirs) -> None:
        """Replace every table by the union of the shard snapshots ``snap_dirs`` (a multi-worker
        checkpoint's ``.dyn.w<k>``) for inference and export."""
        self._check()
        dirs = [os.fsencode(os.path.abspath(d)) for d in snap_dirs]
        arr = (ctypes.c_char_p * len(dirs))(*dirs)
        _call(_load()[1].rsdyn_store_restore_union, self.id.encode(), arr, len(dirs))

    def stats(self) -> dict:
        self._check()
        lib = _load()[1]
        out = ctypes.c_void_p()
        _call(lib.rsdyn_store_stats_json, self.id.encode(), ctypes.byref(out))
        try:
            d = json.loads(ctypes.string_at(out.value).decode())
        finally:
            lib.rsdyn_free(out)
        by_name = {i.store_table: n for n, i in self.tables.items()}
        d["tables"] = {by_name.get(k, k): v for k, v in d["tables"].items()}
        return d

    def lookup(self, name: str, keys) -> np.ndarray:
        """Embeddings of ``keys`` in table ``name`` (zeros for ids without a row), numpy."""
        self._check()
        info = self.tables[name]
        k = np.ascontiguousarray(np.asarray(keys).reshape(-1), dtype=np.int64)
        out = np.empty((k.size, info.width), np.float32)
        _call(_load()[1].rsdyn_table_lookup, info.key.encode(), k.ctypes.data, k.size,
              out.ctypes.data)
        return out

    def evict(self, name: str) -> int:
        """Run the age pass and the row cap of table ``name`` now; returns the rows evicted."""
        self._check()
        n = ctypes.c_int64()
        _call(_load()[1].rsdyn_table_evict, self.tables[name].key.encode(), ctypes.byref(n))
        return int(n.value)

    def _check(self):
        if self.closed:
            raise DynamicTableError(f"dynamic store {self.directory} is closed")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            _call(_load()[1].rsdyn_store_close, self.id.encode())
        finally:
            if self.temporary:
                shutil.rmtree(self.directory, ignore_errors=True)


def open_for_config(cfg, num_replicas: int = 1, directory: str | None = None,
                    sharding: "Sharding | None" = None) -> DynamicStore | None:
    """A store with every dynamic table of ``cfg`` (None when it has none).

    ``sharding`` (multi-worker): the store holds this worker's shard; a table's row cap
    ``max_rows`` is split evenly over the shards (``ceil(max_rows / num_workers)`` each)."""
    from recstrata.training.spec import table_width

    dyn = {t: (s, d) for t, (s, d, _f) in cfg.tables().items() if is_dynamic(s)}
    if not dyn:
        return None
    if directory is not None:
        os.makedirs(directory, exist_ok=True)
        if os.listdir(directory):
            raise DynamicTableError(
                f"dynamic_store_dir {directory} is not empty: it is training's working store "
                f"(checkpoints restore into it), give an empty or new directory")
    store = DynamicStore(directory, num_replicas)
    store.sharding = sharding
    try:
        for t, (s, d) in dyn.items():
            if sharding is not None and sharding.num_workers > 1 and s.max_rows > 0:
                s = dataclasses.replace(s, max_rows=-(-s.max_rows // sharding.num_workers))
            store.create_table(t, s, table_width(d, cfg.model.type))
    except BaseException:
        store.close()
        raise
    return store


# ----------------------------------------------------------------------------- in-graph parts

@dataclasses.dataclass
class Prefetched:
    """One dynamic table's part of a batch: unique ids, their rows, counts, per-feature index."""
    keys: Any      # int64 [n]
    rows: Any      # float32 [n, width] (watched by the tape in training)
    counts: Any    # int64 [n]: real occurrences (valid values of weight > 0 examples)
    index: dict    # feature -> int32 [B, k] positions in keys
    exchange: Any = None   # multi-worker: the step's gathered layout (Exchange)


def _live(ids, lengths):
    k = ids.shape[-1]
    import tensorflow as tf

    return tf.range(k)[None, :] < tf.cast(lengths, tf.int32)[:, None]


def gather_keys(batch: dict, features, weight=None):
    """Unique ids of ``features`` (one table) in a batch, the index of every value, counts."""
    import tensorflow as tf

    flats, lives, shapes = [], [], []
    for f in features:
        ids = tf.convert_to_tensor(batch[f.name], tf.int64)
        live = _live(ids, batch[f.name + "/len"])
        if weight is not None:
            live = tf.logical_and(live, (tf.convert_to_tensor(weight) > 0)[:, None])
        flats.append(tf.reshape(ids, [-1]))
        lives.append(tf.reshape(live, [-1]))
        shapes.append(tf.shape(ids))
    flat = tf.concat(flats, 0) if len(flats) > 1 else flats[0]
    live = tf.concat(lives, 0) if len(lives) > 1 else lives[0]
    uniq, idx = tf.unique(flat, out_idx=tf.int32)
    counts = tf.math.unsorted_segment_sum(tf.cast(live, tf.int64), idx, tf.size(uniq))
    sizes = [tf.size(x) for x in flats]
    parts = tf.split(idx, tf.stack(sizes), num=len(sizes)) if len(sizes) > 1 else [idx]
    index = {f.name: tf.reshape(p, s) for f, p, s in zip(features, parts, shapes)}
    return uniq, counts, index


def lookup_op(info: TableInfo, keys):
    with _host_device():
        return ops().recstrata_dynamic_lookup(keys, table=info.key, width=info.width)


def _host_device():
    """Dynamic-table ops run where the store is, in host memory: on CPU replicas under the
    replica's own device scope; with GPUs on the worker's CPU (this GPU path has never run on a
    GPU: every test and benchmark ran on CPUs, multi-device ones on logical CPU devices)."""
    import contextlib

    import tensorflow as tf

    forced = os.environ.get("RECSTRATA_DYNAMIC_HOST_DEVICE")
    if forced:   # tests: the GPU placement on CPU replicas (every replica's ops on one device)
        return tf.device(forced)
    if tf.config.list_logical_devices("GPU"):
        return tf.device("/device:CPU:0")
    return contextlib.nullcontext()


def apply_op(info: TableInfo, keys, counts, grads, replica):
    import tensorflow as tf

    with _host_device():
        return ops().recstrata_dynamic_apply(keys, counts, grads, tf.cast(replica, tf.int32),
                                             table=info.key)


def pool(vec, lengths, combiner: str):
    """vec [B, k, W] of looked-up values -> pooled [B, W] (as SchemeEmbedding.call)."""
    from recstrata.training.pooling import pool_values

    return pool_values(vec, vec.shape[1], lengths, combiner)


# ----------------------------------------------------------------------------- sharding

@dataclasses.dataclass(frozen=True)
class Sharding:
    """Multi-worker dynamic tables: this worker's place in the cluster."""
    num_workers: int
    worker: int
    replicas_per_worker: int


_MIX1, _MIX2, _GOLDEN = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0x9E3779B97F4A7C15


def owner(ids, num_workers: int) -> np.ndarray:
    """The worker owning each id (numpy): splitmix64(id ^ SHARD_SEED) mod num_workers.

    A hash rather than ``id mod num_workers``: raw ids are often structured (strides, ranges per
    source, ids allocated per shard of another system) and would load the workers unevenly."""
    z = np.asarray(ids, np.int64).astype(np.uint64) ^ np.uint64(SHARD_SEED)
    with np.errstate(over="ignore"):
        z = z + np.uint64(_GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
        z = z ^ (z >> np.uint64(31))
    return (z % np.uint64(num_workers)).astype(np.int64)


def owner_tf(ids, num_workers: int):
    """:func:`owner` in the graph (int64 ids -> int64 workers)."""
    import tensorflow as tf

    u = tf.uint64
    z = tf.bitwise.bitwise_xor(tf.bitcast(tf.cast(ids, tf.int64), u), tf.constant(SHARD_SEED, u))
    z = z + tf.constant(_GOLDEN, u)
    z = tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, tf.constant(30, u))) * tf.constant(_MIX1, u)
    z = tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, tf.constant(27, u))) * tf.constant(_MIX2, u)
    z = tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, tf.constant(31, u)))
    return tf.cast(z % tf.constant(num_workers, u), tf.int64)


@dataclasses.dataclass
class Exchange:
    """One table's gathered layout of a step (every replica's padded unique ids, in replica
    order): what :func:`sharded_apply` sends the row gradients back through."""
    keys: Any       # int64 [N]: N = replicas * capacity
    counts: Any     # int64 [N] (0 on padding)
    owned: Any      # bool [N]: this worker owns the id and this is its local replica 0
    n: Any          # this replica's unique ids
    capacity: Any   # per-replica padded length
    replica: Any    # this replica's id in the sync group


def sharded_rows(ctx, info: TableInfo, sharding: Sharding, keys, counts, capacity):
    """Replica context: the rows of this replica's unique ``keys`` from their owners' shards.

    Every replica pads its ids to ``capacity`` (the same on every replica) and all-gathers
    them; local replica 0 of every worker looks up the gathered ids it owns in its shard (zeros
    elsewhere) and an all-reduce (SUM, one non-zero term per id) hands every replica every row.
    Returns ``(rows [n, width], Exchange)``."""
    import tensorflow as tf

    rid = tf.cast(ctx.replica_id_in_sync_group, tf.int64)
    n = tf.size(keys, out_type=tf.int64)
    capacity = tf.cast(capacity, tf.int64)
    pad = [[0, capacity - n]]
    local = tf.stack([tf.pad(keys, pad), tf.pad(tf.cast(counts, tf.int64), pad),
                      tf.pad(tf.ones_like(keys), pad)], axis=1)          # [capacity, 3]
    allk = ctx.all_gather(local, axis=0)                                 # [N, 3]
    gkeys, gcounts, gmask = allk[:, 0], allk[:, 1], allk[:, 2] > 0
    first = tf.equal(rid % sharding.replicas_per_worker, 0)
    owned = tf.logical_and(tf.logical_and(gmask, first),
                           tf.equal(owner_tf(gkeys, sharding.num_workers), sharding.worker))
    sel = tf.where(owned)                                                # [m, 1]
    uniq, idx = tf.unique(tf.gather_nd(gkeys, sel), out_idx=tf.int32)
    found = tf.gather(lookup_op(info, uniq), idx)
    mine = tf.scatter_nd(sel, found, tf.stack([tf.shape(gkeys, out_type=tf.int64)[0],
                                               tf.constant(info.width, tf.int64)]))
    rows = ctx.all_reduce(tf.distribute.ReduceOp.SUM, mine)
    rows = tf.slice(rows, tf.stack([rid * capacity, 0]), tf.stack([n, -1]))
    return rows, Exchange(gkeys, gcounts, owned, n, capacity, rid)


def sharded_apply(ctx, info: TableInfo, sharding: Sharding, ex: Exchange, grads):
    """Replica context: all-gather the row gradients of every replica's ids (the layout of
    :func:`sharded_rows`); local replica 0 of every worker hands the gradients and global
    occurrence counts of the ids it owns to ``RecstrataDynamicApply``, the other local
    replicas an empty contribution (so each owner applies the step once, summed per id in
    replica order)."""
    import tensorflow as tf

    g = tf.pad(tf.convert_to_tensor(grads, tf.float32), [[0, ex.capacity - ex.n], [0, 0]])
    gall = ctx.all_gather(g, axis=0)                                     # [N, width]
    sel = tf.where(ex.owned)
    local = tf.cast(ex.replica % sharding.replicas_per_worker, tf.int32)
    return apply_op(info, tf.gather_nd(ex.keys, sel), tf.gather_nd(ex.counts, sel),
                    tf.gather_nd(gall, sel), local)


def shard_snapshot_dir(prefix: str, worker: int) -> str:
    return f"{prefix}{SHARD_SUFFIX}{worker}"


def shard_snapshot_dirs(prefix: str) -> list[str]:
    """The shard snapshots of checkpoint ``prefix`` (ckpt-N.dyn.w0, .w1, ...; in worker order,
    stopping at the first missing one)."""
    out = []
    while os.path.isdir(shard_snapshot_dir(prefix, len(out))):
        out.append(shard_snapshot_dir(prefix, len(out)))
    return out
