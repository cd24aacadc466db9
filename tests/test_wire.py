"""recstrata.wire.codec: DeepRec PredictRequest/PredictResponse bytes <-> numpy.

The golden byte strings below are encoded by hand from the field numbers and
types of DeepRec's predict.proto, so they check wire compatibility
independently of our generated code.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from recstrata.wire import codec
from recstrata.wire import predict_pb2 as pb

# PredictRequest{signature_name: "s", inputs {"x": {DT_FLOAT, dim [1], float_val [1.0]}}}
GOLDEN_REQUEST = bytes.fromhex(
    "0a0173"                      # 1: signature_name "s"
    "1212"                        # 2: inputs map entry, 18 bytes
    "0a0178"                      #    key "x"
    "120d"                        #    value ArrayProto, 13 bytes
    "0801"                        #      dtype DT_FLOAT
    "12030a0101"                  #      array_shape {dim: [1]} (packed)
    "1a040000803f")               #      float_val [1.0] (packed)
# PredictResponse{outputs {"y": {DT_INT64, dim [2], int64_val [1, 300]}}}
GOLDEN_RESPONSE = bytes.fromhex(
    "0a11"                        # 1: outputs map entry, 17 bytes
    "0a0179"                      #    key "y"
    "120c"                        #    value, 12 bytes
    "0809"                        #      dtype DT_INT64
    "12030a0102"                  #      dim [2]
    "3a0301ac02")                 #      int64_val [1, 300] (packed varints)
# PredictResponse{outputs {"s": {DT_STRING, dim [2], string_val ["ab", ""]}}}
GOLDEN_STRING_RESPONSE = bytes.fromhex(
    "0a12" "0a0173" "120d" "0807" "12030a0102" "32026162" "3200")


def test_golden_request_bytes():
    assert codec.make_request({"x": np.array([1.0], np.float32)}, signature_name="s") == GOLDEN_REQUEST
    feeds, sig, filt = codec.parse_request(GOLDEN_REQUEST)
    assert sig == "s" and filt == []
    assert feeds["x"].dtype == np.float32 and feeds["x"].tolist() == [1.0]


def test_golden_response_bytes():
    out = codec.parse_response(GOLDEN_RESPONSE)
    assert out["y"].dtype == np.int64 and out["y"].tolist() == [1, 300]
    assert codec.make_response({"y": np.array([1, 300], np.int64)}) == GOLDEN_RESPONSE
    s = codec.parse_response(GOLDEN_STRING_RESPONSE)["s"]
    assert s.dtype == object and s.tolist() == [b"ab", b""]


def test_value_field_and_code_per_dtype():
    cases = [
        (np.float32, pb.DT_FLOAT, "float_val"), (np.float64, pb.DT_DOUBLE, "double_val"),
        (np.int32, pb.DT_INT32, "int_val"), (np.int16, pb.DT_INT16, "int_val"),
        (np.int8, pb.DT_INT8, "int_val"), (np.uint8, pb.DT_UINT8, "int_val"),
        (np.uint16, pb.DT_UINT16, "int_val"), (np.int64, pb.DT_INT64, "int64_val"),
        (np.bool_, pb.DT_BOOL, "bool_val"), (np.float16, pb.DT_HALF, "float_val"),
        (ml_dtypes.bfloat16, pb.DT_BFLOAT16, "float_val"),
        (np.complex64, pb.DT_COMPLEX64, "float_val"), (np.complex128, pb.DT_COMPLEX128, "double_val"),
    ]
    for dtype, code, field in cases:
        arr = np.arange(6).reshape(2, 3).astype(dtype)
        proto = codec.array_to_proto(arr)
        assert proto.dtype == code, dtype
        assert list(proto.array_shape.dim) == [2, 3]
        n = 12 if np.dtype(dtype).kind == "c" else 6
        assert len(getattr(proto, field)) == n, dtype
        back = codec.proto_to_array(proto)
        assert back.dtype == np.dtype(dtype) and back.shape == (2, 3)
        np.testing.assert_array_equal(back, arr)


def test_complex_interleaved():
    proto = codec.array_to_proto(np.array([1 + 2j, 3 - 4j], np.complex64))
    assert list(proto.float_val) == [1.0, 2.0, 3.0, -4.0]


@pytest.mark.parametrize("value", [
    np.array([b"a", b"", b"\x00\xff"], dtype=object),
    np.array([b"ab", b"c"]),              # numpy bytes_
    np.array(["h\u00e9", "x"]),            # numpy str_: UTF-8 encoded
    [b"x", "y"],
])
def test_strings(value):
    proto = codec.array_to_proto(value)
    assert proto.dtype == pb.DT_STRING
    back = codec.proto_to_array(proto)
    assert back.dtype == object
    expect = [v.encode() if isinstance(v, str) else bytes(v) for v in np.asarray(value).ravel()]
    assert back.ravel().tolist() == expect


def test_scalar_and_empty_shapes():
    for arr in (np.float32(2.5), np.zeros((0, 3), np.int64), np.zeros((2, 0, 4), np.float64)):
        arr = np.asarray(arr)
        back = codec.proto_to_array(codec.array_to_proto(arr))
        assert back.shape == arr.shape and back.dtype == arr.dtype


def test_big_endian_input_is_converted():
    arr = np.arange(4, dtype=">i4")
    back = codec.proto_to_array(codec.array_to_proto(arr))
    assert back.dtype == np.int32 and back.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64, np.float128 if hasattr(np, "float128") else np.uint32])
def test_unsupported_dtype_raises(dtype):
    with pytest.raises(ValueError, match="cannot travel"):
        codec.array_to_proto(np.zeros(2, dtype))


def test_inconsistent_protos_raise():
    bad_count = pb.ArrayProto(dtype=pb.DT_FLOAT, float_val=[1, 2, 3])
    bad_count.array_shape.dim.extend([2, 2])
    with pytest.raises(ValueError, match="do not fill"):
        codec.proto_to_array(bad_count)
    neg = pb.ArrayProto(dtype=pb.DT_FLOAT)
    neg.array_shape.dim.extend([-1])
    with pytest.raises(ValueError, match="negative"):
        codec.proto_to_array(neg)
    with pytest.raises(ValueError, match="unsupported"):
        codec.proto_to_array(pb.ArrayProto(dtype=pb.DT_RESOURCE))


def test_request_fields():
    data = codec.make_request({"a": np.ones(2, np.float32), "b": [1, 2]}, signature_name="sig",
                              output_filter=["y", "z"])
    req = pb.PredictRequest.FromString(data)
    assert req.signature_name == "sig" and list(req.output_filter) == ["y", "z"]
    assert set(req.inputs) == {"a", "b"} and req.inputs["b"].dtype == pb.DT_INT64
    assert codec.make_request({"a": [1.0]}, output_filter="y") == codec.make_request(
        {"a": [1.0]}, output_filter=["y"])


def test_garbage_response_raises():
    with pytest.raises(DecodeError):
        codec.parse_response(b"\xff\xff\xff\xff")


_DTYPES = st.sampled_from([np.float32, np.float64, np.int32, np.int64, np.int8, np.uint8,
                           np.int16, np.uint16, np.bool_, np.float16])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hnp.arrays(_DTYPES, hnp.array_shapes(min_dims=0, max_dims=3, max_side=5)))
def test_roundtrip_random_arrays(arr):
    data = codec.make_response({"out": arr})
    back = codec.parse_response(data)["out"]
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)  # NaNs compare equal here


# ---- through the native library: wire path == tensor path -------------------


def test_predict_bytes_matches_run(make_model, multi_model_dir):
    rng = np.random.default_rng(3)
    feeds = {"x_f32": rng.normal(size=(5, 4)).astype(np.float32), "x_f64": rng.normal(size=(5, 3)),
             "x_i32": rng.integers(-9, 9, (5, 2)).astype(np.int32), "x_i64": np.arange(5)}
    m = make_model(multi_model_dir)
    direct = m.run(feeds)
    wire = codec.parse_response(m.predict_bytes(codec.make_request(feeds)))
    assert set(wire) == set(direct)
    for k in direct:
        assert wire[k].dtype == direct[k].dtype and wire[k].shape == direct[k].shape, k
        np.testing.assert_array_equal(wire[k], direct[k])
    only = codec.parse_response(m.predict_bytes(codec.make_request(feeds, output_filter=["y_i64"])))
    assert list(only) == ["y_i64"]
    np.testing.assert_array_equal(only["y_i64"], direct["y_i64"])


def test_predict_bytes_strings(make_model, string_model_dir, tf_reference):
    feeds = {"s": np.array([b"abc", b"", "\u00e9".encode()], dtype=object), "n": np.array([1, 2, 3])}
    m = make_model(string_model_dir)
    out = codec.parse_response(m.predict_bytes(codec.make_request(feeds)))
    ref = tf_reference(string_model_dir, feeds)
    assert out["tagged"].tolist() == ref["tagged"].tolist()
    np.testing.assert_array_equal(out["length"], ref["length"])
    np.testing.assert_array_equal(out["bucket"], ref["bucket"])
