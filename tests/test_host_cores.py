"""The host's core allocator (core_allocation "static", docs/host.md "Cores"):
the plan the host computes at open, that every loaded version's sessions are
really pinned to it (the caller thread's affinity during a run, and the core
sets the loaded SessionGroup reports), opt-outs, bad specs and floors that do
not fit. Plans for machines bigger than this one are checked on the pure
allocator (recstrata.cost_model.plan_cores) with requests shaped like the
host's.
"""

from __future__ import annotations

import os
import re
import threading
import time

import numpy as np
import pytest

from recstrata.cost_model import cpu_list, plan_cores
from recstrata.errors import FailedPreconditionError, InvalidArgumentError
from recstrata.host import Host

from serving_helpers import X, build_busy_model, build_const_model, put_version

CPUS = sorted(os.sched_getaffinity(0))
two_cpus = pytest.mark.skipif(len(CPUS) < 2, reason="needs 2 cpus")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return build_const_model(tmp_path_factory.mktemp("cores") / "const", 1.0)


def bases(tmp_path, template, names):
    out = {}
    for n in names:
        out[n] = tmp_path / n
        out[n].mkdir()
        put_version(out[n], 1, template)
    return out


def host_config(base_paths, cores=None, model_configs=None, **extra):
    cores, model_configs = cores or {}, model_configs or {}
    models = []
    for n, p in base_paths.items():
        m = {"name": n, "base_path": str(p)}
        if n in cores:
            m["cores"] = cores[n]
        if n in model_configs:
            m["model_config"] = model_configs[n]
        models.append(m)
    return {"models": models, "model_config": {"warmup_runs": 1}, **extra}


def check_plan(plan, pool, floors, fixed=None):
    """The allocator's invariants: baselines on disjoint dedicated sets, every
    experiment on the shared set (disjoint from them), floors hold, fixed
    models on exactly their CPUs, everything inside the pool."""
    fixed = fixed or {}
    pool = set(pool)
    by = {m["name"]: m for m in plan["models"]}
    shared = set(cpu_list(plan["shared_cpus"])) if plan["shared_cpus"] else set()
    dedicated = []
    for name, m in by.items():
        cpus = set(cpu_list(m["cpus"]))
        assert cpus and cpus <= pool, (name, m)
        assert m["cores"] == len(cpus)
        if name in fixed:
            assert cpus == set(fixed[name]), (name, m)
            continue
        assert m["cores"] >= floors.get(name, 1), (name, m)
        if m["role"] == "baseline":
            assert m["dedicated"], m
            dedicated.append(cpus)
        else:
            assert cpus == shared, (name, m, plan["shared_cpus"])
    for i, a in enumerate(dedicated):
        assert not a & shared
        for b in dedicated[i + 1:]:
            assert not a & b
        for f in fixed.values():
            assert not a & set(f)
    return by


# ---- the plan the host applies ------------------------------------------------------


def test_off_by_default_changes_nothing(tmp_path, template):
    b = bases(tmp_path, template, ["a"])
    with Host(host_config(b, cores={"a": {"role": "baseline", "requests_per_second": 100}})) as h:
        st = h.status()
        assert st["cores"]["mode"] == "off" and st["cores"]["models"] == []
        assert st["models"][0]["versions"][0]["session_cpus"] == [""]  # no cpuset: runs where it finds
        text = h.metrics_text()
        assert 'rs_host_core_allocation_info{mode="off"' in text
        assert "rs_host_model_cores{" not in text


