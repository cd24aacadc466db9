"""Streaming input: sources (synthetic, Criteo TSV, generic CSV/TSV) -> padded worker batches.

Exactly-once contract (docs/training.md, "Distribution"): the examples of a split form one
ordered stream (example index = position in the stream: the data line number across the train
files, or the synthetic example number). The stream is cut into *global batches* of
``G = per_replica * replicas_per_worker * num_workers`` consecutive examples. Worker ``w`` takes
rows ``[w*Bw, (w+1)*Bw)`` of every global batch (``Bw = per_replica * replicas_per_worker``)
and its local replica ``r`` takes rows ``[r*per_replica, (r+1)*per_replica)`` of that. The last
global batch is padded with examples of weight 0 (index -1), so every worker runs the same
number of steps, nothing is dropped and nothing is seen twice. Bad rows keep their slot with
weight 0 (they are counted, or raise with ``on_bad_row: fail``), so workers agree on the cut
without parsing each other's rows: a worker only parses its own slice.

Batches are dicts of numpy arrays: ``<feature>`` int64 ids ``[Bw, max_values]``,
``<feature>/len`` int32 ``[Bw]`` (number of valid values, 0 = missing), ``dense`` float32
``[Bw, num_dense]`` raw values (NaN = missing; normalisation is in the model), ``label``,
``weight`` float32 ``[Bw]`` and ``index`` int64 ``[Bw]``. String ids are hashed to int64 here
with :func:`recstrata.training.keys.string_ids`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import queue
import threading
from typing import Iterator

import numpy as np

from recstrata.training import keys as K
from recstrata.training.spec import Config

CHUNK_LINES = 4096
_I64_MIN, _U64_END = -(1 << 63), 1 << 64


class DataError(ValueError):
    """Unusable input data (missing file, bad row with on_bad_row=fail, ...)."""


@dataclasses.dataclass
class ParseStats:
    rows: int = 0               # rows parsed by this process (its own slices)
    bad_rows: int = 0
    truncated_values: int = 0   # multi-valued ids beyond max_values, cut
    first_errors: list = dataclasses.field(default_factory=list)   # up to 5 "file:line: why"

    def note(self, where: str, why: str) -> None:
        self.bad_rows += 1
        if len(self.first_errors) < 5:
            self.first_errors.append(f"{where}: {why}")


# ----------------------------------------------------------------------------- sources

class SyntheticSource:
    """Blocks of the synthetic generator; every row is valid."""

    def __init__(self, cfg: Config, split: str):
        from recstrata.training import synthetic

        self.cfg, self.split = cfg, split
        self.teacher = synthetic.Teacher(cfg)
        self.stats = ParseStats()
        self._synthetic = synthetic

    def raw_chunks(self) -> Iterator[dict]:
        yield from self._synthetic.blocks(self.teacher, self.split)

    def parse(self, chunk: dict) -> tuple[dict, np.ndarray]:
        n = len(chunk["label"])
        self.stats.rows += n
        return chunk, np.ones(n, dtype=bool)


class TextSource:
    """Criteo TSV or generic CSV/TSV lines from one or more files, streamed in order."""

    def __init__(self, cfg: Config, files, on_bad_row: str | None = None):
        self.cfg = cfg
        self.files = tuple(files)
        for f in self.files:
            if not os.path.isfile(f):
                raise DataError(f"data file not found: {f}")
        d = cfg.data
        self.on_bad_row = on_bad_row or d.on_bad_row
        self.hex = d.format == "criteo"
        col = {c: i for i, c in enumerate(d.columns) if c}
        self.ncols = len(d.columns)
        self.label_col = col[cfg.label]
        self.dense_cols = [col[f.name] for f in cfg.dense]
        self.sparse_cols = [col[f.name] for f in cfg.sparse]
        self.stats = ParseStats()

    def raw_chunks(self) -> Iterator[dict]:
        lines, where = [], []
        for fi, path in enumerate(self.files):
            with open(path, "r", encoding="utf-8", errors="surrogateescape", newline="") as fh:
                for ln, line in enumerate(fh, 1):
                    if ln == 1 and self.cfg.data.header:
                        continue
                    lines.append(line)
                    where.append((fi, ln))
                    if len(lines) == CHUNK_LINES:
                        yield self._chunk(lines, where)
                        lines, where = [], []
        if lines:
            yield self._chunk(lines, where)

    @staticmethod
    def _chunk(lines, where) -> dict:
        arr = np.empty(len(lines), dtype=object)
        arr[:] = lines
        return {"line": arr, "where": np.array(where, dtype=np.int64).reshape(-1, 2)}

    def _parse_id(self, s: str) -> int:
        v = int(s, 16) if self.hex else int(s)
        if not _I64_MIN <= v < _U64_END:
            raise ValueError(f"id {s!r} out of 64-bit range")
        return v - _U64_END if v >= 1 << 63 else v

    def parse(self, chunk: dict) -> tuple[dict, np.ndarray]:
        cfg, d = self.cfg, self.cfg.data
        n = len(chunk["line"])
        self.stats.rows += n
        valid = np.ones(n, dtype=bool)
        label = np.zeros(n, np.float32)
        dense = np.full((n, len(cfg.dense)), np.nan, np.float32)
        sp_vals = [[None] * n for _ in cfg.sparse]
        for r, line in enumerate(chunk["line"]):
            fi, ln = chunk["where"][r]
            try:
                fields = line.rstrip("\r\n").split(d.delimiter)
                if len(fields) != self.ncols:
                    raise ValueError(f"expected {self.ncols} fields, got {len(fields)}")
                lab = fields[self.label_col].strip()
                if lab not in ("0", "1", "0.0", "1.0"):
                    raise ValueError(f"label must be 0 or 1, got {lab!r}")
                label[r] = float(lab)
                for j, c in enumerate(self.dense_cols):
                    s = fields[c].strip()
                    if s:
                        v = float(s)
                        if not math.isfinite(v):
                            raise ValueError(f"dense {cfg.dense[j].name}: not finite: {s!r}")
                        dense[r, j] = v
                for j, (f, c) in enumerate(zip(cfg.sparse, self.sparse_cols)):
                    s = fields[c].strip()
                    vals = [v for v in s.split(d.value_separator) if v] if s else []
                    if f.dtype == "int64":
                        try:
                            vals = [self._parse_id(v) for v in vals]
                        except ValueError:
                            raise ValueError(f"sparse {f.name}: bad int64 id in {s!r}") from None
                    sp_vals[j][r] = vals
            except ValueError as exc:
                where = f"{self.files[fi]}:{ln}"
                if self.on_bad_row == "fail":
                    raise DataError(f"bad row at {where}: {exc} (set data.on_bad_row to 'count' "
                                    f"to skip and count bad rows)") from None
                self.stats.note(where, str(exc))
                valid[r] = False
        out = {"label": label, "dense": dense}
        for j, f in enumerate(cfg.sparse):
            k = f.max_values
            lens = np.zeros(n, np.int32)
            if f.dtype == "string":
                ids = np.full((n, k), "", dtype=object)
            else:
                ids = np.zeros((n, k), np.int64)
            for r in range(n):
                vals = sp_vals[j][r]
                if not valid[r] or not vals:
                    continue
                if len(vals) > k:
                    self.stats.truncated_values += len(vals) - k
                    vals = vals[:k]
                lens[r] = len(vals)
                ids[r, :len(vals)] = vals
            out[f.name], out[f.name + "/len"] = ids, lens
        return out, valid


def make_source(cfg: Config, split: str):
    d = cfg.data
    if d.format == "synthetic":
        return SyntheticSource(cfg, split)
    files = d.train if split == "train" else d.eval
    if not files:
        raise DataError(f"data.{split}: no files configured for the {split} split")
    return TextSource(cfg, files)


# ----------------------------------------------------------------------------- batching

@dataclasses.dataclass(frozen=True)
class Layout:
    """How global batches are cut among workers and local replicas."""

    per_replica: int
    replicas_per_worker: int = 1
    num_workers: int = 1
    worker: int = 0

    @classmethod
    def for_global_batch(cls, global_batch: int, replicas_per_worker: int = 1,
                         num_workers: int = 1, worker: int = 0) -> "Layout":
        total = replicas_per_worker * num_workers
        return cls(-(-global_batch // total), replicas_per_worker, num_workers, worker)

    @property
    def worker_rows(self) -> int:
        return self.per_replica * self.replicas_per_worker

    @property
    def global_batch(self) -> int:
        return self.worker_rows * self.num_workers


def _concat(chunks: list[dict]) -> dict:
    if len(chunks) == 1:
        return chunks[0]
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def _slice(chunk: dict, lo: int, hi: int) -> dict:
    return {k: v[lo:hi] for k, v in chunk.items()}


def _rows(chunk: dict) -> int:
    return len(next(iter(chunk.values())))


def global_batches(source, size: int) -> Iterator[dict]:
    """Regroup a source's raw chunks into consecutive raw global batches of ``size`` rows
    (the last one shorter)."""
    buf, have = [], 0
    for ch in source.raw_chunks():
        buf.append(ch)
        have += _rows(ch)
        while have >= size:
            cat = _concat(buf)
            yield _slice(cat, 0, size)
            rest = _slice(cat, size, have)
            have -= size
            buf = [rest] if have else []
    if have:
        yield _concat(buf)


def encode(cfg: Config, parsed: dict, valid: np.ndarray, rows: int, index0: int) -> dict:
    """Parsed examples -> a model batch of exactly ``rows`` rows (zero-weight padding)."""
    n = len(valid)
    out = {}
    for f in cfg.sparse:
        ids = parsed[f.name]
        lens = np.where(valid, parsed[f.name + "/len"], 0).astype(np.int32)
        if f.dtype == "string":
            ids = K.string_ids(ids) if n else np.zeros((0, f.max_values), np.int64)
        ids = np.where(np.arange(f.max_values)[None, :] < lens[:, None], ids, 0).astype(np.int64)
        out[f.name] = _pad(ids, rows, 0)
        out[f.name + "/len"] = _pad(lens, rows, 0)
    out["dense"] = _pad(np.asarray(parsed["dense"], np.float32).reshape(n, len(cfg.dense)), rows, 0.0)
    out["label"] = _pad(np.where(valid, parsed["label"], 0).astype(np.float32), rows, 0.0)
    out["weight"] = _pad(valid.astype(np.float32), rows, 0.0)
    index = np.where(valid, index0 + np.arange(n, dtype=np.int64), -1)
    out["index"] = _pad(index, rows, -1)
    return out


def _pad(a: np.ndarray, rows: int, value) -> np.ndarray:
    n = a.shape[0]
    if n == rows:
        return a
    pad = np.full((rows - n,) + a.shape[1:], value, dtype=a.dtype)
    return np.concatenate([a, pad])


def worker_batches(cfg: Config, source, layout: Layout, skip: int = 0,
                   limit: int = 0) -> Iterator[dict]:
    """This worker's padded batches of one pass over ``source`` (see module docstring).

    ``skip``: global batches to pass over without parsing (resuming mid-epoch);
    ``limit``: stop after this many global batches (0 = all).
    """
    G, Bw = layout.global_batch, layout.worker_rows
    lo = layout.worker * Bw
    start = 0
    for b, raw in enumerate(global_batches(source, G)):
        if limit and b >= limit:
            return
        n = _rows(raw)
        if b >= skip:
            part = _slice(raw, min(lo, n), min(lo + Bw, n))
            parsed, valid = source.parse(part)
            yield encode(cfg, parsed, valid, Bw, start + lo)
        start += n


def output_signature(cfg: Config, rows: int):
    import tensorflow as tf

    sig = {}
    for f in cfg.sparse:
        sig[f.name] = tf.TensorSpec([rows, f.max_values], tf.int64)
        sig[f.name + "/len"] = tf.TensorSpec([rows], tf.int32)
    sig["dense"] = tf.TensorSpec([rows, len(cfg.dense)], tf.float32)
    sig["label"] = tf.TensorSpec([rows], tf.float32)
    sig["weight"] = tf.TensorSpec([rows], tf.float32)
    sig["index"] = tf.TensorSpec([rows], tf.int64)
    return sig


def make_dataset(cfg: Config, source, layout: Layout, skip: int = 0, limit: int = 0,
                 errors: dict | None = None):
    """A streaming ``tf.data.Dataset`` of this worker's padded batches (prefetched).

    tf.data wraps exceptions raised by the generator into TF errors; when ``errors`` is given,
    the original exception is stored under ``errors["error"]`` so callers can re-raise it
    (see :func:`iterate`).

    Prefetching happens in a Python thread (two batches ahead), not with ``Dataset.prefetch``:
    a tf.data prefetch thread calls the generator through a PyFunc, and when the iterator is
    destroyed while that thread waits for the GIL (e.g. after a bad row raised), the destructor
    waits for the thread forever — a process hang seen in about one in ten failing runs."""
    import tensorflow as tf

    def gen():
        q: queue.Queue = queue.Queue(maxsize=2)
        stop = threading.Event()
        end = object()

        def produce():
            try:
                for item in worker_batches(cfg, source, layout, skip, limit):
                    while not stop.is_set():
                        try:
                            q.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                q.put(end)
            except BaseException as exc:  # handed to the consumer below
                q.put(_Failure(exc))

        worker = threading.Thread(target=produce, name="recstrata-batches", daemon=True)
        worker.start()
        try:
            while True:
                item = q.get()
                if item is end:
                    return
                if isinstance(item, _Failure):
                    if errors is not None:
                        errors["error"] = item.exc
                    raise item.exc
                yield item
        finally:
            stop.set()              # the consumer stopped early: let the producer end
            while worker.is_alive():
                try:
                    q.get(timeout=0.1)
                except queue.Empty:
                    pass

    ds = tf.data.Dataset.from_generator(
        gen, output_signature=output_signature(cfg, layout.worker_rows))
    options = tf.data.Options()
    options.experimental_optimization.inject_prefetch = False   # see above: no tf.data thread
    return ds.with_options(options)


class _Failure:
    """An exception raised in the batch producer thread, passed to the consumer."""

    def __init__(self, exc: BaseException):
        self.exc = exc


def iterate(cfg: Config, source, layout: Layout, skip: int = 0, limit: int = 0):
    """Iterate the tf.data pipeline eagerly; input errors surface as their own exception
    (e.g. :class:`DataError` with the file and line), not as a TF op error."""
    import tensorflow as tf

    errors: dict = {}
    try:
        yield from make_dataset(cfg, source, layout, skip, limit, errors)
    except tf.errors.OpError:
        if "error" in errors:
            raise errors["error"] from None
        raise
