"""Presets and accelerators on the real control plane: each preset's replicas land on the kwok
nodes that look like its provider's (sandbox/tritonscale_sandbox/cluster.py), accelerator
products are honoured, and pods that request no accelerator (CPU-only Triton replicas, routers)
never take an accelerator node, though the scheduler would put them there otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests.builders import make_inference_service
from tests.e2e.conftest import ChartRelease, OperatorThread
from tests.e2e.test_operator import (
    EXAMPLES,
    INSTANCE,
    POOL,
    Expected,
    _deployment,
    _pod_ready,
    _pods,
    _yaml,
    wait_settled,
)
from tritonscale.api.resource import parse_inference_service
from tritonscale.render.names import StackNames
from tritonscale.render.router import RouterOptions, render_router_config, render_router_deployment
from tritonscale_sandbox.cluster import (
    AKS_GPU_PRODUCT,
    EKS_GPU_PRODUCT,
    GAUDI_PRODUCT,
    GAUDI_PRODUCT_LABEL,
    GKE_GPU_PRODUCT,
    TPU_PRODUCT,
    TPU_TOPOLOGY,
    Cluster,
    KubectlError,
)

pytestmark = pytest.mark.e2e

NODE_POOL = "karpenter.sh/nodepool"  # the harness labels every fake node with its pool's name
TRITON = "app.kubernetes.io/component=triton"
ROUTER = "app.kubernetes.io/component=router"


def _nodes(cluster: Cluster) -> dict[str, dict[str, Any]]:
    return {n["metadata"]["name"]: n for n in cluster.get_json("nodes")["items"]}


def _accelerator_nodes(cluster: Cluster) -> set[str]:
    """Nodes with an extended resource (nvidia.com/gpu, google.com/tpu, habana.ai/gaudi)."""
    return {
        name
        for name, node in _nodes(cluster).items()
        if any("/" in resource for resource in node["status"].get("allocatable", {}))
    }


def _pool_of(nodes: dict[str, dict[str, Any]], pod: dict[str, Any]) -> str:
    pool: str = nodes[pod["spec"]["nodeName"]]["metadata"]["labels"][NODE_POOL]
    return pool


def _match_expressions(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    (term,) = deployment["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    expressions: list[dict[str, Any]] = term["matchExpressions"]
    return expressions


def assert_routers_off_accelerators(cluster: Cluster, namespace: str, name: str) -> None:
    accelerators = _accelerator_nodes(cluster)
    routers = _pods(cluster, namespace, f"{INSTANCE}={name},{ROUTER}")
    assert routers and all(_pod_ready(p) for p in routers)
    on_accelerators = [
        (p["metadata"]["name"], p["spec"]["nodeName"])
        for p in routers
        if p["spec"]["nodeName"] in accelerators
    ]
    assert not on_accelerators, on_accelerators


@dataclass(frozen=True)
class PresetCase:
    preset: str
    product: str
    product_label: str
    spec: dict[str, Any]
    expected: Expected
    pools: dict[str, str]  # tritonscale.io/pool -> the node pool its pods must land on


PRESET_CASES = [
    PresetCase(
        "gke",
        GKE_GPU_PRODUCT,
        "cloud.google.com/gke-accelerator",
        {"onDemandBase": 1, "spot": {"enabled": True, "maxFraction": 0.75}},
        Expected(replicas=3, on_demand=1, spot=2),
        {"on-demand": "gke-a100", "spot": "gke-a100-spot"},
    ),
    # The EKS and AKS pools are spot only: every replica goes there.
    PresetCase(
        "eks",
        EKS_GPU_PRODUCT,
        "nvidia.com/gpu.product",
        {"onDemandBase": 0, "spot": {"enabled": True, "maxFraction": 1.0}},
        Expected(replicas=2, on_demand=0, spot=2),
        {"spot": "eks-l4-spot"},
    ),
    PresetCase(
        "aks",
        AKS_GPU_PRODUCT,
        "nvidia.com/gpu.product",
        {"onDemandBase": 0, "spot": {"enabled": True, "maxFraction": 1.0}},
        Expected(replicas=2, on_demand=0, spot=2),
        {"spot": "aks-a100-spot"},
    ),
]


@pytest.mark.parametrize("case", PRESET_CASES, ids=[c.preset for c in PRESET_CASES])
def test_a_preset_places_gpu_replicas_on_its_providers_pools(
    cluster: Cluster, operator: OperatorThread, case: PresetCase
) -> None:
    ns, name = f"e2e-preset-{case.preset}", "gpu"
    cluster.create_namespace(ns)
    service = make_inference_service(
        name,
        ns,
        spec__replicas=case.expected.replicas,
        spec__accelerator={"resource": "nvidia.com/gpu", "count": 1, "product": case.product},
        spec__capacity={"nodePoolPreset": case.preset, **case.spec},
    )
    cluster.kubectl("apply", "-f", "-", input=_yaml(service))
    wait_settled(cluster, operator, ns, name, case.expected)

    nodes = _nodes(cluster)
    triton = _pods(cluster, ns, f"{INSTANCE}={name},{TRITON}")
    assert len(triton) == case.expected.replicas
    for pod in triton:
        where = (pod["metadata"]["name"], pod["spec"]["nodeName"])
        assert _pod_ready(pod), where
        assert _pool_of(nodes, pod) == case.pools[pod["metadata"]["labels"][POOL]], where
        assert nodes[pod["spec"]["nodeName"]]["metadata"]["labels"][case.product_label] == case.product, where
    assert_routers_off_accelerators(cluster, ns, name)


def test_the_tpu_example_runs_on_tpu_slices_of_its_topology(
    cluster: Cluster, operator: OperatorThread
) -> None:
    cluster.kubectl("apply", "-f", str(EXAMPLES / "tpu.yaml"))
    wait_settled(cluster, operator, "tpu", "gemma", Expected(replicas=2, on_demand=2, spot=0))

    deployment = _deployment(cluster, "tpu", "gemma-ondemand")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"google.com/tpu": "8"}
    assert container["resources"]["requests"]["google.com/tpu"] == "8"
    expressions = _match_expressions(deployment)
    assert {
        "key": "cloud.google.com/gke-tpu-accelerator",
        "operator": "In",
        "values": [TPU_PRODUCT],
    } in expressions
    assert {
        "key": "cloud.google.com/gke-tpu-topology",
        "operator": "In",
        "values": [TPU_TOPOLOGY],
    } in expressions
    assert {"key": "google.com/tpu", "operator": "Exists", "effect": "NoSchedule"} in deployment["spec"][
        "template"
    ]["spec"]["tolerations"]
    nodes = _nodes(cluster)
    triton = _pods(cluster, "tpu", f"{INSTANCE}=gemma,{TRITON}")
    # Eight chips a replica, eight a node: one replica on each TPU node.
    assert sorted(p["spec"]["nodeName"] for p in triton) == ["gke-tpu-v5e-0", "gke-tpu-v5e-1"]
    assert all(_pool_of(nodes, p) == "gke-tpu-v5e" for p in triton)
    assert_routers_off_accelerators(cluster, "tpu", "gemma")


def test_the_custom_accelerator_example_runs_on_the_nodes_its_label_names(
    cluster: Cluster, operator: OperatorThread
) -> None:
    cluster.kubectl("apply", "-f", str(EXAMPLES / "custom-accelerator.yaml"))
    wait_settled(cluster, operator, "speech", "whisper", Expected(replicas=2, on_demand=2, spot=0))

    deployment = _deployment(cluster, "speech", "whisper-ondemand")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"habana.ai/gaudi": "1"}
    assert container["resources"]["requests"]["habana.ai/gaudi"] == "1"
    assert _match_expressions(deployment) == [
        {"key": GAUDI_PRODUCT_LABEL, "operator": "In", "values": [GAUDI_PRODUCT]}
    ]
    router = _deployment(cluster, "speech", "whisper-router")
    assert {"key": GAUDI_PRODUCT_LABEL, "operator": "DoesNotExist"} in _match_expressions(router)
    nodes = _nodes(cluster)
    triton = _pods(cluster, "speech", f"{INSTANCE}=whisper,{TRITON}")
    assert len(triton) == 2 and all(_pool_of(nodes, p) == "gaudi" for p in triton)
    assert_routers_off_accelerators(cluster, "speech", "whisper")


CPU_ONLY_PRESETS = {
    "karpenter": {},
    "gke": {},
    "eks": {},
    "aks": {},
    "custom": {"custom": {"acceleratorProductLabel": GAUDI_PRODUCT_LABEL}},
}
SMALL = {"requests": {"cpu": "250m", "memory": "256Mi", "ephemeral-storage": "1Gi"}}


def test_cpu_only_replicas_and_routers_of_every_preset_stay_off_accelerator_nodes(
    cluster: Cluster, operator: OperatorThread
) -> None:
    ns = "e2e-cpu-only"
    cluster.create_namespace(ns)
    services = [
        make_inference_service(
            f"cpu-{preset}",
            ns,
            spec__replicas=3,
            spec__triton={"resources": SMALL},
            spec__loadBalancing={"router": {"replicas": 3}},
            spec__capacity={"nodePoolPreset": preset, **extra},
        )
        for preset, extra in CPU_ONLY_PRESETS.items()
    ]
    cluster.kubectl("apply", "-f", "-", input="\n---\n".join(_yaml(s) for s in services))
    for service in services:
        wait_settled(
            cluster,
            operator,
            ns,
            service["metadata"]["name"],
            Expected(replicas=3, on_demand=3, spot=0, routers=3),
        )

    # A control: the same router pods without their node affinity do land on the untainted
    # Karpenter GPU nodes, so the scheduler had the choice and the affinity made it.
    parsed = parse_inference_service(services[0])
    names = StackNames(parsed.name, parsed.namespace)
    control = render_router_deployment(parsed, names, render_router_config(parsed, names, RouterOptions()))
    control["metadata"] = {"name": "router-without-affinity", "namespace": ns}
    control["spec"]["replicas"] = 6
    control["spec"]["selector"] = {"matchLabels": {"app": "control"}}
    template = control["spec"]["template"]
    template["metadata"]["labels"] = {"app": "control"}
    del template["spec"]["affinity"]
    for constraint in template["spec"]["topologySpreadConstraints"]:
        constraint["labelSelector"] = {"matchLabels": {"app": "control"}}
    cluster.apply_yaml(control)
    cluster.wait_for("deployment/router-without-affinity", "condition=Available", namespace=ns, timeout_s=90)

    accelerators = _accelerator_nodes(cluster)
    pods = _pods(cluster, ns, INSTANCE)
    assert len(pods) == len(services) * (3 + 3)
    assert all(_pod_ready(p) for p in pods)
    on_accelerators = sorted(
        (p["metadata"]["name"], p["spec"]["nodeName"]) for p in pods if p["spec"]["nodeName"] in accelerators
    )
    assert on_accelerators == []
    control_pods = _pods(cluster, ns, "app=control")
    assert len(control_pods) == 6
    assert any(p["spec"]["nodeName"] in accelerators for p in control_pods), [
        p["spec"]["nodeName"] for p in control_pods
    ]


INVALID = [
    (
        "neuron-product-without-karpenter",
        {"nodePoolPreset": "eks"},
        {"resource": "aws.amazon.com/neuron", "product": "inferentia2"},
        "spec.accelerator.product",
    ),
    (
        "other-resource-product-without-custom",
        {"nodePoolPreset": "gke"},
        {"resource": "habana.ai/gaudi", "product": "gaudi2"},
        "spec.accelerator.product",
    ),
    (
        "topology-on-a-gpu",
        {"nodePoolPreset": "gke"},
        {"resource": "nvidia.com/gpu", "topology": "2x4"},
        "spec.accelerator.topology",
    ),
    (
        "topology-malformed",
        {"nodePoolPreset": "gke"},
        {"resource": "google.com/tpu", "topology": "2by4"},
        "spec.accelerator.topology",
    ),
]


@pytest.mark.parametrize(
    ("capacity", "accelerator", "field"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_the_api_server_refuses_a_product_or_topology_no_node_label_can_carry(
    cluster: Cluster,
    chart_release: ChartRelease,
    capacity: dict[str, Any],
    accelerator: dict[str, Any],
    field: str,
) -> None:
    manifest = make_inference_service(
        "refused", "default", spec__capacity=capacity, spec__accelerator=accelerator
    )
    with pytest.raises(KubectlError) as refused:
        cluster.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=_yaml(manifest))
    assert field in refused.value.stderr, refused.value.stderr


def test_the_api_server_admits_what_the_model_admits(cluster: Cluster, chart_release: ChartRelease) -> None:
    for capacity, accelerator in (
        ({"nodePoolPreset": "karpenter"}, {"resource": "aws.amazon.com/neuron", "product": "inferentia2"}),
        (
            {"nodePoolPreset": "eks"},
            {"resource": "google.com/tpu", "product": "tpu-v5p-slice", "topology": "2x2x1"},
        ),
        (
            {"nodePoolPreset": "custom", "custom": {"acceleratorProductLabel": GAUDI_PRODUCT_LABEL}},
            {"resource": "habana.ai/gaudi", "product": GAUDI_PRODUCT},
        ),
    ):
        manifest = make_inference_service(
            "admitted", "default", spec__capacity=capacity, spec__accelerator=accelerator
        )
        parse_inference_service(manifest)
        cluster.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=_yaml(manifest))
