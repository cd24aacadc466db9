"""Cross-language key vectors: the native bundle key derivation (C++,
processor/src/bundle/keys.cc) must equal recstrata.training.keys bit for bit,
for every scheme and parameter set of keys.standard_schemes(), int64 and
string ids. The vectors are generated from the Python definitions at test
time, so the two implementations can never drift silently."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recstrata import _native
from recstrata.errors import InvalidArgumentError, OutOfRangeError
from recstrata.training import keys

ffi = _native.ffi


def native_row_keys(scheme: dict, ids: np.ndarray) -> np.ndarray:
    lib = _native.lib()
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    n = ids.size
    ns = ffi.new("size_t*")
    err = ffi.new("rs_error**")
    # size probe first (capacity 0), then the real call
    code = lib.rs_bundle_row_keys(json.dumps(scheme).encode(), ffi.cast("int64_t*", ids.ctypes.data),
                                  n, ffi.NULL, 0, ns, err)
    if n:
        assert code != 0
        lib.rs_error_free(err[0])
    out = np.zeros((n, ns[0]), dtype=np.int64)
    _native.check(lib.rs_bundle_row_keys(json.dumps(scheme).encode(),
                                         ffi.cast("int64_t*", ids.ctypes.data), n,
                                         ffi.cast("int64_t*", out.ctypes.data), out.size, ns, err),
                  err)
    return out


def native_string_ids(strings) -> np.ndarray:
    lib = _native.lib()
    raw = [s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in strings]
    bufs = [ffi.from_buffer(b) if b else ffi.NULL for b in raw]
    items = ffi.new("rs_bytes[]", max(len(raw), 1))
    for i, (b, p) in enumerate(zip(raw, bufs)):
        items[i].data = ffi.cast("const char*", p) if b else ffi.NULL
        items[i].size = len(b)
    out = np.zeros(len(raw), dtype=np.int64)
    err = ffi.new("rs_error**")
    _native.check(lib.rs_bundle_string_ids(items, len(raw), ffi.cast("int64_t*", out.ctypes.data),
                                           err), err)
    return out


VECTORS = keys.test_vectors()


def test_string_ids_match_python():
    strings = [bytes.fromhex(h) for h in VECTORS["strings_utf8_hex"]]
    expected = np.array([int(s) for s in VECTORS["string_ids"]], dtype=np.int64)
    np.testing.assert_array_equal(native_string_ids(strings), expected)


@pytest.mark.parametrize("name", sorted(VECTORS["schemes"]))
def test_row_keys_match_python_vectors(name):
    case = VECTORS["schemes"][name]
    ids = np.array([int(s) for s in VECTORS["int_ids"]], dtype=np.int64)
    sids = np.array([int(s) for s in VECTORS["string_ids"]], dtype=np.int64)
    np.testing.assert_array_equal(native_row_keys(case["scheme"], ids), np.array(case["int_keys"]))
    np.testing.assert_array_equal(native_row_keys(case["scheme"], sids),
                                  np.array(case["string_keys"]))
    # string path end to end: strings -> native ids -> native keys
    strings = [bytes.fromhex(h) for h in VECTORS["strings_utf8_hex"]]
    np.testing.assert_array_equal(native_row_keys(case["scheme"], native_string_ids(strings)),
                                  np.array(case["string_keys"]))
    keys_arr = np.array(case["int_keys"])
    if case["scheme"]["kind"] == "freq_aware":   # column 0 is the id itself (the hot table's key)
        np.testing.assert_array_equal(keys_arr[:, 0], ids)
        keys_arr, rows = keys_arr[:, 1:], case["subtable_rows"][1:]
    else:
        rows = case["subtable_rows"]
    assert ((keys_arr >= 0) & (keys_arr < np.array(rows))).all()


def _random_schemes(rng):
    out = []
    for _ in range(40):
        kind = rng.choice(["plain", "qr", "kway", "bc"])
        seed = int(rng.integers(0, 2**40))
        if kind == "plain":
            out.append(keys.PlainKeys(rows=int(rng.integers(1, 10**9)), hashed=bool(rng.integers(2)),
                                      seed=seed))
        elif kind == "qr":
            vocab = int(rng.integers(3, 10**12))
            out.append(keys.MultiHashKeys(strategy="qr", vocab=vocab, m=int(rng.integers(2, min(vocab, 10**6))),
                                          hashed=bool(rng.integers(2)), seed=seed,
                                          combiner=str(rng.choice(["add", "multiply", "concat"]))))
        elif kind == "kway":
            k = int(rng.integers(2, 9))
            out.append(keys.MultiHashKeys(strategy="kway", sizes=tuple(int(s) for s in rng.integers(1, 10**7, k)),
                                          seed=seed))
        else:
            bits = int(rng.integers(1, 65))
            out.append(keys.BinaryCodeKeys(bits=bits, block_bits=int(rng.integers(1, min(bits, 24) + 1)),
                                           strategy=str(rng.choice(["succession", "skip"])),
                                           hashed=bool(rng.integers(2)), seed=seed))
    return out


def test_random_parameter_sets_match_python():
    rng = np.random.default_rng(5)
    ids = rng.integers(-(2**63), 2**63 - 1, size=500, dtype=np.int64, endpoint=True)
    schemes = _random_schemes(rng)
    schemes += [keys.FreqAwareKeys(hot_rows=int(rng.integers(1, 10**6)), tail=t) for t in schemes[:12]]
    for scheme in schemes:
        np.testing.assert_array_equal(native_row_keys(scheme.to_dict(), ids), scheme.row_keys(ids),
                                      err_msg=str(scheme))


def test_random_strings_match_python():
    rng = np.random.default_rng(6)
    strings = ["".join(chr(int(c)) for c in rng.integers(1, 0x3000, size=int(rng.integers(0, 40))))
               for _ in range(300)]
    np.testing.assert_array_equal(native_string_ids(strings), keys.string_ids(strings))


@pytest.mark.parametrize("scheme, message", [
    ({"kind": "nope"}, "unknown key scheme kind"),
    ({"kind": "plain", "rows": 0}, "plain.rows"),
    ({"kind": "multihash", "strategy": "qr", "vocab": 10, "m": 10}, "multihash.m"),
    ({"kind": "multihash", "strategy": "kway", "sizes": [5]}, "2..8 sizes"),
    ({"kind": "multihash", "strategy": "kway", "sizes": [5, 6], "hashed": False}, "hashed"),
    ({"kind": "binary_code", "bits": 65, "block_bits": 8}, "binary_code.bits"),
    ({"kind": "binary_code", "bits": 8, "block_bits": 9}, "block_bits"),
    ({"kind": "plain", "rows": 5, "bogus": 1}, "bogus"),
    ({"kind": "freq_aware", "hot_rows": 5}, "needs a tail"),
    ({"kind": "freq_aware", "hot_rows": 0, "tail": {"kind": "plain", "rows": 5}}, "hot_rows"),
    ({"kind": "freq_aware", "hot_rows": 5, "tail": {"kind": "dynamic"}}, "tail must be"),
    ({"kind": "freq_aware", "hot_rows": 5, "rows": 3, "tail": {"kind": "plain", "rows": 5}},
     "only hot_rows and tail"),
    ({"kind": "freq_aware", "hot_rows": 5, "tail": {"kind": "plain", "rows": 0}}, "plain.rows"),
    ({"kind": "plain", "rows": 5, "hot_rows": 3}, "fields of kind 'freq_aware'"),
])
def test_invalid_schemes_are_refused(scheme, message):
    with pytest.raises(InvalidArgumentError, match=message):
        native_row_keys(scheme, np.arange(3))


def test_small_output_buffer_is_refused():
    lib = _native.lib()
    ids = np.arange(4, dtype=np.int64)
    out = np.zeros(7, dtype=np.int64)
    err = ffi.new("rs_error**")
    ns = ffi.new("size_t*")
    code = lib.rs_bundle_row_keys(b'{"kind":"multihash","strategy":"qr","vocab":100,"m":10}',
                                  ffi.cast("int64_t*", ids.ctypes.data), 4,
                                  ffi.cast("int64_t*", out.ctypes.data), 7, ns, err)
    assert ns[0] == 2
    with pytest.raises(OutOfRangeError):
        _native.check(code, err)
