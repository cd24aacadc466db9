"""A bundle whose store is incomplete or altered is refused at open, never served.

The store's MANIFEST holds the clean-close record the export left: per table its row
count and every data file's size and CRC-32C. Every open of a bundle requires that
record and checks the file set, the sizes and the row counts (the bundle manifest's
sub-table rows too); serving option verify "full" (`recstrata info --verify`) also
compares whole-file CRC-32Cs. One test per kind of damage.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from recstrata import errors  # noqa: E402
from recstrata.processor import Model  # noqa: E402

CONFIG = {
    "name": "integ", "label": "label",
    "sparse": [
        {"name": "uid", "dim": 4, "embedding": {"kind": "plain", "rows": 1000}},
        {"name": "iid", "dim": 4, "embedding": {"kind": "plain", "rows": 1000}},
        {"name": "sid", "dtype": "string", "dim": 4,
         "embedding": {"kind": "multihash", "strategy": "qr", "vocab": 5000, "m": 70}},
    ],
    "dense": [{"name": "d0"}],
    "model": {"type": "wdl", "hidden": [8]},
    "data": {"format": "synthetic", "synthetic": {"num_train": 10, "num_eval": 10}},
}


def feeds(n=8):
    return {"uid": np.arange(n, dtype=np.int64) * 7, "iid": np.arange(n, dtype=np.int64) * 5,
            "sid": np.array([f"s{i}" for i in range(n)], dtype=object),
            "dense": np.ones((n, 1), np.float32)}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """Two exports of the same architecture with different weights."""
    from recstrata.training.export import export_bundle
    from recstrata.training.models import RecModel
    from recstrata.training.spec import parse_config

    root = tmp_path_factory.mktemp("integ")
    out = []
    for i in range(2):
        model = RecModel(parse_config(CONFIG), name="rec_model")
        model.build_with_dummy()
        if i:  # other weights, same shapes
            for v in model.trainable_variables:
                v.assign(v + 0.5)
        out.append(Path(export_bundle(model, root / f"b{i}", tiers="dram+ssd",
                                      dram_fraction=0.1)["path"]))
    return out


@pytest.fixture
def bundle(bundles, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(bundles[0], dst)
    return dst


def data_files(bundle: Path) -> list[Path]:
    files = sorted((bundle / "store").glob("t*/*.dat"))
    assert len(files) >= 3
    return files


def refused(path, exc=errors.CorruptionError, match=None, **config):
    with pytest.raises(exc, match=match):
        Model(str(path), **config).close()


def test_intact_bundle_opens_and_serves(bundles, bundle):
    with Model(str(bundle), verify="full") as m:
        out = m.run(feeds())["prob"]
    assert np.isfinite(out).all()
    # Serving writes nothing: the record stays and the files are unchanged.
    doc = json.loads((bundle / "store" / "MANIFEST").read_text())
    assert "clean_close" in doc
    for a, b in zip(data_files(bundle), data_files(bundles[0])):
        assert a.read_bytes() == b.read_bytes()


def test_deleted_table_directory_is_refused(bundle):
    shutil.rmtree(data_files(bundle)[0].parent)
    refused(bundle, match="missing")


def test_deleted_data_file_is_refused(bundle):
    data_files(bundle)[1].unlink()
    refused(bundle, match="missing")


def test_data_file_truncated_to_10_bytes_is_refused(bundle):
    with open(data_files(bundle)[0], "r+b") as f:
        f.truncate(10)
    refused(bundle, match="shorter than its header")


def test_short_table_is_refused(bundle):
    f = data_files(bundle)[2]
    rec = int.from_bytes(f.read_bytes()[40:44], "little")
    with open(f, "r+b") as fh:  # whole records gone: every remaining record is valid
        fh.truncate(f.stat().st_size - 3 * rec)
    refused(bundle, match="clean close recorded")


def test_swapped_files_of_two_tables_are_refused(bundle):
    a, b = data_files(bundle)[0], data_files(bundle)[1]
    tmp = a.with_suffix(".swap")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    refused(bundle, match="does not belong|clean close recorded")


def test_file_swapped_with_another_exports_is_refused_by_full_verify(bundles, bundle):
    # Same architecture, same table ids, sizes and row counts, valid records:
    # only the content differs, which the whole-file CRC-32C catches.
    ours = data_files(bundle)[0]
    theirs = bundles[1] / ours.relative_to(bundle)
    assert theirs.stat().st_size == ours.stat().st_size
    assert theirs.read_bytes() != ours.read_bytes()
    shutil.copyfile(theirs, ours)
    refused(bundle, match="whole-file CRC", verify="full")

    from recstrata.cli import main

    assert main(["info", str(bundle), "--verify"]) == 1
    assert main(["info", str(bundles[0]), "--verify"]) == 0


def test_store_without_clean_close_record_is_refused(bundle):
    m = bundle / "store" / "MANIFEST"
    doc = json.loads(m.read_text())
    doc.pop("clean_close")
    m.write_text(json.dumps(doc))
    before = sorted((p.name, p.stat().st_size) for p in data_files(bundle))
    refused(bundle, match="not closed cleanly")
    assert sorted((p.name, p.stat().st_size) for p in data_files(bundle)) == before


def test_store_rewritten_with_fewer_rows_is_refused(bundle):
    # A consistent store (closed cleanly again) that no longer holds every
    # row the bundle manifest lists: the bundle's own row count catches it.
    from recstrata.store import Store

    doc = json.loads((bundle / "bundle.json").read_text())
    name = doc["tables"][0]["subtables"][0]["store_table"]
    with Store(bundle / "store") as s:
        s.table(name).delete([3])
    refused(bundle, match="rows, the manifest says")


def test_missing_store_manifest_is_refused(bundle):
    (bundle / "store" / "MANIFEST").unlink()
    refused(bundle, match="store is missing")


def test_bundle_exported_before_format_2_is_refused_as_incompatible(bundle):
    m = bundle / "store" / "MANIFEST"
    doc = json.loads(m.read_text())
    doc["format_version"] = 1
    doc.pop("clean_close")
    m.write_text(json.dumps(doc))
    refused(bundle, errors.IncompatibleError, match="version 1")
