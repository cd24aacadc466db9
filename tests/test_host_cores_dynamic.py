"""The host's dynamic core allocation (core_allocation "dynamic", docs/host.md
"Cores"): the static plan at open, per-model measurements over each window
(request rate, calling-thread CPU ms per request, p99 from the latency
histogram's deltas), re-plan decisions by the allocator's dynamic rule
(hysteresis, floors) from the host's thread or rs_host_replan_cores, and
re-pinning of inline sessions at run time without dropping a request.

This machine has 2 CPUs, where a baseline and the experiments' share get one
each and the allocator alone can never move them; the test hook
rs_host_force_core_plan (Host._force_core_plan) moves models like a re-plan
would, and the allocator's own decisions are checked against it (it keeps a
forced plan its hysteresis accepts and re-plans one it does not).
"""

from __future__ import annotations

import os
import re
import threading
import time

import pytest

from recstrata.errors import FailedPreconditionError, InvalidArgumentError
from recstrata.host import Host

from serving_helpers import X, build_busy_model, build_const_model, put_version

CPUS = sorted(os.sched_getaffinity(0))
two_cpus = pytest.mark.skipif(len(CPUS) < 2, reason="needs 2 cpus")
C0, C1 = (str(CPUS[0]), str(CPUS[1])) if len(CPUS) >= 2 else ("0", "0")
BOTH = f"{C0}-{C1}" if len(CPUS) >= 2 and CPUS[1] == CPUS[0] + 1 else f"{C0},{C1}"


BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]


@pytest.fixture(scope="module")
def const_template(tmp_path_factory):
    return build_const_model(tmp_path_factory.mktemp("dyn") / "const", 1.0)


@pytest.fixture(scope="module")
def busy_template(tmp_path_factory):
    return build_busy_model(tmp_path_factory.mktemp("dynbusy") / "busy")


def bases(tmp_path, template, names):
    out = {}
    for n in names:
        out[n] = tmp_path / n
        out[n].mkdir()
        put_version(out[n], 1, template)
    return out


def dyn_config(base_paths, cores=None, model_configs=None, **extra):
    cores = cores if cores is not None else {"base": {"role": "baseline"}}
    model_configs = model_configs or {}
    models = []
    for n, p in base_paths.items():
        m = {"name": n, "base_path": str(p)}
        if n in cores:
            m["cores"] = cores[n]
        if n in model_configs:
            m["model_config"] = model_configs[n]
        models.append(m)
    cfg = {"models": models, "model_config": {"warmup_runs": 1}, "core_allocation": "dynamic",
           "core_cpus": f"{C0},{C1}", "core_replan_interval_ms": 0}
    cfg.update(extra)
    return cfg


def by_name(cores):
    return {m["name"]: m for m in cores["models"]}


def session_cpus(h, name):
    return [v["session_cpus"] for v in h.status(name)["versions"] if v["state"] == "ready"]


# ---- opens, serves, measures ------------------------------------------------------------


@two_cpus
def test_dynamic_opens_from_the_static_plan_and_serves(tmp_path, const_template):
    b = bases(tmp_path, const_template, ["base", "exp"])
    with Host(dyn_config(b, model_configs={"exp": {"session_num": 2}})) as h:
        core = h.status()["cores"]
        assert core["mode"] == "dynamic" and core["replan_interval_ms"] == 0
        assert core["decisions"] == 0 and core["replans"] == 0 and core["hysteresis"] == pytest.approx(0.2)
        assert "at open" in core["summary"] and "declared traffic" in core["last_decision"]["reason"]
        m = by_name(core)
        assert m["base"]["cpus"] == C0 and m["exp"]["cpus"] == C1 == core["shared_cpus"]  # the static plan
        assert m["exp"]["cpusets"] == f"{C1};{C1}"
        assert all(mm["measured"]["requests"] == 0 for mm in core["models"])
        assert session_cpus(h, "base") == [[C0]] and session_cpus(h, "exp") == [[C1, C1]]
        assert float(h.run("base", X)["y"][0]) == 1.0 and float(h.run("exp", X)["y"][0]) == 1.0
        text = h.metrics_text()
        assert 'rs_host_core_allocation_info{mode="dynamic"' in text
        assert "rs_host_core_replans_total 0" in text and "rs_host_core_decisions_total 0" in text


