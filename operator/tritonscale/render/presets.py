"""Node-pool presets: which node labels and taints mark spot and accelerator capacity.

On-demand replicas require "not spot" rather than "on-demand", so nodes that carry no capacity
label at all (static node groups) count as on-demand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tritonscale.api.spec import AcceleratorSpec, CapacitySpec, NodePoolPreset, Toleration

NVIDIA_PRODUCT_LABEL = "nvidia.com/gpu.product"


@dataclass(frozen=True)
class CapacityLabels:
    """How one cloud's provisioner labels and taints spot nodes."""

    key: str
    spot_value: str
    spot_taint_value: str


PRESET_CAPACITY_LABELS: dict[NodePoolPreset, CapacityLabels] = {
    NodePoolPreset.KARPENTER: CapacityLabels("karpenter.sh/capacity-type", "spot", "spot"),
    NodePoolPreset.GKE: CapacityLabels("cloud.google.com/gke-spot", "true", "true"),
    NodePoolPreset.EKS: CapacityLabels("eks.amazonaws.com/capacityType", "SPOT", "SPOT"),
    NodePoolPreset.AKS: CapacityLabels("kubernetes.azure.com/scalesetpriority", "spot", "spot"),
}


def product_label_key(capacity: CapacitySpec, accelerator: AcceleratorSpec) -> str:
    """The node label whose value names the accelerator product, for this preset."""
    preset = capacity.node_pool_preset
    if preset == NodePoolPreset.CUSTOM:
        assert capacity.custom is not None and capacity.custom.accelerator_product_label is not None
        return capacity.custom.accelerator_product_label
    if preset == NodePoolPreset.GKE:
        if accelerator.resource == "google.com/tpu":
            return "cloud.google.com/gke-tpu-accelerator"
        return "cloud.google.com/gke-accelerator"
    if accelerator.resource == "nvidia.com/gpu":
        return NVIDIA_PRODUCT_LABEL
    if preset == NodePoolPreset.KARPENTER:
        return "karpenter.k8s.aws/instance-accelerator-name"
    return NVIDIA_PRODUCT_LABEL


def _toleration(toleration: Toleration) -> dict[str, Any]:
    out: dict[str, Any] = {"key": toleration.key, "operator": toleration.operator.value}
    if toleration.value:
        out["value"] = toleration.value
    if toleration.effect is not None:
        out["effect"] = toleration.effect.value
    return out


def pool_node_requirements(capacity: CapacitySpec, spot: bool) -> list[dict[str, Any]]:
    """nodeAffinity matchExpressions that keep a pool's pods on its kind of capacity."""
    if capacity.node_pool_preset == NodePoolPreset.CUSTOM:
        assert capacity.custom is not None
        selector = (capacity.custom.spot if spot else capacity.custom.on_demand).node_selector
        return [{"key": key, "operator": "In", "values": [value]} for key, value in sorted(selector.items())]
    labels = PRESET_CAPACITY_LABELS[capacity.node_pool_preset]
    return [{"key": labels.key, "operator": "In" if spot else "NotIn", "values": [labels.spot_value]}]


def pool_tolerations(capacity: CapacitySpec, spot: bool) -> list[dict[str, Any]]:
    """Tolerations a pool's pods need for its nodes' taints."""
    if capacity.node_pool_preset == NodePoolPreset.CUSTOM:
        assert capacity.custom is not None
        return [
            _toleration(t) for t in (capacity.custom.spot if spot else capacity.custom.on_demand).tolerations
        ]
    if not spot:
        return []
    labels = PRESET_CAPACITY_LABELS[capacity.node_pool_preset]
    return [
        {"key": labels.key, "operator": "Equal", "value": labels.spot_taint_value, "effect": "NoSchedule"}
    ]


def accelerator_tolerations(accelerator: AcceleratorSpec | None) -> list[dict[str, Any]]:
    """Accelerator nodes are commonly tainted with the resource name (e.g. nvidia.com/gpu)."""
    if accelerator is None:
        return []
    return [{"key": accelerator.resource, "operator": "Exists", "effect": "NoSchedule"}]


def required_node_affinity(requirements: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A pod affinity that requires every match expression, or None when there are none (an
    empty selector term would match no node at all)."""
    if not requirements:
        return None
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": requirements}]
            }
        }
    }
