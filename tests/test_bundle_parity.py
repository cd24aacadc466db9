"""Predictions served from a bundle equal the Keras model's (max abs diff <= 1e-5).

Covers plain, multihash (qr add / qr multiply / kway concat) and binary_code (succession /
skip) tables; single-valued [B] and multi-valued [B, k] + lengths features; int64 and string
ids; a table shared by two features; the memory-only store and a "dram+ssd" store whose DRAM
cache holds under 10% of the rows (most rows then come from the SSD tier); batch sizes 1..512;
and several threads serving the same bundle at once.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from recstrata.errors import InvalidArgumentError  # noqa: E402
from recstrata.processor import Model  # noqa: E402

TOL = 1e-5

CONFIG = {
    "name": "parity", "label": "label",
    "sparse": [
        {"name": "user", "dim": 8, "embedding": {"kind": "plain", "rows": 20000}},
        {"name": "user_hist", "dim": 8, "max_values": 5, "combiner": "sum", "table": "user",
         "embedding": {"kind": "plain", "rows": 20000}},
        {"name": "item", "dtype": "string", "dim": 8,
         "embedding": {"kind": "multihash", "strategy": "qr", "vocab": 50000, "m": 250,
                       "combiner": "multiply"}},
        {"name": "shop", "dim": 8,
         "embedding": {"kind": "multihash", "strategy": "qr", "vocab": 8000, "m": 90,
                       "hashed": False}},
        {"name": "tags", "dim": 8, "max_values": 4, "combiner": "mean",
         "embedding": {"kind": "binary_code", "bits": 20, "block_bits": 5, "strategy": "skip"}},
        {"name": "query", "dtype": "string", "dim": 8,
         "embedding": {"kind": "binary_code", "bits": 24, "block_bits": 8}},
        {"name": "words", "dtype": "string", "dim": 8, "max_values": 3, "combiner": "sqrtn",
         "embedding": {"kind": "multihash", "strategy": "kway", "sizes": [401, 397, 389],
                       "combiner": "concat"}},
        {"name": "cats", "dtype": "string", "dim": 8, "max_values": 6, "combiner": "mean",
         "embedding": {"kind": "plain", "rows": 3000, "seed": 3}},
    ],
    "dense": [{"name": "d0"}, {"name": "d1", "transform": "log1p"},
              {"name": "d2", "transform": "standard", "mean": 1.0, "std": 2.0}],
    "model": {"type": "deepfm", "hidden": [32, 16]},
    "data": {"format": "synthetic", "synthetic": {"num_train": 100, "num_eval": 100}},
}


def _model():
    from recstrata.training.models import RecModel
    from recstrata.training.spec import parse_config

    cfg = parse_config(CONFIG)
    model = RecModel(cfg, name="rec_model")
    model.build_with_dummy()
    # Larger-than-init table values so that every table visibly moves the output.
    rng = np.random.default_rng(1)
    for layer in model.embedding_stage.tables.values():
        for t in layer.subtables:
            base = 1.0 if layer.scheme.combiner == "multiply" else 0.0
            t.assign(base + rng.normal(0, 0.3, t.shape).astype(np.float32))
    return model, cfg


def make_examples(cfg, n: int, seed: int, single_missing: bool = False) -> dict:
    """Raw examples in the training package's layout; ids span the whole int64 range."""
    rng = np.random.default_rng(seed)
    ex: dict = {}
    for f in cfg.sparse:
        k = f.max_values
        if f.dtype == "string":
            pool = np.array([f"{f.name}-{i}" for i in range(300)] + ["", "Ωmega", "a\0b"],
                            dtype=object)
            ids = pool[rng.integers(0, len(pool), (n, k))]
        else:
            ids = np.where(rng.random((n, k)) < 0.8, rng.integers(0, 30000, (n, k)),
                           rng.integers(-(2**63), 2**63 - 1, (n, k), dtype=np.int64))
        if k == 1:
            lens = np.ones(n, np.int32)
            if single_missing:
                lens[rng.random(n) < 0.2] = 0
        else:
            lens = rng.integers(0, k + 1, n).astype(np.int32)
        ex[f.name] = ids
        ex[f.name + "/len"] = lens
    dense = rng.normal(0, 2, (n, len(cfg.dense))).astype(np.float32)
    dense[rng.random(dense.shape) < 0.1] = np.nan
    ex["dense"] = dense
    ex["label"] = np.zeros(n, np.float32)
    return ex


