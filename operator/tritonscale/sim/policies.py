"""Autoscalers under simulation: ours, and baselines written from their documented algorithms,
each configured as a careful user would configure it.

Every tunable baseline's target is a utilisation (0.7 unless named, e.g. hpa-rps@0.6) of what one
replica carries at the objective, measured by the same load test the oracle uses (`load_test`).
Every policy reads the same metric feed (`Feed`): Prometheus (equal information: rates over
30 s, a 15 s scrape, 5 s late) or fresh (the last 10 s, read directly).

- latency: Tritonscale's LatencyAutoscaler, the very object the operator runs, on the feed and
  on the routers' counts every 2 s (policy.surge), as the operator runs it; latency-metrics-only:
  the same without the routers' counts; latency-no-forecast: the same without forecasts of
  recurring surges (policy.forecast).
- hpa-rps, hpa-inflight: HPA on a Pods metric with an AverageValue target, requests per second
  or requests in flight per pod (replica_calculator.go: ceil(usage ratio x ready pods), tolerance
  0.1, sync 15 s; default behaviour: up by max(+100 %, +4 pods) per 15 s, down to the highest
  recommendation of the last 300 s).
- hpa-p95: HPA on the latency percentile itself: the anti-pattern (a saturation metric that a
  proportional rule cannot hold), kept to show it.
- keda-rps, keda-queue: a KEDA Prometheus trigger (AverageValue, no metric cache) on the summed
  request rate or on Triton's pending requests, driving the same HPA behaviour.
- kpa, kpa-delay: Knative's KPA on concurrency (60 s stable and 6 s panic windows, panic at
  200 %, scale-down at most by half per step); kpa-delay adds a 300 s scale-down-delay, the
  window our policy also holds capacity for.
- ray: Ray Serve's defaults (2 ongoing requests per replica, metrics every 10 s over 30 s, 30 s
  upscale and 600 s downscale delays); ray-tuned: target ongoing requests from the load test,
  10 s upscale and 300 s downscale delays.
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

from tritonscale.api.observation import RouterSample, RouterSignal
from tritonscale.policy.autoscaling import (
    AutoscalerSettings,
    AutoscalerState,
    LatencyAutoscaler,
    correction_at,
)
from tritonscale.policy.surge import ROUTER_PERIOD_S, remember, router_signal, wants_decision
from tritonscale.policy.variants import (
    AccuracyBudget,
    ServedCounts,
    VariantSettings,
    VariantState,
    bridge,
    decide_variants,
    standing_mix,
)
from tritonscale.sim.engine import ClusterView, SimEnvironment, Simulation
from tritonscale.sim.workloads import RateStep, Workload, arrivals

POLICIES = (
    "latency",
    "latency-metrics-only",
    "latency-no-forecast",
    "latency-variants",
    "hpa-rps",
    "hpa-inflight",
    "hpa-p95",
    "keda-rps",
    "keda-queue",
    "kpa",
    "kpa-delay",
    "ray",
    "ray-tuned",
    "static-peak",
    "oracle",
)
# Baselines a user tunes by a target utilisation (of what one replica carries at the objective).
TUNABLE = ("hpa-rps", "hpa-inflight", "keda-rps", "keda-queue", "kpa", "kpa-delay", "ray-tuned")
DEFAULT_UTILIZATION = 0.7
# latency-variants takes the accuracy budget after '@', in points (latency-variants@0.5: the
# mean accuracy served over any hour stays within 0.5 points of the primary model's), after
# ':' the fraction of it spent all the time (latency-variants@0.5:0.6; none without), and after
# '=' the variant that serves it (latency-variants@0.5:0.6=int8; else the one that saves most).
DEFAULT_BUDGET_POINTS = 1.0


def parse_policy_name(name: str) -> tuple[str, float]:
    """'hpa-rps@0.6' -> ('hpa-rps', 0.6); a tunable baseline without '@' gets 0.7."""
    base, _, knob = name.partition("@")
    if base not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}")
    if base == "latency-variants":
        steady_spend_of(name)  # the steady part's own errors first: '=' without ':' is one
        budget, _, _ = knob.partition(":")
        try:
            points = float(budget) if budget else DEFAULT_BUDGET_POINTS
        except ValueError:
            raise ValueError(
                f"{name!r}: the budget after '@' must be accuracy points, e.g. {base}@0.5"
            ) from None
        if not 0.0 <= points <= 100.0:
            raise ValueError(f"{name!r}: the accuracy budget must be between 0 and 100 points")
        return base, points
    if not knob:
        return base, DEFAULT_UTILIZATION
    if base not in TUNABLE:
        raise ValueError(f"{base} takes no '@' knob; tunable: {', '.join(TUNABLE)}")
    try:
        utilization = float(knob)
    except ValueError:
        raise ValueError(f"{name!r}: the knob after '@' must be a number, e.g. {base}@0.7") from None
    if not 0.05 <= utilization <= 2.0:
        raise ValueError(f"{name!r}: utilisation must be between 0.05 and 2")
    return base, utilization


def _steady_parts(name: str) -> tuple[str | None, str | None]:
    """'latency-variants@0.5:0.6=int8' -> ('0.6', 'int8'): the steady spend's text and the
    variant named to serve it, each None when not given."""
    _, _, knob = name.partition("@")
    _, colon, steady = knob.partition(":")
    if not colon:
        if "=" in knob:
            raise ValueError(
                f"{name!r}: a steady variant serves a steady spend; give both, e.g. latency-variants@1:0.25=int8"
            )
        return None, None
    spend, equals, variant = steady.partition("=")
    if equals and not variant:
        raise ValueError(f"{name!r}: name the steady variant after '=', e.g. :0.25=int8")
    return spend, variant if equals else None


def steady_spend_of(name: str) -> float | None:
    """'latency-variants@0.5:0.6' -> 0.6, the fraction of the budget spent all the time; None
    without ':' (no steady spend)."""
    spend, variant = _steady_parts(name)
    if spend is None:
        return None
    try:
        fraction = float(spend)
    except ValueError:
        raise ValueError(f"{name!r}: the steady spend after ':' must be a fraction, e.g. :0.5") from None
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"{name!r}: the steady spend must be between 0 and 1")
    if variant is not None and fraction <= 0.0:  # as the CRD says of steadyVariant
        raise ValueError(f"{name!r}: a steady variant needs a steady spend above 0")
    return fraction


def steady_variant_of(name: str) -> str | None:
    """'latency-variants@0.5:0.6=int8' -> 'int8' (spec.autoscaling.accuracy.steadyVariant);
    None when not named: the variant that saves the most serves the steady spend."""
    steady_spend_of(name)
    return _steady_parts(name)[1]


ORACLE_WINDOW_S = 10.0


@dataclass(frozen=True)
class Objective:
    target_ms: float
    percentile: float


class LatencyPolicy:
    """The operator's autoscaler, fed Prometheus-like observations and, with `router`, the
    routers' counts every ROUTER_PERIOD_S as the operator reads them: a decision every
    `period_s`, and one at once when those counts show a surge the last decision did not size
    for (policy.surge.wants_decision, as the operator's router job asks for one). Decisions then
    fall on the 2 s grid (a 15 s period runs every 16 s), and the simulated routers always answer
    on time, where the operator's may not (it then runs on the metrics alone)."""

    def __init__(
        self,
        env: SimEnvironment,
        objective: Objective,
        period_s: float = 10.0,
        source: str = "triton",
        router: bool = True,
        accuracy: AccuracyBudget | None = None,
        steady_spend: float | None = None,
        steady_variant: str | None = None,
        **overrides: Any,
    ) -> None:
        self.env = env
        self.decision_period_s = period_s
        self.period_s = ROUTER_PERIOD_S if router else period_s
        self.router = router
        self.name = (
            "latency-metrics-only"
            if not router
            else "latency-no-forecast"
            if overrides.get("forecast") is False
            else "latency"
        )
        self.router_samples: tuple[RouterSample, ...] = ()
        self.last_decision: tuple[float, int, str] | None = None  # (when, desired, reason)
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
        # With variants and a budget: the variant shares, decided on the routers' grid.
        self.variant_settings: VariantSettings | None = None
        self.variant_state = VariantState()
        self.observed_ms: float | None = None  # the percentile the last observation measured
        if accuracy is not None:
            if not router or not env.variants:
                raise ValueError("variants need the routers' counts and variants in the environment")
            names = [variant.name for variant in env.variants]
            if steady_variant is not None and (steady_spend or 0.0) <= 0.0:
                raise ValueError("a steady variant needs a steady spend above 0")
            if steady_variant is not None and steady_variant not in names:
                raise ValueError(
                    f"steady variant {steady_variant!r} is not one of the variants: {', '.join(names)}"
                )
            spend = f":{steady_spend:g}" if steady_spend is not None else ""
            serving = f"={steady_variant}" if steady_variant is not None else ""
            self.name = f"latency-variants@{accuracy.points:g}{spend}{serving}"
            self.variant_settings = VariantSettings(
                target_ms=objective.target_ms,
                percentile=objective.percentile,
                variants=env.variants,
                budget=accuracy,
                period_s=ROUTER_PERIOD_S,
                steady_spend=steady_spend or 0.0,
                steady_variant=steady_variant,
            )

    def step(self, view: ClusterView) -> tuple[int, str]:
        signal = None
        if self.router:
            self.router_samples = remember(self.router_samples, view.router_sample())
            signal = router_signal(self.router_samples, view.now)
            due = (
                self.last_decision is None
                or view.now - self.last_decision[0] >= self.decision_period_s - 1e-9
            )
            if not due and not wants_decision(signal, self.state.sized_for_rps):
                assert self.last_decision is not None
                self._route_variants(view, signal)
                return view.provisioned, self.last_decision[2]
        observation = view.observation(self.window_s, self.scrape_s, self.lag_s)
        if self.source == "prometheus":
            observation = replace(observation, batch_profile=())  # Prometheus has no batch statistics
        observation = replace(observation, router=signal, spot_ready_replicas=view.spot_ready)
        carried = 1.0
        if self.variant_settings is not None:
            carried = bridge(
                self.variant_settings,
                self.variant_state,
                self.autoscaler.service_time(self.state),
                observation.arrival_rate_rps or 0.0,
                self.autoscaler.settings.cold_start_s,
            )
        decision, self.state = self.autoscaler.decide(
            observation,
            self.state,
            view.now,
            view.provisioned,
            bridge=carried,
            standing=standing_mix(self.variant_settings),
        )
        self.observed_ms = observation.latency_ms if observation.usable else None
        self.last_decision = (view.now, decision.desired, decision.reason)
        self._route_variants(view, signal)
        return decision.desired, decision.reason

    def _route_variants(self, view: ClusterView, signal: RouterSignal | None) -> None:
        """Every routers' read: the variants' shares for the next one (policy.variants)."""
        if self.variant_settings is None or signal is None:
            return
        service = self.autoscaler.service_time(self.state)
        ready = view.ready
        rate = signal.present_rps
        choice, self.variant_state = decide_variants(
            self.variant_settings,
            self.variant_state,
            view.now,
            ServedCounts(view.now, view.served_counts()),
            rate_rps=rate,
            slope_rps_per_s=signal.slope_rps_per_s,
            in_flight=signal.in_flight,
            ready=ready,
            arriving=max(0, view.provisioned - ready),
            primary=service,
            correction=correction_at(self.state, rate / max(ready, 1)),
            observed_ms=self.observed_ms,
            max_batch=self.autoscaler.settings.max_batch,
        )
        view.route_variants(choice.shares)


@dataclass(frozen=True)
class Feed:
    """How a baseline's metrics reach it: values over `window_s` as of the last scrape (every
    `scrape_s`), visible `lag_s` after it. The same feed for every policy is equal information."""

    name: str
    window_s: float
    scrape_s: float
    lag_s: float


def prometheus_feed(env: SimEnvironment) -> Feed:
    """Through Prometheus: rates over 30 s, a scrape every 15 s, visible 5 s later (the
    environment's values)."""
    return Feed("prometheus", env.metric_window_s, env.scrape_interval_s, env.metric_lag_s)


# Read directly, as the operator reads Triton's statistics: the last 10 s, no scrape, no lag.
FRESH_FEED = Feed("fresh", 10.0, 1.0, 0.0)


@dataclass(frozen=True)
class LoadTest:
    """What one replica carries at the objective, measured once (sim.policies.load_test), and
    what every tunable baseline derives its target from, as a careful user would from a load
    test: requests per second, requests in flight (queued and executing) and requests queued."""

    rps: float
    in_flight: float
    queued: float


def load_test(env: SimEnvironment, objective: Objective, table: list[float], seed: int = 1) -> LoadTest:
    """One replica at the highest rate it serves within the objective (table[1]); in flight and
    queued by Little's law from the measured latencies and waits."""
    rate = table[1] if len(table) > 1 else env.service.capacity_rps()
    duration = max(60.0, 20000.0 / max(rate, 1.0))
    times = arrivals(Workload("load-test", (RateStep(0.0, rate),), duration), seed)
    result = Simulation(times, env, objective.target_ms, objective.percentile).run(_Fixed(1), 1, duration)
    served = np.isfinite(result.latencies_s)
    mean_latency = float(np.mean(result.latencies_s[served])) if served.any() else 0.0
    mean_wait = float(np.mean(result.waits_s[served])) if served.any() else 0.0
    return LoadTest(rps=rate, in_flight=rate * mean_latency, queued=rate * mean_wait)


class _HpaBehavior:
    """The HPA controller's default behaviour around a recommendation: scale-up by max(+100 %,
    +4 pods) per 15 s with no stabilization; scale-down to the highest recommendation of the last
    300 s."""

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


def _hpa_recommendation(ready: int, current: int, usage_ratio: float) -> int:
    """replica_calculator.go: within the 10 % tolerance nothing changes; otherwise
    ceil(usage ratio x ready pods), the metric being averaged over the ready pods."""
    if abs(usage_ratio - 1.0) <= 0.1:
        return current
    return max(1, math.ceil(usage_ratio * max(ready, 1)))


class HpaAverageValuePolicy:
    """HPA on a Pods metric with an AverageValue target (through prometheus-adapter), synced every
    15 s. `metric` is `rps` (requests per second per pod) or `inflight` (requests in flight per
    pod); the target is `utilization` x what one replica carries at the objective (load test)."""

    period_s = 15.0

    def __init__(self, env: SimEnvironment, metric: str, target: float, feed: Feed, name: str) -> None:
        if metric not in ("rps", "inflight"):
            raise ValueError(f"unknown HPA metric {metric!r}")
        self.env, self.metric, self.target, self.feed, self.name = env, metric, target, feed, name
        self.behavior = _HpaBehavior(env)

    def step(self, view: ClusterView) -> tuple[int, str]:
        observation = view.observation(self.feed.window_s, self.feed.scrape_s, self.feed.lag_s)
        current, ready = view.provisioned, max(view.ready, 1)
        total = observation.arrival_rate_rps if self.metric == "rps" else observation.concurrency
        if total is None or observation.missing:
            return current, "metric missing; no change"
        ratio = total / ready / self.target
        recommendation = _hpa_recommendation(ready, current, ratio)
        desired = self.behavior.apply(view.now, current, recommendation)
        return (
            desired,
            f"{self.metric} {total / ready:.1f}/pod vs {self.target:.1f}: recommend {recommendation}",
        )


class HpaPercentilePolicy:
    """The anti-pattern, kept for comparison: HPA on the latency percentile itself (an Object
    metric, Value target = the objective). A saturation metric that a proportional rule cannot
    control: it halves the fleet when latency is low, overloads, and doubles back."""

    name = "hpa-p95"
    period_s = 15.0

    def __init__(self, env: SimEnvironment, objective: Objective, feed: Feed) -> None:
        self.env, self.objective, self.feed = env, objective, feed
        self.behavior = _HpaBehavior(env)

    def step(self, view: ClusterView) -> tuple[int, str]:
        observation = view.observation(self.feed.window_s, self.feed.scrape_s, self.feed.lag_s)
        current, ready = view.provisioned, max(view.ready, 1)
        if observation.latency_ms is None or observation.missing:
            return current, "metric missing; no change"
        ratio = observation.latency_ms / self.objective.target_ms
        recommendation = _hpa_recommendation(ready, current, ratio)
        desired = self.behavior.apply(view.now, current, recommendation)
        return desired, f"p95 ratio {ratio:.2f}: recommend {recommendation}"


class KedaPolicy:
    """A KEDA ScaledObject with a Prometheus trigger, metricType AverageValue (KEDA's default):
    the query returns a fleet total, the HPA it drives divides by the threshold. No metric cache
    (useCachedMetrics false), so the HPA's 15 s sync reads Prometheus each time. `metric` is `rps`
    (sum of the request rate) or `queue` (Triton's pending requests, queued and not executing)."""

    period_s = 15.0

    def __init__(self, env: SimEnvironment, metric: str, threshold: float, feed: Feed, name: str) -> None:
        if metric not in ("rps", "queue"):
            raise ValueError(f"unknown KEDA metric {metric!r}")
        self.env, self.metric, self.threshold, self.feed, self.name = env, metric, threshold, feed, name
        self.behavior = _HpaBehavior(env)

    def step(self, view: ClusterView) -> tuple[int, str]:
        observation = view.observation(self.feed.window_s, self.feed.scrape_s, self.feed.lag_s)
        current, ready = view.provisioned, max(view.ready, 1)
        total = observation.arrival_rate_rps if self.metric == "rps" else observation.pending_requests
        if total is None or (self.metric == "rps" and observation.missing):
            return current, "metric missing; no change"
        recommendation = _hpa_recommendation(ready, current, total / ready / self.threshold)
        desired = self.behavior.apply(view.now, current, recommendation)
        return (
            desired,
            f"{self.metric} {total:.1f} vs {self.threshold:.1f}/replica: recommend {recommendation}",
        )


class KpaPolicy:
    """Knative Pod Autoscaler on concurrency: a 60 s stable and a 6 s panic window against the
    per-replica target x utilisation, panic at 200 %, no scale-down while panicking (panic ends
    after 60 s calm), scale-down at most by half per step; with `scale_down_delay_s`, the highest
    decision of that window (Knative's scale-down-delay)."""

    period_s = 2.0

    def __init__(
        self,
        env: SimEnvironment,
        target_concurrency: float = 10.0,
        utilization: float = 0.7,
        scale_down_delay_s: float = 0.0,
        feed: Feed = FRESH_FEED,
        name: str = "kpa",
    ) -> None:
        self.env = env
        self.target = target_concurrency * utilization
        self.scale_down_delay_s = scale_down_delay_s
        self.feed = feed
        self.name = name
        self.panic_until = -math.inf
        self.decisions: deque[tuple[float, int]] = deque()

    def step(self, view: ClusterView) -> tuple[int, str]:
        stable = view.observation(60.0, self.feed.scrape_s, self.feed.lag_s).concurrency
        panic = view.observation(6.0, self.feed.scrape_s, self.feed.lag_s).concurrency
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
        if self.scale_down_delay_s > 0:
            self.decisions.append((view.now, desired))
            while self.decisions[0][0] < view.now - self.scale_down_delay_s:
                self.decisions.popleft()
            desired = max(d for _, d in self.decisions)
        return desired, f"{mode}: concurrency {stable:.1f} (60 s) {panic:.1f} (6 s)"


RAY_LOOK_BACK_S = 30.0  # Ray Serve's default look_back_period_s


class RayPolicy:
    """Ray Serve's request-based autoscaling: ongoing requests averaged over its 30 s look-back
    (`look_back_period_s`, Ray's own window whatever the feed), as fresh as `feed` brings them
    (by default as Ray's replicas push them, every 10 s); a decision must persist
    `upscale_delay_s` to scale up and `downscale_delay_s` to scale down. Defaults are Ray's (2
    ongoing per replica, 30 s, 600 s)."""

    period_s = 1.0

    def __init__(
        self,
        env: SimEnvironment,
        target_ongoing: float = 2.0,
        upscale_delay_s: float = 30.0,
        downscale_delay_s: float = 600.0,
        feed: Feed | None = None,
        name: str = "ray",
    ) -> None:
        self.env = env
        self.target_ongoing = target_ongoing
        self.upscale_delay_s = upscale_delay_s
        self.downscale_delay_s = downscale_delay_s
        self.feed = feed or Feed("ray", RAY_LOOK_BACK_S, 10.0, 0.0)  # pushed every 10 s
        self.name = name
        self.up_for = 0.0
        self.down_for = 0.0

    def step(self, view: ClusterView) -> tuple[int, str]:
        current = view.provisioned
        ongoing = view.observation(RAY_LOOK_BACK_S, self.feed.scrape_s, self.feed.lag_s).concurrency
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
    single = env.most_rps()
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
