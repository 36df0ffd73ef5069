"""The routers' counts: the change-point test, the rate since the change, and their use by the
autoscaler and the simulator."""

from __future__ import annotations

import dataclasses
import itertools
import socket

import numpy as np
import pytest

from tests.unit.test_autoscaling import observe
from tritonscale.api.observation import RouterReading, RouterSample, RouterSignal
from tritonscale.clients.router import HaproxyStats, RouterUnreadable, parse_stats
from tritonscale.policy.autoscaling import (
    RATE_SPACING_S,
    AutoscalerSettings,
    AutoscalerState,
    Decision,
    LatencyAutoscaler,
)
from tritonscale.policy.surge import (
    HISTORY_S,
    ROUTER_PERIOD_S,
    combined_sample,
    remember,
    router_signal,
    wants_decision,
)
from tritonscale.sim.engine import SimEnvironment, Simulation
from tritonscale.sim.policies import LatencyPolicy, Objective


def samples_for(rates: list[float], seed: int, period: float = ROUTER_PERIOD_S) -> list[RouterSample]:
    """Router samples every `period` s of Poisson arrivals at the given rate per interval."""
    rng = np.random.default_rng(seed)
    total, out = 0.0, [RouterSample(at=0.0, requests=0.0, in_flight=0.0)]
    for index, rate in enumerate(rates, start=1):
        total += float(rng.poisson(rate * period))
        out.append(RouterSample(at=index * period, requests=total, in_flight=5.0))
    return out


def history(samples: list[RouterSample]) -> tuple[RouterSample, ...]:
    kept: tuple[RouterSample, ...] = ()
    for sample in samples:
        kept = remember(kept, sample)
    return kept


def test_a_steady_load_shows_no_change_and_is_measured_over_the_whole_history() -> None:
    false_alarms = 0
    for seed in range(300):
        kept = history(samples_for([500.0] * 40, seed))
        signal = router_signal(kept, kept[-1].at)
        assert signal is not None
        false_alarms += signal.previous_rps is not None
        assert signal.since_s == pytest.approx(HISTORY_S, abs=ROUTER_PERIOD_S)
        assert signal.rate_rps == pytest.approx(500.0, rel=0.03)
    assert false_alarms == 0


def test_a_step_is_found_within_seconds_and_measured_from_the_requests_since() -> None:
    kept = history(samples_for([500.0] * 20 + [800.0] * 2, seed=1))
    signal = router_signal(kept, kept[-1].at)
    assert signal is not None and signal.surged
    assert signal.since_s == pytest.approx(4.0)
    assert signal.rate_rps == pytest.approx(800.0, rel=0.05)
    assert signal.previous_rps == pytest.approx(500.0, rel=0.05)
    assert "since a change 4s ago from 50" in signal.describe()


def test_a_drop_is_a_change_but_not_a_surge() -> None:
    kept = history(samples_for([800.0] * 20 + [400.0] * 3, seed=2))
    signal = router_signal(kept, kept[-1].at)
    assert signal is not None and signal.previous_rps is not None
    assert not signal.surged and not wants_decision(signal, 800.0)


def test_a_ramp_is_carried_to_the_newest_sample() -> None:
    ramp = [500.0] * 15 + [500.0 + 30.0 * 2 * step for step in range(1, 11)]
    kept = history(samples_for(ramp, seed=3))
    signal = router_signal(kept, kept[-1].at)
    assert signal is not None and signal.surged
    assert signal.slope_rps_per_s == pytest.approx(30.0, rel=0.35)
    assert signal.present_rps > signal.rate_rps
    assert signal.present_rps == pytest.approx(ramp[-1], rel=0.1)


def test_the_history_keeps_a_minute_and_restarts_when_a_counter_goes_back() -> None:
    kept = history(samples_for([100.0] * 60, seed=4))
    assert kept[-1].at - kept[1].at < HISTORY_S <= kept[-1].at - kept[0].at
    restarted = remember(kept, RouterSample(at=kept[-1].at + 2, requests=3.0, in_flight=0.0))
    assert len(restarted) == 1
    assert router_signal(restarted, restarted[-1].at) is None


