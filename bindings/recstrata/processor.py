"""The Python face of a loaded model: numpy arrays in, numpy arrays out.

    from recstrata.processor import Model

    with Model("/models/ctr", session_num=2) as model:
        print(model.inputs)                      # [TensorSpec(name, dtype, shape), ...]
        out = model.run({"dense": x, "ids": ids})  # {"prob": np.ndarray, ...}

Contracts
- A ``Model`` wraps one ``rs_model`` (a SessionGroup in librecstrata.so). It is
  safe to call :meth:`Model.run`, :meth:`Model.predict_bytes`,
  :meth:`Model.describe` and :meth:`Model.stats` from any number of threads at
  once; cffi releases the GIL for the native call, so threads really run in
  parallel inside TensorFlow.
- :meth:`Model.close` waits for calls already inside the library to finish,
  then frees the native model; later calls raise ``FailedPreconditionError``.
  ``__del__`` closes a model that was never closed (a safety net only; close
  models explicitly or use ``with``).
- Inputs are borrowed by the library for the duration of one call and never
  retained. A C-contiguous, native-byte-order numpy array is passed by pointer
  without a Python-side copy (the library hands 64-byte-aligned buffers to
  TensorFlow without any copy; :func:`aligned_empty` makes such arrays). Other
  arrays are converted to contiguous copies first.
- dtypes are strict for numpy arrays: an array whose dtype differs from the
  signature's is sent as it is and the library rejects it with
  ``InvalidArgumentError`` (silently casting float64 to float32 hides bugs).
  Python lists and scalars have no dtype of their own and are converted to the
  signature dtype. String inputs take numpy ``object``/``bytes_``/``str_``
  arrays or lists of ``bytes``/``str`` (str is UTF-8 encoded).
- Outputs are copied out of the native result into fresh numpy arrays and the
  result is freed once, before :meth:`Model.run` returns. String outputs come
  back as numpy ``object`` arrays of ``bytes``.
- Errors raise the typed exceptions of :mod:`recstrata.errors`, carrying the
  library's status code and message.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from os import PathLike, fspath
from typing import Any, Iterable, Mapping

import numpy as np

from recstrata import _native
from recstrata._native import check, ffi, take_string
from recstrata._handle import NativeHandle
from recstrata.errors import InvalidArgumentError

__all__ = ["Model", "Processor", "TensorSpec", "aligned_empty", "DTYPES"]

# rs_dtype -> numpy dtype. Values equal TF_DataType / ArrayDataType numbers.
DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.float32),
    2: np.dtype(np.float64),
    3: np.dtype(np.int32),
    4: np.dtype(np.uint8),
    5: np.dtype(np.int16),
    6: np.dtype(np.int8),
    7: np.dtype(object),  # RS_DT_STRING
    9: np.dtype(np.int64),
    10: np.dtype(np.bool_),
    17: np.dtype(np.uint16),
    19: np.dtype(np.float16),
}
try:  # bfloat16 has no numpy type of its own; ml_dtypes ships with TensorFlow.
    import ml_dtypes

    DTYPES[14] = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - TF always brings ml_dtypes
    pass

_RS_DT_STRING = 7
_CODE_OF: dict[np.dtype, int] = {dt: code for code, dt in DTYPES.items() if code != _RS_DT_STRING}
_ALIGN = 64  # the library's zero-copy alignment (see rs_tensor in recstrata.h)


def _dtype_code(dtype: np.dtype) -> int:
    """rs_dtype of a numpy dtype; strings (object/bytes/str) are RS_DT_STRING."""
    if dtype.kind in "OSU":
        return _RS_DT_STRING
    code = _CODE_OF.get(dtype.newbyteorder("=") if dtype.byteorder == ">" else dtype)
    if code is None:
        raise InvalidArgumentError(f"numpy dtype {dtype} has no recstrata equivalent")
    return code


def aligned_empty(shape, dtype=np.float32) -> np.ndarray:
    """An uninitialised C-contiguous array whose data is 64-byte aligned.

    Arrays made this way reach TensorFlow without any copy. Ordinary numpy
    arrays work too; the library then copies them once into aligned memory.
    """
    dtype = np.dtype(dtype)
    shape = (shape,) if np.isscalar(shape) else tuple(shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + _ALIGN, dtype=np.uint8)
    offset = (-raw.ctypes.data) % _ALIGN
    return raw[offset:offset + nbytes].view(dtype).reshape(shape)


@dataclass(frozen=True)
class TensorSpec:
    """One signature input or output.

    ``shape`` is a tuple with ``None`` for unknown dimensions, or ``None`` when
    even the rank is unknown. ``dtype`` is a numpy dtype (``object`` for
    strings); ``code`` is the rs_dtype / ArrayDataType number.
    """

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...] | None
    code: int

    @classmethod
    def _from_native(cls, t) -> "TensorSpec":
        if t.ndim < 0:
            shape = None
        else:
            shape = tuple(None if t.shape[i] < 0 else int(t.shape[i]) for i in range(t.ndim))
        dtype = DTYPES.get(t.dtype, np.dtype(np.void))
        return cls(ffi.string(t.name).decode("utf-8"), dtype, shape, int(t.dtype))


def _config_json(config: Mapping[str, Any] | str | None, kwargs: Mapping[str, Any]) -> str | None:
    if config is None and not kwargs:
        return None
    if isinstance(config, (str, bytes)):
        if not kwargs:
            return config.decode() if isinstance(config, bytes) else config
        try:
            base = json.loads(config)
        except json.JSONDecodeError as exc:
            raise InvalidArgumentError(f"config is not valid JSON: {exc}") from None
        if not isinstance(base, dict):
            raise InvalidArgumentError("config JSON must be an object to merge keyword options")
    elif config is None:
        base = {}
    elif isinstance(config, Mapping):
        base = dict(config)
    else:
        raise TypeError(f"config must be a dict, a JSON string or None, not {type(config).__name__}")
    base.update(kwargs)
    return json.dumps(base)


class _Inputs:
    """Native rs_tensor views of one call's feeds, plus everything they point to.

    Instances keep every numpy array and cffi buffer alive until the call ends,
    which is the whole borrowing contract of rs_model_run. This is the hot
    path of Model.run (one pass per input, ~1 us each): names come from a
    per-model cache, all shapes share one int64 buffer, and numeric data is
    passed with ffi.from_buffer (no copy for C-contiguous native-order arrays).
    """

    __slots__ = ("tensors", "count", "_keep")

    def __init__(self, feeds: Mapping[str, Any], specs: Mapping[str, TensorSpec],
                 names: Mapping[str, Any]):
        n = len(feeds)
        self.count = n
        self.tensors = tensors = ffi.new("rs_tensor[]", n or 1)
        keep: list[Any] = []
        self._keep = keep
        dims: list[int] = []
        offsets: list[int] = []
        for i, (name, value) in enumerate(feeds.items()):
            cname = names.get(name)
            if cname is None:  # not a signature input: the library reports it
                if not isinstance(name, str):
                    raise TypeError(f"feed names must be str, got {type(name).__name__}")
                cname = ffi.new("char[]", name.encode("utf-8"))
                keep.append(cname)
            if type(value) is np.ndarray:
                arr = value
            elif isinstance(value, (np.ndarray, np.generic)):  # subclasses, numpy scalars:
                arr = np.asarray(value)                       # their dtype stays (strict)
            else:
                arr = _as_array(value, specs.get(name))
            dt = arr.dtype
            code = _CODE_OF.get(dt)
            if code is None:  # strings, non-native byte order, unsupported types
                code = _dtype_code(dt)
                if code != _RS_DT_STRING and not dt.isnative:
                    arr = arr.astype(dt.newbyteorder("="))
            t = tensors[i]
            t.name = cname
            t.dtype = code
            t.ndim = arr.ndim
            offsets.append(len(dims))
            dims.extend(arr.shape)
            if code == _RS_DT_STRING:
                items, blob = _string_items(name, arr)
                keep.append(items)
                keep.append(blob)
                t.data = ffi.from_buffer(items) if arr.size else ffi.NULL
                t.byte_size = arr.size * _RS_BYTES_SIZE
                continue
            try:
                buf = ffi.from_buffer(arr)  # keeps arr alive; fails unless C-contiguous
            except (ValueError, BufferError, TypeError):
                arr = np.ascontiguousarray(arr)
                buf = ffi.from_buffer(arr)
            keep.append(buf)
            t.data = buf
            t.byte_size = arr.nbytes
        shape_buf = ffi.new("int64_t[]", dims or 1)
        keep.append(shape_buf)
        for i, off in enumerate(offsets):
            tensors[i].shape = shape_buf + off


def _as_array(value: Any, spec: TensorSpec | None) -> np.ndarray:
    """Lists and scalars take the signature dtype (strings: object arrays)."""
    if spec is None:
        return np.asarray(value)
    if spec.code == _RS_DT_STRING:
        return np.asarray(value, dtype=object)
    return np.asarray(value, dtype=spec.dtype)


_RS_BYTES_SIZE = ffi.sizeof("rs_bytes")
assert _RS_BYTES_SIZE == 16, "rs_bytes is read as two uint64 words (LP64 only)"


def _string_items(name: str, arr: np.ndarray):
    """(rs_bytes array as uint64 pairs, blob) for a string tensor.

    All strings are joined into one bytes blob and the rs_bytes entries point
    into it, which avoids a cffi object per element.
    """
    encoded = []
    for item in arr.ravel(order="C"):
        if isinstance(item, str):
            item = item.encode("utf-8")
        elif isinstance(item, (bytearray, memoryview)):
            item = bytes(item)
        elif not isinstance(item, bytes):  # np.bytes_ is a bytes subclass
            raise InvalidArgumentError(
                f"input {name!r}: string tensors take bytes or str, got {type(item).__name__}")
        encoded.append(item)
    blob = b"".join(encoded)
    base = int(ffi.cast("uintptr_t", ffi.from_buffer(blob)))
    sizes = np.fromiter(map(len, encoded), dtype=np.uint64, count=len(encoded))
    items = np.empty((len(encoded), 2), dtype=np.uint64)
    items[:, 1] = sizes
    items[:, 0] = base
    if len(encoded) > 1:
        items[1:, 0] += np.cumsum(sizes[:-1], dtype=np.uint64)
    return items, blob


def _copy_out(t) -> np.ndarray:
    """A fresh numpy array holding a copy of an output rs_tensor view."""
    shape = tuple(ffi.unpack(t.shape, t.ndim)) if t.ndim > 0 else ()
    if t.dtype == _RS_DT_STRING:
        n = math.prod(shape)
        items = ffi.cast("rs_bytes*", t.data)
        out = np.empty(n, dtype=object)
        for j in range(n):
            out[j] = ffi.unpack(items[j].data, items[j].size) if items[j].size else b""
        return out.reshape(shape)
    dtype = DTYPES.get(t.dtype)
    if dtype is None:
        raise InvalidArgumentError(f"output {ffi.string(t.name).decode()!r} has unsupported dtype {t.dtype}")
    out = np.empty(shape, dtype=dtype)
    if out.nbytes != t.byte_size:
        raise InvalidArgumentError(f"output {ffi.string(t.name).decode()!r}: byte_size {t.byte_size} does not "
                                   f"match shape {shape} of {dtype}")
    if out.nbytes:
        ffi.memmove(out, t.data, out.nbytes)  # one copy, before rs_result_free
    return out


class Model(NativeHandle):
    """A SavedModel (or recstrata bundle) served by librecstrata.

    ``Model(path, config=None, **options)``: ``config`` is a dict, a JSON
    string or None; keyword options are merged over it. Keys are the DeepRec
    model_config names (``session_num``, ``select_session_policy``,
    ``signature_name``, ...; see docs/processor.md). Loading and warmup happen
    in the constructor.
    """

    _what = "model"

    def __init__(self, path: str | PathLike | None, config: Mapping[str, Any] | str | None = None,
                 **config_kwargs: Any):
        self._init_handle()
        self._lib = L = _native.lib()
        cfg = _config_json(config, config_kwargs)
        path_c = ffi.NULL if path is None else fspath(path).encode("utf-8")
        cfg_c = ffi.NULL if cfg is None else cfg.encode("utf-8")
        out = ffi.new("rs_model**")
        err = ffi.new("rs_error**")
        check(L.rs_model_open(path_c, cfg_c, out, err), err)
        self._adopt(out[0])
        self.path = None if path is None else fspath(path)
        self.inputs = self._specs(L.rs_model_num_inputs, L.rs_model_input)
        self.outputs = self._specs(L.rs_model_num_outputs, L.rs_model_output)
        self._input_by_name = {s.name: s for s in self.inputs}
        # C strings of the input names, reused by every run() (never freed early).
        self._input_names_c = {s.name: ffi.new("char[]", s.name.encode("utf-8")) for s in self.inputs}
        self._output_by_name = {s.name: s for s in self.outputs}

    # ---- lifetime ---------------------------------------------------------

    def _specs(self, count_fn, get_fn) -> list[TensorSpec]:
        specs = []
        err = ffi.new("rs_error**")
        t = ffi.new("rs_tensor*")
        for i in range(count_fn(self._handle)):
            check(get_fn(self._handle, i, t, err), err)
            specs.append(TensorSpec._from_native(t))
        return specs


    def _free(self, handle) -> None:
        self._lib.rs_model_close(handle)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<recstrata.Model {self.path!r} {state} inputs={[s.name for s in self.inputs]}>"

    # ---- calls ------------------------------------------------------------

    def run(self, feeds: Mapping[str, Any], outputs: Iterable[str] | str | None = None
            ) -> dict[str, np.ndarray]:
        """Runs the signature once; returns ``{output name: array}``.

        ``feeds`` maps every signature input name to an array. ``outputs``
        selects which outputs to fetch (default: all, in signature order).
        """
        if not isinstance(feeds, Mapping):
            raise TypeError("feeds must be a mapping of input name to array")
        inputs = _Inputs(feeds, self._input_by_name, self._input_names_c)
        if isinstance(outputs, str):
            outputs = [outputs]
        names = [] if outputs is None else [o.encode("utf-8") for o in outputs]
        name_bufs = [ffi.new("char[]", n) for n in names]
        name_arr = ffi.new("const char*[]", name_bufs) if name_bufs else ffi.NULL
        out = ffi.new("rs_result**")
        err = ffi.new("rs_error**")
        L = self._lib
        handle = self._enter()
        try:
            code = L.rs_model_run(handle, inputs.tensors, inputs.count, name_arr, len(names), out, err)
        finally:
            self._leave()
        check(code, err)
        result = out[0]
        try:
            t = ffi.new("rs_tensor*")
            outputs_np = {}
            for i in range(L.rs_result_count(result)):
                check(L.rs_result_output(result, i, t, err), err)
                outputs_np[ffi.string(t.name).decode("utf-8")] = _copy_out(t)
            return outputs_np
        finally:
            L.rs_result_free(result)

    __call__ = run

    def predict_bytes(self, request: bytes | bytearray | memoryview) -> bytes:
        """DeepRec wire path: a serialized PredictRequest in, PredictResponse out.

        An empty request returns the signature description (JSON text bytes),
        as DeepRec's ``process`` does. Build and parse the messages with
        :mod:`recstrata.wire.codec`.
        """
        req = ffi.from_buffer(request) if len(request) else ffi.NULL
        out = ffi.new("void**")
        size = ffi.new("size_t*")
        err = ffi.new("rs_error**")
        L = self._lib
        handle = self._enter()
        try:
            code = L.rs_model_predict(handle, req, len(request), out, size, err)
        finally:
            self._leave()
        check(code, err)
        try:
            return ffi.unpack(ffi.cast("char*", out[0]), size[0]) if size[0] else b""
        finally:
            L.rs_free(out[0])

    def _json(self, fn) -> dict:
        out = ffi.new("char**")
        err = ffi.new("rs_error**")
        handle = self._enter()
        try:
            code = fn(handle, out, err)
        finally:
            self._leave()
        check(code, err)
        return json.loads(take_string(out[0]))

    def describe(self) -> dict:
        """The model's description (signature, session group) as a dict."""
        return self._json(self._lib.rs_model_describe_json)

    def stats(self) -> dict:
        """Counters (requests, errors, per-session calls, latency) as a dict."""
        return self._json(self._lib.rs_model_stats_json)

    def trace(self) -> dict:
        """One generated batch-1 run with FULL_TRACE: the op types of the executed graph
        after TensorFlow's rewrites ({"partition_graphs": [...], "executed": {op: n}}).
        For diagnostics (slow)."""
        return self._json(self._lib.rs_model_trace_json)


Processor = Model
