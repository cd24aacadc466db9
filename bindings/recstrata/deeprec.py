"""A small cffi wrapper of libserving_processor.so, DeepRec's processor ABI.

DeepRec hosts (PAI-EAS style) dlopen a processor library and call four C
functions; recstrata's compatibility library exports them with DeepRec's exact
signatures, plus three of its own: ``batch_process_n`` (an explicit count),
``free_buffer`` (releases what the others return) and ``release_model``
(closes a model; DeepRec has no teardown). This module declares that
signature set itself -- it is DeepRec's ABI, not recstrata.h -- and exists to
exercise the entry points from Python (tests, tools). Services should use
:class:`recstrata.processor.Model`.

Return codes are DeepRec's: 200 for success, 500 for failure, with the error
text (not a PredictResponse) in the output buffer.
"""

from __future__ import annotations

import json
import threading
from os import PathLike, fspath
from typing import Any, Mapping, Sequence

import cffi

from recstrata._native import _preload_tensorflow
from recstrata._paths import compat_library_path

CDEF = """
void* initialize(const char* model_entry, const char* model_config, int* state);
int process(void* model_buf, const void* input_data, int input_size,
            void** output_data, int* output_size);
int batch_process(void* model_buf, const void* input_data[], int* input_size,
                  void* output_data[], int* output_size);
int batch_process_n(void* model_buf, const void* input_data[],
                    const int* input_size, void* output_data[], int* output_size,
                    int count);
int get_serving_model_info(void* model_buf, void** output_data, int* output_size);
void free_buffer(void* buffer);
void release_model(void* model_buf);
"""

ffi = cffi.FFI()
ffi.cdef(CDEF)
_lib = None
_lock = threading.Lock()

OK = 200
ERROR = 500


def lib():
    """The opened libserving_processor.so (loaded once per process)."""
    global _lib
    if _lib is None:
        with _lock:
            if _lib is None:
                _preload_tensorflow()
                _lib = ffi.dlopen(compat_library_path())
    return _lib


class DeepRecProcessor:
    """One model opened through DeepRec's ``initialize``.

    ``model_entry`` and ``model_config`` are passed through unchanged
    (``model_config`` may be a dict, serialized to JSON). ``state`` holds
    initialize's state out-parameter (0 on success, -1 and a NULL handle on
    failure). :meth:`close` calls ``release_model`` (recstrata's addition).
    """

    def __init__(self, model_entry: str | PathLike | None,
                 model_config: Mapping[str, Any] | str | None):
        if isinstance(model_config, Mapping):
            model_config = json.dumps(dict(model_config))
        self._lib = L = lib()
        state = ffi.new("int*", -12345)
        entry = ffi.NULL if model_entry is None else fspath(model_entry).encode()
        config = ffi.NULL if model_config is None else model_config.encode()
        self.handle = L.initialize(entry, config, state)
        self.state = state[0]

    def close(self) -> None:
        """Releases the model (release_model). Must not overlap other calls."""
        handle, self.handle = self.handle, ffi.NULL
        if handle != ffi.NULL:
            self._lib.release_model(handle)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def ok(self) -> bool:
        return self.handle != ffi.NULL and self.state == 0

    def _take(self, out, size) -> bytes:
        try:
            if out[0] == ffi.NULL:
                return b""
            return ffi.unpack(ffi.cast("char*", out[0]), max(size[0], 0))
        finally:
            self._lib.free_buffer(out[0])

    def process(self, request: bytes) -> tuple[int, bytes]:
        """(code, output bytes) of ``process``: a PredictResponse or error text.

        An empty ``request`` returns the signature description (DeepRec).
        """
        buf = ffi.from_buffer(request) if request else ffi.NULL
        out = ffi.new("void**")
        size = ffi.new("int*")
        code = self._lib.process(self.handle, buf, len(request), out, size)
        return code, self._take(out, size)

    def _batch(self, requests: Sequence[bytes], with_count: bool):
        n = len(requests)
        keep = [ffi.from_buffer(r) if r else ffi.NULL for r in requests]
        inputs = ffi.new("const void*[]", keep + [ffi.NULL])  # NULL-terminated
        sizes = ffi.new("int[]", [len(r) for r in requests] + [0])
        outs = ffi.new("void*[]", n + 1)
        out_sizes = ffi.new("int[]", n + 1)
        if with_count:
            code = self._lib.batch_process_n(self.handle, inputs, sizes, outs, out_sizes, n)
        else:
            code = self._lib.batch_process(self.handle, inputs, sizes, outs, out_sizes)
        results = []
        for i in range(n):
            try:
                data = ffi.unpack(ffi.cast("char*", outs[i]), max(out_sizes[i], 0)) \
                    if outs[i] != ffi.NULL else b""
            finally:
                self._lib.free_buffer(outs[i])
            results.append(data)
        return code, results

    def batch_process(self, requests: Sequence[bytes]) -> tuple[int, list[bytes]]:
        """``batch_process``: the count is conveyed by a NULL entry ending input_data[].

        An empty request in the list would end the batch early (its pointer is
        NULL), so use :meth:`batch_process_n` for such batches.
        """
        return self._batch(requests, with_count=False)

    def batch_process_n(self, requests: Sequence[bytes]) -> tuple[int, list[bytes]]:
        """``batch_process_n``: the same with an explicit count."""
        return self._batch(requests, with_count=True)

    def model_info(self) -> tuple[int, bytes]:
        """(code, bytes) of ``get_serving_model_info`` (a ServingModelInfo)."""
        out = ffi.new("void**")
        size = ffi.new("int*")
        code = self._lib.get_serving_model_info(self.handle, out, size)
        return code, self._take(out, size)
