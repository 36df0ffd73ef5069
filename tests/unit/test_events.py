"""Events folded and rate-limited as client-go's EventCorrelator does."""

from __future__ import annotations

from tritonscale.clients.events import (
    BURST,
    COMBINED_PREFIX,
    REFILL_EVERY_S,
    SIMILAR_WINDOW_S,
    Create,
    Drop,
    EventCorrelator,
    Update,
)


def test_a_repeated_event_raises_the_count_of_the_first() -> None:
    events = EventCorrelator()
    first = events.decide("uid-1", "Warning", "Unschedulable", "0/3 nodes", 0.0)
    assert isinstance(first, Create)
    events.created(first.key, "resnet.abc")
    again = events.decide("uid-1", "Warning", "Unschedulable", "0/3 nodes", 30.0)
    assert again == Update(first.key, "resnet.abc", 2, "0/3 nodes")
    assert events.decide("uid-1", "Warning", "Unschedulable", "0/3 nodes", 60.0) == Update(
        first.key, "resnet.abc", 3, "0/3 nodes"
    )


def test_another_object_reason_or_message_is_its_own_event() -> None:
    events = EventCorrelator()
    first = events.decide("uid-1", "Normal", "ScaledUp", "2 -> 3", 0.0)
    assert isinstance(first, Create)
    events.created(first.key, "a.1")
    assert isinstance(events.decide("uid-2", "Normal", "ScaledUp", "2 -> 3", 1.0), Create)
    assert isinstance(events.decide("uid-1", "Normal", "ScaledDown", "2 -> 3", 1.0), Create)
    assert isinstance(events.decide("uid-1", "Normal", "ScaledUp", "3 -> 4", 1.0), Create)


def test_the_same_event_after_the_window_is_new() -> None:
    events = EventCorrelator()
    first = events.decide("uid-1", "Normal", "Ready", "4/4", 0.0)
    assert isinstance(first, Create)
    events.created(first.key, "a.1")
    assert isinstance(events.decide("uid-1", "Normal", "Ready", "4/4", SIMILAR_WINDOW_S + 1), Create)


def test_an_event_not_yet_named_is_not_updated() -> None:
    """The create failed or has not returned: the next one is created rather than lost."""
    events = EventCorrelator()
    events.decide("uid-1", "Normal", "Ready", "4/4", 0.0)
    assert isinstance(events.decide("uid-1", "Normal", "Ready", "4/4", 1.0), Create)


def test_many_different_messages_for_one_reason_are_combined() -> None:
    events = EventCorrelator()
    actions = [events.decide("uid-1", "Normal", "ScaledUp", f"{n} -> {n + 1}", float(n)) for n in range(9)]
    assert all(isinstance(a, Create) and not a.message.startswith(COMBINED_PREFIX) for a in actions)
    combined = events.decide("uid-1", "Normal", "ScaledUp", "9 -> 10", 9.0)
    assert isinstance(combined, Create) and combined.message == COMBINED_PREFIX + "9 -> 10"
    events.created(combined.key, "a.combined")
    later = [events.decide("uid-1", "Normal", "ScaledUp", f"{n} -> {n + 1}", float(n)) for n in (10, 11)]
    assert later == [
        Update(combined.key, "a.combined", 2, COMBINED_PREFIX + "10 -> 11"),
        Update(combined.key, "a.combined", 3, COMBINED_PREFIX + "11 -> 12"),
    ]
    # Once the earlier messages age out of the window, messages stand alone again.
    alone = events.decide("uid-1", "Normal", "ScaledUp", "3 -> 2", 12.0 + SIMILAR_WINDOW_S)
    assert isinstance(alone, Create) and alone.message == "3 -> 2"


def test_an_object_gets_a_burst_then_one_event_per_refill() -> None:
    events = EventCorrelator()
    # Distinct reasons, so nothing is folded: only the budget limits them.
    posted = [events.decide("uid-1", "Normal", f"Reason{n}", "m", 0.0) for n in range(BURST + 5)]
    assert sum(not isinstance(a, Drop) for a in posted) == BURST
    assert isinstance(events.decide("uid-1", "Normal", "Late", "m", REFILL_EVERY_S / 2), Drop)
    assert isinstance(events.decide("uid-1", "Normal", "Late", "m", REFILL_EVERY_S), Create)
    # Another object has its own budget.
    assert isinstance(events.decide("uid-2", "Normal", "Reason0", "m", 0.0), Create)


def test_a_forgotten_event_is_created_afresh() -> None:
    events = EventCorrelator()
    first = events.decide("uid-1", "Normal", "Ready", "4/4", 0.0)
    assert isinstance(first, Create)
    events.created(first.key, "a.1")
    events.forget(first.key)
    assert isinstance(events.decide("uid-1", "Normal", "Ready", "4/4", 1.0), Create)
