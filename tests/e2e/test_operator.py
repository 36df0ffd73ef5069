"""The operator against a real control plane: installed with the Helm chart, run with the
chart's ServiceAccount (so the chart's RBAC is what is tested), driven with kubectl.

Pods run under kwok: they are scheduled by the real kube-scheduler onto the fake node pools and
reported Running and Ready, but no container runs. Each test works in namespaces of its own;
the examples keep the namespaces they are written for.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.builders import INVALID_CASES, load_example, make_inference_service, make_invalid
from tests.e2e.conftest import CHART, REPO, RESTRICTED, ChartRelease, OperatorThread
from tests.e2e.interrupted_operator import PAUSED
from tritonscale_sandbox.cluster import (
    CAPACITY_TYPE_LABEL,
    GPU_PRODUCT,
    KARPENTER_GPU_NAME,
    Cluster,
    KubectlError,
)

pytestmark = pytest.mark.e2e

EXAMPLES = REPO / "examples"
INSTANCE = "app.kubernetes.io/instance"
POOL = "tritonscale.io/pool"
CONFIG_HASH = "tritonscale.io/config-hash"
CHILD_KINDS = "configmaps,services,deployments,poddisruptionbudgets,networkpolicies"
# Every kind that exists because of an InferenceService, directly or through a Deployment.
ALL_KINDS = f"{CHILD_KINDS},replicasets,pods"
READY_TIMEOUT_S = 90.0
GPU_SPOT = {
    "accelerator": {"resource": "nvidia.com/gpu", "count": 1, "product": KARPENTER_GPU_NAME},
    "capacity": {
        "nodePoolPreset": "karpenter",
        "onDemandBase": 1,
        "spot": {"enabled": True, "maxFraction": 0.75},
    },
}


# --------------------------------------------------------------------------------------------
# helpers


def _yaml(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=False)


def _get(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = cluster.get_json("inferenceservice", name, namespace=namespace)
    return obj


def _condition(obj: dict[str, Any], condition: str) -> dict[str, Any] | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == condition), None)


def _expected_children(name: str, spot: bool) -> dict[str, list[str]]:
    deployments = [f"{name}-ondemand", f"{name}-router"] + ([f"{name}-spot"] if spot else [])
    return {
        "ConfigMap": [f"{name}-router"],
        "Deployment": sorted(deployments),
        "PodDisruptionBudget": sorted([f"{name}-router", f"{name}-triton"]),
        "Service": sorted([name, f"{name}-triton"]),
    }


def _children(cluster: Cluster, namespace: str, name: str, kinds: str = CHILD_KINDS) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json(kinds, "-l", f"{INSTANCE}={name}", namespace=namespace)[
        "items"
    ]
    return items


def _by_kind(objects: list[dict[str, Any]]) -> dict[str, list[str]]:
    kinds: dict[str, list[str]] = {}
    for obj in objects:
        kinds.setdefault(obj["kind"], []).append(obj["metadata"]["name"])
    return {kind: sorted(names) for kind, names in sorted(kinds.items())}


def _deployment(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = cluster.get_json("deployment", name, namespace=namespace)
    return obj


def _pods(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json("pods", "-l", selector, namespace=namespace)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def _node_labels(cluster: Cluster) -> dict[str, dict[str, str]]:
    return {n["metadata"]["name"]: n["metadata"]["labels"] for n in cluster.get_json("nodes")["items"]}


def _pod_ready(pod: dict[str, Any]) -> bool:
    return pod["status"].get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])
    )


@dataclass(frozen=True)
class Expected:
    """The status an InferenceService must settle at."""

    replicas: int
    on_demand: int
    spot: int
    routers: int = 2


def _settled(cluster: Cluster, namespace: str, name: str, expected: Expected) -> Callable[[], Any]:
    """A predicate: Ready=True, rolled out, counts as expected, for the current generation."""

    def check() -> dict[str, Any] | None:
        obj = _get(cluster, namespace, name)
        status = obj.get("status", {})
        ready = _condition(obj, "Ready")
        progressing = _condition(obj, "Progressing")
        settled = (
            status.get("observedGeneration") == obj["metadata"]["generation"]
            and ready is not None
            and ready["status"] == "True"
            and ready.get("observedGeneration") == obj["metadata"]["generation"]
            and progressing is not None
            and progressing["status"] == "False"
            and status.get("replicas") == expected.replicas
            and status.get("desiredReplicas") == expected.replicas
            and status.get("onDemandReplicas") == expected.on_demand
            and status.get("spotReplicas") == expected.spot
            and status.get("routerReplicas") == expected.routers
        )
        return obj if settled else None

    return check


def wait_settled(
    cluster: Cluster,
    operator: OperatorThread,
    namespace: str,
    name: str,
    expected: Expected,
    timeout_s: float = READY_TIMEOUT_S,
) -> dict[str, Any]:
    """Wait for the InferenceService to be Ready with the expected counts; fail with its status."""
    check = _settled(cluster, namespace, name, expected)

    def settled_or_operator_dead() -> Any:
        operator.assert_healthy()
        return check()

    try:
        obj: dict[str, Any] = cluster.wait_until(
            settled_or_operator_dead,
            f"{namespace}/{name} to be Ready with {expected}",
            timeout_s=timeout_s,
        )
    except TimeoutError as timeout:
        status = cluster.get_json("inferenceservice", name, namespace=namespace).get("status")
        raise AssertionError(
            f"{timeout}\nstatus: {json.dumps(status, indent=1)}\noperator log:\n{operator.log_tail(30)}"
        ) from None
    return obj


def assert_owned_stack(cluster: Cluster, namespace: str, name: str, spot: bool) -> None:
    """Exactly the stack's children exist, each owned by the InferenceService and applied by
    the operator's field manager."""
    uid = _get(cluster, namespace, name)["metadata"]["uid"]
    children = cluster.get_json(
        CHILD_KINDS, "-l", f"{INSTANCE}={name}", "--show-managed-fields", namespace=namespace
    )["items"]
    assert _by_kind(children) == _expected_children(name, spot)
    for child in children:
        where = f"{child['kind']} {child['metadata']['name']}"
        assert child["metadata"].get("ownerReferences") == [
            {
                "apiVersion": "tritonscale.io/v1alpha1",
                "kind": "InferenceService",
                "name": name,
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ], where
        labels = child["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "tritonscale", where
        assert labels["app.kubernetes.io/part-of"] == "tritonscale", where
        managers = {(m["manager"], m["operation"]) for m in child["metadata"]["managedFields"]}
        assert ("tritonscale", "Apply") in managers, (where, managers)


def assert_one_replicaset_per_deployment(cluster: Cluster, namespace: str, name: str) -> None:
    """Each Deployment has one ReplicaSet (no template churn) and no failed pod creation."""
    replicasets = _children(cluster, namespace, name, "replicasets")
    owners = [rs["metadata"]["ownerReferences"][0]["name"] for rs in replicasets]
    assert sorted(owners) == sorted(set(owners)), f"more than one ReplicaSet per Deployment: {owners}"
    for rs in replicasets:
        failures = [c for c in rs.get("status", {}).get("conditions", []) if c["type"] == "ReplicaFailure"]
        assert not failures, (rs["metadata"]["name"], failures)


def _accelerator_nodes(cluster: Cluster) -> set[str]:
    """Nodes with an extended resource (nvidia.com/gpu, google.com/tpu, habana.ai/gaudi)."""
    return {
        n["metadata"]["name"]
        for n in cluster.get_json("nodes")["items"]
        if any("/" in resource for resource in n["status"].get("allocatable", {}))
    }


def assert_placement(cluster: Cluster, namespace: str, name: str, gpu: bool, spot_pods: int) -> None:
    """Triton pods on the right pools (GPU nodes for GPU pods, never for CPU-only ones; spot pool
    on spot nodes only, on-demand pool never on spot); routers never on spot nor on accelerator
    nodes; every pod Running and Ready."""
    nodes = _node_labels(cluster)
    accelerators = _accelerator_nodes(cluster)
    triton = _pods(cluster, namespace, f"{INSTANCE}={name},app.kubernetes.io/component=triton")
    routers = _pods(cluster, namespace, f"{INSTANCE}={name},app.kubernetes.io/component=router")
    for pod in triton + routers:
        assert _pod_ready(pod), (pod["metadata"]["name"], pod["status"])
        assert pod["spec"].get("nodeName") in nodes, pod["metadata"]["name"]
    for pod in triton:
        node = nodes[pod["spec"]["nodeName"]]
        where = (pod["metadata"]["name"], pod["spec"]["nodeName"])
        wanted_capacity = "spot" if pod["metadata"]["labels"][POOL] == "spot" else "on-demand"
        assert node[CAPACITY_TYPE_LABEL] == wanted_capacity, where
        if gpu:
            assert node.get("nvidia.com/gpu.product") == GPU_PRODUCT, where
            assert node.get("karpenter.k8s.aws/instance-gpu-name") == KARPENTER_GPU_NAME, where
        else:
            assert pod["spec"]["nodeName"] not in accelerators, where
    for pod in routers:
        where = (pod["metadata"]["name"], pod["spec"]["nodeName"])
        assert nodes[pod["spec"]["nodeName"]][CAPACITY_TYPE_LABEL] != "spot", where
        assert pod["spec"]["nodeName"] not in accelerators, where
    assert sum(pod["metadata"]["labels"][POOL] == "spot" for pod in triton) == spot_pods


def _field_path_named(message: str, path: str) -> bool:
    """The API server's message names `path` as a field: `path: ...`, `path[1]: ...` (an item
    of it), `.path: ...` (server-side apply) or `unknown field "path"` (strict decoding), and
    not merely a longer path that starts the same way."""
    return re.search(rf'(?<![\w.])\.?{re.escape(path)}(?=: |\[\d+\]: |")', message) is not None


# --------------------------------------------------------------------------------------------
# the chart


def test_chart_lints_and_renders_with_the_built_helm(testenv_bin: Path, tmp_path: Path) -> None:
    helm = testenv_bin / "helm"
    env = {
        **os.environ,
        **{f"HELM_{kind}_HOME": str(tmp_path / kind.lower()) for kind in ("CACHE", "CONFIG", "DATA")},
    }

    # This helm is built without helm's own ldflags that set its default Kubernetes version
    # (it would assume 1.20 and refuse the chart's kubeVersion); use the version under test.
    kube_version = re.search(r"testenv-(v\d+\.\d+\.\d+)", str(testenv_bin))
    assert kube_version is not None, testenv_bin

    def run(*args: str) -> str:
        result = subprocess.run(
            [str(helm), *args, f"--kube-version={kube_version[1]}"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=120,
        )
        assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    for values in ([], ["--set", "operator.watchNamespaces={vision,nlp}"]):
        lint = run("lint", "--strict", str(CHART), *values)
        assert "0 chart(s) failed" in lint
        assert "[WARNING]" not in lint and "[ERROR]" not in lint, lint

    rendered = [
        d for d in yaml.safe_load_all(run("template", "ts", str(CHART), "-n", "ops", "--skip-tests")) if d
    ]
    kinds = sorted(d["kind"] for d in rendered)
    assert kinds == [
        "ClusterRole", "ClusterRole", "ClusterRole", "ClusterRole", "ClusterRoleBinding", "ClusterRoleBinding",
        "Deployment", "Role",
        "RoleBinding", "Service", "ServiceAccount",
    ]  # fmt: skip
    leader_role = next(d for d in rendered if d["kind"] == "Role")
    assert [r["resources"] for r in leader_role["rules"]] == [["leases"], ["leases"]]
    assert (
        next(d for d in rendered if d["kind"] == "Deployment")["spec"]["template"]["spec"][
            "serviceAccountName"
        ]
        == next(d for d in rendered if d["kind"] == "ServiceAccount")["metadata"]["name"]
    )

    # With standbys: spread over nodes, and drained one at a time.
    assert "[WARNING]" not in run("lint", "--strict", str(CHART), "--set", "operator.replicas=2")
    highly_available = [
        d
        for d in yaml.safe_load_all(
            run("template", "ts", str(CHART), "-n", "ops", "--skip-tests", "--set", "operator.replicas=2")
        )
        if d
    ]
    budget = next(d for d in highly_available if d["kind"] == "PodDisruptionBudget")
    deployment = next(d for d in highly_available if d["kind"] == "Deployment")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    [spread] = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]

    namespaced = [
        d
        for d in yaml.safe_load_all(
            run("template", "ts", str(CHART), "-n", "ops", "--set", "operator.watchNamespaces={vision,nlp}")
        )
        if d
    ]
    bindings = sorted(
        d["metadata"]["namespace"]
        for d in namespaced
        if d["kind"] == "RoleBinding" and d["roleRef"]["kind"] == "ClusterRole"
    )
    assert bindings == ["nlp", "vision"]
    # Only nodes, which have no namespace, stay bound cluster-wide.
    assert [d["roleRef"]["name"] for d in namespaced if d["kind"] == "ClusterRoleBinding"] == [
        "ts-tritonscale-nodes"
    ]


def _privileged_pod(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged", "namespace": namespace},
        "spec": {
            "containers": [{"name": "main", "image": "busybox:1.36", "securityContext": {"privileged": True}}]
        },
    }


def test_the_charts_pods_are_admitted_under_restricted_pod_security(
    cluster: Cluster, chart_release: ChartRelease
) -> None:
    """The release namespace enforces `restricted` (chart_release): the operator's pod was
    admitted, and so is the chart's `helm test` pod; a privileged pod is not."""
    ns = chart_release.namespace
    labels = cluster.get_json("namespace", ns)["metadata"]["labels"]
    assert RESTRICTED.items() <= labels.items(), labels
    pods = cluster.get_json("pods", "-l", f"app.kubernetes.io/instance={chart_release.name}", namespace=ns)[
        "items"
    ]
    assert pods, "no operator pod was admitted"
    failed = cluster.get_json("events", "--field-selector", "reason=FailedCreate", namespace=ns)["items"]
    assert not failed, [e["message"] for e in failed]
    test_pod = cluster.helm(
        "template",
        chart_release.name,
        str(CHART),
        "-n",
        ns,
        "--show-only",
        "templates/tests/test-health.yaml",
    ).stdout
    admitted = cluster.kubectl("apply", "--dry-run=server", "-n", ns, "-f", "-", input=test_pod)
    assert "Warning" not in admitted.stderr, admitted.stderr
    with pytest.raises(KubectlError, match="violates PodSecurity"):
        cluster.apply_yaml(_privileged_pod(ns))


def test_chart_installs_the_crd_and_a_least_privilege_identity(
    cluster: Cluster, chart_release: ChartRelease, operator_kubeconfig: Path
) -> None:
    assert chart_release.name in cluster.helm("list", "-n", chart_release.namespace, "-q").stdout
    cluster.kubectl("get", "serviceaccount", chart_release.service_account, "-n", chart_release.namespace)
    crd = cluster.get_json("crd", "inferenceservices.tritonscale.io")
    assert crd["spec"]["names"]["shortNames"] == ["tis"]

    installed = crd["spec"]["versions"][0]["schema"]
    committed = yaml.safe_load((REPO / "crds" / "inferenceservices.tritonscale.io.yaml").read_text())
    assert installed == committed["spec"]["versions"][0]["schema"], "the chart installed another CRD"

    def can_i(verb: str, resource: str, *extra: str, namespace: str | None = "vision") -> bool:
        scope = ["-n", namespace] if namespace else []
        result = cluster.kubectl(
            "auth", "can-i", verb, resource, *extra, *scope, kubeconfig=operator_kubeconfig, check=False
        )
        return result.stdout.strip() == "yes"

    needed = [
        ("get", "inferenceservices.tritonscale.io"),
        ("list", "inferenceservices.tritonscale.io"),
        ("watch", "inferenceservices.tritonscale.io"),
        ("patch", "inferenceservices.tritonscale.io"),
        ("patch", "inferenceservices.tritonscale.io", "--subresource=status"),
        ("create", "deployments.apps"),
        ("patch", "deployments.apps"),
        ("delete", "deployments.apps"),
        ("patch", "services"),
        ("patch", "configmaps"),
        ("patch", "poddisruptionbudgets.policy"),
        ("create", "events"),
        ("patch", "events"),  # a repeated Event raises its count
        ("list", "pods"),  # scheduling failures, and the Triton source's ready replicas
        ("create", "pods", "--subresource=eviction"),  # drain spot pods on interrupted nodes
        # each child is read before it is written, so another owner's object is never adopted
        ("get", "deployments.apps"),
        ("get", "services"),
        ("get", "configmaps"),
        ("get", "poddisruptionbudgets.policy"),
    ]
    assert [n for n in needed if not can_i(*n)] == []
    not_needed = [
        ("get", "secrets"),
        ("create", "pods"),
        ("get", "pods"),
        ("delete", "events"),
        ("delete", "services"),
        ("delete", "configmaps"),
        ("delete", "inferenceservices.tritonscale.io"),
        ("create", "inferenceservices.tritonscale.io"),
        ("update", "deployments.apps"),
        ("create", "roles.rbac.authorization.k8s.io"),
    ]
    assert [n for n in not_needed if can_i(*n)] == []
    assert not can_i("update", "inferenceservices.tritonscale.io", "--subresource=status")
    assert can_i("watch", "nodes", namespace=None)  # interruption taints, cordon, NotReady
    assert not can_i("get", "nodes", namespace=None)
    assert not can_i("patch", "nodes", namespace=None)
    assert not can_i("delete", "pods")
    assert not can_i("create", "customresourcedefinitions.apiextensions.k8s.io", namespace=None)


def test_a_namespaces_editors_manage_inference_services_and_its_viewers_read_them(
    cluster: Cluster, chart_release: ChartRelease
) -> None:
    """Through the built-in edit and view roles, which the controller manager's aggregation
    fills from the chart's labelled ClusterRoles."""
    ns = "people-access"
    cluster.create_namespace(ns)
    cluster.kubectl("create", "rolebinding", "editor", "--clusterrole=edit", "--user=editor", "-n", ns)
    cluster.kubectl("create", "rolebinding", "viewer", "--clusterrole=view", "--user=viewer", "-n", ns)

    def can(user: str, verb: str, *resource: str) -> bool:
        result = cluster.kubectl("auth", "can-i", verb, *resource, "-n", ns, f"--as={user}", check=False)
        return result.stdout.strip() == "yes"

    cluster.wait_until(
        lambda: can("editor", "create", "inferenceservices.tritonscale.io"), "edit to aggregate"
    )
    assert can("editor", "patch", "inferenceservices.tritonscale.io", "--subresource=scale")
    assert can("editor", "delete", "inferenceservices.tritonscale.io")
    assert not can("editor", "patch", "inferenceservices.tritonscale.io", "--subresource=status")
    cluster.wait_until(lambda: can("viewer", "list", "inferenceservices.tritonscale.io"), "view to aggregate")
    assert can("viewer", "get", "inferenceservices.tritonscale.io", "--subresource=status")
    assert not can("viewer", "create", "inferenceservices.tritonscale.io")
    assert not can("viewer", "patch", "inferenceservices.tritonscale.io")
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_kubectl_explain_describes_the_fields(cluster: Cluster, chart_release: ChartRelease) -> None:
    spec = cluster.kubectl("explain", "tis.spec").stdout
    assert "The desired Triton serving stack." in spec
    for field in ("model", "triton", "accelerator", "capacity", "loadBalancing", "autoscaling", "replicas"):
        assert re.search(rf"^\s+{field}\s+<", spec, re.MULTILINE), field
    nested = cluster.kubectl("explain", "tis.spec.capacity.spot.maxFraction").stdout
    assert "Largest fraction of replicas that may run on spot." in nested
    assert "<number>" in nested
    latency = cluster.kubectl("explain", "inferenceservices.spec.autoscaling.latency").stdout
    assert "targetMilliseconds" in latency and "Latency target in milliseconds." in latency


# --------------------------------------------------------------------------------------------
# validation by the API server


def test_the_valid_baseline_and_every_example_pass_the_api_server(
    cluster: Cluster, chart_release: ChartRelease
) -> None:
    cluster.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=_yaml(make_invalid({})))
    for example in sorted(EXAMPLES.glob("*.yaml")):
        manifest = load_example(example)
        # A dry run needs an existing namespace; the examples' own come with the tests that run them.
        manifest["metadata"]["namespace"] = "default"
        cluster.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=_yaml(manifest))


