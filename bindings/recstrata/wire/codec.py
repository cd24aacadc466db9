"""Build and parse DeepRec PredictRequest / PredictResponse bytes from numpy.

The messages are recstrata.wire.predict_pb2 (generated from
processor/proto/recstrata/wire/predict.proto at build time). Their field
numbers and types equal DeepRec's tensorflow.eas messages, so the bytes travel
to and from any DeepRec processor or client unchanged.

Value fields per ArrayDataType (DeepRec's convention):
  DT_FLOAT, DT_HALF, DT_BFLOAT16 -> float_val     DT_DOUBLE -> double_val
  DT_INT32, DT_INT16, DT_INT8, DT_UINT8, DT_UINT16 -> int_val
  DT_INT64 -> int64_val   DT_BOOL -> bool_val     DT_STRING -> string_val
  DT_COMPLEX64 -> float_val, DT_COMPLEX128 -> double_val (real/imag interleaved)
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

from recstrata.wire import predict_pb2 as pb

__all__ = ["make_request", "parse_request", "make_response", "parse_response",
           "array_to_proto", "proto_to_array"]

try:
    import ml_dtypes

    _BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - TF always brings ml_dtypes
    _BF16 = None

# numpy dtype -> (ArrayDataType, value field)
_TO_WIRE: dict[np.dtype, tuple[int, str]] = {
    np.dtype(np.float32): (pb.DT_FLOAT, "float_val"),
    np.dtype(np.float64): (pb.DT_DOUBLE, "double_val"),
    np.dtype(np.int32): (pb.DT_INT32, "int_val"),
    np.dtype(np.uint8): (pb.DT_UINT8, "int_val"),
    np.dtype(np.int16): (pb.DT_INT16, "int_val"),
    np.dtype(np.int8): (pb.DT_INT8, "int_val"),
    np.dtype(np.uint16): (pb.DT_UINT16, "int_val"),
    np.dtype(np.int64): (pb.DT_INT64, "int64_val"),
    np.dtype(np.bool_): (pb.DT_BOOL, "bool_val"),
    np.dtype(np.float16): (pb.DT_HALF, "float_val"),
    np.dtype(np.complex64): (pb.DT_COMPLEX64, "float_val"),
    np.dtype(np.complex128): (pb.DT_COMPLEX128, "double_val"),
}
if _BF16 is not None:
    _TO_WIRE[_BF16] = (pb.DT_BFLOAT16, "float_val")

# ArrayDataType -> (numpy dtype of the result, value field, numpy dtype of the field)
_FROM_WIRE: dict[int, tuple[np.dtype, str, np.dtype]] = {
    code: (dt, field, np.dtype({"float_val": np.float32, "double_val": np.float64,
                                "int_val": np.int32, "int64_val": np.int64,
                                "bool_val": np.bool_}[field]))
    for dt, (code, field) in _TO_WIRE.items()
}
_FROM_WIRE[pb.DT_STRING] = (np.dtype(object), "string_val", np.dtype(object))


def _to_bytes(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, (bytearray, memoryview)):
        return bytes(item)
    raise TypeError(f"string tensors take bytes or str, got {type(item).__name__}")


def array_to_proto(value: Any, out: pb.ArrayProto | None = None) -> pb.ArrayProto:
    """Fills (or creates) an ArrayProto from an array-like.

    numpy ``object``/``bytes_``/``str_`` arrays and lists of bytes/str become
    DT_STRING (str is UTF-8 encoded). Other dtypes map as in the module doc;
    anything else (uint32, uint64, ...) raises ValueError, since DeepRec's
    wire format cannot carry it.
    """
    proto = pb.ArrayProto() if out is None else out
    arr = np.asarray(value)
    if arr.dtype.kind in "OSU":
        proto.dtype = pb.DT_STRING
        proto.array_shape.dim.extend(arr.shape)
        proto.string_val.extend(_to_bytes(x) for x in arr.ravel())
        return proto
    dtype = arr.dtype.newbyteorder("=") if not arr.dtype.isnative else arr.dtype
    entry = _TO_WIRE.get(dtype)
    if entry is None:
        raise ValueError(f"numpy dtype {arr.dtype} cannot travel in a DeepRec PredictRequest")
    code, field = entry
    proto.dtype = code
    proto.array_shape.dim.extend(arr.shape)
    flat = arr.ravel()
    if arr.dtype.kind == "c":  # interleave real/imag
        flat = flat.astype(np.complex64 if field == "float_val" else np.complex128).view(
            np.float32 if field == "float_val" else np.float64)
    elif dtype in (np.dtype(np.float16), _BF16):
        flat = flat.astype(np.float32)
    getattr(proto, field).extend(flat.tolist())
    return proto


def proto_to_array(proto: pb.ArrayProto) -> np.ndarray:
    """The numpy array held by an ArrayProto (strings: object array of bytes).

    Raises ValueError for an unsupported dtype or a value count that does not
    match the shape.
    """
    entry = _FROM_WIRE.get(proto.dtype)
    if entry is None:
        raise ValueError(f"unsupported ArrayDataType {proto.dtype}")
    dtype, field, field_dtype = entry
    shape = tuple(proto.array_shape.dim)
    if any(d < 0 for d in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    values = getattr(proto, field)
    if field == "string_val":
        flat = np.empty(len(values), dtype=object)
        flat[:] = list(values)
    else:
        flat = np.array(values, dtype=field_dtype)
        if dtype.kind == "c":
            flat = flat.view(dtype)
        elif dtype != field_dtype:
            flat = flat.astype(dtype)
    expected = int(np.prod(shape, dtype=np.int64))
    if flat.size != expected:
        raise ValueError(f"{flat.size} values do not fill shape {shape} ({expected} elements)")
    return flat.reshape(shape)


def make_request(feeds: Mapping[str, Any], signature_name: str = "",
                 output_filter: Iterable[str] | None = None) -> bytes:
    """Serialized PredictRequest for ``feeds`` ({input alias: array}).

    ``signature_name`` "" lets the server use its configured signature.
    ``output_filter`` names the outputs to return (None: all of them).
    """
    req = pb.PredictRequest(signature_name=signature_name)
    for name, value in feeds.items():
        array_to_proto(value, req.inputs[name])
    if output_filter is not None:
        if isinstance(output_filter, str):
            output_filter = [output_filter]
        req.output_filter.extend(output_filter)
    return req.SerializeToString()


def parse_request(data: bytes) -> tuple[dict[str, np.ndarray], str, list[str]]:
    """(feeds, signature_name, output_filter) of a serialized PredictRequest."""
    req = pb.PredictRequest()
    req.ParseFromString(data)
    return ({k: proto_to_array(v) for k, v in req.inputs.items()}, req.signature_name,
            list(req.output_filter))


def make_response(outputs: Mapping[str, Any]) -> bytes:
    """Serialized PredictResponse for {output alias: array} (for tests and mocks)."""
    resp = pb.PredictResponse()
    for name, value in outputs.items():
        array_to_proto(value, resp.outputs[name])
    return resp.SerializeToString()


def parse_response(data: bytes) -> dict[str, np.ndarray]:
    """{output alias: array} of a serialized PredictResponse.

    Raises google.protobuf.message.DecodeError for bytes that are not a
    PredictResponse, ValueError for an inconsistent ArrayProto.
    """
    resp = pb.PredictResponse()
    resp.ParseFromString(data)
    return {k: proto_to_array(v) for k, v in resp.outputs.items()}
