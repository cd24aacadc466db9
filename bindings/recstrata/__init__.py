"""recstrata: an embeddable inference processor for large recommendation models.

The native library (``librecstrata.so``) is loaded lazily by :mod:`recstrata._native`
the first time a native object is created, so ``import recstrata`` stays cheap and
``import recstrata.training`` does not need the library at all.
"""

__version__ = "0.1.0"
# The native library version this package was built against; the loader refuses
# any other (see recstrata._native). Keep in step with RS_VERSION_NUMBER.
NATIVE_VERSION_NUMBER = 100

from recstrata.errors import RecstrataError  # noqa: E402,F401
from recstrata._paths import include_dir, library_path  # noqa: E402,F401


def __getattr__(name):
    # Lazy re-exports: the native binding is imported on first use only.
    if name in ("Model", "Processor"):
        from recstrata import processor

        return getattr(processor, name)
    if name in ("Store", "Table"):
        from recstrata import store

        return getattr(store, name)
    raise AttributeError(f"module 'recstrata' has no attribute {name!r}")
