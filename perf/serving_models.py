"""The serving benchmarks' Criteo-shaped CTR SavedModels and their feeds
(perf/bench_serving.py, perf/bench_overhead.py).

13 dense inputs I1..I13 [B, 1] float32 and 26 id inputs C1..C26 [B, 1] int64, 26 tables of
10k-100k x 16, MLP 512-256-1: as a tf.Module (one tf.gather per table) or as a Keras 3
functional model exported with model.export. Each model is built once under the output folder
and reused while its parameters are unchanged. TensorFlow/Keras are imported inside the
builders only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

N_DENSE, N_SPARSE, EMB_DIM = 13, 26, 16


def table_rows(quick: bool) -> list[int]:
    # 10k..100k rows; the same in --quick (building them takes seconds).
    return [10_000 + (i * 37_000) % 90_001 for i in range(N_SPARSE)]


def build_model(out_dir: Path, rows: list[int]) -> Path:
    """Exports the CTR model once; reused while its parameters are unchanged."""
    model_dir = out_dir / "criteo_ctr"
    meta = {"rows": rows, "dim": EMB_DIM, "mlp": [512, 256, 1], "version": 1}
    meta_file = out_dir / "criteo_ctr.json"
    if model_dir.exists() and meta_file.exists() and json.loads(meta_file.read_text()) == meta:
        return model_dir
    import tensorflow as tf

    rng = np.random.default_rng(0)

    class CriteoCTR(tf.Module):
        def __init__(self):
            super().__init__()
            self.tables = [tf.Variable(rng.normal(0, 0.05, (r, EMB_DIM)).astype(np.float32), name=f"emb_C{i + 1}")
                           for i, r in enumerate(rows)]
            d_in = N_DENSE + N_SPARSE * EMB_DIM
            dims = [d_in, 512, 256, 1]
            self.ws = [tf.Variable(rng.normal(0, (2.0 / a) ** 0.5, (a, b)).astype(np.float32), name=f"w{k}")
                       for k, (a, b) in enumerate(zip(dims[:-1], dims[1:]))]
            self.bs = [tf.Variable(np.zeros(b, np.float32), name=f"b{k}") for k, b in enumerate(dims[1:])]

        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name=f"I{i + 1}") for i in range(N_DENSE)]
                     + [tf.TensorSpec([None, 1], tf.int64, name=f"C{i + 1}") for i in range(N_SPARSE)])
        def serve(self, *args):
            dense = tf.concat(args[:N_DENSE], axis=1)
            embs = [tf.gather(t, tf.math.floormod(ids[:, 0], t.shape[0])) for t, ids in zip(self.tables, args[N_DENSE:])]
            h = tf.concat([dense] + embs, axis=1)
            h = tf.nn.relu(tf.nn.bias_add(tf.matmul(h, self.ws[0]), self.bs[0]))
            h = tf.nn.relu(tf.nn.bias_add(tf.matmul(h, self.ws[1]), self.bs[1]))
            return {"prob": tf.sigmoid(tf.nn.bias_add(tf.matmul(h, self.ws[2]), self.bs[2]))}

    m = CriteoCTR()
    tf.saved_model.save(m, str(model_dir), signatures={"serving_default": m.serve})
    meta_file.write_text(json.dumps(meta))
    return model_dir


def build_keras_model(out_dir: Path, rows: list[int]) -> Path:
    """The same CTR model as a Keras 3 functional model, exported with model.export."""
    model_dir = out_dir / "criteo_ctr_keras"
    meta = {"rows": rows, "dim": EMB_DIM, "mlp": [512, 256, 1], "version": 1, "export": "keras"}
    meta_file = out_dir / "criteo_ctr_keras.json"
    if model_dir.exists() and meta_file.exists() and json.loads(meta_file.read_text()) == meta:
        return model_dir
    import keras

    keras.utils.set_random_seed(0)
    dense_in = [keras.Input(shape=(1,), dtype="float32", name=f"I{i + 1}") for i in range(N_DENSE)]
    sparse_in = [keras.Input(shape=(1,), dtype="int64", name=f"C{i + 1}") for i in range(N_SPARSE)]
    embs = [keras.layers.Reshape((EMB_DIM,))(keras.layers.Embedding(r, EMB_DIM, name=f"emb_C{i + 1}")(x))
            for i, (r, x) in enumerate(zip(rows, sparse_in))]
    h = keras.layers.Concatenate()([keras.layers.Concatenate()(dense_in)] + embs)
    h = keras.layers.Dense(512, activation="relu")(h)
    h = keras.layers.Dense(256, activation="relu")(h)
    prob = keras.layers.Dense(1, activation="sigmoid", name="prob")(h)
    m = keras.Model(inputs={x.name: x for x in dense_in + sparse_in}, outputs={"prob": prob})
    m.export(str(model_dir), format="tf_saved_model", verbose=False)
    meta_file.write_text(json.dumps(meta))
    return model_dir


MODEL_BUILDERS = {"module": build_model, "keras": build_keras_model}


def make_feeds(batch: int, rows: list[int], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {f"I{i + 1}": rng.lognormal(0, 1, (batch, 1)).astype(np.float32) for i in range(N_DENSE)}
    for i, r in enumerate(rows):
        feeds[f"C{i + 1}"] = rng.integers(0, r, (batch, 1), dtype=np.int64)
    return feeds


# The load tests' CTR model (perf/load_test.py, perf/bench_go_server.py): inputs "dense"
# [B, 13] float32 and "cat" [B, 26] int64, one table of 26 x vocab rows, MLP 256-128-1.
LOAD_VOCAB, LOAD_DIM, N_CAT = 20000, 16, 26


def build_ctr_model(path: Path, seed: int, vocab: int = LOAD_VOCAB) -> None:
    import tensorflow as tf

    rng = np.random.default_rng(seed)

    class Ctr(tf.Module):
        def __init__(self):
            super().__init__()
            f = lambda *s: tf.Variable((rng.normal(size=s) * 0.05).astype(np.float32))  # noqa: E731
            self.emb = f(N_CAT * vocab, LOAD_DIM)
            self.w1, self.b1 = f(N_DENSE + N_CAT * LOAD_DIM, 256), f(256)
            self.w2, self.b2 = f(256, 128), f(128)
            self.w3, self.b3 = f(128, 1), f(1)

        @tf.function(input_signature=[tf.TensorSpec([None, N_DENSE], tf.float32, name="dense"),
                                      tf.TensorSpec([None, N_CAT], tf.int64, name="cat")])
        def serve(self, dense, cat):
            idx = tf.math.floormod(cat, vocab) + tf.range(N_CAT, dtype=tf.int64) * vocab
            e = tf.reshape(tf.gather(self.emb, idx), [-1, N_CAT * LOAD_DIM])
            x = tf.concat([dense, e], axis=1)
            h = tf.nn.relu(tf.matmul(x, self.w1) + self.b1)
            h = tf.nn.relu(tf.matmul(h, self.w2) + self.b2)
            return {"prob": tf.sigmoid(tf.matmul(h, self.w3) + self.b3)}

    m = Ctr()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})
