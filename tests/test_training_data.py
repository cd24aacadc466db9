"""Input pipelines: Criteo/CSV parsing, bad rows, exactly-once cutting of global batches."""

import numpy as np
import pytest

from recstrata.training import data as D
from recstrata.training import keys as K
from recstrata.training import synthetic
from recstrata.training.spec import load_config


def criteo_cfg(tmp_path, train_lines, on_bad="count"):
    p = tmp_path / "train.tsv"
    p.write_text("".join(line + "\n" for line in train_lines))
    return load_config({
        "model": {"type": "wdl", "hidden": [4]},
        "dense": [{"name": "I1"}, {"name": "I13", "transform": "log1p"}],
        "sparse": [{"name": "C1", "dim": 2, "embedding": {"kind": "plain", "rows": 10}},
                   {"name": "C26", "dim": 2, "dtype": "string",
                    "embedding": {"kind": "plain", "rows": 10}}],
        "data": {"format": "criteo", "train": str(p), "on_bad_row": on_bad},
    })


def criteo_line(label, ints, cats):
    return "\t".join([label] + ints + cats)


def test_criteo_parsing_missing_values_and_bad_rows(tmp_path):
    ints = ["5"] + [""] * 11 + ["100"]
    cats = ["68fd1e64"] + ["0"] * 24 + ["ffffffff"]
    lines = [
        criteo_line("1", ints, cats),
        criteo_line("0", [""] * 13, [""] + ["0"] * 24 + [""]),       # all missing
        criteo_line("1", ints, cats[:-1]),                          # 39 fields: bad
        criteo_line("2", ints, cats),                               # bad label: bad
        criteo_line("0", ["x"] + ints[1:], cats),                   # bad int: bad
        criteo_line("0", ints, ["zz"] + cats[1:]),                  # bad hex: bad
    ]
    cfg = criteo_cfg(tmp_path, lines)
    src = D.make_source(cfg, "train")
    batches = list(D.worker_batches(cfg, src, D.Layout.for_global_batch(4)))
    assert len(batches) == 2
    b = {k: np.concatenate([x[k] for x in batches]) for k in batches[0]}
    assert b["weight"].tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    assert b["index"].tolist() == [0, 1, -1, -1, -1, -1, -1, -1]
    assert b["label"][:2].tolist() == [1, 0]
    assert b["C1"][0, 0] == 0x68FD1E64 and b["C1/len"][:2].tolist() == [1, 0]
    # string feature: the hex text is hashed with FNV-1a (docs/embedding-keys.md)
    assert b["C26"][0, 0] == K.string_ids(["ffffffff"])[0] and b["C26/len"][1] == 0
    assert b["dense"][0].tolist() == [5.0, 100.0]
    assert np.isnan(b["dense"][1]).all()
    assert src.stats.bad_rows == 4 and src.stats.rows == 6
    assert "train.tsv:3: expected 40 fields, got 39" in src.stats.first_errors[0]
    assert "label must be 0 or 1" in src.stats.first_errors[1]
    cfg = criteo_cfg(tmp_path, lines, on_bad="fail")
    with pytest.raises(D.DataError, match=r"bad row at .*train.tsv:3: expected 40 fields"):
        list(D.worker_batches(cfg, D.make_source(cfg, "train"), D.Layout.for_global_batch(4)))