def test_a_decision_is_asked_for_only_when_the_surge_outgrows_what_was_sized_for() -> None:
    signal = RouterSignal(
        rate_rps=900.0,
        since_s=6.0,
        present_rps=950.0,
        slope_rps_per_s=10.0,
        previous_rps=500.0,
        in_flight=40.0,
        age_s=0.0,
    )
    assert wants_decision(signal, None)
    assert wants_decision(signal, 800.0)
    assert not wants_decision(signal, 900.0)
    steady = RouterSignal(
        rate_rps=900.0,
        since_s=60.0,
        present_rps=900.0,
        slope_rps_per_s=0.0,
        previous_rps=None,
        in_flight=40.0,
        age_s=0.0,
    )
    assert not wants_decision(steady, 100.0)


SETTINGS = AutoscalerSettings(target_ms=100.0, percentile=95.0, min_replicas=1, max_replicas=40, max_batch=8)


def _decision_after_calm(router: RouterSignal | None, rate: float = 300.0) -> Decision:
    """The decision when, after a calm load at 300 req/s on 3 replicas, the metrics still say
    `rate` and the routers say what `router` says."""
    policy, state, current = LatencyAutoscaler(SETTINGS), AutoscalerState(), 3
    for now in range(10, 300, 10):
        decision, state = policy.decide(observe(300, 60, 3), state, float(now), current)
        current = decision.desired
    decision, _ = policy.decide(observe(rate, 60, 3, router=router), state, 300.0, current)
    return decision


def _decide_after_calm(router: RouterSignal | None, rate: float = 300.0) -> int:
    return _decision_after_calm(router, rate).desired


def _signal(present: float, previous: float | None, slope: float = 0.0, age: float = 0.0) -> RouterSignal:
    return RouterSignal(
        rate_rps=present,
        since_s=6.0,
        present_rps=present,
        slope_rps_per_s=slope,
        previous_rps=previous,
        in_flight=10.0,
        age_s=age,
    )


def test_a_surge_the_routers_see_scales_up_before_the_metrics_show_it() -> None:
    metrics_only = _decide_after_calm(None)
    assert _decide_after_calm(_signal(3000.0, 300.0)) > metrics_only
    # A rising ramp asks for more than the level it has reached.
    assert _decide_after_calm(_signal(3000.0, 300.0, slope=40.0)) > _decide_after_calm(_signal(3000.0, 300.0))


def test_routers_without_a_surge_or_too_old_change_nothing() -> None:
    metrics_only = _decide_after_calm(None)
    assert _decide_after_calm(_signal(300.0, None)) == metrics_only
    assert _decide_after_calm(_signal(3000.0, 300.0, age=600.0)) == metrics_only
    # The routers never lower what the metrics ask for.
    assert _decide_after_calm(_signal(100.0, 300.0), rate=3000.0) == _decide_after_calm(None, rate=3000.0)


def test_requests_piling_up_at_the_routers_add_capacity_to_drain_them() -> None:
    piled = RouterSignal(
        rate_rps=300.0,
        since_s=60.0,
        present_rps=300.0,
        slope_rps_per_s=0.0,
        previous_rps=None,
        in_flight=20000.0,
        age_s=0.0,
    )
    assert _decide_after_calm(piled) > _decide_after_calm(None)


def test_the_simulated_router_counts_what_arrived_and_what_is_in_flight() -> None:
    env = SimEnvironment(
        base_ms=1000.0, per_item_ms=0.0, max_batch=1, cold_start_s=0.0, queue_timeout_s=100.0
    )
    arrivals = np.array([0.1, 0.2, 0.3, 5.5])
    policy = LatencyPolicy(env, Objective(100.0, 95.0), source="triton")
    seen: list[RouterSample] = []

    class Recording:
        name, period_s = "recording", ROUTER_PERIOD_S

        def step(self, view):  # type: ignore[no-untyped-def]
            seen.append(view.router_sample())
            return view.provisioned, ""

    Simulation(arrivals, env, 100.0, 95.0).run(Recording(), 1, 8.0)
    # One replica, 1 s per request: at 2 s the first is done, the second runs, the third waits;
    # at 4 s all are done; at 6 s the fourth runs.
    assert [(s.at, s.requests, s.in_flight) for s in seen] == [
        (2.0, 3.0, 2.0),
        (4.0, 3.0, 0.0),
        (6.0, 4.0, 1.0),
    ]
    assert policy.period_s == ROUTER_PERIOD_S and policy.name == "latency"
    assert LatencyPolicy(env, Objective(100.0, 95.0), router=False).name == "latency-metrics-only"


