"""Status of a stack from what its Deployments report: counts and Ready/Progressing/Degraded."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tritonscale.api.base import cut_short
from tritonscale.api.resource import PAUSE_ANNOTATION, InferenceService
from tritonscale.api.spec import CapacitySpec
from tritonscale.api.status import (
    CONDITION_MESSAGE_MAX,
    Condition,
    ConditionStatus,
    ConditionType,
    InferenceServiceStatus,
    ScaleEvent,
    SpotFallbackStatus,
)
from tritonscale.policy.placement import no_spot_reason, split_explanation
from tritonscale.policy.spot_fallback import return_window_s


@dataclass(frozen=True)
class DeploymentState:
    """What one child Deployment reports."""

    name: str
    desired: int
    ready: int = 0
    updated: int = 0
    observed_current_generation: bool = True
    failure: str | None = None  # ProgressDeadlineExceeded or ReplicaFailure message

    @property
    def rolled_out(self) -> bool:
        return (
            self.observed_current_generation and self.updated >= self.desired and self.ready >= self.desired
        )


@dataclass(frozen=True)
class StackState:
    """Everything the status is computed from."""

    on_demand: DeploymentState | None
    spot: DeploymentState | None
    router: DeploymentState | None
    problem: tuple[str, str] | None = None  # (reason, message) of a failed reconcile
    # Pods the scheduler could not place: (pod count, the scheduler's message), most common first;
    # spot pods are left out while on-demand stand-ins cover them (the fallback is not a fault).
    unschedulable: tuple[tuple[int, str], ...] = ()
    fallback: SpotFallbackStatus | None = None  # None while spot is off
    unschedulable_spot: int = 0  # spot pods the scheduler could not place
    interrupted_spot: tuple[str, ...] = ()  # per spot pod on a node being interrupted: "node: why"

    @property
    def triton(self) -> list[DeploymentState]:
        return [d for d in (self.on_demand, self.spot) if d is not None]


def _ready(state: DeploymentState | None) -> int:
    return state.ready if state is not None else 0


def set_condition(
    conditions: list[Condition],
    condition_type: ConditionType,
    status: ConditionStatus,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """Conditions with one replaced; lastTransitionTime moves only when the status flips. A
    message longer than a condition holds (an API server's refusal quoted whole, many problems)
    is cut short rather than failing the status write."""
    previous = next((c for c in conditions if c.type == condition_type), None)
    since = previous.last_transition_time if previous is not None and previous.status == status else now
    message = cut_short(message, CONDITION_MESSAGE_MAX)
    updated = Condition(
        type=condition_type,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    return [c for c in conditions if c.type != condition_type] + [updated]


def _unschedulable_summary(state: StackState) -> str:
    count = sum(n for n, _ in state.unschedulable)
    first = state.unschedulable[0][1] if state.unschedulable else ""
    return (
        f"{count} pod{'s' if count != 1 else ''} cannot be scheduled: {first.rstrip('. ')}. "
        "Add nodes they fit on, or lower spec.resources or the replica count"
    )


def _ready_condition(
    desired: int, state: StackState, capacity: CapacitySpec, selector: str
) -> tuple[ConditionStatus, str, str]:
    """Ready means serving the desired capacity: every desired Triton replica and a router ready.
    Short of that, the message says what is missing and where to look next."""
    triton_ready = sum(d.ready for d in state.triton)
    router = state.router
    summary = (
        f"{triton_ready}/{desired} Triton replicas ready, "
        f"{_ready(router)}/{router.desired if router else 0} routers ready"
    )
    if desired == 0:
        return (
            ConditionStatus.FALSE,
            "ScaledToZero",
            f"{summary}; spec.replicas is 0, so nothing serves: raise it to serve again",
        )
    if triton_ready == 0:
        if state.unschedulable:
            return ConditionStatus.FALSE, "Unschedulable", f"{summary}; {_unschedulable_summary(state)}"
        return (
            ConditionStatus.FALSE,
            "NoReadyReplicas",
            f"{summary}; if this lasts, see why with kubectl describe pods -l {selector}",
        )
    if _ready(router) == 0:
        where = (
            f"kubectl describe deployment {router.name}" if router is not None else "the router Deployment"
        )
        return ConditionStatus.FALSE, "RouterUnavailable", f"{summary}; clients get no answer: see {where}"
    if triton_ready < desired:
        if state.unschedulable:
            return ConditionStatus.FALSE, "Unschedulable", f"{summary}; {_unschedulable_summary(state)}"
        return ConditionStatus.FALSE, "ScalingUp", f"{summary}; the others are starting"
    if not capacity.spot.enabled:
        return ConditionStatus.TRUE, "Serving", summary
    # Why this many on each pool, so "why 3 of them on-demand?" is answered where it is asked.
    split = no_spot_reason(desired, capacity) or split_explanation(desired, capacity)
    stand_ins = state.fallback.stand_ins if state.fallback is not None else 0
    if stand_ins:
        split += f", plus {stand_ins} on-demand standing in for spot (see SpotFallback)"
    return ConditionStatus.TRUE, "Serving", f"{summary}; {split}"


def _spot_fallback_condition(
    capacity: CapacitySpec, state: StackState
) -> tuple[ConditionStatus, str, str] | None:
    """Whether on-demand replicas stand in for spot ones, and why, in words; None without spot."""
    fallback = state.fallback
    if fallback is None or not capacity.spot.enabled:
        return None
    wanted, ready = (state.spot.desired, state.spot.ready) if state.spot is not None else (0, 0)
    after = capacity.spot.fallback_after_seconds
    pods = f"{state.unschedulable_spot} of {wanted} spot pods cannot be scheduled"
    if fallback.stand_ins and state.interrupted_spot:
        nodes = "; ".join(sorted(set(state.interrupted_spot)))
        return (
            ConditionStatus.TRUE,
            "SpotInterrupted",
            f"{len(state.interrupted_spot)} of {wanted} spot pods are on nodes being interrupted ({nodes}): "
            f"{fallback.stand_ins} on-demand replicas stand in, and each spot pod is drained once they "
            "are ready",
        )
    if fallback.stand_ins and fallback.missing_since is not None:
        since = fallback.missing_since.strftime("%H:%M:%SZ")
        return (
            ConditionStatus.TRUE,
            "SpotUnavailable",
            f"{pods} (since {since}, longer than capacity.spot.fallbackAfterSeconds {after}): "
            f"{fallback.stand_ins} on-demand replicas stand in for them",
        )
    if fallback.stand_ins:
        return (
            ConditionStatus.TRUE,
            "ReturningToSpot",
            f"{ready}/{wanted} spot replicas ready again; the {fallback.stand_ins} on-demand stand-ins "
            f"leave, half at a time, each time spot has stayed ready for {return_window_s(after):g}s",
        )
    if fallback.missing_since is not None:
        since = fallback.missing_since.strftime("%H:%M:%SZ")
        return (
            ConditionStatus.FALSE,
            "WaitingForSpot",
            f"{pods} (since {since}); on-demand replicas stand in once that lasts "
            f"capacity.spot.fallbackAfterSeconds ({after}s)",
        )
    return ConditionStatus.FALSE, "SpotAvailable", f"{ready}/{wanted} spot replicas ready"


def _progressing_condition(state: StackState) -> tuple[ConditionStatus, str, str]:
    if state.problem is not None:
        return (
            ConditionStatus.FALSE,
            state.problem[0],
            "the current spec was not applied (see the Degraded condition)",
        )
    pending = [d for d in [*state.triton, state.router] if d is not None and not d.rolled_out]
    if not pending:
        return ConditionStatus.FALSE, "RolledOut", "every Deployment is up to date and ready"
    details = ", ".join(f"{d.name} {d.ready}/{d.desired} ready, {d.updated} updated" for d in pending)
    return ConditionStatus.TRUE, "RollingOut", details


def _degraded_condition(state: StackState) -> tuple[ConditionStatus, str, str]:
    if state.problem is not None:
        return ConditionStatus.TRUE, state.problem[0], state.problem[1]
    if state.unschedulable:
        return ConditionStatus.TRUE, "Unschedulable", _unschedulable_summary(state)
    failing = [d for d in [*state.triton, state.router] if d is not None and d.failure]
    if failing:
        details = "; ".join(f"{d.name}: {d.failure}" for d in failing)
        names = " ".join(d.name for d in failing)
        return (
            ConditionStatus.TRUE,
            "DeploymentFailing",
            f"{details} (see kubectl describe deployment {names})",
        )
    return ConditionStatus.FALSE, "AsExpected", "no failures reported"


def stack_status(
    service: InferenceService,
    desired: int,
    state: StackState,
    now: datetime,
    selector: str,
    endpoint: str,
    applied: bool = True,
) -> InferenceServiceStatus:
    """The new status: counts and the reconciler's conditions; other loops' fields are kept.

    Only an apply of the spec (`applied`) moves the observed generation on: a refresh (a child
    event) reports the children of what was last applied, an older spec or one refused."""
    previous = service.status
    generation = service.metadata.generation if applied else previous.observed_generation
    conditions = list(previous.conditions)
    computed = [
        (ConditionType.READY, _ready_condition(desired, state, service.spec.capacity, selector)),
        (ConditionType.PROGRESSING, _progressing_condition(state)),
        (ConditionType.DEGRADED, _degraded_condition(state)),
    ]
    spot = _spot_fallback_condition(service.spec.capacity, state)
    if spot is not None:
        computed.append((ConditionType.SPOT_FALLBACK, spot))
    elif previous.condition(ConditionType.SPOT_FALLBACK) is not None:
        spot_off = (ConditionStatus.FALSE, "SpotDisabled", "capacity.spot.enabled is false")
        computed.append((ConditionType.SPOT_FALLBACK, spot_off))
    for condition_type, (status, reason, message) in computed:
        conditions = set_condition(conditions, condition_type, status, reason, message, now, generation)
    order = list(ConditionType)
    conditions.sort(key=lambda c: order.index(ConditionType(c.type)) if c.type in order else len(order))
    return previous.model_copy(
        update={
            "observed_generation": generation
            if applied and state.problem is None
            else previous.observed_generation,
            "replicas": sum(d.ready for d in state.triton),
            "selector": selector,
            "desired_replicas": desired,
            "on_demand_replicas": _ready(state.on_demand),
            "spot_replicas": _ready(state.spot),
            "router_replicas": _ready(state.router),
            "spot_fallback": state.fallback,
            "endpoint": endpoint,
            "conditions": conditions,
        }
    )


AUTOSCALER_CONDITIONS = (
    ConditionType.METRICS_AVAILABLE,
    ConditionType.SCALING_LIMITED,
    ConditionType.SCALING_ACTIVE,
)
ACTIVE_MESSAGE = (
    "the autoscaler sets the replica count; spec.replicas is only the starting count, so "
    "kubectl scale has no effect unless the autoscaler is paused "
    f"(kubectl annotate tis NAME {PAUSE_ANNOTATION}=true)"
)


# MetricsAvailable=True's reason while the measured rate and the routers' count stay apart.
RATES_DISAGREE = "RatesDisagree"


def autoscaling_status(
    previous: InferenceServiceStatus,
    desired: int,
    current: int,
    reason: str,
    limited: str | None,
    latency_ms: float | None,
    rate_rps: float | None,
    missing: str | None,
    source: str,
    now: datetime,
    generation: int | None,
    partial: str | None = None,
    feedback_paused: str | None = None,
) -> InferenceServiceStatus:
    """The status after one autoscaling decision: desired replicas, what was measured, the last
    scale, and the MetricsAvailable and ScalingLimited conditions (the former also says when
    the measured rate and the routers' have disagreed so long the model's error is not learnt)."""
    conditions = list(previous.conditions)
    if missing is None:
        measured = (
            f"{latency_ms:.0f} ms at {rate_rps:.0f} req/s from {source}" if latency_ms is not None else "idle"
        )
        why = "MetricsFresh"
        if partial is not None:
            why, measured = (
                "MetricsPartial",
                f"{measured}, {partial}; scaled to every ready pod, no scale-down",
            )
        if feedback_paused is not None:
            why, measured = RATES_DISAGREE, f"{measured}; {feedback_paused}"
        conditions = set_condition(
            conditions,
            ConditionType.METRICS_AVAILABLE,
            ConditionStatus.TRUE,
            why,
            measured,
            now,
            generation,
        )
    else:
        conditions = set_condition(
            conditions,
            ConditionType.METRICS_AVAILABLE,
            ConditionStatus.FALSE,
            "MetricsMissing",
            f"{missing} ({source}); the replica count is held until metrics return, "
            "never scaled down without them",
            now,
            generation,
        )
    if limited is not None:
        at = "AtMaxReplicas" if limited == "max" else "AtMinReplicas"
        advice = (
            "; raise spec.autoscaling.maxReplicas to let it hold the objective"
            if limited == "max"
            else "; lower spec.autoscaling.minReplicas to let it scale further down"
        )
        conditions = set_condition(
            conditions,
            ConditionType.SCALING_LIMITED,
            ConditionStatus.TRUE,
            at,
            reason + advice,
            now,
            generation,
        )
    else:
        conditions = set_condition(
            conditions,
            ConditionType.SCALING_LIMITED,
            ConditionStatus.FALSE,
            "WithinBounds",
            "the replicas the objective needs are within minReplicas..maxReplicas",
            now,
            generation,
        )
    conditions = set_condition(
        conditions,
        ConditionType.SCALING_ACTIVE,
        ConditionStatus.TRUE,
        "Active",
        ACTIVE_MESSAGE,
        now,
        generation,
    )
    update: dict[str, object] = {
        "desired_replicas": desired,
        "observed_latency_milliseconds": None if latency_ms is None else round(latency_ms, 1),
        "observed_rate_rps": None if rate_rps is None else round(rate_rps, 2),
        "conditions": conditions,
    }
    if desired != current:
        update["last_scale"] = ScaleEvent(time=now, from_=current, to=desired, reason=reason[:1024])
    return previous.model_copy(update=update)


# The autoscaler's measurements and objective, cleared when it is switched off or paused.
_NO_MEASUREMENTS: dict[str, object] = {
    "observed_latency_milliseconds": None,
    "observed_rate_rps": None,
    "target_latency_milliseconds": None,
    "latency_percentile": None,
    "capacity_model": None,
}


def paused_autoscaling(
    previous: InferenceServiceStatus, replicas: int, now: datetime, generation: int | None
) -> InferenceServiceStatus:
    """The status while the pause annotation is set: no measurements, ScalingActive=False."""
    message = (
        f"paused by the annotation {PAUSE_ANNOTATION}=true: spec.replicas ({replicas}) is applied "
        "and kubectl scale works; remove the annotation to resume"
    )
    conditions = [
        c
        for c in previous.conditions
        if c.type in (ConditionType.READY, ConditionType.PROGRESSING, ConditionType.DEGRADED)
    ]
    conditions = set_condition(
        conditions, ConditionType.SCALING_ACTIVE, ConditionStatus.FALSE, "Paused", message, now, generation
    )
    return previous.model_copy(update={**_NO_MEASUREMENTS, "conditions": conditions})


def without_autoscaling(previous: InferenceServiceStatus) -> InferenceServiceStatus:
    """The status once autoscaling is switched off: its measurements and conditions go."""
    return previous.model_copy(
        update={
            **_NO_MEASUREMENTS,
            "conditions": [c for c in previous.conditions if c.type not in AUTOSCALER_CONDITIONS],
        }
    )
