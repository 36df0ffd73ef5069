"""Autoscalers under simulation: ours, and baselines written from their documented algorithms.

- latency: Tritonscale's LatencyAutoscaler, the very object the operator runs.
- hpa: Kubernetes HPA on the latency percentile as an Object metric: desired = ceil(current *
  metric / target), tolerance 0.1, sync 15 s; scale-up max(+100 %, +4 pods) per 15 s with no
  stabilization; scale-down 100 % per 15 s to the highest recommendation of the last 300 s.
- keda: a KEDA Prometheus trigger on the percentile with AverageValue semantics (desired =
  ceil(metric / threshold)), polled every 30 s, fed into the same HPA behaviour.
- kpa: Knative's KPA: average concurrency over a 60 s stable and a 6 s panic window against a
  per-replica target (target utilisation 0.7), panic at 200 %, no scale-down while panicking
  (panic ends after 60 s calm), scale-down at most by half per step. Knative's default target
  (100 in flight) would be absurd for a model that serves ~150 req/s; the runner sets the
  concurrency one replica carries within the objective.
- ray: Ray Serve's default autoscaling: 2 ongoing requests per replica target, metrics every 10 s
  averaged over 30 s, a decision must persist 30 s to scale up and 600 s to scale down.
- static-peak: a fixed count, enough for the peak 10 s window.
- oracle: offline, the fewest replicas for every 10 s window that meet the objective given the
  actual arrivals, provisioned one cold start ahead (a lower bound on replica-hours).

Not an autoscaler but a yardstick: `ReactiveReference` knows the true arrival rate and its slope
at every second (no metrics, no noise, no lag, no stabilization) and provisions for the rate one
cold start ahead on that slope, times a headroom. No controller that only sees the present can
react sooner, so its attainment at a given cost shows what reacting alone can reach.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from tritonscale.policy.autoscaling import AutoscalerSettings, AutoscalerState, LatencyAutoscaler
from tritonscale.sim.engine import ClusterView, SimEnvironment, Simulation
from tritonscale.sim.workloads import RateStep, Workload, arrivals

POLICIES = ("latency", "hpa", "keda", "kpa", "ray", "static-peak", "oracle")
ORACLE_WINDOW_S = 10.0


@dataclass(frozen=True)
class Objective:
    target_ms: float
    percentile: float


class LatencyPolicy:
    """The operator's autoscaler, fed Prometheus-like observations."""

    name = "latency"

    def __init__(
        self,
        env: SimEnvironment,
        objective: Objective,
        period_s: float = 10.0,
        source: str = "triton",
        **overrides: Any,
    ) -> None:
        self.env = env
        self.period_s = period_s
        self.source = source
        # Prometheus: rates over the metric window, a scrape and a lag late. Triton's own
        # statistics: counters read at each decision, so rates cover the last period (at least
        # 10 s, like the summary's freshest quantiles), with no lag.
        if source == "prometheus":
            self.window_s, self.scrape_s, self.lag_s = (
                env.metric_window_s,
                env.scrape_interval_s,
                env.metric_lag_s,
            )
        elif source == "triton":
            self.window_s, self.scrape_s, self.lag_s = max(period_s, 10.0), period_s, 0.0
        else:
            raise ValueError(f"unknown metrics source {source!r}")
        settings = AutoscalerSettings(
            target_ms=objective.target_ms,
            percentile=objective.percentile,
            min_replicas=env.min_replicas,
            max_replicas=env.max_replicas,
            cold_start_s=env.cold_start_s + self.scrape_s + self.lag_s,
            settle_s=self.window_s + self.scrape_s + self.lag_s,
            max_batch=env.max_batch,
        )
        self.autoscaler = LatencyAutoscaler(replace(settings, **overrides))
        self.state = AutoscalerState()

    def step(self, view: ClusterView) -> tuple[int, str]:
        observation = view.observation(self.window_s, self.scrape_s, self.lag_s)
        if self.source == "prometheus":
            observation = replace(observation, batch_profile=())  # Prometheus has no batch statistics
        decision, self.state = self.autoscaler.decide(observation, self.state, view.now, view.provisioned)
        return decision.desired, decision.reason


class _HpaBehavior:
    """The HPA controller's default behaviour around a recommendation."""

    def __init__(self, env: SimEnvironment) -> None:
        self.env = env
        self.recommendations: deque[tuple[float, int]] = deque()

    def apply(self, now: float, current: int, recommendation: int) -> int:
        self.recommendations.append((now, recommendation))
        while self.recommendations and self.recommendations[0][0] < now - 300.0:
            self.recommendations.popleft()
        if recommendation > current:
            desired = min(recommendation, max(current + 4, 2 * current))
        else:
            desired = max(r for _, r in self.recommendations)
            desired = min(desired, current)
        return min(max(desired, self.env.min_replicas), self.env.max_replicas)


