"""The main job end to end, shrunk: `recstrata demo` (train -> export -> serve through the C ABI)
and `recstrata export CHECKPOINT OUT_DIR` from the demo's checkpoint directory."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from recstrata.training.demo import run_demo

    work = tmp_path_factory.mktemp("demo")
    lines: list[str] = []
    res = run_demo(str(work), num_train=6144, num_eval=2048, dram_fraction=0.05,
                   latency_requests=20, progress=False, log=lines.append)
    return work, res, lines


def test_demo_serves_the_trained_model(demo_run):
    _work, res, lines = demo_run
    assert res["examples"] == 2048
    assert res["max_abs_diff"] <= 1e-5
    assert res["served_auc"] == pytest.approx(res["keras_auc"], abs=1e-4)
    assert res["served_auc"] > 0.55                 # it learned something from 6k examples
    bf16 = res["bf16"]
    if "skipped" not in bf16:                       # a CPU with AVX512-BF16 / AMX-BF16
        assert abs(bf16["auc_delta"]) < 0.005, bf16
        assert 0 < bf16["max_abs_diff"] < 0.05, bf16
    assert res["dram_rows"] < 0.10 * res["rows"]     # DRAM cache smaller than the tables
    assert res["bundle_stats"]["ssd_hits"] > 0       # rows really came from the SSD tier
    text = "\n".join(lines)
    for needle in ("served AUC", "parity with Keras", "DRAM hit rate", "latency batch 64"):
        assert needle in text


def test_export_cli_from_checkpoint(demo_run, tmp_path, capsys):
    from recstrata.cli import main
    from recstrata.processor import Model
    from recstrata.training import synthetic
    from recstrata.training.data import encode
    from recstrata.training.export import bundle_feeds, read_manifest
    from recstrata.training.trainer import load_trained

    work, _res, _ = demo_run
    out = tmp_path / "exported"
    assert main(["export", str(work / "checkpoints"), str(out), "--tiers", "dram",
                 "--single-valued-layout", "lengths"]) == 0
    assert "bundle" in capsys.readouterr().out
    manifest = read_manifest(out)
    assert json.loads(json.dumps(manifest))["format_version"] == 2
    assert not os.listdir(out / "dense" / "variables")          # frozen dense stage
    # the format-version-1 layout with the weights kept as variables serves the same
    old = tmp_path / "exported_v1"
    assert main(["export", str(work / "checkpoints"), str(old), "--pooled-layout", "concat",
                 "--no-freeze-dense", "--single-valued-layout", "lengths"]) == 0
    old_manifest = read_manifest(old)
    assert old_manifest["format_version"] == 1
    assert os.listdir(old / "dense" / "variables")
    model, cfg = load_trained(str(work / "checkpoints"))
    blk = synthetic.Teacher(cfg).block("eval", 0, 300)
    ref = model.predict_batch(encode(cfg, blk, np.ones(300, bool), 300, 0))
    for path, m in ((out, manifest), (old, old_manifest)):
        with Model(str(path)) as served:
            got = served.run(bundle_feeds(m, blk))["prob"]
        assert np.abs(got - ref).max() <= 1e-5
    # refusing to overwrite without --overwrite: one clear line, exit code 1
    assert main(["export", str(work / "checkpoints"), str(out)]) == 1
    assert "exists" in capsys.readouterr().err