@two_cpus
def test_static_plan_pins_every_version_and_is_reported(tmp_path, template):
    b = bases(tmp_path, template, ["base", "exp1", "exp2"])
    cfg = host_config(
        b,
        cores={"base": {"role": "baseline", "requests_per_second": 200, "cpu_ms_per_request": 2, "min_cores": 1},
               "exp1": {"role": "experiment"}},
        model_configs={"exp1": {"session_num": 2}, "exp2": {"split_parts": 4}},
        core_allocation="static", core_cpus=f"{CPUS[0]},{CPUS[1]}")
    with Host(cfg) as h:
        core = h.status()["cores"]
        assert core["mode"] == "static" and set(cpu_list(core["cpus"])) == set(CPUS[:2])
        by = check_plan(core, CPUS[:2], {"base": 1})
        # 200 rps * 2 ms = 0.4 cores / 0.7 utilization -> 1 dedicated core; the experiments share the other
        assert by["base"]["cpus"] == str(CPUS[0]) and by["base"]["dedicated"]
        assert by["base"]["demand_cores"] == pytest.approx(0.4 / 0.7, abs=1e-3)
        assert core["shared_cpus"] == str(CPUS[1])
        assert by["exp1"]["cpus"] == by["exp2"]["cpus"] == str(CPUS[1])
        assert not by["exp1"]["dedicated"]  # two experiments share it
        assert {m["source"] for m in core["models"]} == {"allocator"}
        # one set per session; split_parts limited to the model's one core
        assert by["exp1"]["cpusets"] == f"{CPUS[1]};{CPUS[1]}"
        assert by["exp2"]["split_parts"] == 1 and by["base"]["split_parts"] == 1
        # what the loaded SessionGroups report
        want = {"base": [str(CPUS[0])], "exp1": [str(CPUS[1])] * 2, "exp2": [str(CPUS[1])]}
        for name, sets in want.items():
            assert h.status(name)["versions"][0]["session_cpus"] == sets
            assert float(h.run(name, X)["y"][0]) == 1.0
        # a version loaded later gets the same assignment
        put_version(b["base"], 2, template)
        h.reload("base")
        v2 = [v for v in h.status("base")["versions"] if v["version"] == 2][0]
        assert v2["state"] == "ready" and v2["session_cpus"] == [str(CPUS[0])]
        text = h.metrics_text()
        assert f'rs_host_model_cores{{model="base",role="baseline"}} 1' in text
        assert f'rs_host_model_cores{{model="exp1",role="experiment"}} 1' in text
        assert 'rs_host_model_cores_dedicated{model="base"} 1' in text
        assert 'rs_host_model_cores_dedicated{model="exp2"} 0' in text
        assert f'rs_host_model_cpus_info{{model="exp2",cpus="{CPUS[1]}"}} 1' in text
        demand = re.search(r'rs_host_model_demand_cores\{model="base"\} ([0-9.e+-]+)', text)
        assert demand and float(demand.group(1)) == pytest.approx(0.4 / 0.7, rel=1e-6)
        from prometheus_client.parser import text_string_to_metric_families

        fams = {f.name: f for f in text_string_to_metric_families(text)}
        cores = {s.labels["model"]: s.value for s in fams["rs_host_model_cores"].samples}
        assert cores == {"base": 1, "exp1": 1, "exp2": 1}
        info = fams["rs_host_core_allocation_info"].samples[0].labels
        assert info["mode"] == "static" and info["shared_cpus"] == str(CPUS[1])


@two_cpus
def test_sessions_really_run_on_their_cores(tmp_path):
    heavy = build_busy_model(tmp_path / "heavy", steps=60)
    b = bases(tmp_path, heavy, ["base", "exp"])
    cfg = host_config(b, cores={"base": {"role": "baseline"}}, core_allocation="static",
                      core_cpus=f"{CPUS[0]},{CPUS[1]}")
    with Host(cfg) as h:
        by = {m["name"]: m for m in h.status()["cores"]["models"]}
        for name in ("base", "exp"):
            want = frozenset(cpu_list(by[name]["cpus"]))
            seen, tid, done = [], [], threading.Event()

            def caller():
                tid.append(threading.get_native_id())
                for _ in range(3):
                    h.run(name, X)
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
            narrowed = {s for s in seen if s != frozenset(CPUS)}
            assert narrowed == {want}, (name, seen[:20])  # during its runs: its cores, and nothing else
        assert os.sched_getaffinity(0) == set(CPUS)


