"""Run several policies on one workload: same arrivals, same environment, same start; and, with
a spot market, each policy under every capacity strategy (sim.spot)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tritonscale.api.spec import CapacitySpec
from tritonscale.sim.engine import SimEnvironment, SimPolicy, SimResult, Simulation
from tritonscale.sim.policies import (
    ORACLE_WINDOW_S,
    POLICIES,
    HpaPolicy,
    KedaPolicy,
    KpaPolicy,
    LatencyPolicy,
    Objective,
    RayPolicy,
    ReactiveReference,
    SchedulePolicy,
    capacity_table,
    replicas_per_window,
)
from tritonscale.sim.spot import STRATEGIES, CapacityPlan, SpotMarket
from tritonscale.sim.workloads import Workload, arrivals


@dataclass(frozen=True)
class Scenario:
    workload: Workload
    seed: int
    env: SimEnvironment
    objective: Objective
    period_s: float = 10.0  # the latency policy's controller period
    latency_source: str = "triton"  # where the latency policy reads metrics: triton or prometheus


def make_policy(name: str, scenario: Scenario, needed: list[int], table: list[float]) -> SimPolicy:
    env, objective = scenario.env, scenario.objective
    if name == "latency":
        return LatencyPolicy(env, objective, scenario.period_s, scenario.latency_source)
    if name == "hpa":
        return HpaPolicy(env, objective)
    if name == "keda":
        return KedaPolicy(env, objective)
    if name == "kpa":
        # Tuned as a careful Knative user would: the concurrency one replica carries within the
        # objective (Little's law, mean latency taken as half the target).
        one_replica_rps = table[1] if len(table) > 1 else 1.0
        return KpaPolicy(env, target_concurrency=max(1.0, one_replica_rps * objective.target_ms / 2000.0))
    if name == "ray":
        return RayPolicy(env)
    if name == "static-peak":
        return SchedulePolicy("static-peak", [max(needed)], env)
    if name == "oracle":
        return SchedulePolicy("oracle", needed, env)
    raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}")


@dataclass(frozen=True)
class Prepared:
    simulation: Simulation
    needed: list[int]
    table: list[float]
    initial: int


def prepare(scenario: Scenario, rate_factor: float = 1.0) -> Prepared:
    """Arrivals, the capacity table (up to `rate_factor` x the peak rate) and the oracle's needs."""
    workload = scenario.workload
    times = arrivals(workload, scenario.seed)
    edges = np.arange(0.0, workload.duration_s + ORACLE_WINDOW_S, ORACLE_WINDOW_S)
    peak_rate = float(np.histogram(times, bins=edges)[0].max(initial=0)) / ORACLE_WINDOW_S
    cv = max(step.cv for step in workload.steps)
    table = capacity_table(
        scenario.env, scenario.objective, peak_rate * rate_factor, seed=scenario.seed, cv=cv
    )
    needed = replicas_per_window(times, workload.duration_s, table)
    lead = math.ceil((scenario.env.cold_start_s + ORACLE_WINDOW_S) / ORACLE_WINDOW_S) + 1
    initial = max(needed[:lead])
    simulation = Simulation(times, scenario.env, scenario.objective.target_ms, scenario.objective.percentile)
    return Prepared(simulation, needed, table, initial)


def run_scenario(
    scenario: Scenario,
    policy_names: Sequence[str],
    on_start: Callable[[str], None] | None = None,
    reference_headrooms: Sequence[float] = (),
) -> list[SimResult]:
    """Every named policy on the scenario's arrivals, then the reactive reference at each
    headroom; all start with the replicas the first minute needs, ready."""
    for name in policy_names:
        if name not in POLICIES:
            raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}")
    prepared = prepare(scenario, max((1.0, *reference_headrooms)))
    duration = scenario.workload.duration_s
    results = []
    for name in policy_names:
        if on_start is not None:
            on_start(name)
        policy = make_policy(name, scenario, prepared.needed, prepared.table)
        results.append(prepared.simulation.run(policy, prepared.initial, duration))
    for headroom in reference_headrooms:
        reference = ReactiveReference(scenario.workload, prepared.table, scenario.env, headroom)
        if on_start is not None:
            on_start(reference.name)
        results.append(prepared.simulation.run(reference, prepared.initial, duration))
    return results


def run_capacity(
    prepared: Prepared,
    scenario: Scenario,
    policy_name: str,
    strategy: str,
    capacity: CapacitySpec,
    market: SpotMarket,
) -> SimResult:
    """One policy with its replicas placed by `strategy` on a spot market."""
    policy = make_policy(policy_name, scenario, prepared.needed, prepared.table)
    plan = CapacityPlan(strategy, capacity, market)
    return prepared.simulation.run(policy, prepared.initial, scenario.workload.duration_s, capacity=plan)


def run_spot_scenario(
    scenario: Scenario,
    policy_names: Sequence[str],
    capacity: CapacitySpec,
    market: SpotMarket,
    strategies: Sequence[str] = STRATEGIES,
    on_start: Callable[[str], None] | None = None,
) -> list[SimResult]:
    """Every named policy under every capacity strategy, on the same arrivals and the same market."""
    for name in policy_names:
        if name not in POLICIES:
            raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}")
    prepared = prepare(scenario)
    results = []
    for name in policy_names:
        for strategy in strategies:
            if on_start is not None:
                on_start(f"{name} {strategy}")
            results.append(run_capacity(prepared, scenario, name, strategy, capacity, market))
    return results
