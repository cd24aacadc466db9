"""libserving_processor.so: DeepRec's entry points through recstrata.deeprec.

initialize / process / batch_process / batch_process_n /
get_serving_model_info / free_buffer / release_model: return codes 200/500,
error text in the output buffer, input_size == 0 returns the signature JSON,
outputs equal TF Python's, garbage never kills the host.
"""

from __future__ import annotations

import json
import subprocess
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recstrata._paths import compat_library_path
from recstrata.deeprec import ERROR, OK, DeepRecProcessor, ffi, lib
from recstrata.wire import codec
from recstrata.wire import predict_pb2 as pb


def feeds(batch=3, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "x_f32": rng.normal(size=(batch, 4)).astype(np.float32), "x_f64": rng.normal(size=(batch, 3)),
        "x_i32": rng.integers(-5, 5, (batch, 2)).astype(np.int32), "x_i64": rng.integers(0, 100, batch),
    }


@pytest.fixture(scope="module")
def proc(multi_model_dir):
    p = DeepRecProcessor(multi_model_dir, {"session_num": 2, "select_session_policy": "RR"})
    assert p.ok, p.state
    yield p
    p.close()


def assert_matches_tf(response: bytes, model_dir, tf_reference, f):
    out = codec.parse_response(response)
    ref = tf_reference(model_dir, f)
    assert set(out) == set(ref)
    for k in ref:
        assert out[k].dtype == ref[k].dtype and out[k].shape == ref[k].shape, k
        np.testing.assert_allclose(out[k], ref[k], rtol=1e-6, atol=1e-6, err_msg=k)


def test_exports_exactly_deeprec_names():
    nm = subprocess.run(["nm", "-D", "--defined-only", compat_library_path()], capture_output=True, text=True)
    if nm.returncode != 0:
        pytest.skip("nm not available")
    names = {line.split()[-1] for line in nm.stdout.splitlines() if line.split()[-2:-1] == ["T"]}
    assert names == {"initialize", "process", "batch_process", "batch_process_n",
                     "get_serving_model_info", "free_buffer", "release_model"}


def test_process_equals_tf(proc, multi_model_dir, tf_reference):
    for batch in (1, 7, 256):
        f = feeds(batch, seed=batch)
        code, out = proc.process(codec.make_request(f))
        assert code == OK, out
        assert_matches_tf(out, multi_model_dir, tf_reference, f)


def test_process_output_filter(proc):
    code, out = proc.process(codec.make_request(feeds(), output_filter=["y_i32"]))
    assert code == OK
    assert list(codec.parse_response(out)) == ["y_i32"]


def test_input_size_zero_returns_signature_json(proc):
    code, out = proc.process(b"")
    assert code == OK
    info = json.loads(out)
    assert [i["name"] for i in info["inputs"]] == ["x_f32", "x_f64", "x_i32", "x_i64"]
    assert {o["name"] for o in info["outputs"]} == {"y_f32", "y_f64", "y_i32", "y_i64", "y_bool"}


@pytest.mark.parametrize("request_bytes, match", [
    (b"\xff\xff\xff", "PredictRequest"),
    (codec.make_request({"zz": np.ones(1, np.float32)}), "unknown input 'zz'"),
    (codec.make_request(dict(feeds(), x_f32=np.ones((3, 4), np.float64))), "x_f32"),
    (codec.make_request(feeds(), output_filter=["nope"]), "nope"),
    (pb.PredictRequest(signature_name="serving_default").SerializeToString(), "no inputs"),
])
def test_process_errors_are_500_with_text(proc, request_bytes, match):
    code, out = proc.process(request_bytes)
    assert code == ERROR
    text = out.decode()
    assert match in text and "RS_ERR_INVALID_ARGUMENT" in text, text
    assert proc.process(codec.make_request(feeds()))[0] == OK  # still serving


def test_raw_process_argument_errors(proc):
    L = lib()
    out = ffi.new("void**")
    size = ffi.new("int*")
    # NULL model (initialize failed): 500 with a message.
    assert L.process(ffi.NULL, b"x", 1, out, size) == ERROR
    assert b"NULL" in ffi.unpack(ffi.cast("char*", out[0]), size[0])
    L.free_buffer(out[0])
    # Negative size, NULL data with a size.
    assert L.process(proc.handle, b"x", -5, out, size) == ERROR
    assert b"negative" in ffi.unpack(ffi.cast("char*", out[0]), size[0])
    L.free_buffer(out[0])
    assert L.process(proc.handle, ffi.NULL, 10, out, size) == ERROR
    L.free_buffer(out[0])
    # Nowhere to write: still 500, no crash.
    assert L.process(proc.handle, b"x", 1, ffi.NULL, ffi.NULL) == ERROR
    assert L.get_serving_model_info(ffi.NULL, out, size) == ERROR
    L.free_buffer(out[0])
    L.free_buffer(ffi.NULL)
    L.release_model(ffi.NULL)


