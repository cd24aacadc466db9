"""Declarative training config (JSON or YAML): features, model, data, training options.

``load_config(path_or_dict)`` validates everything up front and returns a frozen
:class:`Config`; every error is a :class:`SpecError` (a ``ValueError``) naming the offending
field by its path, e.g. ``sparse[2].embedding.m: must be in [2, 999], got 1000``.
See docs/training.md for the full reference and an example.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping, Sequence

from recstrata.training import dynamic_spec
from recstrata.training import keys as K

MODEL_TYPES = ("wdl", "deepfm", "dlrm")
DENSE_TRANSFORMS = ("none", "log1p", "standard")
DATA_FORMATS = ("synthetic", "criteo", "csv")
OPTIMIZERS = ("adam", "adagrad", "sgd")
MIXED_PRECISION = ("off", "float16", "bfloat16")
DEVICES = ("auto", "cpu", "mirrored")


class SpecError(ValueError):
    """A config that cannot be used; the message names the field path."""


# ----------------------------------------------------------------------------- helpers

class _Obj:
    """Reads a config mapping, tracking which keys were used, with path-prefixed errors."""

    def __init__(self, d: Any, path: str):
        if not isinstance(d, Mapping):
            raise SpecError(f"{path or 'config'}: must be an object, got {type(d).__name__}")
        self.d, self.path, self.used = dict(d), path, set()

    def _p(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, default: Any = dataclasses.MISSING) -> Any:
        self.used.add(key)
        if key not in self.d or self.d[key] is None:
            if default is dataclasses.MISSING:
                raise SpecError(f"{self._p(key)}: required field is missing")
            return default
        return self.d[key]

    def str(self, key, default=dataclasses.MISSING, choices: Sequence[str] | None = None) -> str:
        v = self.get(key, default)
        if not isinstance(v, str):
            raise SpecError(f"{self._p(key)}: must be a string, got {v!r}")
        if choices is not None and v not in choices:
            raise SpecError(f"{self._p(key)}: must be one of {list(choices)}, got {v!r}")
        return v

    def int(self, key, default=dataclasses.MISSING, lo: int | None = None, hi: int | None = None) -> int:
        v = self.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise SpecError(f"{self._p(key)}: must be an integer, got {v!r}")
        if lo is not None and v < lo:
            raise SpecError(f"{self._p(key)}: must be >= {lo}, got {v}")
        if hi is not None and v > hi:
            raise SpecError(f"{self._p(key)}: must be <= {hi}, got {v}")
        return v

    def float(self, key, default=dataclasses.MISSING, lo: float | None = None,
              lo_open: bool = False) -> float:
        v = self.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise SpecError(f"{self._p(key)}: must be a finite number, got {v!r}")
        if lo is not None and (v <= lo if lo_open else v < lo):
            raise SpecError(f"{self._p(key)}: must be {'>' if lo_open else '>='} {lo}, got {v}")
        return float(v)

    def bool(self, key, default=dataclasses.MISSING) -> bool:
        v = self.get(key, default)
        if not isinstance(v, bool):
            raise SpecError(f"{self._p(key)}: must be true or false, got {v!r}")
        return v

    def list(self, key, default=dataclasses.MISSING) -> list:
        v = self.get(key, default)
        if not isinstance(v, list):
            raise SpecError(f"{self._p(key)}: must be a list, got {v!r}")
        return v

    def obj(self, key, default: Any = dataclasses.MISSING) -> "_Obj":
        return _Obj(self.get(key, default), self._p(key))

    def done(self) -> None:
        extra = sorted(set(self.d) - self.used)
        if extra:
            raise SpecError(f"{self.path or 'config'}: unknown field(s) {extra}")


def _paths(v: Any, path: str) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
        raise SpecError(f"{path}: must be a file path or a non-empty list of file paths, got {v!r}")
    return tuple(v)


# ----------------------------------------------------------------------------- features

@dataclasses.dataclass(frozen=True)
class SparseFeature:
    name: str
    dtype: str                 # "int64" | "string"
    max_values: int            # 1 = single-valued; >1 multi-valued (padded to this width)
    combiner: str              # sum | mean | sqrtn (pooling over the values)
    dim: int
    table: str                 # table name; features naming the same table share it
    scheme: K.KeyScheme

    @property
    def multi_valued(self) -> bool:
        return self.max_values > 1


@dataclasses.dataclass(frozen=True)
class DenseFeature:
    name: str
    transform: str = "none"    # none | log1p (sign(x)*log1p(|x|)) | standard ((x-mean)/std)
    mean: float = 0.0
    std: float = 1.0
    default: float = 0.0       # value used (after the transform) when the input is missing/NaN


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    type: str = "deepfm"
    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.0
    bottom: tuple[int, ...] = (32,)      # dlrm bottom MLP (its last layer is the embedding dim)


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    num_train: int = 100_000
    num_eval: int = 20_000
    seed: int = 0
    zipf: float = 1.1
    vocab: Mapping[str, int] = dataclasses.field(default_factory=dict)   # per sparse feature
    teacher_dim: int = 4
    teacher_scale: float = 1.0
    # "independent": every id's teacher parameters are drawn alike (close to the worst case
    # for compression); "structured": popularity-correlated and clustered, as in real logs
    # (recstrata.training.synthetic)
    structure: str = "independent"


@dataclasses.dataclass(frozen=True)
class DataSpec:
    format: str
    train: tuple[str, ...] = ()
    eval: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()       # csv: column names in file order ("" = ignored)
    delimiter: str = ","
    header: bool = False
    value_separator: str = "|"          # multi-valued fields inside one column
    on_bad_row: str = "count"           # count (skip, count, report) | fail
    synthetic: SyntheticSpec | None = None


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    batch_size: int = 512                 # global batch (all replicas, all workers)
    epochs: int = 1
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    seed: int = 0
    checkpoint_dir: str | None = None
    checkpoint_every_steps: int = 0       # 0 = only at epoch ends
    early_stopping_patience: int = 0      # 0 = off; else epochs without eval AUC improvement
    early_stopping_min_delta: float = 0.0
    mixed_precision: str = "off"
    devices: str = "auto"
    max_steps_per_epoch: int = 0          # 0 = the whole epoch
    progress: bool = True
    dynamic_store_dir: str | None = None  # working store of dynamic tables (default: a temp dir)


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    label: str
    sparse: tuple[SparseFeature, ...]
    dense: tuple[DenseFeature, ...]
    model: ModelSpec
    data: DataSpec
    train: TrainSpec
    source_path: str | None = None
    raw: Mapping[str, Any] | None = dataclasses.field(default=None, compare=False, repr=False)
    base_dir: str | None = dataclasses.field(default=None, compare=False, repr=False)

    def to_json(self) -> str:
        """The validated config as JSON (data paths made absolute), reloadable by load_config."""
        d = json.loads(json.dumps(self.raw))
        data = d.get("data", {})
        for key in ("train", "eval"):
            v = getattr(self.data, key)
            if v:
                data[key] = list(v)
        return json.dumps(d, indent=1, sort_keys=True)

    def tables(self) -> dict[str, tuple[K.KeyScheme, int, tuple[str, ...]]]:
        """table name -> (scheme, dim, feature names), in first-use order."""
        out: dict[str, tuple[K.KeyScheme, int, list[str]]] = {}
        for f in self.sparse:
            if f.table not in out:
                out[f.table] = (f.scheme, f.dim, [])
            out[f.table][2].append(f.name)
        return {k: (s, d, tuple(n)) for k, (s, d, n) in out.items()}

    def with_overrides(self, **sections) -> "Config":
        """Copy with some top-level fields replaced (e.g. train=dataclasses.replace(...))."""
        return dataclasses.replace(self, **sections)


# ----------------------------------------------------------------------------- parsing

def _parse_sparse(o: _Obj, idx: int) -> SparseFeature:
    name = o.str("name")
    dtype = o.str("dtype", "int64", choices=("int64", "string"))
    max_values = o.int("max_values", 1, lo=1, hi=4096)
    combiner = o.str("combiner", "sum", choices=K.COMBINERS)
    dim = o.int("dim", lo=1, hi=4096)
    table = o.str("table", name)
    emb = o.get("embedding")
    path = f"{o.path}.embedding"
    if not isinstance(emb, Mapping):
        raise SpecError(f"{path}: must be an object like {{\"kind\": \"plain\", \"rows\": 100000}}")
    try:
        scheme = (dynamic_spec.from_dict(emb) if emb.get("kind") == dynamic_spec.KIND
                  else K.scheme_from_dict(emb))
    except TypeError as exc:
        raise SpecError(f"{path}: {exc}") from None
    except ValueError as exc:
        msg = str(exc)
        # keys.py names fields as "<kind>.<field>"; re-anchor them at this feature's path
        raise SpecError(f"{path}: {msg}") from None
    o.done()
    return SparseFeature(name, dtype, max_values, combiner, dim, table, scheme)


def _parse_dense(o: _Obj) -> DenseFeature:
    f = DenseFeature(
        name=o.str("name"),
        transform=o.str("transform", "none", choices=DENSE_TRANSFORMS),
        mean=o.float("mean", 0.0),
        std=o.float("std", 1.0, lo=0.0, lo_open=True),
        default=o.float("default", 0.0))
    o.done()
    return f


def _parse_model(o: _Obj) -> ModelSpec:
    def layers(key, default):
        v = o.list(key, list(default))
        if not all(isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 65536 for x in v):
            raise SpecError(f"{o.path}.{key}: must be a list of layer widths in [1, 65536], got {v!r}")
        return tuple(v)

    m = ModelSpec(type=o.str("type", "deepfm", choices=MODEL_TYPES),
                  hidden=layers("hidden", (64, 32)),
                  dropout=o.float("dropout", 0.0, lo=0.0),
                  bottom=layers("bottom", (32,)))
    if m.dropout >= 1.0:
        raise SpecError(f"{o.path}.dropout: must be < 1, got {m.dropout}")
    o.done()
    return m


def _parse_synthetic(o: _Obj, sparse: Sequence[SparseFeature]) -> SyntheticSpec:
    vocab_o = o.obj("vocab", {})
    vocab = {}
    for f in sparse:
        vocab[f.name] = vocab_o.int(f.name, f.scheme.subtable_rows[0]
                                    if isinstance(f.scheme, K.PlainKeys) else 10_000, lo=1)
    vocab_o.done()
    s = SyntheticSpec(num_train=o.int("num_train", 100_000, lo=1),
                      num_eval=o.int("num_eval", 20_000, lo=1),
                      seed=o.int("seed", 0, lo=0),
                      zipf=o.float("zipf", 1.1, lo=0.0),
                      vocab=vocab,
                      teacher_dim=o.int("teacher_dim", 4, lo=1, hi=64),
                      teacher_scale=o.float("teacher_scale", 1.0, lo=0.0),
                      structure=o.str("structure", "independent",
                                      choices=("independent", "structured")))
    o.done()
    return s


def _parse_data(o: _Obj, sparse, dense, label, base_dir: str | None) -> DataSpec:
    fmt = o.str("format", choices=DATA_FORMATS)

    def resolve(paths):
        return tuple(p if os.path.isabs(p) or base_dir is None else os.path.join(base_dir, p)
                     for p in paths)

    if fmt == "synthetic":
        syn = _parse_synthetic(o.obj("synthetic", {}), sparse)
        for key in ("train", "eval", "columns"):
            if o.d.get(key):
                raise SpecError(f"{o.path}.{key}: not used with format 'synthetic'")
        o.done()
        return DataSpec(format=fmt, synthetic=syn)
    train = resolve(_paths(o.get("train"), f"{o.path}.train"))
    ev = o.get("eval", None)
    ev = resolve(_paths(ev, f"{o.path}.eval")) if ev is not None else ()
    on_bad = o.str("on_bad_row", "count", choices=("count", "fail"))
    sep = o.str("value_separator", "|")
    if fmt == "criteo":
        cols = ("label",) + tuple(f"I{i}" for i in range(1, 14)) + tuple(f"C{i}" for i in range(1, 27))
        delim = o.str("delimiter", "\t")
        header = o.bool("header", False)
        if "columns" in o.d:
            raise SpecError(f"{o.path}.columns: the criteo format has fixed columns "
                            f"label, I1..I13, C1..C26; use format 'csv' for other layouts")
    else:
        raw = o.list("columns")
        if not raw or not all(isinstance(c, str) for c in raw):
            raise SpecError(f"{o.path}.columns: must be a non-empty list of column names "
                            f"(\"\" for ignored columns)")
        cols = tuple(raw)
        named = [c for c in cols if c]
        if len(set(named)) != len(named):
            raise SpecError(f"{o.path}.columns: duplicate column names")
        delim = o.str("delimiter", ",")
        header = o.bool("header", False)
    if len(delim) != 1:
        raise SpecError(f"{o.path}.delimiter: must be one character, got {delim!r}")
    if len(sep) != 1 or sep == delim:
        raise SpecError(f"{o.path}.value_separator: must be one character different from the "
                        f"delimiter, got {sep!r}")
    needed = [label] + [f.name for f in dense] + [f.name for f in sparse]
    missing = [n for n in needed if n not in cols]
    if missing:
        raise SpecError(f"{o.path}.columns: feature(s)/label {missing} have no column "
                        f"(columns are {list(c for c in cols if c)})")
    o.done()
    return DataSpec(format=fmt, train=train, eval=ev, columns=cols, delimiter=delim,
                    header=header, value_separator=sep, on_bad_row=on_bad)


def _parse_train(o: _Obj) -> TrainSpec:
    es = o.obj("early_stopping", {})
    t = TrainSpec(
        batch_size=o.int("batch_size", 512, lo=1, hi=1 << 20),
        epochs=o.int("epochs", 1, lo=1, hi=100_000),
        learning_rate=o.float("learning_rate", 1e-3, lo=0.0, lo_open=True),
        optimizer=o.str("optimizer", "adam", choices=OPTIMIZERS),
        seed=o.int("seed", 0, lo=0, hi=2**31 - 1),
        checkpoint_dir=o.get("checkpoint_dir", None),
        checkpoint_every_steps=o.int("checkpoint_every_steps", 0, lo=0),
        early_stopping_patience=es.int("patience", 0, lo=0),
        early_stopping_min_delta=es.float("min_delta", 0.0, lo=0.0),
        mixed_precision=o.str("mixed_precision", "off", choices=MIXED_PRECISION),
        devices=o.str("devices", "auto", choices=DEVICES),
        max_steps_per_epoch=o.int("max_steps_per_epoch", 0, lo=0),
        progress=o.bool("progress", True),
        dynamic_store_dir=o.get("dynamic_store_dir", None))
    es.done()
    if t.dynamic_store_dir is not None and not isinstance(t.dynamic_store_dir, str):
        raise SpecError(f"{o.path}.dynamic_store_dir: must be a path string")
    if t.checkpoint_dir is not None and not isinstance(t.checkpoint_dir, str):
        raise SpecError(f"{o.path}.checkpoint_dir: must be a path string")
    o.done()
    return t


def parse_config(d: Mapping[str, Any], base_dir: str | None = None,
                 source_path: str | None = None) -> Config:
    """Validate a config mapping. Relative data paths resolve against ``base_dir``."""
    o = _Obj(d, "")
    name = o.str("name", "model")
    label = o.str("label", "label")
    raw_sparse = o.list("sparse")
    if not raw_sparse:
        raise SpecError("sparse: at least one sparse feature is required")
    sparse = tuple(_parse_sparse(_Obj(s, f"sparse[{i}]"), i) for i, s in enumerate(raw_sparse))
    dense = tuple(_parse_dense(_Obj(s, f"dense[{i}]")) for i, s in enumerate(o.list("dense", [])))
    names = [label] + [f.name for f in sparse] + [f.name for f in dense]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SpecError(f"duplicate feature/label name(s) {dup}")
    for i, f in enumerate(sparse):
        if f.name.startswith("__") or "/" in f.name or not f.name:
            raise SpecError(f"sparse[{i}].name: {f.name!r} is reserved or contains '/'")
    # shared tables: same scheme and dim everywhere
    first: dict[str, tuple[int, SparseFeature]] = {}
    for i, f in enumerate(sparse):
        if f.table in first:
            j, g = first[f.table]
            if (g.scheme, g.dim) != (f.scheme, f.dim):
                raise SpecError(f"sparse[{i}] ({f.name}) shares table {f.table!r} with sparse[{j}] "
                                f"({g.name}) but its embedding or dim differs; a shared table has "
                                f"one scheme and one dim")
        else:
            first[f.table] = (i, f)
    model = _parse_model(o.obj("model", {}))
    if model.type in ("dlrm", "deepfm"):
        dims = {f.dim for f in sparse}
        if len(dims) != 1:
            raise SpecError(f"model.type {model.type}: every sparse feature needs the same dim "
                            f"(pairwise interactions), got {sorted(dims)}")
    if model.type == "dlrm":
        if not dense:
            raise SpecError("model.type dlrm: needs at least one dense feature (bottom MLP input)")
    for i, f in enumerate(sparse):
        width = table_width(f.dim, model.type)
        try:
            f.scheme.subtable_dims(width)
        except ValueError as exc:
            raise SpecError(f"sparse[{i}].embedding: {exc}") from None
    data = _parse_data(o.obj("data"), sparse, dense, label, base_dir)
    train = _parse_train(o.obj("train", {}))
    if any(dynamic_spec.is_dynamic(f.scheme) for f in sparse):
        if train.mixed_precision == "float16":
            raise SpecError("train.mixed_precision: float16 (loss scaling) is not supported with "
                            "dynamic tables; use 'off' or 'bfloat16'")
    o.done()
    return Config(name, label, sparse, dense, model, data, train, source_path,
                  raw=json.loads(json.dumps(d)), base_dir=base_dir)


def table_width(dim: int, model_type: str) -> int:
    """Row width of a feature's table: dim, plus one first-order column for wdl/deepfm."""
    return dim + 1 if model_type in ("wdl", "deepfm") else dim


def load_config(src: str | os.PathLike | Mapping[str, Any]) -> Config:
    """Load and validate a config from a JSON/YAML file path or a mapping."""
    if isinstance(src, Mapping):
        return parse_config(src)
    path = os.fspath(src)
    if not os.path.exists(path):
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:  # pragma: no cover - depends on the environment
            raise SpecError(f"{path}: YAML configs need PyYAML (pip install pyyaml); "
                            f"or write the config as JSON") from None
        try:
            d = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SpecError(f"{path}: invalid YAML: {exc}") from None
    else:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: "
                            f"{exc.msg}") from None
    return parse_config(d, base_dir=os.path.dirname(os.path.abspath(path)), source_path=path)