def test_csv_multivalued_strings_and_truncation(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("y,tags,uid,ignored,price\n1,a|b|c|d,7,zzz,3.5\n0,,-3,,\n1,b,18446744073709551615,q,1\n")
    cfg = load_config({
        "model": {"type": "wdl", "hidden": [4]}, "label": "y",
        "dense": [{"name": "price", "transform": "standard", "mean": 1, "std": 2}],
        "sparse": [
            {"name": "tags", "dtype": "string", "max_values": 3, "combiner": "mean", "dim": 2,
             "embedding": {"kind": "multihash", "strategy": "kway", "sizes": [5, 7]}},
            {"name": "uid", "dim": 2, "embedding": {"kind": "plain", "rows": 10, "hashed": False}}],
        "data": {"format": "csv", "train": str(p), "header": True,
                 "columns": ["y", "tags", "uid", "", "price"]},
    })
    src = D.make_source(cfg, "train")
    (b,) = list(D.worker_batches(cfg, src, D.Layout.for_global_batch(3)))
    assert b["tags/len"].tolist() == [3, 0, 1]
    assert b["tags"][0].tolist() == K.string_ids(["a", "b", "c"]).tolist()
    assert src.stats.truncated_values == 1 and src.stats.bad_rows == 0
    assert b["uid"][:, 0].tolist() == [7, -3, -1]   # unsigned 64-bit ids wrap to int64
    assert b["index"].tolist() == [0, 1, 2]


class CountingSource:
    """n examples, rows already parsed; row i carries value i."""

    def __init__(self, n, chunk):
        self.n, self.chunk = n, chunk
        self.stats = D.ParseStats()

    def raw_chunks(self):
        for s in range(0, self.n, self.chunk):
            yield {"v": np.arange(s, min(s + self.chunk, self.n))}

    def parse(self, part):
        v = part["v"]
        return ({"label": (v % 2).astype(np.float32), "dense": np.zeros((len(v), 0), np.float32),
                 "f": v[:, None].astype(np.int64), "f/len": np.ones(len(v), np.int32)},
                np.ones(len(v), bool))


@pytest.mark.parametrize("n,gb,workers,replicas,chunk", [
    (1, 4, 2, 1, 3), (10, 4, 2, 1, 3), (9, 4, 2, 2, 4096), (1000, 64, 3, 2, 7),
    (97, 10, 4, 1, 5), (5, 16, 2, 2, 2), (64, 64, 2, 2, 64),
])
def test_every_example_exactly_once_across_workers(n, gb, workers, replicas, chunk):
    cfg = load_config({"sparse": [{"name": "f", "dim": 2, "embedding": {"kind": "plain", "rows": 3}}],
                       "model": {"type": "wdl"}, "data": {"format": "synthetic"}})
    seen, steps = [], set()
    for w in range(workers):
        lay = D.Layout.for_global_batch(gb, replicas, workers, w)
        bs = list(D.worker_batches(cfg, CountingSource(n, chunk), lay))
        steps.add(len(bs))
        for b in bs:
            assert len(b["index"]) == lay.worker_rows            # fixed shapes, padded
            real = b["weight"] > 0
            assert (b["f"][real, 0] == b["index"][real]).all()   # the row is the indexed example
            assert (b["index"][~real] == -1).all()
            seen.append(b["index"][real])
    assert len(steps) == 1, "workers must run the same number of steps"
    allseen = np.sort(np.concatenate(seen))
    assert allseen.tolist() == list(range(n))


def test_skip_and_limit_for_resume():
    cfg = load_config({"sparse": [{"name": "f", "dim": 2, "embedding": {"kind": "plain", "rows": 3}}],
                       "model": {"type": "wdl"}, "data": {"format": "synthetic"}})
    lay = D.Layout.for_global_batch(4)
    full = [b["index"] for b in D.worker_batches(cfg, CountingSource(18, 5), lay)]
    rest = [b["index"] for b in D.worker_batches(cfg, CountingSource(18, 5), lay, skip=2)]
    assert [x.tolist() for x in rest] == [x.tolist() for x in full[2:]]
    assert len(list(D.worker_batches(cfg, CountingSource(18, 5), lay, limit=3))) == 3


def test_synthetic_is_reproducible_and_independent_of_batching():
    cfg = load_config({
        "sparse": [{"name": "u", "dim": 2, "embedding": {"kind": "plain", "rows": 50, "hashed": False}},
                   {"name": "h", "dim": 2, "max_values": 4, "dtype": "string",
                    "embedding": {"kind": "plain", "rows": 10}}],
        "dense": [{"name": "x"}], "model": {"type": "wdl"},
        "data": {"format": "synthetic", "synthetic": {"num_train": 5000, "num_eval": 100,
                                                      "vocab": {"u": 50, "h": 20}}}})
    a = list(D.worker_batches(cfg, D.make_source(cfg, "train"), D.Layout.for_global_batch(1000)))
    b = list(D.worker_batches(cfg, D.make_source(cfg, "train"), D.Layout.for_global_batch(300)))
    ua = np.concatenate([x["u"] for x in a])[:5000]
    ub = np.concatenate([x["u"] for x in b])[:5000]
    assert (ua == ub).all()
    assert ua.min() >= 0 and ua.max() < 50
    # Zipf: the most frequent id is far more common than the median one
    counts = np.sort(np.bincount(ua[:, 0], minlength=50))[::-1]
    assert counts[0] > 5 * counts[25]
    t = synthetic.teacher_auc(cfg, "train")
    assert 0.65 < t < 0.95
