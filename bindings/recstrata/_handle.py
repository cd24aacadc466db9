"""Lifetime of a native handle that several threads call.

A native object (rs_model, rs_host, rs_lease) must not be freed while a call on
it runs. A NativeHandle counts the calls in flight: every call brackets its use
of the handle with ``h = self._enter()`` ... ``self._leave()``. ``close()``
refuses new calls (FailedPreconditionError "<what> is closed"), lets the native
object stop itself if it can do that while calls run (``_stop``), waits for the
calls in flight, then frees it (``_free``). Idempotent; also run by ``with``
exit and, as a safety net, by the finalizer.
"""
from __future__ import annotations

import threading

from recstrata._native import ffi
from recstrata.errors import FailedPreconditionError


class NativeHandle:
    _what = "object"     # names the object in "... is closed"
    _closed_word = "closed"

    def _init_handle(self) -> None:
        """First thing in __init__: a closed, empty guard (so a failed open is safe)."""
        self._handle = ffi.NULL
        self._lock = threading.Condition(threading.Lock())
        self._active = 0
        self._closed = True

    def _adopt(self, handle) -> None:
        """The native open succeeded: calls may use `handle` from now on."""
        self._handle = handle
        self._closed = False

    def _enter(self):
        with self._lock:
            if self._closed:
                raise FailedPreconditionError(f"{self._what} is {self._closed_word}", 4)
            self._active += 1
            return self._handle

    def _leave(self) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0:
                self._lock.notify_all()

    def _stop(self, handle) -> None:
        """Stops the native object while calls may still run (default: nothing)."""

    def _free(self, handle) -> None:
        raise NotImplementedError

    def close(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is None:
            return
        with lock:
            if self._closed:
                return
            self._closed = True  # new calls are refused from here on
            handle = self._handle
        try:
            if handle != ffi.NULL:
                self._stop(handle)
        finally:
            with lock:
                while self._active:
                    lock.wait()
                self._handle = ffi.NULL
            if handle != ffi.NULL:
                self._free(handle)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        # At interpreter shutdown module globals may already be gone: ignore failures.
        try:
            self.close()
        except Exception:
            pass