def keras_reference(model, cfg, ex) -> np.ndarray:
    from recstrata.training.data import encode

    n = len(ex["label"])
    return model.predict_batch(encode(cfg, ex, np.ones(n, bool), n, 0))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    model, cfg = _model()
    return model, cfg, tmp_path_factory.mktemp("bundles")


def _export(trained, name, **kw):
    from recstrata.training.export import export_bundle

    model, _cfg, root = trained
    return export_bundle(model, root / name, **kw)


@pytest.fixture(scope="module")
def dram_bundle(trained):
    return _export(trained, "dram")


@pytest.fixture(scope="module")
def ssd_bundle(trained):
    # DRAM cache of every sub-table at 4% of its bytes: < 10% of rows fit.
    return _export(trained, "ssd", tiers="dram+ssd", dram_fraction=0.04, cache_policy="lru")


@pytest.fixture(scope="module")
def lengths_bundle(trained):
    # also the other dense-stage layout: one pooled input per feature
    return _export(trained, "lengths", single_valued_layout="lengths", pooled_layout="per_feature")


def _check(model_dir, manifest, trained, sizes=(1, 7, 512), seed=0, single_missing=False,
           config=None, while_open=None):
    from recstrata.training.export import bundle_feeds

    model, cfg, _ = trained
    worst = 0.0
    with Model(model_dir, config) if config else Model(model_dir) as served:
        for i, n in enumerate(sizes):
            ex = make_examples(cfg, n, seed + i, single_missing)
            ref = keras_reference(model, cfg, ex)
            out = served.run(bundle_feeds(manifest, ex))
            assert out["prob"].shape == (n,)
            diff = float(np.abs(out["prob"] - ref).max())
            worst = max(worst, diff)
            assert diff <= TOL, f"batch {n}: max abs diff {diff}"
            # the logits move too: the model is not saturated, the comparison means something
            assert np.std(out["logit"]) > 0.05 or n == 1
        stats = served.stats()
        if while_open:
            while_open()
    return worst, stats


def test_parity_memory_store(dram_bundle, trained):
    _check(dram_bundle["path"], dram_bundle["manifest"], trained)


def test_parity_ssd_tier_with_small_dram_cache(ssd_bundle, trained):
    worst, stats = _check(ssd_bundle["path"], ssd_bundle["manifest"], trained,
                          sizes=(1, 64, 512, 512), seed=10)
    b = stats["bundle"]
    # The large sub-tables keep under 10% of their rows in DRAM; most rows came from SSD.
    big = [s for t in b["tables"] for s in t["subtables"] if s["rows"] >= 1000]
    assert big, b
    for s in big:
        assert s["dram_rows"] < 0.10 * s["rows"], s
        assert s["ssd_hits"] > s["dram_hits"], s
    assert b["ssd_hits"] > b["dram_hits"]
    assert b["missing_rows"] == 0


def _mapped_store_files(bundle_path):
    store = str(Path(bundle_path).resolve() / "store")
    with open("/proc/self/maps") as fh:
        return [line for line in fh if store in line and line.rstrip().endswith(".dat")]


@pytest.mark.parametrize("read_path", ["mmap", "pread", None])
def test_parity_ssd_tier_read_paths(ssd_bundle, trained, read_path):
    # bundle_read_path picks the store's read path: "pread" (the default for "dram+ssd") maps no
    # data file into the process (its pages are then not resident memory of the process),
    # "mmap" maps them; same results.
    seen = {}
    _check(ssd_bundle["path"], ssd_bundle["manifest"], trained, sizes=(64, 512), seed=30,
           config={"bundle_read_path": read_path} if read_path else None,
           while_open=lambda: seen.update(maps=_mapped_store_files(ssd_bundle["path"])))
    if read_path != "mmap":
        assert seen["maps"] == []
    else:
        assert seen["maps"], "the mmap read path maps the store's data files"


def test_bad_read_path_is_refused(ssd_bundle):
    with pytest.raises(InvalidArgumentError, match="read_path"):
        Model(ssd_bundle["path"], {"bundle_read_path": "mmapp"})


