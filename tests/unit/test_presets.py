"""Presets x capacity type x accelerator kind: the node requirements, tolerations and resources
of every rendered pod, written out here from the providers' documentation (see
render/presets.py for the sources), so a wrong key or value in the code shows."""

from __future__ import annotations

from typing import Any

import pytest

from tests.builders import make_inference_service
from tritonscale.api.resource import InvalidInferenceService, parse_inference_service
from tritonscale.api.spec import (
    KARPENTER_PRODUCT_LABELLED_RESOURCES,
    PRODUCT_LABELLED_RESOURCES,
    AcceleratorSpec,
    CapacitySpec,
    NodePoolPreset,
    product_has_a_label,
)
from tritonscale.policy.placement import Placement
from tritonscale.render.presets import product_label_key
from tritonscale.render.stack import render_stack

PRESETS = ["karpenter", "gke", "eks", "aks", "custom"]
CUSTOM = {
    "onDemand": {"nodeSelector": {"pool": "steady"}},
    "spot": {
        "nodeSelector": {"pool": "cheap"},
        "tolerations": [{"key": "cheap", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}],
    },
    "acceleratorProductLabel": "example.com/product",
}

# What each preset's pools require of a node.
SPOT_REQUIREMENTS = {
    "karpenter": [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]}],
    "gke": [{"key": "cloud.google.com/gke-spot", "operator": "In", "values": ["true"]}],
    "eks": [{"key": "eks.amazonaws.com/capacityType", "operator": "In", "values": ["SPOT"]}],
    "aks": [{"key": "kubernetes.azure.com/scalesetpriority", "operator": "In", "values": ["spot"]}],
    "custom": [{"key": "pool", "operator": "In", "values": ["cheap"]}],
}
ON_DEMAND_REQUIREMENTS = {
    "karpenter": [{"key": "karpenter.sh/capacity-type", "operator": "NotIn", "values": ["spot"]}],
    "gke": [
        {"key": "cloud.google.com/gke-spot", "operator": "NotIn", "values": ["true"]},
        {"key": "cloud.google.com/gke-preemptible", "operator": "NotIn", "values": ["true"]},
    ],
    "eks": [{"key": "eks.amazonaws.com/capacityType", "operator": "NotIn", "values": ["SPOT"]}],
    "aks": [{"key": "kubernetes.azure.com/scalesetpriority", "operator": "NotIn", "values": ["spot"]}],
    "custom": [{"key": "pool", "operator": "In", "values": ["steady"]}],
}
# The taints each preset's spot pods tolerate: EKS puts none on spot nodes.
SPOT_TOLERATIONS = {
    "karpenter": [
        {"key": "karpenter.sh/capacity-type", "operator": "Equal", "value": "spot", "effect": "NoSchedule"}
    ],
    "gke": [
        {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    ],
    "eks": [],
    "aks": [
        {
            "key": "kubernetes.azure.com/scalesetpriority",
            "operator": "Equal",
            "value": "spot",
            "effect": "NoSchedule",
        }
    ],
    "custom": [{"key": "cheap", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}],
}
# Labels a pod without an accelerator requires to be absent.
VENDOR_LABELS = {
    "nvidia.com/gpu.present",
    "nvidia.com/gpu.product",
    "feature.node.kubernetes.io/amd-gpu",
    "amd.com/gpu.product-name",
}
ABSENT_LABELS = {
    "karpenter": VENDOR_LABELS
    | {"karpenter.k8s.aws/instance-gpu-name", "karpenter.k8s.aws/instance-accelerator-name"},
    "gke": VENDOR_LABELS | {"cloud.google.com/gke-accelerator", "cloud.google.com/gke-tpu-accelerator"},
    "eks": VENDOR_LABELS,
    "aks": VENDOR_LABELS | {"kubernetes.azure.com/accelerator"},
    "custom": VENDOR_LABELS | {"example.com/product"},
}
TPU_TOPOLOGY = {"key": "cloud.google.com/gke-tpu-topology", "operator": "In", "values": ["2x4"]}


def _product(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "operator": "In", "values": [value]}


# (accelerator, {preset: requirements beyond the pool's}); presets missing refuse a product.
ACCELERATORS: list[tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]] = [
    (
        {"resource": "nvidia.com/gpu", "count": 2, "product": "a100"},
        {
            "karpenter": [_product("karpenter.k8s.aws/instance-gpu-name", "a100")],
            "gke": [_product("cloud.google.com/gke-accelerator", "a100")],
            "eks": [_product("nvidia.com/gpu.product", "a100")],
            "aks": [_product("nvidia.com/gpu.product", "a100")],
            "custom": [_product("example.com/product", "a100")],
        },
    ),
    (
        {"resource": "amd.com/gpu", "count": 1, "product": "MI300X"},
        {
            "karpenter": [_product("karpenter.k8s.aws/instance-gpu-name", "MI300X")],
            "gke": [_product("amd.com/gpu.product-name", "MI300X")],
            "eks": [_product("amd.com/gpu.product-name", "MI300X")],
            "aks": [_product("amd.com/gpu.product-name", "MI300X")],
            "custom": [_product("example.com/product", "MI300X")],
        },
    ),
    (
        {"resource": "google.com/tpu", "count": 8, "product": "tpu-v5-lite-podslice", "topology": "2x4"},
        {
            preset: [
                _product(
                    "example.com/product" if preset == "custom" else "cloud.google.com/gke-tpu-accelerator",
                    "tpu-v5-lite-podslice",
                ),
                TPU_TOPOLOGY,
            ]
            for preset in PRESETS
        },
    ),
    (
        {"resource": "aws.amazon.com/neuron", "count": 2, "product": "inferentia2"},
        {
            "karpenter": [_product("karpenter.k8s.aws/instance-accelerator-name", "inferentia2")],
            "custom": [_product("example.com/product", "inferentia2")],
        },
    ),
    (
        {"resource": "example.com/fpga", "count": 1, "product": "u250"},
        {"custom": [_product("example.com/product", "u250")]},
    ),
    # Without a product any resource goes anywhere it is allocatable.
    ({"resource": "example.com/fpga", "count": 1}, {preset: [] for preset in PRESETS}),
]
CASES = [
    pytest.param(
        preset, accelerator, extra, id=f"{preset}-{accelerator['resource']}-{accelerator.get('product')}"
    )
    for accelerator, by_preset in ACCELERATORS
    for preset in PRESETS
    for extra in [by_preset.get(preset)]
]


