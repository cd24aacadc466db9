"""The ``"kind": "dynamic"`` embedding of the feature spec (numpy-free, TensorFlow-free).

A dynamic table is keyed by the raw id itself (after FNV-1a for string ids, like every
scheme): no vocabulary size, no collisions. Its rows live in the native tiered store during
training (:mod:`recstrata.training.dynamic`) and are created on admission, evicted by age and
frequency, and trained with row-wise Adagrad whose accumulator is stored in the row
(``[embedding | accumulator]``). Config (every field optional)::

    "embedding": {"kind": "dynamic",
                  "admission": {"threshold": 2, "sketch_depth": 4, "sketch_width": 1048576},
                  "eviction": {"max_rows": 1000000, "ttl_steps": 0, "every_steps": 100,
                               "age_scale_steps": 1000},
                  "optimizer": {"name": "adagrad", "learning_rate": 0.05,
                                "initial_accumulator": 0.1, "epsilon": 1e-7},
                  "dram_budget_bytes": 67108864, "init_stddev": 0.05, "seed": 0}

See docs/training.md ("Dynamic tables") and docs/embedding-keys.md (section 3.4).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np

from recstrata.training import keys as K

KIND = "dynamic"


@dataclasses.dataclass(frozen=True)
class DynamicKeys(K.KeyScheme):
    """Key scheme + training parameters of a dynamic table (row key = the id)."""

    admit_threshold: int = 1
    sketch_depth: int = 4
    sketch_width: int = 1 << 20
    max_rows: int = 0
    ttl_steps: int = 0
    evict_every_steps: int = 100
    age_scale_steps: float = 1000.0
    learning_rate: float = 0.05
    initial_accumulator: float = 0.1
    epsilon: float = 1e-7
    dram_budget_bytes: int = 64 << 20
    init_stddev: float = 0.05
    seed: int = 0

    kind = KIND
    combiner = "add"

    @property
    def subtable_rows(self) -> tuple[int, ...]:
        return (0,)          # unbounded: rows exist for admitted ids only

    def num_params(self, dim: int) -> int:
        return 0             # not fixed; the live row count is in the store's stats

    def row_keys(self, ids: Any) -> np.ndarray:
        """ids -> int64 row keys [..., 1]: the id itself (two's complement int64)."""
        u = K.as_uint64(ids)
        return u.view(np.int64)[..., None]

    def to_dict(self) -> dict:
        """The bundle manifest's key scheme (serving needs only the key function)."""
        return {"kind": KIND, "hashed": False}

    def slot_width(self, width: int) -> int:
        """Floats of optimizer state per row (the Adagrad accumulator)."""
        return width


_ADMISSION = {"threshold": ("admit_threshold", int), "sketch_depth": ("sketch_depth", int),
              "sketch_width": ("sketch_width", int)}
_EVICTION = {"max_rows": ("max_rows", int), "ttl_steps": ("ttl_steps", int),
             "every_steps": ("evict_every_steps", int), "age_scale_steps": ("age_scale_steps", float)}
_OPTIMIZER = {"learning_rate": ("learning_rate", float),
              "initial_accumulator": ("initial_accumulator", float), "epsilon": ("epsilon", float)}
_TOP = {"dram_budget_bytes": ("dram_budget_bytes", int), "init_stddev": ("init_stddev", float),
        "seed": ("seed", int)}


def _num(path: str, v: Any, typ) -> Any:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (typ is int and not isinstance(v, int)):
        raise ValueError(f"{path}: must be {'an integer' if typ is int else 'a number'}, got {v!r}")
    if typ is float and not math.isfinite(v):
        raise ValueError(f"{path}: must be finite, got {v!r}")
    return typ(v)


def from_dict(d: Mapping[str, Any]) -> DynamicKeys:
    """Parse ``{"kind": "dynamic", ...}``; ValueError names the bad field (``dynamic.x.y``)."""
    d = dict(d)
    if d.pop("kind", None) != KIND:
        raise ValueError("dynamic: kind must be 'dynamic'")
    kw: dict[str, Any] = {}
    for section, fields in (("admission", _ADMISSION), ("eviction", _EVICTION),
                            ("optimizer", _OPTIMIZER)):
        sub = d.pop(section, None) or {}
        if not isinstance(sub, Mapping):
            raise ValueError(f"dynamic.{section}: must be an object, got {sub!r}")
        sub = dict(sub)
        if section == "optimizer":
            name = sub.pop("name", "adagrad")
            if name != "adagrad":
                raise ValueError(f"dynamic.optimizer.name: only 'adagrad' (row-wise, its "
                                 f"accumulator stored with the row) is implemented, got {name!r}")
        for key, v in sub.items():
            if key not in fields:
                raise ValueError(f"dynamic.{section}: unknown field {key!r}; allowed: {sorted(fields)}")
            attr, typ = fields[key]
            kw[attr] = _num(f"dynamic.{section}.{key}", v, typ)
    for key, v in d.items():
        if key not in _TOP:
            raise ValueError(f"dynamic: unknown field {key!r}; allowed: "
                             f"{sorted(list(_TOP) + ['admission', 'eviction', 'optimizer'])}")
        attr, typ = _TOP[key]
        kw[attr] = _num(f"dynamic.{key}", v, typ)
    s = DynamicKeys(**kw)
    checks = [
        (1 <= s.admit_threshold <= 65535, "admission.threshold must be in [1, 65535]"),
        (1 <= s.sketch_depth <= 16, "admission.sketch_depth must be in [1, 16]"),
        (s.sketch_width >= 64 and s.sketch_width & (s.sketch_width - 1) == 0,
         "admission.sketch_width must be a power of two >= 64"),
        (s.max_rows >= 0, "eviction.max_rows must be >= 0 (0 = no cap)"),
        (s.ttl_steps >= 0, "eviction.ttl_steps must be >= 0 (0 = no age limit)"),
        (s.evict_every_steps >= 1, "eviction.every_steps must be >= 1"),
        (s.age_scale_steps > 0, "eviction.age_scale_steps must be > 0"),
        (s.learning_rate > 0, "optimizer.learning_rate must be > 0"),
        (s.initial_accumulator >= 0, "optimizer.initial_accumulator must be >= 0"),
        (s.epsilon >= 0, "optimizer.epsilon must be >= 0"),
        (s.dram_budget_bytes >= 1 << 16, "dram_budget_bytes must be >= 65536"),
        (s.init_stddev >= 0, "init_stddev must be >= 0"),
        (0 <= s.seed < 2**63, "seed must be in [0, 2^63)"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ValueError(f"dynamic.{msg}")
    return s


def is_dynamic(scheme: Any) -> bool:
    return isinstance(scheme, DynamicKeys)
