"""The bundle benchmarks' model and its competitors (perf/bench_bundle.py, bench_bundle_rss.py).

A Criteo-shaped recstrata.training WDL (26 plain tables of dim 16 (+1 first-order column),
13 log1p dense features, MLP 512-256-1), the same model as one in-graph SavedModel (lean
tf.gather, and the Keras model.export way), its ONNX conversion, the Zipf requests and the
Python-driven callers of every system. TensorFlow, Keras, tf2onnx and ONNX Runtime are imported
inside the functions only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

N_DENSE, N_SPARSE, DIM = 13, 26, 16


RS_CONFIG = {"session_num": 1, "intra_op_parallelism_threads": 1,
             "inter_op_parallelism_threads": -1}


def config(rows: list[int]) -> dict:
    return {
        "name": "criteo_bundle_bench", "label": "label",
        "sparse": [{"name": f"C{i + 1}", "dim": DIM,
                    "embedding": {"kind": "plain", "rows": r, "hashed": False}}
                   for i, r in enumerate(rows)],
        "dense": [{"name": f"I{i + 1}", "transform": "log1p"} for i in range(N_DENSE)],
        "model": {"type": "wdl", "hidden": [512, 256]},
        "data": {"format": "synthetic", "synthetic": {"num_train": 10, "num_eval": 10}},
    }


def build_ingraph(model, cfg, path: Path) -> None:
    """(b)-(d)'s model: one SavedModel with the tables inside, each variable stored once."""
    import tensorflow as tf

    tables = model.embedding_tables()
    names = [f.name for f in cfg.sparse]
    rows = [int(tables[f.table]["subtables"][0].shape[0]) for f in cfg.sparse]
    stage = model.dense_stage
    mod = tf.Module()
    mod.tables = [tf.Variable(tables[f.table]["subtables"][0], name=f"emb_{f.name}")
                  for f in cfg.sparse]
    mod.dense_vars = [w.value if hasattr(w, "value") else w for w in stage.weights]
    specs = [tf.TensorSpec([None], tf.int64, name=n) for n in names]
    specs.append(tf.TensorSpec([None, N_DENSE], tf.float32, name="dense"))

    def serve(*args):
        pooled = {n: tf.gather(mod.tables[i], tf.math.floormod(args[i], rows[i]))
                  for i, n in enumerate(names)}
        pooled["dense"] = args[-1]
        logit = tf.reshape(stage(pooled, training=False), [-1])
        return {"prob": tf.sigmoid(logit)}

    mod.serve = tf.function(serve, input_signature=specs)
    tf.saved_model.save(mod, str(path),
                        signatures={"serving_default": mod.serve.get_concrete_function()})


def build_keras_ingraph(model, cfg, path: Path) -> None:
    """The same model the way a Keras user exports it: a Keras 3 functional model with one
    Embedding layer per feature (ids [B, 1] -> Embedding -> Reshape), the same dense stage and
    the same weights, saved with ``model.export(path, format="tf_saved_model")``. Keras' TF
    backend lowers each Embedding to a cast / negative-index fix-up / gather chain (about a
    dozen graph nodes per lookup instead of the lean model's two)."""
    import keras

    tables = model.embedding_tables()
    inputs, pooled = {}, {}
    for f in cfg.sparse:
        t = tables[f.table]["subtables"][0]
        x = keras.Input(shape=(1,), dtype="int64", name=f.name)
        emb = keras.layers.Embedding(t.shape[0], t.shape[1], name=f"emb_{f.name}")
        pooled[f.name] = keras.layers.Reshape((t.shape[1],), name=f"flat_{f.name}")(emb(x))
        emb.set_weights([t])
        inputs[f.name] = x
    inputs["dense"] = keras.Input(shape=(N_DENSE,), dtype="float32", name="dense")
    logit = model.dense_stage({**pooled, "dense": inputs["dense"]})
    prob = keras.layers.Activation("sigmoid", name="prob")(logit)
    km = keras.Model(inputs=inputs, outputs={"prob": prob})
    km.export(str(path), format="tf_saved_model", verbose=False)


