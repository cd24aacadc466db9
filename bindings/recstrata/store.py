"""The tiered embedding store: DRAM tier over an optional SSD hash tier.

    from recstrata.store import Store
    with Store("/data/emb", tiers="dram+ssd", dram_capacity_bytes=1 << 30) as st:
        t = st.create_table("user", dim=16)
        t.bulk_load(keys, matrix)           # int64 [n], float32 [n, 16]
        rows, found = t.lookup(batch_keys)  # float32 [m, 16], bool [m]

Options are the JSON keys of rs_store_open (docs/store.md). Arrays cross the
boundary without copies when they already are C-contiguous int64 / float32;
otherwise they are converted once. Native calls release the GIL, so lookups
from many Python threads run in parallel.

Threading: a Store and its Tables may be used from any number of threads;
``close()`` must not overlap other calls (the context manager closes on exit).

Damage on disk fails the open with CorruptionError naming file and offset;
``repair(path)`` (or ``Store(path, recovery="repair")``) salvages the valid
records and reports what it left out.
"""

from __future__ import annotations

import json
import weakref
from typing import Any

import numpy as np

from recstrata._native import check, ffi, lib, take_string
from recstrata.errors import FailedPreconditionError

__all__ = ["Store", "Table", "repair"]


def _keys(keys) -> np.ndarray:
    return np.ascontiguousarray(keys, dtype=np.int64).reshape(-1)


