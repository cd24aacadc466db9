"""Pure id -> row-key functions of every embedding scheme (the contract with serving).

This module is the single source of truth for how a raw feature id becomes row
indices into embedding (sub-)tables. The processor reimplements exactly these
functions natively (C++) and checks them against :func:`test_vectors`, so every
function here is specified bit for bit in ``docs/embedding-keys.md``. Keep it
numpy-only (no TensorFlow): the training input pipeline calls it, the
exporter and the test-vector generator call it, and none of them need TF here.

All integer arithmetic is on unsigned 64-bit values with wrap-around (mod 2**64).
An int64 id is reinterpreted as uint64 (two's complement), a string id is first
turned into an int64 id by :func:`string_ids` (FNV-1a 64 of its UTF-8 bytes).

A scheme maps an id array of any shape ``S`` to an int64 array of shape
``S + (num_subtables,)``: column ``j`` is the row in sub-table ``j`` (always in
``[0, subtable_rows[j])``). How the sub-vectors combine is ``scheme.combiner``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "FNV_OFFSET", "FNV_PRIME", "GOLDEN", "MIX1", "MIX2",
    "fnv1a64", "string_ids", "as_uint64", "hash64",
    "KeyScheme", "PlainKeys", "MultiHashKeys", "BinaryCodeKeys", "FreqAwareKeys",
    "scheme_from_dict", "test_vectors",
]

_U64 = np.uint64
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x00000100000001B3
GOLDEN = 0x9E3779B97F4A7C15          # splitmix64 increment
MIX1 = 0xBF58476D1CE4E5B9            # splitmix64 finaliser multipliers
MIX2 = 0x94D049BB133111EB
SCHEMA_VERSION = 1                   # bump only with a documented, versioned change


# ----------------------------------------------------------------------------- hashing

def fnv1a64(strings: Iterable[str | bytes] | np.ndarray) -> np.ndarray:
    """FNV-1a 64-bit hash of each string's UTF-8 bytes, as uint64 (vectorised per byte column).

    ``h = 0xcbf29ce484222325; for b in bytes: h = (h ^ b) * 0x100000001b3 mod 2**64``.
    ``bytes`` values are hashed as given; ``str`` values are UTF-8 encoded first.
    The empty string hashes to the offset basis 0xcbf29ce484222325.
    """
    arr = np.asarray(strings, dtype=object) if not isinstance(strings, np.ndarray) else strings
    shape = arr.shape
    # surrogateescape: text read with errors="surrogateescape" hashes as its original bytes
    flat = [s.encode("utf-8", "surrogateescape") if isinstance(s, str) else bytes(s)
            for s in arr.reshape(-1).tolist()]
    n = len(flat)
    h = np.full(n, FNV_OFFSET, dtype=_U64)
    if n == 0:
        return h.reshape(shape)
    lengths = np.fromiter((len(b) for b in flat), dtype=np.int64, count=n)
    width = int(lengths.max()) if n else 0
    if width == 0:
        return h.reshape(shape)
    # Fixed-width byte matrix; trailing NULs of short strings are masked by `lengths`,
    # so strings that themselves end in NUL bytes still hash exactly.
    mat = np.frombuffer(b"".join(b.ljust(width, b"\0") for b in flat), dtype=np.uint8).reshape(n, width)
    prime = _U64(FNV_PRIME)
    with np.errstate(over="ignore"):
        for j in range(width):
            live = lengths > j
            col = mat[:, j].astype(_U64)
            h = np.where(live, (h ^ col) * prime, h)
    return h.reshape(shape)


def string_ids(strings: Iterable[str | bytes] | np.ndarray) -> np.ndarray:
    """String ids -> int64 ids: FNV-1a 64 of the UTF-8 bytes, reinterpreted as int64."""
    return fnv1a64(strings).view(np.int64)


def as_uint64(ids: Any) -> np.ndarray:
    """int64 (or any integer) ids -> uint64 by two's-complement reinterpretation (no range check)."""
    a = np.asarray(ids)
    if a.dtype == np.uint64:
        return a
    if a.dtype.kind not in "iu":
        raise TypeError(f"ids must be integers, got dtype {a.dtype}")
    return a.astype(np.int64).view(_U64) if a.dtype != np.int64 else a.view(_U64)


