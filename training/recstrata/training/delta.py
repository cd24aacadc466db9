"""Delta export: the embedding rows that changed since the previous delta, for a served bundle.

A delta (docs/bundle-format.md, "Deltas") is ``BUNDLE/deltas/<seq>/``::

    delta.json        recstrata.bundle.Delta (protobuf JSON), written last
    <store_table>.rows   per changed sub-table: int64 row keys [n], then float32 rows [n, dim]

``BUNDLE`` is one served version (``<model base path>/<version>/``); the host applies the deltas
of the version it serves, in sequence order, into that version's store in place (docs/host.md).

Contracts
- Diff, not increments: a delta holds the new absolute values of every row whose bytes differ
  from the previous state (the base bundle's tables, then each delta before it), so applying a
  delta twice is harmless (the host re-applies one interrupted by a crash).
- Rows are keyed exactly as the bundle stores them: sub-table ``j`` of table ``t`` is store table
  ``SubTable.store_table`` of bundle.json and the row key is the row index
  (docs/embedding-keys.md); a delta never adds rows.
- Atomic publication: everything goes to a hidden sibling ``deltas/.<seq>.tmp-...``, is fsynced,
  ``delta.json`` is written last, and the directory is renamed to ``deltas/<seq>`` (then the
  parent is fsynced). A reader sees no delta or a whole one.
- Checksums are CRC-32C (the library's ``rs_crc32c``, the store's own checksum), over each row
  file; the base is named by its version number and the CRC-32C of its ``bundle.json``.
- The dense stage is optional: ``write(..., dense=True)`` (or ``"changed"``: only when the dense
  weights differ from the last ones written) adds ``dense/``, a SavedModel of the model's dense
  stage in the bundle's layout, with every file's size and CRC-32C in ``dense_files``. The host
  loads and warms it beside the served one, writes the rows, then swaps it in whole, keeping
  the store (docs/host.md, "Deltas").
- Memory: the writer keeps one copy of every table (the state of the previous delta) to diff
  against.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from typing import Any, Mapping

import numpy as np

from recstrata.bundle import manifest as mf
from recstrata.checksum import crc32c

DELTA_FORMAT = "recstrata.delta"
DELTA_FORMAT_VERSION = 1
DELTAS_DIR = "deltas"
DELTA_MANIFEST = "delta.json"

__all__ = ["DeltaWriter", "DeltaHook", "crc32c", "list_deltas", "write_delta_from_checkpoints",
           "DELTAS_DIR", "DELTA_MANIFEST"]


def _fsync(path: str, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_deltas(bundle_dir: str | os.PathLike) -> list[int]:
    """Sequence numbers of the complete deltas of a bundle version, ascending."""
    root = os.path.join(os.fspath(bundle_dir), DELTAS_DIR)
    out = []
    if os.path.isdir(root):
        for name in os.listdir(root):
            if name.isdigit() and not name.startswith("0") and \
                    os.path.isfile(os.path.join(root, name, DELTA_MANIFEST)):
                out.append(int(name))
    return sorted(out)


def _subtables(model) -> dict[str, np.ndarray]:
    """{(table name, j): float32 array} of a RecModel's embedding sub-tables."""
    out = {}
    for tname, t in model.embedding_tables().items():
        for j, arr in enumerate(t["subtables"]):
            out[(tname, j)] = np.array(arr, dtype=np.float32, copy=True)
    return out


