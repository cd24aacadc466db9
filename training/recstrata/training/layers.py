"""Keras layers of the embedding stage (ids -> pooled vectors) and dense input normalisation.

:class:`SchemeEmbedding` owns the sub-tables of one (possibly shared) table and applies its key
scheme in-graph (:mod:`recstrata.training.keys_tf`, bit-identical to :mod:`keys`), combines the
sub-table rows (add / multiply / concat) and pools the values of a feature (sum / mean / sqrtn;
an empty or missing value pools to zeros). :class:`EmbeddingStage` holds one per table and maps a
batch dict to ``{feature: pooled [B, width]}``. Semantics: docs/embedding-keys.md.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from recstrata.training import dynamic_spec
from recstrata.training import keys as K
from recstrata.training import keys_tf
from recstrata.training.pooling import pool_values
from recstrata.training.spec import Config, DenseFeature, table_width

INIT_STDDEV = 0.05


def _var(v):
    return v.value if hasattr(v, "value") else v


class SchemeEmbedding(keras.layers.Layer):
    """The sub-tables of one embedding table and its id -> vector function."""

    def __init__(self, scheme: K.KeyScheme, width: int, seed: int = 0, **kwargs):
        super().__init__(dtype="float32", **kwargs)   # tables stay float32 under mixed precision
        self.scheme, self.width, self.seed = scheme, int(width), int(seed)
        self.dims = scheme.subtable_dims(self.width)
        self.subtables = []
        S = scheme.num_subtables
        for j, (rows, d) in enumerate(zip(scheme.subtable_rows, self.dims)):
            if scheme.combiner == "multiply" and j > 0:
                init = keras.initializers.RandomNormal(mean=1.0, stddev=INIT_STDDEV, seed=seed + j)
            else:
                std = INIT_STDDEV / math.sqrt(S) if scheme.combiner == "add" else INIT_STDDEV
                init = keras.initializers.RandomNormal(stddev=std, seed=seed + j)
            self.subtables.append(self.add_weight(shape=(rows, d), initializer=init,
                                                  name=f"sub{j}", dtype="float32"))

    def lookup(self, ids: tf.Tensor) -> tf.Tensor:
        """int64 ids [...] -> float32 vectors [..., width] (sub-table rows combined)."""
        keys = keys_tf.row_keys(self.scheme, ids)
        parts = [tf.gather(_var(t), keys[..., j]) for j, t in enumerate(self.subtables)]
        if len(parts) == 1:
            return parts[0]
        comb = self.scheme.combiner
        if comb == "add":
            return tf.add_n(parts)
        if comb == "multiply":
            out = parts[0]
            for p in parts[1:]:
                out = out * p
            return out
        return tf.concat(parts, axis=-1)

    def subtable_variables(self) -> list:
        return list(self.subtables)

    def call(self, ids, lengths, combiner: str = "sum"):
        """ids int64 [B, k], lengths int32 [B] -> pooled [B, width]."""
        return pool_values(self.lookup(ids), ids.shape[-1], lengths, combiner)

    def num_params(self) -> int:
        return self.scheme.num_params(self.width)


class FreqAwareEmbedding(keras.layers.Layer):
    """A frequency-aware table (kind "freq_aware"): exact rows for hot ids, a tail scheme for
    the rest (docs/embedding-keys.md, section 3.5).

    ``hot`` [hot_rows, width] holds the hot ids' rows by slot; the sorted hot ids and their slots
    are non-trainable variables looked up in-graph (searchsorted), so training, evaluation and
    checkpoints all see the same hot set. Which ids are hot is decided outside the graph by a
    :class:`recstrata.training.hot_ids.HotIdTracker`; :meth:`promote` installs its decisions.
    """

    def __init__(self, scheme: K.FreqAwareKeys, width: int, seed: int = 0, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        from recstrata.training.hot_ids import HotIdTracker

        self.scheme, self.width, self.seed = scheme, int(width), int(seed)
        self.dims = scheme.subtable_dims(self.width)
        self.tail = SchemeEmbedding(scheme.tail, width, seed=seed + 1, name="tail")
        H = int(scheme.hot_rows)
        self.hot = self.add_weight(shape=(H, self.width), name="hot", dtype="float32",
                                   initializer=keras.initializers.RandomNormal(stddev=INIT_STDDEV, seed=seed))
        self.tracker = HotIdTracker(scheme)
        keys, slots, _ = self.tracker.lookup_arrays()
        state = {"trainable": False, "dtype": "int64"}
        self.hot_keys = self.add_weight(shape=(H,), name="hot_keys", initializer=keras.initializers.Constant(keys), **state)
        self.hot_slots = self.add_weight(shape=(H,), name="hot_slots", initializer="zeros", **state)
        self.hot_count = self.add_weight(shape=(), name="hot_count", initializer="zeros", **state)
        self.hot_ids = self.add_weight(shape=(H,), name="hot_ids", initializer="zeros", **state)
        self.sketch = self.add_weight(shape=self.tracker.sketch.shape, name="sketch",
                                      initializer="zeros", **state)

    def build(self, input_shape=None):
        # every variable is created in __init__ (the shapes come from the scheme)
        self.built = True

    def subtable_variables(self) -> list:
        """[hot] + the tail's sub-tables: the bundle's sub-tables in scheme order."""
        return [self.hot] + list(self.tail.subtables)

    def state_variables(self) -> dict:
        """Non-trainable state checkpoints must hold (name suffix -> variable)."""
        return {"hot_keys": self.hot_keys, "hot_slots": self.hot_slots, "hot_count": self.hot_count,
                "hot_ids": self.hot_ids, "sketch": self.sketch}

    def slots(self, ids: tf.Tensor) -> tf.Tensor:
        """int64 ids [...] -> hot slot of each id, -1 where the id is not hot."""
        keys, count = _var(self.hot_keys), _var(self.hot_count)
        flat = tf.reshape(tf.cast(ids, tf.int64), [-1])
        pos = tf.searchsorted(keys, flat, side="left", out_type=tf.int64)
        pos_c = tf.minimum(pos, tf.cast(tf.shape(keys)[0] - 1, tf.int64))
        hit = (pos < count) & (tf.gather(keys, pos_c) == flat)
        slot = tf.where(hit, tf.gather(_var(self.hot_slots), pos_c), tf.constant(-1, tf.int64))
        return tf.reshape(slot, tf.shape(ids))

    def lookup(self, ids: tf.Tensor) -> tf.Tensor:
        """int64 ids [...] -> [..., width]: the hot row of hot ids, the tail vector of the rest."""
        slot = self.slots(ids)
        hot = tf.gather(_var(self.hot), tf.maximum(slot, 0))
        return tf.where((slot >= 0)[..., None], hot, self.tail.lookup(ids))

    def call(self, ids, lengths, combiner: str = "sum"):
        return pool_values(self.lookup(ids), ids.shape[-1], lengths, combiner)

    def observe(self, ids) -> int:
        """Training: count ``ids`` (the valid values of a batch) and install new hot ids, each
        starting from its current tail vector. Call outside replica context. Returns how many
        ids were promoted."""
        new, slots = self.tracker.observe(ids)
        if new.size:
            self.promote(new, slots)
        return int(new.size)

    def promote(self, new_ids, slots) -> None:
        start = tf.convert_to_tensor(self.tail.lookup(tf.constant(new_ids, tf.int64)))
        _var(self.hot).scatter_update(tf.IndexedSlices(start, tf.constant(slots, tf.int64)))
        self._push_lookup()

    def _push_lookup(self) -> None:
        keys, slots, count = self.tracker.lookup_arrays()
        self.hot_keys.assign(keys)
        self.hot_slots.assign(slots)
        self.hot_count.assign(np.int64(count))

    def save_tracker(self) -> None:
        """Copies the tracker's sketch and slot order into the checkpointed variables."""
        sketch, hot_ids = self.tracker.state()
        self.sketch.assign(sketch)
        self.hot_ids.assign(hot_ids)

    def load_tracker(self) -> None:
        """Inverse of :meth:`save_tracker` (after a checkpoint restore)."""
        self.tracker.load_state(np.asarray(_var(self.sketch)), np.asarray(_var(self.hot_ids)),
                                int(np.asarray(_var(self.hot_count))))
        self._push_lookup()

    def hot_rows_by_id(self) -> tuple[np.ndarray, np.ndarray]:
        """Export: (hot ids, their rows) in slot order (the frozen hot set)."""
        n = self.tracker.num_hot
        return self.tracker.hot_ids.copy(), np.asarray(_var(self.hot))[:n].copy()

    def num_params(self) -> int:
        return self.scheme.num_params(self.width)