def test_decisions_every_two_seconds_keep_one_rate_per_few_seconds() -> None:
    """In a surge the routers ask for decisions every read; the growth statistics must not be
    filled with the surge's samples (they would keep headroom for an hour)."""
    policy, state, current = LatencyAutoscaler(SETTINGS), AutoscalerState(), 3
    for step in range(60):
        decision, state = policy.decide(observe(300 + 10 * step, 60, 3), state, 2.0 * step, current)
        current = decision.desired
    times = [t for t, _ in state.rates]
    assert min(b - a for a, b in itertools.pairwise(times[:-1])) >= RATE_SPACING_S
    assert len(times) >= 120 / (RATE_SPACING_S + 2)
    assert times[-1] == 118.0 and state.rates[-1][1] == 890.0


def test_the_routers_never_ask_for_less_than_the_metrics_alone_on_a_ramp() -> None:
    """A steep ramp the metrics see rising, and routers a little above them with a fresh change
    point (no slope yet): from the same memory, never fewer replicas than without the routers."""
    policy, state, current = LatencyAutoscaler(SETTINGS), AutoscalerState(), 3
    for step in range(60):
        now = 10.0 * step
        rate = 300.0 if step < 30 else 300.0 + 150.0 * (step - 30)
        for factor in (1.12, 1.2, 1.5):
            router = RouterSignal(rate * factor, 4.0, rate * factor, 0.0, rate, 10.0, 0.0)
            with_routers, _ = policy.decide(observe(rate, 60, current, router=router), state, now, current)
            alone, _ = policy.decide(observe(rate, 60, current), state, now, current)
            assert with_routers.model_replicas is not None and alone.model_replicas is not None
            assert with_routers.model_replicas >= alone.model_replicas, (step, factor, with_routers.reason)
            assert with_routers.desired >= alone.desired, (step, factor, with_routers.reason)
        decision, state = policy.decide(observe(rate, 60, current), state, now, current)
        current = decision.desired


def test_routers_a_little_above_the_metrics_are_not_a_surge() -> None:
    """The routers also count readiness and metadata calls: within 10 % of the metrics' rate
    their surge is not taken; well above it, it is (and the reason says so)."""
    close = _decision_after_calm(_signal(3200.0, 300.0), rate=3000.0)
    assert close.desired > 3 and close.surge is None, close.reason
    taken = _decision_after_calm(_signal(6000.0, 300.0), rate=3000.0)
    assert taken.surge is not None and "router 6000 req/s" in taken.reason


def test_a_router_restarting_in_place_carries_the_count_forward() -> None:
    previous = {
        "a": RouterReading(routed=1000.0, in_flight=2.0),
        "b": RouterReading(routed=500.0, in_flight=1.0),
    }
    last = RouterSample(at=10.0, requests=42.0, in_flight=3.0)
    # a routed 100 more; b restarted and has routed 30 since.
    readings = {
        "a": RouterReading(routed=1100.0, in_flight=4.0),
        "b": RouterReading(routed=30.0, in_flight=5.0),
    }
    assert combined_sample(12.0, readings, previous, last) == RouterSample(
        at=12.0, requests=172.0, in_flight=9.0
    )


def test_the_stats_page_is_summed_over_both_backends_and_an_unreadable_router_says_why() -> None:
    csv_text = (
        "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,hrsp_2xx\n"
        "http,FRONTEND,,,3,9,100,900,0,890\n"
        "triton_http,triton1,0,0,2,5,,400,0,399\n"
        "triton_http,BACKEND,1,3,2,5,100,410,0,405\n"
        "triton_grpc,BACKEND,0,0,4,6,100,90,0,88\n"
        "monitoring,FRONTEND,,,1,1,100,7,0,7\n"
    )
    assert parse_stats(csv_text) == RouterReading(routed=500.0, in_flight=7.0, served=(493.0,))
    # With variants (render.router): their backends count too, and what each answered apart.
    with_variants = csv_text + (
        "triton_http_v0,BACKEND,0,0,1,2,100,60,0,60\n"
        "triton_grpc_v0,BACKEND,0,0,0,2,100,40,0,39\n"
        "triton_http_v1,BACKEND,0,0,0,2,100,5,0,5\n"
        "triton_http_vx,BACKEND,0,0,0,2,100,5,0,5\n"
    )
    assert parse_stats(with_variants) == RouterReading(routed=605.0, in_flight=8.0, served=(493.0, 99.0, 5.0))
    with pytest.raises(RouterUnreadable):
        parse_stats("# pxname,svname,stot\nhttp,FRONTEND,3\n")
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    reason = HaproxyStats(port=port, timeout_s=0.2)("127.0.0.1")
    assert isinstance(reason, str) and "ConnectionRefusedError" in reason


