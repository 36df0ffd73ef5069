"""Node-pool presets: which node labels and taints mark spot and accelerator capacity.

On-demand replicas require "not spot" rather than "on-demand", so nodes that carry no capacity
label at all (static node groups) count as on-demand.

Accelerators, and the node label whose value names the product (example values in brackets):

- nvidia.com/gpu: karpenter, karpenter.k8s.aws/instance-gpu-name (a100); gke,
  cloud.google.com/gke-accelerator (nvidia-tesla-a100); eks and aks, nvidia.com/gpu.product from
  NVIDIA's GPU feature discovery (NVIDIA-A100-SXM4-40GB).
- amd.com/gpu: karpenter, karpenter.k8s.aws/instance-gpu-name (radeon-pro-v520); the others,
  amd.com/gpu.product-name from AMD's GPU node labeller (AMD_Instinct_MI300X_OAM).
- google.com/tpu: cloud.google.com/gke-tpu-accelerator (tpu-v5-lite-podslice), and the slice
  topology cloud.google.com/gke-tpu-topology (2x4), whatever the preset: TPUs exist on GKE only.
- aws.amazon.com/neuron and aws.amazon.com/neuroncore: karpenter,
  karpenter.k8s.aws/instance-accelerator-name (inferentia, inferentia2, trainium). No other
  preset has such a label (EKS node groups set none), so the model refuses a product there.
- any other resource (FPGAs, other ASICs): the custom preset's acceleratorProductLabel, which
  serves every resource above too.

Sources:
- karpenter.k8s.aws/instance-gpu-name: https://karpenter.sh/docs/concepts/scheduling/#well-known-labels
  Karpenter launches nodes only for labels it knows: a required label that is neither well known
  nor declared by a NodePool (nvidia.com/gpu.product, which GPU feature discovery sets after boot)
  keeps pods pending (same page, "User-Defined Labels").
- karpenter.k8s.aws/instance-accelerator-name values: https://karpenter.sh/docs/upgrading/upgrade-guide/#upgrading-to-110
- cloud.google.com/gke-accelerator: https://cloud.google.com/kubernetes-engine/docs/how-to/gpus
- TPU labels: https://cloud.google.com/kubernetes-engine/docs/concepts/tpus
- nvidia.com/gpu.product: https://github.com/NVIDIA/k8s-device-plugin/blob/main/docs/gpu-feature-discovery/README.md
- amd.com/gpu.product-name: https://github.com/ROCm/k8s-device-plugin/blob/master/docs/user-guide/installation.md
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from tritonscale.api.spec import (
    KARPENTER_PRODUCT_LABELLED_RESOURCES,
    TPU_RESOURCE,
    AcceleratorSpec,
    CapacitySpec,
    NodePoolPreset,
    Toleration,
)

NVIDIA_GPU: Final = "nvidia.com/gpu"
AMD_GPU: Final = "amd.com/gpu"

NVIDIA_PRODUCT_LABEL: Final = "nvidia.com/gpu.product"
AMD_PRODUCT_LABEL: Final = "amd.com/gpu.product-name"
KARPENTER_GPU_NAME_LABEL: Final = "karpenter.k8s.aws/instance-gpu-name"
KARPENTER_ACCELERATOR_NAME_LABEL: Final = "karpenter.k8s.aws/instance-accelerator-name"
GKE_GPU_LABEL: Final = "cloud.google.com/gke-accelerator"
GKE_TPU_LABEL: Final = "cloud.google.com/gke-tpu-accelerator"
GKE_TPU_TOPOLOGY_LABEL: Final = "cloud.google.com/gke-tpu-topology"
AKS_GPU_LABEL: Final = "kubernetes.azure.com/accelerator"


@dataclass(frozen=True)
class SpotTaint:
    """A taint a provider puts on spot nodes, which spot pods tolerate."""

    key: str
    value: str
    effect: str = "NoSchedule"


@dataclass(frozen=True)
class CapacityLabels:
    """How one provider labels, and perhaps taints, its spot nodes."""

    key: str
    spot_value: str
    # None: the provider taints no spot node, and nothing is tolerated.
    spot_taint: SpotTaint | None
    # Labels (key, value) of other interruptible nodes, which on-demand pods avoid as well.
    also_interruptible: tuple[tuple[str, str], ...] = ()


PRESET_CAPACITY_LABELS: dict[NodePoolPreset, CapacityLabels] = {
    # Values on-demand, spot and (since 1.3) reserved:
    # https://karpenter.sh/docs/concepts/scheduling/#well-known-labels. Karpenter itself taints
    # no node; taints come only from a NodePool's spec.template.spec.taints. This one is tolerated
    # so that a spot NodePool may be kept for spot-tolerant pods with it (the sandbox's spot pool
    # is); where no node carries it the toleration does nothing.
    NodePoolPreset.KARPENTER: CapacityLabels(
        "karpenter.sh/capacity-type", "spot", SpotTaint("karpenter.sh/capacity-type", "spot")
    ),
    # https://cloud.google.com/kubernetes-engine/docs/concepts/spot-vms: GKE labels Spot VMs
    # cloud.google.com/gke-spot=true. Standard node pools get the taint only when created with
    # it, as https://cloud.google.com/kubernetes-engine/docs/how-to/spot-vms recommends;
    # Autopilot taints nodes that run Spot Pods itself
    # (https://cloud.google.com/kubernetes-engine/docs/how-to/autopilot-spot-pods), and node
    # auto-provisioning creates tainted pools for pods that require the label and tolerate the
    # taint (https://cloud.google.com/kubernetes-engine/docs/concepts/node-auto-provisioning).
    # Preemptible VMs, Spot's predecessor, are labelled cloud.google.com/gke-preemptible=true:
    # https://cloud.google.com/kubernetes-engine/docs/how-to/preemptible-vms
    NodePoolPreset.GKE: CapacityLabels(
        "cloud.google.com/gke-spot",
        "true",
        SpotTaint("cloud.google.com/gke-spot", "true"),
        also_interruptible=(("cloud.google.com/gke-preemptible", "true"),),
    ),
    # Managed node groups label nodes eks.amazonaws.com/capacityType ON_DEMAND or SPOT and taint
    # none: https://docs.aws.amazon.com/eks/latest/userguide/managed-node-groups.html#managed-node-group-capacity-types.
    # No spot toleration: the EKS API refuses taint keys under eks.amazonaws.com/
    # (https://github.com/aws/containers-roadmap/issues/1451), so no node group can carry one.
    NodePoolPreset.EKS: CapacityLabels("eks.amazonaws.com/capacityType", "SPOT", None),
    # AKS both labels and taints every spot node pool:
    # https://learn.microsoft.com/azure/aks/spot-node-pool#limitations
    NodePoolPreset.AKS: CapacityLabels(
        "kubernetes.azure.com/scalesetpriority",
        "spot",
        SpotTaint("kubernetes.azure.com/scalesetpriority", "spot"),
    ),
}

# The product label of each accelerator under each built-in preset (see the table above); the
# `None` entry serves the presets not listed. Keep in step with PRODUCT_LABELLED_RESOURCES and
# KARPENTER_PRODUCT_LABELLED_RESOURCES in api/spec.py, which admit accelerator.product.
PRODUCT_LABELS: dict[str, Mapping[NodePoolPreset | None, str]] = {
    NVIDIA_GPU: {
        NodePoolPreset.KARPENTER: KARPENTER_GPU_NAME_LABEL,
        NodePoolPreset.GKE: GKE_GPU_LABEL,
        None: NVIDIA_PRODUCT_LABEL,
    },
    AMD_GPU: {NodePoolPreset.KARPENTER: KARPENTER_GPU_NAME_LABEL, None: AMD_PRODUCT_LABEL},
    TPU_RESOURCE: {None: GKE_TPU_LABEL},
    **{
        resource: {NodePoolPreset.KARPENTER: KARPENTER_ACCELERATOR_NAME_LABEL}
        for resource in KARPENTER_PRODUCT_LABELLED_RESOURCES  # AWS Neuron
    },
}

# Labels only accelerator nodes carry. A pod that requests no accelerator requires each to be
# absent, so that CPU work never takes an accelerator node's CPU and memory: not every cluster
# taints its accelerator nodes (Karpenter and EKS node groups taint nothing by themselves).
# Karpenter accepts DoesNotExist on labels it does not know (Requirements.Compatible in
# https://github.com/kubernetes-sigs/karpenter/blob/main/pkg/scheduling/requirements.go), and
# picks instance types without the well-known ones.
PRESET_ACCELERATOR_LABELS: dict[NodePoolPreset, tuple[str, ...]] = {
    NodePoolPreset.KARPENTER: (KARPENTER_GPU_NAME_LABEL, KARPENTER_ACCELERATOR_NAME_LABEL),
    NodePoolPreset.GKE: (GKE_GPU_LABEL, GKE_TPU_LABEL),
    NodePoolPreset.EKS: (),
    # A reserved label AKS sets on GPU nodes (value nvidia): https://learn.microsoft.com/azure/aks/use-labels
    NodePoolPreset.AKS: (AKS_GPU_LABEL,),
    NodePoolPreset.CUSTOM: (),  # and capacity.custom.acceleratorProductLabel
}
# Set by device vendors' node labellers on any cloud or on premises.
VENDOR_ACCELERATOR_LABELS: Final = (
    # NVIDIA GPU Operator, on every node with an NVIDIA GPU:
    # https://github.com/NVIDIA/gpu-operator/blob/main/controllers/state_manager.go
    "nvidia.com/gpu.present",
    NVIDIA_PRODUCT_LABEL,
    # AMD GPU Operator's node selector, and the AMD GPU node labeller:
    # https://github.com/ROCm/k8s-device-plugin/blob/master/docs/user-guide/installation.md
    "feature.node.kubernetes.io/amd-gpu",
    AMD_PRODUCT_LABEL,
)


def product_label_key(capacity: CapacitySpec, accelerator: AcceleratorSpec) -> str:
    """The node label whose value names the accelerator product, for this preset.

    Raises ValueError for a combination the model rejects (see `product_has_a_label`)."""
    preset = capacity.node_pool_preset
    if preset == NodePoolPreset.CUSTOM:
        if capacity.custom is None or capacity.custom.accelerator_product_label is None:
            raise ValueError("the custom preset names no acceleratorProductLabel")
        return capacity.custom.accelerator_product_label
    labels = PRODUCT_LABELS.get(accelerator.resource, {})
    key = labels.get(preset, labels.get(None))
    if key is None:
        raise ValueError(f"no node label names the product of {accelerator.resource} with preset {preset}")
    return key


def accelerator_node_requirements(
    capacity: CapacitySpec, accelerator: AcceleratorSpec
) -> list[dict[str, Any]]:
    """The product (and TPU topology) an accelerator pod requires of its node."""
    requirements: list[dict[str, Any]] = []
    if accelerator.product is not None:
        key = product_label_key(capacity, accelerator)
        requirements.append({"key": key, "operator": "In", "values": [accelerator.product]})
    if accelerator.topology is not None:
        requirements.append(
            {"key": GKE_TPU_TOPOLOGY_LABEL, "operator": "In", "values": [accelerator.topology]}
        )
    return requirements


def no_accelerator_requirements(capacity: CapacitySpec) -> list[dict[str, Any]]:
    """Keeps a pod that requests no accelerator off every node known to have one."""
    keys = set(PRESET_ACCELERATOR_LABELS[capacity.node_pool_preset]) | set(VENDOR_ACCELERATOR_LABELS)
    if capacity.custom is not None and capacity.custom.accelerator_product_label is not None:
        keys.add(capacity.custom.accelerator_product_label)
    return [{"key": key, "operator": "DoesNotExist"} for key in sorted(keys)]


def pool_node_requirements(capacity: CapacitySpec, spot: bool) -> list[dict[str, Any]]:
    """nodeAffinity matchExpressions that keep a pool's pods on its kind of capacity."""
    if capacity.node_pool_preset == NodePoolPreset.CUSTOM:
        assert capacity.custom is not None
        selector = (capacity.custom.spot if spot else capacity.custom.on_demand).node_selector
        return [{"key": key, "operator": "In", "values": [value]} for key, value in sorted(selector.items())]
    labels = PRESET_CAPACITY_LABELS[capacity.node_pool_preset]
    if spot:
        return [{"key": labels.key, "operator": "In", "values": [labels.spot_value]}]
    return [
        {"key": key, "operator": "NotIn", "values": [value]}
        for key, value in ((labels.key, labels.spot_value), *labels.also_interruptible)
    ]