@two_cpus
def test_fixed_cpus_and_model_config_cpusets_opt_out(tmp_path, template):
    b = bases(tmp_path, template, ["pinned", "own", "exp"])
    cfg = host_config(
        b, cores={"pinned": {"role": "baseline", "fixed_cpus": str(CPUS[1]), "requests_per_second": 1e4,
                             "cpu_ms_per_request": 5}},
        model_configs={"own": {"session_num": 2, "cpusets": f"{CPUS[1]};{CPUS[1]}"}},
        core_allocation="static", core_cpus=f"{CPUS[0]},{CPUS[1]}")
    with Host(cfg) as h:
        core = h.status()["cores"]
        by = check_plan(core, CPUS[:2], {}, fixed={"pinned": [CPUS[1]], "own": [CPUS[1]]})
        assert by["pinned"]["source"] == "fixed_cpus" and not by["pinned"]["dedicated"]
        assert by["pinned"]["cores"] == 1  # its declared load does not move a fixed model
        assert by["own"]["source"] == "model_config" and "model_config sets cpusets" in by["own"]["reason"]
        assert by["exp"]["cpus"] == str(CPUS[0]) == core["shared_cpus"]
        assert h.status("pinned")["versions"][0]["session_cpus"] == [str(CPUS[1])]
        assert h.status("own")["versions"][0]["session_cpus"] == [str(CPUS[1])] * 2  # the user's, untouched
        assert h.status("exp")["versions"][0]["session_cpus"] == [str(CPUS[0])]


# ---- errors -------------------------------------------------------------------------


@pytest.mark.parametrize("cores,extra,model_config,needle", [
    ({"role": "gold"}, {}, None, "role"),
    ({"min_cores": 0}, {}, None, "min_cores"),
    ({"requests_per_second": -1}, {}, None, "requests_per_second"),
    ({"cpu_ms_per_request": "NaN"}, {}, None, "cpu_ms_per_request"),
    ({"favourite_core": 3}, {}, None, "favourite_core"),
    ({}, {"core_allocation": "sometimes"}, None, "core_allocation"),
    ({}, {"core_replan_interval_ms": 1000}, None, "only used with core_allocation"),
    ({}, {"core_cpus": "0-x"}, None, "core_cpus"),
    ({}, {"core_cpus": "4000"}, None, "may not run on"),
    ({}, {"core_target_utilization": 1.5}, None, "core_target_utilization"),
    ({}, {"min_shared_cores": -1}, None, "min_shared_cores"),
    ({"fixed_cpus": "4000"}, {}, None, "not among the CPUs"),
    ({"fixed_cpus": "0"}, {}, {"cpusets": "0"}, "both"),
    ({}, {}, {"cpusets": 3}, "must be a string"),
    ({}, {}, {"cpusets": "0;;x"}, "cpusets"),
])
def test_bad_specs_are_invalid_argument(tmp_path, template, cores, extra, model_config, needle):
    b = bases(tmp_path, template, ["a"])
    cfg = host_config(b, cores={"a": cores}, model_configs={"a": model_config} if model_config else {},
                      **{"core_allocation": "static", **extra})
    with pytest.raises(InvalidArgumentError, match=needle):
        Host(cfg)


def test_a_bad_model_config_fails_its_version_not_the_plan(tmp_path, template):
    b = bases(tmp_path, template, ["a"])
    cfg = host_config(b, model_configs={"a": {"split_parts": 0}}, core_allocation="static")
    with Host(cfg) as h:  # the allocator does not hide the user's error: the load reports it
        v = h.status("a")["versions"][0]
        assert v["state"] == "failed" and "split_parts" in v["error"]


@two_cpus
def test_floors_that_do_not_fit_fail_the_open_clearly(tmp_path, template):
    b = bases(tmp_path, template, ["b1", "b2", "exp"])
    cfg = host_config(b, cores={"b1": {"role": "baseline"}, "b2": {"role": "baseline"}},
                      core_allocation="static", core_cpus=f"{CPUS[0]},{CPUS[1]}")
    with pytest.raises(FailedPreconditionError) as e:
        Host(cfg)
    msg = str(e.value)
    assert "host core allocation" in msg and "floors (2 cores)" in msg and "share (1)" in msg and "2 CPUs" in msg
    # a single baseline whose floor exceeds the machine
    b1 = {"b1": b["b1"]}
    with pytest.raises(FailedPreconditionError, match=r"floors \(3 cores\)"):
        Host(host_config(b1, cores={"b1": {"role": "baseline", "min_cores": 3}}, core_allocation="static",
                         core_cpus=f"{CPUS[0]},{CPUS[1]}"))
    # without experiments both baselines fit, one core each
    two = {"b1": b["b1"], "b2": b["b2"]}
    with Host(host_config(two, cores={"b1": {"role": "baseline"}, "b2": {"role": "baseline"}},
                          core_allocation="static", core_cpus=f"{CPUS[0]},{CPUS[1]}")) as h:
        check_plan(h.status()["cores"], CPUS[:2], {"b1": 1, "b2": 1})


