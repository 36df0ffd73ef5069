"""The queueing model: textbook values, its shape, and agreement with the simulator."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tritonscale.policy.queueing import (
    ServiceTime,
    _cycle_s,
    erlang_c,
    fewest_replicas,
    mixed_latency_ms,
    predicted_latency_ms,
)
from tritonscale.policy.variants import Variant
from tritonscale.sim.engine import SimEnvironment, Simulation

SERVICE = ServiceTime(base_ms=20.0, per_item_ms=3.0, max_batch=8)


def test_erlang_c_textbook_values() -> None:
    assert erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: P(wait) = rho
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(3, 3.0) == 1.0
    assert erlang_c(4, 0.0) == 0.0


def test_latency_is_the_bare_service_time_without_load() -> None:
    assert predicted_latency_ms(3, 0.0, SERVICE, 95) == pytest.approx(23.0)
    assert predicted_latency_ms(100, 10.0, SERVICE, 95) == pytest.approx(23.0)


def test_overload_is_infinite() -> None:
    assert math.isinf(predicted_latency_ms(1, 500.0, SERVICE, 95))
    assert math.isinf(predicted_latency_ms(0, 1.0, SERVICE, 95))


@given(rate=st.floats(min_value=1.0, max_value=3000.0), replicas=st.integers(min_value=1, max_value=60))
def test_more_replicas_never_predict_more_latency(rate: float, replicas: int) -> None:
    fewer = predicted_latency_ms(replicas, rate, SERVICE, 95)
    more = predicted_latency_ms(replicas + 1, rate, SERVICE, 95)
    assert more <= fewer * (1 + 1e-9)


@given(rate=st.floats(min_value=1.0, max_value=2000.0), limit=st.floats(min_value=30.0, max_value=500.0))
def test_sizing_is_the_fewest_that_meet_the_limit(rate: float, limit: float) -> None:
    replicas = fewest_replicas(lambda n: predicted_latency_ms(n, rate, SERVICE, 95) <= limit, 200)
    if replicas <= 200:
        assert predicted_latency_ms(replicas, rate, SERVICE, 95) <= limit
    if 1 < replicas <= 200:
        assert predicted_latency_ms(replicas - 1, rate, SERVICE, 95) > limit


def test_fewest_replicas_reports_when_even_most_is_not_enough() -> None:
    assert fewest_replicas(lambda n: n >= 7, 10) == 7
    assert fewest_replicas(lambda n: False, 10) == 11


class _Fixed:
    name = "fixed"
    period_s = 1000.0

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas

    def step(self, view: object) -> tuple[int, str]:
        return self.replicas, "fixed"


@pytest.mark.parametrize(("rate", "replicas"), [(100, 1), (100, 3), (200, 2), (400, 4), (400, 8), (200, 6)])
def test_model_tracks_the_simulator_within_a_quarter(rate: float, replicas: int) -> None:
    rng = np.random.default_rng(7)
    duration = 300.0
    times = np.sort(rng.uniform(0, duration, rng.poisson(rate * duration)))
    env = SimEnvironment(
        base_ms=SERVICE.base_ms, per_item_ms=SERVICE.per_item_ms, max_batch=SERVICE.max_batch
    )
    simulated = Simulation(times, env, 100.0, 95.0).run(_Fixed(replicas), replicas, duration).p95_ms
    predicted = predicted_latency_ms(replicas, rate, SERVICE, 95)
    assert predicted == pytest.approx(simulated, rel=0.25)


@given(rate=st.floats(min_value=1.0, max_value=3000.0), replicas=st.integers(min_value=1, max_value=60))
def test_a_vanishing_second_model_leaves_the_single_model_prediction(rate: float, replicas: int) -> None:
    """The split-load model's own path (the batching cycle, the mixture's percentile) meets the
    single-model formula as the second model's load goes to nothing; with none it is that formula."""
    # The single-model formula jumps where a replica starts to batch; a split load may sit
    # either side of that point by a hair.
    assume(abs(rate * SERVICE.batch_ms(1) / 1000.0 / replicas - 1.0) > 1e-3)
    variant = ServiceTime(5.0, 0.75, 8)
    single = predicted_latency_ms(replicas, rate, SERVICE, 95)
    faint = mixed_latency_ms(replicas, [(rate, SERVICE), (1e-6, variant)], 95)
    if math.isinf(single):
        assert math.isinf(faint)
    else:
        assert faint == pytest.approx(single, rel=1e-3)
    assert mixed_latency_ms(replicas, [(rate, SERVICE), (0.0, variant)], 95) == single


