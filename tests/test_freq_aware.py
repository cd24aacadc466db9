"""Frequency-aware tables (kind "freq_aware", docs/embedding-keys.md section 3.5): the hot-id
sketch and its promotions, promotion that leaves the model's output unchanged, native keys and
served predictions equal to Keras's for hot and tail ids, checkpoint resume, and the refusals."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from recstrata.processor import Model  # noqa: E402
from recstrata.training import keys as K  # noqa: E402
from recstrata.training.export import bundle_feeds, export_bundle  # noqa: E402
from recstrata.training.hot_ids import HotIdTracker  # noqa: E402
from recstrata.training.spec import SpecError, parse_config  # noqa: E402
from recstrata.training.trainer import Trainer, load_trained  # noqa: E402

from dynamic_helpers import examples, keras_probs  # noqa: E402

TOL = 1e-5
TAIL = {"kind": "multihash", "strategy": "qr", "vocab": 4000, "m": 64}


def config(**train) -> dict:
    emb = {"kind": "freq_aware", "hot_rows": 1500, "admit_count": 3, "tail": TAIL}
    t = {"batch_size": 128, "epochs": 1, "progress": False, "learning_rate": 0.01}
    t.update(train)
    return copy.deepcopy({
        "name": "freq", "label": "label",
        "sparse": [
            {"name": "user", "dim": 8, "embedding": emb},
            {"name": "hist", "dim": 8, "max_values": 4, "combiner": "mean", "table": "user",
             "embedding": emb},
            {"name": "item", "dim": 8, "embedding": {
                "kind": "freq_aware", "hot_rows": 50, "admit_count": 2,
                "tail": {"kind": "binary_code", "bits": 12, "block_bits": 4, "strategy": "skip"}}},
        ],
        "dense": [{"name": "d0"}],
        "model": {"type": "deepfm", "hidden": [16]},
        "data": {"format": "synthetic",
                 "synthetic": {"num_train": 3000, "num_eval": 500, "zipf": 1.1,
                               "vocab": {"user": 20000, "hist": 20000, "item": 3000}}},
        "train": t,
    })


# ----------------------------------------------------------------------------- the tracker

def test_tracker_promotes_ids_that_reach_the_count_until_full():
    tr = HotIdTracker(K.FreqAwareKeys(hot_rows=3, admit_count=3, replace_ratio=0,
                                      tail=K.PlainKeys(rows=10)))
    new, slots = tr.observe([5, 5, 7])
    assert new.size == 0 and tr.num_hot == 0
    new, slots = tr.observe([5, 7, 7, 9, 9])          # 5: 3, 7: 3, 9: 2
    assert sorted(new.tolist()) == [5, 7] and sorted(slots.tolist()) == [0, 1]
    new, slots = tr.observe([5, 5, 5])                  # already hot: not promoted again
    assert new.size == 0
    new, slots = tr.observe([9, 11, 11, 11, -1, -1, -1])   # 9: 3, 11: 3, -1: 3; one slot left
    assert new.size == 1 and slots.tolist() == [2] and tr.num_hot == 3
    assert new[0] in (9, 11, -1)
    assert tr.observe([1] * 40)[0].size == 0           # full, replace_ratio 0: no more promotions
    s = tr.slots(np.array([[5, 7], [new[0], 12345]]))
    assert s[1, 1] == -1 and sorted([s[0, 0], s[0, 1], s[1, 0]]) == [0, 1, 2]


def test_full_tracker_replaces_the_coolest_hot_id():
    tr = HotIdTracker(K.FreqAwareKeys(hot_rows=2, admit_count=2, replace_ratio=2.0,
                                      sketch_width=1 << 16, tail=K.PlainKeys(rows=10)))
    tr.observe([10, 10, 20, 20, 20, 20])                 # 10: 2, 20: 4 -> both hot
    assert tr.num_hot == 2
    new, slots = tr.observe([30, 30, 30, 30])            # 30: 4, not > 2 x 2
    assert new.size == 0
    slot10 = int(tr.slots([10])[0])
    new, slots = tr.observe([30])                        # 30: 5 > 2 x 2 (id 10's count)
    assert new.tolist() == [30] and slots.tolist() == [slot10]
    assert tr.slots([10]).tolist() == [-1] and tr.num_hot == 2
    assert sorted(tr.hot_ids.tolist()) == [20, 30]


def test_sketch_never_underestimates_and_state_round_trips():
    rng = np.random.default_rng(3)
    scheme = K.FreqAwareKeys(hot_rows=64, admit_count=40, sketch_width=512,
                             tail=K.PlainKeys(rows=100))
    tr = HotIdTracker(scheme)
    ids = (rng.zipf(1.2, 20000) % 5000).astype(np.int64)
    for chunk in np.array_split(ids, 50):
        tr.observe(chunk)
    uniq, counts = np.unique(ids, return_counts=True)
    assert (tr.estimate(uniq) >= counts).all()
    # with slots to spare, every id whose true count reached admit_count is hot (collisions
    # may add some rarer ones: a count-min estimate only errs upwards)
    assert tr.num_hot < 64
    assert set(uniq[counts >= 40].tolist()) <= set(tr.hot_ids.tolist())
    sketch, hot = tr.state()
    back = HotIdTracker(scheme)
    back.load_state(sketch, hot, tr.num_hot)
    np.testing.assert_array_equal(back.hot_ids, tr.hot_ids)
    np.testing.assert_array_equal(back.slots(uniq), tr.slots(uniq))
    with pytest.raises(ValueError, match="sketch of shape"):
        back.load_state(sketch[:, :10], hot, 1)


def test_scheme_dicts_and_refusals():
    s = K.scheme_from_dict({"kind": "freq_aware", "hot_rows": 10, "admit_count": 2,
                            "tail": {"kind": "plain", "rows": 100}})
    assert s.to_dict() == {"kind": "freq_aware", "hot_rows": 10,
                           "tail": {"kind": "plain", "rows": 100, "hashed": True, "seed": 0,
                                    "combiner": "add"}}
    assert s.subtable_rows == (10, 100) and s.num_params(8) == 10 * 10 + 800
    np.testing.assert_array_equal(s.row_keys(np.array([-5, 7]))[:, 0], [-5, 7])
    with pytest.raises(ValueError, match="tail"):
        K.scheme_from_dict({"kind": "freq_aware", "hot_rows": 10, "tail": {"kind": "dynamic"}})
    with pytest.raises(ValueError, match="hot_rows"):
        K.scheme_from_dict({"kind": "freq_aware", "hot_rows": 0, "tail": {"kind": "plain", "rows": 9}})
    bad = config()
    bad["sparse"][0]["embedding"]["tail"] = {"kind": "freq_aware", "hot_rows": 2, "tail": TAIL}
    with pytest.raises(SpecError):
        parse_config(bad)


# ----------------------------------------------------------------------------- training

@pytest.fixture(scope="module")
def trained():
    cfg = parse_config(config())
    tr = Trainer(cfg, log=lambda s: None)
    tr.train(eval_each_epoch=False)
    yield tr, cfg
    tr.close()


def test_promotion_keeps_the_output(trained):
    tr, cfg = trained
    layer = tr.model.embedding_stage.tables["user"]
    # ids the run never saw: tail ids now, then promoted by hand
    ids = np.array([2**40 + i for i in range(5)], np.int64)
    before = layer.lookup(ids).numpy()
    assert (layer.slots(ids).numpy() == -1).all()
    free = layer.tracker.capacity - layer.tracker.num_hot
    assert free > 0, "the test needs a free hot slot"
    for _ in range(layer.tracker.admit_count):
        layer.observe(ids[:1])
    assert layer.slots(ids[:1]).numpy()[0] >= 0
    np.testing.assert_allclose(layer.lookup(ids).numpy(), before, atol=0)


def test_training_picks_the_hot_ids(trained):
    tr, cfg = trained
    user, item = (tr.model.embedding_stage.tables[n] for n in ("user", "item"))
    assert 0 < user.tracker.num_hot <= 1500 and 0 < item.tracker.num_hot <= 50
    # synthetic ids are Zipf over ranks scattered by the teacher's permutation: the five most
    # frequent ids are hot
    from recstrata.training.synthetic import Teacher

    ids = Teacher(cfg).perm[0][:5]
    assert (user.slots(ids).numpy() >= 0).all()
    # hot rows trained away from their tail start
    assert np.abs(user.lookup(ids).numpy() - user.tail.lookup(ids).numpy()).max() > 1e-4


@pytest.mark.parametrize("tiers", ["dram", "dram+ssd"])
def test_served_predictions_equal_keras(tmp_path, trained, tiers):
    tr, cfg = trained
    info = export_bundle(tr.model, tmp_path / "b", tiers=tiers)
    m = info["manifest"]
    t = {x["name"]: x for x in m["tables"]}["user"]
    assert t["key_scheme"]["kind"] == "freq_aware" and t["key_scheme"]["tail"]["kind"] == "multihash"
    user = tr.model.embedding_stage.tables["user"]
    assert int(t["subtables"][0]["rows"]) == user.tracker.num_hot
    worst = 0.0
    with Model(str(tmp_path / "b")) as served:
        for i, n in enumerate((1, 64, 400)):
            ex = examples(cfg, n, 20 + i)
            third = n // 3
            rng = np.random.default_rng(i)
            ex["user"][:third, 0] = rng.choice(user.tracker.hot_ids, third)
            ex["hist"][:third] = rng.choice(user.tracker.hot_ids, (third, 4))
            ex["user"][third: 2 * third, 0] = np.int64(2**61) + np.arange(third)  # tail ids
            hot = user.slots(ex["user"][:, 0]).numpy() >= 0
            assert n == 1 or (hot.any() and (~hot).any())
            ref = keras_probs(tr.model, cfg, ex)
            out = served.run(bundle_feeds(m, ex))
            worst = max(worst, float(np.abs(out["prob"] - ref).max()))
        st = served.stats()["bundle"]
    assert worst <= TOL, worst
    assert st["missing_rows"] == 0      # ids outside the hot set are not missing rows


def test_resume_equals_uninterrupted(tmp_path):
    ref = Trainer(parse_config(config(epochs=2)), log=lambda s: None)
    ref.train(eval_each_epoch=False)
    ck = str(tmp_path / "ck")
    cfg = parse_config(config(epochs=2, checkpoint_dir=ck, checkpoint_every_steps=5))
    t1 = Trainer(cfg, log=lambda s: None)
    t1.train(eval_each_epoch=False, stop_after_steps=33)   # 24 steps per epoch; last save at 30
    t2 = Trainer(cfg, log=lambda s: None)
    assert t2.restore()
    t2.train(eval_each_epoch=False)
    for name in ("user", "item"):
        a, b = ref.model.embedding_stage.tables[name], t2.model.embedding_stage.tables[name]
        np.testing.assert_array_equal(a.tracker.hot_ids, b.tracker.hot_ids)
        np.testing.assert_array_equal(a.tracker.sketch, b.tracker.sketch)
        a.save_tracker(), b.save_tracker()   # (synced into the variables at each save only)
    for (ka, a), (kb, b) in zip(ref.model.checkpoint_variables().items(),
                                t2.model.checkpoint_variables().items()):
        np.testing.assert_allclose(np.asarray(a.numpy()), np.asarray(b.numpy()), atol=2e-5, err_msg=ka)
    model, _ = load_trained(ck)
    u = model.embedding_stage.tables["user"]
    np.testing.assert_array_equal(u.tracker.hot_ids, t2.model.embedding_stage.tables["user"].tracker.hot_ids)
    ref.close(), t1.close(), t2.close()


# ----------------------------------------------------------------------------- devices

RUNNER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    n, cfg_path, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    if n > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    from recstrata.training import spec, trainer
    tr = trainer.Trainer(spec.load_config(cfg_path), log=lambda s: None)
    hist = tr.train()
    user = tr.model.embedding_stage.tables["user"]
    ids, rows = user.hot_rows_by_id()
    probe = np.concatenate([ids[:50], np.arange(2**40, 2**40 + 50)]).astype(np.int64)
    json.dump({"replicas": tr.cluster.num_replicas, "hot_ids": ids.tolist(),
               "hot_rows": rows.tolist(), "probe": user.lookup(probe).numpy().tolist(),
               "history": [[h.train_loss, h.eval_auc] for h in hist]}, open(out, "w"))
""")