def _first_traffic(rate: float, routers: bool) -> list[int]:
    """Desired replicas every 10 s: no traffic for two minutes, then `rate` from t = 120 s. The
    metrics' rate is over a minute (so it climbs to `rate` as its window fills); the routers, when
    read, show the level from the start."""
    policy, state, current, desired = LatencyAutoscaler(SETTINGS), AutoscalerState(), 1, []
    for now in range(0, 400, 10):
        since = now - 120
        metrics_rate = 0.0 if since < 0 else rate * min(since, 60) / 60
        router = None
        if routers:
            router = RouterSignal(
                rate_rps=rate if since > 0 else 0.0,
                since_s=min(max(since, ROUTER_PERIOD_S), HISTORY_S),
                present_rps=rate if since > 0 else 0.0,
                slope_rps_per_s=0.0,
                previous_rps=0.0 if 0 < since < HISTORY_S else None,
                in_flight=2.0,
                age_s=0.5,
            )
        seen = observe(metrics_rate, 40.0 if metrics_rate else None, current, rate_age_s=30.0, router=router)
        decision, state = policy.decide(seen, state, float(now), current)
        current = decision.desired
        desired.append(current)
    return desired


def _steady_need(rate: float, rate_age_s: float) -> int:
    """The replicas a steady `rate` settles at, decided every 10 s for 400 s."""
    policy, state, needed = LatencyAutoscaler(SETTINGS), AutoscalerState(), 1
    for now in range(0, 400, 10):
        seen = observe(rate, 40.0, needed, rate_age_s=rate_age_s)
        decision, state = policy.decide(seen, state, float(now), needed)
        needed = decision.desired
    return needed


def test_a_first_traffic_seen_by_the_routers_is_not_read_as_a_ramp() -> None:
    """A service's first traffic: the metrics' window filling looks like a ramp, which extrapolated
    over a cold start asked for a replica that went again a minute later. With the routers read,
    it is sized for the level they show; without them the ramp is all there is to go on."""
    needed = _steady_need(300.0, rate_age_s=30.0)
    assert max(_first_traffic(300.0, routers=True)) == needed
    assert max(_first_traffic(300.0, routers=False)) > needed


def _step(before: float, after: float, floor: int, routers: bool) -> list[int]:
    """Desired replicas every 2 s: `before` req/s for five minutes, then `after` from t = 300 s,
    with at least `floor` replicas (enough for `after`, so nothing piles up to be drained), ready
    as soon as asked for. The metrics' rate is over 30 s, as the benchmark's Prometheus feed (so
    it climbs to `after` as its window fills); the routers, when read, show the step and the flat
    level since (the change point leaves their history after HISTORY_S)."""
    settings = dataclasses.replace(SETTINGS, min_replicas=floor)
    policy, state, current, desired = LatencyAutoscaler(settings), AutoscalerState(), floor, []
    for now in range(0, 420, 2):
        since = now - 300
        metrics_rate = before + (after - before) * min(max(since, 0), 30) / 30
        router = None
        if routers and since >= ROUTER_PERIOD_S:
            router = RouterSignal(
                rate_rps=after,
                since_s=min(since, HISTORY_S),
                present_rps=after,
                slope_rps_per_s=0.0,
                previous_rps=before if since < HISTORY_S else None,
                in_flight=2.0,
                age_s=0.5,
            )
        seen = observe(metrics_rate, 40.0, current, rate_age_s=20.0, router=router)
        decision, state = policy.decide(seen, state, float(now), current)
        current = decision.desired
        desired.append(current)
    return desired


def test_a_step_the_routers_have_counted_caps_the_metrics_catching_up() -> None:
    """After a step the metrics' window fills with it, a climb that is not the load's: carried
    forward over a cold start it asked for capacity beyond the new level. Once the routers have
    counted the flat level for STEP_SEEN_S, the climb is carried no further than that level."""
    needed = _steady_need(3000.0, rate_age_s=20.0)
    assert max(_step(300.0, 3000.0, needed, routers=True)) == needed
    assert max(_step(300.0, 3000.0, needed, routers=False)) > needed