def hash64(ids: Any, seed: int = 0) -> np.ndarray:
    """Seeded 64-bit mix of int64/uint64 ids (splitmix64 finaliser), returns uint64.

    ``z = u + (seed + 1) * 0x9e3779b97f4a7c15``;
    ``z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9``;
    ``z = (z ^ (z >> 27)) * 0x94d049bb133111eb``;
    ``z = z ^ (z >> 31)`` — all mod 2**64. For a fixed seed it is a bijection on uint64.
    """
    u = as_uint64(ids)
    s = _U64(((int(seed) + 1) * GOLDEN) & 0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        z = u + s
        z = (z ^ (z >> _U64(30))) * _U64(MIX1)
        z = (z ^ (z >> _U64(27))) * _U64(MIX2)
        z = z ^ (z >> _U64(31))
    return z


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {rng}, got {v}")
    return v


# ----------------------------------------------------------------------------- schemes

class KeyScheme:
    """Base of the three schemes. Subclasses are frozen dataclasses (hashable, comparable)."""

    kind: str = ""
    combiner: str = "add"

    @property
    def subtable_rows(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def num_subtables(self) -> int:
        return len(self.subtable_rows)

    def subtable_dims(self, dim: int) -> tuple[int, ...]:
        """Width of each sub-table's rows for a feature of embedding dimension ``dim``."""
        if self.combiner == "concat":
            # Split as evenly as possible; the first (dim mod k) sub-tables get one extra column.
            k = self.num_subtables
            if dim < k:
                raise ValueError(f"concat combiner: dim {dim} is smaller than {k} sub-tables")
            return tuple(dim // k + (1 if j < dim % k else 0) for j in range(k))
        return (dim,) * self.num_subtables

    def num_params(self, dim: int) -> int:
        return int(sum(r * d for r, d in zip(self.subtable_rows, self.subtable_dims(dim))))

    def row_keys(self, ids: Any) -> np.ndarray:
        """ids (int64/uint64 array, any shape S) -> int64 rows of shape S + (num_subtables,)."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        d = {"kind": self.kind}
        d.update(dataclasses.asdict(self))  # type: ignore[arg-type]
        d["combiner"] = self.combiner
        return d


def _mod(u: np.ndarray, n: int) -> np.ndarray:
    return u % _U64(n)


@dataclasses.dataclass(frozen=True)
class PlainKeys(KeyScheme):
    """One table of ``rows`` rows. ``hashed``: row = hash64(u, seed) mod rows, else u mod rows."""

    rows: int
    hashed: bool = True
    seed: int = 0
    kind = "plain"
    combiner = "add"

    def __post_init__(self):
        _check_int("plain.rows", self.rows, 1)
        _check_int("plain.seed", self.seed, 0, 2**63 - 1)

    @property
    def subtable_rows(self) -> tuple[int, ...]:
        return (int(self.rows),)

    def row_keys(self, ids: Any) -> np.ndarray:
        u = as_uint64(ids)
        h = hash64(u, self.seed) if self.hashed else u
        return _mod(h, self.rows).astype(np.int64)[..., None]


@dataclasses.dataclass(frozen=True)
class MultiHashKeys(KeyScheme):
    """Compositional embeddings: several small sub-tables combined by add / multiply / concat.

    strategy ``qr`` (quotient-remainder): ``v = (hash64(u, seed) if hashed else u) mod vocab``;
      sub-table 0 row ``v mod m`` (``m`` rows), sub-table 1 row ``v div m``
      (``ceil(vocab / m)`` rows). Collision-free over the virtual table of ``vocab`` rows.
    strategy ``kway``: sub-table ``i`` has ``sizes[i]`` rows, row ``hash64(u, seed + i) mod sizes[i]``
      (``hashed`` must be true).
    """

    strategy: str = "qr"
    vocab: int = 0               # qr: the virtual (uncompressed) table size
    m: int = 0                   # qr: remainder table size
    sizes: tuple[int, ...] = ()  # kway: rows per sub-table
    combiner: str = "add"
    hashed: bool = True
    seed: int = 0
    kind = "multihash"

    def __post_init__(self):
        if self.strategy not in ("qr", "kway"):
            raise ValueError(f"multihash.strategy must be 'qr' or 'kway', got {self.strategy!r}")
        if self.combiner not in ("add", "multiply", "concat"):
            raise ValueError(
                f"multihash.combiner must be 'add', 'multiply' or 'concat', got {self.combiner!r}")
        _check_int("multihash.seed", self.seed, 0, 2**63 - 1 - 64)
        if self.strategy == "qr":
            _check_int("multihash.vocab", self.vocab, 2)
            _check_int("multihash.m", self.m, 2, self.vocab - 1)
            if self.sizes:
                raise ValueError("multihash.sizes is for strategy 'kway'; qr uses vocab and m")
        else:
            object.__setattr__(self, "sizes", tuple(int(s) for s in self.sizes))
            if not 2 <= len(self.sizes) <= 8:
                raise ValueError(f"multihash kway needs 2..8 sizes, got {list(self.sizes)}")
            for i, s in enumerate(self.sizes):
                _check_int(f"multihash.sizes[{i}]", s, 1)
            if not self.hashed:
                raise ValueError("multihash kway requires hashed ids (hashed: true)")
            if self.vocab or self.m:
                raise ValueError("multihash.vocab/m are for strategy 'qr'; kway uses sizes")

    @property
    def subtable_rows(self) -> tuple[int, ...]:
        if self.strategy == "qr":
            return (int(self.m), -(-int(self.vocab) // int(self.m)))
        return tuple(self.sizes)

    def row_keys(self, ids: Any) -> np.ndarray:
        u = as_uint64(ids)
        if self.strategy == "qr":
            v = _mod(hash64(u, self.seed) if self.hashed else u, self.vocab)
            m = _U64(self.m)
            return np.stack([v % m, v // m], axis=-1).astype(np.int64)
        return np.stack([_mod(hash64(u, self.seed + i), n) for i, n in enumerate(self.sizes)],
                        axis=-1).astype(np.int64)

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "strategy": self.strategy, "combiner": self.combiner,
             "hashed": self.hashed, "seed": self.seed}
        if self.strategy == "qr":
            d.update(vocab=self.vocab, m=self.m)
        else:
            d.update(sizes=list(self.sizes))
        return d


@dataclasses.dataclass(frozen=True)
class BinaryCodeKeys(KeyScheme):
    """Binary-code hash embedding (Yan et al. 2021): code = low ``bits`` bits of
    ``hash64(u, seed)`` (or of ``u`` when not hashed); ``n = ceil(bits / block_bits)`` blocks.

    ``succession``: block j = code bits ``[j*block_bits, min((j+1)*block_bits, bits))``.
    ``skip``: block j = code bits ``j, j+n, j+2n, ... (< bits)``.
    Inside a block, the bit taken first (lowest position) is the block row's bit 0.
    Sub-table j has ``2**len(block j)`` rows; the sub-vectors are summed (combiner ``add``).
    """

    bits: int = 32
    block_bits: int = 8
    strategy: str = "succession"
    hashed: bool = True
    seed: int = 0
    kind = "binary_code"
    combiner = "add"

    def __post_init__(self):
        _check_int("binary_code.bits", self.bits, 1, 64)
        _check_int("binary_code.block_bits", self.block_bits, 1, 24)
        _check_int("binary_code.seed", self.seed, 0, 2**63 - 1)
        if self.block_bits > self.bits:
            raise ValueError(f"binary_code.block_bits ({self.block_bits}) > bits ({self.bits})")
        if self.strategy not in ("succession", "skip"):
            raise ValueError(
                f"binary_code.strategy must be 'succession' or 'skip', got {self.strategy!r}")

    @property
    def num_blocks(self) -> int:
        return -(-self.bits // self.block_bits)

    def block_positions(self) -> list[list[int]]:
        """Code bit positions of each block, lowest first (the block row's bit 0 first)."""
        n, t, b = self.num_blocks, self.block_bits, self.bits
        if self.strategy == "succession":
            return [list(range(j * t, min((j + 1) * t, b))) for j in range(n)]
        return [list(range(j, b, n)) for j in range(n)]

    @property
    def subtable_rows(self) -> tuple[int, ...]:
        return tuple(1 << len(p) for p in self.block_positions())

    def row_keys(self, ids: Any) -> np.ndarray:
        u = as_uint64(ids)
        code = hash64(u, self.seed) if self.hashed else u
        if self.bits < 64:
            code = code & _U64((1 << self.bits) - 1)
        cols = []
        one = _U64(1)
        for pos in self.block_positions():
            if self.strategy == "succession":
                cols.append((code >> _U64(pos[0])) & _U64((1 << len(pos)) - 1))
            else:
                r = np.zeros_like(code)
                for i, p in enumerate(pos):
                    r |= ((code >> _U64(p)) & one) << _U64(i)
                cols.append(r)
        return np.stack(cols, axis=-1).astype(np.int64)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "bits": self.bits, "block_bits": self.block_bits,
                "strategy": self.strategy, "hashed": self.hashed, "seed": self.seed,
                "combiner": self.combiner}


@dataclasses.dataclass(frozen=True)
class FreqAwareKeys(KeyScheme):
    """Frequency-aware: exact rows for at most ``hot_rows`` hot ids, ``tail`` for the rest.

    Sub-table 0 is the hot table, keyed by the raw id (row key 0 = the id as int64); sub-tables
    1.. are the tail scheme's. An id the hot table holds is embedded by its hot row alone, any
    other id by the tail scheme (its sub-vectors combined by the tail's combiner). Which ids are
    hot is data, not part of the scheme: training picks them with a count-min sketch
    (``admit_count``, ``replace_ratio``, ``sketch_depth``, ``sketch_width``;
    recstrata.training.hot_ids) and
    freezes them at export, where the hot table's rows become the bundle's sub-table 0.
    """

    hot_rows: int
    tail: KeyScheme
    admit_count: int = 4           # training: an id becomes hot once the sketch counts this many
    replace_ratio: float = 2.0     # training: a newcomer replaces a hot id counted this many times less
    sketch_depth: int = 4
    sketch_width: int = 0          # 0 = max(4096, next power of two >= 8 * hot_rows)
    kind = "freq_aware"

    def __post_init__(self):
        _check_int("freq_aware.hot_rows", self.hot_rows, 1, 1 << 40)
        _check_int("freq_aware.admit_count", self.admit_count, 1)
        _check_int("freq_aware.sketch_depth", self.sketch_depth, 1, 16)
        _check_int("freq_aware.sketch_width", self.sketch_width, 0, 1 << 30)
        if not (isinstance(self.replace_ratio, (int, float)) and self.replace_ratio >= 0):
            raise ValueError(f"freq_aware.replace_ratio must be a number >= 0, got {self.replace_ratio!r}")
        if not isinstance(self.tail, (PlainKeys, MultiHashKeys, BinaryCodeKeys)):
            raise ValueError("freq_aware.tail must be a plain, multihash or binary_code scheme")

    @property
    def combiner(self) -> str:  # type: ignore[override]
        return self.tail.combiner

    @property
    def subtable_rows(self) -> tuple[int, ...]:
        return (int(self.hot_rows),) + tuple(self.tail.subtable_rows)

    def subtable_dims(self, dim: int) -> tuple[int, ...]:
        return (dim,) + tuple(self.tail.subtable_dims(dim))

    def num_params(self, dim: int) -> int:
        # the hot table's rows plus its 8-byte id per row (counted as two float32s)
        return int(self.hot_rows) * (dim + 2) + self.tail.num_params(dim)

    def sketch_columns(self) -> int:
        if self.sketch_width:
            return int(self.sketch_width)
        return max(4096, 1 << (8 * int(self.hot_rows) - 1).bit_length())

    def row_keys(self, ids: Any) -> np.ndarray:
        u = as_uint64(ids)
        return np.concatenate([u.view(np.int64)[..., None], self.tail.row_keys(u)], axis=-1)

    def to_dict(self) -> dict:
        """The bundle's key scheme (the sketch parameters stay in the training config)."""
        return {"kind": self.kind, "hot_rows": int(self.hot_rows), "tail": self.tail.to_dict()}


_KINDS = {"plain": PlainKeys, "multihash": MultiHashKeys, "binary_code": BinaryCodeKeys,
          "freq_aware": FreqAwareKeys}


def scheme_from_dict(d: Mapping[str, Any]) -> KeyScheme:
    """Inverse of ``KeyScheme.to_dict`` (also the manifest's ``key_scheme`` object)."""
    d = dict(d)
    kind = d.pop("kind", None)
    if kind == "freq_aware":
        tail = d.pop("tail", None)
        if not isinstance(tail, Mapping) or tail.get("kind") not in ("plain", "multihash", "binary_code"):
            raise ValueError("freq_aware.tail must be a plain, multihash or binary_code key scheme "
                             "object, like {\"kind\": \"multihash\", \"strategy\": \"qr\", ...}")
        d["tail"] = scheme_from_dict(tail)
    if kind not in _KINDS:
        raise ValueError(f"unknown key scheme kind {kind!r}; expected one of {sorted(_KINDS)}")
    cls = _KINDS[kind]
    if kind in ("plain", "binary_code"):
        comb = d.pop("combiner", "add")
        if comb != "add":
            raise ValueError(f"{kind} sub-vectors are always combined by 'add', got {comb!r}")
    if "sizes" in d:
        d["sizes"] = tuple(d["sizes"])
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {kind} key-scheme field(s) {unknown}; allowed: {sorted(names)}")
    return cls(**d)


# ----------------------------------------------------------------------------- pooling

COMBINERS = ("sum", "mean", "sqrtn")


def pool_weights(lengths: np.ndarray, width: int, combiner: str) -> np.ndarray:
    """Per-value weights [B, width] of a padded multi-valued feature: value i of row b counts
    iff ``i < lengths[b]``; sum -> 1, mean -> 1/n, sqrtn -> 1/sqrt(n); rows with n == 0 get all
    zeros (the pooled vector of a missing/empty feature is the zero vector)."""
    if combiner not in COMBINERS:
        raise ValueError(f"combiner must be one of {COMBINERS}, got {combiner!r}")
    n = np.asarray(lengths, dtype=np.int64)
    live = np.arange(width)[None, :] < n[:, None]
    nf = np.maximum(n, 1).astype(np.float32)[:, None]
    scale = {"sum": np.ones_like(nf), "mean": 1.0 / nf, "sqrtn": 1.0 / np.sqrt(nf)}[combiner]
    return np.where(live, scale, 0.0).astype(np.float32)


# ----------------------------------------------------------------------------- vectors

def _sample_ids() -> np.ndarray:
    edge = [0, 1, 2, 3, 7, 8, 255, 256, 1000, 65535, 65536, 123456789, 2**31 - 1, 2**31,
            2**32 - 1, 2**32, 2**62, 2**63 - 1, -1, -2, -1000, -(2**31), -(2**63)]
    rng = np.random.default_rng(20261127)
    rand = rng.integers(-(2**63), 2**63 - 1, size=24, dtype=np.int64, endpoint=True)
    return np.concatenate([np.array(edge, dtype=np.int64), rand])


SAMPLE_STRINGS = ["", "a", "b", "ab", "abc", "hello", "user_42", "68fd1e64", "0000000",
                  "Ω≈ç√", "日本語", "x" * 100, "a\0b", "trailing\0", "\0", " ", "ID-18446744073709551615"]


def standard_schemes() -> dict[str, KeyScheme]:
    """The parameter sets the cross-language test vectors cover (name -> scheme)."""
    return {
        "plain_hash_1000": PlainKeys(rows=1000),
        "plain_hash_seed7_97": PlainKeys(rows=97, seed=7),
        "plain_mod_100": PlainKeys(rows=100, hashed=False),
        "plain_hash_1": PlainKeys(rows=1),
        "qr_hash_v1000000_m1000": MultiHashKeys(strategy="qr", vocab=1_000_000, m=1000),
        "qr_mod_v1000_m32_concat": MultiHashKeys(strategy="qr", vocab=1000, m=32,
                                                 hashed=False, combiner="concat"),
        "qr_hash_seed3_v99991_m17_mul": MultiHashKeys(strategy="qr", vocab=99991, m=17, seed=3,
                                                      combiner="multiply"),
        "kway_2_1021_997": MultiHashKeys(strategy="kway", sizes=(1021, 997)),
        "kway_3_seed5_concat": MultiHashKeys(strategy="kway", sizes=(64, 100, 7), seed=5,
                                             combiner="concat"),
        "bc_succ_64_8": BinaryCodeKeys(bits=64, block_bits=8),
        "bc_succ_20_6": BinaryCodeKeys(bits=20, block_bits=6, seed=11),
        "bc_skip_32_4": BinaryCodeKeys(bits=32, block_bits=4, strategy="skip"),
        "bc_skip_13_5_raw": BinaryCodeKeys(bits=13, block_bits=5, strategy="skip", hashed=False),
        "bc_succ_64_16_raw": BinaryCodeKeys(bits=64, block_bits=16, hashed=False),
        "freq_1000_qr": FreqAwareKeys(hot_rows=1000, tail=MultiHashKeys(strategy="qr", vocab=99991,
                                                                        m=17, seed=3)),
        "freq_16_bc_skip": FreqAwareKeys(hot_rows=16, tail=BinaryCodeKeys(bits=32, block_bits=4,
                                                                          strategy="skip")),
    }


def test_vectors() -> dict:
    """Cross-language test vectors: JSON-ready dict. 64-bit values are decimal strings
    (JSON numbers lose precision above 2**53); row keys are plain ints (< 2**53, except
    column 0 of freq_aware, the id itself: compare them exactly, as Python ints)."""
    ids = _sample_ids()
    strings = SAMPLE_STRINGS
    sids = string_ids(strings)
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "int_ids": [str(int(i)) for i in ids],
        "strings_utf8_hex": [s.encode("utf-8").hex() for s in strings],
        "string_ids": [str(int(i)) for i in sids],
        "hash64": {str(seed): [str(int(h)) for h in hash64(ids, seed)] for seed in (0, 1, 12345)},
        "schemes": {},
    }
    for name, sch in standard_schemes().items():
        out["schemes"][name] = {
            "scheme": sch.to_dict(),
            "subtable_rows": list(sch.subtable_rows),
            "int_keys": sch.row_keys(ids).tolist(),
            "string_keys": sch.row_keys(sids).tolist(),
        }
    return out


if __name__ == "__main__":  # python -m recstrata.training.keys > vectors.json
    import json
    import sys

    json.dump(test_vectors(), sys.stdout, indent=1)
    sys.stdout.write("\n")
