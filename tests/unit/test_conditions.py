"""Status and conditions computed from what the Deployments report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.builders import make_inference_service
from tritonscale.api.resource import parse_inference_service
from tritonscale.api.status import ConditionStatus, ConditionType, SpotFallbackStatus
from tritonscale.status import DeploymentState, StackState, stack_status

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def status_for(state: StackState, desired: int = 3, previous: dict | None = None, now: datetime = NOW):  # type: ignore[no-untyped-def]
    obj = make_inference_service()
    obj["metadata"]["generation"] = 4
    if previous is not None:
        obj["status"] = previous
    return stack_status(
        parse_inference_service(obj), desired, state, now, "sel", "http://svc.default.svc:8000"
    )


def conditions(status) -> dict[str, tuple[str, str]]:  # type: ignore[no-untyped-def]
    return {c.type: (c.status.value, c.reason) for c in status.conditions}


def test_all_ready_is_ready_and_rolled_out() -> None:
    state = StackState(
        on_demand=DeploymentState("a-ondemand", desired=1, ready=1, updated=1),
        spot=DeploymentState("a-spot", desired=2, ready=2, updated=2),
        router=DeploymentState("a-router", desired=2, ready=2, updated=2),
    )
    status = status_for(state)
    assert conditions(status) == {
        "Ready": ("True", "Serving"),
        "Progressing": ("False", "RolledOut"),
        "Degraded": ("False", "AsExpected"),
    }
    assert (status.replicas, status.on_demand_replicas, status.spot_replicas, status.router_replicas) == (
        3,
        1,
        2,
        2,
    )
    assert status.observed_generation == 4
    assert status.selector == "sel" and status.endpoint == "http://svc.default.svc:8000"
    assert all(c.observed_generation == 4 for c in status.conditions)


def test_short_of_the_desired_replicas_is_not_ready_but_not_degraded_while_they_start() -> None:
    """1 of 3 replicas ready (spot reclaimed, or a scale-up) is not the capacity asked for."""
    state = StackState(
        on_demand=DeploymentState("a-ondemand", desired=3, ready=1, updated=3),
        spot=None,
        router=DeploymentState("a-router", desired=2, ready=1, updated=2),
    )
    found = conditions(status_for(state))
    assert found["Ready"] == ("False", "ScalingUp")
    assert found["Progressing"] == ("True", "RollingOut")
    assert found["Degraded"] == ("False", "AsExpected")


def test_pods_the_scheduler_cannot_place_show_its_reason() -> None:
    message = "0/6 nodes are available: 6 node(s) didn't match Pod's node affinity/selector."
    state = StackState(
        on_demand=DeploymentState("a-ondemand", desired=3, ready=1, updated=3),
        spot=None,
        router=DeploymentState("a-router", desired=2, ready=2, updated=2),
        unschedulable=((2, message),),
    )
    status = status_for(state)
    assert conditions(status)["Ready"] == ("False", "Unschedulable")
    assert conditions(status)["Degraded"] == ("True", "Unschedulable")
    degraded = status.condition(ConditionType.DEGRADED)
    # What the scheduler said, then what to do about it.
    assert degraded is not None and degraded.message == (
        f"2 pods cannot be scheduled: {message.rstrip('.')}. "
        "Add nodes they fit on, or lower spec.resources or the replica count"
    )


def test_a_spec_that_was_not_applied_is_never_rolled_out() -> None:
    """Children of the previous generation are all ready, but the new spec was refused."""
    rolled_out = DeploymentState("a-ondemand", 1, 1, 1)
    state = StackState(
        rolled_out, None, DeploymentState("a-router", 1, 1, 1), problem=("ApplyRejected", "memory: too much")
    )
    found = conditions(status_for(state, desired=1))
    assert found["Progressing"] == ("False", "ApplyRejected")
    assert found["Degraded"] == ("True", "ApplyRejected")


def test_no_ready_replica_or_router_is_not_ready() -> None:
    router = DeploymentState("a-router", desired=2, ready=2, updated=2)
    none_ready = StackState(DeploymentState("a-ondemand", desired=2), None, router)
    assert conditions(status_for(none_ready))["Ready"] == ("False", "NoReadyReplicas")
    no_router = StackState(DeploymentState("a-ondemand", 2, 2, 2), None, DeploymentState("a-router", 2))
    assert conditions(status_for(no_router))["Ready"] == ("False", "RouterUnavailable")
    zero = StackState(DeploymentState("a-ondemand", 0), None, router)
    assert conditions(status_for(zero, desired=0))["Ready"] == ("False", "ScaledToZero")


def test_failures_and_problems_are_degraded() -> None:
    failing = StackState(
        DeploymentState("a-ondemand", 2, 0, 2, failure="pods stuck"),
        None,
        DeploymentState("a-router", 1, 1, 1),
    )
    status = status_for(failing)
    assert conditions(status)["Degraded"] == ("True", "DeploymentFailing")
    problem = StackState(None, None, None, problem=("ApplyRejected", "Deployment x: forbidden"))
    status = status_for(problem)
    assert conditions(status)["Degraded"] == ("True", "ApplyRejected")
    assert status.observed_generation is None  # a generation that was not applied is not "observed"


def test_transition_time_moves_only_when_status_flips() -> None:
    ready = StackState(DeploymentState("a", 1, 1, 1), None, DeploymentState("r", 1, 1, 1))
    first = status_for(ready, desired=1)
    later = NOW + timedelta(minutes=5)
    again = status_for(ready, desired=1, previous=first.to_wire(), now=later)
    assert again.condition(ConditionType.READY).last_transition_time == NOW  # type: ignore[union-attr]
    lost = StackState(DeploymentState("a", 1, 0, 1), None, DeploymentState("r", 1, 1, 1))
    flipped = status_for(lost, desired=1, previous=first.to_wire(), now=later)
    ready_condition = flipped.condition(ConditionType.READY)
    assert ready_condition is not None and ready_condition.status == ConditionStatus.FALSE
    assert ready_condition.last_transition_time == later


def test_conditions_of_other_loops_are_kept() -> None:
    previous = {
        "conditions": [
            {
                "type": "MetricsAvailable",
                "status": "False",
                "reason": "PrometheusUnreachable",
                "message": "x",
                "lastTransitionTime": "2025-12-31T00:00:00Z",
            }
        ],
        "observedLatencyMilliseconds": 42.0,
    }
    state = StackState(DeploymentState("a", 1, 1, 1), None, DeploymentState("r", 1, 1, 1))
    status = status_for(state, desired=1, previous=previous)
    assert conditions(status)["MetricsAvailable"] == ("False", "PrometheusUnreachable")
    assert status.observed_latency_milliseconds == 42.0
    assert [c.type for c in status.conditions] == ["Ready", "Progressing", "Degraded", "MetricsAvailable"]


def test_the_kubectl_columns_are_derived_from_the_fields_they_show() -> None:
    state = StackState(
        on_demand=DeploymentState("a-ondemand", desired=3, ready=1, updated=3),
        spot=DeploymentState("a-spot", desired=2, ready=1, updated=2),
        router=DeploymentState("a-router", desired=2, ready=2, updated=2),
    )
    status = status_for(state, desired=5)
    wire = status.to_wire()
    assert wire["readyOfDesired"] == "2/5"
    assert "latencyOfObjective" not in wire  # no objective without the autoscaler

    measured = status.model_copy(
        update={
            "target_latency_milliseconds": 100.0,
            "latency_percentile": 99.0,
            "observed_latency_milliseconds": 82.4,
            # A stale derived value read back from the API server is recomputed, never echoed.
            "ready_of_desired": "9/9",
        }
    )
    assert measured.to_wire()["latencyOfObjective"] == "p99 82/100ms"
    assert measured.to_wire()["readyOfDesired"] == "2/5"
    unmeasured = measured.model_copy(update={"observed_latency_milliseconds": None})
    assert unmeasured.to_wire()["latencyOfObjective"] == "p99 -/100ms"


def test_every_not_ready_message_says_where_to_look_next() -> None:
    router = DeploymentState("a-router", desired=2, ready=2, updated=2)
    cases = {
        "NoReadyReplicas": (StackState(DeploymentState("a-ondemand", desired=2), None, router), 3),
        "RouterUnavailable": (
            StackState(DeploymentState("a-ondemand", 3, 3, 3), None, DeploymentState("a-router", 2)),
            3,
        ),
        "ScaledToZero": (StackState(DeploymentState("a-ondemand", 0), None, router), 0),
        # None ready because none can be placed: the scheduler's reason, not a vague "no replicas".
        "Unschedulable": (
            StackState(
                DeploymentState("a-ondemand", desired=2),
                None,
                router,
                unschedulable=((2, "0/1 nodes are available: 1 Insufficient cpu."),),
            ),
            2,
        ),
    }
    hints = {
        "NoReadyReplicas": "kubectl describe pods -l sel",
        "RouterUnavailable": "kubectl describe deployment a-router",
        "ScaledToZero": "spec.replicas is 0",
        "Unschedulable": "1 Insufficient cpu. Add nodes they fit on",
    }
    for reason, (state, desired) in cases.items():
        ready = status_for(state, desired=desired).condition(ConditionType.READY)
        assert ready is not None and ready.reason == reason
        assert hints[reason] in ready.message, ready.message


def test_a_failing_deployment_names_the_command_that_shows_why() -> None:
    failing = StackState(
        DeploymentState("a-ondemand", 2, 0, 2, failure="ProgressDeadlineExceeded"),
        None,
        DeploymentState("a-router", 1, 1, 1),
    )
    degraded = status_for(failing).condition(ConditionType.DEGRADED)
    assert degraded is not None
    assert degraded.message == (
        "a-ondemand: ProgressDeadlineExceeded (see kubectl describe deployment a-ondemand)"
    )


def test_serving_with_spot_says_how_the_replicas_are_split_and_why() -> None:
    obj = make_inference_service(
        spec__replicas=7, spec__capacity={"onDemandBase": 1, "spot": {"enabled": True, "maxFraction": 0.6}}
    )
    service = parse_inference_service(obj)
    state = StackState(
        on_demand=DeploymentState("a-ondemand", desired=3, ready=3, updated=3),
        spot=DeploymentState("a-spot", desired=4, ready=4, updated=4),
        router=DeploymentState("a-router", desired=2, ready=2, updated=2),
    )
    ready = stack_status(service, 7, state, NOW, "sel", "http://x").condition(ConditionType.READY)
    assert ready is not None and ready.message == (
        "7/7 Triton replicas ready, 2/2 routers ready; onDemandBase 1, then at most 60% on spot: "
        "7 = 3 on-demand + 4 spot"
    )
    returning = StackState(
        on_demand=DeploymentState("a-ondemand", desired=5, ready=5, updated=5),
        spot=DeploymentState("a-spot", desired=4, ready=4, updated=4),
        router=DeploymentState("a-router", desired=2, ready=2, updated=2),
        fallback=SpotFallbackStatus(stand_ins=2, healthy_since=NOW),
    )
    ready = stack_status(service, 7, returning, NOW, "sel", "http://x").condition(ConditionType.READY)
    assert ready is not None
    assert ready.message.endswith(
        "7 = 3 on-demand + 4 spot, plus 2 on-demand standing in for spot (see SpotFallback)"
    )
