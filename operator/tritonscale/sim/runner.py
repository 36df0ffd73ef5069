"""Run several policies on one workload: same arrivals, same environment, same start; and, with
a spot market, each policy under every capacity strategy (sim.spot)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tritonscale.api.spec import CapacitySpec
from tritonscale.policy.placement import fewest_on_spot
from tritonscale.policy.variants import AccuracyBudget
from tritonscale.sim.engine import SimEnvironment, SimPolicy, SimResult, Simulation
from tritonscale.sim.policies import (
    FRESH_FEED,
    ORACLE_WINDOW_S,
    POLICIES,
    TUNABLE,
    HpaAverageValuePolicy,
    HpaPercentilePolicy,
    KedaPolicy,
    KpaPolicy,
    LatencyPolicy,
    LoadTest,
    Objective,
    RayPolicy,
    ReactiveReference,
    SchedulePolicy,
    capacity_table,
    load_test,
    parse_policy_name,
    prometheus_feed,
    replicas_per_window,
    steady_spend_of,
    steady_variant_of,
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
    # Where every policy's metrics come from: "prometheus" (equal information, as most clusters
    # run) or "fresh" (read directly each second; the operator's Triton source).
    feed: str = "prometheus"


def make_policy(
    name: str,
    scenario: Scenario,
    needed: list[int],
    table: list[float],
    tested: LoadTest,
    spot: CapacitySpec | None = None,
) -> SimPolicy:
    """A policy by name; tunable baselines take their utilisation after '@' (hpa-rps@0.6), else
    0.7, and derive their targets from the load test. With `spot`, the capacity spec its
    replicas are placed by (spot enabled), the latency policy keeps its spare as the operator's
    does (policy.autoscaling.with_spare)."""
    env, objective = scenario.env, scenario.objective
    base, utilization = parse_policy_name(name)
    feed = FRESH_FEED if scenario.feed == "fresh" else prometheus_feed(env)
    label = f"{base}@{utilization:g}" if base in TUNABLE else base
    if base in ("latency", "latency-metrics-only", "latency-no-forecast", "latency-variants"):
        source = "triton" if scenario.feed == "fresh" else "prometheus"
        return LatencyPolicy(
            env,
            objective,
            scenario.period_s,
            source,
            router=base != "latency-metrics-only",
            accuracy=AccuracyBudget(1.0 - utilization / 100.0) if base == "latency-variants" else None,
            steady_spend=steady_spend_of(name),
            steady_variant=steady_variant_of(name),
            forecast=base != "latency-no-forecast",
            spot_from_replicas=fewest_on_spot(spot, env.max_replicas) if spot is not None else None,
        )
    if base in ("hpa-rps", "hpa-inflight"):
        metric = base.removeprefix("hpa-")
        per_replica = tested.rps if metric == "rps" else tested.in_flight
        return HpaAverageValuePolicy(env, metric, utilization * per_replica, feed, label)
    if base == "hpa-p95":
        return HpaPercentilePolicy(env, objective, feed)
    if base in ("keda-rps", "keda-queue"):
        metric = base.removeprefix("keda-")
        per_replica = tested.rps if metric == "rps" else max(tested.queued, 0.1)
        return KedaPolicy(env, metric, utilization * per_replica, feed, label)
    if base in ("kpa", "kpa-delay"):
        delay = 300.0 if base == "kpa-delay" else 0.0
        return KpaPolicy(env, tested.in_flight, utilization, delay, feed, label)
    if base == "ray":
        return RayPolicy(env, feed=feed)
    if base == "ray-tuned":
        # Ray's guide: target_ongoing_requests from the latency objective and a load test;
        # max_ongoing_requests at least the batch a replica runs (the simulator does not cap it).
        return RayPolicy(
            env,
            target_ongoing=utilization * tested.in_flight,
            upscale_delay_s=10.0,
            downscale_delay_s=300.0,
            feed=feed,
            name=label,
        )
    if base == "static-peak":
        return SchedulePolicy("static-peak", [max(needed)], env)
    if base == "oracle":
        return SchedulePolicy("oracle", needed, env)
    raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}")


@dataclass(frozen=True)
class Prepared:
    simulation: Simulation
    needed: list[int]
    table: list[float]
    initial: int
    tested: LoadTest


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
    # Where the scrapes fall, drawn per scenario and the same for every policy in it.
    phase = float(np.random.default_rng([scenario.seed, 15]).random())
    simulation = Simulation(
        times, scenario.env, scenario.objective.target_ms, scenario.objective.percentile, scrape_phase=phase
    )
    tested = load_test(scenario.env, scenario.objective, table, seed=scenario.seed)
    return Prepared(simulation, needed, table, initial, tested)


def run_scenario(
    scenario: Scenario,
    policy_names: Sequence[str],
    on_start: Callable[[str], None] | None = None,
    reference_headrooms: Sequence[float] = (),
) -> list[SimResult]:
    """Every named policy on the scenario's arrivals, then the reactive reference at each
    headroom; all start with the replicas the first minute needs, ready."""
    for name in policy_names:
        parse_policy_name(name)
    prepared = prepare(scenario, max((1.0, *reference_headrooms)))
    duration = scenario.workload.duration_s
    results = []
    for name in policy_names:
        if on_start is not None:
            on_start(name)
        policy = make_policy(name, scenario, prepared.needed, prepared.table, prepared.tested)
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
    spot = capacity if strategy != "on-demand" and capacity.spot.enabled else None
    policy = make_policy(policy_name, scenario, prepared.needed, prepared.table, prepared.tested, spot)
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
        parse_policy_name(name)
    prepared = prepare(scenario)
    results = []
    for name in policy_names:
        for strategy in strategies:
            if on_start is not None:
                on_start(f"{name} {strategy}")
            results.append(run_capacity(prepared, scenario, name, strategy, capacity, market))
    return results
