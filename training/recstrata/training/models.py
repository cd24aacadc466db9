"""CTR models as an embedding stage + a separately exportable dense stage (WDL, DeepFM, DLRM).

``RecModel(batch) -> logits [B]``: ``embedding_stage`` maps ids to pooled vectors
``{feature: [B, width]}``; ``dense_stage`` maps those plus the raw dense features
``{"dense": [B, D]}`` (NaN = missing; normalised inside) to logits. The dense stage is a
self-contained Keras model that the exporter (``export.py``) turns into the bundle's SavedModel;
``embedding_tables()`` gives the tables as numpy arrays with their key schemes.

For ``wdl`` and ``deepfm`` a table's rows have ``dim + 1`` columns: ``[:dim]`` is the embedding,
column ``dim`` is the feature's first-order (wide / linear) weight, so both ride on the same key
scheme and the same lookup. ``dlrm`` tables have ``dim`` columns.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from recstrata.training.layers import DenseNormalize, EmbeddingStage
from recstrata.training.spec import Config, table_width


def _mlp(widths, dropout: float, seed: int, name: str, final_activation=True):
    layers = []
    for i, w in enumerate(widths):
        act = "relu" if (final_activation or i < len(widths) - 1) else None
        layers.append(keras.layers.Dense(
            w, activation=act, name=f"{name}_{i}",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + i)))
        if dropout > 0:
            layers.append(keras.layers.Dropout(dropout, seed=seed + 100 + i))
    return layers


class DenseStage(keras.Model):
    """pooled vectors + raw dense features -> logits. Inputs: ``{feature: [B, width], "dense": [B, D]}``."""

    def __init__(self, cfg: Config, **kwargs):
        super().__init__(**kwargs)
        self.cfg = cfg
        self.kind = cfg.model.type
        self.feature_names = tuple(f.name for f in cfg.sparse)
        self.dims = tuple(f.dim for f in cfg.sparse)
        self.widths = tuple(table_width(f.dim, self.kind) for f in cfg.sparse)
        self.num_dense = len(cfg.dense)
        s = cfg.train.seed * 104729 + 13
        self.norm = DenseNormalize(cfg.dense, name="dense_norm")
        self.deep = _mlp(cfg.model.hidden, cfg.model.dropout, s, "deep")
        self.out = keras.layers.Dense(1, name="deep_out",
                                      kernel_initializer=keras.initializers.GlorotUniform(seed=s + 50))
        if self.kind in ("wdl", "deepfm") and self.num_dense:
            self.dense_linear = keras.layers.Dense(
                1, use_bias=False, name="dense_linear",
                kernel_initializer=keras.initializers.Zeros())
        if self.kind == "dlrm":
            self.bottom = _mlp(tuple(cfg.model.bottom) + (self.dims[0],), 0.0, s + 200, "bottom")

    def input_signature(self) -> dict:
        """Names, shapes and dtypes of the inputs (batch dimension None)."""
        sig = {n: tf.TensorSpec([None, w], tf.float32, name=n)
               for n, w in zip(self.feature_names, self.widths)}
        sig["dense"] = tf.TensorSpec([None, self.num_dense], tf.float32, name="dense")
        return sig

    def _run(self, layers, x, training):
        for layer in layers:
            x = layer(x, training=training) if isinstance(layer, keras.layers.Dropout) else layer(x)
        return x

    def call(self, inputs, training=False):
        """``{feature: [B, width], "dense": [B, D]}`` -> logits [B] (see :meth:`call_blocks`)."""
        pooled = [tf.cast(inputs[n], tf.float32) for n in self.feature_names]
        emb = tf.concat([p[:, :d] for p, d in zip(pooled, self.dims)], axis=1)
        first = (tf.concat([p[:, d:d + 1] for p, d in zip(pooled, self.dims)], axis=1)
                 if self.has_first_order else None)
        return self.call_blocks(emb, first, inputs["dense"], training=training)

    @property
    def has_first_order(self) -> bool:
        """Whether tables carry a first-order column (wdl, deepfm)."""
        return self.kind in ("wdl", "deepfm")

    def call_blocks(self, emb, first, dense, training=False):
        """The dense stage on block inputs -> logits [B].

        emb [B, sum(dims)]: every feature's embedding side by side, in feature order;
        first [B, F] (wdl / deepfm, else None): every feature's first-order weight;
        dense [B, D]: raw dense features. This is what a bundle's dense stage computes: the
        processor pools rows straight into these blocks, so the graph needs no per-feature
        split or slice ops (the per-feature :meth:`call` builds the blocks and calls this).
        """
        cdt = self.compute_dtype
        dense = self.norm(dense)
        emb = tf.cast(emb, tf.float32)
        nf = len(self.dims)
        if self.kind == "dlrm":
            bottom = self._run(self.bottom, tf.cast(dense, cdt), training)
            v = tf.reshape(emb, [-1, nf, self.dims[0]])                          # [B, F, d]
            t = tf.concat([tf.cast(bottom, tf.float32)[:, None, :], v], axis=1)  # [B, F+1, d]
            z = tf.matmul(t, t, transpose_b=True)
            n = nf + 1
            iu = np.triu_indices(n, 1)
            flat = tf.gather(tf.reshape(z, [-1, n * n]), iu[0] * n + iu[1], axis=1)
            x = tf.concat([tf.cast(bottom, tf.float32), flat], axis=1)
            return tf.cast(self.out(self._run(self.deep, tf.cast(x, cdt), training))[:, 0],
                           tf.float32)
        x = tf.concat([emb, dense], axis=1) if self.num_dense else emb
        deep = tf.cast(self.out(self._run(self.deep, tf.cast(x, cdt), training))[:, 0], tf.float32)
        lin = tf.reduce_sum(tf.cast(first, tf.float32), axis=1)
        if self.num_dense:
            lin = lin + tf.cast(self.dense_linear(dense)[:, 0], tf.float32)
        logit = deep + lin
        if self.kind == "deepfm":
            v = tf.reshape(emb, [-1, nf, self.dims[0]])                          # [B, F, d]
            sq = tf.reduce_sum(v, axis=1)
            logit = logit + 0.5 * tf.reduce_sum(sq * sq - tf.reduce_sum(v * v, axis=1), axis=1)
        return logit

    def probabilities(self, inputs):
        return tf.sigmoid(self(inputs, training=False))

    def as_module(self) -> tf.Module:
        """A ``tf.Module`` exporting this dense stage on its own, each variable once.

        ``module.serve(**inputs)`` (a ``tf.function`` with the input signature of
        :meth:`input_signature`) returns ``{"probability": [B], "logit": [B]}``. The module
        tracks every variable explicitly (Keras 3 does not expose layers kept in lists to
        ``tf.saved_model.save``), so ``tf.saved_model.save(module, dir, signatures=
        {"serving_default": module.serve})`` writes a stock SavedModel.
        """
        stage = self
        sig = self.input_signature()

        class _DenseStageModule(tf.Module):
            def __init__(self):
                super().__init__(name="dense_stage")
                self.variables_list = [w.value if hasattr(w, "value") else w for w in stage.weights]

            @tf.function(input_signature=[sig])
            def _serve(self, inputs):
                logit = stage(inputs, training=False)
                return {"probability": tf.sigmoid(logit), "logit": logit}

        mod = _DenseStageModule()
        # a keyword-argument signature: inputs are named like the features (+ "dense")
        names = list(sig)

        @tf.function(input_signature=[sig[n] for n in names])
        def serve(*args):
            return mod._serve(dict(zip(names, args)))

        mod.serve = serve
        return mod


class RecModel(keras.Model):
    """The whole CTR model: ``embedding_stage`` then ``dense_stage``; call -> logits [B]."""

    def __init__(self, cfg: Config, dynamic_store=None, **kwargs):
        super().__init__(**kwargs)
        self.cfg = cfg
        self.owns_dynamic_store = False
        if dynamic_store is None and has_dynamic(cfg):
            from recstrata.training import dynamic

            dynamic_store = dynamic.open_for_config(cfg)   # a temporary, volatile one
            self.owns_dynamic_store = True
        self.dynamic_store = dynamic_store
        self.embedding_stage = EmbeddingStage(cfg, dynamic_store, name="embedding_stage")
        self.dense_stage = DenseStage(cfg, name="dense_stage")

    def call(self, batch, training=False):
        pooled = self.embedding_stage(batch)
        pooled["dense"] = batch["dense"]
        return self.dense_stage(pooled, training=training)

    def forward(self, batch, training=False, prefetched=None):
        """Logits with the dynamic tables' rows taken from ``prefetched`` (the training step)."""
        pooled = self.embedding_stage.pooled_from(batch, prefetched)
        pooled["dense"] = batch["dense"]
        return self.dense_stage(pooled, training=training)

    def close(self) -> None:
        """Close the dynamic store when this model opened it."""
        if self.owns_dynamic_store and self.dynamic_store is not None:
            self.dynamic_store.close()

    def pooled(self, batch) -> dict:
        """The embedding stage's output (+ the raw dense input): the dense stage's input."""
        pooled = self.embedding_stage(batch)
        pooled["dense"] = tf.convert_to_tensor(batch["dense"], tf.float32)
        return pooled

    def build_with_dummy(self) -> None:
        """Create all variables by running one tiny batch (call inside the strategy scope)."""
        self(dummy_batch(self.cfg, 2))

    def predict_batch(self, batch) -> np.ndarray:
        """Probabilities for one batch dict (numpy in, numpy out)."""
        sh = getattr(self.dynamic_store, "sharding", None)
        if sh is not None and sh.num_workers > 1:
            from recstrata.training.dynamic import DynamicTableError

            raise DynamicTableError(
                f"this model's dynamic store holds shard {sh.worker} of {sh.num_workers} (a "
                f"multi-worker run): predict through Trainer.evaluate, or load the checkpoint "
                f"with load_trained (the union of the shards)")
        return tf.sigmoid(self(batch, training=False)).numpy()

    def embedding_tables(self) -> dict:
        """``{table: {"scheme", "width", "combiner", "features", "subtables": [np.ndarray]}}``."""
        out = {}
        tables = self.cfg.tables()
        for tname, layer in self.embedding_stage.tables.items():
            scheme, dim, feats = tables[tname]
            if tname in self.embedding_stage.dynamic:
                out[tname] = {"scheme": scheme.to_dict(), "dim": dim, "width": layer.width,
                              "combiner": "add", "features": list(feats), "dynamic": True,
                              "store_table": layer.info.store_table,
                              "subtable_rows": [], "subtable_dims": [layer.width],
                              "subtables": []}
                continue
            if tname in self.embedding_stage.freq_aware:
                # sub-table 0 = the frozen hot set's rows, keyed by the ids (not row indices)
                hot_ids, hot_rows = layer.hot_rows_by_id()
                out[tname] = {
                    "scheme": scheme.to_dict(), "dim": dim, "width": layer.width,
                    "combiner": scheme.combiner, "features": list(feats),
                    "subtable_rows": [int(hot_ids.size)] + list(scheme.tail.subtable_rows),
                    "subtable_dims": list(layer.dims), "hot_ids": hot_ids,
                    "subtables": [hot_rows] + [np.asarray(_value(t)) for t in layer.tail.subtables],
                }
                continue
            out[tname] = {
                "scheme": scheme.to_dict(),
                "dim": dim,
                "width": layer.width,
                "combiner": scheme.combiner,
                "features": list(feats),
                "subtable_rows": list(scheme.subtable_rows),
                "subtable_dims": list(layer.dims),
                "subtables": [np.asarray(_value(t)) for t in layer.subtables],
            }
        return out

    def checkpoint_variables(self) -> dict:
        """Stable name -> tf.Variable for every weight (what checkpoints store).

        Keras 3 does not expose layers kept in dicts/lists to tf.train.Checkpoint, so
        checkpoints name variables explicitly: ``embedding.<table>.sub<j>`` and
        ``dense.<layer>.<weight>``.
        """
        out = {}
        for tname, layer in self.embedding_stage.tables.items():
            for j, t in enumerate(layer.subtable_variables()):
                out[f"embedding.{tname}.sub{j}"] = _tf_var(t)
            if tname in self.embedding_stage.freq_aware:
                for key, v in layer.state_variables().items():
                    out[f"embedding.{tname}.{key}"] = _tf_var(v)
        for w in self.dense_stage.weights:
            name = "dense." + w.path.split("dense_stage/", 1)[-1].replace("/", ".")
            if name in out:
                raise RuntimeError(f"duplicate checkpoint variable name {name}")
            out[name] = _tf_var(w)
        return out

    def feature_info(self) -> list[dict]:
        """Per sparse feature: name, dtype, max_values, combiner, table, width (manifest input)."""
        return [{"name": f.name, "dtype": f.dtype, "max_values": f.max_values,
                 "combiner": f.combiner, "table": f.table,
                 "width": table_width(f.dim, self.cfg.model.type)} for f in self.cfg.sparse]

    def summary_rows(self) -> list[dict]:
        """Parameter count and bytes per table, plus the dense stage."""
        rows = []
        for tname, layer in self.embedding_stage.tables.items():
            p = layer.num_params()
            rows.append({"table": tname, "scheme": layer.scheme.kind,
                         "features": ",".join(self.cfg.tables()[tname][2]),
                         "subtables": ("(store)" if tname in self.embedding_stage.dynamic
                                       else "x".join(str(r) for r in layer.scheme.subtable_rows)),
                         "width": layer.width, "params": p, "bytes": 4 * p})
        dp = int(sum(int(np.prod(w.shape)) for w in self.dense_stage.weights))
        rows.append({"table": "(dense stage)", "scheme": self.cfg.model.type, "features": "",
                     "subtables": "", "width": "", "params": dp, "bytes": 4 * dp})
        return rows


