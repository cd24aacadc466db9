"""Typed exceptions carrying the native library's status code and message."""

from __future__ import annotations


class RecstrataError(Exception):
    """Base class: every failure reported by librecstrata. ``code`` is the rs_status."""

    code = 11  # RS_ERR_INTERNAL unless a subclass says otherwise

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidArgumentError(RecstrataError, ValueError):
    code = 1


class NotFoundError(RecstrataError, LookupError):
    code = 2


class AlreadyExistsError(RecstrataError):
    code = 3


class FailedPreconditionError(RecstrataError):
    code = 4


class OutOfRangeError(RecstrataError, IndexError):
    code = 5


class IOFailureError(RecstrataError, OSError):
    code = 6


class CorruptionError(RecstrataError):
    code = 7


class IncompatibleError(RecstrataError):
    code = 8


class ResourceExhaustedError(RecstrataError, MemoryError):
    code = 9


class UnimplementedError(RecstrataError, NotImplementedError):
    code = 10


class InternalError(RecstrataError):
    code = 11


class LibraryVersionError(RecstrataError, ImportError):
    """The loaded librecstrata.so is not the version this package was built for."""


class NotBuiltError(RecstrataError, ImportError):
    """A built native file (library, header, generated module) is not where the install put it."""


_BY_CODE = {
    cls.code: cls
    for cls in (
        InvalidArgumentError, NotFoundError, AlreadyExistsError, FailedPreconditionError,
        OutOfRangeError, IOFailureError, CorruptionError, IncompatibleError,
        ResourceExhaustedError, UnimplementedError, InternalError,
    )
}


def error_for(code: int, message: str) -> RecstrataError:
    """The exception instance for a native status code (unknown codes: RecstrataError)."""
    cls = _BY_CODE.get(code, RecstrataError)
    return cls(message, code)
