"""SessionGroup behaviour seen through the C API (cffi): selection policies,
per-session counters, warmup on every session, core-set pinning (caller
thread during the run for inline sessions; pool threads for pooled ones) and
config validation."""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _build(path, heavy=False):
    import tensorflow as tf

    class M(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(np.eye(4, dtype=np.float32) * 3)
            self.big = tf.Variable(np.full((256, 256), 1e-3, np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x):
            y = tf.matmul(x, self.w)
            if heavy:  # ~0.1-0.5 s of single-thread work, to observe a running call
                h = tf.tile(tf.reshape(tf.reduce_sum(x), [1, 1]), [256, 256])
                for _ in range(60):
                    h = tf.matmul(h, self.big) + 1.0
                y = y + tf.reduce_sum(h) * 0.0
            return {"y": y}

    m = M()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("sg") / "m")


@pytest.fixture(scope="module")
def heavy_dir(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("sg") / "heavy", heavy=True)


class Model:
    def __init__(self, path, config):
        from recstrata._native import check, ffi, lib

        self.L, self.ffi, self.check = lib(), ffi, check
        err = ffi.new("rs_error**")
        mp = ffi.new("rs_model**")
        check(self.L.rs_model_open(str(path).encode(), json.dumps(config).encode(), mp, err), err)
        self.m = mp[0]

    def close(self):
        self.L.rs_model_close(self.m)

    def _json(self, fn):
        from recstrata._native import take_string

        err = self.ffi.new("rs_error**")
        out = self.ffi.new("char**")
        self.check(fn(self.m, out, err), err)
        return json.loads(take_string(out[0]))

    def stats(self):
        return self._json(self.L.rs_model_stats_json)

    def describe(self):
        return self._json(self.L.rs_model_describe_json)

    def calls(self):
        return [s["calls"] for s in self.stats()["session_group"]["sessions"]]

    def run(self, x):
        ffi = self.ffi
        x = np.ascontiguousarray(x, np.float32)
        t = ffi.new("rs_tensor*")
        name = ffi.new("char[]", b"x")
        shape = ffi.new("int64_t[]", list(x.shape))
        t.name, t.dtype, t.ndim, t.shape = name, 1, x.ndim, shape
        t.data, t.byte_size = ffi.cast("void*", x.ctypes.data), x.nbytes
        err = ffi.new("rs_error**")
        rp = ffi.new("rs_result**")
        self.check(self.L.rs_model_run(self.m, t, 1, ffi.NULL, 0, rp, err), err)
        v = ffi.new("rs_tensor*")
        self.check(self.L.rs_result_output(rp[0], 0, v, err), err)
        y = np.frombuffer(ffi.buffer(v.data, v.byte_size), np.float32).reshape([v.shape[i] for i in range(v.ndim)]).copy()
        self.L.rs_result_free(rp[0])
        return y


def _open_error(path, config):
    from recstrata._native import ffi, lib

    L = lib()
    err = ffi.new("rs_error**")
    mp = ffi.new("rs_model**")
    code = L.rs_model_open(str(path).encode(), json.dumps(config).encode(), mp, err)
    msg = ffi.string(L.rs_error_message(err[0])).decode() if code else ""
    if code:
        L.rs_error_free(err[0])
    else:
        L.rs_model_close(mp[0])
    return code, msg


X = np.arange(8, dtype=np.float32).reshape(2, 4)


def test_warmup_runs_on_every_session(model_dir):
    m = Model(model_dir, {"session_num": 3, "warmup_runs": 4, "select_session_policy": "RR"})
    try:
        assert m.calls() == [4, 4, 4]
        d = m.describe()
        assert d["warmup"]["source"] == "generated" and d["warmup"]["error"] is None
        assert m.stats()["requests"] == 0  # warmup is not counted as requests
    finally:
        m.close()


def test_warmup_from_file(model_dir, tmp_path):
    from recstrata.wire import predict_pb2 as pb

    req = pb.PredictRequest()
    a = req.inputs["x"]
    a.dtype = pb.DT_FLOAT
    a.array_shape.dim.extend([3, 4])
    a.float_val.extend([1.0] * 12)
    f = tmp_path / "warmup.bin"
    f.write_bytes(req.SerializeToString())
    m = Model(model_dir, {"session_num": 2, "warmup_runs": 2, "warmup_file_name": str(f)})
    try:
        assert m.calls() == [2, 2]
        assert m.describe()["warmup"]["source"] == "file"
    finally:
        m.close()
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x12\x05garbage")
    code, msg = _open_error(model_dir, {"warmup_file_name": str(bad)})
    assert code == 1 and "warmup file" in msg
    code, msg = _open_error(model_dir, {"warmup_file_name": str(tmp_path / "absent.bin")})
    assert code == 2 and "warmup file" in msg


def test_round_robin_spreads_evenly(model_dir):
    m = Model(model_dir, {"session_num": 3, "warmup_runs": 0, "select_session_policy": "RR"})
    try:
        for _ in range(30):
            np.testing.assert_allclose(m.run(X), X * 3)
        assert m.calls() == [10, 10, 10]
        assert m.stats()["requests"] == 30
    finally:
        m.close()


def test_mod_keeps_a_thread_on_one_session(model_dir):
    m = Model(model_dir, {"session_num": 4, "warmup_runs": 0, "select_session_policy": "MOD"})
    try:
        for _ in range(12):
            m.run(X)
        calls = m.calls()
        assert sorted(calls) == [0, 0, 0, 12], calls
        # other threads: each one sticks to one session too
        for _ in range(6):
            before = m.calls()
            th = threading.Thread(target=lambda: [m.run(X) for _ in range(5)])
            th.start()
            th.join()
            diff = [a - b for a, b in zip(m.calls(), before)]
            assert sorted(diff) == [0, 0, 0, 5], diff
    finally:
        m.close()


def test_mod_spreads_threads_over_sessions(model_dir):
    # DeepRec hashes std::thread::id (a pthread_t address) whose low bits are
    # constant; our MOD mixes the kernel tid, so 16 threads use > 1 session.
    m = Model(model_dir, {"session_num": 2, "warmup_runs": 0, "select_session_policy": "MOD"})
    try:
        ths = [threading.Thread(target=lambda: [m.run(X) for _ in range(3)]) for _ in range(16)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        calls = m.calls()
        assert sum(calls) == 48 and min(calls) > 0, calls
    finally:
        m.close()


def test_least_loaded_lone_caller_keeps_its_session_and_concurrent_is_consistent(model_dir):
    m = Model(model_dir, {"session_num": 2, "warmup_runs": 0, "select_session_policy": "LEAST_LOADED"})
    try:
        for _ in range(10):
            m.run(X)
        # ties (all idle) go to the caller's own session: no cache-cold switching
        assert sorted(m.calls()) == [0, 10]
        errors = []

        def work():
            try:
                for _ in range(20):
                    np.testing.assert_allclose(m.run(X), X * 3)
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        ths = [threading.Thread(target=work) for _ in range(8)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        assert not errors
        st = m.stats()
        assert sum(s["calls"] for s in st["session_group"]["sessions"]) == 170
        assert all(s["in_flight"] == 0 for s in st["session_group"]["sessions"])
    finally:
        m.close()


def test_error_counter(model_dir):
    m = Model(model_dir, {"warmup_runs": 0})
    try:
        with pytest.raises(Exception):
            m.run(np.zeros((2, 5), np.float32))
        st = m.stats()
        assert st["errors"] == 1 and st["requests"] == 0
    finally:
        m.close()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cpus")
def test_inline_session_pins_the_caller_during_the_run(heavy_dir):
    cpus = sorted(os.sched_getaffinity(0))
    m = Model(heavy_dir, {"session_num": 2, "cpusets": f"{cpus[0]};{cpus[1]}", "select_session_policy": "RR",
                          "warmup_runs": 1})
    try:
        layout = m.describe()["session_group"]["sessions"]
        assert [s["affinity"] for s in layout] == ["caller_thread_during_run"] * 2
        seen = []
        tid = []
        done = threading.Event()

        def caller():
            tid.append(threading.get_native_id())
            for _ in range(4):
                m.run(X)
            done.set()

        th = threading.Thread(target=caller)
        th.start()
        while not tid:
            time.sleep(0.001)
        while not done.is_set():
            try:
                seen.append(frozenset(os.sched_getaffinity(tid[0])))
            except OSError:
                break
            time.sleep(0.002)
        th.join()
        during = {s for s in seen if len(s) == 1}
        assert {frozenset([cpus[0]]), frozenset([cpus[1]])} <= during, seen[:20]
        # restored after the run
        assert os.sched_getaffinity(0) == set(cpus)
    finally:
        m.close()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cpus")
def test_pooled_sessions_pin_their_own_pool_threads(model_dir):
    cpus = sorted(os.sched_getaffinity(0))
    before = set(os.listdir("/proc/self/task"))
    m = Model(model_dir, {"session_num": 2, "use_per_session_threads": True, "inter_op_parallelism_threads": 2,
                          "cpusets": f"{cpus[0]};{cpus[1]}", "warmup_runs": 1})
    try:
        layout = m.describe()["session_group"]["sessions"]
        assert [s["affinity"] for s in layout] == ["pool_threads"] * 2
        assert [s["pinned_threads"] for s in layout] == [2, 2]
        pinned = {}
        for t in set(os.listdir("/proc/self/task")) - before:
            try:
                name = open(f"/proc/self/task/{t}/comm").read().strip()
                if name.startswith("tf_Compute"):  # one pool per session: tf_Compute0, tf_Compute1
                    aff = frozenset(os.sched_getaffinity(int(t)))
                    pinned[aff] = pinned.get(aff, 0) + 1
            except OSError:
                pass
        assert pinned == {frozenset([cpus[0]]): 2, frozenset([cpus[1]]): 2}, pinned
        np.testing.assert_allclose(m.run(X), X * 3)
    finally:
        m.close()


@pytest.mark.parametrize("config,needle", [
    ({"session_num": 2, "cpusets": "0-1"}, "cpusets has 1 core sets but session_num is 2"),
    ({"cpusets": "a-b"}, "malformed cpusets"),
    ({"cpusets": "3-1"}, "empty cpu range"),
    ({"cpusets": "99999"}, "too large"),
    ({"session_num": 0}, "session_num"),
    ({"session_num": "x"}, "session_num"),
    ({"select_session_policy": "RANDOM"}, "select_session_policy"),
    ({"serialize_protocol": "json"}, "serialize_protocol"),
    ({"use_per_session_threads": "maybe"}, "use_per_session_threads"),
    ({"warmup_runs": -1}, "warmup_runs"),
])
def test_bad_config_values(model_dir, config, needle):
    code, msg = _open_error(model_dir, config)
    assert code == 1, msg
    assert needle in msg


def test_cpuset_outside_the_allowed_cpus_is_rejected(model_dir):
    top = max(os.sched_getaffinity(0)) + 1
    code, msg = _open_error(model_dir, {"cpusets": f"{top}-{top + 1}"})
    assert code == 1 and "no CPU this process may run on" in msg, msg


def test_unknown_deeprec_keys_are_accepted(model_dir):
    m = Model(model_dir, {"feature_store_type": "memory", "redis_url": "x", "omp_num_threads": 4,
                          "model_store_type": "local", "ev_storage_type": "DRAM", "warmup_runs": 0})
    m.close()


def test_savedmodel_dir_from_config_and_missing_dir(model_dir, tmp_path):
    from recstrata._native import ffi, lib

    L = lib()
    err = ffi.new("rs_error**")
    mp = ffi.new("rs_model**")
    assert L.rs_model_open(ffi.NULL, json.dumps({"savedmodel_dir": str(model_dir)}).encode(), mp, err) == 0
    L.rs_model_close(mp[0])
    code, msg = _open_error(tmp_path / "absent", {})
    assert code == 2 and "does not exist" in msg
    (tmp_path / "empty").mkdir()
    code, msg = _open_error(tmp_path / "empty", {})
    assert code == 2 and "saved_model.pb" in msg


def test_repeated_open_close(model_dir):
    for _ in range(5):
        m = Model(model_dir, {"session_num": 2, "warmup_runs": 1})
        np.testing.assert_allclose(m.run(X), X * 3)
        m.close()


def _rss_mib_after_open(path, config) -> float:
    """VmRSS of a fresh process that opened the model (its own process, so
    nothing else is resident from earlier tests)."""
    import subprocess
    import sys

    code = ("import json, sys, recstrata\n"
            "m = recstrata.Model(sys.argv[1], json.loads(sys.argv[2]))\n"
            "print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])\n")
    out = subprocess.run([sys.executable, "-c", code, str(path), json.dumps(config)], capture_output=True,
                         text=True, check=True, env=dict(os.environ))
    return int(out.stdout.strip().splitlines()[-1]) / 1024.0


def test_sessions_share_one_copy_of_the_weights(tmp_path):
    """session_num=4 holds the variables once: four sessions of a model with a
    128 MiB in-graph table cost far less than three extra tables."""
    import tensorflow as tf

    class Big(tf.Module):
        def __init__(self):
            super().__init__()
            self.table = tf.Variable(tf.random.uniform([262_144, 128], seed=1))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="ids")])
        def serve(self, ids):
            return {"v": tf.gather(self.table, ids)}

    m = Big()
    path = tmp_path / "big"
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})
    one = _rss_mib_after_open(path, {"session_num": 1, "warmup_runs": 1})
    four = _rss_mib_after_open(path, {"session_num": 4, "warmup_runs": 1})
    assert four - one < 48, (one, four)  # a second copy alone would be +128 MiB
    mm = Model(path, {"session_num": 4, "select_session_policy": "RR", "warmup_runs": 1})
    try:
        layout = mm.describe()["session_group"]
        assert layout["loaded_copies"] == 1 and len(layout["sessions"]) == 4
    finally:
        mm.close()
