"""oneDNN fusion, proven from the executed graph.

rs_model_trace_json runs one request with RunOptions FULL_TRACE and returns the
op types of the executed partition graphs (after Grappler's oneDNN rewrite)
and of the step stats. A 3-layer MLP (MatMul + BiasAdd + Relu twice, then
MatMul + BiasAdd + Sigmoid) must show its dense layers as fused oneDNN
kernels, with no plain MatMul/BiasAdd/Relu left.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FUSED = {"_MklNativeFusedMatMul", "_MklFusedMatMul", "_FusedMatMul"}


def _build_mlp(path):
    import tensorflow as tf

    rng = np.random.default_rng(0)

    class MLP(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = [tf.Variable(rng.normal(size=s).astype(np.float32) * 0.1) for s in [(16, 32), (32, 16), (16, 1)]]
            self.b = [tf.Variable(np.zeros(s[1], np.float32)) for s in [(16, 32), (32, 16), (16, 1)]]

        @tf.function(input_signature=[tf.TensorSpec([None, 16], tf.float32, name="x")])
        def serve(self, x):
            h = tf.nn.relu(tf.nn.bias_add(tf.matmul(x, self.w[0]), self.b[0]))
            h = tf.nn.relu(tf.nn.bias_add(tf.matmul(h, self.w[1]), self.b[1]))
            return {"p": tf.sigmoid(tf.nn.bias_add(tf.matmul(h, self.w[2]), self.b[2]))}

    m = MLP()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})
    return path


@pytest.fixture(scope="module")
def mlp_dir(tmp_path_factory):
    return _build_mlp(tmp_path_factory.mktemp("onednn") / "mlp")


def _trace(model_dir, config=b"{}"):
    from recstrata._native import check, ffi, lib, take_string

    L = lib()
    err = ffi.new("rs_error**")
    mp = ffi.new("rs_model**")
    check(L.rs_model_open(str(model_dir).encode(), config, mp, err), err)
    try:
        out = ffi.new("char**")
        check(L.rs_model_trace_json(mp[0], out, err), err)
        return json.loads(take_string(out[0]))
    finally:
        L.rs_model_close(mp[0])


def test_mlp_layers_run_as_fused_onednn_kernels(mlp_dir):
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0":
        pytest.skip("oneDNN disabled in this environment")
    trace = _trace(mlp_dir)
    ops = {}
    for part in trace["partition_graphs"]:
        for op, n in part["ops"].items():
            ops[op] = ops.get(op, 0) + n
    fused = sum(n for op, n in ops.items() if op in FUSED)
    mkl_fused = sum(n for op, n in ops.items() if op.startswith("_Mkl") and "Fused" in op)
    # three dense layers, each MatMul+BiasAdd(+Relu) -> one fused oneDNN kernel
    assert mkl_fused == 3, ops
    assert fused == 3, ops
    for plain in ("MatMul", "BiasAdd", "Relu"):
        assert plain not in ops, ops
    # the fused kernels actually executed (step stats), not just sat in a graph
    assert sum(n for op, n in trace["executed"].items() if op in FUSED) == 3, trace["executed"]


def test_trace_on_bad_handle_is_an_error():
    from recstrata._native import ffi, lib

    L = lib()
    err = ffi.new("rs_error**")
    out = ffi.new("char**")
    assert L.rs_model_trace_json(ffi.NULL, out, err) == 1
    assert b"NULL" in ffi.string(L.rs_error_message(err[0]))
    L.rs_error_free(err[0])