def node_requirements(
    capacity: CapacitySpec, accelerator: AcceleratorSpec | None, spot: bool
) -> list[dict[str, Any]]:
    """Everything a pod of one pool requires of its node: its kind of capacity, then its
    accelerator's product and topology or, when it requests none, no accelerator at all."""
    return pool_node_requirements(capacity, spot) + (
        no_accelerator_requirements(capacity)
        if accelerator is None
        else accelerator_node_requirements(capacity, accelerator)
    )


def _toleration(toleration: Toleration) -> dict[str, Any]:
    out: dict[str, Any] = {"key": toleration.key, "operator": toleration.operator.value}
    if toleration.value:
        out["value"] = toleration.value
    if toleration.effect is not None:
        out["effect"] = toleration.effect.value
    return out


def pool_tolerations(capacity: CapacitySpec, spot: bool) -> list[dict[str, Any]]:
    """Tolerations a pool's pods need for its nodes' taints."""
    if capacity.node_pool_preset == NodePoolPreset.CUSTOM:
        assert capacity.custom is not None
        return [
            _toleration(t) for t in (capacity.custom.spot if spot else capacity.custom.on_demand).tolerations
        ]
    taint = PRESET_CAPACITY_LABELS[capacity.node_pool_preset].spot_taint
    if not spot or taint is None:
        return []
    return [{"key": taint.key, "operator": "Equal", "value": taint.value, "effect": taint.effect}]


