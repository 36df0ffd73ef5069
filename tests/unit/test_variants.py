"""Faster model variants under an accuracy budget: the pure policy, the simulator's variant
serving, and the autoscaler that leaves a cold start's growth to them."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest

from tests.builders import make_inference_service
from tritonscale.api.observation import Observation, RouterSignal
from tritonscale.api.resource import parse_inference_service
from tritonscale.policy.autoscaling import AutoscalerSettings, AutoscalerState, LatencyAutoscaler
from tritonscale.policy.queueing import (
    ServiceTime,
    full_batch_utilisation,
    mixed_latency_ms,
    predicted_latency_ms,
)
from tritonscale.policy.variants import (
    MOST_BUSY,
    MOST_STANDING_SHARE,
    NO_STANDING_MIX,
    AccuracyBudget,
    ServedCounts,
    StandingMix,
    Variant,
    VariantSettings,
    VariantState,
    bridge,
    decide_variants,
    served_since,
    standing_mix,
    steady_shares,
    window_use,
)
from tritonscale.reconcilers.variants import variant_settings
from tritonscale.sim.engine import SimEnvironment, SimResult, Simulation
from tritonscale.sim.policies import LatencyPolicy, Objective, SchedulePolicy
from tritonscale.sim.runner import Prepared, Scenario, make_policy, prepare
from tritonscale.sim.workloads import RateStep, Workload, arrivals, built_in

PRIMARY = ServiceTime(20.0, 3.0, 8)  # the simulator's default replica: 182 req/s at full batches
INT8 = Variant("int8", 0.99, 2.0)  # twice as fast, 1 point less accurate
SMALL = Variant("small", 0.95, 4.0)  # four times, 5 points less
OBJECTIVE = Objective(target_ms=100.0, percentile=95.0)


def settings(*variants: Variant, floor: float = 0.99) -> VariantSettings:
    return VariantSettings(
        target_ms=100.0, percentile=95.0, variants=variants or (INT8, SMALL), budget=AccuracyBudget(floor)
    )


def with_history(s: VariantSettings, requests: float = 1_000_000.0, *served: float) -> VariantState:
    """A state whose window has served `requests` on the primary (and `served` on variants)."""
    counts = (0.0,) * (1 + len(s.variants))
    newest = (requests, *served, *(0.0,) * (len(s.variants) - len(served)))
    return VariantState(counts=(ServedCounts(0.0, counts), ServedCounts(3000.0, newest)))


def decide(s: VariantSettings, state: VariantState, rate: float, ready: int, in_flight: float = 0.0, **kw):  # type: ignore[no-untyped-def]
    newest = state.counts[-1] if state.counts else ServedCounts(3000.0, (0.0,) * (1 + len(s.variants)))
    return decide_variants(
        s,
        state,
        newest.at + 2.0,
        ServedCounts(newest.at + 2.0, newest.requests),
        rate_rps=rate,
        in_flight=in_flight,
        ready=ready,
        arriving=kw.pop("arriving", 0),
        primary=kw.pop("primary", PRIMARY),
        **kw,
    )


# --- the pure policy -----------------------------------------------------------------------


def test_no_variant_share_while_the_ready_replicas_meet_the_objective() -> None:
    s = settings()
    choice, _ = decide(s, with_history(s), rate=500.0, ready=6)
    assert choice.shares == (0.0, 0.0)
    assert "primary only" in choice.reason


def test_an_overload_gets_the_smallest_share_that_restores_the_objective() -> None:
    s = settings()
    choice, _ = decide(s, with_history(s), rate=800.0, ready=4, arriving=4)  # 4 x 182 = 728 req/s
    int8, small = choice.shares
    assert small == 0.0, "int8 restores it and loses less accuracy per request of capacity"
    assert 0.0 < int8 < 1.0
    assert choice.predicted_ms <= 95.0
    # One grid step less would not restore it: the share is the smallest that does.
    smaller = int8 - 0.05
    loads = [(800.0 * (1.0 - smaller), PRIMARY), (800.0 * smaller, INT8.service(PRIMARY))]
    assert mixed_latency_ms(4, loads, 95.0) > 95.0
    assert "4 arriving" in choice.reason and "on int8 (accuracy 0.99)" in choice.reason


def test_the_faster_variant_takes_over_when_the_slower_cannot_restore_alone() -> None:
    s = settings()
    # int8 alone carries ~1450 req/s at full batches: at 1420 not within the objective, and any
    # mix with the primary carries less (each model batches only its own requests).
    choice, _ = decide(s, with_history(s), rate=1420.0, ready=4)
    assert choice.shares[1] > 0.0 and choice.shares[0] == 0.0


def test_when_every_variant_is_overloaded_the_one_that_saves_the_most_per_point_serves() -> None:
    """5000 req/s on one replica: no share of either variant keeps it finite. The one that saves
    the most accelerator time per point of accuracy (int8: half its time for 1 point; small:
    three quarters for 5) serves at its cap, whatever its place in the spec, so the budget lasts."""
    assert mixed_latency_ms(1, [(5000.0, SMALL.service(PRIMARY))], 95.0) == float("inf")
    for order in ((SMALL, INT8), (INT8, SMALL)):
        s = settings(*order)
        choice, _ = decide(s, with_history(s), rate=5000.0, ready=1)
        assert dict(zip((v.name for v in order), choice.shares, strict=True)) == {"int8": 1.0, "small": 0.0}
        assert "overloaded" in choice.reason and choice.predicted_ms == float("inf")
    # Not the one that loses the least a request: half a point for a tenth of its time saved
    # is 0.18 a point, int8's 0.5.
    pruned = Variant("pruned", 0.995, 1.1)
    s = settings(pruned, INT8)
    choice, _ = decide(s, with_history(s), rate=5000.0, ready=1)
    assert choice.shares == (0.0, 1.0)
    # Between two that lose nothing, the faster.
    slow, fast = Variant("slow", 1.0, 1.2), Variant("fast", 1.0, 3.0)
    s = settings(slow, fast)
    choice, _ = decide(s, with_history(s), rate=5000.0, ready=1)
    assert choice.shares == (0.0, 1.0)


def test_a_share_that_leaves_the_accelerators_near_saturation_restores_only_without_another() -> None:
    """1000 req/s on 3 ready replicas: all of it on int8 is predicted within the objective
    (59 ms) but leaves the accelerators 92 % busy at full batches, where a rising load's next
    seconds take the margin away; a share on small restores it with room, so small serves. With
    int8 alone at 950 req/s, where no share of it leaves that room, the smallest share that
    restores the objective at all serves (not the whole cap, as when nothing restores it)."""
    s = settings()
    near = [(1000.0, INT8.service(PRIMARY))]
    assert mixed_latency_ms(3, near, 95.0) <= 95.0 and full_batch_utilisation(3, near) > MOST_BUSY
    choice, _ = decide(s, with_history(s), rate=1000.0, ready=3)
    int8, small = choice.shares
    assert int8 == 0.0 and small > 0.0
    chosen = [(1000.0 * (1.0 - small), PRIMARY), (1000.0 * small, SMALL.service(PRIMARY))]
    assert full_batch_utilisation(3, chosen) <= MOST_BUSY
    assert choice.predicted_ms <= 95.0

    only_int8 = settings(INT8)
    choice, _ = decide(only_int8, with_history(only_int8), rate=950.0, ready=3)
    assert choice.shares == (pytest.approx(0.95),) and choice.predicted_ms <= 95.0
    assert full_batch_utilisation(3, [(950.0, INT8.service(PRIMARY))]) > MOST_BUSY  # even all of it


def test_a_queue_at_the_routers_counts_even_when_the_rate_alone_would_not() -> None:
    s = settings()
    calm, _ = decide(s, with_history(s), rate=600.0, ready=4, in_flight=32.0)
    queued, _ = decide(s, with_history(s), rate=600.0, ready=4, in_flight=400.0)
    assert calm.shares == (0.0, 0.0)
    assert sum(queued.shares) > 0.0


def test_a_few_requests_in_flight_at_a_low_rate_are_no_queue() -> None:
    s = settings(INT8)
    # One replica executing a batch of 8 at 12 req/s: 667 ms by Little's law, yet no queue.
    idle, _ = decide(s, with_history(s), rate=12.0, ready=1, in_flight=8.0)
    assert idle.shares == (0.0,)
    # A whole batch waiting behind it is one.
    waiting, _ = decide(s, with_history(s), rate=12.0, ready=1, in_flight=16.0)
    assert waiting.shares[0] > 0.0


def test_before_a_fit_a_couple_of_requests_in_flight_bring_no_variant_in() -> None:
    s = settings(INT8)
    # 2 in flight at 12 req/s: 167 ms by Little's law, over the objective, yet no queue.
    idle, _ = decide(s, with_history(s), rate=12.0, ready=1, in_flight=2.0, primary=None)
    assert idle.shares == (0.0,)
    # A service's first seconds: the routers' rate still lags the requests in flight (2 at
    # 1.5 req/s, 1.3 s by Little's law), and one replica can execute a batch of 8.
    starting, _ = decide(s, with_history(s), rate=1.5, ready=1, in_flight=2.0, primary=None, max_batch=8)
    assert starting.shares == (0.0,)
    # More in flight than the replica can execute is a queue.
    queue, _ = decide(s, with_history(s), rate=1.5, ready=1, in_flight=9.0, primary=None, max_batch=8)
    assert queue.shares[0] > 0.0
    # Without batching, a request waiting behind the one executing is one.
    single, _ = decide(s, with_history(s), rate=1.5, ready=1, in_flight=2.0, primary=None, max_batch=1)
    assert single.shares[0] > 0.0
    # The model's configuration unread: Triton's usual batch is taken.
    unread, _ = decide(s, with_history(s), rate=1.5, ready=1, in_flight=2.0, primary=None)
    assert unread.shares == (0.0,)


def test_what_was_served_over_a_span_and_the_variants_fraction_of_it() -> None:
    counts = (
        ServedCounts(0.0, (0.0, 0.0)),
        ServedCounts(30.0, (300.0, 0.0)),
        ServedCounts(60.0, (400.0, 300.0)),
    )
    recent = served_since(counts, since=30.0)
    assert recent is not None
    assert recent.variant_fraction == pytest.approx(0.75) and recent.rate_rps == pytest.approx(400 / 30)
    whole = served_since(counts, since=0.0)
    assert whole is not None and whole.variant_fraction == pytest.approx(300 / 700)
    # Counts that do not reach the span say nothing (not the whole history's fraction).
    assert served_since(counts, since=61.0) is None
    assert served_since(counts[:1], since=0.0) is None


def test_the_share_is_capped_by_the_accuracy_budget_left() -> None:
    s = settings(SMALL, floor=0.99)
    # The window has already lost its whole point: only what the next requests bring is left,
    # 1 point of them, which a 5-point variant may spend on a fifth of them.
    spent = with_history(s, 800_000.0, 200_000.0)  # 200k x 0.05 = 10k lost of 1M x 0.01 allowed
    use = window_use(spent.counts, s.variants, s.budget.window_s)
    assert use.lost == pytest.approx(10_000.0)
    choice, _ = decide(s, spent, rate=3000.0, ready=4)
    assert choice.shares[0] == pytest.approx(0.2)
    assert choice.budget_left_points == pytest.approx(0.0)
    fresh, _ = decide(s, with_history(s), rate=3000.0, ready=4)
    assert fresh.shares[0] > 0.2


def test_the_share_falls_step_by_step_and_not_while_the_rate_rises() -> None:
    s = settings(INT8)
    state = replace(with_history(s), shares=(0.6,))
    falling, _ = decide(s, state, rate=300.0, ready=6)
    assert falling.shares[0] == pytest.approx(0.5)
    held, _ = decide(s, state, rate=300.0, ready=6, slope_rps_per_s=5.0)
    assert held.shares[0] == pytest.approx(0.6)


def test_without_a_service_time_estimate_only_a_queue_at_the_routers_brings_a_variant_in() -> None:
    s = settings()
    choice, _ = decide(s, with_history(s), rate=5000.0, ready=2, primary=None)
    assert choice.shares == (0.0, 0.0)
    # 400 requests held at 300 req/s: 1.3 s on average (Little's law), whatever the model.
    queued, _ = decide(s, with_history(s), rate=300.0, ready=2, in_flight=400.0, primary=None)
    assert queued.shares == (0.0, 1.0), "the variant that adds the most capacity, at its cap"
    assert queued.predicted_ms == pytest.approx(1333.3, rel=0.01)


def test_the_window_keeps_only_its_own_counts() -> None:
    s = settings(INT8)
    state = VariantState()
    for minute in range(120):
        _, state = decide_variants(
            s,
            state,
            60.0 * minute,
            ServedCounts(60.0 * minute, (1000.0 * minute, 0.0)),
            rate_rps=10.0,
            in_flight=0.0,
            ready=1,
            arriving=0,
            primary=PRIMARY,
        )
    assert state.counts[0].at >= 60.0 * 119 - 3600.0 - 2.0
    assert window_use(state.counts, s.variants, 3600.0).requests == pytest.approx(60_000.0)


def test_bridge_is_how_much_more_the_ready_replicas_carry_within_the_budget() -> None:
    s = settings(INT8, floor=0.99)
    assert bridge(s, with_history(s), None, 1000.0, 45.0) == 1.0
    # int8 loses 1 point a request, the budget is 1 point: it may take every request: 2x.
    assert bridge(s, with_history(s), PRIMARY, 1000.0, 45.0) == pytest.approx(2.0)
    tight = settings(INT8, floor=0.995)
    exhausted = with_history(tight, 500_000.0, 500_000.0)
    assert 1.0 < bridge(tight, exhausted, PRIMARY, 1000.0, 45.0) < 2.0
    assert bridge(replace(s, variants=()), with_history(s), PRIMARY, 1000.0, 45.0) == 1.0


# --- a standing share (steady_spend) --------------------------------------------------------


def test_a_steady_spend_is_a_standing_share_on_the_variant_that_saves_the_most() -> None:
    half = replace(settings(INT8, SMALL, floor=0.995), steady_spend=0.5)
    # Half of 0.5 points: 25 % on int8 (1 point a request) saves 12.5 % of the accelerators;
    # 5 % on small (5 points) saves only 3.75 %.
    assert steady_shares(half) == pytest.approx((0.25, 0.0))
    mix = standing_mix(half)
    assert mix.share == pytest.approx(0.25) and mix.speedup == 2.0 and mix.cost == pytest.approx(0.875)
    assert steady_shares(settings(INT8, SMALL)) == (0.0, 0.0)
    assert standing_mix(settings(INT8, SMALL)) == NO_STANDING_MIX
    assert standing_mix(None) == NO_STANDING_MIX
    # The whole of a 1-point budget on int8 would be every request, and a lossless variant would
    # take all: the model keeps at least half, so what the autoscaler sizes from stays measured.
    assert MOST_STANDING_SHARE == 0.5
    assert steady_shares(replace(settings(INT8, floor=0.99), steady_spend=1.0)) == (0.5,)
    lossless = Variant("same", 1.0, 1.5)
    assert steady_shares(replace(settings(lossless, floor=0.999), steady_spend=0.1)) == (0.5,)
    # A spend too small for one grid step is none, and says nothing of a standing share.
    tiny = replace(settings(INT8, floor=0.995), steady_spend=0.05)
    assert standing_mix(tiny) == NO_STANDING_MIX
    choice, _ = decide(tiny, with_history(tiny), rate=500.0, ready=6)
    assert "standing" not in choice.reason and "primary only" in choice.reason


def test_a_steady_variant_the_user_names_serves_the_standing_share() -> None:
    """steadyVariant: small (5 points) takes the standing share though int8 would save more, at
    what the spend allows it (5 %); surges may still use either. A name that is not served
    gives no standing share."""
    named = replace(settings(INT8, SMALL, floor=0.995), steady_spend=0.5, steady_variant="small")
    assert steady_shares(named) == pytest.approx((0.0, 0.05))
    assert standing_mix(named).speedup == 4.0
    assert steady_shares(replace(named, steady_variant="int8")) == pytest.approx((0.25, 0.0))
    assert steady_shares(replace(named, variants=(INT8,))) == (0.0,)
    spec = make_inference_service("bert", "nlp")
    spec["spec"]["model"] = {
        "repository": "/models",
        "names": ["bert"],
        "variants": [
            {"name": "int8", "accuracy": 0.99, "speedup": 2},
            {"name": "small", "accuracy": 0.95, "speedup": 4},
        ],
    }
    spec["spec"]["autoscaling"] = {"accuracy": {"floor": 0.995, "steadySpend": 0.5, "steadyVariant": "small"}}
    from_spec = variant_settings(parse_inference_service(spec))
    assert from_spec is not None and steady_shares(from_spec) == pytest.approx((0.0, 0.05))


def test_a_standing_share_is_served_while_calm_and_the_surge_path_adds_to_it() -> None:
    s = replace(settings(INT8, SMALL, floor=0.995), steady_spend=0.5)
    calm, state = decide(s, with_history(s), rate=500.0, ready=6)
    assert calm.shares == pytest.approx((0.25, 0.0))
    assert "with the standing share" in calm.reason
    surge, state = decide(s, state, rate=800.0, ready=4, arriving=4)  # 4 x 182 = 728 req/s
    assert surge.shares[0] > 0.25 + 1e-9 and surge.shares[1] == 0.0
    # As capacity arrives the share steps down, never below the standing share.
    shares = surge.shares
    for _ in range(20):
        later, state = decide(s, state, rate=500.0, ready=8)
        assert later.shares[0] <= shares[0] + 1e-9
        assert later.shares[0] >= 0.25 - 1e-9
        shares = later.shares
    assert shares == pytest.approx((0.25, 0.0))


def test_a_surge_the_model_predicts_is_answered_though_the_measured_percentile_is_calm() -> None:
    s = replace(settings(INT8, SMALL, floor=0.995), steady_spend=0.5)
    state = replace(with_history(s), shares=(0.25, 0.0))
    kwargs = {"arriving": 4, "observed_ms": 40.0, "slope_rps_per_s": 20.0}
    plain, _ = decide(settings(INT8, SMALL, floor=0.995), with_history(s), rate=800.0, ready=4, **kwargs)
    steady, _ = decide(s, state, rate=800.0, ready=4, **kwargs)
    assert plain.shares[0] > 0.25
    assert steady.shares[0] > 0.25, steady.reason


def test_the_surge_path_never_serves_less_than_the_standing_share_saves() -> None:
    """At a light load the split predicts a little worse than the model alone (smaller batches):
    the standing share is no overload, and no smaller share of another variant replaces it."""
    s = replace(settings(INT8, SMALL, floor=0.995), steady_spend=0.5)
    state = with_history(s)
    for _ in range(5):
        choice, state = decide(s, state, rate=300.0, ready=2)
        assert choice.shares == pytest.approx((0.25, 0.0)), choice.reason


def test_the_other_variant_steps_down_to_the_standing_share_not_beside_it() -> None:
    s = replace(settings(INT8, SMALL, floor=0.995), steady_spend=0.5)
    state = replace(with_history(s), shares=(0.0, 0.6))  # small took a surge
    seen = []
    for _ in range(10):
        choice, state = decide(s, state, rate=300.0, ready=8)
        assert sum(choice.shares) <= 1.0 and min(choice.shares) == 0.0, "one variant at a time"
        seen.append(choice.shares)
    assert seen[0][1] == pytest.approx(0.5)
    # While small serves it saves more than the standing share would (12.5 %), then the
    # standing share takes over at once.
    for int8, small in seen:
        assert (small * 0.75 > 0.125 and int8 == 0.0) or (int8, small) == pytest.approx((0.25, 0.0))
    assert seen[-1] == pytest.approx((0.25, 0.0))


def _smooth_runs(duration_s: float, *names: str) -> tuple[dict[str, SimResult], Scenario, Prepared]:
    """Each policy's run of `smooth` (1,000 req/s, seed 2) with the int8 and small variants;
    the scenario and its preparation, for more policies."""
    env = SimEnvironment(variants=(INT8, SMALL))
    scenario = Scenario(built_in("smooth", duration_s, 1000.0, 2), 2, env, OBJECTIVE)
    prepared = prepare(scenario)
    results = {}
    for name in names:
        policy = make_policy(name, scenario, prepared.needed, prepared.table, prepared.tested)
        results[name] = prepared.simulation.run(policy, prepared.initial, duration_s)
    return results, scenario, prepared


def test_a_steady_spend_keeps_the_accuracy_within_the_budget_in_the_simulator() -> None:
    results, _, _ = _smooth_runs(1200.0, "latency-variants@0.5", "latency-variants@0.5:0.5")
    surges_only, steady = results["latency-variants@0.5"], results["latency-variants@0.5:0.5"]
    assert steady.policy == "latency-variants@0.5:0.5"
    assert steady.variants is not None and surges_only.variants is not None
    assert sum(steady.variants.shares) >= 0.25 - 0.01
    assert steady.variants.worst_window_accuracy >= 0.995
    assert steady.replica_hours < surges_only.replica_hours
    assert steady.slo_attainment >= 0.99


def test_a_named_steady_variant_serves_the_steady_spend_in_the_simulator() -> None:
    """latency-variants@POINTS:SPEND=NAME, as spec.autoscaling.accuracy.steadyVariant: the
    standing share goes to the variant named, not to the one that would save the most (int8)."""
    results, scenario, prepared = _smooth_runs(
        600.0, "latency-variants@0.5:0.5", "latency-variants@0.5:0.5=small"
    )
    chosen, named = results["latency-variants@0.5:0.5"], results["latency-variants@0.5:0.5=small"]
    assert named.policy == "latency-variants@0.5:0.5=small"
    assert chosen.variants is not None and named.variants is not None
    # A quarter point of 5-point losses: a 0.05 share of small, where int8 took 0.25.
    assert chosen.variants.shares[0] >= 0.25 - 0.01 and named.variants.shares[0] < 0.25 - 0.01
    assert named.variants.shares[1] >= 0.05 - 0.005 > chosen.variants.shares[1]
    assert named.variants.worst_window_accuracy >= 0.995
    with pytest.raises(ValueError, match="not one of the variants"):
        make_policy(
            "latency-variants@0.5:0.5=fp8", scenario, prepared.needed, prepared.table, prepared.tested
        )


# --- the autoscaler with a bridge ----------------------------------------------------------


def ramp_state(
    autoscaler: LatencyAutoscaler, ready: int, slope: float = 10.0
) -> tuple[AutoscalerState, float]:
    """Ten minutes of a steady ramp from 400 req/s, observed every 10 s."""
    state = AutoscalerState()
    now = 0.0
    for step in range(60):
        now = 10.0 * step
        observation = Observation(
            arrival_rate_rps=400.0 + slope * step,
            latency_ms=60.0,
            ready_replicas=ready,
            mean_compute_ms=PRIMARY.batch_ms(4),
            average_batch=4.0,
        )
        _, state = autoscaler.decide(observation, state, now, ready)
    return state, now


def test_a_bridge_leaves_the_growth_within_a_cold_start_to_the_variants() -> None:
    autoscaler = LatencyAutoscaler(
        AutoscalerSettings(target_ms=100.0, max_replicas=40, max_batch=8, cold_start_s=60.0)
    )
    state, now = ramp_state(autoscaler, ready=8, slope=20.0)
    observation = Observation(
        arrival_rate_rps=1600.0, latency_ms=60.0, ready_replicas=8, mean_compute_ms=32.0, average_batch=4.0
    )
    alone, _ = autoscaler.decide(observation, state, now + 10.0, 8)
    default, _ = autoscaler.decide(observation, state, now + 10.0, 8, bridge=1.0)
    bridged, _ = autoscaler.decide(observation, state, now + 10.0, 8, bridge=2.0)
    assert default == alone
    assert alone.model_replicas is not None and bridged.model_replicas is not None
    assert bridged.model_replicas < alone.model_replicas
    # Never below what the present rate needs: a bridge as wide as any growth sizes for now.
    present, _ = autoscaler.decide(observation, state, now + 10.0, 8, bridge=100.0)
    assert present.model_replicas is not None
    assert bridged.model_replicas >= present.model_replicas > 1


def test_feedback_is_not_learnt_while_a_variant_served() -> None:
    autoscaler = LatencyAutoscaler(AutoscalerSettings(target_ms=100.0, max_replicas=40, max_batch=8))
    state, now = ramp_state(autoscaler, ready=6)
    observation = Observation(
        arrival_rate_rps=790.0, latency_ms=30.0, ready_replicas=6, mean_compute_ms=32.0, average_batch=4.0
    )
    later = now + 300.0
    _, learnt = autoscaler.decide(observation, state, later, 6)
    _, kept = autoscaler.decide(replace(observation, variant_share=0.3), state, later, 6)
    assert learnt.corrections != state.corrections
    assert kept.corrections == state.corrections


def test_the_autoscaler_sizes_for_a_standing_mix_only_while_the_variants_serve_it() -> None:
    autoscaler = LatencyAutoscaler(AutoscalerSettings(target_ms=100.0, max_replicas=40, max_batch=8))
    state, now = ramp_state(autoscaler, ready=6, slope=0.0)
    observation = Observation(
        arrival_rate_rps=1200.0, latency_ms=60.0, ready_replicas=6, mean_compute_ms=32.0, average_batch=4.0
    )
    mix = StandingMix(share=0.5, speedup=2.0)
    alone, _ = autoscaler.decide(observation, state, now + 10.0, 6)
    served, _ = autoscaler.decide(replace(observation, variant_share=0.5), state, now + 10.0, 6, standing=mix)
    unserved, _ = autoscaler.decide(observation, state, now + 10.0, 6, standing=mix)
    assert alone.model_replicas is not None and served.model_replicas is not None
    assert served.model_replicas < alone.model_replicas
    # A change says the mix it was sized for.
    overloaded = replace(observation, variant_share=0.5, latency_ms=300.0)
    scaled, _ = autoscaler.decide(overloaded, state, now + 10.0, 6, standing=mix)
    assert scaled.desired > 6
    assert "sized for 50 % served on a faster variant all the time" in scaled.reason
    assert "faster variant" not in alone.reason
    # The variants' servers down (nothing served on them): the model alone is sized for.
    assert unserved.model_replicas == alone.model_replicas


def test_a_backlog_is_drained_at_the_standing_mixs_cost_per_request() -> None:
    """20,000 queued: the replicas that drain it within drain_s carry a request at the mix's
    cost (0.75 of the model's time for half on a 2x variant), so about a quarter fewer."""
    autoscaler = LatencyAutoscaler(AutoscalerSettings(target_ms=100.0, max_replicas=400, max_batch=8))
    state, now = ramp_state(autoscaler, ready=6, slope=0.0)
    queued = Observation(
        arrival_rate_rps=1200.0,
        latency_ms=300.0,
        ready_replicas=6,
        mean_compute_ms=32.0,
        average_batch=4.0,
        pending_requests=20_000.0,
    )
    mix = StandingMix(share=0.5, speedup=2.0)
    alone, _ = autoscaler.decide(queued, state, now + 10.0, 6)
    mixed, _ = autoscaler.decide(replace(queued, variant_share=0.5), state, now + 10.0, 6, standing=mix)
    assert alone.model_replicas is not None and mixed.model_replicas is not None
    assert "20000 queued, drained within" in alone.reason  # the drain sizes it
    assert mixed.model_replicas == pytest.approx(alone.model_replicas * mix.cost, abs=1.0)


def test_rates_are_compared_while_the_standing_share_serves() -> None:
    """The routers' and the metrics' rates 60x apart for minutes: the pause is noticed with a
    standing share serving as without one (it is what the fleet is sized for)."""
    autoscaler = LatencyAutoscaler(AutoscalerSettings(target_ms=100.0, max_replicas=20, max_batch=8))
    mix = StandingMix(share=0.5, speedup=2.0)
    state, current = AutoscalerState(), 2
    for t in (5.0 * i for i in range(1, 41)):
        router = RouterSignal(10.0, t, 10.0, 0.0, None, in_flight=1.0, age_s=0.0)
        observation = Observation(
            arrival_rate_rps=600.0,
            latency_ms=30.0,
            ready_replicas=2,
            mean_compute_ms=23.0,
            average_batch=1.0,
            router=router,
            variant_share=0.5,
        )
        decision, state = autoscaler.decide(observation, state, t, current, standing=mix)
        current = decision.desired
    assert decision.feedback_paused is not None
    assert "routers count 10 req/s, the metrics 600" in decision.feedback_paused


def test_feedback_is_learnt_at_the_standing_share_and_not_beyond_it() -> None:
    autoscaler = LatencyAutoscaler(AutoscalerSettings(target_ms=100.0, max_replicas=40, max_batch=8))
    state, now = ramp_state(autoscaler, ready=6)
    observation = Observation(
        arrival_rate_rps=790.0, latency_ms=30.0, ready_replicas=6, mean_compute_ms=32.0, average_batch=4.0
    )
    mix = StandingMix(share=0.25, speedup=2.0)
    later = now + 300.0
    _, at_standing = autoscaler.decide(
        replace(observation, variant_share=0.26), state, later, 6, standing=mix
    )
    _, beyond = autoscaler.decide(replace(observation, variant_share=0.4), state, later, 6, standing=mix)
    _, short = autoscaler.decide(replace(observation, variant_share=0.15), state, later, 6, standing=mix)
    assert at_standing.corrections != state.corrections
    assert beyond.corrections == state.corrections
    assert short.corrections == state.corrections


def test_the_error_learnt_at_a_standing_share_is_the_mix_predictions() -> None:
    autoscaler = LatencyAutoscaler(AutoscalerSettings(target_ms=100.0, max_replicas=40, max_batch=8))
    state, now = ramp_state(autoscaler, ready=6)
    service = autoscaler.service_time(state)
    assert service is not None
    mix = StandingMix(share=0.5, speedup=4.0)
    # At 1300 req/s on 6 replicas the mix predicts less than the model alone (68.6 against 70.3 ms).
    assert mix.latency_ms(6, 1300.0, service, 95.0) < predicted_latency_ms(6, 1300.0, service, 95.0)
    observation = Observation(
        arrival_rate_rps=1300.0,
        latency_ms=60.0,
        ready_replicas=6,
        mean_compute_ms=32.0,
        average_batch=4.0,
        variant_share=0.5,
    )
    _, learnt = autoscaler.decide(observation, state, now + 300.0, 6, standing=mix)
    before = {b: r for b, r, _ in state.corrections}
    changed = [(b, r) for b, r, _ in learnt.corrections if before.get(b) != r]
    assert len(changed) == 1
    bucket, ratio = changed[0]
    low, high = autoscaler.settings.feedback_bounds
    expected = min(max(60.0 / mix.latency_ms(6, 1300.0, service, 95.0), low), high)
    if bucket in before:
        smoothing = autoscaler.settings.feedback_smoothing
        expected = (1 - smoothing) * before[bucket] + smoothing * expected
    assert ratio == pytest.approx(expected, rel=1e-9)


def test_a_bridge_is_dropped_with_a_standing_mix_the_variants_do_not_serve() -> None:
    autoscaler = LatencyAutoscaler(
        AutoscalerSettings(target_ms=100.0, max_replicas=40, max_batch=8, cold_start_s=60.0)
    )
    state, now = ramp_state(autoscaler, ready=8, slope=20.0)
    observation = Observation(
        arrival_rate_rps=1600.0, latency_ms=60.0, ready_replicas=8, mean_compute_ms=32.0, average_batch=4.0
    )
    mix = StandingMix(share=0.5, speedup=2.0)
    plain, _ = autoscaler.decide(observation, state, now + 10.0, 8)
    unserved, _ = autoscaler.decide(observation, state, now + 10.0, 8, bridge=2.0, standing=mix)
    served, _ = autoscaler.decide(
        replace(observation, variant_share=0.5), state, now + 10.0, 8, bridge=2.0, standing=mix
    )
    assert unserved.model_replicas == plain.model_replicas
    assert served.model_replicas is not None and plain.model_replicas is not None
    assert served.model_replicas < plain.model_replicas


# --- the simulator ------------------------------------------------------------------------


class Route:
    """Routes a fixed share to the variants and holds the replicas."""

    name = "route"
    period_s = 2.0

    def __init__(self, shares: tuple[float, ...], replicas: int) -> None:
        self.shares = shares
        self.replicas = replicas
        self.seen: list[tuple[float, ...]] = []
        self.observed: list[Observation] = []

    def step(self, view) -> tuple[int, str]:  # type: ignore[no-untyped-def]
        view.route_variants(self.shares)
        self.seen.append(view.served_counts())
        if view.now > 60:
            self.observed.append(view.observation(30.0, 0.0, 0.0))
        return self.replicas, "fixed"


def steady(rate: float, duration: float) -> np.ndarray:
    return arrivals(Workload("steady", (RateStep(0.0, rate),), duration), 5)


def test_variants_that_serve_nothing_change_nothing() -> None:
    times = steady(700.0, 300.0)
    plain = Simulation(times, SimEnvironment(), 100.0, 95.0).run(Route((), 4), 4, 300.0)
    env = SimEnvironment(variants=(INT8,))
    unused = Simulation(times, env, 100.0, 95.0).run(Route((0.0,), 4), 4, 300.0)
    np.testing.assert_array_equal(plain.latencies_s, unused.latencies_s)
    assert unused.variants is not None and unused.variants.shares == (0.0,)
    assert unused.variants.served_accuracy == 1.0


def test_a_share_on_a_faster_variant_serves_that_share_faster() -> None:
    times = steady(800.0, 300.0)  # 4 replicas carry 728 req/s on the primary alone: overloaded
    env = SimEnvironment(variants=(INT8,))
    primary_only = Simulation(times, env, 100.0, 95.0).run(Route((0.0,), 4), 4, 300.0)
    route = Route((0.5,), 4)
    shared = Simulation(times, env, 100.0, 95.0).run(route, 4, 300.0)
    assert primary_only.slo_attainment < 0.5
    assert shared.slo_attainment > 0.99
    assert shared.variants is not None
    assert shared.variants.shares[0] == pytest.approx(0.5, abs=0.01)
    assert shared.variants.served_accuracy == pytest.approx(1.0 - 0.5 * 0.01, abs=1e-4)
    # What the replicas counted, as the policy reads it, agrees with what they served.
    primary, int8 = route.seen[-1]
    assert int8 / (primary + int8) == pytest.approx(0.5, abs=0.01)
    # The observation's service times are the primary's; its variant share is measured.
    observation = route.observed[-1]
    assert observation.variant_share == pytest.approx(0.5, abs=0.05)
    for batch, ms, _ in observation.batch_profile:
        assert ms == pytest.approx(PRIMARY.batch_ms(batch))


def test_initial_shares_are_a_fixed_mix_from_the_first_request() -> None:
    """A policy that never routes keeps the environment's shares: the fixed-mix baseline."""
    times = steady(800.0, 300.0)
    mixed = SimEnvironment(variants=(INT8,), initial_shares=(0.5,))
    result = Simulation(times, mixed, 100.0, 95.0).run(SchedulePolicy("static", [4], mixed), 4, 300.0)
    assert result.slo_attainment > 0.99  # four replicas carry it only with half on int8
    assert result.variants is not None and result.variants.shares[0] == pytest.approx(0.5, abs=0.01)
    first_minute = result.latencies_s[times < 60.0]
    assert np.isfinite(first_minute).all() and float(np.percentile(first_minute, 95)) < 0.1
    with pytest.raises(ValueError, match="do not fit"):
        SimEnvironment(variants=(INT8,), initial_shares=(0.5, 0.1))
    with pytest.raises(ValueError, match="do not fit"):
        SimEnvironment(initial_shares=(0.5,))


def test_routing_refuses_shares_that_do_not_fit() -> None:
    env = SimEnvironment(variants=(INT8,))
    with pytest.raises(ValueError, match="do not fit"):
        Simulation(steady(10.0, 30.0), env, 100.0, 95.0).run(Route((0.7, 0.5), 1), 1, 30.0)
    with pytest.raises(ValueError, match="no variants"):
        Simulation(steady(10.0, 30.0), SimEnvironment(), 100.0, 95.0).run(Route((0.5,), 1), 1, 30.0)


def test_the_autoscaler_with_variants_rides_a_flash_crowd_within_its_budget() -> None:
    env = SimEnvironment(variants=(INT8, SMALL))
    scenario = Scenario(built_in("flash-crowd", 1200.0, 1000.0, 2), 2, env, OBJECTIVE)
    prepared = prepare(scenario)
    results = {}
    for name in ("latency", "latency-variants@1"):
        policy = make_policy(name, scenario, prepared.needed, prepared.table, prepared.tested)
        results[name] = prepared.simulation.run(policy, prepared.initial, 1200.0)
    alone, bridged = results["latency"], results["latency-variants@1"]
    assert alone.variants is not None and sum(alone.variants.shares) == 0.0
    assert bridged.variants is not None and sum(bridged.variants.shares) > 0.0
    assert bridged.slo_attainment > alone.slo_attainment
    assert bridged.replica_hours < alone.replica_hours
    assert bridged.variants.worst_window_accuracy >= 0.99


def test_latency_variants_needs_variants_in_the_environment() -> None:
    with pytest.raises(ValueError, match="variants"):
        LatencyPolicy(SimEnvironment(), OBJECTIVE, accuracy=AccuracyBudget(0.99))


def test_simulate_runs_variants_and_says_what_they_served() -> None:
    from click.testing import CliRunner

    from tritonscale.cli.simulate import simulate

    runner = CliRunner()
    args = ["--workload", "flash-crowd", "--duration-s", "600", "--variant", "int8:0.99:2", "--json", "-"]
    result = runner.invoke(simulate, [*args, "--policy", "latency,latency-variants@0.5"])
    assert result.exit_code == 0, result.output
    import json

    records = {r["policy"]: r for r in json.loads(result.stdout)}
    assert records["latency"]["variant_share"] == 0.0
    assert records["latency-variants@0.5"]["environment"]["variants"][0]["name"] == "int8"
    assert records["latency-variants@0.5"]["served_accuracy"] >= 0.995 - 1e-9
    refused = runner.invoke(simulate, ["--policy", "latency-variants"])
    assert refused.exit_code == 2 and "--variant" in refused.output
    refused = runner.invoke(simulate, [*args, "--policy", "latency-variants@1:0.25=fp8"])
    assert refused.exit_code == 2 and "'fp8' is not one of the --variant names (int8)" in refused.output
    for bad, why in (
        ("int8:0.99", "NAME:ACCURACY:SPEEDUP"),
        ("int8:1.5:2", "(0, 1]"),
        ("int8:0.9:1", "faster"),
        ("in,t8:0.99:2", "model name"),
    ):
        refused = runner.invoke(simulate, ["--variant", bad])
        assert refused.exit_code == 2 and why in refused.output, refused.output


def test_a_scale_up_beyond_the_plain_model_counts_the_plain_model_at_the_standing_mix() -> None:
    """A learnt correction (2x) asks for more than the plain model: the reason says what the
    plain model wants at the mix being served, fewer replicas than for the model alone."""
    autoscaler = LatencyAutoscaler(AutoscalerSettings(target_ms=100.0, max_replicas=60, max_batch=8))
    state, now = ramp_state(autoscaler, ready=6, slope=0.0)
    state = replace(state, corrections=tuple((bucket, 2.0, now) for bucket in range(200)))
    observation = Observation(
        arrival_rate_rps=1200.0, latency_ms=150.0, ready_replicas=6, mean_compute_ms=32.0, average_batch=4.0
    )
    mix = StandingMix(share=0.5, speedup=2.0)
    alone, _ = autoscaler.decide(observation, state, now + 10.0, 6)
    mixed, _ = autoscaler.decide(replace(observation, variant_share=0.5), state, now + 10.0, 6, standing=mix)

    def plain_count(reason: str) -> int:
        found = re.search(r"(\d+) by the plain model; latency measured 2\.00x", reason)
        assert found is not None, reason
        return int(found.group(1))

    assert plain_count(mixed.reason) < plain_count(alone.reason)