def test_single_valued_missing_values_with_lengths_layout_per_feature_inputs(lengths_bundle,
                                                                            trained):
    _check(lengths_bundle["path"], lengths_bundle["manifest"], trained, sizes=(5, 300),
           seed=20, single_missing=True)


def test_single_valued_missing_values_in_single_layout_name_feature_rows_and_fix(dram_bundle,
                                                                                  trained):
    from recstrata.training.export import bundle_feeds

    cfg = trained[1]
    ex = make_examples(cfg, 300, 21, single_missing=True)
    singles = [f.name for f in cfg.sparse if f.max_values == 1]
    assert len(singles) >= 2
    with pytest.raises(ValueError) as info:
        bundle_feeds(dram_bundle["manifest"], ex)
    msg = str(info.value)
    assert "of the 300 examples given" in msg
    for name in singles:   # every feature in one message, each with its own count and rows
        missing = np.flatnonzero(ex[name + "/len"] == 0)
        assert missing.size > 5
        assert f"{name!r}: {missing.size} (rows {', '.join(map(str, missing[:5]))}, ...)" in msg
    assert "--single-valued-layout lengths" in msg


@pytest.fixture(scope="module")
def concat_bundle(trained):
    # the format-version-1 layout: one pooled input, split inside the dense graph
    return _export(trained, "concat", pooled_layout="concat")


def test_parity_concat_layout(concat_bundle, trained):
    assert concat_bundle["manifest"]["format_version"] == 1
    _check(concat_bundle["path"], concat_bundle["manifest"], trained, sizes=(3, 64), seed=40)


def test_blocks_layout_feeds_embeddings_and_first_order_columns(dram_bundle):
    # the default layout: each pooled [dim + 1] vector is split by the processor, columns
    # [0, dim) side by side into "embeddings", column dim into "first_order" (deepfm)
    m = dram_bundle["manifest"]
    assert m["format_version"] == 2
    emb_off = 0
    for i, f in enumerate(m["sparse_features"]):
        assert f["slices"] == [
            {"first_column": 0, "width": 8, "dense_input": "embeddings", "dense_offset": emb_off},
            {"first_column": 8, "width": 1, "dense_input": "first_order", "dense_offset": i}]
        emb_off += 8
    with Model(dram_bundle["path"]) as served:
        dense_sig = served.describe()["dense_signature"]
    assert {t["name"] for t in dense_sig["inputs"]} == {"embeddings", "first_order", "dense"}


@pytest.mark.parametrize("kind", ["wdl", "dlrm"])
def test_parity_other_model_types(kind, tmp_path):
    # the blocks layout for the other dense stages (wdl: first-order column; dlrm: none)
    from recstrata.training.export import bundle_feeds, export_bundle
    from recstrata.training.models import RecModel
    from recstrata.training.spec import parse_config

    conf = {"name": kind, "label": "label",
            "sparse": [{"name": f"f{i}", "dim": 4, "max_values": 1 + i % 2,
                        "embedding": {"kind": "plain", "rows": 500 + i}} for i in range(5)],
            "dense": [{"name": "d0"}, {"name": "d1", "transform": "log1p"}],
            "model": {"type": kind, "hidden": [16, 8]},
            "data": {"format": "synthetic", "synthetic": {"num_train": 10, "num_eval": 10}}}
    if kind == "dlrm":
        conf["model"]["bottom"] = [8]
    cfg = parse_config(conf)
    model = RecModel(cfg, name="rec_model")
    model.build_with_dummy()
    rng = np.random.default_rng(5)
    for layer in model.embedding_stage.tables.values():
        for t in layer.subtables:
            t.assign(rng.normal(0, 0.3, t.shape).astype(np.float32))
    info = export_bundle(model, tmp_path / kind)
    slices = [len(f["slices"]) for f in info["manifest"]["sparse_features"]]
    assert slices == [2 if kind == "wdl" else 1] * 5
    ex = make_examples(cfg, 50, 7)
    ref = keras_reference(model, cfg, ex)
    with Model(info["path"]) as served:
        got = served.run(bundle_feeds(info["manifest"], ex), outputs=["prob"])["prob"]
    assert np.abs(got - ref).max() <= TOL


