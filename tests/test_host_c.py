"""A C host of rs_host: processor/tests/host_test.c, compiled here with the
system C compiler against the installed header and library only, hosting two
models with two versions each while six threads call them (tensor form and
PredictRequest bytes) through swaps (a new version directory + reload) and
rollbacks (pins). The program asserts 0 failed calls and that every answer
came from the expected version; see its header comment.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from serving_helpers import build_const_model, put_version

from c_host_build import compile_c_host  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
C_SOURCE = REPO / "processor" / "tests" / "host_test.c"


@pytest.fixture(scope="module")
def host_binary(tmp_path_factory) -> Path:
    return compile_c_host(C_SOURCE, tmp_path_factory.mktemp("host_bin") / "host_test")


def _stage(base: Path, templates: dict) -> None:
    base.mkdir()
    put_version(base, 1, templates[1])
    put_version(base, 2, templates[2])
    shutil.copytree(templates[3], base / ".3.tmp")  # renamed to 3 by the program


def test_c_host_swaps_and_rolls_back_under_load(host_binary, tmp_path):
    from recstrata.wire import predict_pb2 as pb

    tmpl = tmp_path / "templates"
    a = {v: build_const_model(tmpl / f"a{v}", float(v)) for v in (1, 2, 3)}
    b = {v: build_const_model(tmpl / f"b{v}", 10.0 * v) for v in (1, 2, 3)}
    _stage(tmp_path / "a", a)
    _stage(tmp_path / "b", b)
    req = pb.PredictRequest()
    x = req.inputs["x"]
    x.dtype = pb.DT_FLOAT
    x.array_shape.dim.extend([3, 2])
    x.float_val.extend(np.ones(6, np.float32).tolist())
    (tmp_path / "req.pb").write_bytes(req.SerializeToString())

    proc = subprocess.run([str(host_binary), str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "req.pb")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1].split()
    assert last[0] == "OK", proc.stdout
    checks, calls, stable = map(int, last[1:])
    assert checks > 40 and calls > 100 and stable > 0
    assert (tmp_path / "a" / "3").is_dir() and (tmp_path / "b" / "3").is_dir()  # the program published them


def test_c_host_reports_usage(host_binary):
    proc = subprocess.run([str(host_binary)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage" in proc.stderr