def _service(preset: str, accelerator: dict[str, Any] | None) -> dict[str, Any]:
    capacity: dict[str, Any] = {"nodePoolPreset": preset, "onDemandBase": 1, "spot": {"enabled": True}}
    if preset == "custom":
        capacity["custom"] = CUSTOM
    overrides: dict[str, Any] = {"spec__capacity": capacity}
    if accelerator is not None:
        overrides["spec__accelerator"] = accelerator
    return make_inference_service("s", "ns", **overrides)


def _pods(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Pod specs of the on-demand, spot and router Deployments, by Deployment name."""
    objects = render_stack(parse_inference_service(obj), Placement(on_demand=1, spot=2))
    return {
        o["metadata"]["name"]: o["spec"]["template"]["spec"] for o in objects if o["kind"] == "Deployment"
    }


# What keeps on-demand replicas and routers off spot beyond their own pool's requirements: the
# custom preset's on-demand selector need not exclude spot nodes, so the spot selector's labels do.
OFF_SPOT: dict[str, list[dict[str, Any]]] = {
    preset: [{"key": "pool", "operator": "NotIn", "values": ["cheap"]}] if preset == "custom" else []
    for preset in PRESETS
}


def _requirements(pod: dict[str, Any]) -> list[dict[str, Any]]:
    (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    expressions: list[dict[str, Any]] = term["matchExpressions"]
    return expressions


def _absent(pod: dict[str, Any]) -> set[str]:
    return {e["key"] for e in _requirements(pod) if e["operator"] == "DoesNotExist"}


@pytest.mark.parametrize(("preset", "accelerator", "extra"), CASES)
def test_accelerator_pods_by_preset_and_capacity_type(
    preset: str, accelerator: dict[str, Any], extra: list[dict[str, Any]] | None
) -> None:
    obj = _service(preset, accelerator)
    if extra is None:
        with pytest.raises(InvalidInferenceService) as refused:
            parse_inference_service(obj)
        assert [p.path for p in refused.value.problems] == ["spec.accelerator.product"]
        return
    pods = _pods(obj)
    accelerator_toleration = {"key": accelerator["resource"], "operator": "Exists", "effect": "NoSchedule"}
    aks_gpu = (
        [{"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]
        if preset == "aks" and accelerator["resource"] == "nvidia.com/gpu"
        else []
    )
    for name, pool, tolerations in (
        ("s-ondemand", ON_DEMAND_REQUIREMENTS[preset], []),
        ("s-spot", SPOT_REQUIREMENTS[preset], SPOT_TOLERATIONS[preset]),
    ):
        pod = pods[name]
        assert _requirements(pod) == pool + extra + (OFF_SPOT[preset] if name == "s-ondemand" else []), name
        assert pod["tolerations"] == [*tolerations, accelerator_toleration, *aks_gpu], name
        count = str(accelerator["count"])
        resources = pod["containers"][0]["resources"]
        assert resources["limits"] == {accelerator["resource"]: count}, name
        assert resources["requests"][accelerator["resource"]] == count, name
    # Routers need no accelerator, whatever the service's replicas need.
    router = pods["s-router"]
    assert _requirements(router)[: len(ON_DEMAND_REQUIREMENTS[preset])] == ON_DEMAND_REQUIREMENTS[preset]
    assert _absent(router) == ABSENT_LABELS[preset]
    assert "tolerations" not in router
    assert not set(router["containers"][0]["resources"]["requests"]) & {accelerator["resource"]}


@pytest.mark.parametrize("preset", PRESETS)
def test_cpu_only_pods_and_routers_require_every_accelerator_label_absent(preset: str) -> None:
    pods = _pods(_service(preset, None))
    for name, pool in (
        ("s-ondemand", ON_DEMAND_REQUIREMENTS[preset]),
        ("s-spot", SPOT_REQUIREMENTS[preset]),
        ("s-router", ON_DEMAND_REQUIREMENTS[preset]),
    ):
        pod = pods[name]
        requirements = _requirements(pod)
        assert requirements[: len(pool)] == pool, name
        assert requirements[len(pool) :] == [
            {"key": key, "operator": "DoesNotExist"} for key in sorted(ABSENT_LABELS[preset])
        ] + (OFF_SPOT[preset] if name != "s-spot" else []), name
        assert not any(t["key"] in {"nvidia.com/gpu", "google.com/tpu"} for t in pod.get("tolerations", []))
        for container in pod["containers"]:
            resources = container["resources"]
            assert set(resources.get("requests", {})) <= {"cpu", "memory", "ephemeral-storage"}, name
            assert "limits" not in resources, name
    assert pods["s-spot"].get("tolerations", []) == SPOT_TOLERATIONS[preset]
    assert "tolerations" not in pods["s-ondemand"]


def test_custom_preset_without_a_product_label_avoids_vendor_labelled_nodes_only() -> None:
    obj = make_inference_service(
        spec__capacity={"nodePoolPreset": "custom", "custom": {"onDemand": {"nodeSelector": {"pool": "a"}}}}
    )
    pods = _pods(obj)
    for name in ("svc-ondemand", "svc-router"):
        assert _requirements(pods[name])[0] == {"key": "pool", "operator": "In", "values": ["a"]}
        assert _absent(pods[name]) == VENDOR_LABELS


def test_an_accelerator_pod_never_requires_its_own_label_absent() -> None:
    for preset in ["karpenter", "gke", "eks", "aks"]:
        pods = _pods(_service(preset, {"resource": "nvidia.com/gpu", "product": "x"}))
        assert not _absent(pods["s-ondemand"]) and not _absent(pods["s-spot"])


@pytest.mark.parametrize(
    ("accelerator", "field"),
    [
        ({"resource": "nvidia.com/gpu", "topology": "2x4"}, "spec.accelerator.topology"),
        ({"resource": "google.com/tpu", "topology": "2by4"}, "spec.accelerator.topology"),
        ({"resource": "google.com/tpu", "topology": "2x4x4x4"}, "spec.accelerator.topology"),
        ({"resource": "google.com/tpu", "topology": "0x4"}, "spec.accelerator.topology"),
    ],
)
def test_topology_is_for_tpus_and_looks_like_one(accelerator: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInferenceService) as refused:
        parse_inference_service(make_inference_service(spec__accelerator=accelerator))
    assert field in [p.path for p in refused.value.problems]


def test_a_multi_host_topology_is_accepted() -> None:
    accelerator = {"resource": "google.com/tpu", "count": 4, "topology": "4x4x4"}
    spec = parse_inference_service(
        make_inference_service(spec__accelerator=accelerator, spec__capacity={"nodePoolPreset": "gke"})
    ).spec
    assert spec.accelerator is not None and spec.accelerator.topology == "4x4x4"


@pytest.mark.parametrize("preset", [p for p in NodePoolPreset if p != NodePoolPreset.CUSTOM])
@pytest.mark.parametrize(
    "resource",
    [
        *PRODUCT_LABELLED_RESOURCES,
        *KARPENTER_PRODUCT_LABELLED_RESOURCES,
        "example.com/fpga",
        "habana.ai/gaudi",
    ],
)
def test_the_model_admits_a_product_exactly_where_the_renderer_has_a_label(
    preset: NodePoolPreset, resource: str
) -> None:
    accelerator = AcceleratorSpec(resource=resource, product="p")
    capacity = CapacitySpec(node_pool_preset=preset)
    if product_has_a_label(accelerator, capacity):
        assert product_label_key(capacity, accelerator)
    else:
        with pytest.raises(ValueError, match="no node label"):
            product_label_key(capacity, accelerator)


def test_with_the_custom_preset_on_demand_pods_and_routers_avoid_nodes_matching_the_whole_spot_selector() -> (
    None
):
    obj = _service("custom", None)
    obj["spec"]["capacity"]["custom"] = {
        "onDemand": {"nodeSelector": {"role": "inference"}},
        "spot": {"nodeSelector": {"role": "inference", "lifecycle": "spot", "tier": "cheap"}},
    }
    pods = _pods(obj)
    for name in ("s-ondemand", "s-router"):
        terms = pods[name]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"
        ]
        # Not lifecycle=spot, or not tier=cheap (terms are ORed); `role` is shared, so no term.
        exclusions = [term["matchExpressions"][-1] for term in terms]
        assert exclusions == [
            {"key": "lifecycle", "operator": "NotIn", "values": ["spot"]},
            {"key": "tier", "operator": "NotIn", "values": ["cheap"]},
        ], name
        assert all(
            {"key": "role", "operator": "In", "values": ["inference"]} in t["matchExpressions"] for t in terms
        )
    spot_terms = pods["s-spot"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert len(spot_terms) == 1
    assert not any(e["operator"] == "NotIn" for e in spot_terms[0]["matchExpressions"])