def test_the_invalid_table_is_large_enough() -> None:
    assert len(INVALID_CASES) >= 20


@pytest.mark.parametrize(
    ("overrides", "path"), [c[1:] for c in INVALID_CASES], ids=[c[0] for c in INVALID_CASES]
)
def test_the_api_server_rejects_invalid_resources_naming_the_field(
    cluster: Cluster, chart_release: ChartRelease, overrides: dict[str, Any], path: str
) -> None:
    manifest = _yaml(make_invalid(overrides))
    # Both ways users apply: client-side `kubectl apply` (a create for a new object) and
    # server-side apply, which reports some problems (duplicate set items) differently.
    for mode in ([], ["--server-side"]):
        result = cluster.kubectl("apply", *mode, "--dry-run=server", "-f", "-", input=manifest, check=False)
        how = " ".join(["kubectl apply", *mode])
        assert result.returncode != 0, f"{how}: the API server accepted it: {result.stdout}"
        assert "Error from server" in result.stderr or "is invalid" in result.stderr, (how, result.stderr)
        assert _field_path_named(result.stderr, path), f"{how}: {path} not named in: {result.stderr}"


# --------------------------------------------------------------------------------------------
# the examples


@dataclass(frozen=True)
class Example:
    file: str
    namespace: str
    name: str
    expected: Expected
    gpu: bool
    spot: bool


EXAMPLE_CASES = [
    Example(
        "minimal.yaml", "default", "echo", Expected(replicas=1, on_demand=1, spot=0), gpu=False, spot=False
    ),
    Example(
        "gpu-spot.yaml", "vision", "resnet", Expected(replicas=4, on_demand=1, spot=3), gpu=True, spot=True
    ),
    Example(
        "latency-autoscaled.yaml",
        "nlp",
        "bert",
        Expected(replicas=2, on_demand=2, spot=0),
        gpu=False,
        spot=False,
    ),
]


@pytest.fixture(scope="module")
def examples(cluster: Cluster, operator: OperatorThread) -> dict[str, dict[str, Any]]:
    """Every example applied with `kubectl apply -f` as the README says, on namespaces that do
    not exist yet (each example brings its own), settled."""
    for example in EXAMPLE_CASES:
        if example.namespace != "default":
            missing = cluster.kubectl("get", "namespace", example.namespace, check=False)
            assert missing.returncode != 0, f"namespace {example.namespace} exists already"
        cluster.kubectl("apply", "-f", str(EXAMPLES / example.file))
    return {
        example.file: wait_settled(cluster, operator, example.namespace, example.name, example.expected)
        for example in EXAMPLE_CASES
    }


@pytest.mark.parametrize("example", EXAMPLE_CASES, ids=[e.file for e in EXAMPLE_CASES])
def test_an_example_becomes_a_ready_stack_of_owned_children(
    cluster: Cluster, examples: dict[str, dict[str, Any]], example: Example
) -> None:
    status = examples[example.file]["status"]
    assert status["endpoint"] == f"http://{example.name}.{example.namespace}.svc:8000"
    assert status["selector"] == (
        f"app.kubernetes.io/component=triton,{INSTANCE}={example.name},app.kubernetes.io/managed-by=tritonscale"
    )
    assert_owned_stack(cluster, example.namespace, example.name, example.spot)
    assert_one_replicaset_per_deployment(cluster, example.namespace, example.name)
    on_demand = _deployment(cluster, example.namespace, f"{example.name}-ondemand")
    assert on_demand["spec"]["replicas"] == example.expected.on_demand
    if example.spot:
        assert _deployment(cluster, example.namespace, f"{example.name}-spot")["spec"]["replicas"] == (
            example.expected.spot
        )
    events = cluster.get_json(
        "events", "--field-selector", f"involvedObject.name={example.name}", namespace=example.namespace
    )["items"]
    assert {"Reconciled", "Ready"} <= {e["reason"] for e in events}


@pytest.mark.parametrize("example", EXAMPLE_CASES, ids=[e.file for e in EXAMPLE_CASES])
def test_an_example_runs_on_the_right_node_pools(
    cluster: Cluster, examples: dict[str, dict[str, Any]], example: Example
) -> None:
    assert_placement(
        cluster, example.namespace, example.name, gpu=example.gpu, spot_pods=example.expected.spot
    )


def test_kubectl_get_shows_the_printer_columns(cluster: Cluster, examples: dict[str, dict[str, Any]]) -> None:
    # bert's target shows once its autoscaler has ticked (a few seconds after it was created).
    cluster.wait_until(
        lambda: _get(cluster, "nlp", "bert").get("status", {}).get("targetLatencyMilliseconds") == 100,
        "bert's first autoscaling tick",
    )
    lines = cluster.kubectl("get", "tis", "-A").stdout.splitlines()
    header = lines[0]
    columns = [
        "NAMESPACE",
        "NAME",
        "READY",
        "STATUS",
        "ON-DEMAND",
        "SPOT",
        "LATENCY",
        "RATE",
        "POLICY",
        "AGE",
    ]
    assert header.split() == columns
    starts = [m.start() for m in re.finditer(r"\S+", header)]

    def cells(line: str) -> dict[str, str]:
        bounds = [*starts[1:], None]
        return {c: line[s:e].strip() for c, s, e in zip(columns, starts, bounds, strict=True)}

    rows = {(row["NAMESPACE"], row["NAME"]): row for row in map(cells, lines[1:])}
    resnet, bert, echo = rows[("vision", "resnet")], rows[("nlp", "bert")], rows[("default", "echo")]
    assert (resnet["READY"], resnet["STATUS"], resnet["ON-DEMAND"], resnet["SPOT"], resnet["POLICY"]) == (
        "4/4",
        "Serving",
        "1",
        "3",
        "LeastConnections",
    )
    assert resnet["LATENCY"] == ""  # no latency objective without autoscaling

    assert (bert["READY"], bert["STATUS"], bert["SPOT"], bert["POLICY"]) == (
        "2/2",
        "Serving",
        "0",
        "PowerOfTwoChoices",
    )
    # The objective shows from the first tick; nothing measured latency yet, so the column shows
    # a dash rather than a made-up 0.
    assert bert["LATENCY"] == "p95 -/100ms"
    assert (echo["READY"], echo["STATUS"], echo["POLICY"]) == ("1/1", "Serving", "LeastConnections")
    assert all(re.fullmatch(r"\d+[smh]\d*[sm]?", row["AGE"]) for row in rows.values()), rows

    wide = cluster.kubectl("get", "tis", "resnet", "-n", "vision", "-o", "wide").stdout
    assert "ROUTERS" in wide and "ENDPOINT" in wide and "http://resnet.vision.svc:8000" in wide


# --------------------------------------------------------------------------------------------
# changes, scaling, deletion


def test_the_autoscaler_learns_the_cold_start_from_the_services_own_pods(
    cluster: Cluster, examples: dict[str, dict[str, Any]]
) -> None:
    """The kwok pods' creation and Ready times are real API data; the figure is their median."""

    def learnt() -> dict[str, Any] | None:
        model = _get(cluster, "nlp", "bert").get("status", {}).get("capacityModel")
        return model if model and model["coldStartSource"].startswith("median") else None

    cluster.wait_until(lambda: learnt() is not None, "bert's cold start learnt from its pods")
    model = learnt()
    assert model is not None
    pods = cluster.get_json(
        "pods", "-l", "app.kubernetes.io/instance=bert,app.kubernetes.io/component=triton", namespace="nlp"
    )["items"]
    starts = sorted(
        (
            datetime.fromisoformat(c["lastTransitionTime"])
            - datetime.fromisoformat(p["metadata"]["creationTimestamp"])
        ).total_seconds()
        for p in pods
        for c in p["status"].get("conditions", [])
        if c["type"] == "Ready" and c["status"] == "True"
    )
    assert starts and min(starts) <= model["coldStartSeconds"] <= max(starts)
    # The operator runs with reading Triton pods switched off here: the batch limit says so.
    assert model["maxBatch"] == 1 and "switched off" in model["maxBatchSource"]


def test_a_spec_change_is_rolled_out(cluster: Cluster, operator: OperatorThread) -> None:
    ns, name = "e2e-update", "rollout"
    cluster.create_namespace(ns)
    spec = {**GPU_SPOT, "capacity": {**GPU_SPOT["capacity"], "spot": {"enabled": True, "maxFraction": 0.5}}}
    service = make_inference_service(name, ns, spec__replicas=2, **{f"spec__{k}": v for k, v in spec.items()})
    cluster.kubectl("apply", "-f", "-", input=_yaml(service))
    wait_settled(cluster, operator, ns, name, Expected(replicas=2, on_demand=1, spot=1))
    router = _deployment(cluster, ns, f"{name}-router")
    old_hash = router["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH]
    old_replicasets = {rs["metadata"]["name"] for rs in _children(cluster, ns, name, "replicasets")}
    assert (
        "balance leastconn"
        in cluster.get_json("configmap", f"{name}-router", namespace=ns)["data"]["haproxy.cfg"]
    )

    new_image = "nvcr.io/nvidia/tritonserver:24.11-py3"
    patch = {
        "spec": {"triton": {"image": new_image}, "loadBalancing": {"policy": "RoundRobin"}, "replicas": 4}
    }
    cluster.kubectl("patch", "tis", name, "-n", ns, "--type=merge", "-p", json.dumps(patch))
    obj = wait_settled(cluster, operator, ns, name, Expected(replicas=4, on_demand=2, spot=2))
    assert obj["metadata"]["generation"] == 2

    for pool, replicas in (("ondemand", 2), ("spot", 2)):
        deployment = _deployment(cluster, ns, f"{name}-{pool}")
        assert deployment["spec"]["replicas"] == replicas
        assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == new_image
        assert deployment["status"].get("updatedReplicas") == replicas
    config = cluster.get_json("configmap", f"{name}-router", namespace=ns)["data"]["haproxy.cfg"]
    assert "balance roundrobin" in config and "balance leastconn" not in config
    new_hash = _deployment(cluster, ns, f"{name}-router")["spec"]["template"]["metadata"]["annotations"][
        CONFIG_HASH
    ]
    assert new_hash != old_hash, "the router's pod template must change with its config"

    # New pod templates everywhere: new ReplicaSets carry the pods, the old ones go to 0.
    def only_new_replicasets_carry_pods() -> set[str] | None:
        replicasets = _children(cluster, ns, name, "replicasets")
        carrying = {rs["metadata"]["name"] for rs in replicasets if rs["spec"]["replicas"] > 0}
        return carrying if carrying and not carrying & old_replicasets else None

    current = cluster.wait_until(only_new_replicasets_carry_pods, "the old ReplicaSets to be scaled to 0")
    assert len(current) == 3, current
    cluster.wait_until(
        lambda: (
            {
                p["spec"]["containers"][0]["image"]
                for p in _pods(cluster, ns, f"{INSTANCE}={name},app.kubernetes.io/component=triton")
            }
            == {new_image}
        ),
        "only new-image Triton pods",
    )
    assert_placement(cluster, ns, name, gpu=True, spot_pods=2)

    # Spot off: the on-demand pool takes every replica, then the spot Deployment goes as soon
    # as the on-demand pool is ready (well before the 60 s resync timer would catch it).
    spot_off = {"spec": {"capacity": {"spot": {"enabled": False}}}}
    cluster.kubectl("patch", "tis", name, "-n", ns, "--type=merge", "-p", json.dumps(spot_off))
    wait_settled(cluster, operator, ns, name, Expected(replicas=4, on_demand=4, spot=0), timeout_s=30)
    assert _by_kind(_children(cluster, ns, name)) == _expected_children(name, spot=False)
    assert_placement(cluster, ns, name, gpu=True, spot_pods=0)


def test_kubectl_scale_resizes_the_deployments_when_autoscaling_is_off(
    cluster: Cluster, operator: OperatorThread
) -> None:
    ns, name = "e2e-scale", "scaled"
    cluster.create_namespace(ns)
    cluster.kubectl("apply", "-f", "-", input=_yaml(make_inference_service(name, ns, spec__replicas=1)))
    wait_settled(cluster, operator, ns, name, Expected(replicas=1, on_demand=1, spot=0))

    cluster.kubectl("scale", f"tis/{name}", "--replicas=3", "-n", ns)
    wait_settled(cluster, operator, ns, name, Expected(replicas=3, on_demand=3, spot=0))
    assert _deployment(cluster, ns, f"{name}-ondemand")["spec"]["replicas"] == 3
    scale = cluster.get_json("inferenceservice", name, "--subresource=scale", namespace=ns)
    assert scale["kind"] == "Scale"
    assert (scale["spec"]["replicas"], scale["status"]["replicas"]) == (3, 3)
    selected = _pods(cluster, ns, scale["status"]["selector"])
    assert len(selected) == 3 and all(p["metadata"]["labels"][POOL] == "on-demand" for p in selected)

    cluster.kubectl("scale", f"tis/{name}", "--replicas=2", "-n", ns)
    wait_settled(cluster, operator, ns, name, Expected(replicas=2, on_demand=2, spot=0))
    cluster.wait_until(
        lambda: len(_pods(cluster, ns, f"{INSTANCE}={name},app.kubernetes.io/component=triton")) == 2,
        "scale-down to remove a pod",
    )


def test_deleting_the_inference_service_garbage_collects_every_child(
    cluster: Cluster, operator: OperatorThread
) -> None:
    ns, name = "e2e-delete", "doomed"
    cluster.create_namespace(ns)
    service = make_inference_service(
        name, ns, spec__replicas=2, **{f"spec__{k}": v for k, v in GPU_SPOT.items()}
    )
    cluster.kubectl("apply", "-f", "-", input=_yaml(service))
    wait_settled(cluster, operator, ns, name, Expected(replicas=2, on_demand=1, spot=1))
    before = _by_kind(_children(cluster, ns, name, ALL_KINDS))
    assert {"ReplicaSet", "Pod"} <= before.keys()

    cluster.kubectl("delete", "tis", name, "-n", ns, "--wait=true")
    cluster.wait_until(
        lambda: not _children(cluster, ns, name, ALL_KINDS),
        f"the garbage collector to remove every child of {name} (had {before})",
        timeout_s=60,
    )
    # The operator does not put anything back for a resource that is gone.
    assert not _children(cluster, ns, name, ALL_KINDS)
    operator.assert_healthy()


def test_a_service_or_deployment_deleted_by_hand_is_put_back_at_once(
    cluster: Cluster, operator: OperatorThread
) -> None:
    """Not at the next resync (300 s): the Service is what clients call."""
    ns, name = "e2e-put-back", "kept"
    cluster.create_namespace(ns)
    cluster.kubectl("apply", "-f", "-", input=_yaml(make_inference_service(name, ns, spec__replicas=1)))
    wait_settled(cluster, operator, ns, name, Expected(replicas=1, on_demand=1, spot=0))
    for kind, child in (("service", name), ("service", f"{name}-triton"), ("deployment", f"{name}-router")):
        uid = cluster.get_json(kind, child, namespace=ns)["metadata"]["uid"]
        cluster.kubectl("delete", kind, child, "-n", ns, "--wait=true")

        def back(kind: str = kind, child: str = child, uid: str = uid) -> bool:
            operator.assert_healthy()
            result = cluster.kubectl("get", kind, child, "-n", ns, "-o", "json", check=False)
            return result.returncode == 0 and json.loads(result.stdout)["metadata"]["uid"] != uid

        cluster.wait_until(back, f"{kind} {child} to be put back", timeout_s=30)


def test_a_foreground_deletion_is_not_undone(cluster: Cluster, operator: OperatorThread) -> None:
    """With --cascade=foreground the children go while the resource still exists (with a
    deletionTimestamp): their deletion events must not make the operator write them back. A
    finalizer of the test's own keeps the resource there once its children are gone."""
    ns, name = "e2e-foreground", "gone"
    kinds = "deployments,services,configmaps,poddisruptionbudgets"
    cluster.create_namespace(ns)
    service = make_inference_service(
        name, ns, spec__replicas=1, metadata__finalizers=["e2e.tritonscale.io/hold"]
    )
    cluster.kubectl("apply", "-f", "-", input=_yaml(service))
    wait_settled(cluster, operator, ns, name, Expected(replicas=1, on_demand=1, spot=0))
    cluster.kubectl("delete", "tis", name, "-n", ns, "--cascade=foreground", "--wait=false")
    try:
        cluster.wait_until(
            lambda: not _children(cluster, ns, name, kinds), "the garbage collector to remove the children"
        )
        # The Deployments' and Services' deletion events ask for a resync at once: it has run
        # within seconds; a put-back child would stay (its owner still exists).
        for _ in range(5):
            time.sleep(1)
            assert not _children(cluster, ns, name, kinds), (
                "a child of a resource being deleted was written back"
            )
        operator.assert_healthy()
    finally:
        cluster.kubectl(
            "patch",
            "tis",
            name,
            "-n",
            ns,
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
            check=False,
        )


def test_everything_is_admitted_in_a_restricted_namespace(cluster: Cluster, operator: OperatorThread) -> None:
    ns = "e2e-restricted-stack"
    cluster.create_namespace(ns, labels=RESTRICTED)
    manifest = load_example(EXAMPLES / "gpu-spot.yaml")
    manifest["metadata"]["namespace"] = ns
    applied = cluster.kubectl("apply", "-f", "-", input=_yaml(manifest))
    assert "Warning" not in applied.stderr, applied.stderr
    name = manifest["metadata"]["name"]
    wait_settled(cluster, operator, ns, name, Expected(replicas=4, on_demand=1, spot=3))

    pods = _pods(cluster, ns, f"{INSTANCE}={name}")
    assert len(pods) == 4 + 2 and all(_pod_ready(p) for p in pods)
    failed = cluster.get_json("events", "--field-selector", "reason=FailedCreate", namespace=ns)["items"]
    assert not failed, [e["message"] for e in failed]
    assert_one_replicaset_per_deployment(cluster, ns, name)
    # And a pod that breaks the profile is refused there, so the namespace really enforces it.
    with pytest.raises(KubectlError, match="violates PodSecurity"):
        cluster.apply_yaml(_privileged_pod(ns))


# --------------------------------------------------------------------------------------------
# crash and restart


@pytest.fixture
def interrupted_operator(
    cluster: Cluster, operator_kubeconfig: Path
) -> Iterator[Callable[[str, int], subprocess.Popen[str]]]:
    """Start the real operator as a process that hangs after N writes (see
    interrupted_operator.py); whatever is still running at the end is killed."""
    started: list[subprocess.Popen[str]] = []

    def start(namespace: str, writes: int) -> subprocess.Popen[str]:
        log = (cluster.logs_dir / f"interrupted-operator-{len(started)}.log").open("w")
        process = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("interrupted_operator.py")),
                str(operator_kubeconfig),
                namespace,
                str(writes),
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=REPO,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def _first_line(process: subprocess.Popen[str], timeout_s: float) -> str:
    """The first line the process prints, waiting at most `timeout_s` ("" if it exits first)."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    if not ready:
        raise AssertionError(f"the interrupted operator printed nothing within {timeout_s:.0f}s")
    return process.stdout.readline().strip()


def test_an_operator_killed_mid_reconcile_converges_after_restart(
    cluster: Cluster,
    operator: OperatorThread,
    interrupted_operator: Callable[[str, int], subprocess.Popen[str]],
) -> None:
    ns, name = "e2e-restart", "phoenix"
    cluster.create_namespace(ns)
    operator.stop()
    try:
        # The first reconcile writes the router ConfigMap, the headless Service and the
        # on-demand Deployment, then the process is killed (SIGKILL: no clean-up, no status).
        process = interrupted_operator(ns, 3)
        service = make_inference_service(
            name, ns, spec__replicas=3, **{f"spec__{k}": v for k, v in GPU_SPOT.items()}
        )
        cluster.kubectl("apply", "-f", "-", input=_yaml(service))
        line = _first_line(process, timeout_s=60)
        assert line == PAUSED.format(3), f"the interrupted operator said {line!r}, exit code {process.poll()}"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

        partial = _by_kind(_children(cluster, ns, name))
        assert partial == {
            "ConfigMap": [f"{name}-router"],
            "Deployment": [f"{name}-ondemand"],
            "Service": [f"{name}-triton"],
        }, partial
        assert not _get(cluster, ns, name).get("status"), "the killed operator wrote no status"
    finally:
        operator.start()

    obj = wait_settled(cluster, operator, ns, name, Expected(replicas=3, on_demand=1, spot=2))
    assert obj["status"]["endpoint"] == f"http://{name}.{ns}.svc:8000"
    assert_owned_stack(cluster, ns, name, spot=True)
    assert_one_replicaset_per_deployment(cluster, ns, name)
    assert_placement(cluster, ns, name, gpu=True, spot_pods=2)
    assert len(_pods(cluster, ns, f"{INSTANCE}={name},app.kubernetes.io/component=triton")) == 3

    # A further restart (kopf resumes every resource) changes nothing: same objects, same specs.
    generations = {
        (o["kind"], o["metadata"]["name"]): (o["metadata"]["uid"], o["metadata"].get("generation"))
        for o in _children(cluster, ns, name)
    }
    resumed_before = operator.count_messages(ns, name, "Resuming is processed")
    operator.stop()
    operator.start()
    cluster.wait_until(
        lambda: operator.count_messages(ns, name, "Resuming is processed") > resumed_before,
        "the restarted operator to resume the InferenceService",
    )
    wait_settled(cluster, operator, ns, name, Expected(replicas=3, on_demand=1, spot=2))
    assert {
        (o["kind"], o["metadata"]["name"]): (o["metadata"]["uid"], o["metadata"].get("generation"))
        for o in _children(cluster, ns, name)
    } == generations
