"""``bundle.json`` as a protobuf message.

The manifest is a ``recstrata.bundle.Manifest`` (manifest_pb2, generated from
the same manifest.proto the native reader parses), written with protobuf's
JSON printer: every field with its proto name, defaults included, 64-bit
integers as strings (the proto3 JSON mapping). :func:`to_dict` gives the same
view as a dict, which is what ``json.load`` of the file returns.
"""

from __future__ import annotations

import os

from google.protobuf import json_format

from recstrata.bundle.format import MANIFEST_FILE
from recstrata.bundle.manifest_pb2 import (  # noqa: F401  (re-exported message types)
    DenseFeature,
    Delta,
    DeltaApplied,
    DeltaTable,
    DenseStage,
    FileEntry,
    KeyScheme,
    Manifest,
    Output,
    PooledSlice,
    SparseFeature,
    StoreSpec,
    SubTable,
    Table,
)

__all__ = ["Manifest", "to_json", "to_dict", "from_json", "read", "write"]

_PRINT = {"preserving_proto_field_name": True, "always_print_fields_with_no_presence": True}


def to_json(m: Manifest) -> str:
    """The file's text: protobuf JSON, one field per line."""
    return json_format.MessageToJson(m, indent=1, **_PRINT) + "\n"


def to_dict(m: Manifest) -> dict:
    """The manifest as the dict ``json.load`` of its file gives."""
    return json_format.MessageToDict(m, **_PRINT)


def from_json(text: str) -> Manifest:
    """Parses a manifest; unknown fields are an error (json_format.ParseError)."""
    return json_format.Parse(text, Manifest())


def read(bundle_dir: str | os.PathLike) -> Manifest:
    """The manifest of the bundle at ``bundle_dir``."""
    with open(os.path.join(os.fspath(bundle_dir), MANIFEST_FILE), encoding="utf-8") as fh:
        return from_json(fh.read())


def write(bundle_dir: str | os.PathLike, m: Manifest) -> str:
    """Writes ``bundle_dir``/bundle.json durably (temporary file, fsync, rename); returns its path."""
    path = os.path.join(os.fspath(bundle_dir), MANIFEST_FILE)
    with open(path + ".part", "w", encoding="utf-8") as fh:
        fh.write(to_json(m))
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(path + ".part", path)
    return path
