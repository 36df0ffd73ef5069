"""The InferenceService status: what the operator observed and decided."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import ConfigDict, Field

from tritonscale.api.base import ApiModel


class StatusModel(ApiModel):
    """Status parts: fields this version does not know are ignored, not refused. Status is the
    operator's own record; one written by a newer operator (before a rollback: Helm never
    downgrades the CRD that keeps those fields) must not make every service invalid."""

    model_config = ConfigDict(extra="ignore")


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class ConditionType(StrEnum):
    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    METRICS_AVAILABLE = "MetricsAvailable"
    SCALING_LIMITED = "ScalingLimited"
    SCALING_ACTIVE = "ScalingActive"
    SPOT_FALLBACK = "SpotFallback"


CONDITION_MESSAGE_MAX = 32768  # as metav1.Condition


class Condition(StatusModel):
    """A status condition, shaped like metav1.Condition."""

    type: str = Field(max_length=316, description="Condition type: Ready, Progressing, Degraded, ...")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(max_length=1024, description="One-word CamelCase reason for the last transition.")
    message: str = Field(default="", max_length=CONDITION_MESSAGE_MAX, description="Human-readable details.")
    last_transition_time: datetime = Field(description="When the status last changed.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="The spec generation this condition was computed from."
    )


class ScaleEvent(StatusModel):
    """The last change of desired replicas."""

    time: datetime = Field(description="When the decision was made.")
    from_: int = Field(alias="from", ge=0, description="Desired replicas before.")
    to: int = Field(ge=0, description="Desired replicas after.")
    reason: str = Field(max_length=1024, description="Why, in numbers.")


class SpotFallbackStatus(StatusModel):
    """On-demand replicas standing in for spot replicas that cannot run, and the clocks that
    move them (kept in status so that a restarted operator carries on)."""

    stand_ins: int = Field(
        default=0, ge=0, description="On-demand replicas standing in for missing spot replicas."
    )
    missing_since: datetime | None = Field(
        default=None, description="Since when spot replicas have been missing (not ready)."
    )
    healthy_since: datetime | None = Field(
        default=None, description="Since when every spot replica has been ready while stand-ins run."
    )


class CapacityModel(StatusModel):
    """What the autoscaler assumes about this service, and where each figure comes from."""

    cold_start_seconds: float = Field(ge=0, description="Seconds a new Triton pod takes to become Ready.")
    cold_start_source: str = Field(max_length=256, description="Where the cold start comes from.")
    max_batch: int = Field(ge=1, description="Largest batch one replica runs from separate requests.")
    max_batch_source: str = Field(max_length=512, description="Where the batch limit comes from.")


class VariantShare(StatusModel):
    """The share of requests one variant is sent."""

    name: str = Field(max_length=128, description="The variant (spec.model.variants).")
    share: float = Field(ge=0, le=1, description="Share of the requests the routers send it.")


class VariantsStatus(StatusModel):
    """What the faster variants serve and what they cost (spec.autoscaling.accuracy)."""

    shares: list[VariantShare] = Field(default_factory=list, max_length=16, description="Per variant.")
    served_accuracy: float = Field(
        ge=0, le=1, description="Mean accuracy served over the budget's window, relative to the model's."
    )
    budget_left_points: float = Field(
        ge=0, le=100, description="Accuracy points the window may still lose to the variants."
    )
    reason: str = Field(max_length=1024, description="Why, in numbers.")


class InferenceServiceStatus(StatusModel):
    """Observed state of the stack."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="The spec generation last reconciled."
    )
    replicas: int = Field(
        default=0, ge=0, description="Ready Triton replicas (the scale subresource reads this)."
    )
    selector: str | None = Field(
        default=None, description="Label selector of the Triton pods (for the scale subresource)."
    )
    desired_replicas: int | None = Field(
        default=None, ge=0, description="Triton replicas the operator wants."
    )
    on_demand_replicas: int | None = Field(
        default=None, ge=0, description="Ready Triton replicas on on-demand capacity."
    )
    spot_replicas: int | None = Field(
        default=None, ge=0, description="Ready Triton replicas on spot capacity."
    )
    router_replicas: int | None = Field(default=None, ge=0, description="Ready router replicas.")
    observed_latency_milliseconds: float | None = Field(
        default=None, ge=0, description="Latency at the objective's percentile, last measured."
    )
    target_latency_milliseconds: float | None = Field(
        default=None,
        ge=0,
        description="Latency objective the autoscaler holds; unset while it is off or paused.",
    )
    latency_percentile: float | None = Field(
        default=None, ge=0, le=100, description="Percentile of the observed latency and the objective."
    )
    observed_rate_rps: float | None = Field(
        default=None, ge=0, description="Arrival rate, last measured (req/s)."
    )
    last_scale: ScaleEvent | None = Field(default=None, description="The last change of desired replicas.")
    spot_fallback: SpotFallbackStatus | None = Field(
        default=None, description="Spot fallback state; unset while spot is off."
    )
    capacity_model: CapacityModel | None = Field(
        default=None, description="What the autoscaler assumes about this service; unset while it is off."
    )
    variants: VariantsStatus | None = Field(
        default=None, description="The faster variants' shares and their accuracy budget; unset without them."
    )
    endpoint: str | None = Field(default=None, description="URL clients call (HTTP); gRPC is on port 8001.")
    ready_of_desired: str | None = Field(
        default=None,
        max_length=64,
        description="Ready of desired Triton replicas as 'ready/desired' (derived, for kubectl get).",
    )
    latency_of_objective: str | None = Field(
        default=None,
        max_length=64,
        description=(
            "Measured latency against the objective, as 'p95 82/100ms' ('-' before the first "
            "measurement; derived, for kubectl get); unset while the autoscaler is off or paused."
        ),
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        description="Ready, Progressing, Degraded, MetricsAvailable, ScalingLimited, ScalingActive, SpotFallback.",
    )

    def to_wire(self) -> dict[str, Any]:
        """As stored, with the derived kubectl columns recomputed from the fields they show."""
        wire = super().to_wire()
        wire.pop("readyOfDesired", None)
        wire.pop("latencyOfObjective", None)
        if self.desired_replicas is not None:
            wire["readyOfDesired"] = f"{self.replicas}/{self.desired_replicas}"
        if self.target_latency_milliseconds is not None:
            observed = self.observed_latency_milliseconds
            shown = "-" if observed is None else f"{observed:.0f}"
            wire["latencyOfObjective"] = (
                f"p{self.latency_percentile or 95:g} {shown}/{self.target_latency_milliseconds:g}ms"
            )
        return wire

    def condition(self, condition_type: ConditionType) -> Condition | None:
        """The condition of that type, if present."""
        return next((c for c in self.conditions if c.type == condition_type), None)
