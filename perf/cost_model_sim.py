"""A discrete-event simulator of one host's models over a machine's cores.

Used by bench_cost_model.py to plan past the 2 cores of this machine. The model
of the machine is the one the real runs have: every request runs inline on one
core (intra-op 1), and the requests running on a core set share it the way the
kernel's fair scheduler does, i.e. processor sharing: n jobs on c cores each
progress at min(1, c / n) of a core. A request's work is its model's service
time, measured on this machine (bench_cost_model.measure_service_ms), times an
interference factor when it shares cores with other models (cache and
context-switch cost, measured in the real shared run).

Allocation policies come from the library's own allocator (recstrata.cost_model
.plan_cores): "shared" puts every model on every core, "static" sizes the
baselines from declared traffic, "dynamic" re-plans every `replan_s` from the
traffic measured in the last window. A new plan moves running jobs to their
model's new core set; nothing is dropped.

Processor sharing is simulated with a virtual clock per core set: while n jobs
share c cores, the set's virtual time advances at min(1, c / n) per second and a
job finishes when it has received its work, so each event costs O(log n).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from recstrata.cost_model import cpu_list, plan_cores


@dataclass
class SimModel:
    name: str
    role: str  # "baseline" | "experiment"
    service_ms: float  # work of one request on one core, alone
    rate: Callable[[float], float]  # requests/s at time t (seconds)
    declared_rps: float = 0.0  # what static mode is told
    latency_target_ms: float = 0.0
    min_cores: int = 1


@dataclass
class _Pool:
    cores: int
    vtime: float = 0.0  # virtual work clock (core-seconds per job)
    last: float = 0.0  # real time vtime was last advanced to
    heap: list = field(default_factory=list)  # (finish vtime, seq)
    alive: set = field(default_factory=set)

    def advance(self, now: float) -> None:
        n = len(self.alive)
        if n:
            self.vtime += (now - self.last) * min(1.0, self.cores / n)
        self.last = now

    def next_finish(self) -> float:
        while self.heap and self.heap[0][1] not in self.alive:
            heapq.heappop(self.heap)
        if not self.heap:
            return math.inf
        n = len(self.alive)
        return self.last + (self.heap[0][0] - self.vtime) / min(1.0, self.cores / n)


def arrivals(models: Sequence[SimModel], duration_s: float, seed: int) -> list[tuple[float, int]]:
    """Poisson arrivals of each model's time-varying rate (thinning), sorted."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(0.0, duration_s, 2001)
    out: list[tuple[float, int]] = []
    for i, m in enumerate(models):
        peak = max(m.rate(t) for t in grid) * 1.05 + 1e-9
        n = rng.poisson(peak * duration_s)
        ts = np.sort(rng.uniform(0.0, duration_s, n))
        keep = rng.uniform(0.0, peak, n) < np.array([m.rate(t) for t in ts])
        out.extend((float(t), i) for t in ts[keep])
    out.sort()
    return out


def _pools_from_plan(plan: dict, models: Sequence[SimModel]) -> tuple[list[int], dict[str, int]]:
    """Core count per pool and the pool index of each model (same cpus -> same pool)."""
    by_cpus: dict[str, int] = {}
    cores: list[int] = []
    member: dict[str, int] = {}
    for a in plan["models"]:
        if a["cpus"] not in by_cpus:
            by_cpus[a["cpus"]] = len(cores)
            cores.append(len(cpu_list(a["cpus"])))
        member[a["name"]] = by_cpus[a["cpus"]]
    return cores, member


def plan_request(models: Sequence[SimModel], cores: int, mode: str, measured_rps=None, p99_ms=None, previous=None,
                 target_utilization: float = 0.7) -> dict:
    req = {"mode": mode, "cpus": f"0-{cores - 1}", "target_utilization": target_utilization, "models": []}
    for m in models:
        rps = m.declared_rps if measured_rps is None else measured_rps[m.name]
        entry = {"name": m.name, "role": m.role, "requests_per_second": rps, "cpu_ms_per_request": m.service_ms,
                 "min_cores": m.min_cores, "latency_target_ms": m.latency_target_ms}
        if p99_ms is not None:
            entry["p99_ms"] = p99_ms.get(m.name, 0.0)
        req["models"].append(entry)
    if previous is not None:
        req["previous"] = previous
    return req


@dataclass
class SimResult:
    latencies_ms: dict[str, np.ndarray]
    completed: int
    duration_s: float
    replans: int

    def p99(self, name: str) -> float:
        lat = self.latencies_ms[name]
        return float(np.percentile(lat, 99)) if len(lat) else math.inf

    def median(self, name: str) -> float:
        lat = self.latencies_ms[name]
        return float(np.median(lat)) if len(lat) else math.inf

    @property
    def throughput(self) -> float:
        return self.completed / self.duration_s