def accelerator_tolerations(
    capacity: CapacitySpec, accelerator: AcceleratorSpec | None
) -> list[dict[str, Any]]:
    """Tolerations for the taints that keep other pods off accelerator nodes."""
    if accelerator is None:
        return []
    # Accelerator taints are keyed by the resource name, whatever their value: GKE taints GPU
    # nodes nvidia.com/gpu=present and TPU nodes google.com/tpu=present
    # (https://cloud.google.com/kubernetes-engine/docs/how-to/gpus,
    # https://cloud.google.com/kubernetes-engine/docs/concepts/tpus), Karpenter's docs taint GPU
    # NodePools nvidia.com/gpu (https://karpenter.sh/docs/concepts/scheduling/#taints-and-tolerations),
    # and it is the convention of the ExtendedResourceToleration admission plugin
    # (https://kubernetes.io/docs/reference/access-authn-authz/admission-controllers/#extendedresourcetoleration).
    tolerations = [{"key": accelerator.resource, "operator": "Exists", "effect": "NoSchedule"}]
    if capacity.node_pool_preset == NodePoolPreset.AKS and accelerator.resource == NVIDIA_GPU:
        # AKS adds no GPU taint itself, but its GPU guide creates GPU node pools with this one:
        # https://learn.microsoft.com/azure/aks/gpu-cluster
        tolerations.append({"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"})
    return tolerations


def required_node_affinity(
    requirements: list[dict[str, Any]], capacity: CapacitySpec | None = None
) -> dict[str, Any] | None:
    """A pod affinity that requires every match expression, or None when there are none (an
    empty selector term would match no node at all). With `capacity` (for pods that must stay
    off spot) and the custom preset, also not on a node that matches the whole spot selector:
    one term per spot label, each requiring that label to differ (terms are ORed)."""
    spot_labels = (
        sorted(capacity.custom.spot.node_selector.items())
        if capacity is not None
        and capacity.custom is not None
        and capacity.node_pool_preset == NodePoolPreset.CUSTOM
        else []
    )
    # A spot label the pod's own selector requires too cannot tell spot apart: no term for it.
    terms = [
        {"matchExpressions": [*requirements, {"key": key, "operator": "NotIn", "values": [value]}]}
        for key, value in spot_labels
        if {"key": key, "operator": "In", "values": [value]} not in requirements
    ]
    if not terms and requirements:
        terms = [{"matchExpressions": requirements}]
    if not terms:
        return None
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}
