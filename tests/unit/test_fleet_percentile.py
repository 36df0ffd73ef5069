"""The fleet percentile from per-replica summaries (issue 10, item 6)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tritonscale.policy.fleet_percentile import ReplicaLatency, fleet_percentile_ms

QUANTILES = (0.5, 0.9, 0.95, 0.99)


def _summary(samples: np.ndarray) -> dict[float, float]:
    return {q: float(np.quantile(samples, q)) for q in QUANTILES}


@st.composite
def replicas(draw: st.DrawFn) -> ReplicaLatency:
    values = sorted(draw(st.lists(st.floats(0.1, 5000.0), min_size=4, max_size=4)))
    return ReplicaLatency(draw(st.floats(0.5, 1000.0)), dict(zip(QUANTILES, values, strict=True)))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(fleet=st.lists(replicas(), min_size=1, max_size=6), quantile=st.sampled_from(QUANTILES))
def test_the_fleet_value_lies_between_the_replicas_own(fleet: list[ReplicaLatency], quantile: float) -> None:
    found = fleet_percentile_ms(fleet, quantile * 100)
    own = [r.quantiles_ms[quantile] for r in fleet]
    assert found is not None
    assert min(own) - 1e-6 <= found <= max(own) + 1e-6


@settings(max_examples=100, deadline=None, derandomize=True)
@given(replica=replicas(), copies=st.integers(1, 5), quantile=st.sampled_from(QUANTILES))
def test_identical_replicas_give_their_own_value(
    replica: ReplicaLatency, copies: int, quantile: float
) -> None:
    found = fleet_percentile_ms([replica] * copies, quantile * 100)
    assert found is not None and math.isclose(
        found, replica.quantiles_ms[quantile], rel_tol=1e-9, abs_tol=1e-9
    )


def test_unusable_summaries_are_left_out() -> None:
    assert fleet_percentile_ms([], 95) is None
    assert (
        fleet_percentile_ms([ReplicaLatency(10, {0.95: math.nan}), ReplicaLatency(0, {0.95: 5.0})], 95)
        is None
    )
    kept = ReplicaLatency(10, {0.5: 10.0, 0.95: 40.0})
    assert fleet_percentile_ms([kept, ReplicaLatency(10, {0.95: math.nan})], 95) == fleet_percentile_ms(
        [kept], 95
    )


def test_closer_to_the_pooled_percentile_than_the_mean_or_the_maximum() -> None:
    """Replicas of unequal speed and load (as after a slow node, or a cold replica): the pooled
    p95 of every request, against the estimate from each replica's summary quantiles. The
    weighted mean of the replicas' p95 (what the Triton source used) and their maximum (what the
    Prometheus query used) are both more than 15 % off; the mixture is within 5 %."""
    generator = np.random.default_rng(7)
    fleet = [  # (requests, mean latency ms): two fast busy replicas, a slow quiet one
        (6000, 20.0),
        (5000, 25.0),
        (1000, 120.0),
    ]
    samples = [generator.gamma(2.0, mean / 2.0, size=count) for count, mean in fleet]
    pooled = float(np.quantile(np.concatenate(samples), 0.95))
    summaries = [ReplicaLatency(len(s), _summary(s)) for s in samples]
    mixture = fleet_percentile_ms(summaries, 95)
    weighted_mean = sum(r.requests * r.quantiles_ms[0.95] for r in summaries) / sum(
        r.requests for r in summaries
    )
    maximum = max(r.quantiles_ms[0.95] for r in summaries)
    assert mixture is not None
    assert abs(mixture - pooled) / pooled < 0.05, (mixture, pooled)
    assert abs(weighted_mean - pooled) / pooled > 0.15, (weighted_mean, pooled)
    assert abs(maximum - pooled) / pooled > 0.15, (maximum, pooled)
