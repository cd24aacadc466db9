"""`recstrata info` and `recstrata predict` (recstrata.model_cli)."""

from __future__ import annotations

import json

import numpy as np

from recstrata.cli import main


def test_info_prints_description(mlp_model_dir, capsys):
    assert main(["info", mlp_model_dir, "--config", '{"session_num": 2}']) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["signature"]["inputs"][0]["name"] == "x"
    assert info["session_group"]["session_num"] == 2


def test_predict_npy_and_npz(mlp_model_dir, tmp_path, capsys, tf_reference):
    x = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["predict", mlp_model_dir, "--input", f"x={tmp_path / 'x.npy'}"]) == 0
    out = json.loads(capsys.readouterr().out)
    ref = tf_reference(mlp_model_dir, {"x": x})["prob"]
    assert out["prob"]["shape"] == [3, 1] and out["prob"]["dtype"] == "float32"
    np.testing.assert_allclose(np.array(out["prob"]["values"], np.float32), ref, rtol=1e-5)

    np.savez(tmp_path / "in.npz", x=x)
    assert main(["predict", mlp_model_dir, "--input", f"@{tmp_path / 'in.npz'}",
                 "--save", str(tmp_path / "out.npz"), "--repeat", "3"]) == 0
    assert "3 runs" in capsys.readouterr().err
    with np.load(tmp_path / "out.npz") as saved:
        np.testing.assert_allclose(saved["prob"], ref, rtol=1e-5)


def test_predict_errors_are_one_line(mlp_model_dir, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.ones((2, 8), np.float32))
    assert main(["predict", str(tmp_path / "missing"), "--input", f"x={tmp_path / 'x.npy'}"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["predict", mlp_model_dir, "--input", "x=no-such.npy"]) == 1
    assert "no-such.npy" in capsys.readouterr().err
    assert main(["predict", mlp_model_dir, "--input", "nonsense"]) == 1
    assert "NAME=FILE.npy" in capsys.readouterr().err
    np.save(tmp_path / "bad.npy", np.ones((2, 8), np.float64))
    assert main(["predict", mlp_model_dir, "--input", f"x={tmp_path / 'bad.npy'}"]) == 1
    assert "dtype" in capsys.readouterr().err


def test_each_verb_comes_from_the_module_named_after_it():
    from recstrata.cli import build_parser

    parser = build_parser()
    owners = {
        ("train", "c.json"): "recstrata.training.train_cli",
        ("eval", "ck"): "recstrata.training.train_cli",
        ("export", "ck", "out"): "recstrata.training.export_cli",
        ("demo",): "recstrata.training.export_cli",
        ("info", "m"): "recstrata.model_cli",
        ("predict", "m"): "recstrata.model_cli",
        ("serve", "--model", "a=b"): "recstrata.serve_cli",
    }
    for argv, module in owners.items():
        assert parser.parse_args(list(argv)).func.__module__ == module, argv