class HpaPolicy:
    """HPA with the latency percentile as an Object metric (Value target)."""

    name = "hpa"
    period_s = 15.0

    def __init__(self, env: SimEnvironment, objective: Objective) -> None:
        self.env = env
        self.objective = objective
        self.behavior = _HpaBehavior(env)

    def step(self, view: ClusterView) -> tuple[int, str]:
        env = self.env
        observation = view.observation(env.metric_window_s, env.scrape_interval_s, env.metric_lag_s)
        current = view.provisioned
        if observation.latency_ms is None or observation.missing:
            return current, "metric missing; no change"
        ratio = observation.latency_ms / self.objective.target_ms
        recommendation = current if abs(ratio - 1.0) <= 0.1 else math.ceil(current * ratio)
        desired = self.behavior.apply(view.now, current, max(recommendation, 1))
        return desired, f"ratio {ratio:.2f}: recommend {recommendation}"


class KedaPolicy:
    """KEDA Prometheus trigger on the percentile, AverageValue, polled every 30 s."""

    name = "keda"
    period_s = 15.0
    polling_s = 30.0

    def __init__(self, env: SimEnvironment, objective: Objective) -> None:
        self.env = env
        self.objective = objective
        self.behavior = _HpaBehavior(env)
        self.cached: float | None = None
        self.polled_at = -math.inf

    def step(self, view: ClusterView) -> tuple[int, str]:
        env = self.env
        current = view.provisioned
        if view.now - self.polled_at >= self.polling_s:
            observation = view.observation(env.metric_window_s, env.scrape_interval_s, env.metric_lag_s)
            self.cached = None if observation.missing else observation.latency_ms
            self.polled_at = view.now
        if self.cached is None:
            return current, "metric missing; no change"
        usage_ratio = self.cached / (self.objective.target_ms * current)
        if abs(usage_ratio - 1.0) <= 0.1:
            recommendation = current
        else:
            recommendation = math.ceil(self.cached / self.objective.target_ms)
        desired = self.behavior.apply(view.now, current, max(recommendation, 1))
        return desired, f"value {self.cached:.0f} ms: recommend {recommendation}"


class KpaPolicy:
    """Knative Pod Autoscaler on concurrency."""

    name = "kpa"
    period_s = 2.0

    def __init__(
        self, env: SimEnvironment, target_concurrency: float = 10.0, utilization: float = 0.7
    ) -> None:
        self.env = env
        self.target = target_concurrency * utilization
        self.panic_until = -math.inf

    def step(self, view: ClusterView) -> tuple[int, str]:
        stable = view.observation(60.0, 1.0, 0.0).concurrency
        panic = view.observation(6.0, 1.0, 0.0).concurrency
        current, ready = view.provisioned, max(view.ready, 1)
        if stable is None or panic is None:
            return current, "no concurrency data; no change"
        desired_stable = math.ceil(stable / self.target)
        desired_panic = math.ceil(panic / self.target)
        if desired_panic / ready >= 2.0:
            self.panic_until = view.now + 60.0
        if view.now < self.panic_until:
            desired, mode = max(desired_panic, current), "panic"
        else:
            desired, mode = desired_stable, "stable"
        desired = max(desired, math.ceil(ready / 2))  # max scale-down rate 2
        desired = min(desired, ready * 1000)
        return desired, f"{mode}: concurrency {stable:.1f} (60 s) {panic:.1f} (6 s)"


class RayPolicy:
    """Ray Serve's default request-based autoscaling."""

    name = "ray"
    period_s = 1.0

    def __init__(
        self,
        env: SimEnvironment,
        target_ongoing: float = 2.0,
        upscale_delay_s: float = 30.0,
        downscale_delay_s: float = 600.0,
    ) -> None:
        self.env = env
        self.target_ongoing = target_ongoing
        self.upscale_delay_s = upscale_delay_s
        self.downscale_delay_s = downscale_delay_s
        self.up_for = 0.0
        self.down_for = 0.0

    def step(self, view: ClusterView) -> tuple[int, str]:
        current = view.provisioned
        ongoing = view.observation(30.0, 10.0, 0.0).concurrency
        if ongoing is None:
            return current, "no metrics; no change"
        wanted = max(1, math.ceil(ongoing / self.target_ongoing))
        if wanted > current:
            self.up_for, self.down_for = self.up_for + self.period_s, 0.0
            if self.up_for >= self.upscale_delay_s:
                self.up_for = 0.0
                return wanted, f"{ongoing:.1f} ongoing for {self.upscale_delay_s:g}s: up"
        elif wanted < current:
            self.down_for, self.up_for = self.down_for + self.period_s, 0.0
            if self.down_for >= self.downscale_delay_s:
                self.down_for = 0.0
                return wanted, f"{ongoing:.1f} ongoing for {self.downscale_delay_s:g}s: down"
        else:
            self.up_for = self.down_for = 0.0
        return current, f"{ongoing:.1f} ongoing, want {wanted}"


