"""Dynamic tables exported and served: the bundle's store reuses the training store's files
(hard links of a cleanly closed snapshot, no numpy round trip), the processor serves the
dynamic table natively keyed by the raw id (key scheme "dynamic", rows [embedding | slots]
with the first width columns served), and served predictions equal Keras's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from recstrata.processor import Model  # noqa: E402
from recstrata.training.export import bundle_feeds, export_bundle  # noqa: E402
from recstrata.training.spec import parse_config  # noqa: E402
from recstrata.training.trainer import Trainer  # noqa: E402

from dynamic_helpers import QUIET, config, examples, keras_probs  # noqa: E402

TOL = 1e-5


@pytest.fixture(scope="module")
def trained():
    cfg = parse_config(config({"admission": {"threshold": 2}}, learning_rate=0.02))
    tr = Trainer(cfg, log=lambda s: None)
    tr.train(eval_each_epoch=False)
    yield tr, cfg
    tr.close()


def _inodes(root):
    return {os.stat(os.path.join(dp, f)).st_ino for dp, _, fs in os.walk(root)
            for f in fs if f.endswith(".dat")}


@pytest.mark.parametrize("tiers", ["dram", "dram+ssd"])
def test_served_predictions_equal_keras(tmp_path, trained, tiers):
    tr, cfg = trained
    info = export_bundle(tr.model, tmp_path / "b", tiers=tiers)
    m = info["manifest"]
    t = {x["name"]: x for x in m["tables"]}["user"]
    assert t["key_scheme"]["kind"] == "dynamic"
    sub = t["subtables"][0]
    live = tr.dynamic_store.stats()["tables"]["user"]["rows"]
    assert int(sub["rows"]) == live > 100
    assert sub["dim"] == 9 and sub["store_dim"] == 18      # [embedding + first order | slots]
    # the dynamic table's data files are the training store's files (same inodes)
    dyn_dir = None
    for d in os.listdir(tmp_path / "b" / "store"):
        p = tmp_path / "b" / "store" / d
        if p.is_dir() and _inodes(p) & _inodes(tr.dynamic_store.directory):
            dyn_dir = p
    assert dyn_dir is not None, "no store file of the bundle is a link of the training store"
    worst = 0.0
    with Model(str(tmp_path / "b")) as served:
        for i, n in enumerate((1, 33, 400)):
            ex = examples(cfg, n, 10 + i)
            # ids never seen in training (no row) and raw ids far outside any vocabulary
            ex["user"][: n // 3, 0] = np.int64(2**62) + np.arange(n // 3)
            ref = keras_probs(tr.model, cfg, ex)
            out = served.run(bundle_feeds(m, ex))
            worst = max(worst, float(np.abs(out["prob"] - ref).max()))
            assert np.std(out["logit"]) > 0.01 or n == 1
        st = served.stats()["bundle"]
    assert worst <= TOL, worst
    assert st["missing_rows"] > 0      # not-admitted ids were served as zero vectors


def test_row_keys_are_the_raw_ids():
    from test_bundle_keys import native_row_keys

    from recstrata.training import keys as K
    from recstrata.training.dynamic_spec import DynamicKeys

    ids = np.concatenate([np.array([0, 1, -1, 2**63 - 1, -(2**63), 123456789], np.int64),
                          K.string_ids(["", "a", "foobar", "Ωmega"])])
    scheme = DynamicKeys()
    native = native_row_keys(scheme.to_dict(), ids)
    np.testing.assert_array_equal(native, scheme.row_keys(ids))      # training == serving
    np.testing.assert_array_equal(native[:, 0], ids)                 # the id itself


def test_train_and_export_cli(tmp_path):
    d = config({"admission": {"threshold": 2}}, checkpoint_dir=str(tmp_path / "ck"))
    cp = tmp_path / "cfg.json"
    cp.write_text(json.dumps(d))
    env = {**os.environ, **QUIET}
    for cmd in (["train", str(cp)], ["export", str(tmp_path / "ck"), str(tmp_path / "b")],
                ["eval", str(tmp_path / "ck")]):
        p = subprocess.run([sys.executable, "-m", "recstrata.cli", *cmd], env=env,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, (cmd, p.stdout[-2000:], p.stderr[-3000:])
        if cmd[0] == "eval":
            assert json.loads(p.stdout.strip().splitlines()[-1])["auc"] > 0.5
    import tensorflow as tf

    from recstrata.training.trainer import load_trained

    snap = tf.train.latest_checkpoint(str(tmp_path / "ck")) + ".dyn"
    assert _inodes(tmp_path / "b" / "store") & _inodes(snap)     # linked from the checkpoint
    model, cfg = load_trained(str(tmp_path / "ck"))
    try:
        from recstrata.training.export import read_manifest

        m = read_manifest(tmp_path / "b")
        ex = examples(cfg, 200, 5)
        with Model(str(tmp_path / "b")) as served:
            out = served.run(bundle_feeds(m, ex))
        np.testing.assert_allclose(out["prob"], keras_probs(model, cfg, ex), atol=TOL)
    finally:
        model.close()
