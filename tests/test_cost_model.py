"""The core allocator (rs_core_plan_json): plans are valid, floors hold, the
seed's rule (dedicated baselines, shared experiments) and dynamic hysteresis."""

import pytest

from recstrata.cost_model import cpu_list, plan_cores
from recstrata.errors import FailedPreconditionError, InvalidArgumentError


def by_name(plan):
    return {m["name"]: m for m in plan["models"]}


def assert_valid(plan, cpus):
    """Dedicated sets are disjoint, inside the machine, and apart from the shared pool."""
    machine = set(cpu_list(cpus))
    shared = set(cpu_list(plan["shared_cpus"]))
    seen = set()
    for m in plan["models"]:
        got = set(cpu_list(m["cpus"]))
        assert got, m
        assert got <= machine, m
        assert len(got) == m["cores"]
        if m["role"] == "baseline" and m["dedicated"]:
            assert not (got & seen), "dedicated sets overlap"
            assert not (got & shared), "a dedicated set overlaps the shared pool"
            seen |= got
    assert shared <= machine


def test_static_rule_sizes_baselines_and_shares_the_rest():
    req = {
        "mode": "static",
        "cpus": "0-31",
        "models": [
            # 2000 rps x 2 ms = 4 busy cores / 0.8 -> 5 dedicated cores.
            {"name": "ctr", "role": "baseline", "requests_per_second": 2000, "cpu_ms_per_request": 2},
            {"name": "cvr", "role": "baseline", "requests_per_second": 100, "cpu_ms_per_request": 1, "min_cores": 3},
            {"name": "ab1", "role": "experiment", "requests_per_second": 500, "cpu_ms_per_request": 2},
            {"name": "ab2", "role": "experiment"},
        ],
        "target_utilization": 0.8,
    }
    plan = plan_cores(req)
    assert_valid(plan, "0-31")
    m = by_name(plan)
    assert m["ctr"]["cores"] == 5 and m["ctr"]["dedicated"]
    assert m["ctr"]["demand_cores"] == pytest.approx(5.0)
    assert m["cvr"]["cores"] == 3  # its floor, above its load
    assert m["ab1"]["cpus"] == m["ab2"]["cpus"] == plan["shared_cpus"]
    assert len(cpu_list(plan["shared_cpus"])) == 32 - 8
    assert not m["ab1"]["dedicated"]
    assert plan["changed"]


def test_shared_mode_puts_everyone_everywhere():
    plan = plan_cores({"mode": "shared", "cpus": "0-3", "models": [
        {"name": "a", "role": "baseline", "requests_per_second": 1e6, "cpu_ms_per_request": 5},
        {"name": "b", "role": "experiment"}]})
    assert {m["cpus"] for m in plan["models"]} == {"0-3"}


def test_oversubscribed_baselines_keep_floors_and_leave_the_experiments_their_share():
    plan = plan_cores({"cpus": "0-9", "min_shared_cores": 2, "models": [
        {"name": "big", "role": "baseline", "requests_per_second": 10000, "cpu_ms_per_request": 10},
        {"name": "small", "role": "baseline", "requests_per_second": 10000, "cpu_ms_per_request": 1, "min_cores": 2},
        {"name": "exp", "role": "experiment", "min_cores": 1}]})
    assert_valid(plan, "0-9")
    m = by_name(plan)
    assert m["small"]["cores"] >= 2
    assert m["big"]["cores"] + m["small"]["cores"] == 8
    assert m["big"]["cores"] > m["small"]["cores"]
    assert len(cpu_list(plan["shared_cpus"])) == 2


def test_without_experiments_idle_cores_go_to_the_baselines():
    plan = plan_cores({"cpus": "0-7", "models": [
        {"name": "a", "role": "baseline", "requests_per_second": 300, "cpu_ms_per_request": 1},
        {"name": "b", "role": "baseline", "requests_per_second": 900, "cpu_ms_per_request": 1}]})
    m = by_name(plan)
    assert m["a"]["cores"] + m["b"]["cores"] == 8
    assert m["b"]["cores"] > m["a"]["cores"]
    assert plan["shared_cpus"] == ""