# ---- plans for a bigger machine (pure allocator, host-shaped requests) --------------------


def test_plans_for_a_big_machine_are_valid():
    models = [
        {"name": "ctr", "role": "baseline", "requests_per_second": 2000, "cpu_ms_per_request": 4, "min_cores": 2},
        {"name": "cvr", "role": "baseline", "requests_per_second": 500, "cpu_ms_per_request": 3},
        {"name": "rank", "role": "baseline", "requests_per_second": 0, "min_cores": 3},
        {"name": "legacy", "role": "baseline", "fixed_cpus": "120-127"},
    ] + [{"name": f"ab{i}", "role": "experiment", "requests_per_second": 50, "cpu_ms_per_request": 4}
         for i in range(20)]
    plan = plan_cores({"mode": "static", "cpus": "0-127", "models": models})
    by = check_plan(plan, range(128), {"ctr": 2, "rank": 3}, fixed={"legacy": range(120, 128)})
    assert by["ctr"]["cores"] == 12  # ceil(2000 * 4 / 1000 / 0.7)
    assert by["cvr"]["cores"] == 3 and by["rank"]["cores"] == 3
    assert len(cpu_list(plan["shared_cpus"])) == 120 - 18
    # oversubscribed: floors first, the rest in proportion, the experiments keep their share
    plan = plan_cores({"mode": "static", "cpus": "0-7", "models": models[:2] + models[4:6]})
    by = check_plan(plan, range(8), {"ctr": 2})
    assert by["ctr"]["cores"] + by["cvr"]["cores"] == 7 and len(cpu_list(plan["shared_cpus"])) == 1


BUNDLE_CONFIG = {
    "name": "coresb", "label": "label",
    "sparse": [{"name": "uid", "dim": 4, "embedding": {"kind": "plain", "rows": 1000}}],
    "dense": [{"name": "d0"}],
    "model": {"type": "wdl", "hidden": [8]},
    "data": {"format": "synthetic", "synthetic": {"num_train": 10, "num_eval": 10}},
}


@two_cpus
def test_bundle_batch_split_is_limited_to_the_models_cores(tmp_path, template):
    pytest.importorskip("tensorflow")
    from recstrata.training.export import export_bundle
    from recstrata.training.models import RecModel
    from recstrata.training.spec import parse_config

    model = RecModel(parse_config(BUNDLE_CONFIG), name="rec_model")
    model.build_with_dummy()
    bundle = export_bundle(model, tmp_path / "export", tiers="dram")
    b = bases(tmp_path, template, ["exp"])
    b["rec"] = tmp_path / "rec"
    b["rec"].mkdir()
    put_version(b["rec"], 1, bundle["path"])
    feeds = {"uid": np.arange(256, dtype=np.int64), "dense": np.ones((256, 1), np.float32)}
    with Host(host_config(b)) as h:  # off: a split call uses every allowed CPU
        assert h.status("rec")["versions"][0]["split_parts"] == min(len(CPUS), 8)
        unsplit_host = h.run("rec", feeds)
    cfg = host_config(b, cores={"rec": {"role": "baseline"}}, core_allocation="static",
                      core_cpus=f"{CPUS[0]},{CPUS[1]}")
    with Host(cfg) as h:
        v = h.status("rec")["versions"][0]
        assert v["split_parts"] == 1 and v["session_cpus"] == [str(CPUS[0])]
        out = h.run("rec", feeds)
        assert out.keys() == unsplit_host.keys()
        for k in out:
            np.testing.assert_allclose(out[k], unsplit_host[k], rtol=1e-6)
        assert h.status("exp")["versions"][0]["split_parts"] == 0  # a SavedModel has no batch split
