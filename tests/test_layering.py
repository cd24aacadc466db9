"""The folders of processor/src are layers that include only downwards.

The order is stated in docs/architecture.md ("Layers"); this test reads every
`#include "..."` under processor/src and fails on an include of a layer above
the file's own, of a sibling layer of the same rank, or of an unknown folder.
"""
from __future__ import annotations

import pathlib
import re
import sys

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "processor" / "src"

# layer -> rank; same rank = independent (may not include each other).
RANK = {"base": 0, "store": 1, "sched": 1, "core": 2, "bundle": 3, "wire": 3,
        "host": 4, "api": 5, "compat": 6, "tfops": 6}
# What a layer may include besides lower ranks' headers: nothing, except that
# compat and tfops see only the public C ABI (and their own headers).
ONLY_PUBLIC = {"compat", "tfops"}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def project_includes(path: pathlib.Path) -> list[str]:
    """Quoted includes that name one of our layers (generated protobuf code,
    TensorFlow and abseil headers are outside the layering)."""
    found = INCLUDE.findall(path.read_text(errors="replace"))
    return [inc for inc in found if inc.split("/", 1)[0] in RANK or inc.split("/", 1)[0] not in
            ("tensorflow", "absl", "google", "recstrata", "recstrata.h") and "/" in inc]


def violations() -> list[str]:
    bad = []
    for path in sorted(SRC.rglob("*")):
        if path.suffix not in (".h", ".cc"):
            continue
        layer = path.relative_to(SRC).parts[0]
        if layer not in RANK:
            bad.append(f"{path.relative_to(SRC)}: folder {layer!r} has no rank in the layer table")
            continue
        for inc in project_includes(path):
            target = inc.split("/", 1)[0]
            if target not in RANK:
                bad.append(f"{path.relative_to(SRC)}: includes {inc!r}, which is in no layer")
            elif layer in ONLY_PUBLIC and target != layer:
                bad.append(f"{path.relative_to(SRC)}: {layer} may include only recstrata.h, not {inc!r}")
            elif target != layer and RANK[target] >= RANK[layer]:
                bad.append(f"{path.relative_to(SRC)} ({layer}, rank {RANK[layer]}) includes {inc!r} "
                           f"({target}, rank {RANK[target]})")
    return bad


def test_includes_point_down_only():
    assert SRC.is_dir()
    assert violations() == []


def test_checker_sees_a_violation(tmp_path, monkeypatch):
    # The checker itself must be able to fail: an upward include in a copy of
    # the tree is reported.
    fake = tmp_path / "src"
    (fake / "core").mkdir(parents=True)
    (fake / "wire").mkdir()
    (fake / "core" / "x.cc").write_text('#include "wire/codec.h"\n#include "base/status.h"\n')
    (fake / "wire" / "codec.h").write_text('#include "core/x.h"\n')
    monkeypatch.setattr(sys.modules[__name__], "SRC", fake)
    found = violations()
    assert any("core/x.cc" in v and "wire/codec.h" in v for v in found), found
    assert not any("wire/codec.h (wire" in v for v in found), found


@pytest.mark.parametrize("layer", sorted(RANK))
def test_documented_order_matches(layer):
    doc = (SRC.parents[1] / "docs" / "architecture.md").read_text()
    assert f"`{layer}`" in doc, f"layer {layer} is not in docs/architecture.md's layer table"
