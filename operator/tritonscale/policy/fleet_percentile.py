"""The fleet's latency percentile from what each Triton replica publishes.

Triton publishes, per replica and model, a latency summary: a few quantiles (0.5, 0.9, 0.95,
0.99 and the objective's percentile, see render/triton.py) over a sliding window. The fleet's
percentile is neither the mean of the replicas' percentiles nor their maximum
(triton-inference-server#7672): it is the quantile of the mixture of their latency
distributions, each weighted by the requests it served. Each replica's distribution is known
only at its published quantiles; between and beyond them it is taken piecewise linear in
(log latency, probit of the quantile), the space in which a log-normal distribution is a
straight line and right-skewed latency distributions nearly are. The mixture's quantile is then
found by bisection, since the mixture's CDF only rises.

With identical replicas, or one, the answer is their published quantile exactly; it always lies
between the smallest and largest of the replicas' own values at that quantile. On gamma-shaped
latencies with replicas of unequal speed and load its error is a few percent where the mean of
the replicas' percentiles is off by tens (tests/unit/test_fleet_percentile.py).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

BISECTION_STEPS = 80
_NORMAL = NormalDist()


@dataclass(frozen=True)
class ReplicaLatency:
    """One replica's (and model's) requests served in the window and its published quantiles
    (quantile in (0, 1) -> latency in ms)."""

    requests: float
    quantiles_ms: Mapping[float, float]


class _Curve:
    """A replica's distribution through its published quantiles, as (log latency, probit)
    points rising in both; several quantiles at one latency make a vertical step (the
    distribution jumps there). Beyond the ends, the nearest sloped segment carries on."""

    def __init__(self, quantiles_ms: Mapping[float, float]) -> None:
        points: list[tuple[float, float]] = []
        for quantile, latency in sorted(quantiles_ms.items()):
            if not (0.0 < quantile < 1.0) or not math.isfinite(latency) or latency <= 0:
                continue
            point = (math.log(latency), _NORMAL.inv_cdf(quantile))
            # A summary's quantiles rise with the quantile; one that does not (sketch error)
            # is dropped. Of a vertical step, its bottom and top are kept.
            if len(points) >= 2 and point[0] == points[-1][0] == points[-2][0]:
                points[-1] = point
            elif not points or point[0] >= points[-1][0]:
                points.append(point)
        self.points = points
        sloped = [(a, b) for a, b in itertools.pairwise(points) if b[0] > a[0]]
        self.first_slope = (
            (sloped[0][1][1] - sloped[0][0][1]) / (sloped[0][1][0] - sloped[0][0][0]) if sloped else None
        )
        self.last_slope = (
            (sloped[-1][1][1] - sloped[-1][0][1]) / (sloped[-1][1][0] - sloped[-1][0][0]) if sloped else None
        )

    def cdf(self, latency: float) -> float:
        """The share of the replica's requests at or below `latency`."""
        if latency <= 0:
            return 0.0
        x = math.log(latency)
        (first_x, first_z), (last_x, last_z) = self.points[0], self.points[-1]
        if x < first_x:
            return (
                0.0 if self.first_slope is None else _NORMAL.cdf(first_z + self.first_slope * (x - first_x))
            )
        if x >= last_x:
            return 1.0 if self.last_slope is None else _NORMAL.cdf(last_z + self.last_slope * (x - last_x))
        (x0, z0), (x1, z1) = next((a, b) for a, b in itertools.pairwise(self.points) if a[0] <= x < b[0])
        return _NORMAL.cdf(z0 + (z1 - z0) * (x - x0) / (x1 - x0))

    def latency(self, quantile: float) -> float:
        """The replica's latency at `quantile`, on the same curve."""
        z = _NORMAL.inv_cdf(quantile)
        (first_x, first_z), (last_x, last_z) = self.points[0], self.points[-1]
        if z <= first_z:
            return math.exp(first_x if not self.first_slope else first_x + (z - first_z) / self.first_slope)
        if z >= last_z:
            return math.exp(last_x if not self.last_slope else last_x + (z - last_z) / self.last_slope)
        (x0, z0), (x1, z1) = next((a, b) for a, b in itertools.pairwise(self.points) if a[1] <= z <= b[1])
        return math.exp(x0 if x1 == x0 else x0 + (x1 - x0) * (z - z0) / (z1 - z0))


def fleet_percentile_ms(replicas: Sequence[ReplicaLatency], percentile: float) -> float | None:
    """The fleet's `percentile` (e.g. 95) of request latency in ms; None when no replica served
    requests with a published quantile."""
    target = percentile / 100.0
    parts = [
        (r.requests, curve) for r in replicas if r.requests > 0 and (curve := _Curve(r.quantiles_ms)).points
    ]
    if not parts:
        return None
    total = sum(weight for weight, _ in parts)
    # Every replica's own value at the target bounds the answer.
    own = [curve.latency(target) for _, curve in parts]
    low, high = min(own), max(own)
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2.0
        if sum(weight * curve.cdf(middle) for weight, curve in parts) / total >= target:
            high = middle
        else:
            low = middle
    return high
