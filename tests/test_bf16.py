"""precision "bf16": the dense network's matmuls in bfloat16 (oneDNN's auto mixed
precision rewrite), fp32 inputs and outputs; refused on a CPU without BF16.

Accuracy is stated in docs/processor.md: on the demo bundle the AUC moves by less than
0.005 (tests/test_bundle_demo.py asserts it); on a dense MLP with unit-scale activations
the outputs stay within 3e-2 of fp32 (bfloat16 keeps 8 bits of mantissa).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from recstrata.errors import FailedPreconditionError, InvalidArgumentError  # noqa: E402
from recstrata.processor import Model  # noqa: E402


def _has_bf16() -> bool:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return " avx512_bf16" in flags or " amx_bf16" in flags


needs_bf16 = pytest.mark.skipif(not _has_bf16(), reason="this CPU has neither AVX512-BF16 nor AMX-BF16")


@pytest.fixture(scope="module")
def tanh_mlp(tmp_path_factory):
    import tensorflow as tf

    rng = np.random.default_rng(7)
    path = tmp_path_factory.mktemp("bf16") / "mlp"

    class Mlp(tf.Module):
        def __init__(self):
            super().__init__()
            self.w1 = tf.Variable((rng.standard_normal((64, 256)) / 8).astype(np.float32))
            self.w2 = tf.Variable((rng.standard_normal((256, 8)) / 16).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.tanh(tf.matmul(tf.nn.relu(tf.matmul(x, self.w1)), self.w2))}

    m = Mlp()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})
    return str(path)


@needs_bf16
def test_bf16_is_close_to_fp32_and_not_identical(tanh_mlp):
    x = np.random.default_rng(0).standard_normal((512, 64)).astype(np.float32)
    with Model(tanh_mlp) as fp32, Model(tanh_mlp, precision="bf16") as bf16:
        a = fp32.run({"x": x})["y"]
        b = bf16.run({"x": x})["y"]
    assert a.dtype == b.dtype == np.float32
    diff = np.abs(a - b)
    assert diff.max() <= 3e-2, diff.max()
    # The rewrite really ran: bfloat16 rounding changes the outputs.
    assert diff.max() > 0


@needs_bf16
def test_bf16_rewrite_is_visible_in_the_executed_graph(tanh_mlp):
    with Model(tanh_mlp, precision="bf16") as m:
        ops = m.trace()["executed"]
    with Model(tanh_mlp) as m:
        ops_fp32 = m.trace()["executed"]
    # The mixed-precision pass inserts casts to/from bfloat16 around the matmuls.
    assert sum(n for op, n in ops.items() if "Cast" in op) > sum(n for op, n in ops_fp32.items() if "Cast" in op)


def test_bad_precision_is_invalid_argument(tanh_mlp):
    with pytest.raises(InvalidArgumentError, match="precision"):
        Model(tanh_mlp, precision="fp16")


def test_bf16_refused_without_cpu_support(tanh_mlp):
    # RECSTRATA_CPU_NO_BF16=1 makes the library see a CPU without BF16 (read per open).
    code = ("import sys; from recstrata.processor import Model; from recstrata.errors import "
            "FailedPreconditionError\n"
            "try:\n    Model(sys.argv[1], precision='bf16')\nexcept FailedPreconditionError as e:\n"
            "    print('refused:', e); sys.exit(0)\nsys.exit(3)\n")
    env = dict(os.environ, RECSTRATA_CPU_NO_BF16="1")
    r = subprocess.run([sys.executable, "-c", code, tanh_mlp], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "AVX512-BF16" in r.stdout
