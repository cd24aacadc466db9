"""Runs the Go module's tests (go_client/) against the installed librecstrata.so.

The Go tests need a SavedModel and the outputs TensorFlow itself computes for
it; this file generates both (nothing is downloaded), runs `go vet` and
`go test` with GOPROXY=off (the module is standard-library only), and fails
if anything fails or is skipped. The Go tests also write the PredictResponse
bytes they received for a request built here; it is decoded with the
package's protobuf module and compared with TensorFlow's output, so the wire
path is checked from both languages.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import recstrata

REPO = Path(__file__).resolve().parents[1]
GO_DIR = REPO / "go_client"

# Weights are multiples of 1/2 and inputs multiples of 1/4 with small
# magnitudes, so every product and sum is exact in float32: any summation
# order (Eigen, oneDNN, the Go test's own loop) gives bit-identical results
# and the Go side can compare exactly.
W = np.array([[0.5, -1.0, 2.0],
              [1.5, 0.0, -0.5],
              [-2.0, 1.0, 0.5],
              [1.0, 0.5, -1.5]], dtype=np.float32)
B = np.array([0.25, -0.5, 1.0], dtype=np.float32)

# Test names `go test -v` must report as passed (a renamed or deleted Go test
# fails here instead of silently shrinking the suite).
EXPECTED_GO_TESTS = [
    "TestLibraryVersion",
    "TestSignature",
    "TestPredictMatchesTensorFlow",
    "TestRunSelectsOutputs",
    "TestConcurrentPredict",
    "TestPredictBytes",
    "TestPredictBytesErrors",
    "TestInputErrors",
    "TestOpenErrors",
    "TestCloseTwiceAndUseAfterClose",
    "TestCloseWaitsForCallsInFlight",
    "TestFinalizerClosesModel",
    "TestMakeAlignedInputs",
    "TestLoaderChecksVersions",
    "FuzzPredictBytes",
    "TestHostSwapAndRollbackUnderLoad",
    "TestHostLeaseOutlivesSwapAndClose",
    "TestHostCloseRacesCalls",
    "TestHostErrors",
    "TestHostStatusAndMetrics",
]
# The example server (go_client/examples/server) is its own module with its
# own dependencies; tests/test_go_server.py runs its tests.


def _quarters(rng, shape):
    return (rng.integers(-16, 17, size=shape) / 4.0).astype(np.float32)


def _build_model(model_dir: Path) -> None:
    import tensorflow as tf

    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(W)
            self.b = tf.Variable(B)

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.matmul(x, self.w) + self.b}

        @tf.function(input_signature=[
            tf.TensorSpec([None, 4], tf.float32, name="x"),
            tf.TensorSpec([None], tf.int64, name="ids"),
            tf.TensorSpec([None], tf.string, name="names"),
            tf.TensorSpec([None, 2], tf.float64, name="z"),
        ])
        def mixed(self, x, ids, names, z):
            return {
                "y": tf.matmul(x, self.w) + self.b,
                "ids2": ids * 2 + 1,
                "name_len": tf.strings.length(names),
                "greeting": tf.strings.join([names, tf.constant("!")]),
                "z2": z * 0.5,
                "positive": ids > 0,
            }

    net = Net()
    tf.saved_model.save(net, str(model_dir),
                        signatures={"serving_default": net.serve, "mixed": net.mixed})


def build_shifted(model_dir: Path, shift: float) -> None:
    """y = x @ W + B + shift: a host version whose answers name it."""
    import tensorflow as tf

    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(W)
            self.b = tf.Variable(B + np.float32(shift))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.matmul(x, self.w) + self.b}

    net = Net()
    tf.saved_model.save(net, str(model_dir), signatures={"serving_default": net.serve})


# The host tests' models: HOST_SHIFTS[model][version] is added to y.
HOST_SHIFTS = {"a": {1: 1.0, 2: 2.0}, "b": {1: 10.0, 2: 20.0}}


def _encode(name: str, value) -> dict:
    arr = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
    if arr.dtype == object or arr.dtype.kind == "S":
        dtype, data = "string", [base64.b64encode(bytes(v)).decode() for v in arr.ravel()]
    elif arr.dtype == np.bool_:
        dtype, data = "bool", [bool(v) for v in arr.ravel()]
    else:
        dtype = {np.float32: "float32", np.float64: "float64", np.int32: "int32",
                 np.int64: "int64"}[arr.dtype.type]
        data = arr.ravel().tolist()
    return {"dtype": dtype, "shape": list(arr.shape), "data": data}


def _decode(j: dict) -> np.ndarray:
    """Inverse of _encode (float32 values are parsed as float32, not via float64 text)."""
    if j["dtype"] == "string":
        flat = np.array([base64.b64decode(v) for v in j["data"]], dtype=object)
    else:
        flat = np.array(j["data"], dtype=np.dtype("bool" if j["dtype"] == "bool" else j["dtype"]))
    return flat.reshape(j["shape"])


@pytest.fixture(scope="module")
def go_env(tmp_path_factory):
    if shutil.which("go") is None:
        pytest.fail("the Go toolchain is required for the Go client tests (go not on PATH)")
    import tensorflow as tf
    from recstrata.wire import predict_pb2

    tmp = tmp_path_factory.mktemp("go_client")
    model_dir = tmp / "model"
    _build_model(model_dir)
    loaded = tf.saved_model.load(str(model_dir))
    rng = np.random.default_rng(7)

    cases = []
    for batch in (1, 3, 64, 257):
        x = _quarters(rng, (batch, 4))
        out = loaded.signatures["serving_default"](x=tf.constant(x))
        cases.append({"signature": "serving_default",
                      "inputs": {"x": _encode("x", x)},
                      "outputs": {k: _encode(k, v) for k, v in out.items()}})
    x = _quarters(rng, (4, 4))
    ids = np.array([-3, 0, 7, 1 << 40], dtype=np.int64)
    names = np.array([b"", b"ab", "h\u00e9llo".encode(), b"\x00\xffbin"], dtype=object)
    z = rng.normal(size=(4, 2))
    out = loaded.signatures["mixed"](x=tf.constant(x), ids=tf.constant(ids),
                                     names=tf.constant(names), z=tf.constant(z))
    cases.append({"signature": "mixed",
                  "inputs": {"x": _encode("x", x), "ids": _encode("ids", ids),
                             "names": _encode("names", names), "z": _encode("z", z)},
                  "outputs": {k: _encode(k, v) for k, v in out.items()}})

    # A DeepRec-format request for the wire passthrough test.
    wire_x = _quarters(rng, (2, 4))
    req = predict_pb2.PredictRequest(signature_name="serving_default")
    arr = req.inputs["x"]
    arr.dtype = predict_pb2.DT_FLOAT
    arr.array_shape.dim.extend(wire_x.shape)
    arr.float_val.extend(wire_x.ravel().tolist())
    (tmp / "request.bin").write_bytes(req.SerializeToString())
    wire_y = loaded.signatures["serving_default"](x=tf.constant(wire_x))["y"].numpy()

    host_base = tmp / "host"
    for name, versions in HOST_SHIFTS.items():
        for v, shift in versions.items():
            build_shifted(host_base / name / str(v), shift)

    expected = {
        "W": W.tolist(), "b": B.tolist(), "cases": cases,
        "request_file": str(tmp / "request.bin"),
        "response_file": str(tmp / "response.bin"),
        "go_outputs_file": str(tmp / "go_outputs.json"),
        "host_base": str(host_base),
        "host_shifts": {m: {str(v): s for v, s in vs.items()} for m, vs in HOST_SHIFTS.items()},
    }
    (tmp / "expected.json").write_text(json.dumps(expected))

    env = dict(os.environ)
    env.update({
        "RECSTRATA_LIBRARY": recstrata.library_path(),
        "RECSTRATA_TEST_MODEL": str(model_dir),
        "RECSTRATA_TEST_EXPECTED": str(tmp / "expected.json"),
        "GOPROXY": "off",          # standard library only: nothing to download
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "-mod=mod",
        "CGO_ENABLED": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    })
    mixed_inputs = {"x": x, "ids": ids, "names": names, "z": z}
    return {"env": env, "tmp": tmp, "wire_y": wire_y, "model_dir": model_dir,
            "mixed_inputs": mixed_inputs}


def _go(args, env, timeout=900):
    return subprocess.run(["go", *args], cwd=GO_DIR, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_go_vet(go_env):
    res = _go(["vet", "./..."], go_env["env"])
    assert res.returncode == 0, res.stdout + res.stderr


def test_go_tests_pass_without_skips(go_env):
    res = _go(["test", "-count=1", "-v", "./..."], go_env["env"])
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-20000:]
    skipped = re.findall(r"--- SKIP: (\S+)", log)
    assert not skipped, f"Go tests skipped: {skipped}\n{log[-5000:]}"
    passed = set(re.findall(r"--- PASS: (\S+)", log))
    missing = [t for t in EXPECTED_GO_TESTS if t not in passed]
    assert not missing, f"Go tests did not run/pass: {missing}\n{log[-5000:]}"

    # The Go test saved the PredictResponse it got for request.bin.
    from recstrata.wire import predict_pb2
    resp = predict_pb2.PredictResponse.FromString(
        (go_env["tmp"] / "response.bin").read_bytes())
    y = resp.outputs["y"]
    assert y.dtype == predict_pb2.DT_FLOAT
    assert list(y.array_shape.dim) == list(go_env["wire_y"].shape)
    np.testing.assert_array_equal(np.array(y.float_val, dtype=np.float32).reshape(
        go_env["wire_y"].shape), go_env["wire_y"])

    # Go and the Python binding answer identically on the same model and inputs.
    go_outs = json.loads((go_env["tmp"] / "go_outputs.json").read_text())
    assert len(go_outs) == 1
    from recstrata.processor import Model
    with Model(go_env["model_dir"], {"signature_name": "mixed"}) as model:
        py_outs = model.run(go_env["mixed_inputs"])
    assert set(py_outs) == set(go_outs[0])
    for name, arr in py_outs.items():
        got = go_outs[0][name]
        assert got["dtype"] == _encode(name, arr)["dtype"], name
        np.testing.assert_array_equal(_decode(got), arr, err_msg=name)


def test_go_tests_under_race_detector_and_cgocheck2(go_env):
    """The same suite with the race detector and the strict cgo pointer checker.

    cgocheck2 (GOEXPERIMENT) also traps Go pointers stored in C memory, which
    the default checker does not see; -race checks the Model's locking while
    many goroutines call into the library. (First run compiles the standard
    library in these modes, about a minute here; later runs are cached.)
    """
    env = dict(go_env["env"], GOEXPERIMENT="cgocheck2")
    res = _go(["test", "-race", "-count=1", "-v", "./..."], env)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-20000:]
    assert "DATA RACE" not in log, log[-20000:]
    assert not re.findall(r"--- SKIP: (\S+)", log), log[-5000:]
    passed = set(re.findall(r"--- PASS: (\S+)", log))
    for name in ("TestConcurrentPredict", "TestCloseWaitsForCallsInFlight",
                 "TestHostSwapAndRollbackUnderLoad", "TestHostCloseRacesCalls"):
        assert name in passed, log[-5000:]


def test_go_tests_skip_cleanly_without_model(go_env):
    """Without RECSTRATA_TEST_MODEL the Go suite skips (and says why) instead of failing."""
    env = {k: v for k, v in go_env["env"].items()
           if k not in ("RECSTRATA_TEST_MODEL", "RECSTRATA_TEST_EXPECTED")}
    res = _go(["test", "-count=1", "-v", "-run", "TestSignature", "."], env)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log
    assert "--- SKIP: TestSignature" in log and "RECSTRATA_TEST_MODEL" in log, log
