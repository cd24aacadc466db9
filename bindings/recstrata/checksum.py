"""CRC-32C (Castagnoli) through the library's implementation (``rs_crc32c``): the checksum of
store files, bundle files and the bundle a delta is bound to."""

from __future__ import annotations

__all__ = ["crc32c"]


def crc32c(data, crc: int = 0) -> int:
    """CRC-32C of a bytes-like object, continuing from ``crc``."""
    from recstrata._native import check, ffi, lib

    buf = ffi.from_buffer(memoryview(data).cast("B"))
    out = ffi.new("uint32_t*")
    err = ffi.new("rs_error**")
    check(lib().rs_crc32c(buf, len(buf), crc, out, err), err)
    return int(out[0])