def test_batch_process_null_terminated(proc, multi_model_dir, tf_reference):
    f1, f2 = feeds(2, 1), feeds(5, 2)
    code, outs = proc.batch_process([codec.make_request(f1), codec.make_request(f2)])
    assert code == OK and len(outs) == 2
    assert_matches_tf(outs[0], multi_model_dir, tf_reference, f1)
    assert_matches_tf(outs[1], multi_model_dir, tf_reference, f2)


def test_batch_process_mixed_results(proc, multi_model_dir, tf_reference):
    f1, f3 = feeds(2, 3), feeds(4, 4)
    code, outs = proc.batch_process([codec.make_request(f1), b"\x00garbage", codec.make_request(f3)])
    assert code == ERROR  # one failed ...
    assert_matches_tf(outs[0], multi_model_dir, tf_reference, f1)  # ... the others are answered
    assert b"PredictRequest" in outs[1]
    assert_matches_tf(outs[2], multi_model_dir, tf_reference, f3)


def test_batch_process_n(proc, multi_model_dir, tf_reference):
    f1 = feeds(3, 5)
    code, outs = proc.batch_process_n([codec.make_request(f1), b"", codec.make_request(f1)])
    assert code == OK and len(outs) == 3
    assert_matches_tf(outs[0], multi_model_dir, tf_reference, f1)
    assert "x_f32" in json.loads(outs[1])["inputs"][0]["name"]  # size 0: the signature JSON
    assert outs[2] == outs[0]
    assert proc.batch_process_n([]) == (OK, [])


def test_get_serving_model_info(proc, multi_model_dir):
    code, out = proc.model_info()
    assert code == OK
    info = pb.ServingModelInfo.FromString(out)
    assert info.model_path == multi_model_dir


def test_initialize_from_config_savedmodel_dir(multi_model_dir):
    with DeepRecProcessor("", json.dumps({"savedmodel_dir": multi_model_dir})) as p:
        assert p.ok
        assert p.process(codec.make_request(feeds()))[0] == OK


@pytest.mark.parametrize("entry, config", [
    ("/nonexistent/model", "{}"),
    (None, None),                      # no directory anywhere
    ("MODEL", "{not json"),
    ("MODEL", '{"session_num": -3}'),
    ("MODEL", '{"signature_name": "nope"}'),
])
def test_initialize_failures(multi_model_dir, entry, config):
    if entry == "MODEL":
        entry = multi_model_dir
    p = DeepRecProcessor(entry, config)
    assert p.state == -1 and p.handle == ffi.NULL
    code, out = p.process(codec.make_request(feeds()))
    assert code == ERROR and b"NULL" in out


def test_concurrent_process(proc, multi_model_dir, tf_reference):
    requests = [(f := feeds(1 + i % 9, 100 + i), codec.make_request(f)) for i in range(64)]
    expected = [codec.parse_response(proc.process(r)[1]) for _, r in requests]
    bad = []

    def worker(t):
        for i in range(t, len(requests), 8):
            code, out = proc.process(requests[i][1])
            got = codec.parse_response(out) if code == OK else {}
            if code != OK or any(not np.array_equal(got[k], expected[i][k]) for k in expected[i]):
                bad.append(i)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=1, max_size=300))
def test_random_bytes_get_500(proc, data):
    code, out = proc.process(data)
    assert code == ERROR
    assert out and b"RS_ERR" in out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.binary(min_size=1, max_size=80), st.just(b"VALID")), min_size=1, max_size=6))
def test_batch_process_n_random_mix(proc, batch):
    """Each request of a batch is answered on its own: valid ones succeed, garbage gets its error text."""
    valid = codec.make_request(feeds(2, 9))
    reqs = [valid if r == b"VALID" else r for r in batch]
    code, outs = proc.batch_process_n(reqs)
    assert len(outs) == len(reqs)
    ok = [r is valid for r in reqs]
    assert code == (OK if all(ok) else ERROR)
    for good, out in zip(ok, outs):
        if good:
            assert set(codec.parse_response(out)) == {"y_f32", "y_f64", "y_i32", "y_i64", "y_bool"}
        else:
            assert b"RS_ERR" in out
