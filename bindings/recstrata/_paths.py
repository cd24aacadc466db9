"""Where the installed native artefacts live (for C, Go and cffi hosts)."""

from __future__ import annotations

import os
from pathlib import Path

_PKG = Path(__file__).resolve().parent


def library_path() -> str:
    """Absolute path of librecstrata.so. RECSTRATA_LIBRARY overrides it."""
    override = os.environ.get("RECSTRATA_LIBRARY")
    if override:
        return override
    return str(_PKG / "lib" / "librecstrata.so")


def compat_library_path() -> str:
    """Absolute path of libserving_processor.so (DeepRec's four entry points)."""
    return str(Path(library_path()).with_name("libserving_processor.so"))


def include_dir() -> str:
    """Folder holding recstrata.h."""
    return str(_PKG / "include")
