"""Config validation: every mistake is refused with a message naming the field."""

import copy
import json

import pytest

from recstrata.training.spec import SpecError, load_config

BASE = {
    "name": "t",
    "model": {"type": "deepfm", "hidden": [8]},
    "sparse": [
        {"name": "user", "dim": 4, "embedding": {"kind": "plain", "rows": 100}},
        {"name": "item", "dim": 4, "table": "shared", "embedding": {"kind": "plain", "rows": 50}},
        {"name": "item2", "dim": 4, "table": "shared", "embedding": {"kind": "plain", "rows": 50}},
    ],
    "dense": [{"name": "x", "transform": "log1p"}],
    "data": {"format": "synthetic", "synthetic": {"num_train": 10, "num_eval": 10}},
}


def variant(path, value):
    d = copy.deepcopy(BASE)
    cur = d
    for p in path[:-1]:
        cur = cur[p]
    if value is DELETE:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value
    return d


DELETE = object()


def test_base_is_valid_and_tables_shared():
    cfg = load_config(BASE)
    assert list(cfg.tables()) == ["user", "shared"]
    assert cfg.tables()["shared"][2] == ("item", "item2")
    assert json.loads(cfg.to_json())["name"] == "t"


@pytest.mark.parametrize("path,value,match", [
    (("sparse",), [], "sparse: at least one sparse feature"),
    (("sparse", 0, "dim"), 0, r"sparse\[0\].dim: must be >= 1"),
    (("sparse", 0, "dim"), "8", r"sparse\[0\].dim: must be an integer"),
    (("sparse", 0, "dtype"), "float", r"sparse\[0\].dtype: must be one of"),
    (("sparse", 0, "combiner"), "max", r"sparse\[0\].combiner"),
    (("sparse", 0, "embedding"), DELETE, r"sparse\[0\].embedding: required"),
    (("sparse", 0, "embedding"), {"kind": "plain", "rows": 0}, r"sparse\[0\].embedding: plain.rows"),
    (("sparse", 0, "embedding"), {"kind": "multihash", "strategy": "qr", "vocab": 100, "m": 100},
     r"sparse\[0\].embedding: multihash.m must be in \[2, 99\]"),
    (("sparse", 0, "embedding"), {"kind": "bloom"}, "unknown key scheme kind"),
    (("sparse", 0, "colour"), "red", r"sparse\[0\]: unknown field\(s\) \['colour'\]"),
    (("sparse", 2, "dim"), 8, "shares table 'shared'"),
    (("sparse", 1, "name"), "user", "duplicate feature/label name"),
    (("dense", 0, "transform"), "sqrt", r"dense\[0\].transform: must be one of"),
    (("dense", 0, "std"), 0, r"dense\[0\].std: must be > 0"),
    (("model", "type"), "xgboost", "model.type: must be one of"),
    (("model", "hidden"), [8, -1], "model.hidden: must be a list of layer widths"),
    (("data", "format"), "parquet", "data.format: must be one of"),
    (("data",), DELETE, "data: required field is missing"),
    (("train",), {"batch_size": 0}, "train.batch_size: must be >= 1"),
    (("train",), {"optimizer": "lbfgs"}, "train.optimizer"),
    (("train",), {"early_stopping": {"patience": -1}}, "train.early_stopping.patience"),
    (("surprise",), 1, r"config: unknown field\(s\) \['surprise'\]"),
])
def test_validation_errors(path, value, match):
    with pytest.raises(SpecError, match=match):
        load_config(variant(path, value))


def test_model_specific_rules():
    d = variant(("sparse", 0, "dim"), 8)
    d["sparse"][1]["dim"] = d["sparse"][2]["dim"] = 4
    with pytest.raises(SpecError, match="deepfm: every sparse feature needs the same dim"):
        load_config(d)
    d["model"]["type"] = "wdl"
    load_config(d)   # WDL allows different dims
    d = variant(("model", "type"), "dlrm")
    d["dense"] = []
    with pytest.raises(SpecError, match="dlrm: needs at least one dense feature"):
        load_config(d)


def test_file_configs(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x",\n "sparse": [}')
    with pytest.raises(SpecError, match="invalid JSON at line 2"):
        load_config(str(bad))
    with pytest.raises(FileNotFoundError):
        load_config(str(tmp_path / "missing.json"))
    csv = variant(("data",), {"format": "csv", "train": "t.csv", "columns": ["label", "user", "x"]})
    with pytest.raises(SpecError, match=r"data.columns: feature\(s\)/label \['item', 'item2'\] have no column"):
        load_config(csv)
    csv["data"]["columns"] = ["label", "user", "item", "item2", "x", ""]
    p = tmp_path / "ok.json"
    p.write_text(json.dumps(csv))
    cfg = load_config(str(p))
    assert cfg.data.train == (str(tmp_path / "t.csv"),)   # relative to the config file
    crit = variant(("data",), {"format": "criteo", "train": "a.tsv", "columns": ["x"]})
    with pytest.raises(SpecError, match="criteo format has fixed columns"):
        load_config(crit)
    pytest.importorskip("yaml")
    y = tmp_path / "c.yaml"
    y.write_text("name: y\nsparse:\n  - {name: u, dim: 2, embedding: {kind: plain, rows: 5}}\n"
                 "data: {format: synthetic}\n")
    assert load_config(str(y)).name == "y"
