"""cffi (ABI mode) access to librecstrata.so.

The cdef is read from the installed public header itself (the block between
RS_CDEF_BEGIN and RS_CDEF_END), so the binding can never drift from the C
declarations. The library is opened once per process, on first use, and its
runtime version must equal the one this package was built for.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import cffi

import recstrata
from recstrata import _tf_logs
from recstrata._paths import include_dir, library_path
from recstrata.errors import LibraryVersionError, error_for

ffi = cffi.FFI()
_lib = None
_lock = threading.Lock()


def _cdef_from_header(header: Path) -> str:
    text = header.read_text()
    match = re.search(r"/\* RS_CDEF_BEGIN \*/(.*)/\* RS_CDEF_END \*/", text, re.S)
    if not match:
        raise LibraryVersionError(f"{header} has no RS_CDEF block")
    body = match.group(1)
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)  # comments
    lines = []
    for line in body.splitlines():
        stripped = line.strip()
        if stripped.startswith("#define"):
            parts = stripped.split()
            if len(parts) == 3 and re.fullmatch(r"-?\d+", parts[2]):
                lines.append(stripped)  # integer constants are cdef-able
            continue
        if stripped.startswith("#"):
            continue
        lines.append(line.replace("RS_API ", "").replace(" RS_NOEXCEPT", ""))
    return "\n".join(lines)


ffi.cdef(_cdef_from_header(Path(include_dir()) / "recstrata.h"))


def _preload_tensorflow() -> None:
    """Maps the TF wheel's two shared libraries before librecstrata.so.

    librecstrata.so finds them through its rpath ($ORIGIN/../../tensorflow), which
    holds when both packages share a site-packages folder. In other layouts (a
    venv over system site-packages, --user installs) loading them first by
    absolute path lets the dynamic loader satisfy the dependency by soname. This
    does not import the tensorflow Python package (that would cost seconds).
    """
    import ctypes
    import importlib.util
    import os

    spec = importlib.util.find_spec("tensorflow")
    if spec is None or not spec.origin:
        return
    tf_dir = os.path.dirname(spec.origin)
    for name in ("libtensorflow_framework.so.2", "libtensorflow_cc.so.2"):
        path = os.path.join(tf_dir, name)
        if os.path.exists(path):
            # RTLD_LOCAL (ctypes' default): the soname match is all the loader
            # needs. RTLD_GLOBAL would put TF's exported BoringSSL symbols in
            # the global scope, and a later `import hashlib`/`hmac` (OpenSSL)
            # would bind to them and segfault.
            ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)


def lib():
    """The opened library (loaded and version-checked on first call)."""
    global _lib
    if _lib is None:
        with _lock:
            if _lib is None:
                # TensorFlow logs at load time; recstrata._tf_logs keeps that quiet
                # unless RECSTRATA_TF_LOGS=1.
                with _tf_logs.quiet_load():
                    _preload_tensorflow()
                    handle = ffi.dlopen(library_path())
                got = handle.rs_version_number()
                if got != recstrata.NATIVE_VERSION_NUMBER:
                    raise LibraryVersionError(
                        f"{library_path()} is version {got}, this package needs "
                        f"{recstrata.NATIVE_VERSION_NUMBER}; reinstall recstrata")
                _lib = handle
    return _lib


def check(code: int, err_box) -> None:
    """Raises the typed exception for a failed call; frees the error object.

    Usage: ``err = ffi.new("rs_error**"); check(lib().rs_x(..., err), err)``.
    """
    if code == 0:
        return
    L = lib()
    err = err_box[0]
    if err != ffi.NULL:
        message = ffi.string(L.rs_error_message(err)).decode("utf-8", "replace")
        L.rs_error_free(err)
        err_box[0] = ffi.NULL
    else:
        message = ffi.string(L.rs_status_name(code)).decode()
    raise error_for(code, message)


def take_string(ptr) -> str:
    """Copies a library-owned NUL-terminated string and releases it with rs_free."""
    try:
        return ffi.string(ptr).decode("utf-8")
    finally:
        lib().rs_free(ptr)
