"""How many Triton replicas the reconciler applies."""

from __future__ import annotations

from tritonscale.api.resource import InferenceService


def clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def reconciled_replicas(service: InferenceService) -> int:
    """spec.replicas when autoscaling is off or paused; otherwise the autoscaler's last decision
    (status.desiredReplicas, or spec.replicas before the first one) within min..max."""
    spec = service.spec
    if spec.autoscaling is None or not service.autoscaled:
        return spec.replicas
    decided = service.status.desired_replicas
    wanted = decided if decided is not None else spec.replicas
    return clamp(wanted, spec.autoscaling.min_replicas, spec.autoscaling.max_replicas)