@two_cpus
def test_measurements_appear_after_traffic(tmp_path, busy_template, const_template):
    b = bases(tmp_path, busy_template, ["base"])
    b.update(bases(tmp_path, const_template, ["exp"]))
    cfg = dyn_config(b, cores={"base": {"role": "baseline", "latency_target_ms": 5000}})
    with Host(cfg) as h:
        h.replan_cores()  # the window starts now
        walls = []
        for _ in range(6):
            t0 = time.perf_counter()
            h.run("base", X)
            walls.append(time.perf_counter() - t0)
        for _ in range(20):
            h.run("exp", X)
        d = h.replan_cores()
        assert d["decision"] == 2 and not d["changed"] and not d["forced"]
        assert d["reason"].startswith("kept: every baseline's need is within the hysteresis")
        assert "base: " in d["reason"] and "rps" in d["reason"] and "(target 5000 ms)" in d["reason"]
        core = h.status()["cores"]
        mb, me = by_name(core)["base"]["measured"], by_name(core)["exp"]["measured"]
        assert mb["requests"] == 6 and me["requests"] == 20
        # window_seconds is printed to the millisecond: the rate must fit the window that rounds to it
        w = mb["window_seconds"]
        assert 6 / (w + 0.0005) * 0.999 <= mb["requests_per_second"] <= 6 / max(w - 0.0005, 1e-6) * 1.001
        # thread CPU time of a busy call: more than nothing, never more than its wall time
        assert 0 < mb["cpu_ms_per_request"] <= max(walls) * 1e3 * 1.05
        assert 0 < me["cpu_ms_per_request"] < mb["cpu_ms_per_request"]
        # p99 from the histogram's window: at most the upper bound of the bucket holding the
        # slowest call as seen from here (which includes the binding's overhead)
        upper = next((bnd for bnd in BUCKETS if max(walls) <= bnd), BUCKETS[-1])
        assert 0 < mb["p99_ms"] <= upper * 1e3 + 1e-6
        assert not mb["p99_over_last_bucket"] and mb["latency_target_ms"] == 5000
        assert by_name(core)["base"]["demand_cores"] == pytest.approx(
            mb["requests_per_second"] * mb["cpu_ms_per_request"] / 1000 / 0.7, rel=0.01)
        text = h.metrics_text()
        assert "rs_host_core_decisions_total 2" in text
        rps = re.search(r'rs_host_model_measured_rps\{model="base"\} ([0-9.e+-]+)', text)
        cpu = re.search(r'rs_host_model_measured_cpu_ms_per_request\{model="base"\} ([0-9.e+-]+)', text)
        p99 = re.search(r'rs_host_model_measured_p99_ms\{model="base"\} ([0-9.e+-]+)', text)
        assert rps and cpu and p99
        assert float(rps.group(1)) == pytest.approx(mb["requests_per_second"], rel=1e-3)
        assert float(cpu.group(1)) == pytest.approx(mb["cpu_ms_per_request"], rel=1e-3)
        # an idle window measures nothing
        d = h.replan_cores()
        assert by_name(h.status()["cores"])["base"]["measured"]["requests"] == 0 and not d["changed"]


# ---- decisions: hysteresis, allocator-driven change, the thread ------------------------------


@two_cpus
def test_hysteresis_keeps_the_plan_when_nothing_changes(tmp_path, const_template):
    b = bases(tmp_path, const_template, ["base", "exp"])
    with Host(dyn_config(b)) as h:
        plan0 = by_name(h.status()["cores"])
        for i in range(3):
            h.run("base", X)
            d = h.replan_cores()
            assert d["decision"] == i + 1 and not d["changed"] and d["reason"].startswith("kept")
        core = h.status()["cores"]
        assert core["decisions"] == 3 and core["replans"] == 0 and not core["last_decision"]["changed"]
        assert {n: m["cpus"] for n, m in by_name(core).items()} == {n: m["cpus"] for n, m in plan0.items()}
        assert session_cpus(h, "base") == [[C0]]


