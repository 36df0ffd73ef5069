"""Offered load over time for open-loop benchmarks, and Poisson arrivals that follow it.

A `RateSchedule` is a piecewise function of time since the start of measurement (seconds) to
requests per second: constant (`--rate`), steps (`step:100@0,400@30`: 100 req/s from 0 s,
400 req/s from 30 s), a linear ramp (`ramp:100:1000:60`: 100 to 1000 req/s over 60 s, then
1000), or a trace file (`tritonscale.traces`: CSV `time_s,rate_rps`, each rate holding until the
next row's time).
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tritonscale.traces import MAX_RATE_RPS, TraceError, read_rate_trace


class ScheduleError(ValueError):
    """A schedule specification or trace that cannot be used; the message says why."""


@dataclass(frozen=True)
class RateSchedule:
    """Offered rate over time: `points` are (time_s, rate_rps) with increasing times starting
    at 0; between points the rate holds (`step`) or changes linearly (`linear`); after the last
    point it holds."""

    points: tuple[tuple[float, float], ...]
    shape: Literal["step", "linear"] = "step"
    label: str = ""

    def __post_init__(self) -> None:
        if not self.points:
            raise ScheduleError("a schedule needs at least one point")
        if self.points[0][0] != 0:
            raise ScheduleError(f"a schedule must start at time 0, not {self.points[0][0]}")
        times = [t for t, _ in self.points]
        if any(b <= a for a, b in itertools.pairwise(times)):
            raise ScheduleError(f"schedule times must increase: {times}")
        for t, rate in self.points:
            if not (math.isfinite(t) and math.isfinite(rate)) or rate < 0 or rate > MAX_RATE_RPS:
                raise ScheduleError(f"rate {rate} at {t}s is not in [0, {MAX_RATE_RPS:.0f}] req/s")

    def rate_at(self, t: float) -> float:
        """Requests per second at `t` seconds (times before 0 get the first rate)."""
        times = [p[0] for p in self.points]
        index = bisect.bisect_right(times, t) - 1
        if index < 0:
            return self.points[0][1]
        t0, r0 = self.points[index]
        if self.shape == "step" or index + 1 == len(self.points):
            return r0
        t1, r1 = self.points[index + 1]
        return r0 + (r1 - r0) * (t - t0) / (t1 - t0)

    def peak(self, duration_s: float) -> float:
        """The highest rate within [0, duration_s]."""
        rates = [r for t, r in self.points if t <= duration_s]
        return max([*rates, self.rate_at(duration_s)])

    def mean(self, duration_s: float) -> float:
        """The average rate over [0, duration_s] (expected requests / duration)."""
        if duration_s <= 0:
            return self.rate_at(0)
        edges = sorted({0.0, duration_s, *(t for t, _ in self.points if 0 < t < duration_s)})
        total = 0.0
        for a, b in itertools.pairwise(edges):
            if self.shape == "step":
                total += self.rate_at(a) * (b - a)
            else:
                total += (self.rate_at(a) + self.rate_at(b - 1e-12)) / 2 * (b - a)
        return total / duration_s

    def describe(self) -> str:
        return self.label or ",".join(f"{r:g}@{t:g}" for t, r in self.points)


def constant_rate(rate: float) -> RateSchedule:
    """`rate` requests per second throughout."""
    return RateSchedule(((0.0, float(rate)),), label=f"constant {rate:g} req/s")


def _number(text: str, what: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ScheduleError(f"{what} {text!r} in {spec!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise ScheduleError(f"{what} {text!r} in {spec!r} must be a finite number >= 0")
    return value


def parse_schedule(spec: str) -> RateSchedule:
    """`ramp:FROM:TO:SECONDS`, `step:RATE@TIME,RATE@TIME,...` (first at 0) or `constant:RATE`."""
    kind, _, rest = spec.strip().partition(":")
    if kind == "constant":
        return constant_rate(_number(rest, "rate", spec))
    if kind == "ramp":
        parts = rest.split(":")
        if len(parts) != 3:
            raise ScheduleError(f"ramp wants ramp:FROM:TO:SECONDS, got {spec!r}")
        start, end, seconds = (
            _number(p, w, spec) for p, w in zip(parts, ("from", "to", "seconds"), strict=True)
        )
        if seconds <= 0:
            raise ScheduleError(f"ramp duration must be > 0 in {spec!r}")
        return RateSchedule(
            ((0.0, start), (seconds, end)), "linear", label=f"ramp {start:g}->{end:g} req/s in {seconds:g}s"
        )
    if kind == "step":
        points = []
        for item in filter(None, (i.strip() for i in rest.split(","))):
            rate, at, time_s = item.partition("@")
            if not at:
                raise ScheduleError(f"step wants RATE@TIME items, got {item!r} in {spec!r}")
            points.append((_number(time_s, "time", spec), _number(rate, "rate", spec)))
        if not points:
            raise ScheduleError(f"step wants at least one RATE@TIME item: {spec!r}")
        return RateSchedule(tuple(points), "step", label=f"steps {rest}")
    raise ScheduleError(
        f"unknown schedule {spec!r}: use ramp:FROM:TO:SECONDS, step:RATE@TIME,... or constant:RATE"
    )


def load_trace(path: Path) -> RateSchedule:
    """A step schedule from a trace file (`tritonscale.traces`: header `time_s,rate_rps`, the
    first row at time 0, each rate holding until the next row). The bench's arrivals are
    Poisson, so a `cv` column other than 1 is refused rather than ignored."""
    try:
        trace = read_rate_trace(path)
    except TraceError as error:
        raise ScheduleError(str(error)) from error
    bursty = next((point for point in trace.points if point.cv != 1.0), None)
    if bursty is not None:
        raise ScheduleError(
            f"{path}:{bursty.line}: cv {bursty.cv:g}: the bench sends Poisson arrivals (cv 1); "
            "drop the cv column (tritonscale simulate replays it)"
        )
    points = tuple((point.time_s, point.rate_rps) for point in trace.points)
    return RateSchedule(points, "step", label=f"trace {path.name}")


def poisson_arrivals(schedule: RateSchedule, duration_s: float, rng: random.Random) -> Iterator[float]:
    """Arrival times in [0, duration_s) of a Poisson process whose rate follows `schedule`
    (thinning: candidates at the peak rate, each kept with probability rate(t) / peak)."""
    peak = schedule.peak(duration_s)
    if peak <= 0:
        return
    t = 0.0
    while True:
        t += rng.expovariate(peak)
        if t >= duration_s:
            return
        rate = schedule.rate_at(t)
        if rate >= peak or rng.random() * peak < rate:
            yield t
