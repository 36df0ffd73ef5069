"""Nodes about to go away: the signals each provider and tool puts on a Node before its pods die.

Pure: a Node object in, a short reason (or None) out. A spot replica on such a node counts as
missing at once (no `fallbackAfterSeconds` wait: the notice is the warning), an on-demand
replica stands in for it, and once that one is ready the spot pod is evicted, so the router
stops sending to it before the node takes it down.

Left out on purpose: AWS NTH's `aws-node-termination-handler/rebalance-recommendation`
(PreferNoSchedule). A rebalance recommendation often comes without an interruption, and paying
on-demand for each one would spend what spot saves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# taint key -> who sets it and why, as the reason says it.
INTERRUPTION_TAINTS: Mapping[str, str] = {
    # Karpenter v1 taints a node it is about to disrupt (drift, consolidation, expiry,
    # interruption) before draining it: sigs.k8s.io/karpenter pkg/apis/v1 taints.go
    # (DisruptedTaintKey = "karpenter.sh/disrupted"); v1beta1 used "karpenter.sh/disruption".
    "karpenter.sh/disrupted": "Karpenter is disrupting the node",
    "karpenter.sh/disruption": "Karpenter is disrupting the node",
    # AWS Node Termination Handler with taintNode: spot interruption notice (2 min), scheduled
    # maintenance, ASG scale-in (aws-node-termination-handler pkg/node/node.go and its README).
    "aws-node-termination-handler/spot-itn": "AWS spot interruption notice",
    "aws-node-termination-handler/scheduled-maintenance": "AWS scheduled maintenance",
    "aws-node-termination-handler/asg-lifecycle-termination": "AWS Auto Scaling is terminating the node",
    # GKE: preemption notice of a Spot or preemptible VM (30 s before shutdown), the taint the
    # GKE node termination handler sets and kubernetes-mixin's node alerts ignore.
    "cloud.google.com/impending-node-termination": "GKE preemption notice",
    # AKS node auto-drain cordons and taints a spot node on a Preempt scheduled event
    # (learn.microsoft.com/azure/aks/node-auto-repair, "Node auto-drain").
    "remediator.aks.microsoft.com/unschedulable": "AKS is draining the node (preempt event)",
    # Cluster Autoscaler taints a node it is about to delete (scale-down).
    "ToBeDeletedByClusterAutoscaler": "Cluster Autoscaler is deleting the node",
    # The cloud node lifecycle controller: the VM is shut down.
    "node.cloudprovider.kubernetes.io/shutdown": "the node's VM is shut down",
    # The node lifecycle controller: the kubelet stopped reporting or reports NotReady.
    "node.kubernetes.io/unreachable": "the node is unreachable",
    "node.kubernetes.io/not-ready": "the node is NotReady",
    # kubectl cordon / drain.
    "node.kubernetes.io/unschedulable": "the node is cordoned",
}


def node_trouble(node: Mapping[str, Any]) -> str | None:
    """Why the pods on this node are about to go, in a few words; None for a healthy node."""
    spec = node.get("spec") or {}
    for taint in spec.get("taints") or []:
        why = INTERRUPTION_TAINTS.get(taint.get("key", ""))
        if why is not None:
            return f"{why} ({taint['key']})"
    if spec.get("unschedulable"):
        return "the node is cordoned"
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("status") != "True":
            return "the node is NotReady"
    return None


def pods_on_troubled_nodes(
    pods: list[dict[str, Any]], trouble: Mapping[str, str]
) -> list[tuple[dict[str, Any], str]]:
    """The pods (not already terminating) on nodes in `trouble` (node name -> reason), each
    with its node's reason."""
    found = []
    for pod in pods:
        if pod.get("metadata", {}).get("deletionTimestamp"):
            continue
        node = (pod.get("spec") or {}).get("nodeName")
        if node and node in trouble:
            found.append((pod, f"{node}: {trouble[node]}"))
    return found
