"""Forecasts of recurring surges from a service's own history (pure).

A load that surges at the same point of a cycle (a cron job every 15 minutes, an hourly batch, a
daily peak) can be provisioned before it arrives, where a reactive autoscaler sees it only as it
comes and its capacity a cold start later. The history is the peak rate seen in each BUCKET_S;
a period is used only when it is proven on the recent past: forecasting the last whole cycle
from the cycles before it must have covered that cycle's surges and cost little where none came.
The forecast is the least that each of the last CYCLES cycles saw at the same point (a surge
that recurs every time), so a one-off burst in one cycle forecasts nothing; it only ever raises
the rate a decision sizes for, never lowers it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

BUCKET_S = 30.0
PERIODS_S = (300, 600, 900, 1200, 1800, 3600, 7200, 86400)
"""The cycles people schedule by (cron steps, hours, days); a forecast says which recurred."""
CYCLES = 2
"""A forecast comes from what the last CYCLES cycles saw at the same point..."""
PROOF_CYCLES = 2
"""... and a period is proven when it forecast each of the last PROOF_CYCLES cycles from the
cycles before it (surges at random times rarely line up over four cycles)."""
TOLERANCE_BUCKETS = 1
"""A recurring surge may start a bucket earlier or later from one cycle to the next."""
SURGE_RATIO = 1.3
"""A bucket is a surge when its peak is this much over the cycle's base (its 20th percentile)."""
MIN_COVERAGE = 0.8
"""Proof: the forecast carried at least 80 % of the peak in this share of the surge buckets..."""
MAX_EXCESS = 0.1
"""... and what it forecast beyond what came (within the tolerance) is at most 10 % of all that
came."""
PROVE_EVERY = 10
"""Buckets between proofs (5 minutes)."""
HISTORY_BUCKETS = int((CYCLES + PROOF_CYCLES) * max(PERIODS_S) / BUCKET_S) + 2 * TOLERANCE_BUCKETS + 2


@dataclass(frozen=True)
class Recurrence:
    """A period proven on the last whole cycle."""

    period_s: int
    base_rps: float  # the last cycle's base (its 20th percentile): a surge is 1.3x over it
    coverage: float  # share of the last cycle's surge buckets the forecast carried
    excess: float  # forecast beyond what came, relative to all that came

    def surges_to(self, rate_rps: float) -> bool:
        return rate_rps > SURGE_RATIO * self.base_rps

    def describe(self) -> str:
        period = self.period_s
        every = f"{period // 3600} h" if period % 3600 == 0 else f"{period // 60} min"
        return f"recurs every {every}"


@dataclass(frozen=True)
class RateHistory:
    """Peak rate per bucket (NaN where nothing was seen), the newest last, and the period
    proven when the last bucket completed."""

    first_bucket: int = 0
    peaks: tuple[float, ...] = ()
    recurrence: Recurrence | None = None
    checked_bucket: int = -1  # the bucket count at which `recurrence` was last worked out

    def peak(self, bucket: int) -> float:
        index = bucket - self.first_bucket
        return self.peaks[index] if 0 <= index < len(self.peaks) else math.nan