def test_manifest_declares_every_scheme(dram_bundle):
    m = dram_bundle["manifest"]
    kinds = {t["key_scheme"]["kind"] for t in m["tables"]}
    assert kinds == {"plain", "multihash", "binary_code"}
    feats = {f["name"]: f for f in m["sparse_features"]}
    assert feats["user"]["table"] == feats["user_hist"]["table"] == "user"   # shared table
    assert not feats["user"]["multivalued"] and feats["tags"]["multivalued"]
    assert {f["id_type"] for f in feats.values()} == {"int64", "string"}


def test_describe_lists_features(dram_bundle):
    with Model(dram_bundle["path"]) as served:
        names = [s.name for s in served.inputs]
        assert names[:3] == ["user", "user_hist", "user_hist_lengths"]
        assert "dense" in names
        d = served.describe()
        assert {f["name"] for f in d["bundle"]["features"]} >= {"user", "words", "cats"}


def test_concurrent_callers_get_identical_results(dram_bundle, trained):
    from recstrata.training.export import bundle_feeds

    model, cfg, _ = trained
    examples = [make_examples(cfg, n, 100 + n) for n in (3, 33, 200, 64)]
    feeds = [bundle_feeds(dram_bundle["manifest"], ex) for ex in examples]
    refs = [keras_reference(model, cfg, ex) for ex in examples]
    errors: list = []
    with Model(dram_bundle["path"], session_num=2, select_session_policy="RR") as served:
        def work(t):
            try:
                for r in range(15):
                    i = (t + r) % len(feeds)
                    out = served.run(feeds[i])["prob"]
                    if np.abs(out - refs[i]).max() > TOL:
                        errors.append((t, r, float(np.abs(out - refs[i]).max())))
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(repr(exc))

        threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert not errors, errors[:3]


def test_batch_split_matches_unsplit_call(dram_bundle, trained):
    # A large call that has the model to itself is cut into row ranges served at once; the
    # joined outputs are the rows of the unsplit call, in order.
    from recstrata.training.export import bundle_feeds

    model, cfg, _ = trained
    ex = make_examples(cfg, 301, 77)
    feeds = bundle_feeds(dram_bundle["manifest"], ex)
    ref = keras_reference(model, cfg, ex)
    with Model(dram_bundle["path"], split_min_batch=0) as whole:
        want = whole.run(feeds)
        assert whole.stats()["split_calls"] == 0
        assert whole.describe()["batch_split"]["min_batch"] == 0
    with Model(dram_bundle["path"], split_min_batch=32, split_parts=3) as split:
        assert split.describe()["batch_split"] == {"min_batch": 32, "parts": 3}
        got = split.run(feeds)
        small = split.run(bundle_feeds(dram_bundle["manifest"], make_examples(cfg, 20, 78)))
        assert split.stats()["split_calls"] == 1          # 301 rows split, 20 rows not
    assert small["prob"].shape == (20,)
    for k in ("prob", "logit"):
        assert got[k].shape == want[k].shape == (301,)
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-6)
    assert np.abs(got["prob"] - ref).max() <= TOL


def test_batch_split_reports_a_bad_row_in_any_part(dram_bundle, trained):
    # the error of a part run on a worker thread reaches the caller; the model keeps serving
    from recstrata.training.export import bundle_feeds

    model, cfg, _ = trained
    feeds = bundle_feeds(dram_bundle["manifest"], make_examples(cfg, 200, 79))
    feeds["tags_lengths"] = feeds["tags_lengths"].copy()
    feeds["tags_lengths"][190] = 99                        # in the last part
    with Model(dram_bundle["path"], split_min_batch=32, split_parts=4) as served:
        # (numbered as the caller numbers the rows, not within the part)
        with pytest.raises(InvalidArgumentError, match=r"tags_lengths'\[190\] = 99"):
            served.run(feeds)
        feeds["tags_lengths"][190] = 1
        assert served.run(feeds)["prob"].shape == (200,)
        assert served.stats()["split_calls"] == 1


def test_batch_split_config_is_validated(dram_bundle):
    with pytest.raises(InvalidArgumentError, match="split_parts"):
        Model(dram_bundle["path"], split_parts=0)
    with pytest.raises(InvalidArgumentError, match="split_min_batch"):
        Model(dram_bundle["path"], split_min_batch=-1)
