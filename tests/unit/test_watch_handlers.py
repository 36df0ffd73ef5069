"""What the InferenceService watch asks of the schedulers (handlers.watch): when a service
first ticks, and at what period."""

from __future__ import annotations

from tests.builders import make_inference_service
from tritonscale.handlers.watch import FIRST_TICK_DELAY_S, first_tick_delay, tick_period_s


def test_services_tracked_at_once_first_tick_spread_over_a_period_each_at_its_own_phase() -> None:
    """At an operator's start every service is tracked in the same instant; the scheduler keeps
    each one's phase, so their first ticks must already be spread."""
    delays = [first_tick_delay(f"bench-{i % 5}", f"svc-{i}", 10.0) for i in range(1000)]
    assert all(FIRST_TICK_DELAY_S <= d < FIRST_TICK_DELAY_S + 10.0 for d in delays)
    per_second = [0] * 10
    for delay in delays:
        per_second[int(delay - FIRST_TICK_DELAY_S)] += 1
    assert min(per_second) >= 70 and max(per_second) <= 130, per_second
    assert first_tick_delay("nlp", "bert", 10.0) == first_tick_delay("nlp", "bert", 10.0)
    assert first_tick_delay("nlp", "bert", 2.0) < FIRST_TICK_DELAY_S + 2.0


def test_the_tick_period_is_the_spec_s_and_none_without_autoscaling() -> None:
    on = make_inference_service("bert", spec__autoscaling={"periodSeconds": 30})
    assert tick_period_s(on) == 30.0
    assert tick_period_s(make_inference_service("bert", spec__autoscaling={})) == 10.0
    assert tick_period_s(make_inference_service("bert")) is None
    # Switched off while the operator was away: one tick clears the autoscaler's conditions.
    off = make_inference_service("bert")
    off["status"] = {
        "conditions": [
            {
                "type": "ScalingActive",
                "status": "True",
                "reason": "Active",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ]
    }
    assert tick_period_s(off) == 10.0
