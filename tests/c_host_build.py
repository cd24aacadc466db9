"""Compiles a C host program of librecstrata.so (processor/tests/*.c) for the tests:
strict C99 warnings as errors, linked against the installed library with its rpath."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def compile_c_host(source: Path, out: Path) -> Path:
    """Builds `source` into `out`; skips the test when the machine has no C compiler."""
    from recstrata._paths import include_dir, library_path

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    lib_dir = str(Path(library_path()).parent)
    cmd = [cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-O1", str(source), "-I", include_dir(),
           "-L", lib_dir, "-lrecstrata", f"-Wl,-rpath,{lib_dir}", "-lpthread", "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out
