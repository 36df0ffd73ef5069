"""The router's fresh view of the load, and a change-point test on it.

Every router counts the requests it routes (a cumulative counter) and the requests in flight at
the replicas or in its own queue. The operator reads both from every router pod every
ROUTER_PERIOD_S (clients.router), and the simulator samples its own requests the same way
(sim.engine): a sample is the sum over the routers at one moment.

Metrics through Prometheus arrive a scrape and a lag late and averaged over a window, so a surge
shows up 20-50 s after it starts. The counts between router samples show it within seconds, but
counts over 2 s are noisy. So the rate is not taken over a fixed window: a likelihood-ratio test
for one change in a Poisson rate finds where the rate last changed within the history, and the
rate is estimated from the requests since then (or over the whole history when the test finds
no change). Right after a step the estimate comes from a few seconds of counts; on a steady load
it comes from a minute of them.

Pure: samples and times come in as arguments.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

from tritonscale.api.observation import RouterReading, RouterSample, RouterSignal

ROUTER_PERIOD_S = 2.0
"""How often the operator reads the routers (and the simulator samples them)."""
HISTORY_S = 60.0
"""How far back the change-point test looks."""
CHANGE_LOG_LIKELIHOOD = 12.0
"""Log-likelihood ratio a change must reach: 2x that is chi-squared with one degree of freedom
under no change, p = 1e-6 for one candidate, at most 3e-5 over the thirty candidates of a
minute's history (Bonferroni; they overlap, so less). Measured on steady Poisson loads: no
false alarm in 21,000 one-minute histories at 20, 500 and 5,000 req/s (tests/unit/test_surge.py
draws 300 of them each run)."""
MIN_SEGMENT_S = 3.0
"""A change needs this much time after it: one 2 s count is too little to size on."""
RETRIGGER_RATIO = 1.1
"""A surge calls for a fresh decision when the rate since the change is this much above the rate
the last decision sized for; and it counts only this much above the metrics' rate (the routers
also count calls that are not inferences, e.g. readiness and metadata)."""
STALE_S = 10.0
"""Router samples older than this say nothing about the present (the job stalled or stopped)."""


def combined_sample(
    at: float,
    readings: Mapping[str, RouterReading],
    previous: Mapping[str, RouterReading],
    last: RouterSample | None,
) -> RouterSample:
    """All routers as one sample: the count carried forward from `last` by what each router read
    both times routed in between (one whose counter went back restarted: it counts from zero),
    so routers coming and going never show as a jump in the rate; in flight summed now."""
    requests = last.requests if last is not None else 0.0
    for pod, reading in readings.items():
        before = previous.get(pod)
        if before is not None:
            routed = reading.routed - before.routed
            requests += routed if routed >= 0 else reading.routed
    return RouterSample(at=at, requests=requests, in_flight=sum(r.in_flight for r in readings.values()))


def remember(
    samples: Sequence[RouterSample], sample: RouterSample, history_s: float = HISTORY_S
) -> tuple[RouterSample, ...]:
    """The history with `sample` added and what is older than `history_s` (keeping one sample
    before it, the start of the oldest count) dropped. A counter that went backwards (a router
    restarted, or the set of routers changed) starts the history afresh."""
    if samples and (sample.requests < samples[-1].requests or sample.at <= samples[-1].at):
        return (sample,)
    kept = [*samples, sample]
    first = 0
    while first + 1 < len(kept) and kept[first + 1].at <= sample.at - history_s:
        first += 1
    return tuple(kept[first:])


def _log_likelihood(count: float, duration: float, rate: float) -> float:
    """Poisson log-likelihood of `count` in `duration` at `rate`, without the terms that do not
    depend on the rate."""
    if count <= 0:
        return -rate * duration
    return count * math.log(rate) - rate * duration


def router_signal(samples: Sequence[RouterSample], now: float) -> RouterSignal | None:
    """The present rate from the router samples, with the change-point test; None with fewer
    than two samples."""
    if len(samples) < 2:
        return None
    counts = [b.requests - a.requests for a, b in itertools.pairwise(samples)]
    durations = [b.at - a.at for a, b in itertools.pairwise(samples)]
    total_count, total_time = sum(counts), sum(durations)
    newest = samples[-1]
    whole = RouterSignal(
        rate_rps=total_count / total_time,
        since_s=total_time,
        present_rps=total_count / total_time,
        slope_rps_per_s=0.0,
        previous_rps=None,
        in_flight=newest.in_flight,
        age_s=now - newest.at,
    )
    if total_count <= 0:
        return whole
    pooled = _log_likelihood(total_count, total_time, total_count / total_time)
    best: tuple[float, float, float, float, float] | None = None  # (gain, after n, t, before n, t)
    after_count = after_time = 0.0
    for index in range(len(counts) - 1, 0, -1):
        after_count += counts[index]
        after_time += durations[index]
        if after_time < MIN_SEGMENT_S:
            continue
        before_count, before_time = total_count - after_count, total_time - after_time
        after_rate = max(after_count / after_time, 1e-9)
        before_rate = max(before_count / before_time, 1e-9)
        gain = (
            _log_likelihood(after_count, after_time, after_rate)
            + _log_likelihood(before_count, before_time, before_rate)
            - pooled
        )
        if best is None or gain > best[0]:
            best = (gain, after_count, after_time, before_count, before_time)
    if best is None or best[0] < CHANGE_LOG_LIKELIHOOD:
        return whole
    _, after_count, after_time, before_count, before_time = best
    rate = after_count / after_time
    present, slope = _trend(samples, after_time, rate)
    return RouterSignal(
        rate_rps=rate,
        since_s=after_time,
        present_rps=present,
        slope_rps_per_s=slope,
        previous_rps=before_count / before_time,
        in_flight=newest.in_flight,
        age_s=now - newest.at,
    )


def _trend(samples: Sequence[RouterSample], segment_s: float, rate: float) -> tuple[float, float]:
    """(rate at the newest sample, slope) of a weighted least-squares line through the interval
    rates of the last `segment_s`; the mean `rate` and no slope unless the slope is over three
    standard errors of Poisson counting noise (a ramp, not a level)."""
    newest = samples[-1].at
    points = [
        ((a.at + b.at) / 2, (b.requests - a.requests) / (b.at - a.at), b.at - a.at)
        for a, b in itertools.pairwise(samples)
        if a.at >= newest - segment_s - 1e-9
    ]
    if len(points) < 3:
        return rate, 0.0
    weight = sum(w for _, _, w in points)
    mean_t = sum(t * w for t, _, w in points) / weight
    spread = sum(w * (t - mean_t) ** 2 for t, _, w in points)
    if spread <= 0:
        return rate, 0.0
    slope = sum(w * (t - mean_t) * r for t, r, w in points) / spread
    # Poisson counts: the variance of a rate over d seconds is rate/d, so with weights d the
    # slope's variance is rate/spread.
    if slope <= 3 * math.sqrt(max(rate, 1.0) / spread):
        return rate, 0.0
    return max(rate, rate + slope * (newest - mean_t)), slope


def wants_decision(signal: RouterSignal | None, sized_for_rps: float | None) -> bool:
    """Whether the router shows a surge the last decision did not size for: decide now rather
    than at the next period."""
    if signal is None or not signal.surged:
        return False
    return sized_for_rps is None or signal.present_rps > RETRIGGER_RATIO * sized_for_rps
