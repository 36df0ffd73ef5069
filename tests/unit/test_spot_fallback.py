"""Spot fallback and return, as a pure policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tritonscale.api.status import SpotFallbackStatus
from tritonscale.policy.placement import Placement
from tritonscale.policy.spot_fallback import next_fallback, return_window_s, with_stand_ins

T0 = datetime(2026, 1, 1, tzinfo=UTC)
AFTER = 60.0


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_stand_ins_come_only_after_the_fallback_delay_and_cover_every_unschedulable_pod() -> None:
    state = next_fallback(SpotFallbackStatus(), 6, 2, 4, at(0), AFTER)
    assert state.stand_ins == 0 and state.missing_since == at(0)
    state = next_fallback(state, 6, 2, 4, at(59), AFTER)
    assert state.stand_ins == 0
    state = next_fallback(state, 6, 2, 4, at(60), AFTER)
    assert state.stand_ins == 4
    state = next_fallback(state, 6, 0, 6, at(70), AFTER)  # more lost: more stand in, at once
    assert state.stand_ins == 6
    placed = with_stand_ins(Placement(on_demand=2, spot=6), state)
    assert placed == Placement(on_demand=8, spot=6, stand_ins=6) and placed.desired == 8


def test_starting_spot_pods_are_not_trouble() -> None:
    """Scheduled but not ready (a model loading) must not call for stand-ins, however long."""
    state = SpotFallbackStatus()
    for second in range(0, 600, 15):
        state = next_fallback(state, 6, 2, 0, at(second), AFTER)
    assert state == SpotFallbackStatus()


def test_stand_ins_leave_half_at_a_time_only_after_spot_stays_ready_a_whole_window() -> None:
    window = return_window_s(AFTER)
    state = SpotFallbackStatus(stand_ins=6, missing_since=at(0))
    state = next_fallback(state, 6, 3, 0, at(100), AFTER)  # placed again, still starting
    assert state.stand_ins == 6 and state.healthy_since is None
    state = next_fallback(state, 6, 6, 0, at(110), AFTER)
    assert state.stand_ins == 6 and state.healthy_since == at(110)
    state = next_fallback(state, 6, 6, 0, at(110 + window - 1), AFTER)
    assert state.stand_ins == 6
    state = next_fallback(state, 6, 6, 0, at(110 + window), AFTER)
    assert state.stand_ins == 3
    state = next_fallback(state, 6, 6, 0, at(110 + 2 * window), AFTER)
    assert state.stand_ins == 1
    state = next_fallback(state, 6, 6, 0, at(110 + 3 * window), AFTER)
    assert state == SpotFallbackStatus()


def test_a_flapping_spot_market_does_not_make_replicas_ping_pong() -> None:
    """Spot gone for 70 s, back for 50 s, every two minutes: the stand-ins, once there, stay."""
    state, counts = SpotFallbackStatus(), []
    for second in range(0, 3600, 5):
        gone = second % 120 < 70
        state = next_fallback(state, 4, 0 if gone else 4, 4 if gone else 0, at(second), AFTER)
        counts.append(state.stand_ins)
    first = counts.index(4)
    assert all(count == 4 for count in counts[first:])


def test_stand_ins_never_exceed_what_spot_is_asked_to_carry() -> None:
    state = next_fallback(SpotFallbackStatus(stand_ins=6), 2, 2, 0, at(0), AFTER)
    assert state.stand_ins == 2


def test_interrupted_spot_pods_get_stand_ins_at_once_and_pending_ones_join_after_the_delay() -> None:
    state = next_fallback(SpotFallbackStatus(), 6, 6, 0, at(0), AFTER, interrupted_spot=2)
    assert state.stand_ins == 2 and state.missing_since == at(0)
    # Evicted and replaced by pods that cannot be placed: the stand-ins stay...
    state = next_fallback(state, 6, 4, 2, at(10), AFTER)
    assert state.stand_ins == 2
    # ...and more pending pods count once the delay has passed since the trouble began.
    state = next_fallback(state, 6, 3, 3, at(60), AFTER)
    assert state.stand_ins == 3