@two_cpus
def test_the_allocator_keeps_a_forced_plan_within_hysteresis_and_reverts_one_beyond(tmp_path, const_template):
    b = bases(tmp_path, const_template, ["base", "exp"])
    with Host(dyn_config(b)) as h:
        # the experiment moved onto the baseline's core: the baseline's need (its floor, 1) did
        # not move, so the allocator keeps the plan in force
        d = h._force_core_plan({"exp": C0})
        assert d["changed"] and d["forced"] and d["reason"].startswith(f"forced (test hook): exp 1 -> 1 cores (cpus {C1} -> {C0})")
        assert session_cpus(h, "exp") == [[C0]]
        d = h.replan_cores()
        assert not d["changed"] and d["reason"].startswith("kept: every baseline's need is within the hysteresis")
        assert by_name(h.status()["cores"])["exp"]["cpus"] == C0 and session_cpus(h, "exp") == [[C0]]
        # the baseline on both cores: 2 cores against a need of 1 is beyond the hysteresis and
        # leaves the experiments nothing; the allocator re-plans (the static assignment again)
        h._force_core_plan({"base": BOTH, "exp": C1})
        assert session_cpus(h, "base") == [[BOTH]]
        d = h.replan_cores()
        assert d["changed"] and not d["forced"]
        assert d["reason"].startswith(f"changed: base 2 -> 1 cores (cpus {BOTH} -> {C0})"), d["reason"]
        core = h.status()["cores"]
        assert core["replans"] == 3 and core["decisions"] == 4
        assert core["last_decision"]["changed"] and core["last_decision"]["apply_errors"] == ""
        m = by_name(core)
        assert m["base"]["cpus"] == C0 and m["base"]["cores"] == 1 and m["exp"]["cpus"] == C1
        assert m["base"]["cpusets"] == C0 and core["shared_cpus"] == C1
        assert session_cpus(h, "base") == [[C0]] and session_cpus(h, "exp") == [[C1]]
        assert float(h.run("base", X)["y"][0]) == 1.0
        text = h.metrics_text()
        assert "rs_host_core_replans_total 3" in text
        assert f'rs_host_model_cpus_info{{model="base",cpus="{C0}"}} 1' in text


@two_cpus
def test_a_version_loaded_after_a_replan_runs_on_the_new_set(tmp_path, const_template):
    b = bases(tmp_path, const_template, ["base", "exp"])
    with Host(dyn_config(b)) as h:
        h._force_core_plan({"base": C1, "exp": C0})
        put_version(b["base"], 2, const_template)
        h.reload("base")
        v = {x["version"]: x for x in h.status("base")["versions"]}
        assert v[2]["state"] == "ready" and v[2]["session_cpus"] == [C1]


@two_cpus
def test_the_replan_thread_decides_every_interval(tmp_path, const_template):
    b = bases(tmp_path, const_template, ["base", "exp"])
    with Host(dyn_config(b, core_replan_interval_ms=50)) as h:
        deadline = time.time() + 10
        while h.status()["cores"]["decisions"] < 3 and time.time() < deadline:
            h.run("base", X)
            time.sleep(0.02)
        core = h.status()["cores"]
        assert core["decisions"] >= 3 and core["replans"] == 0 and core["replan_interval_ms"] == 50
        assert core["last_decision"]["reason"].startswith("kept") and core["last_decision"]["seconds_ago"] >= 0
        assert 0.02 < by_name(core)["base"]["measured"]["window_seconds"] < 5


# ---- re-pinning under load ---------------------------------------------------------------


