"""recstrata.Model outputs equal TensorFlow Python's own outputs on the same SavedModels.

Several dtypes (float32/64, int32/64, bool, strings), batch sizes 1..1024,
output selection, a second signature, both input paths (numpy tensors and
DeepRec wire bytes), and the input conversions the binding promises
(non-contiguous, big-endian, lists, 64-byte-aligned zero-copy arrays).
"""

from __future__ import annotations

import numpy as np
import pytest

from recstrata.processor import Model, Processor, TensorSpec, aligned_empty
from recstrata.wire import codec

BATCHES = [1, 2, 17, 64, 255, 1024]


def multi_feeds(batch: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed + batch)
    return {
        "x_f32": rng.normal(size=(batch, 4)).astype(np.float32),
        "x_f64": rng.normal(size=(batch, 3)),
        "x_i32": rng.integers(-1000, 1000, (batch, 2)).astype(np.int32),
        "x_i64": rng.integers(-(2**40), 2**40, batch),
    }


def assert_same(got: dict, ref: dict, float_rtol: float = 1e-6):
    assert set(got) == set(ref)
    for k, r in ref.items():
        g = got[k]
        assert g.shape == r.shape, k
        if r.dtype == object:
            assert g.dtype == object and g.tolist() == r.tolist(), k
            continue
        assert g.dtype == r.dtype, k
        if r.dtype.kind == "f":
            np.testing.assert_allclose(g, r, rtol=float_rtol, atol=1e-6, err_msg=k)
        else:
            np.testing.assert_array_equal(g, r, err_msg=k)


@pytest.fixture(scope="module")
def multi(multi_model_dir):
    with Model(multi_model_dir) as m:
        yield m


@pytest.fixture(scope="module")
def strings(string_model_dir):
    with Model(string_model_dir) as m:
        yield m


def test_signature_specs(multi):
    ins = {s.name: s for s in multi.inputs}
    assert ins["x_f32"] == TensorSpec("x_f32", np.dtype(np.float32), (None, 4), 1)
    assert ins["x_f64"].dtype == np.float64 and ins["x_f64"].shape == (None, 3)
    assert ins["x_i32"].dtype == np.int32 and ins["x_i64"].dtype == np.int64
    assert ins["x_i64"].shape == (None,)
    outs = {s.name: s for s in multi.outputs}
    assert set(outs) == {"y_f32", "y_f64", "y_i32", "y_i64", "y_bool"}
    assert outs["y_bool"].dtype == np.bool_ and outs["y_f32"].shape == (None, 3)
    assert Processor is Model


@pytest.mark.parametrize("batch", BATCHES)
def test_multi_dtype_outputs_equal_tf(multi, multi_model_dir, tf_reference, batch):
    feeds = multi_feeds(batch)
    assert_same(multi.run(feeds), tf_reference(multi_model_dir, feeds))


@pytest.mark.parametrize("batch", [1, 3, 64, 1024])
def test_string_outputs_equal_tf(strings, string_model_dir, tf_reference, batch):
    rng = np.random.default_rng(batch)
    words = [bytes(rng.integers(0, 256, rng.integers(0, 12)).astype(np.uint8)) for _ in range(batch)]
    feeds = {"s": np.array(words, dtype=object), "n": rng.integers(-5, 5, batch)}
    got = strings.run(feeds)
    assert_same(got, tf_reference(string_model_dir, feeds))
    assert got["tagged"].dtype == object and isinstance(got["tagged"][0], bytes)


def test_string_inputs_accept_str_and_bytes_arrays(strings, string_model_dir, tf_reference):
    ref = tf_reference(string_model_dir, {"s": np.array([b"h\xc3\xa9", b"ab"], dtype=object),
                                          "n": np.array([1, 2])})
    for s in (["h\u00e9", "ab"], np.array(["h\u00e9", "ab"]), np.array([b"h\xc3\xa9", b"ab"])):
        assert_same(strings.run({"s": s, "n": np.array([1, 2])}), ref)


@pytest.mark.parametrize("batch", [1, 64, 1024])
def test_wire_path_equals_tf(multi, multi_model_dir, tf_reference, batch):
    feeds = multi_feeds(batch, seed=7)
    got = codec.parse_response(multi.predict_bytes(codec.make_request(feeds)))
    assert_same(got, tf_reference(multi_model_dir, feeds))


def test_mlp_equals_tf(make_model, mlp_model_dir, tf_reference):
    m = make_model(mlp_model_dir, session_num=2)
    for batch in (1, 64, 512):
        x = np.random.default_rng(batch).normal(size=(batch, 8)).astype(np.float32)
        assert_same(m.run({"x": x}), tf_reference(mlp_model_dir, {"x": x}), float_rtol=1e-5)


def test_output_selection(multi):
    feeds = multi_feeds(4)
    full = multi.run(feeds)
    sel = multi.run(feeds, outputs=["y_i64", "y_f32"])
    assert list(sel) == ["y_i64", "y_f32"]  # in the order asked
    for k in sel:
        np.testing.assert_array_equal(sel[k], full[k])
    assert list(multi.run(feeds, outputs="y_bool")) == ["y_bool"]


def test_second_signature(make_model, multi_model_dir, tf_reference):
    m = make_model(multi_model_dir, {"signature_name": "halves"})
    assert [s.name for s in m.inputs] == ["x_f32"] and [s.name for s in m.outputs] == ["half"]
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert_same(m.run({"x_f32": x}), tf_reference(multi_model_dir, {"x_f32": x}, "halves"))


