"""Every bad input gets a typed error with a clear message; the host stays alive.

Covers the input-validation list: unknown input/output names, wrong dtype, element
count vs shape, negative/overflowing dims, truncated and random request bytes,
empty requests and NULL handles (through the raw
cffi library, below the Python class). After each group the model must still
answer correctly. Opening errors (config, directories, signatures, warmup files) are in
test_model_open_errors.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recstrata import errors
from recstrata._native import check, ffi, lib
from recstrata.processor import Model
from recstrata.wire import codec
from recstrata.wire import predict_pb2 as pb

from error_helpers import INVALID, NOT_FOUND, RS_OK, good_feeds, raises  # noqa: E402

@pytest.fixture(scope="module")
def model(multi_model_dir):
    with Model(multi_model_dir) as m:
        yield m


@pytest.fixture(scope="module")
def reference(model):
    return model.run(good_feeds())


def still_works(model, reference):
    out = model.run(good_feeds())
    for k, v in reference.items():
        np.testing.assert_array_equal(out[k], v)


# ---- tensor inputs through Model.run ----------------------------------------


def test_unknown_and_missing_inputs(model, reference):
    raises(errors.InvalidArgumentError, "unknown input 'nope'", model.run, dict(good_feeds(), nope=np.ones(2)))
    feeds = good_feeds()
    del feeds["x_f64"]
    raises(errors.InvalidArgumentError, "missing input 'x_f64'", model.run, feeds)
    raises(errors.InvalidArgumentError, "missing input", model.run, {})
    still_works(model, reference)


def test_unknown_output_name(model, reference):
    raises(errors.InvalidArgumentError, "unknown output 'nope'", model.run, good_feeds(), outputs=["y_f32", "nope"])
    still_works(model, reference)


def test_wrong_dtype(model, reference):
    raises(errors.InvalidArgumentError, "x_f32.*dtype", model.run,
           dict(good_feeds(), x_f32=np.ones((2, 4), np.float64)))
    raises(errors.InvalidArgumentError, "x_i64.*dtype", model.run,
           dict(good_feeds(), x_i64=np.arange(2, dtype=np.int32)))
    raises(errors.InvalidArgumentError, "x_i32", model.run,
           dict(good_feeds(), x_i32=np.array([[b"a", b"b"]] * 2, dtype=object)))
    still_works(model, reference)


def test_numpy_scalars_and_subclasses_keep_their_dtype(make_model, exotic_model_dir, multi_model_dir):
    from test_processor_outputs import exotic_feeds

    m = make_model(exotic_model_dir)
    feeds = exotic_feeds(3)
    assert m.run(dict(feeds, scale=0.5))["total"].dtype == np.float32  # a Python float takes the signature dtype
    raises(errors.InvalidArgumentError, "scale.*dtype", m.run, dict(feeds, scale=np.float64(0.5)))
    mm = make_model(multi_model_dir)
    raises(errors.InvalidArgumentError, "x_f32.*dtype", mm.run,
           dict(good_feeds(), x_f32=np.ma.masked_array(np.ones((2, 4)))))


def test_wrong_rank_and_static_dims(model, reference):
    raises(errors.InvalidArgumentError, "x_f32.*shape", model.run, dict(good_feeds(), x_f32=np.ones(8, np.float32)))
    raises(errors.InvalidArgumentError, "x_f32.*shape", model.run,
           dict(good_feeds(), x_f32=np.ones((2, 5), np.float32)))
    raises(errors.InvalidArgumentError, "x_f32", model.run, dict(good_feeds(), x_f32=np.ones((2, 4, 1), np.float32)))
    still_works(model, reference)


def test_fixed_shape_rejects_other_batch(make_model, fixed_model_dir):
    m = make_model(fixed_model_dir)
    raises(errors.InvalidArgumentError, "shape", m.run, {"x": np.ones((3, 3), np.float32)})


def test_string_input_with_non_bytes(make_model, string_model_dir):
    m = make_model(string_model_dir)
    raises(errors.InvalidArgumentError, "bytes or str", m.run, {"s": np.array([1, 2], dtype=object),
                                                                "n": np.arange(2)})
    raises(errors.InvalidArgumentError, "'s'.*dtype", m.run, {"s": np.array([1.0, 2.0]), "n": np.arange(2)})


def test_python_level_misuse(model, reference):
    with pytest.raises(TypeError):
        model.run([np.ones(2)])
    with pytest.raises(TypeError):
        model.run({1: np.ones(2)})
    raises(errors.InvalidArgumentError, "uint32", model.run, dict(good_feeds(), x_i32=np.ones((2, 2), np.uint32)))
    still_works(model, reference)


# ---- malformed tensors below the Python class (raw rs_tensor) ---------------


class RawCall:
    """Builds rs_tensor arrays by hand, with any shape/byte_size/pointer."""

    def __init__(self, model):
        self.model = model
        self.keep = []

    def tensor(self, t, name, dtype, shape, data, byte_size):
        cname = ffi.new("char[]", name.encode()) if name is not None else ffi.NULL
        self.keep.append(cname)
        t.name = cname
        t.dtype = dtype
        t.ndim = len(shape) if shape is not None else 0
        if shape is not None:
            s = ffi.new("int64_t[]", list(shape) or [0])
            self.keep.append(s)
            t.shape = s
        else:
            t.shape = ffi.NULL
        if isinstance(data, np.ndarray):
            self.keep.append(data)
            t.data = ffi.cast("void*", data.ctypes.data)
        else:
            t.data = data
        t.byte_size = byte_size

    def run(self, overrides: dict, n_extra_dupe=False, ndim_override=None):
        feeds = good_feeds()
        order = list(feeds)
        ts = ffi.new("rs_tensor[]", len(order) + 1)
        dtypes = {"x_f32": 1, "x_f64": 2, "x_i32": 3, "x_i64": 9}
        for i, name in enumerate(order):
            arr = feeds[name]
            spec = dict(name=name, dtype=dtypes[name], shape=arr.shape, data=arr, byte_size=arr.nbytes)
            spec.update(overrides.get(name, {}))
            self.tensor(ts[i], **spec)
            if ndim_override and name in ndim_override:
                ts[i].ndim = ndim_override[name]
        n = len(order)
        if n_extra_dupe:
            arr = feeds["x_i64"]
            self.tensor(ts[n], "x_i64", 9, arr.shape, arr, arr.nbytes)
            n += 1
        out = ffi.new("rs_result**")
        err = ffi.new("rs_error**")
        code = lib().rs_model_run(self.model._handle, ts, n, ffi.NULL, 0, out, err)
        msg = ffi.string(lib().rs_error_message(err[0])).decode() if err[0] != ffi.NULL else ""
        lib().rs_error_free(err[0])
        if code == RS_OK:
            lib().rs_result_free(out[0])
        else:
            assert out[0] == ffi.NULL
        return code, msg


@pytest.mark.parametrize("override, match", [
    ({"x_f32": {"byte_size": 7 * 4}}, "byte_size"),                 # element count vs shape
    ({"x_f32": {"byte_size": 9 * 4}}, "byte_size"),
    ({"x_f32": {"shape": (2, -4)}}, "negative"),
    ({"x_i64": {"shape": (-1,)}}, "negative"),
    ({"x_f32": {"shape": (2**40, 2**40)}}, "x_f32"),                 # product overflows int64
    ({"x_f32": {"shape": (2**62, 4)}}, "x_f32"),
    ({"x_f32": {"shape": (2**31, 4), "byte_size": 32}}, "x_f32"),    # huge but representable
    ({"x_f32": {"data": ffi.NULL}}, "NULL"),
    ({"x_f32": {"shape": None}}, "x_f32"),                           # NULL shape with ndim 2
    ({"x_f32": {"name": None}}, "NULL name"),
    ({"x_f32": {"dtype": 99}}, "dtype"),
    ({"x_f32": {"dtype": -3}}, "dtype"),
    ({"x_f32": {"dtype": 7}}, "dtype"),                              # string dtype for float input
])
def test_raw_malformed_tensors(model, reference, override, match):
    null_shape = override.get("x_f32", {}).get("shape", ()) is None
    code, msg = RawCall(model).run(override, ndim_override={"x_f32": 2} if null_shape else None)
    assert code == INVALID, msg
    assert match.lower() in msg.lower(), msg
    still_works(model, reference)


@pytest.mark.parametrize("ndim", [-1, -1000, 65, 1 << 30])
def test_raw_bad_rank(model, reference, ndim):
    code, msg = RawCall(model).run({}, ndim_override={"x_f32": ndim})
    assert code == INVALID, msg
    assert "x_f32" in msg
    still_works(model, reference)


def test_raw_duplicate_input(model, reference):
    code, msg = RawCall(model).run({}, n_extra_dupe=True)
    assert code == INVALID and "more than once" in msg
    still_works(model, reference)


def test_raw_null_inputs_and_outputs(model):
    L = lib()
    out = ffi.new("rs_result**")
    err = ffi.new("rs_error**")
    assert L.rs_model_run(model._handle, ffi.NULL, 3, ffi.NULL, 0, out, err) == INVALID
    L.rs_error_free(err[0])
    assert out[0] == ffi.NULL
    # NULL out-pointer: an error, not a crash.
    feeds = good_feeds()
    with pytest.raises(errors.RecstrataError):
        err[0] = ffi.NULL
        call = RawCall(model)
        ts = ffi.new("rs_tensor[]", 4)
        for i, (name, arr) in enumerate(feeds.items()):
            call.tensor(ts[i], name, {"x_f32": 1, "x_f64": 2, "x_i32": 3, "x_i64": 9}[name],
                        arr.shape, arr, arr.nbytes)
        check(L.rs_model_run(model._handle, ts, 4, ffi.NULL, 0, ffi.NULL, err), err)
    # NULL entry in output_names.
    names = ffi.new("const char*[]", [ffi.NULL])
    code = L.rs_model_run(model._handle, ts, 4, names, 1, out, err)
    assert code == INVALID
    L.rs_error_free(err[0])


# ---- NULL handles -----------------------------------------------------------


def test_null_model_handle():
    L = lib()
    err = ffi.new("rs_error**")
    out = ffi.new("rs_result**")
    t = ffi.new("rs_tensor*")

    def expect_error(code):
        assert code != RS_OK
        assert err[0] != ffi.NULL
        msg = ffi.string(L.rs_error_message(err[0])).decode()
        assert msg, "error without a message"
        L.rs_error_free(err[0])
        err[0] = ffi.NULL

    expect_error(L.rs_model_run(ffi.NULL, ffi.NULL, 0, ffi.NULL, 0, out, err))
    expect_error(L.rs_model_input(ffi.NULL, 0, t, err))
    expect_error(L.rs_model_output(ffi.NULL, 0, t, err))
    s = ffi.new("char**")
    expect_error(L.rs_model_describe_json(ffi.NULL, s, err))
    expect_error(L.rs_model_stats_json(ffi.NULL, s, err))
    resp = ffi.new("void**")
    size = ffi.new("size_t*")
    expect_error(L.rs_model_predict(ffi.NULL, b"x", 1, resp, size, err))
    expect_error(L.rs_model_open(ffi.NULL, ffi.NULL, ffi.new("rs_model**"), err))
    expect_error(L.rs_result_output(ffi.NULL, 0, t, err))
    assert L.rs_model_num_inputs(ffi.NULL) == 0
    assert L.rs_model_num_outputs(ffi.NULL) == 0
    assert L.rs_result_count(ffi.NULL) == 0
    assert L.rs_result_find(ffi.NULL, b"x") == -1
    L.rs_model_close(ffi.NULL)
    L.rs_result_free(ffi.NULL)
    L.rs_free(ffi.NULL)
    L.rs_error_free(ffi.NULL)
    assert L.rs_error_code(ffi.NULL) == RS_OK
    # error=NULL is allowed: the code still comes back.
    assert L.rs_model_run(ffi.NULL, ffi.NULL, 0, ffi.NULL, 0, out, ffi.NULL) != RS_OK


def test_out_of_range_signature_index(model):
    L = lib()
    err = ffi.new("rs_error**")
    t = ffi.new("rs_tensor*")
    assert L.rs_model_input(model._handle, 4, t, err) == 5  # RS_ERR_OUT_OF_RANGE
    L.rs_error_free(err[0])
    assert L.rs_model_output(model._handle, 1 << 40, t, err) == 5
    L.rs_error_free(err[0])


def test_result_accessors(model):
    L = lib()
    # One valid run through the raw API, then misuse of the result.
    feeds = good_feeds()
    call = RawCall(model)
    ts = ffi.new("rs_tensor[]", 4)
    for i, (name, arr) in enumerate(feeds.items()):
        call.tensor(ts[i], name, {"x_f32": 1, "x_f64": 2, "x_i32": 3, "x_i64": 9}[name], arr.shape, arr, arr.nbytes)
    out = ffi.new("rs_result**")
    err = ffi.new("rs_error**")
    check(L.rs_model_run(model._handle, ts, 4, ffi.NULL, 0, out, err), err)
    r = out[0]
    try:
        n = L.rs_result_count(r)
        assert n == 5
        assert L.rs_result_find(r, b"y_i64") >= 0
        assert L.rs_result_find(r, b"nope") == -1
        assert L.rs_result_find(r, ffi.NULL) == -1
        t = ffi.new("rs_tensor*")
        assert L.rs_result_output(r, n, t, err) == 5
        L.rs_error_free(err[0])
    finally:
        L.rs_result_free(r)


def test_closed_model_refuses_calls(multi_model_dir):
    m = Model(multi_model_dir)
    m.close()
    raises(errors.FailedPreconditionError, "closed", m.run, good_feeds())
    raises(errors.FailedPreconditionError, "closed", m.predict_bytes, b"x")
    raises(errors.FailedPreconditionError, "closed", m.describe)


# ---- wire bytes: truncated, random, empty ------------------------------------


def test_empty_bytes_return_signature_json(model):
    info = json.loads(model.predict_bytes(b""))
    assert "x_f32" in json.dumps(info) and "y_bool" in json.dumps(info)


def test_request_without_inputs(model, reference):
    raises(errors.InvalidArgumentError, "no inputs", model.predict_bytes,
           pb.PredictRequest(signature_name="serving_default").SerializeToString())
    raises(errors.InvalidArgumentError, "no inputs", model.predict_bytes,
           pb.PredictRequest(output_filter=["y_f32"]).SerializeToString())
    still_works(model, reference)


def test_every_truncation_of_a_valid_request(model, reference):
    # No output_filter: it would be the last field, and cutting it off leaves
    # a complete, valid request. Every cut inside the inputs must fail.
    data = codec.make_request(good_feeds(3), signature_name="serving_default")
    assert codec.parse_response(model.predict_bytes(data))  # the full request works
    for cut in range(1, len(data)):
        with pytest.raises(errors.InvalidArgumentError):
            model.predict_bytes(data[:cut])
    still_works(model, reference)


def test_wire_semantic_errors(model, reference):
    feeds = good_feeds()
    cases = [
        (dict(feeds, nope=np.ones(2, np.float32)), None, "unknown input 'nope'"),
        (dict(feeds, x_f32=np.ones((2, 4), np.float64)), None, "x_f32"),
        (dict(feeds, x_f32=np.ones((2, 5), np.float32)), None, "x_f32"),
        (feeds, ["nope"], "nope"),
    ]
    for f, filt, match in cases:
        raises(errors.InvalidArgumentError, match, model.predict_bytes, codec.make_request(f, output_filter=filt))
    # A value count that does not match the shape, dims that overflow, a bad dtype code.
    req = pb.PredictRequest.FromString(codec.make_request(feeds))
    req.inputs["x_f32"].float_val.append(1.0)
    raises(errors.InvalidArgumentError, "x_f32", model.predict_bytes, req.SerializeToString())
    req = pb.PredictRequest.FromString(codec.make_request(feeds))
    del req.inputs["x_f32"].array_shape.dim[:]
    req.inputs["x_f32"].array_shape.dim.extend([2**40, 2**40])
    raises(errors.InvalidArgumentError, "x_f32", model.predict_bytes, req.SerializeToString())
    req = pb.PredictRequest.FromString(codec.make_request(feeds))
    del req.inputs["x_f32"].array_shape.dim[:]
    req.inputs["x_f32"].array_shape.dim.extend([-2, -4])
    raises(errors.InvalidArgumentError, "x_f32", model.predict_bytes, req.SerializeToString())
    req = pb.PredictRequest.FromString(codec.make_request(feeds))
    req.inputs["x_f32"].dtype = 99
    raises(errors.InvalidArgumentError, "x_f32", model.predict_bytes, req.SerializeToString())
    still_works(model, reference)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=1, max_size=200))
def test_random_bytes_never_crash(model, data):
    with pytest.raises(errors.InvalidArgumentError):
        model.predict_bytes(data)


_ARRAY_PROTO = st.builds(
    lambda dtype, dims, nf, ni, n64, ns: pb.ArrayProto(
        dtype=dtype, array_shape=pb.ArrayShape(dim=dims), float_val=[0.5] * nf, int_val=[1] * ni,
        int64_val=[2] * n64, string_val=[b"s"] * ns),
    st.integers(0, 25), st.lists(st.integers(-3, 2**62), max_size=4),
    st.integers(0, 10), st.integers(0, 10), st.integers(0, 10), st.integers(0, 3))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["x_f32", "x_f64", "x_i32", "x_i64", "zz"]), _ARRAY_PROTO, max_size=5),
       st.lists(st.sampled_from(["y_f32", "y_i64", "nope", ""]), max_size=2))
def test_structured_fuzz_requests(model, inputs, output_filter):
    """Well-formed protobuf with random dtypes/shapes/counts: a correct answer or a clean error."""
    req = pb.PredictRequest(output_filter=output_filter)
    for k, v in inputs.items():
        req.inputs[k].CopyFrom(v)
    data = req.SerializeToString()
    if not data:  # size 0 asks for the signature description instead
        return
    try:
        out = codec.parse_response(model.predict_bytes(data))
    except errors.RecstrataError as e:
        assert e.code in (INVALID, NOT_FOUND) and str(e)
        return
    # Success is only possible for a fully valid request; then outputs are consistent.
    feeds, _, _ = codec.parse_request(req.SerializeToString())
    assert set(feeds) == {"x_f32", "x_f64", "x_i32", "x_i64"}
    expect = model.run(feeds, outputs=output_filter or None)
    assert set(out) == set(expect)


# ---- the host process survives loading the library ---------------------------


@pytest.mark.parametrize("after", ["import hashlib, hmac, ssl, secrets, numpy.random",
                                   "import tensorflow as tf; tf.constant(1.0) + 1"])
def test_host_imports_after_loading_the_library(mlp_model_dir, after):
    """Loading librecstrata (and TF's C libraries) first must not break later imports.

    Regression: preloading TF's libraries RTLD_GLOBAL exported their BoringSSL
    symbols to the whole process, and a later `import hmac` segfaulted.
    """
    import subprocess
    import sys

    code = ("import numpy as np\n"
            "from recstrata.processor import Model\n"
            f"m = Model({mlp_model_dir!r})\n"
            "m.run({'x': np.ones((2, 8), np.float32)})\n"
            f"{after}\n"
            "m.run({'x': np.ones((2, 8), np.float32)})\n"
            "print('alive')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "alive" in proc.stdout, proc.stderr[-2000:]


def test_raw_string_elements(make_model, string_model_dir):
    """String inputs: rs_bytes entries with NULL data, and byte_size not matching the shape."""
    m = make_model(string_model_dir)
    L = lib()
    n_arr = np.arange(2, dtype=np.int64)
    blob = b"abcdef"
    cblob = ffi.from_buffer(blob)
    items = ffi.new("rs_bytes[]", 2)
    items[0].data, items[0].size = cblob, 3
    items[1].data, items[1].size = ffi.NULL, 5  # NULL with a size: must be refused
    shape = ffi.new("int64_t[]", [2])
    names = [ffi.new("char[]", b"s"), ffi.new("char[]", b"n")]
    ts = ffi.new("rs_tensor[]", 2)
    ts[0].name, ts[0].dtype, ts[0].ndim, ts[0].shape = names[0], 7, 1, shape
    ts[0].data, ts[0].byte_size = items, 2 * ffi.sizeof("rs_bytes")
    ts[1].name, ts[1].dtype, ts[1].ndim, ts[1].shape = names[1], 9, 1, shape
    ts[1].data, ts[1].byte_size = ffi.from_buffer(n_arr), n_arr.nbytes
    out = ffi.new("rs_result**")
    err = ffi.new("rs_error**")

    def run():
        code = L.rs_model_run(m._handle, ts, 2, ffi.NULL, 0, out, err)
        msg = ffi.string(L.rs_error_message(err[0])).decode() if code else ""
        L.rs_error_free(err[0])
        err[0] = ffi.NULL
        if code == RS_OK:
            L.rs_result_free(out[0])
        return code, msg

    code, msg = run()
    assert code == INVALID and "'s'" in msg and "string element 1" in msg, msg
    items[1].data, items[1].size = ffi.NULL, 0  # NULL with size 0 is an empty string
    assert run() == (RS_OK, "")
    items[1].data, items[1].size = cblob + 3, 3
    ts[0].byte_size = 3 * ffi.sizeof("rs_bytes")  # says 3 elements, shape says 2
    code, msg = run()
    assert code == INVALID and "byte_size" in msg, msg
    ts[0].byte_size = 2 * ffi.sizeof("rs_bytes")
    assert run() == (RS_OK, "")


def test_bad_requests_do_not_write_to_stderr(multi_model_dir):
    """An embedded library must not log per bad request (log flooding by any client)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from recstrata.processor import Model\n"
            "from recstrata import errors\n"
            f"m = Model({multi_model_dir!r})\n"
            "bad = [b'\\x12\\x05\\x0a\\x01\\xff\\x12\\x00',  # inputs map key 0xff (not UTF-8)\n"
            "       b'\\x1a\\x01\\xfe',                       # output_filter 0xfe\n"
            "       b'\\x0a\\x02\\xc3\\x28']                  # signature_name, invalid UTF-8\n"
            "sys.stderr.write('--- requests start\\n'); sys.stderr.flush()\n"
            "for _ in range(20):\n"
            "    for b in bad:\n"
            "        try:\n"
            "            m.predict_bytes(b)\n"
            "            raise SystemExit('accepted a bad request')\n"
            "        except errors.InvalidArgumentError:\n"
            "            pass\n"
            "print('alive')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "alive" in proc.stdout, proc.stderr[-2000:]
    after = proc.stderr.split("--- requests start", 1)[1]
    assert after.strip() == "", after[:500]
