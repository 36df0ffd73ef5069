"""Which nodes are about to take their pods down."""

from __future__ import annotations

from tritonscale.policy.interruption import INTERRUPTION_TAINTS, node_trouble, pods_on_troubled_nodes


def _node(taints: list[dict[str, str]] | None = None, ready: str = "True", cordoned: bool = False) -> dict:  # type: ignore[type-arg]
    return {
        "metadata": {"name": "n"},
        "spec": {"taints": taints or [], **({"unschedulable": True} if cordoned else {})},
        "status": {"conditions": [{"type": "Ready", "status": ready}]},
    }


def test_a_healthy_node_is_no_trouble_even_with_its_pool_taints() -> None:
    aks_spot = {"key": "kubernetes.azure.com/scalesetpriority", "value": "spot", "effect": "NoSchedule"}
    rebalance = {"key": "aws-node-termination-handler/rebalance-recommendation", "effect": "PreferNoSchedule"}
    assert node_trouble(_node([aks_spot, rebalance])) is None
    assert node_trouble({"metadata": {"name": "new"}}) is None  # no status yet


def test_every_listed_taint_is_trouble_and_says_which() -> None:
    for key in INTERRUPTION_TAINTS:
        why = node_trouble(_node([{"key": key, "effect": "NoSchedule"}]))
        assert why is not None and why.endswith(f"({key})")
    assert node_trouble(_node([{"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}])) == (
        "Karpenter is disrupting the node (karpenter.sh/disrupted)"
    )


def test_cordoned_or_not_ready_is_trouble() -> None:
    assert node_trouble(_node(cordoned=True)) == "the node is cordoned"
    assert node_trouble(_node(ready="Unknown")) == "the node is NotReady"
    assert node_trouble(_node(ready="False")) == "the node is NotReady"


def test_pods_on_troubled_nodes_skip_terminating_and_unscheduled_ones() -> None:
    pods = [
        {"metadata": {"name": "a"}, "spec": {"nodeName": "bad"}},
        {"metadata": {"name": "b", "deletionTimestamp": "2026-01-01T00:00:00Z"}, "spec": {"nodeName": "bad"}},
        {"metadata": {"name": "c"}, "spec": {"nodeName": "good"}},
        {"metadata": {"name": "d"}, "spec": {}},
    ]
    found = pods_on_troubled_nodes(pods, {"bad": "the node is cordoned"})
    assert [(p["metadata"]["name"], why) for p, why in found] == [("a", "bad: the node is cordoned")]