def test_input_conversions(multi, multi_model_dir, tf_reference):
    feeds = multi_feeds(6)
    ref = tf_reference(multi_model_dir, feeds)
    # Non-contiguous and Fortran-ordered views are copied to C order first.
    wide = np.zeros((6, 8), np.float32)
    wide[:, ::2] = feeds["x_f32"]
    conv = dict(feeds, x_f32=wide[:, ::2], x_f64=np.asfortranarray(feeds["x_f64"]))
    assert_same(multi.run(conv), ref)
    # Big-endian arrays are byte-swapped; lists take the signature dtype.
    conv = dict(feeds, x_i32=feeds["x_i32"].astype(">i4"), x_i64=feeds["x_i64"].tolist())
    assert_same(multi.run(conv), ref)
    # 64-byte-aligned arrays (the zero-copy path) give the same answer.
    al = aligned_empty((6, 4), np.float32)
    al[...] = feeds["x_f32"]
    assert al.ctypes.data % 64 == 0
    assert_same(multi.run(dict(feeds, x_f32=al)), ref)


def test_inputs_are_not_modified(multi):
    feeds = multi_feeds(8)
    before = {k: v.copy() for k, v in feeds.items()}
    multi.run(feeds)
    for k in feeds:
        np.testing.assert_array_equal(feeds[k], before[k])


def test_outputs_are_owned_copies(multi):
    a = multi.run(multi_feeds(3))
    b = multi.run(multi_feeds(3, seed=99))
    assert a["y_f32"].flags.owndata or a["y_f32"].base is not None
    assert not np.shares_memory(a["y_f32"], b["y_f32"])
    a["y_f32"][...] = 0  # writable, and does not disturb later results
    assert np.any(multi.run(multi_feeds(3))["y_f32"] != 0)


def test_empty_batch(multi, multi_model_dir, tf_reference):
    feeds = multi_feeds(0)
    got = multi.run(feeds)
    assert got["y_f32"].shape == (0, 3) and got["y_i64"].shape == (0,)
    assert_same(got, tf_reference(multi_model_dir, feeds))


def test_fixed_shape_model(make_model, fixed_model_dir):
    m = make_model(fixed_model_dir)
    assert m.inputs[0].shape == (2, 3)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(m.run({"x": x})["y"], x * 2)


def exotic_feeds(batch: int) -> dict:
    import ml_dtypes

    rng = np.random.default_rng(batch)
    return {
        "i8": rng.integers(-128, 128, batch).astype(np.int8),
        "u8": rng.integers(0, 256, batch).astype(np.uint8),
        "i16": rng.integers(-30000, 30000, batch).astype(np.int16),
        "u16": rng.integers(0, 65536, batch).astype(np.uint16),
        "f16": rng.normal(size=batch).astype(np.float16),
        "bf16": rng.normal(size=batch).astype(ml_dtypes.bfloat16),
        "b": rng.integers(0, 2, batch).astype(np.bool_),
        "scale": np.float32(0.5),
    }


@pytest.mark.parametrize("batch", [1, 5, 1024])
def test_small_int_half_bfloat16_bool_and_scalar_inputs(make_model, exotic_model_dir, tf_reference, batch):
    m = make_model(exotic_model_dir)
    specs = {s.name: s for s in m.inputs}
    assert specs["scale"].shape == () and specs["bf16"].dtype.name == "bfloat16"
    feeds = exotic_feeds(batch)
    ref = tf_reference(exotic_model_dir, feeds)
    got = m.run(feeds)
    assert_same(got, ref, float_rtol=1e-3)
    for name in ("i8", "u8", "i16", "u16", "f16", "bf16", "b"):  # pass-through is bit exact
        assert got[f"{name}_out"].dtype == feeds[name].dtype
        np.testing.assert_array_equal(got[f"{name}_out"], feeds[name])
    # The wire path carries them in int_val / float_val / bool_val (DeepRec's convention).
    wire = codec.parse_response(m.predict_bytes(codec.make_request(feeds)))
    assert_same(wire, ref, float_rtol=1e-3)


def test_describe_and_stats(make_model, multi_model_dir):
    m = make_model(multi_model_dir, session_num=2, select_session_policy="RR")
    d = m.describe()
    assert [i["name"] for i in d["signature"]["inputs"]] == [s.name for s in m.inputs]
    assert {o["name"] for o in d["signature"]["outputs"]} == {s.name for s in m.outputs}
    assert d["signature"]["inputs"][0]["shape"] == [-1, 4]
    assert d["session_group"]["session_num"] == 2 and d["session_group"]["select_session_policy"] == "RR"
    assert len(d["session_group"]["sessions"]) == 2
    before = m.stats()
    for _ in range(6):
        m.run(multi_feeds(2))
    with pytest.raises(Exception):
        m.run({"x_f32": np.ones((1, 4), np.float32)})
    s = m.stats()
    assert s["requests"] - before["requests"] >= 6
    assert s["errors"] - before["errors"] >= 1
    calls = [x["calls"] for x in s["session_group"]["sessions"]]
    calls0 = [x["calls"] for x in before["session_group"]["sessions"]]
    assert sum(calls) - sum(calls0) == 6 and all(x["in_flight"] == 0 for x in s["session_group"]["sessions"])


def test_context_manager_and_close(multi_model_dir):
    with Model(multi_model_dir) as m:
        assert not m.closed
        m.run(multi_feeds(1))
    assert m.closed
    m.close()  # idempotent
    assert "closed" in repr(m)


def test_config_forms_are_equivalent(multi_model_dir):
    feeds = multi_feeds(2)
    outs = []
    for args, kwargs in [((), {}), (({"session_num": 2},), {}), (('{"session_num": 2}',), {}),
                         ((), {"session_num": 2}), (('{"session_num": 1}',), {"session_num": 2})]:
        with Model(multi_model_dir, *args, **kwargs) as m:
            outs.append(m.run(feeds))
    for o in outs[1:]:
        assert_same(o, outs[0], float_rtol=0)
