"""Where the built native files are found, for both install kinds.

``pip install .`` puts sources and built files in one package folder;
``pip install -e .`` (scikit-build-core's redirect mode) keeps the sources in
bindings/ and installs the built files into site-packages, with the package's
``__path__`` listing both. The lookup must find the files in either layout and
fail clearly when they are missing. (.ci/run also does a real editable install
in a fresh venv and runs the package from it.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import recstrata
from recstrata import _paths
from recstrata.errors import NotBuiltError

REPO = Path(__file__).resolve().parents[1]


def _built_tree(root: Path) -> Path:
    (root / "lib").mkdir(parents=True)
    (root / "include").mkdir()
    (root / "lib" / "librecstrata.so").write_bytes(b"\x7fELF")
    (root / "lib" / "libserving_processor.so").write_bytes(b"\x7fELF")
    (root / "include" / "recstrata.h").write_text("/* header */\n")
    return root


def _source_tree(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "_paths.py").write_text("")
    return root


def test_regular_install_one_folder(tmp_path):
    pkg = _built_tree(_source_tree(tmp_path / "site-packages" / "recstrata"))
    assert _paths.find_built_file(_paths.LIBRARY, [str(pkg)]) == (pkg / "lib" / "librecstrata.so").resolve()
    assert _paths.find_built_file(_paths.HEADER, [str(pkg)]).parent == (pkg / "include").resolve()


def test_editable_redirect_install_tree_beside_sources(tmp_path):
    # __path__ of a redirect editable: install tree first, then the source folders.
    installed = _built_tree(tmp_path / "site-packages" / "recstrata")
    sources = _source_tree(tmp_path / "repo" / "bindings" / "recstrata")
    training = tmp_path / "repo" / "training" / "recstrata"
    training.mkdir(parents=True)
    search = [str(installed), str(sources), str(training)]
    assert _paths.find_built_file(_paths.LIBRARY, search) == (installed / "lib" / "librecstrata.so").resolve()
    assert _paths.find_built_file(_paths.COMPAT_LIBRARY, search).parent == (installed / "lib").resolve()
    assert _paths.find_built_file(_paths.HEADER, search).parent == (installed / "include").resolve()
    # The source folder alone (what the old lookup beside __file__ saw) has none of them.
    with pytest.raises(NotBuiltError):
        _paths.find_built_file(_paths.HEADER, [str(sources)])


def test_missing_file_is_a_clear_error(tmp_path):
    sources = _source_tree(tmp_path / "bindings" / "recstrata")
    with pytest.raises(NotBuiltError) as exc:
        _paths.find_built_file(_paths.LIBRARY, [str(sources)])
    msg = str(exc.value)
    assert "lib/librecstrata.so" in msg and str(sources) in msg and "pip install" in msg
    assert isinstance(exc.value, ImportError)


def test_library_override_and_compat_beside_it(tmp_path, monkeypatch):
    lib = _built_tree(tmp_path / "elsewhere") / "lib" / "librecstrata.so"
    monkeypatch.setenv("RECSTRATA_LIBRARY", str(lib))
    assert _paths.library_path() == str(lib)
    assert _paths.compat_library_path() == str(lib.with_name("libserving_processor.so"))


def test_this_install_finds_its_files():
    """Whichever kind of install runs the suite, its built files are found and exist."""
    dirs = _paths.package_dirs()
    assert dirs == list(recstrata.__path__)
    lib = Path(recstrata.library_path())
    assert lib.is_file() and lib.name == "librecstrata.so"
    assert (Path(recstrata.include_dir()) / "recstrata.h").is_file()
    assert Path(_paths.compat_library_path()).is_file()
    editable = any(Path(d).resolve() == REPO / "bindings" / "recstrata" for d in dirs)
    if editable:  # the sources come from the repo, the built files from the install tree
        assert REPO / "bindings" / "recstrata" not in lib.parents
    else:
        assert Path(recstrata.__file__).resolve().parent in lib.parents


def test_import_store_and_wire_in_a_fresh_process(tmp_path):
    """The modules that need built files import from outside the repo (no cwd tricks)."""
    code = ("import recstrata.store, recstrata.wire.predict_pb2 as pb, recstrata._native as n; "
            "n.lib(); print(pb.PredictRequest.DESCRIPTOR.full_name)")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("RECSTRATA_LIBRARY", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("PredictRequest")
