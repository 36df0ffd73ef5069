"""Request arrival processes: rate schedules (built in or from a CSV trace) turned into arrivals.

A schedule is a list of steps (start second, rate, coefficient of variation); the rate holds
until the next step. Arrivals are Poisson (cv 1) or a Gamma renewal process with the step's cv.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tritonscale.traces import read_rate_trace

BUILT_IN = ("diurnal", "bursty", "flash-crowd", "smooth", "choppy", "recurring")


@dataclass(frozen=True)
class RateStep:
    start_s: float
    rate_rps: float
    cv: float = 1.0


@dataclass(frozen=True)
class Workload:
    """A named rate schedule over [0, duration_s)."""

    name: str
    steps: tuple[RateStep, ...]
    duration_s: float

    @property
    def mean_rate_rps(self) -> float:
        total = 0.0
        for index, step in enumerate(self.steps):
            end = self.steps[index + 1].start_s if index + 1 < len(self.steps) else self.duration_s
            total += step.rate_rps * max(0.0, min(end, self.duration_s) - step.start_s)
        return total / self.duration_s

    def rate_at(self, times: np.ndarray) -> np.ndarray:
        starts = np.array([s.start_s for s in self.steps])
        rates = np.array([s.rate_rps for s in self.steps])
        return np.asarray(rates[np.searchsorted(starts, times, side="right") - 1])


def arrivals(workload: Workload, seed: int) -> np.ndarray:
    """Sorted arrival times (seconds) for the workload."""
    rng = np.random.default_rng(seed)
    pieces: list[np.ndarray] = []
    for index, step in enumerate(workload.steps):
        end = workload.steps[index + 1].start_s if index + 1 < len(workload.steps) else workload.duration_s
        end = min(end, workload.duration_s)
        length = end - step.start_s
        if length <= 0 or step.rate_rps <= 0:
            continue
        if step.cv == 1.0:
            count = rng.poisson(step.rate_rps * length)
            pieces.append(np.sort(rng.uniform(step.start_s, end, count)))
            continue
        shape = 1.0 / (step.cv * step.cv)
        scale = 1.0 / (step.rate_rps * shape)
        expected = int(step.rate_rps * length * 1.2 + 10 * math.sqrt(step.rate_rps * length + 1) + 10)
        times = step.start_s + np.cumsum(rng.gamma(shape, scale, expected))
        while times[-1] < end:  # rare: the draw fell short of the step's end
            times = np.concatenate([times, times[-1] + np.cumsum(rng.gamma(shape, scale, expected))])
        pieces.append(times[times < end])
    if not pieces:
        return np.zeros(0)
    return np.concatenate(pieces)


def _from_function(
    name: str, duration_s: float, rate: Callable[[float], float], step_s: float = 10.0
) -> Workload:
    steps = tuple(
        RateStep(start, max(0.0, rate(start + step_s / 2)))
        for start in np.arange(0.0, duration_s, step_s, dtype=float).tolist()
    )
    return Workload(name, steps, duration_s)


def built_in(name: str, duration_s: float, mean_rps: float, seed: int) -> Workload:
    """One of the built-in workloads over `duration_s`, its rates scaled to a mean of `mean_rps`.

    diurnal: one day-night cycle over the duration, between 0.3x and 1.7x the mean;
    bursty: Gamma arrivals (cv 1.5) with surges to 1.5-2.5x that ramp up within 30-90 s, hold
        1-4 minutes and ramp down within a minute, every ~15 minutes;
    flash-crowd: steady, then a rise to 4x within a minute, ten minutes at the peak, a slow decay;
    smooth: a gentle random walk within 0.7x..1.3x;
    choppy: minute-scale swings on a level that drifts within 0.8x..1.2x over the duration: the
        log-rate reverts to the level with a 90 s correlation time and a spread of 0.15, so it
        falls or rises by a fifth within a few minutes and often comes back soon after (real
        traffic's swings; the other workloads' falls are either steady or steps);
    recurring: a steady load and a scheduled client (a cron job): every 5, 10 or 15 minutes (by
        seed) a surge to 2.5-4x that arrives within 20 s, holds 1-2 minutes and ends within
        20 s, starting up to 10 s late and 10 % higher or lower from one cycle to the next.
    """
    shape = _shape(name, duration_s, mean_rps, np.random.default_rng(seed + 7919))
    scale = mean_rps / shape.mean_rate_rps if shape.mean_rate_rps > 0 else 1.0
    steps = tuple(RateStep(step.start_s, step.rate_rps * scale, step.cv) for step in shape.steps)
    return Workload(name, steps, duration_s)


def _shape(name: str, duration_s: float, mean_rps: float, rng: np.random.Generator) -> Workload:
    if name == "diurnal":
        return _from_function(
            name, duration_s, lambda t: mean_rps * (1.0 - 0.7 * math.cos(2 * math.pi * t / duration_s))
        )
    if name == "bursty":
        surges: list[tuple[float, float, float, float]] = []  # start, ramp, hold, factor
        clock = float(rng.exponential(900.0))
        while clock < duration_s:
            ramp, hold = float(rng.uniform(30.0, 90.0)), float(rng.uniform(60.0, 240.0))
            surges.append((clock, ramp, hold, float(rng.uniform(1.5, 2.5))))
            clock += ramp + hold + 60.0 + float(rng.exponential(900.0))
        base = mean_rps * 0.85

        def bursty_rate(t: float) -> float:
            for start, ramp, hold, factor in surges:
                if start <= t < start + ramp:
                    return base * (1 + (factor - 1) * (t - start) / ramp)
                if start + ramp <= t < start + ramp + hold:
                    return base * factor
                if start + ramp + hold <= t < start + ramp + hold + 60.0:
                    return base * (factor - (factor - 1) * (t - start - ramp - hold) / 60.0)
            return base

        workload = _from_function(name, duration_s, bursty_rate)
        return Workload(name, tuple(RateStep(s.start_s, s.rate_rps, 1.5) for s in workload.steps), duration_s)
    if name == "flash-crowd":
        start = duration_s * 0.4
        base = mean_rps * 0.8

        def flash_rate(t: float) -> float:
            if t < start:
                return base
            if t < start + 60:
                return base * (1 + 3 * (t - start) / 60)
            if t < start + 660:
                return base * 4
            return base * (1 + 3 * math.exp(-(t - start - 660) / 300))

        return _from_function(name, duration_s, flash_rate)
    if name == "smooth":
        walk = np.cumsum(rng.normal(0.0, 0.01, int(duration_s // 60) + 2))
        walk = np.clip(walk, -0.3, 0.3)
        return _from_function(name, duration_s, lambda t: mean_rps * (1.0 + float(walk[int(t // 60)])))
    if name == "choppy":
        # Minute-scale swings on a drifting level: the log-rate is mean-reverting
        # (Ornstein-Uhlenbeck), so a fall of a fifth over a few minutes is often undone soon after.
        step_s, correlation_s, spread = 10.0, 90.0, 0.15
        keep = math.exp(-step_s / correlation_s)
        swing = np.zeros(int(duration_s // step_s) + 2)
        swing[0] = rng.normal(0.0, spread)
        for index in range(1, len(swing)):
            swing[index] = keep * swing[index - 1] + rng.normal(0.0, spread * math.sqrt(1 - keep * keep))
        phase = float(rng.uniform(0.0, 2 * math.pi))

        def choppy_rate(t: float) -> float:
            level = 1.0 + 0.2 * math.sin(2 * math.pi * t / duration_s + phase)
            return mean_rps * level * math.exp(float(swing[int(t // step_s)]))

        return _from_function(name, duration_s, choppy_rate, step_s=step_s)
    if name == "recurring":
        period = float(rng.choice([300.0, 600.0, 900.0]))
        factor, hold = float(rng.uniform(2.5, 4.0)), float(rng.uniform(60.0, 120.0))
        offset = float(rng.uniform(0.0, period - hold - 40.0))
        base = mean_rps * 0.8
        cycles = [
            (offset + k * period + float(rng.uniform(0.0, 10.0)), factor * float(rng.uniform(0.9, 1.1)))
            for k in range(int(duration_s // period) + 1)
        ]

        def recurring_rate(t: float) -> float:
            for start, peak in cycles:
                into = t - start
                if 0 <= into < 20:
                    return base * (1 + (peak - 1) * into / 20)
                if 20 <= into < 20 + hold:
                    return base * peak
                if 20 + hold <= into < 40 + hold:
                    return base * (peak - (peak - 1) * (into - 20 - hold) / 20)
            return base

        return _from_function(name, duration_s, recurring_rate, step_s=5.0)
    raise ValueError(f"unknown workload {name!r}; built in: {', '.join(BUILT_IN)}")


class TraceTooShort(ValueError):
    """A duration past the trace's end was asked for."""


def from_trace(path: Path, duration_s: float | None = None) -> Workload:
    """A workload from a trace file (`tritonscale.traces`: header `time_s,rate_rps` and an
    optional `cv` column, the first row at time 0). It lasts the trace's length by default: up
    to its last row plus that row's interval (the one before it; a minute for a one-row trace).
    A shorter `duration_s` replays its beginning; a longer one is refused, since holding the
    last rate for hours would be a workload nobody recorded. Raises TraceError (a ValueError)
    naming the line, or TraceTooShort naming the length."""
    trace = read_rate_trace(path)
    steps = tuple(RateStep(point.time_s, point.rate_rps, point.cv) for point in trace.points)
    last_interval = steps[-1].start_s - steps[-2].start_s if len(steps) > 1 else 60.0
    length = steps[-1].start_s + last_interval
    if duration_s is not None and duration_s > length + 1e-9:
        raise TraceTooShort(
            f"{path}: the trace lasts {length:g} s; a duration of {duration_s:g} s would run past its end"
        )
    return Workload(trace.name, steps, length if duration_s is None else duration_s)
