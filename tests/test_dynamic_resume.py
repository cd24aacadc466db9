"""Dynamic tables: a checkpoint is a consistent snapshot of the store (rows + Adagrad slots),
the admission sketch, the eviction state, the dense weights and their optimizer, so training
N steps, checkpointing, and resuming for M steps equals training N + M steps uninterrupted;
a damaged snapshot is an error, never a quiet fresh start."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from recstrata.training import data as D  # noqa: E402
from recstrata.training.spec import parse_config  # noqa: E402
from recstrata.training.trainer import Trainer  # noqa: E402

from dynamic_helpers import config  # noqa: E402

DYN = {"admission": {"threshold": 2},
       "eviction": {"max_rows": 600, "ttl_steps": 6, "every_steps": 2}}


def _cfg(ck=None, **kw):
    return parse_config(config(DYN, checkpoint_dir=ck, epochs=2, **kw))


def _state(tr):
    probs = tr.evaluate(return_predictions=True)["prob"]
    ids = np.arange(20000)
    rows = tr.dynamic_store.lookup("user", ids)
    dense = [v.numpy().copy() for v in tr.model.checkpoint_variables().values()]
    return probs, rows, dense, tr.dynamic_store.stats()["tables"]["user"]


@pytest.fixture(scope="module")
def uninterrupted():
    tr = Trainer(_cfg(), log=lambda s: None)
    try:
        tr.train(eval_each_epoch=False)
        return _state(tr)
    finally:
        tr.close()


@pytest.mark.parametrize("stop", [10, 31])     # inside epoch 1, inside epoch 2
def test_resume_equals_uninterrupted(tmp_path, uninterrupted, stop):
    ck = str(tmp_path / "ck")
    a = Trainer(_cfg(ck, checkpoint_every_steps=stop if stop < 24 else stop - 24),
                log=lambda s: None)
    try:
        a.train(eval_each_epoch=False, stop_after_steps=stop)   # "crash" after a checkpoint
    finally:
        a.close()
    import tensorflow as tf

    assert os.path.isdir(tf.train.latest_checkpoint(ck) + ".dyn")
    b = Trainer(_cfg(ck), log=lambda s: None)
    try:
        assert b.restore()
        b.train(eval_each_epoch=False)
        probs, rows, dense, stats = _state(b)
    finally:
        b.close()
    p0, r0, d0, s0 = uninterrupted
    assert s0["step"] == stats["step"] == 48
    assert s0["evicted_cap"] + s0["evicted_age"] > 0        # the eviction state mattered
    for k in ("rows", "admitted", "evicted_cap", "evicted_age", "updates"):
        assert stats[k] == s0[k], k
    np.testing.assert_allclose(rows, r0, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(rows.any(axis=1), r0.any(axis=1))  # same rows exist
    for x, y in zip(dense, d0):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)
    np.testing.assert_allclose(probs, p0, rtol=0, atol=1e-6)


def test_snapshots_follow_the_checkpoints_kept(tmp_path):
    ck = str(tmp_path / "ck")
    tr = Trainer(_cfg(ck, checkpoint_every_steps=4), log=lambda s: None)
    try:
        tr.train(eval_each_epoch=False)
    finally:
        tr.close()
    names = sorted(os.listdir(ck))
    ckpts = sorted({n.split(".")[0] for n in names if n.startswith("ckpt-") and ".index" in n})
    snaps = sorted(n[:-4] for n in names if n.endswith(".dyn"))
    assert len(ckpts) == 3 and snaps == ckpts                 # max_to_keep = 3, pruned in step
    # a snapshot's store files are hard links of the working store's closed files
    snap = os.path.join(ck, snaps[-1] + ".dyn")
    files = [os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(snap, "store"))
             for f in fs if f.endswith(".dat")]
    assert files and all(os.stat(f).st_nlink >= 1 for f in files)


def test_damaged_state_is_an_error(tmp_path):
    ck = str(tmp_path / "ck")
    tr = Trainer(_cfg(ck, checkpoint_every_steps=5), log=lambda s: None)
    try:
        tr.train(eval_each_epoch=False, stop_after_steps=5)
    finally:
        tr.close()
    state = os.path.join(ck, "ckpt-1.dyn", "state", "dyn_user.bin")
    with open(state, "r+b") as fh:
        fh.seek(100)
        b = fh.read(1)
        fh.seek(100)
        fh.write(bytes([b[0] ^ 0x40]))
    tr = Trainer(_cfg(ck), log=lambda s: None)
    try:
        with pytest.raises(Exception, match="damaged: checksum mismatch"):
            tr.restore()
    finally:
        tr.close()
    import shutil

    shutil.rmtree(os.path.join(ck, "ckpt-1.dyn"))
    tr = Trainer(_cfg(ck), log=lambda s: None)
    try:
        with pytest.raises(FileNotFoundError, match="no dynamic-table snapshot"):
            tr.restore()
    finally:
        tr.close()


def test_an_older_snapshot_survives_further_training(tmp_path, uninterrupted):
    # The snapshot's files are hard links of the working store's: training on after it (more
    # upserts, deletes, compactions, later snapshots) must leave it intact.
    import tensorflow as tf

    ck = str(tmp_path / "ck")
    a = Trainer(_cfg(ck, checkpoint_every_steps=8), log=lambda s: None)
    try:
        a.train(eval_each_epoch=False)
    finally:
        a.close()
    kept = tf.train.get_checkpoint_state(ck).all_model_checkpoint_paths
    oldest = kept[0]                       # written 2 checkpoints before the end
    tf.compat.v1.train.update_checkpoint_state(ck, oldest, all_model_checkpoint_paths=[oldest])
    b = Trainer(_cfg(ck), log=lambda s: None)
    try:
        assert b.restore()
        assert int(b.epoch.numpy()) * 24 + int(b.step_in_epoch.numpy()) < 48
        b.train(eval_each_epoch=False)
        probs, rows, dense, stats = _state(b)
    finally:
        b.close()
    p0, r0, d0, s0 = uninterrupted
    assert stats["step"] == 48 and stats["rows"] == s0["rows"]
    np.testing.assert_allclose(rows, r0, rtol=0, atol=1e-6)
    np.testing.assert_allclose(probs, p0, rtol=0, atol=1e-6)
