"""Server-side dynamic batching in the native host: concurrent calls merged
into one run give the outputs each call gets unmerged; calls that cannot be
merged (other output selections, other trailing shapes, too many rows, a
model without a batch dimension) run alone and are still right.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from recstrata.errors import InvalidArgumentError
from recstrata.host import Host
from recstrata.processor import Model

from serving_helpers import put_version

THREADS = 8


def build_batch_model(path):
    import tensorflow as tf

    rng = np.random.default_rng(7)

    class M(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(rng.normal(size=(8, 16)).astype(np.float32))
            self.v = tf.Variable(rng.normal(size=(16, 1)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32, name="x"),
                                      tf.TensorSpec([None], tf.int64, name="ids")])
        def serve(self, x, ids):
            h = tf.nn.relu(tf.matmul(x, self.w))
            return {"prob": tf.sigmoid(tf.matmul(h, self.v)), "ids2": ids * 2}

    m = M()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})
    return path


@pytest.fixture(scope="module")
def batch_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("batching")
    tmpl = build_batch_model(root / "tmpl")
    base = root / "base"
    base.mkdir()
    put_version(base, 1, tmpl)
    return base


def host_for(base, max_batch=THREADS, delay_us=2_000_000):
    return Host({"models": [{"name": "m", "base_path": str(base),
                             "batching": {"max_batch_size": max_batch, "max_queue_delay_us": delay_us}}]})


def feeds(i, rows=1):
    rng = np.random.default_rng(100 + i)
    return {"x": rng.normal(size=(rows, 8)).astype(np.float32),
            "ids": np.arange(i * 10, i * 10 + rows, dtype=np.int64)}


def run_together(fn, n=THREADS):
    """Runs fn(i) on n threads released at once; returns results by i (exceptions as values)."""
    barrier = threading.Barrier(n)
    out = [None] * n

    def go(i):
        barrier.wait()
        try:
            out[i] = fn(i)
        except Exception as exc:  # returned, asserted by the caller
            out[i] = exc

    ts = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def batch_metrics(host):
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(host.metrics_text()):
        for s in fam.samples:
            if s.name.startswith("rs_host_batch_size") or s.name == "rs_host_queue_depth":
                out[s.name, s.labels.get("le")] = s.value
    return out


def test_merged_outputs_equal_unmerged(batch_model):
    with Model(batch_model / "1") as direct:
        expected = [direct.run(feeds(i)) for i in range(THREADS)]
    with host_for(batch_model) as host:
        assert host.status("m")["versions"][0]["batching"].startswith("on: max_batch_size 8")
        for _ in range(3):
            got = run_together(lambda i: host.run("m", feeds(i)))
            for i in range(THREADS):
                assert not isinstance(got[i], Exception), got[i]
                assert got[i].keys() == expected[i].keys()
                np.testing.assert_allclose(got[i]["prob"], expected[i]["prob"], rtol=1e-6, atol=1e-7)
                np.testing.assert_array_equal(got[i]["ids2"], expected[i]["ids2"])
                assert got[i]["prob"].shape == (1, 1)
        assert batch_metrics(host)["rs_host_batch_size_sum", None] == 3 * THREADS  # every call went through


def test_calls_are_actually_merged(batch_model):
    with host_for(batch_model) as host:
        run_together(lambda i: host.run("m", feeds(i)))
        m = batch_metrics(host)
        runs, calls = m["rs_host_batch_size_count", None], m["rs_host_batch_size_sum", None]
        assert calls == THREADS
        # every caller waits up to 2 s for company and the batch holds all 8:
        # fewer runs than calls means calls were merged
        assert runs < calls
        assert m["rs_host_queue_depth", None] == 0


def test_unmergeable_calls_run_alone_and_are_right(batch_model):
    with Model(batch_model / "1") as direct:
        with host_for(batch_model, max_batch=4, delay_us=20_000) as host:
            def call(i):
                kind = i % 4
                if kind == 0:    # another output selection
                    return host.run("m", feeds(i), outputs=["ids2"]), direct.run(feeds(i), ["ids2"])
                if kind == 1:    # more rows than max_batch_size
                    return host.run("m", feeds(i, rows=6)), direct.run(feeds(i, rows=6))
                if kind == 2:    # several rows, mergeable with others
                    return host.run("m", feeds(i, rows=2)), direct.run(feeds(i, rows=2))
                return host.run("m", feeds(i)), direct.run(feeds(i))

            for _ in range(2):
                for res in run_together(call):
                    assert not isinstance(res, Exception), res
                    got, want = res
                    assert got.keys() == want.keys()
                    for k in got:
                        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-7)


def test_bad_call_in_a_crowd_fails_alone(batch_model):
    with host_for(batch_model, delay_us=50_000) as host:
        def call(i):
            f = feeds(i)
            if i == 3:
                f["x"] = f["x"].astype(np.float64)  # wrong dtype
            return host.run("m", f)

        got = run_together(call)
        assert isinstance(got[3], InvalidArgumentError)
        assert all(not isinstance(g, Exception) for j, g in enumerate(got) if j != 3)


def test_wire_calls_are_batched_too(batch_model):
    from recstrata.wire import predict_pb2 as pb

    def request(i):
        f = feeds(i)
        req = pb.PredictRequest()
        x = req.inputs["x"]
        x.dtype = pb.DT_FLOAT
        x.array_shape.dim.extend([1, 8])
        x.float_val.extend(f["x"].ravel().tolist())
        ids = req.inputs["ids"]
        ids.dtype = pb.DT_INT64
        ids.array_shape.dim.extend([1])
        ids.int64_val.extend(f["ids"].tolist())
        return req.SerializeToString()

    with Model(batch_model / "1") as direct:
        expected = [direct.predict_bytes(request(i)) for i in range(THREADS)]
        with host_for(batch_model) as host:
            got = run_together(lambda i: host.predict_bytes("m", request(i)))
            for i in range(THREADS):
                a = pb.PredictResponse.FromString(got[i])
                b = pb.PredictResponse.FromString(expected[i])
                np.testing.assert_allclose(a.outputs["prob"].float_val, b.outputs["prob"].float_val, rtol=1e-6)
                assert list(a.outputs["ids2"].int64_val) == list(b.outputs["ids2"].int64_val)
            assert batch_metrics(host)["rs_host_batch_size_count", None] < THREADS


def test_model_without_batch_dimension_is_not_batched(tmp_path):
    import tensorflow as tf

    class Fixed(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([2, 3], tf.float32, name="x")])
        def serve(self, x):
            return {"y": x * 2.0}

    base = tmp_path / "base"
    base.mkdir()
    m = Fixed()
    tf.saved_model.save(m, str(tmp_path / "t"), signatures={"serving_default": m.serve})
    put_version(base, 1, tmp_path / "t")
    with host_for(base) as host:
        assert host.status("m")["versions"][0]["batching"] == "off: input 'x' has no unknown first (batch) dimension"
        got = run_together(lambda i: host.run("m", {"x": np.full((2, 3), i, np.float32)}), n=4)
        for i, g in enumerate(got):
            np.testing.assert_array_equal(g["y"], np.full((2, 3), 2.0 * i, np.float32))


def test_batching_config_errors():
    for batching, needle in [({"max_batch_size": 1 << 21}, "too large"),
                             ({"max_queue_delay_us": 20_000_000}, "over 10 s"),
                             ({"max_batch_size": -1}, "host config")]:
        with pytest.raises(InvalidArgumentError, match=needle):
            Host({"models": [{"name": "m", "base_path": "/x", "batching": batching}]})