def has_dynamic(cfg: Config) -> bool:
    """Whether a config has a dynamic table."""
    from recstrata.training.dynamic_spec import is_dynamic

    return any(is_dynamic(f.scheme) for f in cfg.sparse)


def _tf_var(v):
    return v.value if hasattr(v, "value") and not isinstance(v, tf.Variable) else v


def _value(v):
    try:
        return v.numpy()
    except AttributeError:
        return keras.ops.convert_to_numpy(v)


def dummy_batch(cfg: Config, rows: int) -> dict:
    b = {}
    for f in cfg.sparse:
        b[f.name] = np.zeros((rows, f.max_values), np.int64)
        b[f.name + "/len"] = np.ones(rows, np.int32)
    b["dense"] = np.zeros((rows, len(cfg.dense)), np.float32)
    return b


def format_summary(rows: list[dict]) -> str:
    head = f"{'table':<20} {'scheme':<12} {'sub-table rows':<18} {'width':>5} {'params':>12} {'bytes':>12}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['table']:<20} {r['scheme']:<12} {r['subtables']:<18} {str(r['width']):>5} "
                     f"{r['params']:>12,} {r['bytes']:>12,}")
    emb = sum(r["bytes"] for r in rows[:-1])
    lines.append(f"{'embeddings total':<58} {sum(r['params'] for r in rows[:-1]):>12,} {emb:>12,}")
    return "\n".join(lines)