def remember(history: RateHistory, now: float, rate_rps: float) -> RateHistory:
    """The history with `rate_rps` seen at `now`; the period is re-proven every PROVE_EVERY
    buckets (a proof reads days of history: a few milliseconds)."""
    bucket = int(now // BUCKET_S)
    peaks = history.peaks
    first = history.first_bucket
    if not peaks:
        peaks, first = (rate_rps,), bucket
    else:
        last = first + len(peaks) - 1
        if bucket < last:
            return history  # the clock went back: nothing to add
        if bucket == last:
            previous = peaks[-1]
            peaks = (*peaks[:-1], rate_rps if math.isnan(previous) else max(previous, rate_rps))
        else:
            gap = min(bucket - last - 1, HISTORY_BUCKETS)
            peaks = (*peaks, *([math.nan] * gap), rate_rps)
            if bucket - last - 1 > gap:
                peaks, first = (rate_rps,), bucket
    if len(peaks) > HISTORY_BUCKETS:
        drop = len(peaks) - HISTORY_BUCKETS
        peaks, first = peaks[drop:], first + drop
    history = replace(history, first_bucket=first, peaks=peaks)
    if bucket >= history.checked_bucket + PROVE_EVERY or bucket < history.checked_bucket:
        # Only whole buckets prove a period: the one in progress is left out.
        history = replace(history, recurrence=prove(history, bucket - 1), checked_bucket=bucket)
    return history


def _near_peaks(peaks: tuple[float, ...]) -> list[float]:
    """Each bucket's peak within the tolerance either side (NaN where none was seen)."""
    near = []
    for index in range(len(peaks)):
        seen = [
            p
            for p in peaks[max(0, index - TOLERANCE_BUCKETS) : index + TOLERANCE_BUCKETS + 1]
            if not math.isnan(p)
        ]
        near.append(max(seen) if seen else math.nan)
    return near


def _recurring(earlier: list[float], base_rps: float) -> float:
    """What the last CYCLES cycles saw at one point of the cycle (each within the tolerance):
    the highest of them where every one surged (it recurs; its size varies from cycle to
    cycle), else the least (a burst in one cycle only forecasts nothing); NaN if one was not
    seen."""
    if any(math.isnan(p) for p in earlier):
        return math.nan
    return max(earlier) if min(earlier) > SURGE_RATIO * base_rps else min(earlier)


def backtest(history: RateHistory, last_bucket: int, period_s: int, near: list[float]) -> Recurrence | None:
    """Forecast the PROOF_CYCLES cycles that ended at `last_bucket`, each point from the CYCLES
    cycles before it; the period if that forecast carried their surges and cost little
    elsewhere. `near` is `_near_peaks(history.peaks)`."""
    period = int(period_s // BUCKET_S)
    end = last_bucket - history.first_bucket + 1  # index past the last whole bucket
    start = end - PROOF_CYCLES * period
    if start - CYCLES * period - TOLERANCE_BUCKETS < 0 or end > len(near):
        return None  # not enough history to prove it
    peaks = history.peaks
    seen = sorted(p for p in peaks[start:end] if not math.isnan(p))
    if len(seen) < 0.8 * (end - start):
        return None
    base = seen[len(seen) // 5]
    if base <= 0:
        return None
    came = beyond = 0.0
    surges = carried = 0
    for index in range(start, end):
        actual = peaks[index]
        forecast = _recurring([near[index - c * period] for c in range(1, CYCLES + 1)], base)
        if math.isnan(actual) or math.isnan(forecast):
            continue
        came += actual
        beyond += max(0.0, forecast - near[index])  # what it forecast beyond what came, near
        if actual > SURGE_RATIO * base:
            surges += 1
            carried += forecast >= 0.8 * actual
    if surges == 0:
        return None  # nothing surges: a forecast would add nothing
    coverage, excess = carried / surges, beyond / max(came, 1e-9)
    if coverage < MIN_COVERAGE or excess > MAX_EXCESS:
        return None
    return Recurrence(period_s=period_s, base_rps=base, coverage=coverage, excess=excess)


def prove(history: RateHistory, last_bucket: int) -> Recurrence | None:
    """The period proven on the last cycles, the shortest of those that cover them best (a
    multiple of the true period also passes, with older information)."""
    near = _near_peaks(history.peaks)
    proven = [r for p in PERIODS_S if (r := backtest(history, last_bucket, p, near)) is not None]
    if not proven:
        return None
    return min(proven, key=lambda r: (-r.coverage, r.excess, r.period_s))


def _earlier(history: RateHistory, bucket: int, period: int) -> list[float]:
    """The peak each of the last CYCLES cycles saw at `bucket`'s point of the cycle, within the
    tolerance (NaN for a cycle not seen there)."""
    earlier = []
    for cycle in range(1, CYCLES + 1):
        at = bucket - cycle * period
        seen = [
            p
            for b in range(at - TOLERANCE_BUCKETS, at + TOLERANCE_BUCKETS + 1)
            if not math.isnan(p := history.peak(b))
        ]
        earlier.append(max(seen) if seen else math.nan)
    return earlier


def _buckets(now: float, ahead_s: float) -> range:
    return range(int(now // BUCKET_S), int((now + ahead_s) // BUCKET_S) + 1)


def forecast(history: RateHistory, now: float, ahead_s: float) -> float | None:
    """The peak rate the proven period expects from now to `ahead_s` ahead, or None."""
    recurrence = history.recurrence
    if recurrence is None:
        return None
    period = int(recurrence.period_s // BUCKET_S)
    peaks = [
        _recurring(_earlier(history, bucket, period), recurrence.base_rps)
        for bucket in _buckets(now, ahead_s)
    ]
    peaks = [p for p in peaks if not math.isnan(p)]
    return max(peaks) if peaks else None


def quiet(history: RateHistory, now: float, ahead_s: float) -> bool:
    """Whether the proven period says no surge comes from now to `ahead_s` ahead: none of the
    last CYCLES cycles surged there (not even once), and every one of them was seen."""
    recurrence = history.recurrence
    if recurrence is None:
        return False
    period = int(recurrence.period_s // BUCKET_S)
    for bucket in _buckets(now, ahead_s):
        earlier = _earlier(history, bucket, period)
        if any(math.isnan(p) or recurrence.surges_to(p) for p in earlier):
            return False
    return True