@two_cpus
def test_replans_under_load_drop_no_request_and_runs_pin_to_the_new_set(tmp_path, busy_template):
    b = bases(tmp_path, busy_template, ["base", "exp"])
    full = frozenset(CPUS)
    with Host(dyn_config(b, model_configs={"exp": {"session_num": 2}})) as h:
        stop = threading.Event()
        fails, ok = [], {"base": 0, "exp": 0}
        lock = threading.Lock()
        callers = []  # (model, tid, [call start times])

        def caller(name, starts, tids):
            tids.append(threading.get_native_id())
            while not stop.is_set():
                starts.append(time.monotonic())
                try:
                    out = h.run(name, X)
                    assert float(out["y"][0]) == 2.0
                    with lock:
                        ok[name] += 1
                except Exception as e:  # noqa: BLE001 - counted and reported
                    fails.append(repr(e))

        threads = []
        for name in ("base", "base", "exp", "exp"):
            starts, tids = [], []
            th = threading.Thread(target=caller, args=(name, starts, tids))
            th.start()
            threads.append(th)
            callers.append((name, tids, starts))
        while not all(c[1] for c in callers):
            time.sleep(0.001)
        samples = []  # (time, caller index, affinity)

        def sample_for(seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                for i, (_, tids, _) in enumerate(callers):
                    try:
                        samples.append((time.monotonic(), i, frozenset(os.sched_getaffinity(tids[0]))))
                    except OSError:
                        pass
                time.sleep(0.002)

        static = {"base": frozenset([CPUS[0]]), "exp": frozenset([CPUS[1]])}
        phases = []  # (start, end, {model: expected set})
        t = time.monotonic()
        sample_for(1.0)
        phases.append((t, time.monotonic(), static))
        # a forced swap, then an allocator-driven re-plan back, both while the callers run
        d = h._force_core_plan({"base": C1, "exp": C0})
        assert d["changed"]
        t = time.monotonic()
        sample_for(1.2)
        phases.append((t, time.monotonic(), {"base": frozenset([CPUS[1]]), "exp": frozenset([CPUS[0]])}))
        h._force_core_plan({"base": BOTH, "exp": C1})
        d = h.replan_cores()
        assert d["changed"] and d["reason"].startswith("changed: base 2 -> 1"), d["reason"]
        t = time.monotonic()
        sample_for(1.2)
        phases.append((t, time.monotonic(), static))
        stop.set()
        for th in threads:
            th.join()
        assert fails == [], fails[:3]
        assert ok["base"] >= 3 and ok["exp"] >= 3, ok

        for p, (t_start, t_end, want) in enumerate(phases):
            for i, (name, _, starts) in enumerate(callers):
                # a run in flight at the switch finishes on its old set: look from this
                # caller's first call that started after the switch
                first = next((s for s in starts if s > t_start), None)
                if first is None:
                    continue
                seen = {a for (t, j, a) in samples if j == i and first < t < t_end and a != full}
                assert seen <= {want[name]}, (p, name, seen)
            narrowed = {callers[j][0]: 0 for j in range(len(callers))}
            for (t, j, a) in samples:
                if t_start < t < t_end and a == want[callers[j][0]]:
                    narrowed[callers[j][0]] += 1
            assert narrowed["base"] > 0 and narrowed["exp"] > 0, (p, narrowed)  # runs really pinned there
        core = h.status()["cores"]
        assert core["replans"] == 3 and core["last_decision"]["apply_errors"] == ""
        assert session_cpus(h, "exp") == [[C1, C1]]
        assert os.sched_getaffinity(0) == set(CPUS)


# ---- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("extra,model_config,needle", [
    ({"core_replan_interval_ms": 5}, None, "core_replan_interval_ms must be"),
    ({"core_replan_interval_ms": 3600001}, None, "core_replan_interval_ms must be"),
    ({"core_replan_interval_ms": -1}, None, "core_replan_interval_ms"),
    ({"core_hysteresis": -0.1}, None, "core_hysteresis"),
    ({"core_hysteresis": 11}, None, "core_hysteresis"),
    ({"core_allocation": "static"}, None, "only used with core_allocation \"dynamic\""),
    ({"core_allocation": "off", "core_replan_interval_ms": None, "core_hysteresis": 0.5}, None, "core_hysteresis is only used"),
    ({}, {"inter_op_parallelism_threads": 2}, "re-pins only inline sessions"),
])
def test_bad_dynamic_options_are_refused(tmp_path, const_template, extra, model_config, needle):
    b = bases(tmp_path, const_template, ["base"])
    cfg = dyn_config(b, model_configs={"base": model_config} if model_config else {}, core_cpus=f"{CPUS[0]}")
    cfg.update(extra)
    cfg = {k: v for k, v in cfg.items() if v is not None}
    with pytest.raises(InvalidArgumentError, match=needle):
        Host(cfg)


@two_cpus
def test_pooled_sessions_may_opt_out_with_fixed_cpus(tmp_path, const_template):
    b = bases(tmp_path, const_template, ["base", "pooled"])
    # per-session pools (their threads pinned at load, to the fixed set for good)
    pooled = {"inter_op_parallelism_threads": 1, "use_per_session_threads": True, "session_num": 2}
    cfg = dyn_config(b, cores={"base": {"role": "baseline"}, "pooled": {"fixed_cpus": C1}},
                     model_configs={"pooled": pooled})
    with Host(cfg) as h:
        m = by_name(h.status()["cores"])
        assert m["pooled"]["source"] == "fixed_cpus" and session_cpus(h, "pooled") == [[C1, C1]]
        with pytest.raises(InvalidArgumentError, match="opted out"):
            h._force_core_plan({"pooled": C0})
        assert not h.replan_cores()["changed"]


@two_cpus
def test_bad_replan_calls(tmp_path, const_template):
    b = bases(tmp_path, const_template, ["base", "exp"])
    with Host(dyn_config(b)) as h:
        with pytest.raises(InvalidArgumentError, match="no model \"nope\""):
            h._force_core_plan({"nope": C0})
        with pytest.raises(InvalidArgumentError, match="not among the CPUs divided"):
            h._force_core_plan({"exp": "4000"})
        assert h.status()["cores"]["replans"] == 0
    cfg = dyn_config(b)
    cfg["core_allocation"] = "static"
    del cfg["core_replan_interval_ms"]
    with Host(cfg) as h:
        with pytest.raises(FailedPreconditionError, match="core_allocation \"dynamic\""):
            h.replan_cores()
        assert "rs_host_core_replans_total" not in h.metrics_text()