def _run_devices(tmp_path, n):
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    cp = tmp_path / f"cfg_{n}.json"
    cp.write_text(json.dumps(config(devices="mirrored" if n > 1 else "cpu", epochs=2)))
    out = tmp_path / f"out_{n}.json"
    p = subprocess.run([sys.executable, str(script), str(n), str(cp), str(out)],
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    return json.loads(out.read_text())


def test_two_logical_devices_match_one_device(tmp_path):
    # MirroredStrategy over 2 logical CPUs (the GPU code path; never run on a real GPU): the
    # host picks the hot ids once per step for both replicas, promotions reach every replica's
    # copy of the hot table, and the run trains the same model as one device.
    one, two = _run_devices(tmp_path, 1), _run_devices(tmp_path, 2)
    assert one["replicas"] == 1 and two["replicas"] == 2
    assert one["hot_ids"] == two["hot_ids"] and len(one["hot_ids"]) > 100
    np.testing.assert_allclose(np.array(one["hot_rows"]), np.array(two["hot_rows"]), atol=2e-4)
    np.testing.assert_allclose(np.array(one["probe"]), np.array(two["probe"]), atol=2e-4)
    for a, b in zip(one["history"], two["history"]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_deltas_of_freq_aware_bundles_are_refused(tmp_path, trained):
    from recstrata.training.delta import DeltaWriter

    tr, _ = trained
    export_bundle(tr.model, tmp_path / "1")
    with pytest.raises(NotImplementedError, match="freq_aware"):
        DeltaWriter(tmp_path / "1", tr.model)