def simulate(models: Sequence[SimModel], cores: int, policy: str, duration_s: float, seed: int = 1,
             replan_s: float = 5.0, interference: float = 1.0, warm_s: float = 0.0,
             arrival_list: list[tuple[float, int]] | None = None, target_utilization: float = 0.7,
             plan: dict | None = None) -> SimResult:
    """Runs the trace under `policy` ("shared", "static" or "dynamic").

    `interference` multiplies the work of a request whose core set holds more
    than one model. Latencies of requests arriving before `warm_s` are dropped
    from the result (queues start empty). `plan` replaces the initial plan
    (e.g. the one a real run used on a machine with fewer CPUs)."""
    arr = arrival_list if arrival_list is not None else arrivals(models, duration_s, seed)
    mode = "shared" if policy == "shared" else ("dynamic" if policy == "dynamic" else "static")
    if plan is None:
        plan = plan_cores(plan_request(models, cores, mode, target_utilization=target_utilization))
    elif len(plan["models"]) != len(models):
        plan = dict(plan, models=[a for a in plan["models"] if a["name"] in {m.name for m in models}])
    pool_cores, member = _pools_from_plan(plan, models)
    pools = [_Pool(c) for c in pool_cores]
    sharing = _sharing(member)
    job_pool: dict[int, int] = {}
    job_left_at_vt: dict[int, float] = {}  # finish vtime in its pool
    job_info: dict[int, tuple[int, float, float]] = {}  # model, arrival, work
    lat: list[list[float]] = [[] for _ in models]
    window_counts = np.zeros(len(models))
    window_lat: list[list[float]] = [[] for _ in models]
    completed = 0
    replans = 0
    next_replan = replan_s if policy == "dynamic" else math.inf
    seq = 0
    ai = 0
    now = 0.0
    while True:
        t_arr = arr[ai][0] if ai < len(arr) else math.inf
        fin = [(p.next_finish(), k) for k, p in enumerate(pools)]
        t_fin, k_fin = min(fin) if fin else (math.inf, -1)
        t = min(t_arr, t_fin, next_replan)
        if t == math.inf or t > duration_s + 60.0:
            break
        now = t
        if t == t_fin:
            p = pools[k_fin]
            p.advance(now)
            _, j = heapq.heappop(p.heap)
            p.alive.discard(j)
            mi, t0, _ = job_info.pop(j)
            job_pool.pop(j)
            job_left_at_vt.pop(j)
            if t0 >= warm_s and t0 <= duration_s:
                lat[mi].append((now - t0) * 1e3)
                window_lat[mi].append((now - t0) * 1e3)
            completed += t0 <= duration_s
        elif t == t_arr:
            _, mi = arr[ai]
            ai += 1
            k = member[models[mi].name]
            p = pools[k]
            p.advance(now)
            work = models[mi].service_ms / 1e3 * (interference if sharing[k] else 1.0)
            job_info[seq] = (mi, now, work)
            job_pool[seq] = k
            job_left_at_vt[seq] = p.vtime + work
            p.alive.add(seq)
            heapq.heappush(p.heap, (p.vtime + work, seq))
            window_counts[mi] += 1
            seq += 1
        else:  # re-plan from what the last window measured
            measured = {m.name: window_counts[i] / replan_s for i, m in enumerate(models)}
            p99 = {m.name: (float(np.percentile(window_lat[i], 99)) if window_lat[i] else 0.0)
                   for i, m in enumerate(models)}
            new = plan_cores(plan_request(models, cores, "dynamic", measured, p99, previous=plan,
                                          target_utilization=target_utilization))
            window_counts[:] = 0
            window_lat = [[] for _ in models]
            next_replan = now + replan_s
            if new["changed"]:
                replans += 1
                plan = new
                pools, member, sharing = _move_jobs(pools, plan, models, job_pool, job_left_at_vt, job_info, now,
                                                    interference)
    names = [m.name for m in models]
    return SimResult({n: np.array(lat[i]) for i, n in enumerate(names)}, completed, duration_s, replans)


def _sharing(member: dict[str, int]) -> dict[int, bool]:
    counts: dict[int, int] = {}
    for k in member.values():
        counts[k] = counts.get(k, 0) + 1
    return {k: c > 1 for k, c in counts.items()}


def _move_jobs(pools, plan, models, job_pool, job_left_at_vt, job_info, now, interference):
    """Applies a new plan: every running job keeps the work it has left and
    continues in its model's new core set."""
    remaining = {}
    for j, k in job_pool.items():
        p = pools[k]
        p.advance(now)
        remaining[j] = max(0.0, job_left_at_vt[j] - p.vtime)
    pool_cores, member = _pools_from_plan(plan, models)
    sharing = _sharing(member)
    new_pools = [_Pool(c, last=now) for c in pool_cores]
    for j, left in remaining.items():
        mi = job_info[j][0]
        k = member[models[mi].name]
        p = new_pools[k]
        job_pool[j] = k
        job_left_at_vt[j] = p.vtime + left
        p.alive.add(j)
        heapq.heappush(p.heap, (p.vtime + left, j))
    return new_pools, member, sharing


def max_scale_at_target(run: Callable[[float], SimResult], models: Sequence[SimModel], lo: float = 0.05,
                        hi: float = 4.0, iters: int = 9, exp_target_factor: float = 10.0) -> tuple[float, SimResult]:
    """Largest traffic multiplier whose run meets every baseline's latency
    target and keeps experiments' p99 under exp_target_factor x their target."""

    def ok(res: SimResult) -> bool:
        for m in models:
            limit = m.latency_target_ms * (1.0 if m.role == "baseline" else exp_target_factor)
            if limit > 0 and res.p99(m.name) > limit:
                return False
        return True

    best = None
    for _ in range(iters):
        mid = math.sqrt(lo * hi)
        res = run(mid)
        if ok(res):
            lo, best = mid, res
        else:
            hi = mid
    if best is None:
        best = run(lo)
    return lo, best
