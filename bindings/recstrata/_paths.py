"""Where the built native artefacts live (for C, Go and cffi hosts).

The build installs ``lib/librecstrata.so``, ``lib/libserving_processor.so``,
``include/recstrata.h`` and the generated ``*_pb2.py`` modules into the
``recstrata`` package. Where that package is depends on the install kind:

- ``pip install .``: one folder, ``site-packages/recstrata``, holds the
  sources and the built files.
- ``pip install -e .`` (scikit-build-core's redirect mode): the Python sources
  stay in ``bindings/recstrata`` and the built files are installed into
  ``site-packages/recstrata`` (or, with ``editable.rebuild``, into the build
  directory); the package's ``__path__`` lists both folders, install tree
  first.

So every lookup walks ``recstrata.__path__`` and takes the first folder that
holds the file, and a missing file is an :class:`~recstrata.errors.NotBuiltError`
naming the folders searched, never a path that does not exist.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from recstrata.errors import NotBuiltError

LIBRARY = "lib/librecstrata.so"
COMPAT_LIBRARY = "lib/libserving_processor.so"
HEADER = "include/recstrata.h"


def package_dirs() -> list[str]:
    """The folders of the ``recstrata`` package, in import order."""
    import recstrata

    return list(recstrata.__path__)


def find_built_file(relpath: str, search: Iterable[str] | None = None) -> Path:
    """The first ``<dir>/<relpath>`` that exists among ``search`` (default: the package's folders)."""
    dirs = list(package_dirs() if search is None else search)
    for d in dirs:
        p = Path(d) / relpath
        if p.exists():
            return p.resolve()
    raise NotBuiltError(
        f"recstrata's built file {relpath} is in none of {dirs}: the native part is not "
        "installed; run `pip install .` (or `pip install -e .`) from the source tree")


def library_path() -> str:
    """Absolute path of librecstrata.so. RECSTRATA_LIBRARY overrides it."""
    override = os.environ.get("RECSTRATA_LIBRARY")
    if override:
        return override
    return str(find_built_file(LIBRARY))


def compat_library_path() -> str:
    """Absolute path of libserving_processor.so (DeepRec's four entry points).

    With RECSTRATA_LIBRARY set it is the file beside that library.
    """
    if os.environ.get("RECSTRATA_LIBRARY"):
        return str(Path(library_path()).with_name(Path(COMPAT_LIBRARY).name))
    return str(find_built_file(COMPAT_LIBRARY))


def include_dir() -> str:
    """Folder holding recstrata.h."""
    return str(find_built_file(HEADER).parent)
