"""Forecasts of recurring surges (policy.forecast) and how the autoscaler uses them."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import replace

from tritonscale.api.observation import Observation
from tritonscale.policy.autoscaling import AutoscalerSettings, AutoscalerState, LatencyAutoscaler
from tritonscale.policy.forecast import BUCKET_S, HISTORY_BUCKETS, RateHistory, forecast, quiet, remember

PERIOD_S = 900.0
SURGE_AT_S, SURGE_S = 400.0, 120.0


def cron(t: float, peak: float = 4000.0) -> float:
    """1000 req/s, and a surge to `peak` for two minutes at the same point of every 15 minutes."""
    return peak if SURGE_AT_S <= t % PERIOD_S < SURGE_AT_S + SURGE_S else 1000.0


def history_of(rate: Callable[[float], float], until_s: float, every_s: float = 5.0) -> RateHistory:
    history = RateHistory()
    noise = random.Random(1)
    t = 0.0
    while t < until_s:
        history = remember(history, t, rate(t) * noise.uniform(0.97, 1.03))
        t += every_s
    return history


def test_a_surge_every_15_minutes_is_proven_after_four_cycles_and_forecast_before_it_comes() -> None:
    before_proof = history_of(cron, 3 * PERIOD_S + SURGE_AT_S - 60)
    assert before_proof.recurrence is None
    assert forecast(before_proof, 3 * PERIOD_S + SURGE_AT_S - 60, 80) is None

    now = 4 * PERIOD_S + SURGE_AT_S - 60  # a minute before the fifth surge
    history = history_of(cron, now)
    assert history.recurrence is not None
    assert history.recurrence.period_s == 900
    assert "every 15 min" in history.recurrence.describe()
    expected = forecast(history, now, 80)
    assert expected is not None and expected >= 0.8 * 4000
    # Mid-cycle, far from the surge, the forecast is the base load.
    quiet = forecast(history, 4 * PERIOD_S + 100, 60)
    assert quiet is not None and quiet < 1.3 * 1000


def test_quiet_only_where_no_cycle_surged_over_the_whole_horizon() -> None:
    after_surge = 4 * PERIOD_S + SURGE_AT_S + SURGE_S + 80  # 80 s after the fifth surge ended
    history = history_of(cron, after_surge)
    assert quiet(history, after_surge, 390)
    # A horizon that reaches the next surge (within a bucket's tolerance) is not quiet.
    assert not quiet(history, after_surge, PERIOD_S - SURGE_S - 80)
    assert not quiet(history, 4 * PERIOD_S + SURGE_AT_S - 60, 30)
    # Without a proven period nothing is quiet, however steady.
    assert not quiet(history_of(lambda t: 1000.0, 4 * 3600), 4 * 3600, 390)


def test_surges_at_random_times_prove_no_period() -> None:
    starts = random.Random(7)
    surges = sorted(starts.uniform(0, 6 * 3600) for _ in range(20))

    def bursty(t: float) -> float:
        return 4000.0 if any(s <= t < s + 120 for s in surges) else 1000.0

    history = RateHistory()
    proven = []
    for step in range(int(6 * 3600 / 5)):
        history = remember(history, step * 5.0, bursty(step * 5.0))
        proven.append(history.recurrence)
    assert all(r is None for r in proven), {r.period_s for r in proven if r is not None}


def test_a_steady_load_proves_nothing_and_a_burst_in_one_cycle_is_never_forecast() -> None:
    steady = history_of(lambda t: 1000.0, 4 * 3600)
    assert steady.recurrence is None

    def once_more(t: float) -> float:
        # The cron surge, and one extra burst at 700 s into the fifth cycle only.
        return 6000.0 if 4 * PERIOD_S + 700 <= t < 4 * PERIOD_S + 760 else cron(t)

    history, proven = RateHistory(), []
    for step in range(int(8 * PERIOD_S / 5)):
        now = step * 5.0
        history = remember(history, now, once_more(now))
        expected = forecast(history, now, 80)
        assert expected is None or expected < 4400, (now, expected)
        proven.append(history.recurrence is not None)
    assert proven[-1], "the cron surge is proven again once the burst is out of the proof"
    # Proven before the burst (four cycles), and again by the end.
    assert any(proven[: int((4 * PERIOD_S + 700) / 5)])


def test_the_history_is_bounded_and_survives_gaps_and_a_clock_going_back() -> None:
    history = remember(remember(RateHistory(), 0.0, 5.0), 95.0, 7.0)
    assert history.peaks[:3] == (5.0, *(history.peaks[1:3]))
    assert all(math.isnan(p) for p in history.peaks[1:3]) and history.peaks[3] == 7.0
    assert remember(history, 10.0, 99.0) == history
    far = remember(history, 10 * HISTORY_BUCKETS * BUCKET_S, 3.0)
    assert far.peaks == (3.0,)
    long = history_of(lambda t: 1.0, (HISTORY_BUCKETS + 50) * BUCKET_S, every_s=BUCKET_S)
    assert len(long.peaks) == HISTORY_BUCKETS


SETTINGS = AutoscalerSettings(
    target_ms=100.0, max_replicas=40, max_batch=8, cold_start_s=50.0, stabilization_s=300.0
)


def observe(rate: float, ready: int) -> Observation:
    return Observation(
        arrival_rate_rps=rate, latency_ms=40.0, ready_replicas=ready, mean_compute_ms=44.0, average_batch=8.0
    )


def desired_before_the_fifth_surge(settings: AutoscalerSettings) -> tuple[int, str]:
    """The policy on the cron load every 10 s, capacity ready at once; its desired count and
    reason a minute before the fifth surge."""
    policy, state, current = LatencyAutoscaler(settings), AutoscalerState(), 6
    now = 0.0
    decision = None
    while now <= 4 * PERIOD_S + SURGE_AT_S - 60:
        decision, state = policy.decide(observe(cron(now), current), state, now, current)
        current = decision.desired
        now += 10.0
    assert decision is not None
    return decision.desired, decision.reason


def test_the_autoscaler_provisions_a_proven_surge_before_it_comes_and_says_why() -> None:
    ahead, reason = desired_before_the_fifth_surge(SETTINGS)
    without, plain = desired_before_the_fifth_surge(replace(SETTINGS, forecast=False))
    assert "forecast" in reason and "recurs every 15 min" in reason, reason
    assert "forecast" not in plain
    assert ahead > without


def test_the_forecast_never_sizes_below_the_present() -> None:
    """A proven cron surge of 4000 req/s, and a load of 9000 req/s now: the same decision with
    and without forecasts."""
    policy = LatencyAutoscaler(SETTINGS)
    plain = LatencyAutoscaler(replace(SETTINGS, forecast=False))
    state = plain_state = AutoscalerState()
    now, current = 0.0, 6
    while now <= 4 * PERIOD_S + SURGE_AT_S + 30:
        rate = 9000.0 if now >= 4 * PERIOD_S + SURGE_AT_S else cron(now)
        decision, state = policy.decide(observe(rate, current), state, now, current)
        plain_decision, plain_state = plain.decide(observe(rate, current), plain_state, now, current)
        if now >= 4 * PERIOD_S + SURGE_AT_S:
            assert decision.desired >= plain_decision.desired, (now, decision.reason, plain_decision.reason)
        current = decision.desired
        now += 10.0


def test_decisions_sized_for_a_forecast_are_counted() -> None:
    from prometheus_client import REGISTRY

    from tritonscale.metrics import AUTOSCALER

    policy, state, current, now = LatencyAutoscaler(SETTINGS), AutoscalerState(), 6, 0.0
    labels = {"namespace": "default", "name": "cron-counted"}
    while now <= 4 * PERIOD_S + SURGE_AT_S - 60:
        decision, state = policy.decide(observe(cron(now), current), state, now, current)
        AUTOSCALER.record(labels["namespace"], labels["name"], decision)
        current = decision.desired
        now += 10.0
    counted = REGISTRY.get_sample_value("tritonscale_autoscaler_forecast_decisions_total", labels)
    assert counted is not None and counted >= 1
    AUTOSCALER.forget(labels["namespace"], labels["name"])
    assert REGISTRY.get_sample_value("tritonscale_autoscaler_forecast_decisions_total", labels) is None


def test_capacity_held_for_a_proven_surge_goes_once_settled_when_none_comes_for_a_while() -> None:
    """After the fifth cron surge, with the period proven: the next surge is 13 minutes away, so
    the capacity held for this one goes once the drop has settled, and once its last scale-up
    is a stabilization window old (going sooner would reverse it within the window: a flap).
    The plain policy holds every ask of the surge for the window; both end at the same count."""

    def changes(settings: AutoscalerSettings) -> list[tuple[float, int, str]]:
        """(seconds since the fifth surge ended, new count, reason) of each change around it."""
        policy, state, current, now, seen = LatencyAutoscaler(settings), AutoscalerState(), 6, 0.0, []
        surge_end = 4 * PERIOD_S + SURGE_AT_S + SURGE_S
        while now <= surge_end + 400:
            decision, state = policy.decide(observe(cron(now), current), state, now, current)
            if decision.desired != current and now >= 4 * PERIOD_S:
                seen.append((now - surge_end, decision.desired, decision.reason))
            current = decision.desired
            now += 10.0
        return seen

    forecasting = changes(SETTINGS)
    plain = changes(replace(SETTINGS, forecast=False))
    last_up = max(since for since, count, _ in forecasting if since < 0)
    downs = [(since, count, reason) for since, count, reason in forecasting if since > 0]
    assert downs[0][0] - last_up > SETTINGS.stabilization_s, forecasting
    assert "no surge forecast within 440s, recurs every 15 min" in downs[0][2], downs[0]
    assert downs[-1][0] <= SETTINGS.stabilization_s - SURGE_S + 4 * 10, forecasting
    assert plain[-1][0] >= SETTINGS.stabilization_s, plain
    assert downs[-1][1] == plain[-1][1]