class Table:
    """One table of a Store (fixed-dimension float32 rows keyed by int64)."""

    def __init__(self, store: "Store", handle, name: str):
        self._store = store
        self._h = handle
        self.name = name
        self.dim = int(lib().rs_table_dim(handle))
        self._lookup_fn = lib().rs_table_lookup

    def _handle(self):
        self._store._check_open()
        return self._h

    def lookup(self, keys, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rows of ``keys`` as float32 [n, dim] and a bool ``found`` mask.

        Missing keys get the table's default vector. ``out`` may be a
        C-contiguous float32 [n, dim] array to fill in place. This is the hot
        path: a 1-D C-contiguous int64 ``keys`` array is passed without a copy
        and the call allocates only ``found`` (and ``out`` when not given).
        """
        k = keys
        if not (type(k) is np.ndarray and k.dtype == np.int64 and k.ndim == 1
                and k.flags.c_contiguous):
            k = _keys(k)
        n = k.shape[0]
        if out is None:
            out = np.empty((n, self.dim), dtype=np.float32)
        elif out.dtype != np.float32 or out.shape != (n, self.dim) or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous float32 array of shape {(n, self.dim)}")
        found = np.empty(n, dtype=np.bool_)
        if self._store._h is None:
            self._store._check_open()
        fb = ffi.from_buffer
        if self._store._remote:
            # A remote tier's failure is not repeatable for free (timeouts, counted errors):
            # collect the message from the one call.
            err = ffi.new("rs_error**")
            check(self._lookup_fn(self._h, fb("int64_t[]", k), n, fb("float[]", out),
                                  fb("uint8_t[]", found), err), err)
            return out, found
        code = self._lookup_fn(self._h, fb("int64_t[]", k), n, fb("float[]", out),
                               fb("uint8_t[]", found), ffi.NULL)
        if code:
            # Lookups are read-only: repeat the call to collect the message.
            err = ffi.new("rs_error**")
            check(self._lookup_fn(self._h, fb("int64_t[]", k), n, fb("float[]", out),
                                  fb("uint8_t[]", found), err) or code, err)
        return out, found

    def _rows(self, keys, rows):
        k = _keys(keys)
        r = np.ascontiguousarray(rows, dtype=np.float32)
        if r.ndim == 1 and self.dim and r.size == k.shape[0] * self.dim:
            r = r.reshape(k.shape[0], self.dim)
        if r.shape != (k.shape[0], self.dim):
            raise ValueError(f"rows must have shape {(k.shape[0], self.dim)}, got {r.shape}")
        return k, r

    def upsert(self, keys, rows) -> None:
        """Inserts or overwrites rows as one committed batch."""
        k, r = self._rows(keys, rows)
        err = ffi.new("rs_error**")
        check(lib().rs_table_upsert(self._handle(), ffi.from_buffer("int64_t[]", k), k.shape[0],
                                    ffi.from_buffer("float[]", r), err), err)

    def bulk_load(self, keys, matrix) -> None:
        """Loads many rows as one committed batch through sequential writes."""
        k, r = self._rows(keys, matrix)
        err = ffi.new("rs_error**")
        check(lib().rs_table_bulk_load(self._handle(), ffi.from_buffer("int64_t[]", k),
                                       k.shape[0], ffi.from_buffer("float[]", r), err), err)

    def delete(self, keys) -> None:
        """Deletes keys as one committed batch (absent keys are ignored)."""
        k = _keys(keys)
        err = ffi.new("rs_error**")
        check(lib().rs_table_delete(self._handle(), ffi.from_buffer("int64_t[]", k),
                                    k.shape[0], err), err)

    def stats(self) -> dict[str, Any]:
        return self._store.stats()["tables"][self.name]

    def __repr__(self) -> str:
        return f"Table({self.name!r}, dim={self.dim})"


class Store:
    """A store directory (``path=None``: a volatile in-memory store)."""

    def __init__(self, path: str | None = None, **options: Any):
        self.path = None if path is None else str(path)
        self._remote = options.get("tiers") == "dram+redis"
        out = ffi.new("rs_store**")
        err = ffi.new("rs_error**")
        opts = json.dumps(options).encode() if options else ffi.NULL
        dir_arg = self.path.encode() if self.path is not None else ffi.NULL
        check(lib().rs_store_open(dir_arg, opts, out, err), err)
        self._h = out[0]
        self._tables: dict[str, Table] = {}
        self._finalizer = weakref.finalize(self, lib().rs_store_close, self._h)

    def _check_open(self) -> None:
        if self._h is None:
            raise FailedPreconditionError("store is closed", 4)

    def create_table(self, name: str, dim: int, default_value=None,
                     dram_capacity_bytes: int | None = None, dense_keys: int = 0) -> Table:
        """Creates table ``name`` of ``dim``-wide float32 rows.

        dense_keys: keys ``0 .. dense_keys-1`` get a direct index (8 bytes of memory per key,
        allocated up front) instead of the hash index (32-64 bytes per present key); meant for
        tables keyed by row index. Other keys still work.
        """
        self._check_open()
        opts: dict[str, Any] = {}
        if dense_keys:
            opts["dense_keys"] = int(dense_keys)
        if default_value is not None:
            opts["default_value"] = [float(x) for x in np.asarray(default_value).reshape(-1)]
        if dram_capacity_bytes is not None:
            opts["dram_capacity_bytes"] = int(dram_capacity_bytes)
        out = ffi.new("rs_table**")
        err = ffi.new("rs_error**")
        check(lib().rs_store_create_table(self._h, name.encode(), int(dim),
                                          json.dumps(opts).encode() if opts else ffi.NULL,
                                          out, err), err)
        t = Table(self, out[0], name)
        self._tables[name] = t
        return t

    def table(self, name: str) -> Table:
        self._check_open()
        if name in self._tables:
            return self._tables[name]
        out = ffi.new("rs_table**")
        err = ffi.new("rs_error**")
        check(lib().rs_store_table(self._h, name.encode(), out, err), err)
        t = Table(self, out[0], name)
        self._tables[name] = t
        return t

    def table_names(self) -> list[str]:
        self._check_open()
        out = ffi.new("char**")
        err = ffi.new("rs_error**")
        check(lib().rs_store_table_names_json(self._h, out, err), err)
        return json.loads(take_string(out[0]))

    def flush(self) -> None:
        self._check_open()
        err = ffi.new("rs_error**")
        check(lib().rs_store_flush(self._h, err), err)

    def compact(self) -> None:
        self._check_open()
        err = ffi.new("rs_error**")
        check(lib().rs_store_compact(self._h, err), err)

    def stats(self) -> dict[str, Any]:
        self._check_open()
        out = ffi.new("char**")
        err = ffi.new("rs_error**")
        check(lib().rs_store_stats_json(self._h, out, err), err)
        return json.loads(take_string(out[0]))

    def remote_pointer(self, op: str = "get", arg: str = "") -> dict[str, Any]:
        """Tiers "dram+redis": the model's serving pointer (rs_store_remote_pointer).

        op: "get", "publish" (this store's key space becomes serving), "rollback" (serving and
        backup swap), "drop" (deletes key space ``arg``) or "bind_base" (binds this store's key
        space to the bundle whose bundle.json has CRC-32C ``arg``, 8 hex digits; the export does
        it, so the bundle's deltas are applied to the space once). Returns {"serving", "backup",
        "active"}.
        """
        self._check_open()
        out = ffi.new("char**")
        err = ffi.new("rs_error**")
        check(lib().rs_store_remote_pointer(self._h, op.encode(), arg.encode(), out, err), err)
        return json.loads(take_string(out[0]))

    def close(self) -> None:
        """Closes the store (idempotent). Tables become unusable."""
        if self._h is not None:
            self._finalizer()
            self._h = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def repair(path, **options: Any) -> dict[str, Any]:
    """Repairs the store at ``path`` (rs_store_repair) and returns the report.

    Every record that passes its checksum is kept; damaged files are rewritten
    without their bad records (the damaged file is kept as ``*.corrupt``).
    ``report["dropped"]`` lists each range left out as a dict with ``table``,
    ``file``, ``offset``, ``bytes``, ``records`` and ``reason``; the rest of
    the report is the stats of the repairing open. The store must not be open.
    """
    out = ffi.new("char**")
    err = ffi.new("rs_error**")
    opts = json.dumps(options).encode() if options else ffi.NULL
    check(lib().rs_store_repair(str(path).encode(), opts, out, err), err)
    return json.loads(take_string(out[0]))