def keras_feeds(feeds: dict) -> dict:
    """Requests for the Keras-exported peers: the same values, ids shaped [B, 1]."""
    return {k: (v.reshape(-1, 1) if k != "dense" else v) for k, v in feeds.items()}


def make_requests(rows: list[int], batch: int, count: int, seed: int) -> list[dict]:
    """`count` requests of `batch` rows: Zipf(1.05) ids per table, lognormal dense values."""
    rng = np.random.default_rng(seed)
    reqs = []
    for _ in range(count):
        feeds = {}
        for i, r in enumerate(rows):
            rank = np.minimum(rng.zipf(1.05, batch), r) - 1          # heavy head, long tail
            feeds[f"C{i + 1}"] = ((rank * 2_654_435_761 + i * 97) % r).astype(np.int64)
        feeds["dense"] = rng.lognormal(0, 1, (batch, N_DENSE)).astype(np.float32)
        reqs.append(feeds)
    return reqs


def save_requests(reqs: list[dict], d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for r, feeds in enumerate(reqs):
        for name, arr in feeds.items():
            (d / f"{name}.{r}.bin").write_bytes(np.ascontiguousarray(arr).tobytes())
    np.savez(d / "requests.npz", **{f"{n}__{r}": a for r, f in enumerate(reqs) for n, a in f.items()})


def load_requests(d: Path) -> list[dict]:
    z = np.load(d / "requests.npz")
    out: dict[int, dict] = {}
    for key in z.files:
        name, r = key.rsplit("__", 1)
        out.setdefault(int(r), {})[name] = z[key]
    return [out[r] for r in sorted(out)]


def make_call(system: str, model: str):
    """(call(feeds) -> probabilities, the loaded object) of a Python-driven system: TF Python
    signature call, ONNX Runtime session or recstrata Model (names may end in "_keras")."""
    kind = system.removesuffix("_keras")
    if kind == "tf_python":
        import tensorflow as tf

        fn_sig = tf.saved_model.load(model).signatures["serving_default"]

        def call(feeds):
            out = fn_sig(**{k: tf.constant(v) for k, v in feeds.items()})
            return (out["prob"] if "prob" in out else next(iter(out.values()))).numpy()
        return call, fn_sig
    if kind == "onnxruntime":
        import onnxruntime as ort

        sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        alias = {i.name.split(":")[0]: i.name for i in sess.get_inputs()}

        def call(feeds):
            return sess.run(None, {alias[k]: v for k, v in feeds.items()})[0]
        return call, sess
    if kind.startswith("rs_"):
        from recstrata.processor import Model

        m = Model(model, dict(RS_CONFIG))   # bundles default to the pread read path

        def call(feeds):
            return m.run(feeds, outputs=["prob"])["prob"]
        return call, m
    raise SystemExit(f"unknown worker system {system}")


def convert_onnx(saved_model: str, out_path: str) -> None:
    """tf2onnx conversion of the in-graph SavedModel (runs in a child process).

    tf2onnx 1.17 has no converter for TF's Log1p (used by the dense normalisation), so a custom
    handler rewrites it as Log(x + 1), which is what Log1p computes.
    """
    import tensorflow as tf
    import tf2onnx
    from tf2onnx import utils

    def log1p(ctx, node, name, args):
        one = ctx.make_const(utils.make_name("one"), np.array(1, np.float32)).output[0]
        add = ctx.make_node("Add", [node.input[0], one])
        ctx.replace_inputs(node, [add.output[0]])
        node.type = "Log"

    loaded = tf.saved_model.load(saved_model)   # keep it alive: it owns the variables
    f = loaded.signatures["serving_default"]
    items = sorted(f.structured_input_signature[1].items())
    names = [n for n, _ in items]
    sig = [tf.TensorSpec(spec.shape, spec.dtype, name=n) for n, spec in items]
    g = tf.function(lambda *a: f(**dict(zip(names, a))), input_signature=sig)
    tf2onnx.convert.from_function(g, input_signature=sig, opset=17,
                                  custom_op_handlers={"Log1p": (log1p, [])}, output_path=out_path)
