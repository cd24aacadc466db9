"""`recstrata train --delta-bundle` and `recstrata export-delta`: deltas written by the CLI are
applied by a host, and the served store ends up holding exactly the checkpoint's rows."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from recstrata.cli import main  # noqa: E402
from recstrata.host import Host  # noqa: E402

from delta_helpers import CONFIG, deltas_status, feeds, host_config, store_rows  # noqa: E402


def _checkpoint_tables(ck):
    from recstrata.training.trainer import load_trained

    from delta_helpers import tables_of

    model, _ = load_trained(str(ck))
    return tables_of(model)


def _assert_store_holds(v1, tables):
    from recstrata.bundle import manifest as mf

    for t in mf.read(v1).tables:
        for j, sub in enumerate(t.subtables):
            np.testing.assert_array_equal(store_rows(v1, sub.store_table, sub.rows), tables[(t.name, j)])


def test_train_with_deltas_and_export_delta(tmp_path, capsys):
    from recstrata.training.delta import list_deltas

    cfg = dict(CONFIG, train=dict(CONFIG["train"], epochs=1))
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg))
    ck = tmp_path / "ck"
    assert main(["train", str(cfg_path), "--checkpoint-dir", str(ck), "--no-progress"]) == 0
    base = tmp_path / "base"
    base.mkdir()
    v1 = base / "1"
    assert main(["export", str(ck), str(v1)]) == 0
    with Host(host_config(base)) as host:
        before = host.run("m", feeds(np.arange(32)))["prob"]
        # continue training for a second epoch, a delta every 4 steps (16 steps: 4 deltas + flush)
        assert main(["train", str(cfg_path), "--checkpoint-dir", str(ck), "--epochs", "2",
                     "--no-progress", "--delta-bundle", str(v1), "--delta-every-steps", "4"]) == 0
        seqs = list_deltas(v1)
        assert len(seqs) >= 4 and seqs == list(range(1, len(seqs) + 1))
        host.reload("m")
        st = deltas_status(host)
        assert st["applied_sequence"] == seqs[-1] and st["last_error"] == ""
        assert not np.allclose(host.run("m", feeds(np.arange(32)))["prob"], before)
    _assert_store_holds(v1, _checkpoint_tables(ck))

    # export-delta from two checkpoints: ck (now) -> ck2 (one more epoch)
    ck2 = tmp_path / "ck2"
    shutil.copytree(ck, ck2)
    assert main(["train", str(cfg_path), "--checkpoint-dir", str(ck2), "--epochs", "3",
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["export-delta", str(v1), str(ck2), "--since", str(ck)]) == 0
    assert f"delta {seqs[-1] + 1}" in capsys.readouterr().out
    # without --since: diffed against the bundle's own store (no host has it open now)
    assert main(["export-delta", str(v1), str(ck2)]) == 0
    assert "no embedding row changed" in capsys.readouterr().out
    with Host(host_config(base)) as host:
        assert deltas_status(host)["applied_sequence"] == seqs[-1] + 1
    _assert_store_holds(v1, _checkpoint_tables(ck2))

    # errors are one clear line
    assert main(["train", str(cfg_path), "--checkpoint-dir", str(ck), "--delta-every-steps", "3"]) == 1
    assert "need --delta-bundle" in capsys.readouterr().err
