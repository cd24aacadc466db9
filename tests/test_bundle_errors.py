"""A bundle refuses bad requests and damaged bundles with clear errors; the host keeps running.

Requests: unknown feature names, missing features, wrong dtypes, shapes that do not match the
declared layout (rank, batch sizes that disagree, lengths outside [0, k], k above max_values).
Bundles: garbage / empty / truncated / future-version manifests, unknown manifest fields, a
half-written export (temporary directory without its manifest), dense-stage files whose size
differs from the manifest, a missing store table, corrupted store records, and an export
interrupted midway (nothing appears at the target path). After each refusal the same process
serves a good bundle correctly.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from recstrata import errors  # noqa: E402
from recstrata.processor import Model  # noqa: E402

CONFIG = {
    "name": "errs", "label": "label",
    "sparse": [
        {"name": "uid", "dim": 4, "embedding": {"kind": "plain", "rows": 1000}},
        {"name": "sid", "dtype": "string", "dim": 4,
         "embedding": {"kind": "multihash", "strategy": "qr", "vocab": 5000, "m": 70}},
        {"name": "hist", "dim": 4, "max_values": 3, "combiner": "mean",
         "embedding": {"kind": "binary_code", "bits": 12, "block_bits": 4}},
    ],
    "dense": [{"name": "d0"}],
    "model": {"type": "wdl", "hidden": [8]},
    "data": {"format": "synthetic", "synthetic": {"num_train": 10, "num_eval": 10}},
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from recstrata.training.models import RecModel
    from recstrata.training.spec import parse_config

    cfg = parse_config(CONFIG)
    model = RecModel(cfg, name="rec_model")
    model.build_with_dummy()
    return model, cfg, tmp_path_factory.mktemp("errs")


@pytest.fixture(scope="module")
def bundle(built):
    from recstrata.training.export import export_bundle

    model, _cfg, root = built
    return export_bundle(model, root / "good", tiers="dram+ssd", dram_fraction=0.1)


def good_feeds(n=4):
    return {"uid": np.arange(n, dtype=np.int64),
            "sid": np.array([f"s{i}" for i in range(n)], dtype=object),
            "hist": np.arange(3 * n, dtype=np.int64).reshape(n, 3),
            "hist_lengths": np.full(n, 2, np.int32),
            "dense": np.ones((n, 1), np.float32)}


def copy_bundle(bundle, root, name):
    dst = root / name
    shutil.copytree(bundle["path"], dst)
    return dst


@pytest.fixture(scope="module")
def served(bundle):
    with Model(bundle["path"]) as m:
        yield m


def assert_still_serves(served):
    out = served.run(good_feeds())
    assert out["prob"].shape == (4,) and np.isfinite(out["prob"]).all()


# ----------------------------------------------------------------------------- requests

@pytest.mark.parametrize("mutate, exc, needle", [
    (lambda f: f.update(bogus=np.zeros(4, np.int64)), errors.InvalidArgumentError, "bogus"),
    (lambda f: f.pop("sid"), errors.InvalidArgumentError, "sid"),
    (lambda f: f.pop("hist_lengths"), errors.InvalidArgumentError, "hist_lengths"),
    (lambda f: f.update(uid=np.arange(4, dtype=np.int32)), errors.InvalidArgumentError, "uid"),
    (lambda f: f.update(uid=np.arange(4, dtype=np.float32)), errors.InvalidArgumentError, "uid"),
    (lambda f: f.update(uid=np.array(["1", "2", "3", "4"], dtype=object)),
     errors.InvalidArgumentError, "uid"),
    (lambda f: f.update(sid=np.arange(4, dtype=np.int64)), errors.InvalidArgumentError, "sid"),
    (lambda f: f.update(hist_lengths=np.full(4, 2, np.int64)), errors.InvalidArgumentError,
     "hist_lengths"),
    # layout: rank
    (lambda f: f.update(uid=np.arange(8, dtype=np.int64).reshape(4, 2)),
     errors.InvalidArgumentError, "uid"),
    (lambda f: f.update(hist=np.arange(4, dtype=np.int64)), errors.InvalidArgumentError, "hist"),
    # layout: batch sizes disagree
    (lambda f: f.update(sid=np.array(["a", "b", "c"], dtype=object)),
     errors.InvalidArgumentError, "batch"),
    (lambda f: f.update(hist_lengths=np.full(5, 1, np.int32)), errors.InvalidArgumentError,
     "batch"),
    (lambda f: f.update(dense=np.ones((3, 1), np.float32)), errors.InvalidArgumentError, "batch"),
    # layout: lengths outside [0, k]; k above max_values; dense width
    (lambda f: f.update(hist_lengths=np.array([1, 4, 0, 0], np.int32)),
     errors.InvalidArgumentError, "outside [0, 3]"),
    (lambda f: f.update(hist_lengths=np.array([1, -1, 0, 0], np.int32)),
     errors.InvalidArgumentError, "outside"),
    (lambda f: f.update(hist=np.zeros((4, 5), np.int64)), errors.InvalidArgumentError,
     "at most 3"),
    (lambda f: f.update(dense=np.ones((4, 2), np.float32)), errors.InvalidArgumentError, "dense"),
])
def test_bad_requests_are_refused(served, mutate, exc, needle):
    feeds = good_feeds()
    mutate(feeds)
    with pytest.raises(exc, match=needle if needle != "outside [0, 3]" else r"outside \[0, 3\]"):
        served.run(feeds)
    assert_still_serves(served)


def test_empty_batch_and_all_missing_values(served):
    out = served.run({"uid": np.zeros(0, np.int64), "sid": np.zeros(0, object),
                      "hist": np.zeros((0, 3), np.int64), "hist_lengths": np.zeros(0, np.int32),
                      "dense": np.zeros((0, 1), np.float32)})
    assert out["prob"].shape == (0,)
    f = good_feeds()
    f["hist_lengths"][:] = 0                        # no values: pooled zeros, still served
    f["hist"] = np.zeros((4, 0), np.int64)           # k = 0 is a valid padded layout
    assert served.run(f)["prob"].shape == (4,)


# ----------------------------------------------------------------------------- bundles

def _edit_manifest(path, fn):
    mpath = os.path.join(path, "bundle.json")
    with open(mpath) as fh:
        m = json.load(fh)
    fn(m)
    with open(mpath, "w") as fh:
        json.dump(m, fh)


def _refused(path, exc, needle, served):
    with pytest.raises(exc, match=needle):
        Model(str(path))
    assert_still_serves(served)


def test_garbage_manifest(bundle, built, served):
    p = copy_bundle(bundle, built[2], "garbage")
    (p / "bundle.json").write_bytes(os.urandom(300))
    _refused(p, errors.CorruptionError, "bundle manifest", served)


def test_empty_and_truncated_manifest(bundle, built, served):
    p = copy_bundle(bundle, built[2], "empty")
    (p / "bundle.json").write_text("")
    _refused(p, errors.CorruptionError, "empty", served)
    text = (built[2] / "good" / "bundle.json").read_text()
    (p / "bundle.json").write_text(text[: len(text) // 2])
    _refused(p, errors.CorruptionError, "manifest", served)


def test_future_format_version(bundle, built, served):
    p = copy_bundle(bundle, built[2], "future")
    _edit_manifest(p, lambda m: m.update(format_version=3, new_thing=1))
    _refused(p, errors.IncompatibleError, "format version 3", served)


def test_unknown_manifest_field(bundle, built, served):
    p = copy_bundle(bundle, built[2], "unknown_field")
    _edit_manifest(p, lambda m: m["sparse_features"][0].update(wat=1))
    _refused(p, errors.CorruptionError, "wat", served)


def test_manifest_inconsistencies(bundle, built, served):
    p = copy_bundle(bundle, built[2], "inconsistent")
    _edit_manifest(p, lambda m: m["sparse_features"][0].update(table="nope"))
    _refused(p, errors.InvalidArgumentError, "unknown table 'nope'", served)
    shutil.rmtree(p)
    p = copy_bundle(bundle, built[2], "inconsistent")
    _edit_manifest(p, lambda m: m["tables"][1]["key_scheme"].update(m=71))
    _refused(p, errors.InvalidArgumentError, "sub-table 0", served)
    shutil.rmtree(p)
    p = copy_bundle(bundle, built[2], "inconsistent")
    _edit_manifest(p, lambda m: m["sparse_features"][0]["slices"][0].update(dense_input="pooled_9"))
    _refused(p, errors.InvalidArgumentError, "no input 'pooled_9'", served)
    shutil.rmtree(p)
    p = copy_bundle(bundle, built[2], "inconsistent")
    _edit_manifest(p, lambda m: m["sparse_features"][1]["slices"][0].update(dense_offset=3))
    _refused(p, errors.InvalidArgumentError, "do not tile", served)


@pytest.mark.parametrize("edit,message", [
    (lambda f: f["slices"][1].update(first_column=3), "overlapping slices"),
    (lambda f: f["slices"].pop(), "do not cover all 5 columns"),
    (lambda f: f["slices"][1].update(width=2), "outside its table's 5 columns"),
    (lambda f: f["slices"][0].update(width=-1), "outside its table's 5 columns"),
    (lambda f: f["slices"][1].update(dense_input=""), "feeds no dense input"),
])
def test_bad_pooled_slices(bundle, built, served, edit, message):
    # format version 2: a pooled [dim + 1] vector's columns split over two dense inputs
    p = copy_bundle(bundle, built[2], "slices")
    _edit_manifest(p, lambda m: edit(m["sparse_features"][0]))
    _refused(p, errors.InvalidArgumentError, message, served)
    shutil.rmtree(p)


def test_slices_need_format_version_2(bundle, built, served):
    p = copy_bundle(bundle, built[2], "slices_v1")
    _edit_manifest(p, lambda m: m.update(format_version=1))
    _refused(p, errors.InvalidArgumentError, "need format version 2", served)


def test_half_written_bundle_without_manifest(bundle, built, served):
    p = copy_bundle(bundle, built[2], ".half.tmp-1-abc")
    os.remove(p / "bundle.json")
    with pytest.raises(errors.RecstrataError):
        Model(str(p))
    assert_still_serves(served)


def test_truncated_dense_file(bundle, built, served):
    p = copy_bundle(bundle, built[2], "truncated")
    victim = max((f for f in bundle["manifest"]["files"]), key=lambda f: int(f["size"]))
    with open(p / victim["path"], "r+b") as fh:
        fh.truncate(int(victim["size"]) // 2)
    _refused(p, errors.CorruptionError, "damaged", served)
    os.remove(p / victim["path"])
    _refused(p, errors.CorruptionError, "missing", served)


def test_missing_store_table(bundle, built, served):
    p = copy_bundle(bundle, built[2], "nostoretable")
    _edit_manifest(p, lambda m: m["tables"][0]["subtables"][0].update(store_table="gone"))
    _refused(p, errors.CorruptionError, "no table 'gone'", served)


def test_corrupt_store_records_are_never_served(bundle, built, served):
    p = copy_bundle(bundle, built[2], "corrupt_store")
    data = [os.path.join(d, f) for d, _, fs in os.walk(p / "store") for f in fs
            if os.path.getsize(os.path.join(d, f)) > 4096]
    assert data
    for path in data:
        with open(path, "r+b") as fh:
            size = os.path.getsize(path)
            for off in range(1024, size - 64, 997):
                fh.seek(off)
                b = fh.read(1)
                fh.seek(off)
                fh.write(bytes([b[0] ^ 0x5A]))
    try:
        with Model(str(p), bundle_dram_capacity_bytes=4096) as m:
            f = good_feeds(64)
            f["uid"] = np.arange(64, dtype=np.int64) * 13
            m.run(f)
    except errors.CorruptionError as exc:
        assert "checksum" in str(exc).lower() or "corrupt" in str(exc).lower()
    else:
        pytest.fail("corrupted store records were served")
    assert_still_serves(served)


def test_interrupted_export_leaves_nothing_behind(built, monkeypatch):
    from recstrata.store import Table
    from recstrata.training import export as E

    model, _cfg, root = built

    def boom(self, *a, **k):
        raise RuntimeError("simulated crash while writing the store")

    monkeypatch.setattr(Table, "bulk_load", boom)   # the exporter writes through recstrata.store
    target = root / "interrupted"
    with pytest.raises(RuntimeError, match="simulated"):
        E.export_bundle(model, target)
    assert not target.exists()
    assert not [n for n in os.listdir(root) if n.startswith(".interrupted")]


def test_export_refuses_existing_target(bundle, built):
    from recstrata.training.export import export_bundle

    with pytest.raises(FileExistsError):
        export_bundle(built[0], bundle["path"])


def test_plain_savedmodel_still_works(built, tmp_path):
    """A directory without bundle.json is served as a plain SavedModel, as before."""
    import tensorflow as tf

    class M(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable([[2.0]])

        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def serve(self, x):
            return {"y": x @ self.w}

    m = M()
    tf.saved_model.save(m, str(tmp_path / "plain"), signatures={"serving_default": m.serve})
    with Model(str(tmp_path / "plain")) as served:
        np.testing.assert_allclose(served.run({"x": np.ones((2, 1), np.float32)})["y"], 2.0)


def test_manifest_is_the_shared_schema(bundle):
    """The exporter writes recstrata.bundle.Manifest (the schema the processor parses)."""
    from recstrata.bundle import format as F
    from recstrata.bundle import manifest as mf

    path = os.path.join(bundle["path"], F.MANIFEST_FILE)
    with open(path) as fh:
        on_disk = json.load(fh)
    m = mf.read(bundle["path"])                    # strict: unknown fields would raise
    assert isinstance(m, mf.Manifest)
    assert on_disk == mf.to_dict(m) == bundle["manifest"]
    assert (m.format, m.format_version, m.key_schema_version) == (
        F.FORMAT, F.FORMAT_VERSION, F.KEY_SCHEMA_VERSION)
    assert m.dense.dir == F.DENSE_DIR and m.store.dir == F.STORE_DIR
    assert all(st.rows > 0 for t in m.tables for st in t.subtables)   # int64, not strings
    assert sum(f.size for f in m.files) > 0
    # a field the schema does not have is refused, not dropped
    bad = dict(on_disk, surprise=1)
    with pytest.raises(Exception, match="surprise"):
        mf.from_json(json.dumps(bad))
