"""Models, training, distribution (2 logical devices, 2 workers), checkpoints, CLI.

Everything is tiny (a few thousand synthetic examples, small tables) so the file runs in
about a minute or two on 2 shared cores. Multi-device and multi-worker runs happen in
subprocesses because logical devices and TF_CONFIG must be set before TensorFlow starts.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from recstrata.training import keys as K  # noqa: E402
from recstrata.training import keys_tf, models, synthetic, trainer  # noqa: E402
from recstrata.training.spec import load_config  # noqa: E402
from net_helpers import free_ports  # noqa: E402

TINY = {
    "name": "tiny",
    "model": {"type": "wdl", "hidden": [16]},
    "sparse": [
        {"name": "user", "dim": 4, "embedding": {"kind": "plain", "rows": 300, "hashed": False}},
        {"name": "item", "dim": 4, "dtype": "string",
         "embedding": {"kind": "binary_code", "bits": 32, "block_bits": 8, "strategy": "skip"}},
        {"name": "hist", "dim": 4, "max_values": 3, "combiner": "sqrtn",
         "embedding": {"kind": "multihash", "strategy": "qr", "vocab": 200, "m": 16,
                       "combiner": "concat"}},
    ],
    "dense": [{"name": "x", "transform": "standard", "mean": 2.0, "std": 3.0}],
    "data": {"format": "synthetic",
             "synthetic": {"num_train": 3001, "num_eval": 999,
                           "vocab": {"user": 300, "item": 40, "hist": 200}}},
    "train": {"batch_size": 256, "epochs": 2, "learning_rate": 0.01, "progress": False},
}

QUIET = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def cfg_with(**train):
    d = json.loads(json.dumps(TINY))
    d["train"].update(train)
    return d


# ----------------------------------------------------------------------------- keys in-graph

def test_keys_tf_bit_identical_to_numpy():
    rng = np.random.default_rng(5)
    ids = np.concatenate([K._sample_ids(), rng.integers(-(2**63), 2**63 - 1, 2001, dtype=np.int64)])
    for name, sch in K.standard_schemes().items():
        got = keys_tf.row_keys(sch, tf.constant(ids.reshape(-1, 2))).numpy()
        want = sch.row_keys(ids.reshape(-1, 2))
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want, err_msg=name)
    np.testing.assert_array_equal(keys_tf.hash64(keys_tf.as_uint64(tf.constant(ids)), 9).numpy(),
                                  K.hash64(ids, 9))


# ----------------------------------------------------------------------------- model structure

@pytest.mark.parametrize("kind", ["wdl", "deepfm", "dlrm"])
def test_stages_compose_and_match_numpy_reference(kind):
    """pooled vectors from numpy (keys + tables + combiners + pooling, as a server would do)
    fed to the dense stage equal the Keras model's output."""
    d = json.loads(json.dumps(TINY))
    d["model"]["type"] = kind
    cfg = load_config(d)
    model = models.RecModel(cfg)
    model.build_with_dummy()
    from recstrata.training import data as D

    batch = next(iter(D.worker_batches(cfg, D.make_source(cfg, "train"), D.Layout.for_global_batch(64))))
    tables = model.embedding_tables()
    pooled = {}
    for f in cfg.sparse:
        t = tables[f.table]
        sch = K.scheme_from_dict(t["scheme"])
        keys = sch.row_keys(batch[f.name])                              # [B, k, S]
        parts = [t["subtables"][j][keys[..., j]] for j in range(sch.num_subtables)]
        if t["combiner"] == "concat":
            vec = np.concatenate(parts, -1)
        elif t["combiner"] == "multiply":
            vec = np.prod(parts, 0)
        else:
            vec = np.sum(parts, 0)
        w = K.pool_weights(batch[f.name + "/len"], f.max_values, f.combiner)
        pooled[f.name] = (w[..., None] * vec).sum(1).astype(np.float32)
        assert pooled[f.name].shape == (64, t["width"])
        np.testing.assert_allclose(pooled[f.name], model.pooled(batch)[f.name].numpy(), atol=1e-6)
    pooled["dense"] = batch["dense"]
    np.testing.assert_allclose(model.dense_stage(pooled).numpy(), model(batch).numpy(), atol=1e-5)
    assert set(model.dense_stage.input_signature()) == {"user", "item", "hist", "dense"}
    width = 5 if kind != "dlrm" else 4
    assert tables["user"]["width"] == width and tables["hist"]["subtable_dims"] == [width - width // 2, width // 2]
    summary = models.format_summary(model.summary_rows())
    assert "binary_code" in summary and "16x8" not in summary


def test_dense_stage_exports_as_stock_savedmodel(tmp_path):
    cfg = load_config(TINY)
    model = models.RecModel(cfg)
    model.build_with_dummy()
    mod = model.dense_stage.as_module()
    tf.saved_model.save(mod, str(tmp_path / "dense"), signatures={"serving_default": mod.serve})
    from recstrata.training import data as D

    batch = next(iter(D.worker_batches(cfg, D.make_source(cfg, "train"), D.Layout.for_global_batch(16))))
    pooled = {k: tf.constant(v) for k, v in model.pooled(batch).items()}
    fn = tf.saved_model.load(str(tmp_path / "dense")).signatures["serving_default"]
    assert set(fn.structured_input_signature[1]) == {"user", "item", "hist", "dense"}
    out = fn(**pooled)
    np.testing.assert_allclose(out["probability"].numpy(), model.predict_batch(batch), atol=1e-6)
    # each dense-stage variable is stored once (no duplicated copies)
    n_vars = len(tf.train.load_checkpoint(str(tmp_path / "dense" / "variables" / "variables"))
                 .get_variable_to_shape_map()) - 1
    assert n_vars == len(model.dense_stage.weights)


# ----------------------------------------------------------------------------- training quality

def test_training_reaches_teacher_auc():
    # Uncompressed tables: the teacher's per-id parameters are random, so only plain tables can
    # represent it exactly (compressed schemes are measured in perf/compression_study.py).
    d = {
        "model": {"type": "deepfm", "hidden": [16]},
        "sparse": [
            {"name": "a", "dim": 4, "embedding": {"kind": "plain", "rows": 40, "hashed": False}},
            {"name": "b", "dim": 4, "embedding": {"kind": "plain", "rows": 40, "hashed": False}},
            {"name": "c", "dim": 4, "max_values": 2, "combiner": "mean",
             "embedding": {"kind": "plain", "rows": 40, "hashed": False}},
        ],
        "dense": [{"name": "x"}],
        "data": {"format": "synthetic",
                 "synthetic": {"num_train": 200000, "num_eval": 20000, "seed": 3,
                               "vocab": {"a": 40, "b": 40, "c": 40}}},
        "train": {"batch_size": 512, "epochs": 2, "learning_rate": 0.01, "progress": False},
    }
    cfg = load_config(d)
    teacher = synthetic.teacher_auc(cfg)
    hist = trainer.Trainer(cfg, log=lambda s: None).train()
    auc = hist[-1].eval_auc
    print(f"teacher AUC {teacher:.4f}, model AUC {auc:.4f}")
    assert teacher > 0.7
    assert auc >= teacher - 0.015, (auc, teacher)
    assert auc <= teacher + 0.01     # a model cannot beat the truth by more than noise


def test_early_stopping_and_bfloat16_policy():
    cfg = load_config(cfg_with(epochs=5, early_stopping={"patience": 1, "min_delta": 1.0},
                               mixed_precision="bfloat16"))
    tr = trainer.Trainer(cfg, log=lambda s: None)
    assert tr.model.dense_stage.compute_dtype == "bfloat16"
    assert all(t.dtype == "float32" for t in tr.model.embedding_stage.weights)
    hist = tr.train()
    # epoch 1 sets the best AUC; epoch 2 cannot improve it by 1.0 -> stop after 2 of 5 epochs
    assert [h.epoch for h in hist] == [1, 2]
    assert all(np.isfinite(h.train_loss) for h in hist)


# ----------------------------------------------------------------------------- checkpoints

def _weights(tr):
    return [np.asarray(v.numpy()) for v in tr.model.checkpoint_variables().values()]


def test_checkpoint_resume_continues_where_it_stopped(tmp_path):
    ref = trainer.Trainer(load_config(cfg_with()), log=lambda s: None)
    ref_hist = ref.train()
    ck = str(tmp_path / "ck")
    cfg = load_config(cfg_with(checkpoint_dir=ck, checkpoint_every_steps=4))
    # run 1: 12 steps are one epoch; crash after 18 steps (last checkpoint at step 16)
    t1 = trainer.Trainer(cfg, log=lambda s: None)
    t1.train(stop_after_steps=18)
    t2 = trainer.Trainer(cfg, log=lambda s: None, record_indices=True)
    assert t2.restore()
    assert int(t2.epoch.numpy()) == 1 and int(t2.step_in_epoch.numpy()) == 4
    hist = t2.train()
    assert [h.epoch for h in hist] == [2]
    # the resumed epoch trained only the examples after the checkpoint
    seen = np.concatenate(t2.seen_indices)
    assert seen.min() == 4 * 256 and seen.max() == 3000 and len(seen) == 3001 - 4 * 256
    for a, b in zip(_weights(ref), _weights(t2)):
        np.testing.assert_allclose(a, b, atol=2e-5)
    assert abs(hist[-1].eval_auc - ref_hist[-1].eval_auc) < 1e-4
    # an exported-style reload gives the same predictions
    model, _ = trainer.load_trained(ck)
    from recstrata.training import data as D

    b = next(iter(D.worker_batches(cfg, D.make_source(cfg, "eval"), D.Layout.for_global_batch(32))))
    np.testing.assert_allclose(model.predict_batch(b), t2.model.predict_batch(b), atol=1e-6)


# ----------------------------------------------------------------------------- distribution

RUNNER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    n, cfg_path, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    if n > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    from recstrata.training import spec, trainer
    cfg = spec.load_config(cfg_path)
    tr = trainer.Trainer(cfg, record_indices=True, log=lambda s: None)
    hist = tr.train()
    res = {"replicas": tr.cluster.num_replicas, "workers": tr.cluster.num_workers,
           "history": [[h.train_loss, h.eval_auc, h.eval_logloss, h.train_examples, h.eval_examples]
                       for h in hist],
           "seen": np.concatenate(tr.seen_indices).tolist(),
           "weights": [float(np.abs(v.numpy()).sum()) for v in tr.model.checkpoint_variables().values()]}
    json.dump(res, open(out, "w"))
""")


def _run(tmp_path, n, cfg_dict, tag, env=None):
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    cp = tmp_path / f"cfg_{tag}.json"
    cp.write_text(json.dumps(cfg_dict))
    out = tmp_path / f"out_{tag}.json"
    return subprocess.Popen([sys.executable, str(script), str(n), str(cp), str(out)],
                            env={**QUIET, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True), out


def _wait(proc, out):
    log, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, log[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("one")
    return _wait(*_run(tmp, 1, TINY, "one"))


def _compare(one, other):
    assert len(one["history"]) == len(other["history"]) == 2
    for a, b in zip(one["history"], other["history"]):
        np.testing.assert_allclose(a[:3], b[:3], rtol=1e-4, atol=1e-5)
        assert a[3:] == b[3:] == [3001, 999]
    np.testing.assert_allclose(one["weights"], other["weights"], rtol=1e-4)


def test_two_logical_devices_match_one_device(tmp_path, one_device):
    two = _wait(*_run(tmp_path, 2, cfg_with(devices="mirrored"), "two"))
    assert two["replicas"] == 2
    _compare(one_device, two)
    seen = np.array(two["seen"])          # 2 epochs: every example exactly twice, once per epoch
    assert np.bincount(seen, minlength=3001).tolist() == [2] * 3001
    assert sorted(one_device["seen"]) == sorted(two["seen"])


def test_two_workers_match_one_device(tmp_path, one_device):
    ports = free_ports(2)
    workers = [f"127.0.0.1:{p}" for p in ports]
    procs = []
    ck = tmp_path / "ck"
    wcfg = cfg_with(checkpoint_dir=str(ck), checkpoint_every_steps=5)
    for i in range(2):
        tfc = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
        procs.append(_run(tmp_path, 1, wcfg, f"w{i}", env={"TF_CONFIG": tfc}))
    res = [_wait(p, o) for p, o in procs]
    # the chief wrote the checkpoints; the other worker's scratch copies are gone
    assert tf.train.latest_checkpoint(str(ck)) is not None
    assert sorted(os.listdir(ck)) == sorted(
        [n for n in os.listdir(ck) if not n.startswith(".worker")])
    for r in res:
        assert r["workers"] == 2 and r["replicas"] == 2
        _compare(one_device, r)
    seen = np.concatenate([r["seen"] for r in res])
    assert np.bincount(seen, minlength=3001).tolist() == [2] * 3001
    # each worker trained on different examples
    assert not set(res[0]["seen"]) & set(res[1]["seen"])


# ----------------------------------------------------------------------------- CLI

def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "recstrata.cli", *args], capture_output=True,
                          text=True, env=QUIET, cwd=cwd, timeout=240)


def test_cli_train_eval_and_clear_errors(tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for i in range(600):
        c = rng.integers(0, 20, 26)
        y = int(rng.random() < (0.8 if c[0] < 5 else 0.1))
        ints = [str(int(v)) for v in rng.integers(0, 50, 13)]
        rows.append("\t".join([str(y)] + ints + [format(int(v) * 7919, "08x") for v in c]))
    rows.insert(10, "1\tnot\ta\tcriteo\trow")
    (tmp_path / "train.tsv").write_text("\n".join(rows) + "\n")
    (tmp_path / "eval.tsv").write_text("\n".join(rows[300:]) + "\n")
    cfg = {"model": {"type": "wdl", "hidden": [8]},
           "dense": [{"name": "I1", "transform": "log1p"}],
           "sparse": [{"name": "C1", "dim": 4, "embedding": {"kind": "plain", "rows": 100}},
                      {"name": "C2", "dim": 4, "embedding": {"kind": "multihash", "strategy": "kway",
                                                             "sizes": [7, 11]}}],
           "data": {"format": "criteo", "train": "train.tsv", "eval": "eval.tsv"},
           "train": {"batch_size": 128, "epochs": 2, "learning_rate": 0.05, "checkpoint_dir": "ck"}}
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    r = _cli("train", "c.json", "--no-progress", "--metrics-out", "m.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "1 bad train row(s) skipped" in r.stderr and "train.tsv:11" in r.stderr
    assert "embeddings total" in r.stderr
    hist = json.loads(r.stdout.strip().splitlines()[-1])["history"]
    assert hist[-1]["train_examples"] == 600 and hist[-1]["train_bad_rows"] == 1
    assert hist[-1]["eval_auc"] > 0.8
    ev = _cli("eval", str(tmp_path / "ck"))
    assert ev.returncode == 0, ev.stderr[-2000:]
    res = json.loads(ev.stdout.strip().splitlines()[-1])
    assert res["examples"] == 301 and abs(res["auc"] - hist[-1]["eval_auc"]) < 1e-6
    # bad rows with --fail-on-bad-rows: one clear line, exit 1
    r = _cli("train", "c.json", "--no-progress", "--fail-on-bad-rows", "--checkpoint-dir", "ck2",
             cwd=tmp_path)
    assert r.returncode == 1
    assert "recstrata train: error: bad row at" in r.stderr and "train.tsv:11" in r.stderr
    assert "Traceback" not in r.stderr
    cfg["sparse"][0]["embedding"]["rows"] = -5
    (tmp_path / "bad.json").write_text(json.dumps(cfg))
    r = _cli("train", "bad.json", cwd=tmp_path)
    assert r.returncode == 1 and "sparse[0].embedding: plain.rows must be >= 1" in r.stderr
    r = _cli("eval", str(tmp_path / "nothing"))
    assert r.returncode == 1 and "not a recstrata checkpoint directory" in r.stderr
