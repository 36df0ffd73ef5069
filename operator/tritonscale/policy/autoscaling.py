"""The latency-objective autoscaler: observations in, desired replicas and a reason out.

Pure: the clock and all history come in as arguments and go out as a new state, so the operator
and the simulator run exactly this code.

Each decision:
1. holds when the observation is missing (never scales down on no data);
2. estimates tau(b) = tau0 + alpha*b from the observed batch sizes and execution times;
3. sizes with the queueing model (policy.queueing) for the arrival rate expected one cold start
   ahead (the recent trend, and the growth seen before over that horizon, up to the history's
   highest rate), corrected by
   feedback: the smoothed ratio of observed to predicted percentile, remembered per level of
   per-replica load (10 % buckets), so a wrong estimate does not persist and the error learnt at
   one replica count is not applied to another with a different load per replica;
4. scales up at once; when the observed percentile is far over the target ("panic"), at least in
   proportion to the overshoot, but only once the ready replicas have served a whole metrics
   window (a window that still holds the backlog from before new capacity came says nothing);
5. scales down only to the highest recommendation of the stabilization window, by at most
   maxStepPercent, and only to a count that would still meet the objective at 5 % more load
   than expected (a tolerance band against flapping); once a scale-down had to be undone
   within the window (a reversal), for the next hour only to a count that carries the rate
   growth seen over a window at the 90th percentile: a load that surges keeps its headroom,
   a steady one does not pay for it; within the window after a scale-down, while the
   percentile is within the objective and the routers' counts (read every 2 s and tested
   for a change of rate) show no surge, it scales up for the present (its rate, the growth
   seen before within a cold start, a backlog, a forecast surge) but not for the metrics'
   trend carried ahead: on real traffic that half-minute trend swings by a tenth either
   way, and carried a minute ahead it undid scale-downs the load never needed undone
   (flaps). Without the routers' counts the trend is the only sign of a surge, and counts;
   while the load falls steadily (a line fitted to the window's rates falls by a tenth or more,
   and by far more than the rates scatter around it) and the last scale-up is a window old or
   more, only the settle time's recommendations are held: the window's highest is behind a
   falling load;
6. clamps to min..max and says why, in numbers.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Literal

from tritonscale.api.observation import Observation, RouterSignal
from tritonscale.api.spec import AutoscalingSpec, CapacitySpec
from tritonscale.policy.forecast import BUCKET_S, MIN_COVERAGE, RateHistory, forecast, quiet
from tritonscale.policy.forecast import remember as remember_rate
from tritonscale.policy.placement import fewest_on_spot
from tritonscale.policy.queueing import ServiceTime, fewest_replicas
from tritonscale.policy.service_facts import DEFAULT_COLD_START_S, DEFAULT_MAX_BATCH
from tritonscale.policy.surge import RETRIGGER_RATIO, ROUTER_PERIOD_S
from tritonscale.policy.surge import STALE_S as ROUTER_STALE_S
from tritonscale.policy.variants import NO_STANDING_MIX, SHARE_STEP, StandingMix

LOAD_BUCKET_BASE = math.log(1.1)
RATE_SPACING_S = 5.0  # the rate history keeps at most one sample per this many seconds
# Growth is sized for ahead of need only from a history of 20 cold starts or more: the 90th
# percentile of fewer windows is one surge, which would hold its headroom for an hour. (After a
# reversal, the load has shown it surges, and the shorter history counts.)
GROWTH_MIN_WINDOWS = 20
# ... and only growth reached in two episodes a cold start apart: just past 20 cold starts, one
# surge sampled every second (the routers ask for decisions) still filled the percentile.
GROWTH_MIN_EPISODES = 2
# The routers have counted a step's new level this long before it caps the metrics' catching-up
# trend: three of their intervals, the fewest their slope test uses (sooner, a ramp looks flat).
STEP_SEEN_S = 3 * ROUTER_PERIOD_S
# A load is falling when a line fitted to the stabilization window's rates falls by FALLING_DROP
# or more over it, and by FALLING_SIGNAL times the rates' scatter around the line or more: a
# steady fall, not a swing that comes back. (Chosen on the training seeds. A fall of a tenth in
# each third of the window also passed `choppy`'s swings, which came back within minutes: 3.3
# flaps/h where it had 0.7, as on the real traces; at 8 times the scatter `choppy` still
# flapped, and 10-15 times were alike.)
FALLING_DROP = 0.1
FALLING_SIGNAL = 12.0
# The routers' rate and the metrics' within this factor: the window describes the load.
LEARN_RATE_AGREEMENT = 2.0
# A step's lag in the metrics' window is over within the window (10 s-1 min), a scrape and the
# sample's age; disagreeing this long, the two rates count different things (a rateQuery in
# other units, an ensemble's steps): the feedback is paused for good, and the user is told.
FEEDBACK_PAUSE_NOTICE_S = 120.0
# ... when they are this far apart too: below it, counting noise and the routers' own health
# and metadata calls make a trickle of traffic look 2x apart.
FEEDBACK_PAUSE_MIN_GAP_RPS = 2.0


def load_bucket(per_replica_rps: float) -> int:
    """10 %-wide buckets of per-replica load."""
    return round(math.log(max(per_replica_rps, 1e-3)) / LOAD_BUCKET_BASE)


def correction_at(state: AutoscalerState, per_replica_rps: float) -> float:
    """The learnt observed/predicted ratio at this load: the nearest bucket within five (the
    larger ratio on a tie), else 1 (the plain model) for loads never seen."""
    bucket = load_bucket(per_replica_rps)
    near = [(abs(b - bucket), -ratio, ratio) for b, ratio, _ in state.corrections if abs(b - bucket) <= 5]
    return min(near)[2] if near else 1.0


# More replicas than any service's maxReplicas: what a ratio above it is clamped to.
RATIO_REPLICAS_CAP = 1e6


@dataclass(frozen=True)
class AutoscalerSettings:
    """Everything that shapes decisions; built from the spec (`from_spec`) or by the simulator."""

    target_ms: float
    percentile: float = 95.0
    min_replicas: int = 1
    max_replicas: int = 10
    stabilization_s: float = 300.0
    max_step_down_percent: int = 50
    up_threshold: float = 0.95  # size so the prediction sits at this fraction of the target
    down_rate_margin: float = 0.05  # scale down only to a count that would also carry 5 % more load
    panic_ratio: float = 1.5  # observed over target by this much: scale in proportion, at once
    panic_max_factor: float = 2.0  # ... by at most this factor of the ready replicas per step
    cold_start_s: float = 30.0  # how far ahead to size for a rising rate
    trend_window_s: float = 30.0
    drain_s: float = 15.0  # a backlog of queued requests should be gone within this long
    growth_quantile: float = 0.9  # size for this quantile of past rate growth over cold_start_s
    # After a reversal (a scale-down undone within the stabilization window), scale down only
    # to what carries this quantile of the rate growth seen over a window, for history_s.
    surge_growth_quantile: float = 0.9
    history_s: float = 3600.0
    settle_s: float = 60.0  # after a change, metrics need this long to show its effect
    feedback_smoothing: float = 0.3
    feedback_bounds: tuple[float, float] = (0.7, 2.5)
    max_batch: int = 1
    stale_after_s: float = 120.0
    forecast: bool = True  # provision recurring surges ahead when a period is proven (policy.forecast)
    # The fewest desired replicas of which the placement puts one on spot (None: spot off).
    # From there, for history_s after spot lost a replica, one spare is kept (with_spare).
    spot_from_replicas: int | None = None


@dataclass(frozen=True)
class RatesApart:
    """The routers' and the metrics' rates, found beyond LEARN_RATE_AGREEMENT and
    FEEDBACK_PAUSE_MIN_GAP_RPS apart at every comparison since the disagreement began."""

    routed_rps: float
    measured_rps: float
    seconds: float  # between consecutive comparisons that found them apart
    compared_s: float | None  # the last comparison; None after a tick that could not compare


@dataclass(frozen=True)
class AutoscalerState:
    """What the autoscaler remembers between decisions."""

    recommendations: tuple[tuple[float, int], ...] = ()  # (time, replicas needed), newest last
    rates: tuple[tuple[float, float], ...] = ()  # (time, arrival rate)
    service_samples: tuple[tuple[float, float], ...] = ()  # (average batch, mean execution ms)
    per_item_ms: float | None = None  # alpha of tau(b), once fitted
    corrections: tuple[tuple[int, float, float], ...] = ()  # (load bucket, observed/predicted, when)
    first_seen_s: float | None = None  # first usable observation: stabilization needs history
    last_change_s: float | None = None
    last_direction: int = 0  # +1 up, -1 down: the last change made
    last_down_rps: float | None = None  # the present rate when the last scale-down was made
    reversals: tuple[float, ...] = ()  # when a scale-up undid a recent scale-down
    ready_seen: int | None = None  # ready replicas at the previous decision
    ready_changed_s: float | None = None  # when the ready count was last seen to change
    sized_for_rps: float | None = None  # the present rate the last decision sized for
    spot_ready_seen: int | None = None  # ready replicas on spot at the previous decision
    spot_lost_s: float | None = None  # when spot last took one and left us short (_note_spot_loss)
    rates_apart: RatesApart | None = None  # the routers' and metrics' rates, while they disagree
    rate_peaks: RateHistory = field(default_factory=RateHistory)  # peak rate per bucket (forecasts)


class Verdict(StrEnum):
    """What a decision does, and why, in one word (a metric label and the log's key)."""

    METRICS_MISSING = "MetricsMissing"  # no usable observation: hold, never scale down
    SCALE_UP = "ScaleUp"  # the model needs more replicas
    PANIC = "Panic"  # far over target where the model saw no need: up in proportion
    SCALE_DOWN = "ScaleDown"  # the whole stabilization window needed fewer
    WAIT_FOR_HISTORY = "WaitForHistory"  # fewer would do, but the window is not filled yet
    HOLD = "Hold"


_VERDICT_WORDS = {
    Verdict.SCALE_UP: "scaling up",
    Verdict.PANIC: "panic, scaling up",
    Verdict.SCALE_DOWN: "scaling down",
    Verdict.HOLD: "holding",
}


@dataclass(frozen=True)
class Decision:
    """The outcome of one autoscaling step, as fields; `reason` renders them, so status,
    Events, metrics and logs all say the same thing."""

    desired: int
    current: int
    verdict: Verdict
    target_ms: float = 0.0
    percentile: float = 95.0
    observed_ms: float | None = None
    rate_rps: float | None = None
    model_replicas: int | None = None  # what the queueing model asks for
    predicted_ms: float | None = None  # the model's percentile at model_replicas
    limited: Literal["max", "min"] | None = None  # the clamp bound the decision
    bound: int | None = None  # the value of that bound
    stabilization_s: float = 0.0
    missing: str | None = None  # why there was no usable observation
    partial: str | None = None  # the observation covered some replicas only: no scale-down
    surge: str | None = None  # the routers' counts showed a surge the metrics do not show yet
    forecast: str | None = None  # a recurring surge the decision provisions ahead of
    headroom: str | None = None  # why more than the model's count is kept after a reversal
    spare: str | None = None  # why one replica beyond the model's count is kept on spot
    trend_held: str | None = None  # the trend that would have undone a recent scale-down
    falling: str | None = None  # why a scale-down held only the settle time's recommendations
    beyond_present: str | None = None  # what made the model ask for more than the present rate needs
    feedback_paused: str | None = None  # why the model's error has not been learnt for a while
    standing: str | None = None  # the standing variant share the fleet is sized for

    @property
    def direction(self) -> str:
        if self.desired > self.current:
            return "up"
        if self.desired < self.current:
            return "down"
        return "hold"

    @property
    def metrics_missing(self) -> bool:
        return self.verdict is Verdict.METRICS_MISSING

    @property
    def panic(self) -> bool:
        return self.verdict is Verdict.PANIC

    @property
    def reason(self) -> str:
        if self.verdict is Verdict.METRICS_MISSING:
            return f"metrics missing ({self.missing}); holding {self.desired}"
        observed = self.observed_ms or 0.0
        summary = (
            f"p{self.percentile:g} {observed:.0f} ms {'>' if observed > self.target_ms else '<='} "
            f"{self.target_ms:g} ms at {self.rate_rps or 0.0:.0f} req/s; model says {self.model_replicas}"
        )
        if self.surge is not None:
            summary += f" ({self.surge})"
        if self.forecast is not None:
            summary += f" ({self.forecast})"
        if self.headroom is not None:
            summary += f" ({self.headroom})"
        if self.spare is not None:
            summary += f" ({self.spare})"
        if self.trend_held is not None:
            summary += f" ({self.trend_held})"
        if self.falling is not None:
            summary += f" ({self.falling})"
        if self.beyond_present is not None:
            summary += f" ({self.beyond_present})"
        if self.feedback_paused is not None:
            summary += f" ({self.feedback_paused})"
        if self.standing is not None:
            summary += f" ({self.standing})"

        if self.verdict is Verdict.WAIT_FOR_HISTORY:
            action = f"holding until {self.stabilization_s:g}s of history"
        else:
            action = _VERDICT_WORDS[self.verdict]
        if self.desired != self.current:
            action += f" {self.current} -> {self.desired}"
        if self.limited == "max":
            action += f" (limited by maxReplicas {self.bound})"
        elif self.limited == "min":
            action += f" (held at minReplicas {self.bound})"
        if self.partial is not None:
            action += f" (no scale-down on partial metrics: {self.partial})"
        return f"{summary}; {action}"


@dataclass(frozen=True)
class _Phase:
    settled: bool  # the last change has had time to show in the metrics
    serving_settled: bool  # so has the last change in ready replicas


@dataclass(frozen=True)
class _Sizing:
    present_rate: float
    expected_rate: float
    up: int
    down: int
    predicted_ms: float
    explains_at: Callable[[int], float]  # corrected predicted latency at the current rate
    forecast: str | None = None  # set when a recurring surge raised the expected rate
    headroom: str | None = None  # set when a past reversal keeps more than the expected rate needs
    spare: str | None = None  # set when `up` includes a spare for a spot reclaim
    up_untrended: int = 0  # `up` for the present alone: without the metrics' trend carried ahead
    untrended_rate: float = 0.0  # the expected rate without that trend
    # What made the model's count exceed what the plain model wants at the present rate: the
    # latency correction learnt at that load, a rate expected a cold start ahead, a backlog.
    # Worked out only for a scale-up's reason (two more searches of the model otherwise per tick).
    beyond_present: Callable[[], str | None] = lambda: None


def with_spare(replicas: int, spot_from: int | None) -> int:
    """`replicas`, and one more when some of them run on spot (`spot_from`, the fewest of which
    the placement puts one on spot; None: no spare wanted).

    A reclaimed spot replica is gone for a cold start at least: the node's drain may evict one
    pod at once (the PodDisruptionBudget allows one), and its replacement starts from nothing.
    A fleet sized to the objective runs each replica near its full-batch capacity, so one fewer
    is past saturation until the replacement serves: in the stressed spot benchmark most
    requests of the minute after a reclaim of one of six replicas missed. With one spare, the
    replicas left meet the objective (N+1)."""
    if spot_from is None or replicas < spot_from:
        return replicas
    return replicas + 1


def _fit_service_time(
    samples: tuple[tuple[float, float], ...], max_batch: int, known_alpha: float | None
) -> tuple[ServiceTime | None, float | None]:
    """tau(b) = tau0 + alpha*b from (mean batch ridden, mean execution ms) samples.

    alpha is re-fitted (least squares) only when the batch sizes spread enough to tell it from
    noise; otherwise the last fitted alpha is kept and tau0 re-anchored on the recent mean, so
    the model does not jump between shapes as the load moves.
    """
    if not samples:
        return None, known_alpha
    batches = [b for b, _ in samples]
    times = [t for _, t in samples]
    mean_b, mean_t = sum(batches) / len(batches), sum(times) / len(times)
    spread = sum((b - mean_b) ** 2 for b in batches) / len(batches)
    alpha = known_alpha
    if spread >= 0.25 and len(samples) >= 6:
        fitted = sum((b - mean_b) * (t - mean_t) for b, t in samples) / (spread * len(samples))
        alpha = max(0.0, fitted)
    slope = alpha if alpha is not None else 0.0
    base = max(mean_t - slope * mean_b, 0.05 * mean_t, 0.01)
    service = ServiceTime(base_ms=base, per_item_ms=slope, max_batch=max(max_batch, math.ceil(max(batches))))
    return service, alpha


def _trend_rate(rates: tuple[tuple[float, float], ...], now: float, ahead_s: float, window_s: float) -> float:
    """The arrival rate `ahead_s` from now on the recent trend; never below the latest rate.

    The slope is the steeper of the regression over `window_s` and the last step, the latter
    only when it stands clear of counting noise (three standard errors of Poisson counts), so a
    surge is seen one sample after it starts.
    """
    latest = rates[-1][1]
    slopes = [0.0]
    if len(rates) >= 2:
        (t0, r0), (t1, r1) = rates[-2], rates[-1]
        noise = math.sqrt(max(r0, r1, 1.0) / max(t1 - t0, 1e-3))
        if t1 > t0 and r1 - r0 > 3 * math.sqrt(2) * noise:
            slopes.append((r1 - r0) / (t1 - t0))
    recent = [(t, r) for t, r in rates if t >= now - window_s]
    if len(recent) >= 3:
        mean_t = sum(t for t, _ in recent) / len(recent)
        mean_r = sum(r for _, r in recent) / len(recent)
        spread = sum((t - mean_t) ** 2 for t, _ in recent)
        if spread > 0:
            slopes.append(sum((t - mean_t) * (r - mean_r) for t, r in recent) / spread)
    return max(latest, latest + max(slopes) * ahead_s)


def _fresh_router(observation: Observation) -> RouterSignal | None:
    router = observation.router
    return router if router is not None and router.age_s <= ROUTER_STALE_S else None


def _metrics_window_filling(
    rates: tuple[tuple[float, float], ...], now: float, observation: Observation, settings: AutoscalerSettings
) -> bool:
    """Whether the metrics' rates the trend is fitted on include ones whose window reached back
    to a time without traffic: a rate of zero within a window and a trend window of now."""
    # rate_age_s is the sample's age plus half the window the rate was averaged over.
    window_s = 2 * max(observation.rate_age_s - observation.sample_age_s, 0.0)
    since = now - window_s - settings.trend_window_s
    return any(rate <= 0 for when, rate in rates if when >= since)


def _rate_misleads(observation: Observation) -> bool:
    """Whether the metrics' rate is not the load the latency was measured under, so the model's
    error cannot be learnt from the pair: the routers' rate (since their last change point,
    within their last minute) is beyond LEARN_RATE_AGREEMENT of it either way (the window lags
    a step). A demo learnt 2.5x at 3 req/s a replica from its first ticks, while the routers
    counted 55, and later asked for 25 replicas at p95 45 ms of 100."""
    router = _fresh_router(observation)
    if router is None:
        return False
    assert observation.arrival_rate_rps is not None
    routed, measured = router.rate_rps, observation.arrival_rate_rps
    return routed > LEARN_RATE_AGREEMENT * measured or measured > LEARN_RATE_AGREEMENT * routed


def _served_as_sized(observation: Observation, standing: StandingMix) -> bool:
    """The variants served what the fleet is sized for: nothing, or about the standing share
    (measured over a window, it wanders a little around the share set)."""
    if standing.share > 0:
        return abs(observation.variant_share - standing.share) <= SHARE_STEP / 2
    return observation.variant_share == 0


def _rates_apart(
    observation: Observation,
    state: AutoscalerState,
    now: float,
    metrics_fresh: bool,
    standing: StandingMix = NO_STANDING_MIX,
) -> RatesApart | None:
    """The disagreement after this tick. Only a tick with usable metrics, fresh router counts
    and the variants serving what the fleet is sized for compares the two (while they serve a
    surge, a rateQuery of the user's may count the model's share alone); any other tick keeps
    what is known and breaks the count's continuity, so neither a metrics outage nor a stale
    router reads as agreeing or disagreeing for its length."""
    apart = state.rates_apart
    router = _fresh_router(observation)
    if not metrics_fresh or router is None or not _served_as_sized(observation, standing):
        return None if apart is None else replace(apart, compared_s=None)
    routed, measured = router.rate_rps, observation.arrival_rate_rps or 0.0
    if not _rate_misleads(observation) or abs(routed - measured) < FEEDBACK_PAUSE_MIN_GAP_RPS:
        return None
    seconds = 0.0
    if apart is not None:
        seconds = apart.seconds + (now - apart.compared_s if apart.compared_s is not None else 0.0)
    return RatesApart(routed, measured, seconds, now)


def _feedback_paused(state: AutoscalerState) -> str | None:
    """Why no model error has been learnt for FEEDBACK_PAUSE_NOTICE_S or more: every comparison
    over that long found the routers' and the metrics' rates apart; else None."""
    apart = state.rates_apart
    if apart is None or apart.seconds < FEEDBACK_PAUSE_NOTICE_S:
        return None
    return (
        f"model feedback paused for {apart.seconds:.0f}s: the routers count {apart.routed_rps:.0f} req/s, "
        f"the metrics {apart.measured_rps:.0f}, more than {LEARN_RATE_AGREEMENT:g}x apart"
    )


def _surge(observation: Observation) -> RouterSignal | None:
    """The routers' signal when it shows a surge clearly above the metrics' rate, fresh."""
    router = _fresh_router(observation)
    if router is None or not router.surged:
        return None
    assert observation.arrival_rate_rps is not None
    return router if router.present_rps > RETRIGGER_RATIO * observation.arrival_rate_rps else None


def _stepped(router: RouterSignal | None) -> RouterSignal | None:
    """The routers' fresh signal when it shows a step up: a change point after which the rate
    is RETRIGGER_RATIO or more above the rate before it (a slow rise also finds change points,
    with a ratio close to 1, and there the metrics' trend is the load's), counted for
    STEP_SEEN_S at least."""
    if router is None or not router.surged or router.since_s < STEP_SEEN_S:
        return None
    assert router.previous_rps is not None
    return router if router.rate_rps >= RETRIGGER_RATIO * router.previous_rps else None


def load_falling(rates: tuple[tuple[float, float], ...], now: float, window_s: float) -> str | None:
    """How the rate fell over the window when a line fitted to its rates falls by FALLING_DROP or
    more over it and by FALLING_SIGNAL times their scatter around the line or more; else None
    (also when the samples do not span most of the window)."""
    inside = [(at, rate) for at, rate in rates if at >= now - window_s]
    if len(inside) < 10 or inside[0][0] > now - 0.9 * window_s:
        return None
    times, values = [at for at, _ in inside], [rate for _, rate in inside]
    slope, intercept = statistics.linear_regression(times, values)
    scatter = math.sqrt(sum((rate - intercept - slope * at) ** 2 for at, rate in inside) / (len(inside) - 2))
    start = intercept + slope * (now - window_s)
    fall = -slope * window_s
    if start <= 0 or fall < FALLING_DROP * start or fall < FALLING_SIGNAL * scatter:
        return None
    return f"load falling: down {fall / start:.0%} over {window_s:.0f}s"


def _growth(
    rates: tuple[tuple[float, float], ...],
    horizon_s: float,
    quantile: float,
    min_windows: int = 0,
    min_episodes: int = 1,
) -> float:
    """How much the rate grew within `horizon_s`, at `quantile` of the history (at least 1).

    New capacity takes a cold start to arrive; sizing for the growth seen before keeps bursty
    services within their objective and costs steady ones nothing. With `min_windows`, only a
    history spanning that many horizons counts; with `min_episodes`, only growth seen in that
    many episodes more than a horizon apart. Without them, in a history not much longer than
    that, one surge can fill the quantile (its windows are sampled more often, as the routers
    ask for decisions): in the sandbox demo it sized for 2.9x the falling rate just after the
    only surge had ended, a replica more for nothing.
    """
    if len(rates) < 20 or rates[-1][0] - rates[0][0] < min_windows * horizon_s:
        return 1.0
    times = [t for t, _ in rates]
    grown: list[tuple[float, float]] = []  # (ratio, when)
    ahead = 0
    for index, (time, rate) in enumerate(rates):
        ahead = max(ahead, index + 1)
        while ahead < len(rates) and times[ahead] < time + horizon_s:
            ahead += 1
        if ahead >= len(rates):
            break
        if rate > 0:
            grown.append((max(r for _, r in rates[index + 1 : ahead + 1]) / rate, time))
    if len(grown) < 10:
        return 1.0
    grown.sort(reverse=True)
    at_quantile = grown[len(grown) - 1 - min(len(grown) - 1, int(quantile * len(grown)))][0]
    # From the quantile down, the first growth reached in `min_episodes` episodes apart.
    seen: list[float] = []
    episodes = 0
    for index, (ratio, when) in enumerate(grown):
        position = bisect.bisect(seen, when)
        before = seen[position - 1] if position > 0 else None
        after = seen[position] if position < len(seen) else None
        joins_before = before is not None and when - before <= horizon_s
        joins_after = after is not None and after - when <= horizon_s
        # Both neighbours joined were one episode already when no more than a horizon apart.
        within_one = (
            joins_before
            and joins_after
            and before is not None
            and after is not None
            and after - before <= horizon_s
        )
        episodes += 1 - joins_before - joins_after + within_one
        seen.insert(position, when)
        tied = index + 1 < len(grown) and grown[index + 1][0] == ratio
        if ratio <= at_quantile and episodes >= min_episodes and not tied:
            return max(1.0, ratio)
    return 1.0


class LatencyAutoscaler:
    """Holds a latency percentile under a target with as few replicas as the model allows."""

    name = "latency"

    def __init__(self, settings: AutoscalerSettings) -> None:
        self.settings = settings

    def service_time(self, state: AutoscalerState) -> ServiceTime | None:
        """The primary model's tau(b) as fitted so far (None before any execution time)."""
        return _fit_service_time(state.service_samples, self.settings.max_batch, state.per_item_ms)[0]

    def decide(
        self,
        observation: Observation,
        state: AutoscalerState,
        now: float,
        current: int,
        bridge: float = 1.0,
        standing: StandingMix = NO_STANDING_MIX,
    ) -> tuple[Decision, AutoscalerState]:
        """One decision at time `now` (seconds) given `current` desired replicas, in stages:
        learn, size for the expected rate, panic, stabilize and step, clamp. `standing` is the
        share a faster variant serves all the time (policy.variants.standing_mix): the fleet is
        sized, and the model's error learnt, for that mix, while the variants serve it. `bridge`
        is how many times what they carry with it (alone, without one) faster variants let the
        ready replicas carry until new capacity arrives (policy.variants.bridge); 1 without
        variants."""
        s = self.settings
        if observation.variant_share < standing.share / 2:
            # The variants do not serve their standing share (their servers down, or no request
            # yet): the model alone is what serves, and nothing says what they would bridge.
            standing, bridge = NO_STANDING_MIX, 1.0
        # Before anything else: spot may take a replica while metrics are missing.
        state = self._note_spot_loss(observation, state, now, current)
        metrics_fresh = observation.usable and observation.sample_age_s <= s.stale_after_s
        state = replace(state, rates_apart=_rates_apart(observation, state, now, metrics_fresh, standing))
        if not metrics_fresh:
            return self._hold_without_metrics(observation, current), state
        assert observation.arrival_rate_rps is not None
        observed = observation.latency_ms if observation.latency_ms is not None else 0.0
        if observation.latency_ms is None:
            observation = replace(observation, latency_ms=0.0)  # idle: nothing waited
        state, service, phase = self._learn(observation, state, now, current, standing)
        surge = _surge(observation)
        sizing = self._size(observation, state, now, service, surge, current, bridge, standing)
        state = replace(state, sized_for_rps=sizing.present_rate)
        panic = self._panics(observation, phase, current)
        trend_held = None
        if sizing.up > max(current, sizing.up_untrended) and self._scale_down_stands(
            observation, state, now, surge
        ):
            trend_held = (
                f"trend to {sizing.expected_rate:.0f} req/s not followed: "
                f"scaled down {now - (state.last_change_s or now):.0f}s ago"
            )
            sizing = replace(sizing, up=sizing.up_untrended, expected_rate=sizing.untrended_rate)
        wanted_up = self._wanted_up(observation, sizing, panic)
        # What is asked for now (panic included) is held for the whole stabilization window;
        # what a surge asked for, only until the drop settles when a proven period forecasts
        # no surge for a while (see _quiet).
        recommendation = max(sizing.down, wanted_up)
        quiet = self._quiet(state, now, sizing.present_rate)
        # A falling load's highest need of the window is behind it: hold only what settles.
        falling = (
            None
            if self._changed_within_window(state, now, 1)
            else load_falling(state.rates, now, s.stabilization_s)
        )
        held_s = s.stabilization_s
        if quiet is not None or falling is not None:
            held_s = min(s.settle_s, s.stabilization_s)  # never longer than the window itself
        recent = [r for t, r in state.recommendations if t >= now - held_s] + [recommendation]
        state = replace(state, recommendations=(*state.recommendations, (now, recommendation)))
        # Right after a change the metrics still mix old and new counts: while the percentile is
        # within the objective, wait for them to settle rather than trust the model alone.
        # (The routers' counts are fresh: a surge they show is not a mix of old and new.)
        # The spare for a loss since that change reads the pods, not the metrics: it is not held.
        spare_unheld = False
        if not phase.settled and observed <= s.up_threshold * s.target_ms and not panic and surge is None:
            lost = state.spot_lost_s
            spare_unheld = (
                sizing.spare is not None and lost is not None and lost > (state.last_change_s or 0.0)
            )
            wanted_up = min(wanted_up, current + (1 if spare_unheld else 0))
        desired, verdict = self._stabilize(state, now, current, wanted_up, max(recent))
        if observation.partial is not None and desired < current:
            desired, verdict = current, Verdict.HOLD  # the replicas not measured may be busy
        if verdict is Verdict.SCALE_UP and panic and wanted_up > sizing.up:
            verdict = Verdict.PANIC
        clamped, limited, bound = self._clamp(desired, sizing.up)
        if clamped != current:
            state = self._record_change(state, now, sizing.present_rate, up=clamped > current)
        decision = Decision(
            desired=clamped,
            current=current,
            verdict=verdict,
            target_ms=s.target_ms,
            percentile=s.percentile,
            observed_ms=observed,
            rate_rps=observation.arrival_rate_rps,
            model_replicas=sizing.up,
            predicted_ms=sizing.predicted_ms,
            limited=limited,
            bound=bound,
            stabilization_s=s.stabilization_s,
            partial=observation.partial,
            surge=surge.describe() if surge is not None and sizing.up > current else None,
            forecast=quiet if quiet is not None and clamped < current else sizing.forecast,
            falling=falling if falling is not None and quiet is None and clamped < current else None,
            headroom=sizing.headroom if clamped > sizing.up else None,
            spare=sizing.spare if (clamped >= sizing.up or spare_unheld) and clamped != current else None,
            trend_held=trend_held if clamped <= current else None,
            beyond_present=sizing.beyond_present() if clamped > current and sizing.up > current else None,
            feedback_paused=_feedback_paused(state),
            standing=(
                standing.describe()
                if standing.share > 0 and service is not None and clamped != current
                else None
            ),
        )
        return decision, state

    def _scale_down_stands(
        self, observation: Observation, state: AutoscalerState, now: float, surge: RouterSignal | None
    ) -> bool:
        """Whether the last change was a scale-down within the stabilization window that the
        present does not contradict: the percentile within the objective, and the routers'
        counts fresh and showing no surge. Then the metrics' trend alone does not undo it (see
        the module's step 5): the routers' change-point test is the surer sign of a surge."""
        s = self.settings
        return (
            self._changed_within_window(state, now, -1)
            and (observation.latency_ms or 0.0) <= s.up_threshold * s.target_ms
            and _fresh_router(observation) is not None
            and surge is None
        )

    def _quiet(self, state: AutoscalerState, now: float, present_rps: float) -> str | None:
        """Why recommendations need be held only until they settle: a proven period forecasts
        no surge over a stabilization window and the lead of the next provisioning (so a
        scale-down now is not undone within it), none is here, and the last scale-up is a
        window old; else None.

        The stabilization window guards against scaling down into a surge that comes back;
        with the period proven, the history says when the next one comes, and the capacity
        held for the last one (a third of the cycle, for a 15-minute cron) can go once the
        drop has settled.
        """
        s = self.settings
        recurrence = state.rate_peaks.recurrence
        if not s.forecast or recurrence is None or recurrence.surges_to(present_rps):
            return None
        if self._changed_within_window(state, now, 1):
            return None
        horizon_s = s.stabilization_s + s.cold_start_s + 3 * BUCKET_S
        if not quiet(state.rate_peaks, now, horizon_s):
            return None
        return f"no surge forecast within {horizon_s:.0f}s, {recurrence.describe()}"

    def _changed_within_window(self, state: AutoscalerState, now: float, direction: int) -> bool:
        """Whether the last change went in `direction` (1 up, -1 down) within the stabilization
        window: a change the other way now would reverse it (a flap)."""
        return (
            state.last_direction == direction
            and state.last_change_s is not None
            and now - state.last_change_s <= self.settings.stabilization_s
        )

    def _hold_without_metrics(self, observation: Observation, current: int) -> Decision:
        s = self.settings
        return Decision(
            desired=min(max(current, s.min_replicas), s.max_replicas),
            current=current,
            verdict=Verdict.METRICS_MISSING,
            target_ms=s.target_ms,
            percentile=s.percentile,
            missing=observation.missing or f"metrics {observation.sample_age_s:.0f}s old",
        )

    def _learn(
        self,
        observation: Observation,
        state: AutoscalerState,
        now: float,
        current: int,
        standing: StandingMix = NO_STANDING_MIX,
    ) -> tuple[AutoscalerState, ServiceTime | None, _Phase]:
        """Remember the observation, fit the primary's tau(b), and blend in the model's error
        (against the standing mix's prediction) when steady."""
        s = self.settings
        assert observation.latency_ms is not None
        state = self._remember(observation, state, now)
        service, alpha = _fit_service_time(state.service_samples, s.max_batch, state.per_item_ms)
        state = replace(state, per_item_ms=alpha)
        if observation.ready_replicas != state.ready_seen:
            changed = now if state.ready_seen is not None else None
            state = replace(state, ready_seen=observation.ready_replicas, ready_changed_s=changed)
        phase = _Phase(
            settled=state.last_change_s is None or now - state.last_change_s >= s.settle_s,
            # Capacity that just became ready has not shown its effect in the metrics window yet.
            serving_settled=state.ready_changed_s is None or now - state.ready_changed_s >= s.settle_s,
        )
        # Learn only from steady states: not while a change settles, not from an overload (a
        # backlog says nothing about how the model fits the load), and not while faster variants
        # served other than the standing share the model predicts for (_served_as_sized), nor
        # while the routers' count says the metrics' rate is not the load (_rate_misleads).
        steady = (
            phase.settled
            and phase.serving_settled
            and observation.ready_replicas == current
            and observation.latency_ms <= s.panic_ratio * s.target_ms
            and _served_as_sized(observation, standing)
            and not _rate_misleads(observation)
        )
        if service is not None and steady:
            state = self._update_feedback(observation, state, service, now, standing)
        return state, service, phase

    def _panics(self, observation: Observation, phase: _Phase, current: int) -> bool:
        """Far over target once the serving replicas have shown their effect, with no capacity
        still on its way."""
        s = self.settings
        assert observation.latency_ms is not None
        return (
            phase.settled
            and phase.serving_settled
            and observation.latency_ms > s.panic_ratio * s.target_ms
            and observation.ready_replicas > 0
            and observation.ready_replicas >= current
        )

    def _wanted_up(self, observation: Observation, sizing: _Sizing, panic: bool) -> int:
        """The model's count; in a panic where the model says the serving replicas should cope
        (so the model is wrong here), at least in proportion to the overshoot. When the model
        does explain the overshoot (a backlog, too few replicas) it sizes alone."""
        s = self.settings
        assert observation.arrival_rate_rps is not None and observation.latency_ms is not None
        backlog = (observation.pending_requests or 0.0) > observation.arrival_rate_rps * s.target_ms / 1000.0
        if panic and not backlog and sizing.explains_at(observation.ready_replicas) <= s.target_ms:
            overshoot = min(observation.latency_ms / s.target_ms, s.panic_max_factor)
            return max(sizing.up, math.ceil(observation.ready_replicas * overshoot))
        return sizing.up

    def _stabilize(
        self, state: AutoscalerState, now: float, current: int, wanted_up: int, window_need: int
    ) -> tuple[int, Verdict]:
        """Up at once; down only to the window's highest need, by at most maxStepPercent, and
        only once the window holds that much history."""
        s = self.settings
        if wanted_up > current:
            return wanted_up, Verdict.SCALE_UP
        filled = state.first_seen_s is not None and state.first_seen_s <= now - s.stabilization_s
        if window_need < current and filled:
            step = max(1, math.floor(current * s.max_step_down_percent / 100))
            return max(window_need, current - step), Verdict.SCALE_DOWN
        if window_need < current:
            return current, Verdict.WAIT_FOR_HISTORY
        return current, Verdict.HOLD

    def _clamp(
        self, desired: int, model_replicas: int
    ) -> tuple[int, Literal["max", "min"] | None, int | None]:
        """min..max, and which bound (if any) stopped the decision or the model's wish."""
        s = self.settings
        clamped = min(max(desired, s.min_replicas), s.max_replicas)
        if clamped != desired or (model_replicas > s.max_replicas and clamped == s.max_replicas):
            if clamped == s.max_replicas:
                return clamped, "max", s.max_replicas
            return clamped, "min", s.min_replicas
        return clamped, None, None

    def _record_change(
        self, state: AutoscalerState, now: float, present_rps: float, *, up: bool
    ) -> AutoscalerState:
        """Remember the change; a scale-up that undoes a scale-down within the window because
        the load rose past the margin the scale-down kept is a reversal, which keeps headroom
        for surges for the next hour (see `_size`). (At a rate the margin covers, the scale-up
        corrects the model, not a surge.)"""
        s = self.settings
        reversed_down = (
            up
            and self._changed_within_window(state, now, -1)
            and (state.last_down_rps is None or present_rps > state.last_down_rps * (1 + s.down_rate_margin))
        )
        reversals = state.reversals
        if reversed_down:
            reversals = (*(r for r in state.reversals if r >= now - s.history_s), now)
        return replace(
            state,
            last_change_s=now,
            last_direction=1 if up else -1,
            last_down_rps=state.last_down_rps if up else present_rps,
            reversals=reversals,
        )

    def _remember(self, observation: Observation, state: AutoscalerState, now: float) -> AutoscalerState:
        s = self.settings
        horizon = now - max(s.stabilization_s, s.trend_window_s)
        assert observation.arrival_rate_rps is not None
        rates = tuple((t, r) for t, r in state.rates if t >= now - s.history_s)
        if len(rates) >= 2 and rates[-1][0] - rates[-2][0] < RATE_SPACING_S:
            # Decisions come faster in a surge (the routers ask for them): the history keeps
            # one rate per few seconds, and the newest, so a surge does not fill the growth
            # statistics. (The newest is dropped once a newer one comes while it is too close.)
            rates = rates[:-1]
        samples = state.service_samples
        if observation.batch_profile:
            # Execution time per batch size (Triton's batch statistics): tau(b) point by point.
            samples = (*samples, *((size, ms) for size, ms, _ in observation.batch_profile))[-60:]
        elif observation.mean_compute_ms is not None and observation.arrival_rate_rps > 0:
            batch = observation.average_batch if observation.average_batch is not None else 1.0
            samples = (*samples, (max(batch, 1.0), observation.mean_compute_ms))[-60:]
        return replace(
            state,
            first_seen_s=now if state.first_seen_s is None else state.first_seen_s,
            rates=(*rates, (now, observation.arrival_rate_rps)),
            rate_peaks=remember_rate(state.rate_peaks, now, observation.arrival_rate_rps)
            if s.forecast
            else state.rate_peaks,
            service_samples=samples,
            recommendations=tuple((t, r) for t, r in state.recommendations if t >= horizon),
        )

    def _note_spot_loss(
        self, observation: Observation, state: AutoscalerState, now: float, current: int
    ) -> AutoscalerState:
        """Remember when spot took replicas before anything stood in for them: the replicas
        ready on spot fell and the ready replicas are short of the `current` desired count (a
        reclaim evicted at once, a replica that stopped being ready). A scale-down of ours
        leaves nothing short of the count it set, nor do spot pods drained once on-demand
        stand-ins are ready (the fallback saw the notice in time): they need no spare."""
        seen = observation.spot_ready_replicas
        if seen is None:
            return state
        lost = state.spot_lost_s
        short = observation.ready_replicas < current
        if state.spot_ready_seen is not None and seen < state.spot_ready_seen and short:
            lost = now
        return replace(state, spot_ready_seen=seen, spot_lost_s=lost)

    def _size(
        self,
        observation: Observation,
        state: AutoscalerState,
        now: float,
        service: ServiceTime | None,
        surge: RouterSignal | None,
        current: int,
        bridge: float,
        standing: StandingMix = NO_STANDING_MIX,
    ) -> _Sizing:
        s = self.settings
        assert observation.arrival_rate_rps is not None and observation.latency_ms is not None
        router = _fresh_router(observation)
        # For a window's length after traffic starts from none, the metrics' rate rises as its
        # window fills: a ramp that is not the load's. The routers see the level at once, so
        # with them fresh the present is theirs and that ramp is not carried forward (it asked
        # for capacity that went again a minute later at every service's first traffic).
        filling = router is not None and _metrics_window_filling(state.rates, now, observation, s)
        # The present rate: the metrics' window, or the routers' rate since a surge began when
        # that is higher (they see it seconds after it starts, the metrics tens of seconds).
        latest = max(
            observation.arrival_rate_rps,
            surge.present_rps if surge is not None else 0.0,
            router.present_rps if router is not None and filling else 0.0,
        )
        # In a surge the routers' ramp is carried forward no further than it has been seen
        # rising; the metrics' own trend still counts, so the routers never ask for less.
        # Otherwise the metrics' rate is that of rate_age_s ago: their trend is carried over
        # that lag too (on a steady ramp a minute's window lags by half a minute and more).
        lag_s = observation.rate_age_s if surge is None else 0.0
        trend = latest if filling else _trend_rate(state.rates, now, s.cold_start_s + lag_s, s.trend_window_s)
        stepped = _stepped(router)
        if stepped is not None:
            # After a step the metrics' window fills with it: their rate climbs towards the new
            # level, a ramp that is not the load's. Carried forward it asked for capacity beyond
            # the step (flash-crowd: 1.63x the oracle's replica-hours in training, 1.49x with
            # this cap at the same attainment). The routers see the level and its own slope.
            reach = stepped.present_rps + stepped.slope_rps_per_s * min(s.cold_start_s, stepped.since_s)
            trend = min(trend, max(latest, reach))
        # The growth a surging history shows is from its troughs: carried from a surge's peak it
        # asked for a rate never seen (`recurring`, 2 h training runs: 3.5x a surge's 1,900 req/s,
        # 38 replicas where 12 carried it). It grows no further than the history's highest rate;
        # a surge beyond that is the routers' and the trend's to see.
        grown = latest * _growth(
            state.rates, s.cold_start_s, s.growth_quantile, GROWTH_MIN_WINDOWS, GROWTH_MIN_EPISODES
        )
        highest = max((rate for _, rate in state.rates), default=latest)
        untrended = max(
            min(grown, max(latest, highest)),
            latest
            + (surge.slope_rps_per_s * min(s.cold_start_s, surge.since_s) if surge is not None else 0.0),
        )
        ahead_s = s.cold_start_s + BUCKET_S
        recurring = forecast(state.rate_peaks, now, ahead_s) if s.forecast else None
        expected, forecast_note = self._with_forecast(max(trend, untrended), latest, state, recurring, bridge)
        untrended, _ = self._with_forecast(untrended, latest, state, recurring, bridge)
        if service is None:
            # No execution times (e.g. only overridden latency and rate queries): scale in
            # proportion to the observed latency, like a plain ratio controller.
            ratio = observation.latency_ms / (s.target_ms * s.up_threshold)
            base = max(observation.ready_replicas, 1)
            # Capped: a target of a few nanoseconds would make the ratio infinite.
            up = max(1, math.ceil(min(base * ratio, RATIO_REPLICAS_CAP)))
            down = max(1, math.ceil(min(base * ratio * (1 + s.down_rate_margin), RATIO_REPLICAS_CAP)))
            return _Sizing(
                latest,
                expected,
                up,
                max(up, down),
                math.nan,
                lambda replicas: math.inf,
                forecast_note,
                up_untrended=up,
                untrended_rate=expected,
            )

        def corrected_ms(replicas: int, rate: float) -> float:
            model = standing.latency_ms(replicas, rate, service, s.percentile)
            return correction_at(state, rate / replicas) * model

        most = s.max_replicas * 4
        limit = s.target_ms * s.up_threshold
        # The searches for the corrected model's count stay below this count when it meets the
        # limit (fewest_replicas): a correction learnt at a light load a replica (a cold start's
        # first requests) once failed four times maxReplicas, and the search asked for 25 where
        # the six serving met the objective at p95 45 ms of 100.
        serving = max(current, observation.ready_replicas)

        def fewest_corrected(rate: float) -> int:
            return fewest_replicas(lambda n: corrected_ms(n, rate) <= limit, most, serving)

        # A backlog must be drained: the queue now, plus what piles up until new capacity is
        # ready (arrivals beyond what the serving replicas can do, over a cold start), gone
        # within drain_s once it is there, at full batches (the most a replica can do).
        pending = observation.pending_requests or 0.0
        if router is not None:
            # In flight at the routers beyond what the ready replicas can be executing waits;
            # fresher than the metrics' pending count.
            executing = observation.ready_replicas * service.max_batch
            pending = max(pending, router.in_flight - executing)
        full_rps = 0.9 * service.capacity_rps() / standing.cost
        # Replicas already on their way arrive within a cold start, half of one on average.
        ready = observation.ready_replicas
        short_of_ready = max(0.0, latest - ready * full_rps * bridge)
        short_of_current = max(0.0, latest - max(current, ready) * full_rps * bridge)
        backlog = pending + (short_of_ready + short_of_current) * s.cold_start_s / 2
        draining = backlog > latest * s.target_ms / 1000.0

        def replicas_for(rate: float) -> int:
            replicas = fewest_corrected(rate)
            if draining:
                replicas = max(replicas, math.ceil((rate + backlog / s.drain_s) / full_rps))
            return replicas

        # A spare only while replicas serve on spot (stand-ins on on-demand are not reclaimed),
        # and only for history_s after spot took one: in a calm market it would cost a small
        # fleet a third or half of its replicas for nothing (training seeds: 49.3 % cheaper
        # than on-demand only at the real rates with this, 45.1 % with a spare always).
        lost = state.spot_lost_s
        recently_lost = lost is not None and now - lost <= s.history_s
        serving_on_spot = (observation.spot_ready_replicas or 0) > 0
        spot_from = s.spot_from_replicas if serving_on_spot and recently_lost else None
        objective_up = replicas_for(expected)
        up = with_spare(objective_up, spot_from)

        def beyond_present() -> str | None:
            """Why the count is above what the plain model wants at the present rate."""
            assert service is not None
            plain = fewest_replicas(
                lambda n: standing.latency_ms(n, latest, service, s.percentile) <= limit, most
            )
            for_present = fewest_corrected(latest)
            causes = []
            if for_present > plain:
                # One replica fewer met the plain model but not the latency learnt at its load.
                per_replica = latest / (for_present - 1)
                causes.append(
                    f"{plain} by the plain model; latency measured "
                    f"{correction_at(state, per_replica):.2f}x its prediction at {per_replica:.0f} req/s a replica"
                )
            if objective_up > for_present and expected > latest:
                causes.append(f"sized for {expected:.0f} req/s a cold start ahead")
            if objective_up > for_present and draining:
                causes.append(f"{backlog:.0f} queued, drained within {s.drain_s:g}s")
            return "; ".join(causes) or None

        spare_note = (
            f"one spare on spot, which took a replica {now - (lost or now):.0f}s ago: {objective_up} + 1"
            if up > objective_up
            else None
        )
        plain_margin = expected * (1 + s.down_rate_margin)
        margin, headroom_note = plain_margin, None
        last_reversal = max((when for when in state.reversals if when >= now - s.history_s), default=None)
        if last_reversal is not None:
            # This load has surged right after a scale-down before: keep room for such a surge.
            growth = _growth(state.rates, s.stabilization_s, s.surge_growth_quantile)
            margin = max(plain_margin, latest * growth)
            if margin > plain_margin:
                headroom_note = (
                    f"room kept for {growth:.1f}x growth for another {last_reversal + s.history_s - now:.0f}s: "
                    f"a scale-down was undone {now - last_reversal:.0f}s ago"
                )
        down = fewest_corrected(margin)
        if headroom_note is not None and down <= fewest_corrected(plain_margin):
            headroom_note = None  # the headroom costs no replica now
        return _Sizing(
            latest,
            expected,
            up,
            max(up, down),
            corrected_ms(min(up, most), expected),
            lambda replicas: corrected_ms(replicas, latest),
            forecast_note,
            headroom_note,
            spare_note,
            up_untrended=with_spare(replicas_for(untrended), spot_from),
            untrended_rate=untrended,
            beyond_present=beyond_present,
        )

    def _with_forecast(
        self, expected: float, latest: float, state: AutoscalerState, recurring: float | None, bridge: float
    ) -> tuple[float, str | None]:
        """The expected rate with what faster variants carry and the forecast rate a cold start
        and a bucket ahead (`recurring`) taken in, and the forecast's note when it set the rate."""
        s = self.settings
        # Faster variants multiply what the ready replicas carry by up to `bridge` until new
        # capacity arrives (policy.variants): the growth within a cold start is theirs to carry.
        expected = max(latest, expected / bridge)
        # A surge that recurs (a proven period) is provisioned a cold start (and a bucket of
        # timing slack) before it comes. While the present is within the forecast surge (as
        # close as the proof asked), its size is known: the ramp is not extrapolated past it. It
        # never sizes below the present, and a surge larger than forecast is met as any other.
        ahead_s = s.cold_start_s + BUCKET_S
        recurrence = state.rate_peaks.recurrence
        if recurring is None or recurrence is None:
            return expected, None
        if recurrence.surges_to(recurring) and latest <= recurring / MIN_COVERAGE:
            expected = max(recurring, latest)
        elif recurring > expected:
            expected = recurring
        if expected == recurring and recurrence.surges_to(recurring):
            return expected, f"forecast {recurring:.0f} req/s within {ahead_s:.0f}s, {recurrence.describe()}"
        return expected, None

    def _update_feedback(
        self,
        observation: Observation,
        state: AutoscalerState,
        service: ServiceTime,
        now: float,
        standing: StandingMix = NO_STANDING_MIX,
    ) -> AutoscalerState:
        """Blend in how far the model was off at the replicas that actually served."""
        s = self.settings
        assert observation.arrival_rate_rps is not None and observation.latency_ms is not None
        if observation.ready_replicas <= 0 or observation.arrival_rate_rps <= 0:
            return state
        predicted = standing.latency_ms(
            observation.ready_replicas, observation.arrival_rate_rps, service, s.percentile
        )
        if not math.isfinite(predicted) or predicted <= 0:
            return state
        low, high = s.feedback_bounds
        ratio = min(max(observation.latency_ms / predicted, low), high)
        smoothing = s.feedback_smoothing
        bucket = load_bucket(observation.arrival_rate_rps / observation.ready_replicas)
        known = {b: r for b, r, when in state.corrections if when >= now - s.history_s}
        known[bucket] = (1 - smoothing) * known[bucket] + smoothing * ratio if bucket in known else ratio
        return replace(
            state,
            corrections=tuple(
                (b, r, now if b == bucket else next(w for bb, _, w in state.corrections if bb == b))
                for b, r in sorted(known.items())
            ),
        )


def settings_from_spec(
    autoscaling: AutoscalingSpec,
    cold_start_s: float = DEFAULT_COLD_START_S,
    max_batch: int = DEFAULT_MAX_BATCH,
    capacity: CapacitySpec | None = None,
) -> AutoscalerSettings:
    """The policy's settings for one InferenceService's autoscaling spec, with the cold start
    and batch limit learnt from the service itself (policy.service_facts); the service-time fit
    raises the batch limit to what it sees. With `capacity`, the count from which replicas run
    on spot, where a spare is kept for an hour after spot took one (with_spare)."""
    return AutoscalerSettings(
        target_ms=autoscaling.latency.target_milliseconds,
        percentile=autoscaling.latency.percentile,
        min_replicas=autoscaling.min_replicas,
        max_replicas=autoscaling.max_replicas,
        stabilization_s=float(autoscaling.scale_down.stabilization_seconds),
        max_step_down_percent=autoscaling.scale_down.max_step_percent,
        cold_start_s=cold_start_s + autoscaling.period_seconds,
        settle_s=60.0 + autoscaling.period_seconds,
        max_batch=max_batch,
        spot_from_replicas=fewest_on_spot(capacity, autoscaling.max_replicas)
        if capacity is not None
        else None,
    )