class _Shared(_Fixed):
    """A fixed count with a share of the requests routed to the variant."""

    period_s = 5.0

    def __init__(self, replicas: int, share: float) -> None:
        super().__init__(replicas)
        self.share = share

    def step(self, view: object) -> tuple[int, str]:
        view.route_variants((self.share,))  # type: ignore[attr-defined]
        return self.replicas, "fixed"


@pytest.mark.parametrize("share", [0.55, 0.6, 0.7])
def test_a_load_split_with_a_variant_tracks_the_simulator(share: float) -> None:
    """The real variants loop's replica (tests/integration/test_variants_loop.py): tau 40 + 2b
    ms, batches of up to 2, a 4x faster variant next to it, 60 req/s on one replica. Each model
    batches only its own requests: at a share of 0.55 the simulator measures p95 151 ms once
    the share is in place, where costing the variant's requests at a quarter of the primary's,
    batched as the primary's, predicted 128 ms (and 118 ms at 0.6 for 132: 11-15 % low)."""
    primary = ServiceTime(40.0, 2.0, 2)
    variant = Variant("fast", 0.98, 4.0)
    rate, duration = 60.0, 600.0
    rng = np.random.default_rng(3)
    times = np.sort(rng.uniform(0, duration, rng.poisson(rate * duration)))
    env = SimEnvironment(base_ms=40.0, per_item_ms=2.0, max_batch=2, variants=(variant,))
    result = Simulation(times, env, 150.0, 95.0).run(_Shared(1, share), 1, duration)
    # Until the first decision every request goes to the model: its backlog takes a while to drain.
    settled = result.latencies_s[times >= 60.0]
    simulated = float(np.percentile(settled, 95)) * 1000.0
    loads = [(rate * (1 - share), primary), (rate * share, variant.service(primary))]
    assert mixed_latency_ms(1, loads, 95) == pytest.approx(simulated, rel=0.1)


class _SharedFromTheStart(_Shared):
    """The share in place from the first half second: no backlog of the model's to drain."""

    period_s = 0.5


@pytest.mark.parametrize(
    ("base_ms", "per_item_ms", "max_batch", "rate", "replicas", "share"),
    [
        (20.0, 3.0, 8, 273.0, 1, 0.95),
        (20.0, 3.0, 8, 1300.0, 4, 0.95),
        (10.0, 1.0, 16, 923.0, 1, 0.95),
        (20.0, 3.0, 8, 1300.0, 4, 0.92),
        (20.0, 3.0, 8, 1300.0, 4, 0.94),
    ],
)
def test_a_variant_running_several_batches_a_turn_tracks_the_simulator(
    base_ms: float, per_item_ms: float, max_batch: int, rate: float, replicas: int, share: float
) -> None:
    """Most on a 2x variant: it gets more than a full batch each turn of the accelerator, and
    runs several, interleaved with the model's (the oldest request first). Every request waits
    for the next of those: charging the variant's the whole turn read 2-5x the simulator's p95
    at 95 %, and charging the model's (in the tail below 95 %) 4-6x at 92-94 %."""
    variant = Variant("int8", 0.99, 2.0)
    primary = ServiceTime(base_ms, per_item_ms, max_batch)
    duration = 120.0
    rng = np.random.default_rng(3)
    times = np.sort(rng.uniform(0, duration, rng.poisson(rate * duration)))
    env = SimEnvironment(base_ms=base_ms, per_item_ms=per_item_ms, max_batch=max_batch, variants=(variant,))
    result = Simulation(times, env, 100.0, 95.0).run(_SharedFromTheStart(replicas, share), replicas, duration)
    simulated = float(np.percentile(result.latencies_s[times >= 10.0], 95)) * 1000.0
    loads = [(rate * (1 - share), primary), (rate * share, variant.service(primary))]
    cycle = _cycle_s([load / replicas for load, _ in loads], [service for _, service in loads])
    assert rate * share / replicas * cycle > max_batch  # more than a full batch a turn
    assert mixed_latency_ms(replicas, loads, 95) == pytest.approx(simulated, rel=0.25)


@given(st.integers(1, 60), st.integers(1, 60), st.integers(-5, 70))
def test_a_count_known_to_meet_bounds_the_search_and_changes_no_monotone_answer(
    most: int, threshold: int, within: int
) -> None:
    """Where `meets` keeps holding once it holds, `within` changes nothing; where a count
    known to meet is given, a count above it that fails does not push the answer past it."""
    assert fewest_replicas(lambda n: n >= threshold, most, within) == fewest_replicas(
        lambda n: n >= threshold, most
    )

    def holes(n: int) -> bool:
        return 3 <= n <= most // 2  # fails again above most // 2

    if most // 2 >= 3:
        assert fewest_replicas(holes, most, within=most // 2) == 3
        assert fewest_replicas(holes, most) == most + 1  # without it: past every count