class SchedulePolicy:
    """Replicas from a precomputed per-window schedule, provisioned a cold start ahead."""

    period_s = ORACLE_WINDOW_S

    def __init__(self, name: str, needed: list[int], env: SimEnvironment) -> None:
        self.name = name
        self.needed = needed
        self.env = env

    def step(self, view: ClusterView) -> tuple[int, str]:
        first = int(view.now // ORACLE_WINDOW_S)
        last = int((view.now + self.env.cold_start_s + self.period_s) // ORACLE_WINDOW_S)
        upcoming = self.needed[first : last + 1] or [self.needed[-1]]
        return max(upcoming), "scheduled"


def reference_name(headroom: float) -> str:
    """How results name the reactive reference at `headroom`, e.g. reactive-x1.15."""
    return f"reactive-x{headroom:g}"


class ReactiveReference:
    """Perfect present knowledge: the workload's true rate and slope each second, times headroom."""

    period_s = 1.0

    def __init__(
        self,
        workload: Workload,
        table: list[float],
        env: SimEnvironment,
        headroom: float,
        slope_s: float = 10.0,
    ) -> None:
        self.name = reference_name(headroom)
        self.workload = workload
        self.capacities = np.array(table[1:])
        self.ahead_s = env.cold_start_s + self.period_s
        self.headroom = headroom
        self.slope_s = slope_s

    def step(self, view: ClusterView) -> tuple[int, str]:
        now, before = self.workload.rate_at(np.array([view.now, max(0.0, view.now - self.slope_s)]))
        rate = max(float(now), float(now) + float(now - before) / self.slope_s * self.ahead_s)
        needed = int(np.searchsorted(self.capacities, rate * self.headroom, side="left")) + 1
        return min(needed, len(self.capacities)), f"true rate {float(now):.0f} req/s"


class _Fixed:
    """A fixed replica count (used to measure capacity)."""

    name = "fixed"
    period_s = 3600.0

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas

    def step(self, view: ClusterView) -> tuple[int, str]:
        return self.replicas, "fixed"


def capacity_table(
    env: SimEnvironment, objective: Objective, up_to_rps: float, seed: int = 1, cv: float = 1.0
) -> list[float]:
    """table[c]: the highest arrival rate that c ready replicas serve within the objective, for
    arrivals as variable as the workload's (coefficient of variation `cv`; 1 is Poisson).

    Measured with the simulator itself (binary search on the rate for each c), up to the first c
    that carries `up_to_rps` or env.max_replicas.
    """
    single = env.service.capacity_rps()
    table = [0.0]
    while table[-1] < up_to_rps and len(table) <= env.max_replicas:
        replicas = len(table)
        low, high = table[-1], replicas * single
        for _ in range(9):
            rate = (low + high) / 2
            duration = max(30.0, 6000.0 / rate)
            steady = Workload("calibration", (RateStep(0.0, rate, cv),), duration)
            times = arrivals(steady, seed + replicas)
            result = Simulation(times, env, objective.target_ms, objective.percentile).run(
                _Fixed(replicas), replicas, duration
            )
            meets = _percentile(result.latencies_s, objective.percentile) * 1000.0 <= objective.target_ms
            low, high = (rate, high) if meets else (low, rate)
        table.append(low)
    return table


def _percentile(latencies_s: np.ndarray, percentile: float) -> float:
    if latencies_s.size == 0:
        return 0.0
    return float(np.percentile(latencies_s, percentile, method="inverted_cdf"))


def replicas_per_window(arrivals: np.ndarray, duration_s: float, table: list[float]) -> list[int]:
    """The fewest replicas meeting the objective in each 10 s window of the actual arrivals."""
    edges = np.arange(0.0, duration_s + ORACLE_WINDOW_S, ORACLE_WINDOW_S)
    counts, _ = np.histogram(arrivals, bins=edges)
    rates = counts / ORACLE_WINDOW_S
    capacities = np.array(table[1:])
    needed = np.searchsorted(capacities, rates, side="left") + 1
    return [int(n) for n in np.minimum(needed, len(table) - 1)]
