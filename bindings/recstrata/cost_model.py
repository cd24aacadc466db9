"""The core allocator (``rs_core_plan_json``) from Python.

``plan_cores`` asks the native allocator — the one the host uses — how to
divide CPUs between models: baselines get dedicated cores sized to their load,
experiments share the rest (docs/cost-model.md). Planning tools and the
simulator in ``perf/cost_model_sim.py`` call it so that simulated plans are the
library's plans, not a re-implementation.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from recstrata._native import check, ffi, lib, take_string


def plan_cores(request: Mapping[str, Any]) -> dict[str, Any]:
    """Returns the CorePlan for a CorePlanRequest (both as dicts).

    Raises InvalidArgumentError for a malformed request and
    FailedPreconditionError when the models' floors do not fit the CPUs.
    """
    out = ffi.new("char**")
    err = ffi.new("rs_error**")
    check(lib().rs_core_plan_json(json.dumps(request).encode(), out, err), err)
    return json.loads(take_string(out[0]))


def cpu_list(text: str) -> list[int]:
    """Expands a CPU list such as ``"0-3,8"`` (the form plans use)."""
    cpus: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus
