"""Renderers: golden output for the examples, and the properties every output must have."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.builders import load_example, make_inference_service
from tritonscale.api.resource import InferenceService, parse_inference_service
from tritonscale.policy.placement import Placement, split_replicas
from tritonscale.policy.replicas import reconciled_replicas
from tritonscale.render.names import COMPONENT_ROUTER, LABEL_COMPONENT, child_name, label_value
from tritonscale.render.router import CONFIG_HASH_ANNOTATION
from tritonscale.render.stack import render_stack
from tritonscale.yamlfmt import dump_all

ROOT = Path(__file__).parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
GOLDEN = ROOT / "tests" / "golden"
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def service_from(obj: dict[str, Any], uid: str | None = None) -> InferenceService:
    if uid:
        obj["metadata"]["uid"] = uid
    return parse_inference_service(obj)


def stack_of(service: InferenceService) -> list[dict[str, Any]]:
    return render_stack(service, split_replicas(reconciled_replicas(service), service.spec.capacity))


def by_kind_name(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_match_golden_files(example: Path) -> None:
    service = parse_inference_service(load_example(example))
    rendered = dump_all(stack_of(service))
    golden = GOLDEN / f"{example.stem}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert golden.exists(), f"run UPDATE_GOLDEN=1 pytest {__file__} to create {golden}"
    assert rendered == golden.read_text(), f"{golden} differs; review and run with UPDATE_GOLDEN=1"


def test_every_example_is_a_service_of_its_own() -> None:
    """`kubectl apply -f examples/` creates every example, none overwriting another."""
    services = [
        (document["metadata"].get("namespace", "default"), document["metadata"]["name"])
        for example in EXAMPLES
        for document in yaml.safe_load_all(example.read_text())
        if document and document["kind"] == "InferenceService"
    ]
    assert len(services) == len(EXAMPLES) and len(set(services)) == len(services), services


def test_stack_has_every_object_with_owner_references() -> None:
    service = service_from(make_inference_service(name="resnet", namespace="vision"), uid="u-1")
    objects = stack_of(service)
    assert sorted((o["kind"], o["metadata"]["name"]) for o in objects) == sorted(
        [
            ("ConfigMap", "resnet-router"),
            ("Service", "resnet-triton"),
            ("Deployment", "resnet-ondemand"),
            ("Deployment", "resnet-router"),
            ("Service", "resnet"),
            ("PodDisruptionBudget", "resnet-triton"),
            ("PodDisruptionBudget", "resnet-router"),
        ]
    )
    for obj in objects:
        assert obj["metadata"]["namespace"] == "vision"
        (reference,) = obj["metadata"]["ownerReferences"]
        assert (
            reference["uid"] == "u-1" and reference["kind"] == "InferenceService" and reference["controller"]
        )
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == "resnet"
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "tritonscale"


def test_rendering_is_deterministic() -> None:
    obj = make_inference_service(spec__capacity={"spot": {"enabled": True}}, spec__replicas=5)
    assert dump_all(stack_of(service_from(obj))) == dump_all(stack_of(service_from(obj)))


def test_spot_deployment_only_when_spot_is_enabled() -> None:
    plain = by_kind_name(stack_of(service_from(make_inference_service(name="a"))))
    assert ("Deployment", "a-spot") not in plain
    spotty = by_kind_name(
        stack_of(
            service_from(
                make_inference_service(
                    name="a",
                    spec__replicas=4,
                    spec__capacity={"onDemandBase": 1, "spot": {"enabled": True, "maxFraction": 0.75}},
                )
            )
        )
    )
    assert spotty[("Deployment", "a-ondemand")]["spec"]["replicas"] == 1
    spot = spotty[("Deployment", "a-spot")]
    assert spot["spec"]["replicas"] == 3
    pod = spot["spec"]["template"]["spec"]
    assert {
        "key": "karpenter.sh/capacity-type",
        "operator": "Equal",
        "value": "spot",
        "effect": "NoSchedule",
    } in pod["tolerations"]
    (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]} in term[
        "matchExpressions"
    ]
    on_demand_pod = spotty[("Deployment", "a-ondemand")]["spec"]["template"]["spec"]
    (term,) = on_demand_pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert {"key": "karpenter.sh/capacity-type", "operator": "NotIn", "values": ["spot"]} in term[
        "matchExpressions"
    ]


def test_pool_selectors_do_not_overlap_and_the_service_spans_both() -> None:
    objects = by_kind_name(
        stack_of(service_from(make_inference_service(name="a", spec__capacity={"spot": {"enabled": True}})))
    )
    on_demand = objects[("Deployment", "a-ondemand")]["spec"]["selector"]["matchLabels"]
    spot = objects[("Deployment", "a-spot")]["spec"]["selector"]["matchLabels"]
    assert on_demand["tritonscale.io/pool"] != spot["tritonscale.io/pool"]
    headless = objects[("Service", "a-triton")]["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["selector"].items() <= on_demand.items() and headless["selector"].items() <= spot.items()
    router_pods = objects[("Deployment", "a-router")]["spec"]["template"]["metadata"]["labels"]
    assert objects[("Service", "a")]["spec"]["selector"].items() <= router_pods.items()


@pytest.mark.parametrize(
    ("preset", "spot_key", "spot_value", "product_key"),
    [
        ("karpenter", "karpenter.sh/capacity-type", "spot", "karpenter.k8s.aws/instance-gpu-name"),
        ("gke", "cloud.google.com/gke-spot", "true", "cloud.google.com/gke-accelerator"),
        ("eks", "eks.amazonaws.com/capacityType", "SPOT", "nvidia.com/gpu.product"),
        ("aks", "kubernetes.azure.com/scalesetpriority", "spot", "nvidia.com/gpu.product"),
    ],
)
def test_presets_place_spot_and_accelerators(
    preset: str, spot_key: str, spot_value: str, product_key: str
) -> None:
    """The short version; tests/unit/test_presets.py has every preset, pool and accelerator."""
    obj = make_inference_service(
        name="g",
        spec__capacity={"nodePoolPreset": preset, "spot": {"enabled": True}},
        spec__accelerator={"resource": "nvidia.com/gpu", "count": 2, "product": "A100"},
        spec__replicas=4,
    )
    spot = by_kind_name(stack_of(service_from(obj)))[("Deployment", "g-spot")]
    pod = spot["spec"]["template"]["spec"]
    (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert {"key": spot_key, "operator": "In", "values": [spot_value]} in term["matchExpressions"]
    assert {"key": product_key, "operator": "In", "values": ["A100"]} in term["matchExpressions"]
    # EKS taints no spot node (and refuses taint keys under eks.amazonaws.com/).
    assert any(t["key"] == spot_key for t in pod["tolerations"]) == (preset != "eks")
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    resources = pod["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "2" and resources["requests"]["nvidia.com/gpu"] == "2"


def test_custom_preset_uses_the_given_labels_and_tolerations() -> None:
    obj = make_inference_service(
        name="c",
        spec__capacity={
            "nodePoolPreset": "custom",
            "spot": {"enabled": True},
            "custom": {
                "onDemand": {"nodeSelector": {"pool": "steady"}},
                "spot": {
                    "nodeSelector": {"pool": "cheap"},
                    "tolerations": [{"key": "cheap", "operator": "Exists", "effect": "NoExecute"}],
                },
                "acceleratorProductLabel": "example.com/gpu",
            },
        },
        spec__accelerator={"resource": "amd.com/gpu", "product": "MI300X"},
    )
    objects = by_kind_name(stack_of(service_from(obj)))
    spot_pod = objects[("Deployment", "c-spot")]["spec"]["template"]["spec"]
    (term,) = spot_pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert term["matchExpressions"] == [
        {"key": "pool", "operator": "In", "values": ["cheap"]},
        {"key": "example.com/gpu", "operator": "In", "values": ["MI300X"]},
    ]
    assert {"key": "cheap", "operator": "Exists", "effect": "NoExecute"} in spot_pod["tolerations"]


def test_triton_container_runs_the_managed_command_line_and_probes() -> None:
    obj = make_inference_service(
        spec__triton={"args": ["--log-verbose=1"], "env": [{"name": "AWS_REGION", "value": "x"}]}
    )
    deployment = by_kind_name(stack_of(service_from(obj)))[("Deployment", "svc-ondemand")]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["tritonserver", "--model-repository=s3://models/demo"]
    assert "--metrics-config=summary_latencies=true" in container["args"]
    assert container["args"][-1] == "--log-verbose=1"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["env"] == [{"name": "AWS_REGION", "value": "x"}]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize(
    ("triton", "failures", "shm"),
    [({}, 120, "1Gi"), ({"startupTimeoutSeconds": 1202, "sharedMemory": "4Gi"}, 241, "4Gi")],
)
def test_the_startup_budget_and_shared_memory_follow_the_spec(
    triton: dict[str, Any], failures: int, shm: str
) -> None:
    """The probe's budget covers at least the timeout; /dev/shm is memory-backed at the size asked."""
    deployment = by_kind_name(stack_of(service_from(make_inference_service(spec__triton=triton))))[
        ("Deployment", "svc-ondemand")
    ]
    pod = deployment["spec"]["template"]["spec"]
    probe = pod["containers"][0]["startupProbe"]
    assert (probe["periodSeconds"], probe["failureThreshold"]) == (5, failures)
    [volume] = [v for v in pod["volumes"] if v["name"] == "shm"]
    assert volume["emptyDir"] == {"medium": "Memory", "sizeLimit": shm}
    assert {"name": "shm", "mountPath": "/dev/shm"} in pod["containers"][0]["volumeMounts"]


def test_env_values_from_secrets_and_config_maps_are_left_to_the_kubelet() -> None:
    env = [
        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "store", "key": "secret"}}},
        {
            "name": "REGION",
            "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "region", "optional": True}},
        },
    ]
    obj = make_inference_service(spec__triton={"env": env})
    deployment = by_kind_name(stack_of(service_from(obj)))[("Deployment", "svc-ondemand")]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["env"] == [
        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "store", "key": "secret"}}},
        {
            "name": "REGION",
            "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "region", "optional": True}},
        },
    ]


def test_every_pod_meets_the_restricted_pod_security_level() -> None:
    obj = make_inference_service(spec__capacity={"spot": {"enabled": True}})
    for deployment in (o for o in stack_of(service_from(obj)) if o["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        for volume in pod["volumes"]:
            assert set(volume) - {"name"} <= {"emptyDir", "configMap"}


def test_router_config_hash_follows_the_config() -> None:
    def router_hash(policy: str, replicas: int) -> str:
        obj = make_inference_service(spec__loadBalancing={"policy": policy}, spec__replicas=replicas)
        router = by_kind_name(stack_of(service_from(obj)))[("Deployment", "svc-router")]
        annotations: dict[str, str] = router["spec"]["template"]["metadata"]["annotations"]
        return annotations[CONFIG_HASH_ANNOTATION]

    assert router_hash("RoundRobin", 2) == router_hash("RoundRobin", 2)
    assert router_hash("RoundRobin", 2) != router_hash("LeastConnections", 2)


def test_router_keeps_off_spot_capacity_and_accelerator_nodes() -> None:
    obj = make_inference_service(
        spec__capacity={"spot": {"enabled": True}}, spec__accelerator={"resource": "nvidia.com/gpu"}
    )
    router = by_kind_name(stack_of(service_from(obj)))[("Deployment", "svc-router")]
    (term,) = router["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    expressions = term["matchExpressions"]
    assert expressions[0] == {"key": "karpenter.sh/capacity-type", "operator": "NotIn", "values": ["spot"]}
    absent = {e["key"] for e in expressions[1:] if e["operator"] == "DoesNotExist"}
    assert {"karpenter.k8s.aws/instance-gpu-name", "nvidia.com/gpu.product"} <= absent
    assert len(absent) == len(expressions) - 1
    assert "tolerations" not in router["spec"]["template"]["spec"]


def test_status_selector_selects_triton_pods_of_both_pools() -> None:
    from tritonscale.render.names import StackNames

    names = StackNames("a", "ns")
    selector = dict(part.split("=") for part in names.triton_selector_string.split(","))
    assert selector.items() <= names.pool_selector("spot").items()
    assert selector.items() <= names.pool_selector("on-demand").items()


subdomain_names = st.from_regex(r"\A[a-z0-9]([-a-z0-9.]{0,200}[a-z0-9])?\Z", fullmatch=True).filter(
    lambda n: ".." not in n and ".-" not in n and "-." not in n
)


@settings(max_examples=200, deadline=None)
@given(name=subdomain_names)
def test_child_names_and_labels_are_valid_for_any_resource_name(name: str) -> None:
    obj = make_inference_service(name=name, spec__capacity={"spot": {"enabled": True}})
    for child in stack_of(service_from(obj)):
        assert DNS_1035.match(child["metadata"]["name"]), child["metadata"]["name"]
        assert len(child["metadata"]["name"]) <= 63
        for value in child["metadata"]["labels"].values():
            assert LABEL_VALUE.match(value) and len(value) <= 63, value


def test_long_names_that_share_a_prefix_stay_distinct() -> None:
    first, second = "a" * 80 + "x", "a" * 80 + "y"
    assert child_name(first, "router") != child_name(second, "router")
    assert label_value(first) != label_value(second)
    assert child_name("resnet", "router") == "resnet-router"
    assert child_name("1st.model", "") != "1st.model" and DNS_1035.match(child_name("1st.model", ""))


def test_placement_is_passed_through() -> None:
    service = service_from(make_inference_service(name="p", spec__capacity={"spot": {"enabled": True}}))
    objects = by_kind_name(render_stack(service, Placement(on_demand=2, spot=5)))
    assert objects[("Deployment", "p-ondemand")]["spec"]["replicas"] == 2
    assert objects[("Deployment", "p-spot")]["spec"]["replicas"] == 5


def test_the_triton_budget_counts_against_the_desired_replicas_not_the_stand_ins() -> None:
    """One replica at a time in normal times; with three stand-ins ready, the three spot pods
    on nodes being interrupted may all be evicted (7 desired, 10 pods: minAvailable 6)."""
    service = service_from(make_inference_service(name="p", spec__capacity={"spot": {"enabled": True}}))
    calm = by_kind_name(render_stack(service, Placement(on_demand=2, spot=5)))
    assert calm[("PodDisruptionBudget", "p-triton")]["spec"]["minAvailable"] == 6
    covered = by_kind_name(render_stack(service, Placement(on_demand=5, spot=5, stand_ins=3)))
    assert covered[("PodDisruptionBudget", "p-triton")]["spec"]["minAvailable"] == 6
    assert "maxUnavailable" not in covered[("PodDisruptionBudget", "p-triton")]["spec"]
    assert covered[("PodDisruptionBudget", "p-router")]["spec"]["maxUnavailable"] == 1


def _triton_container(**overrides: object) -> dict[str, Any]:
    service = parse_inference_service(make_inference_service(**overrides))
    objects = render_stack(service, split_replicas(2, service.spec.capacity))
    deployment = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-ondemand")
    )
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def test_triton_gets_default_requests_for_what_the_spec_leaves_out() -> None:
    """Never BestEffort (first evicted), and model downloads are accounted as ephemeral storage."""
    assert _triton_container()["resources"] == {
        "requests": {"cpu": "1", "ephemeral-storage": "10Gi", "memory": "2Gi"}
    }
    own = _triton_container(
        spec__triton={"resources": {"requests": {"cpu": "4"}, "limits": {"memory": "8Gi"}}}
    )
    # A memory limit alone sets the request (Kubernetes' rule), so no default is added for it.
    assert own["resources"] == {
        "requests": {"cpu": "4", "ephemeral-storage": "10Gi"},
        "limits": {"memory": "8Gi"},
    }
    assert {"name": "model-download", "mountPath": "/tmp"} in own["volumeMounts"]


def _router_container(**overrides: object) -> dict[str, Any]:
    service = parse_inference_service(make_inference_service(**overrides))
    objects = render_stack(service, split_replicas(2, service.spec.capacity))
    deployment = next(
        o
        for o in objects
        if o["kind"] == "Deployment" and o["metadata"]["labels"].get(LABEL_COMPONENT) == COMPONENT_ROUTER
    )
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def test_router_defaults_never_ask_more_than_its_limits() -> None:
    """Limits alone set the requests: a default request above a limit would make the API server
    refuse the Deployment."""
    assert _router_container()["resources"] == {
        "requests": {"cpu": "100m", "ephemeral-storage": "64Mi", "memory": "64Mi"}
    }
    small = _router_container(
        spec__loadBalancing={"router": {"resources": {"limits": {"cpu": "50m", "memory": "32Mi"}}}}
    )
    assert small["resources"] == {
        "requests": {"ephemeral-storage": "64Mi"},
        "limits": {"cpu": "50m", "memory": "32Mi"},
    }


def test_a_stopping_pod_has_the_time_its_longest_request_may_take() -> None:
    """Triton and router pods stop after a 10 s pause (routers and kube-proxy drop them), with
    the requests in flight given up to spec.loadBalancing.router.timeoutSeconds: a fixed 30 s
    grace period killed every request still running 25 s in."""
    service = parse_inference_service(
        make_inference_service(spec__loadBalancing={"router": {"timeoutSeconds": 900}})
    )
    deployments = [
        o
        for o in render_stack(service, split_replicas(2, service.spec.capacity))
        if o["kind"] == "Deployment"
    ]
    assert {d["metadata"]["name"] for d in deployments} == {"svc-ondemand", "svc-router"}
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] == 10 + 900 + 5
        assert pod["containers"][0]["lifecycle"]["preStop"] == {"sleep": {"seconds": 10}}
    triton = next(d for d in deployments if d["metadata"]["name"] == "svc-ondemand")
    assert "--exit-timeout-secs=900" in triton["spec"]["template"]["spec"]["containers"][0]["args"]
