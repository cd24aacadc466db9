"""TensorFlow's log lines: quiet by default, RECSTRATA_TF_LOGS=1 turns them on (recstrata._tf_logs).

Each case loads and runs a model in a fresh interpreter (TensorFlow's load-time
lines appear once per process) and looks at its stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys

from recstrata._tf_logs import filter_lines

_LOAD = """
import os, sys
import numpy as np
from recstrata.processor import Model
with Model(sys.argv[1]) as m:
    m.run({"x": np.ones((2, 8), np.float32)})
print(os.environ.get("TF_CPP_MIN_LOG_LEVEL"))
"""

ONEDNN = "oneDNN custom operations"
PREAMBLE = "absl::InitializeLog()"
READER = "Reading SavedModel from"


def _run(args: list[str], env_changes: dict[str, str | None]) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    for k in ("TF_CPP_MIN_LOG_LEVEL", "RECSTRATA_TF_LOGS"):
        env.pop(k, None)  # conftest sets TF_CPP_MIN_LOG_LEVEL for this process
    for k, v in env_changes.items():
        if v is not None:
            env[k] = v
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


def _load(model_dir: str, **env) -> subprocess.CompletedProcess:
    proc = _run([sys.executable, "-c", _LOAD, model_dir], env)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_loading_a_model_is_quiet_by_default(mlp_model_dir):
    proc = _load(mlp_model_dir)
    assert proc.stderr == ""
    assert proc.stdout.strip() == "1"  # the default the package set


def test_quiet_with_the_users_level_2(mlp_model_dir):
    # TensorFlow alone prints the oneDNN line even at level 2 (it is logged
    # before TensorFlow reads the variable).
    proc = _load(mlp_model_dir, TF_CPP_MIN_LOG_LEVEL="2")
    assert proc.stderr == ""
    assert proc.stdout.strip() == "2"  # the user's setting is kept


def test_recstrata_tf_logs_turns_them_on(mlp_model_dir):
    proc = _load(mlp_model_dir, RECSTRATA_TF_LOGS="1")
    assert ONEDNN in proc.stderr and READER in proc.stderr and PREAMBLE in proc.stderr
    assert proc.stdout.strip() == "None"  # no default imposed


def test_users_level_0_shows_info_lines(mlp_model_dir):
    proc = _load(mlp_model_dir, TF_CPP_MIN_LOG_LEVEL="0")
    assert ONEDNN in proc.stderr and READER in proc.stderr
    assert PREAMBLE not in proc.stderr  # abseil's meta line says nothing about the model


def test_cli_info_is_quiet(mlp_model_dir):
    proc = _run([sys.executable, "-m", "recstrata.cli", "info", mlp_model_dir], {})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert '"signature"' in proc.stdout


def _rec(sev: str, msg: str) -> bytes:
    return f"{sev}0000 00:00:1796410513.118342    9732 port.cc:153] {msg}\n".encode()


def test_filter_keeps_what_the_level_lets_through():
    data = (b"plain line before any record\n"
            + b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
            + _rec("I", "info") + b"info continuation\n"
            + _rec("W", "warn") + b"warn continuation\n"
            + _rec("E", "error"))
    assert filter_lines(data, 1) == (b"plain line before any record\n" + _rec("W", "warn")
                                     + b"warn continuation\n" + _rec("E", "error"))
    assert filter_lines(data, 3) == b"plain line before any record\n"
    assert filter_lines(data, 0) == data.replace(
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n", b"")