def test_fixed_cpuset_opts_out_and_is_taken_from_the_pool():
    plan = plan_cores({"cpus": "0-7", "models": [
        {"name": "pinned", "role": "baseline", "fixed_cpus": "6-7"},
        {"name": "a", "role": "baseline", "requests_per_second": 1000, "cpu_ms_per_request": 1},
        {"name": "exp"}]})
    m = by_name(plan)
    assert m["pinned"]["cpus"] == "6-7"
    assert "fixed" in m["pinned"]["reason"]
    assert not (set(cpu_list(m["a"]["cpus"])) | set(cpu_list(plan["shared_cpus"]))) & {6, 7}


def test_floors_that_do_not_fit_are_refused():
    with pytest.raises(FailedPreconditionError, match="floors"):
        plan_cores({"cpus": "0-3", "models": [
            {"name": "a", "role": "baseline", "min_cores": 3},
            {"name": "b", "role": "baseline", "min_cores": 1},
            {"name": "exp"}]})


@pytest.mark.parametrize("req, match", [
    ({"mode": "greedy", "cpus": "0-3", "models": []}, "mode"),
    ({"cpus": "0-3", "models": [{"name": "a", "role": "boss"}]}, "role"),
    ({"cpus": "0-3", "models": [{"name": "a"}, {"name": "a"}]}, "twice"),
    ({"cpus": "0-3", "models": [{"name": "a", "requests_per_second": -1}]}, ">= 0"),
    ({"cpus": "3-1", "models": []}, "cpu range"),
    ({"cpus": "0-3", "models": [{"name": "a", "fixed_cpus": "9"}]}, "not among"),
    ({"cpus": "0-3", "models": [{"name": "a", "min_cores": 0}]}, "min_cores"),
    ({"cpus": "0-3", "modles": []}, "modles"),
])
def test_bad_requests_get_clear_errors(req, match):
    with pytest.raises(InvalidArgumentError, match=match):
        plan_cores(req)


def dyn(rps, previous=None, p99=0.0):
    req = {"mode": "dynamic", "cpus": "0-63", "hysteresis": 0.25, "models": [
        {"name": "base", "role": "baseline", "requests_per_second": rps, "cpu_ms_per_request": 1,
         "p99_ms": p99, "latency_target_ms": 10, "min_cores": 2},
        {"name": "exp1"}, {"name": "exp2"}]}
    if previous is not None:
        req["previous"] = previous
    return plan_cores(req)


def test_dynamic_keeps_the_plan_within_hysteresis_and_replans_beyond_it():
    p0 = dyn(14000)  # 14 busy cores / 0.7 -> 20
    assert by_name(p0)["base"]["cores"] == 20
    same = dyn(15000, p0)  # asks 22: within 25% of 20
    assert not same["changed"]
    assert by_name(same)["base"]["cpus"] == by_name(p0)["base"]["cpus"]
    grown = dyn(21000, p0)  # asks 30
    assert grown["changed"] and by_name(grown)["base"]["cores"] == 30
    shrunk = dyn(100, grown)  # load gone: back to the floor, never below
    assert by_name(shrunk)["base"]["cores"] == 2
    assert_valid(shrunk, "0-63")


def test_dynamic_adds_cores_to_a_baseline_over_its_latency_target():
    p0 = dyn(1400)  # 2 cores
    late = dyn(1400, p0, p99=50.0)
    assert late["changed"]
    assert by_name(late)["base"]["cores"] > by_name(p0)["base"]["cores"]


def test_dynamic_replans_when_the_model_set_changes():
    p0 = dyn(1400)
    req = {"mode": "dynamic", "cpus": "0-63", "previous": p0, "models": [
        {"name": "base", "role": "baseline", "requests_per_second": 1400, "cpu_ms_per_request": 1, "min_cores": 2},
        {"name": "exp1"}]}
    assert plan_cores(req)["changed"]