class DynamicEmbedding(keras.layers.Layer):
    """A dynamic table (kind "dynamic"): rows in the native store, no TF variables.

    ``lookup(keys)`` reads the rows of unique ids through the store's op (zeros for ids without
    a row); training gets the row gradients through :func:`recstrata.training.dynamic.prefetch`.
    """

    def __init__(self, scheme, width: int, info, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.scheme, self.width, self.info = scheme, int(width), info
        self.dims = (self.width,)
        self.subtables = []

    def lookup_unique(self, keys):
        from recstrata.training import dynamic

        return dynamic.lookup_op(self.info, keys)

    def call(self, ids, lengths, combiner: str = "sum"):
        from recstrata.training import dynamic

        ids = tf.convert_to_tensor(ids, tf.int64)
        flat = tf.reshape(ids, [-1])
        uniq, idx = tf.unique(flat, out_idx=tf.int32)
        rows = self.lookup_unique(uniq)
        vec = tf.reshape(tf.gather(rows, idx), tf.concat([tf.shape(ids), [self.width]], 0))
        return dynamic.pool(vec, lengths, combiner)

    def subtable_variables(self) -> list:
        return []

    def num_params(self) -> int:
        return 0


class EmbeddingStage(keras.layers.Layer):
    """ids -> pooled vectors for every sparse feature: ``{feature: [B, width]}``."""

    def __init__(self, cfg: Config, dynamic_store=None, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.cfg = cfg
        self.features = cfg.sparse
        self.tables = {}
        self.dynamic = {}
        self.freq_aware = {}
        for i, (tname, (scheme, dim, _)) in enumerate(cfg.tables().items()):
            width = table_width(dim, cfg.model.type)
            if dynamic_spec.is_dynamic(scheme):
                if dynamic_store is None or tname not in dynamic_store.tables:
                    raise ValueError(f"table {tname} is dynamic: the model needs a DynamicStore "
                                     f"holding it (recstrata.training.dynamic.open_for_config)")
                layer = DynamicEmbedding(scheme, width, dynamic_store.tables[tname],
                                         name=f"table_{tname}")
                self.dynamic[tname] = layer
            elif isinstance(scheme, K.FreqAwareKeys):
                layer = FreqAwareEmbedding(scheme, width, seed=cfg.train.seed * 7919 + 97 * i,
                                           name=f"table_{tname}")
                self.freq_aware[tname] = layer
            else:
                layer = SchemeEmbedding(scheme, width, seed=cfg.train.seed * 7919 + 97 * i,
                                        name=f"table_{tname}")
            self.tables[tname] = layer

    def observe_hot_ids(self, batch) -> int:
        """Training, before each step: feeds every freq_aware table's hot-id tracker the
        batch's valid ids (values within their lengths, examples of weight > 0)."""
        promoted = 0
        for tname, layer in self.freq_aware.items():
            w = np.asarray(batch["weight"]) > 0
            parts = []
            for f in self.features:
                if f.table != tname:
                    continue
                ids = np.asarray(batch[f.name]).reshape(w.shape[0], -1)
                lens = np.asarray(batch[f.name + "/len"]).reshape(-1)
                live = (np.arange(ids.shape[1])[None, :] < lens[:, None]) & w[:, None]
                parts.append(ids[live])
            promoted += layer.observe(np.concatenate(parts))
        return promoted

    def prefetch(self, batch, weight=None, sharding=None) -> dict:
        """Training: ``{table: Prefetched}`` for every dynamic table (unique ids, their rows,
        occurrence counts of the valid values of examples with weight > 0, per-feature index).

        ``sharding`` (a multi-worker :class:`recstrata.training.dynamic.Sharding`; call in
        replica context): the rows come from their owners' shards through collectives
        (:func:`recstrata.training.dynamic.sharded_rows`); ``Prefetched.exchange`` keeps the
        layout the gradients go back through."""
        from recstrata.training import dynamic

        out = {}
        ctx = tf.distribute.get_replica_context() if sharding is not None else None
        for tname, layer in self.dynamic.items():
            feats = [f for f in self.features if f.table == tname]
            keys, counts, index = dynamic.gather_keys(batch, feats, weight)
            if sharding is None:
                out[tname] = dynamic.Prefetched(keys, layer.lookup_unique(keys), counts, index)
                continue
            # every replica's batch slice has the same shape: the same padded capacity
            capacity = tf.add_n([tf.size(batch[f.name], out_type=tf.int64) for f in feats])
            rows, ex = dynamic.sharded_rows(ctx, layer.info, sharding, keys, counts, capacity)
            out[tname] = dynamic.Prefetched(keys, rows, counts, index, ex)
        return out

    def pooled_from(self, batch, prefetched=None) -> dict:
        """As :meth:`call`, with the dynamic tables' rows taken from ``prefetched``."""
        from recstrata.training import dynamic

        out = {}
        for f in self.features:
            layer = self.tables[f.table]
            if prefetched is not None and f.table in prefetched:
                p = prefetched[f.table]
                idx = p.index[f.name]
                vec = tf.reshape(tf.gather(p.rows, idx), tf.concat([tf.shape(idx), [layer.width]], 0))
                out[f.name] = dynamic.pool(vec, batch[f.name + "/len"], f.combiner)
            else:
                out[f.name] = layer(batch[f.name], batch[f.name + "/len"], combiner=f.combiner)
        return out

    def call(self, batch):
        return self.pooled_from(batch)


class DenseNormalize(keras.layers.Layer):
    """Raw dense values [B, D] (NaN = missing) -> normalised values with missing -> default."""

    def __init__(self, feats: tuple[DenseFeature, ...], **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.feats = tuple(feats)
        self.code = np.array([{"none": 0, "log1p": 1, "standard": 2}[f.transform] for f in feats],
                             np.int32)
        self.mean = np.array([f.mean for f in feats], np.float32)
        self.std = np.array([f.std for f in feats], np.float32)
        self.default = np.array([f.default for f in feats], np.float32)

    def call(self, x):
        x = tf.cast(x, tf.float32)
        missing = tf.math.is_nan(x)
        x0 = tf.where(missing, tf.zeros_like(x), x)
        logv = tf.sign(x0) * tf.math.log1p(tf.abs(x0))
        stdv = (x0 - self.mean) / self.std
        y = tf.where(self.code == 1, logv, tf.where(self.code == 2, stdv, x0))
        return tf.where(missing, tf.broadcast_to(self.default, tf.shape(x)), y)