class DeltaWriter:
    """Writes successive deltas of one bundle version.

    ``bundle_dir``: the served version directory (holds bundle.json). ``base``: the table state
    the first delta is diffed against: a RecModel (its current tables), a ``{(table, j): array}``
    mapping, or None for the served state: the bundle's own store plus the deltas on disk it does
    not hold yet (the store must not be open elsewhere, i.e.
    not while a host serves it). ``base_version``: the version number (default: the directory's
    name). Sequence numbers continue after the newest delta on disk.
    """

    def __init__(self, bundle_dir: str | os.PathLike, base: Any = None, *,
                 base_version: int | None = None):
        self.bundle_dir = os.path.abspath(os.fspath(bundle_dir))
        self.manifest = mf.read(self.bundle_dir)
        with open(os.path.join(self.bundle_dir, "bundle.json"), "rb") as fh:
            self.base_crc = f"{crc32c(fh.read()):08x}"
        if base_version is None:
            name = os.path.basename(self.bundle_dir.rstrip("/"))
            if not name.isdigit():
                raise ValueError(f"{self.bundle_dir}: the directory name is not a version number; "
                                 "pass base_version")
            base_version = int(name)
        self.base_version = int(base_version)
        # (table name, j) -> (store table, rows, dim)
        self.targets = {}
        for t in self.manifest.tables:
            if t.key_scheme.kind in ("freq_aware", "dynamic"):
                raise NotImplementedError(
                    f"{self.bundle_dir}: table {t.name} is {t.key_scheme.kind}: deltas of "
                    f"{t.key_scheme.kind} tables are not written yet (export a new version)")
            for j, st in enumerate(t.subtables):
                self.targets[(t.name, j)] = (st.store_table, int(st.rows), int(st.dim))
        if base is None:
            self.state = self._read_store()
        elif hasattr(base, "embedding_tables"):
            self.state = _subtables(base)
        else:
            self.state = {k: np.array(v, dtype=np.float32, copy=True) for k, v in base.items()}
        self._check_shapes(self.state, "base")
        existing = list_deltas(self.bundle_dir)
        self.last_seq = existing[-1] if existing else 0
        # digest of the dense weights last published (None: unknown, e.g. a tables mapping)
        self.dense_digest = _dense_digest(base) if hasattr(base, "dense_stage") else None

    def _read_store(self) -> dict:
        """The served state: the bundle's store, then every delta on disk it does not hold yet
        (newer than its applied marker), in order."""
        import json

        from google.protobuf import json_format

        from recstrata.store import Store

        out = {}
        store_dir = os.path.join(self.bundle_dir, self.manifest.store.dir or "store")
        with Store(store_dir, create_if_missing=False) as st:
            for key, (name, rows, dim) in self.targets.items():
                vals, found = st.table(name).lookup(np.arange(rows, dtype=np.int64))
                if not np.all(found):
                    raise ValueError(f"store table {name} lacks rows")
                out[key] = np.array(vals, dtype=np.float32)
        applied = 0
        marker = os.path.join(store_dir, "DELTAS_APPLIED")
        if os.path.exists(marker):
            with open(marker, encoding="utf-8") as fh:
                applied = int(json.load(fh).get("applied_sequence", 0))
        by_name = {name: key for key, (name, _r, _d) in self.targets.items()}
        for seq in list_deltas(self.bundle_dir):
            if seq <= applied:
                continue
            ddir = os.path.join(self.bundle_dir, DELTAS_DIR, str(seq))
            with open(os.path.join(ddir, DELTA_MANIFEST), encoding="utf-8") as fh:
                d = json_format.Parse(fh.read(), mf.Delta())
            for t in d.tables:
                with open(os.path.join(ddir, t.file), "rb") as fh:
                    data = fh.read()
                if f"{crc32c(data):08x}" != t.crc32c:
                    raise ValueError(f"delta {seq}: {t.file} fails its checksum")
                n = int(t.rows)
                keys = np.frombuffer(data[:8 * n], dtype="<i8")
                vals = np.frombuffer(data[8 * n:], dtype="<f4").reshape(n, int(t.dim))
                out[by_name[t.store_table]][keys] = vals
        return out

    def _check_shapes(self, tables: Mapping, what: str) -> None:
        if set(tables) != set(self.targets):
            raise ValueError(f"{what} tables {sorted(tables)} do not match the bundle's "
                             f"{sorted(self.targets)}")
        for key, (name, rows, dim) in self.targets.items():
            shape = np.shape(tables[key])
            if tuple(shape) != (rows, dim):
                raise ValueError(f"{what} table {key[0]} sub-table {key[1]} is {shape}, the bundle's "
                                 f"store table {name} is [{rows}, {dim}]")

    def write(self, new: Any, *, training_step: int = 0, created_unix_ms: int | None = None,
              write_empty: bool = False, dense: bool | str = False) -> dict | None:
        """Diffs ``new`` (a RecModel or a tables mapping) against the previous state and
        publishes the changed rows as the next delta. ``dense``: True includes ``new``'s dense
        stage (``new`` must be a RecModel), "changed" includes it when its weights differ from
        the last ones published (or are unknown). Returns a summary dict (``sequence``, ``path``,
        ``rows``, ``bytes``, ``seconds``, ``dense``), or None when nothing changed (unless
        ``write_empty``)."""
        if dense not in (False, True, "changed"):
            raise ValueError(f"dense must be False, True or 'changed', got {dense!r}")
        if dense and not hasattr(new, "dense_stage"):
            raise ValueError("a delta's dense stage comes from a RecModel: pass the model as `new`")
        digest = _dense_digest(new) if dense else None
        with_dense = dense is True or (dense == "changed" and digest != self.dense_digest)
        t0 = time.perf_counter()
        created = int(time.time() * 1000) if created_unix_ms is None else int(created_unix_ms)
        tables = _subtables(new) if hasattr(new, "embedding_tables") else \
            {k: np.asarray(v, dtype=np.float32) for k, v in new.items()}
        self._check_shapes(tables, "new")
        changed = {}
        for key in self.targets:
            old, cur = self.state[key], tables[key]
            # bytewise: -0.0 vs 0.0 and NaN payloads count as changes
            diff = np.any(old.view(np.uint32) != cur.view(np.uint32), axis=1)
            idx = np.flatnonzero(diff)
            if idx.size:
                changed[key] = (idx.astype(np.int64), np.ascontiguousarray(cur[idx]))
        if not changed and not write_empty and not with_dense:
            return None
        seq = max(self.last_seq, *(list_deltas(self.bundle_dir) or [0])) + 1
        root = os.path.join(self.bundle_dir, DELTAS_DIR)
        os.makedirs(root, exist_ok=True)
        tmp = os.path.join(root, f".{seq}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.makedirs(tmp)
        nbytes = 0
        nrows = 0
        try:
            delta = mf.Delta(format=DELTA_FORMAT, format_version=DELTA_FORMAT_VERSION,
                             sequence=seq, base_version=self.base_version,
                             base_manifest_crc32c=self.base_crc,
                             producer=f"recstrata {_version()} export-delta",
                             created_unix_ms=created, training_step=int(training_step))
            for key, (idx, rows) in sorted(changed.items()):
                name, _n, dim = self.targets[key]
                data = idx.astype("<i8").tobytes() + rows.astype("<f4").tobytes()
                fname = f"{name}.rows"
                with open(os.path.join(tmp, fname), "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                delta.tables.add(store_table=name, dim=dim, rows=int(idx.size), file=fname,
                                 size=len(data), crc32c=f"{crc32c(data):08x}")
                nbytes += len(data)
                nrows += int(idx.size)
            if with_dense:
                nbytes += self._write_dense(new, tmp, delta)
            text = mf.to_json(delta)
            with open(os.path.join(tmp, DELTA_MANIFEST), "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            _fsync(tmp, directory=True)
            final = os.path.join(root, str(seq))
            if os.path.exists(final):
                raise FileExistsError(f"{final} exists")
            os.rename(tmp, final)
            _fsync(root, directory=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for key, (idx, rows) in changed.items():
            self.state[key][idx] = rows
        self.last_seq = seq
        if with_dense:
            self.dense_digest = digest
        return {"sequence": seq, "path": final, "rows": nrows, "bytes": nbytes,
                "seconds": time.perf_counter() - t0, "created_unix_ms": created,
                "dense": with_dense}

    def _write_dense(self, model, tmp: str, delta) -> int:
        """Saves the model's dense stage as ``tmp``/dense in the layout the bundle was exported
        with; lists its files in ``delta``. Returns the bytes written."""
        import tensorflow as tf

        from recstrata.bundle.format import DENSE_DIR, SIGNATURE
        from recstrata.training import export as ex

        inputs = {sl.dense_input for f in self.manifest.sparse_features for sl in f.slices}
        inputs |= {f.dense_input for f in self.manifest.sparse_features if f.dense_input}
        layout = ("blocks" if ex.EMBEDDINGS in inputs else
                  "concat" if ex.POOLED in inputs else "per_feature")
        served = os.path.join(self.bundle_dir, self.manifest.dense.dir or DENSE_DIR)
        frozen = not any(n.startswith("variables.data")
                         for n in os.listdir(os.path.join(served, "variables"))
                         if os.path.isdir(os.path.join(served, "variables")))
        module, concrete = ex._dense_module(model, layout)
        out = os.path.join(tmp, DENSE_DIR)
        if frozen:
            ex._save_frozen(concrete, out)
        else:
            tf.saved_model.save(module, out, signatures={SIGNATURE: concrete})
        ex._fsync_tree(out)
        delta.dense.dir = DENSE_DIR
        delta.dense.signature = SIGNATURE
        total = 0
        for e in ex._file_list(tmp, DENSE_DIR):
            with open(os.path.join(tmp, e.path), "rb") as fh:
                e.crc32c = f"{crc32c(fh.read()):08x}"
            delta.dense_files.append(e)
            total += e.size
        return total


class DeltaHook:
    """A Trainer step hook (``trainer.step_hooks.append(hook)``) writing a delta of a served
    bundle every ``every_steps`` steps and/or ``every_seconds`` seconds (whichever comes first),
    and once more from :meth:`flush`. The first delta is diffed against the model as the hook
    finds it at its first call (the bundle must have been exported from that state, e.g. from
    the checkpoint training resumes from)."""

    def __init__(self, bundle_dir: str | os.PathLike, *, every_steps: int = 0,
                 every_seconds: float = 0.0, base_version: int | None = None,
                 dense: bool | str = False, log=None):
        if every_steps <= 0 and every_seconds <= 0:
            raise ValueError("DeltaHook needs every_steps > 0 or every_seconds > 0")
        self.bundle_dir = bundle_dir
        self.every_steps = int(every_steps)
        self.every_seconds = float(every_seconds)
        self.base_version = base_version
        self.dense = dense  # DeltaWriter.write's `dense`
        self.log = log or (lambda s: None)
        self.writer: DeltaWriter | None = None
        self.written: list[dict] = []
        self._last_step = 0
        self._last_time = time.monotonic()

    def start(self, model) -> None:
        """Takes the base state now (called by the first step otherwise: after it)."""
        self.writer = DeltaWriter(self.bundle_dir, model, base_version=self.base_version)
        self._last_time = time.monotonic()

    def __call__(self, trainer) -> None:
        if self.writer is None:
            raise RuntimeError("DeltaHook.start(model) must run before training (the base state)")
        step = trainer.global_step
        due = (self.every_steps and step - self._last_step >= self.every_steps) or \
            (self.every_seconds and time.monotonic() - self._last_time >= self.every_seconds)
        if due:
            self._write(trainer.model, step)

    def flush(self, model, step: int = 0) -> dict | None:
        return self._write(model, step)

    def _write(self, model, step: int) -> dict | None:
        info = self.writer.write(model, training_step=step, dense=self.dense)
        self._last_step = step
        self._last_time = time.monotonic()
        if info:
            self.written.append(info)
            self.log(f"delta {info['sequence']}: {info['rows']} rows"
                     f"{' and the dense stage' if info['dense'] else ''} at step {step}")
        return info


def write_delta_from_checkpoints(bundle_dir: str | os.PathLike, old_checkpoint: str | None,
                                 new_checkpoint: str, *, base_version: int | None = None,
                                 training_step: int = 0) -> dict | None:
    """One delta of ``bundle_dir``: the rows of ``new_checkpoint`` that differ from
    ``old_checkpoint`` (the checkpoint the previous delta, or the bundle, was made from; None:
    the bundle's own store, which must not be open elsewhere)."""
    from recstrata.training.trainer import load_trained

    base = None
    if old_checkpoint is not None:
        base, _cfg = load_trained(os.fspath(old_checkpoint))
    writer = DeltaWriter(bundle_dir, base, base_version=base_version)
    new, _cfg = load_trained(os.fspath(new_checkpoint))
    return writer.write(new, training_step=training_step)


def _dense_digest(model) -> str:
    """A digest of a model's dense-stage weights (tells whether they changed)."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for w in model.dense_stage.weights:
        h.update(np.ascontiguousarray(np.asarray(w.numpy() if hasattr(w, "numpy") else w)).tobytes())
    return h.hexdigest()


def _version() -> str:
    try:
        import recstrata

        return recstrata.__version__
    except Exception:  # pragma: no cover
        return "?"
