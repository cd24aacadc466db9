"""Key functions of every embedding scheme against hand-computed examples (no TensorFlow)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from recstrata.training import keys as K

M64 = (1 << 64) - 1


def ref_hash64(u: int, seed: int) -> int:
    """Independent pure-Python splitmix64 finaliser (docs/embedding-keys.md section 2)."""
    z = (u + (seed + 1) * 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def ref_fnv(b: bytes) -> int:
    h = 0xCBF29CE484222325
    for c in b:
        h = ((h ^ c) * 0x100000001B3) & M64
    return h


def test_fnv1a64_known_values():
    # Published FNV-1a 64 values.
    assert int(K.fnv1a64([""])[0]) == 0xCBF29CE484222325
    assert int(K.fnv1a64(["a"])[0]) == 0xAF63DC4C8601EC8C
    assert int(K.fnv1a64(["foobar"])[0]) == 0x85944171F73967E8
    assert K.string_ids(["a"])[0] == -5808556873153909620
    strs = ["", "a", "trailing\0", "\0", "a\0b", "日本語", "x" * 300]
    got = K.fnv1a64(strs)
    assert [int(g) for g in got] == [ref_fnv(s.encode()) for s in strs]
    # bytes are hashed as given, str as UTF-8
    assert K.fnv1a64([b"\xff\x00"])[0] == ref_fnv(b"\xff\x00")
    # invalid UTF-8 read from a file (surrogateescape) hashes as its raw bytes
    assert K.fnv1a64([b"a\xffb".decode("utf-8", "surrogateescape")])[0] == ref_fnv(b"a\xffb")
    assert K.fnv1a64(np.array([["a", "b"], ["c", ""]], dtype=object)).shape == (2, 2)


def test_hash64_splitmix_reference():
    assert int(K.hash64(np.array([0]), 0)[0]) == 0xE220A8397B1DCDAF
    ids = np.array([0, 1, -1, 2**63 - 1, -(2**63), 123456789], dtype=np.int64)
    for seed in (0, 1, 7, 2**40):
        got = K.hash64(ids, seed)
        assert got.dtype == np.uint64
        assert [int(g) for g in got] == [ref_hash64(int(i) & M64, seed) for i in ids]


def test_plain_keys():
    sch = K.PlainKeys(rows=100, hashed=False)
    assert K.PlainKeys(rows=100, hashed=False).row_keys([5, 123, -1]).tolist() == [[5], [23], [15]]
    assert sch.subtable_rows == (100,)
    h = K.PlainKeys(rows=1000, seed=3).row_keys(np.array([42, -7]))
    assert h[:, 0].tolist() == [ref_hash64(42, 3) % 1000, ref_hash64((-7) & M64, 3) % 1000]
    assert K.PlainKeys(rows=1).row_keys(np.arange(5)).tolist() == [[0]] * 5


def test_multihash_qr_keys():
    sch = K.MultiHashKeys(strategy="qr", vocab=1000, m=32, hashed=False, combiner="concat")
    # 999 -> (999 % 32, 999 // 32) = (7, 31); -1 -> 18446744073709551615 % 1000 = 615 -> (7, 19)
    assert sch.row_keys([999, 5, -1]).tolist() == [[7, 31], [5, 0], [7, 19]]
    assert sch.subtable_rows == (32, 32)   # ceil(1000 / 32) = 32
    assert sch.subtable_dims(16) == (8, 8)
    hs = K.MultiHashKeys(strategy="qr", vocab=99991, m=17, seed=3)
    v = ref_hash64(77, 3) % 99991
    assert hs.row_keys([77]).tolist() == [[v % 17, v // 17]]
    assert hs.subtable_rows == (17, 5882)
    # collision-free over the virtual table: distinct v give distinct (r0, r1)
    r = K.MultiHashKeys(strategy="qr", vocab=1000, m=32, hashed=False).row_keys(np.arange(1000))
    assert len({tuple(x) for x in r.tolist()}) == 1000


def test_multihash_kway_keys():
    sch = K.MultiHashKeys(strategy="kway", sizes=(64, 100, 7), seed=5, combiner="concat")
    got = sch.row_keys([11, -2])
    want = [[ref_hash64(i & M64, 5 + w) % n for w, n in enumerate((64, 100, 7))] for i in (11, -2)]
    assert got.tolist() == want
    assert sch.subtable_dims(16) == (6, 5, 5)   # first dim % k sub-tables get one more column
    assert sch.subtable_dims(15) == (5, 5, 5)
    with pytest.raises(ValueError, match="smaller than"):
        sch.subtable_dims(2)
    assert K.MultiHashKeys(strategy="kway", sizes=(10, 20)).num_params(8) == 240


def test_binary_code_keys():
    skip = K.BinaryCodeKeys(bits=13, block_bits=5, strategy="skip", hashed=False)
    assert skip.block_positions() == [[0, 3, 6, 9, 12], [1, 4, 7, 10], [2, 5, 8, 11]]
    assert skip.row_keys([0b1011011010111]).tolist() == [[29, 15, 1]]
    assert skip.subtable_rows == (32, 16, 16)
    succ = K.BinaryCodeKeys(bits=20, block_bits=8, strategy="succession", hashed=False)
    # 0xABCDE masked to 20 bits -> blocks 0xDE, 0xBC, 0xA (last block has 4 bits)
    assert succ.row_keys([0xFFABCDE]).tolist() == [[0xDE, 0xBC, 0xA]]
    assert succ.subtable_rows == (256, 256, 16)
    full = K.BinaryCodeKeys(bits=64, block_bits=16, hashed=False)
    assert full.row_keys([-1]).tolist() == [[65535] * 4]
    hashed = K.BinaryCodeKeys(bits=64, block_bits=8, seed=2)
    h = ref_hash64(99, 2)
    assert hashed.row_keys([99]).tolist() == [[(h >> (8 * j)) & 255 for j in range(8)]]


def test_pool_weights():
    w = K.pool_weights(np.array([0, 1, 3]), 4, "mean")
    np.testing.assert_allclose(w, [[0, 0, 0, 0], [1, 0, 0, 0], [1 / 3, 1 / 3, 1 / 3, 0]], rtol=1e-6)
    w = K.pool_weights(np.array([4]), 4, "sqrtn")
    np.testing.assert_allclose(w, [[0.5] * 4])


@pytest.mark.parametrize("bad,match", [
    (dict(kind="plain", rows=0), "rows must be >= 1"),
    (dict(kind="plain", rows=10, combiner="concat"), "always combined by 'add'"),
    (dict(kind="multihash", strategy="qr", vocab=10, m=10), r"m must be in \[2, 9\]"),
    (dict(kind="multihash", strategy="kway", sizes=[5]), "2..8 sizes"),
    (dict(kind="multihash", strategy="qr", vocab=100, m=10, combiner="max"), "combiner"),
    (dict(kind="binary_code", bits=8, block_bits=9), "block_bits"),
    (dict(kind="binary_code", bits=65), "bits must be in"),
    (dict(kind="binary_code", strategy="zigzag"), "strategy"),
    (dict(kind="plain", rows=10, colour=1), "unknown plain key-scheme field"),
    (dict(kind="lsh"), "unknown key scheme kind"),
])
def test_scheme_validation_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        K.scheme_from_dict(bad)


def test_vectors_roundtrip_and_no_tensorflow():
    v = K.test_vectors()
    for name, entry in v["schemes"].items():
        sch = K.scheme_from_dict(entry["scheme"])
        ids = np.array([int(i) for i in v["int_ids"]], dtype=np.int64)
        keys = np.array(entry["int_keys"])
        assert keys.shape == (len(ids), len(entry["subtable_rows"])), name
        assert (sch.row_keys(ids) == keys).all()
        rows = np.array(entry["subtable_rows"])
        if entry["scheme"]["kind"] == "freq_aware":   # column 0: the id, the hot table's key
            assert (keys[:, 0] == ids).all(), name
            keys, rows = keys[:, 1:], rows[1:]
        assert (keys >= 0).all() and (keys < rows).all(), name
    # the module is importable and runnable without TensorFlow
    code = ("import sys, json; from recstrata.training import keys, spec, data, synthetic; "
            "json.dumps(keys.test_vectors()); "
            "print('tensorflow' in sys.modules, 'recstrata._native' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
    json.dumps(v)
