"""A checkpoint directory belongs to one config (recstrata.training.checkpoint_dir).

Resume with the same config (epochs and other RESUMABLE fields may change), refuse a
changed config with a message naming the changed fields, start over with fresh /
`recstrata train --fresh`.
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("tensorflow")

from recstrata.training import checkpoint_dir as ckdir  # noqa: E402
from recstrata.training import trainer  # noqa: E402
from recstrata.training.spec import load_config  # noqa: E402

TINY = {
    "name": "tiny",
    "model": {"type": "wdl", "hidden": [8]},
    "sparse": [{"name": "user", "dim": 4, "embedding": {"kind": "plain", "rows": 100, "hashed": False}}],
    "dense": [{"name": "x"}],
    "data": {"format": "synthetic",
             "synthetic": {"num_train": 512, "num_eval": 128, "vocab": {"user": 100}}},
    "train": {"batch_size": 128, "epochs": 1, "learning_rate": 0.01, "progress": False},
}


def _cfg(ck=None, **train):
    d = json.loads(json.dumps(TINY))
    d["train"].update(train)
    if ck is not None:
        d["train"]["checkpoint_dir"] = str(ck)
    return d


def test_config_changes_ignores_resumable_fields():
    base = load_config(_cfg())
    assert ckdir.config_changes(base, load_config(_cfg(epochs=5, devices="cpu", progress=True,
                                                       checkpoint_dir="/elsewhere"))) == []
    assert ckdir.config_changes(base, load_config(_cfg(learning_rate=0.5))) == ["train.learning_rate"]
    d = _cfg()
    d["model"]["hidden"] = [8, 4]
    d["sparse"][0]["embedding"]["rows"] = 101
    changed = ckdir.config_changes(base, load_config(d))
    assert "model.hidden" in changed and any(c.startswith("sparse[0].scheme") for c in changed)


def test_resume_refuse_and_fresh(tmp_path):
    ck = tmp_path / "ck"
    logs = []
    t1 = trainer.Trainer(load_config(_cfg(ck)), log=logs.append)
    assert t1.checkpoint_state == "new"
    t1.train()
    assert ckdir.has_checkpoint(str(ck))

    # same config, more epochs: resumes and says so
    logs.clear()
    t2 = trainer.Trainer(load_config(_cfg(ck, epochs=2)), log=logs.append)
    assert t2.checkpoint_state == "resume" and t2.restore()
    assert int(t2.epoch.numpy()) == 1
    assert any("resuming from" in line and "same config" in line for line in logs)

    # changed config: refused, nothing overwritten
    before = (ck / "config.json").read_text()
    with pytest.raises(ckdir.CheckpointConfigError, match=r"changed: train\.learning_rate.*--fresh"):
        trainer.Trainer(load_config(_cfg(ck, learning_rate=0.02)), log=logs.append)
    assert (ck / "config.json").read_text() == before

    # fresh: old checkpoints deleted, training starts at epoch 0; other files stay
    (ck / "notes.txt").write_text("mine")
    logs.clear()
    t3 = trainer.Trainer(load_config(_cfg(ck, learning_rate=0.02)), log=logs.append, fresh=True)
    assert t3.checkpoint_state == "fresh" and not ckdir.has_checkpoint(str(ck))
    assert any("--fresh" in line for line in logs)
    assert not t3.restore() and int(t3.epoch.numpy()) == 0
    assert (ck / "notes.txt").read_text() == "mine"
    assert json.loads((ck / "config.json").read_text())["train"]["learning_rate"] == 0.02


def test_checkpoints_without_config_are_refused(tmp_path):
    ck = tmp_path / "ck"
    trainer.Trainer(load_config(_cfg(ck)), log=lambda s: None).train()
    os.remove(ck / "config.json")
    with pytest.raises(ckdir.CheckpointConfigError, match="no config.json"):
        trainer.Trainer(load_config(_cfg(ck)), log=lambda s: None)
    (ck / "config.json").write_text("{not json")
    with pytest.raises(ckdir.CheckpointConfigError, match="cannot be read"):
        trainer.Trainer(load_config(_cfg(ck)), log=lambda s: None)


def _cli(*args, cwd):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "recstrata.cli", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=240)


def test_cli_train_refuses_changed_config_until_fresh(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps(_cfg("ck")))
    r = _cli("train", "c.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    # TensorFlow alone logs these at import even with TF_CPP_MIN_LOG_LEVEL=2 (recstrata._tf_logs)
    assert "oneDNN custom operations" not in r.stderr and "absl::InitializeLog" not in r.stderr
    r = _cli("train", "c.json", "--epochs", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming from" in r.stderr
    (tmp_path / "c.json").write_text(json.dumps(_cfg("ck", batch_size=64)))
    r = _cli("train", "c.json", cwd=tmp_path)
    assert r.returncode == 1
    assert "recstrata train: error:" in r.stderr and "changed: train.batch_size" in r.stderr
    assert "Traceback" not in r.stderr
    r = _cli("train", "c.json", "--fresh", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "--fresh: deleted the checkpoints" in r.stderr and "resuming" not in r.stderr
    hist = json.loads(r.stdout.strip().splitlines()[-1])["history"]
    assert [h["epoch"] for h in hist] == [1]
