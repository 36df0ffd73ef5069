"""What an admin must be able to trust, on the real control plane with the chart's RBAC: the
operator never takes an object it does not own, its status tells the truth, scaling holds no
surprises, and deleting needs no operator.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.builders import make_inference_service
from tests.e2e.conftest import CHART, OperatorThread, assert_log_clean
from tests.e2e.test_operator import (
    ALL_KINDS,
    INSTANCE,
    Expected,
    _children,
    _condition,
    _deployment,
    _get,
    _pods,
    _yaml,
    wait_settled,
)
from tritonscale.api.resource import PAUSE_ANNOTATION
from tritonscale.cli.run import run
from tritonscale.clients.kube import KubeClient
from tritonscale.config import OperatorConfig
from tritonscale.errors import ConflictError
from tritonscale_sandbox.cluster import Cluster, NodePool, node_manifests

pytestmark = pytest.mark.e2e


def _events(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json(
        "events",
        "--field-selector",
        f"involvedObject.name={name},involvedObject.kind=InferenceService",
        namespace=namespace,
    )["items"]
    return items


def _reasons(cluster: Cluster, namespace: str, name: str, event_type: str) -> list[str]:
    return [e["reason"] for e in _events(cluster, namespace, name) if e["type"] == event_type]


def _wait_condition(
    cluster: Cluster,
    operator: OperatorThread,
    namespace: str,
    name: str,
    condition: str,
    status: str,
    reason: str,
    timeout_s: float = 60.0,
    message_starts: str = "",
) -> dict[str, Any]:
    """Wait for the condition with this status and reason (and a message that starts so: a
    status written before every count caught up can carry the reason a moment earlier)."""

    def check() -> dict[str, Any] | None:
        operator.assert_healthy()
        found = _condition(_get(cluster, namespace, name), condition)
        if not found or (found["status"], found["reason"]) != (status, reason):
            return None
        return found if str(found.get("message", "")).startswith(message_starts) else None

    try:
        found: dict[str, Any] = cluster.wait_until(
            check, f"{namespace}/{name} {condition}={status} ({reason})", timeout_s=timeout_s
        )
    except TimeoutError as timeout:
        conditions = _get(cluster, namespace, name).get("status", {}).get("conditions")
        raise AssertionError(f"{timeout}\nconditions: {json.dumps(conditions, indent=1)}") from None
    return found


# --------------------------------------------------------------------------------------------
# never take what is not ours


def test_a_users_configmap_with_a_childs_name_is_never_adopted_nor_deleted(
    cluster: Cluster, operator: OperatorThread
) -> None:
    ns = "e2e-conflict"
    cluster.create_namespace(ns)
    cluster.kubectl("create", "configmap", "myapp-router", "-n", ns, "--from-literal=settings=precious")
    cluster.kubectl("apply", "-f", "-", input=_yaml(make_inference_service("myapp", ns)))

    degraded = _wait_condition(cluster, operator, ns, "myapp", "Degraded", "True", "NameConflict")
    assert "ConfigMap myapp-router already exists and belongs to no InferenceService" in degraded["message"]
    progressing = _condition(_get(cluster, ns, "myapp"), "Progressing")
    assert progressing is not None and (progressing["status"], progressing["reason"]) == (
        "False",
        "NameConflict",
    )
    cluster.wait_until(
        lambda: "NameConflict" in _reasons(cluster, ns, "myapp", "Warning"), "a NameConflict Warning Event"
    )
    configmap = cluster.get_json("configmap", "myapp-router", namespace=ns)
    assert configmap["data"] == {"settings": "precious"}
    assert not configmap["metadata"].get("ownerReferences")
    assert not _children(cluster, ns, "myapp", "deployments,services"), "half a stack was applied"

    cluster.kubectl("delete", "tis", "myapp", "-n", ns, "--wait=true", "--timeout=60s")
    cluster.wait_until(
        lambda: not _children(cluster, ns, "myapp", ALL_KINDS), "the InferenceService's children to go"
    )
    assert cluster.get_json("configmap", "myapp-router", namespace=ns)["data"] == {"settings": "precious"}
    # One Warning, not one per retry.
    assert _reasons(cluster, ns, "myapp", "Warning").count("NameConflict") == 1


def test_a_name_that_is_another_services_child_is_refused_and_that_service_keeps_its_own(
    cluster: Cluster, operator: OperatorThread
) -> None:
    ns = "e2e-collide"
    cluster.create_namespace(ns)
    cluster.kubectl("apply", "-f", "-", input=_yaml(make_inference_service("echo", ns, spec__replicas=1)))
    wait_settled(cluster, operator, ns, "echo", Expected(replicas=1, on_demand=1, spot=0))
    headless_before = cluster.get_json("service", "echo-triton", namespace=ns)

    refused = cluster.kubectl(
        "apply", "-f", "-", input=_yaml(make_inference_service("echo-triton", ns)), check=False
    )
    assert refused.returncode != 0
    assert "metadata.name: must not end in '-triton'" in refused.stderr, refused.stderr
    headless = cluster.get_json("service", "echo-triton", namespace=ns)
    assert headless["metadata"]["uid"] == headless_before["metadata"]["uid"]
    assert headless["spec"]["selector"] == headless_before["spec"]["selector"]
    assert [r["name"] for r in headless["metadata"]["ownerReferences"]] == ["echo"]


# --------------------------------------------------------------------------------------------
# status that tells the truth


def test_a_write_never_adopts_an_object_that_appeared_or_was_replaced_after_the_read(
    cluster: Cluster, operator_kubeconfig: Path
) -> None:
    """The reconciler reads a child, checks it is its own (or that there is none), then writes:
    each write carries what it read, so that someone acting in between is never adopted. With
    the operator's own identity, on the real API server."""
    ns = "e2e-write-race"
    cluster.create_namespace(ns)
    client = KubeClient.connect(str(operator_kubeconfig))

    def config_map(name: str, data: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns},
            "data": data,
        }

    # None there when read; a user's created since: the create fails, theirs is untouched.
    cluster.kubectl("create", "configmap", "theirs", "-n", ns, "--from-literal=settings=precious")
    with pytest.raises(ConflictError, match="already exists"):
        client.apply(config_map("theirs", {"ours": "1"}), current=None)
    with pytest.raises(ConflictError, match="already exists"):
        client.apply(config_map("theirs", {"ours": "1"}), current=None, dry_run=True)
    theirs = cluster.get_json("configmap", "theirs", "--show-managed-fields", namespace=ns)
    assert theirs["data"] == {"settings": "precious"}
    assert [e["manager"] for e in theirs["metadata"]["managedFields"]] == ["kubectl-create"]

    # Ours when read, replaced by another of the name since: the apply fails.
    created = client.apply(config_map("ours", {"a": "1", "b": "2"}), current=None)
    cluster.kubectl("delete", "configmap", "ours", "-n", ns)
    cluster.kubectl("create", "configmap", "ours", "-n", ns, "--from-literal=settings=precious")
    for dry_run in (True, False):
        with pytest.raises(ConflictError, match=r"uid|replaced"):
            client.apply(config_map("ours", {"a": "1"}), current=created, dry_run=dry_run)
    assert cluster.get_json("configmap", "ours", namespace=ns)["data"] == {"settings": "precious"}
    # Ours when read and gone since: not created again by the apply.
    cluster.kubectl("delete", "configmap", "ours", "-n", ns)
    with pytest.raises(ConflictError, match=r"uid|deleted"):
        client.apply(config_map("ours", {"a": "1"}), current=created)
    assert cluster.kubectl("get", "configmap", "ours", "-n", ns, check=False).returncode != 0

    # Created by us, then written again without a field: the field goes. The create's own
    # managedFields entry, which would keep it, is dropped before that write.
    created = client.apply(config_map("mine", {"a": "1", "b": "2"}), current=None)
    entries = sorted((e["manager"], e["operation"]) for e in created["metadata"]["managedFields"])
    assert entries == [("tritonscale", "Apply"), ("tritonscale", "Update")]
    written = client.apply(config_map("mine", {"a": "1"}), current=created)
    assert [(e["manager"], e["operation"]) for e in written["metadata"]["managedFields"]] == [
        ("tritonscale", "Apply")
    ]
    assert cluster.get_json("configmap", "mine", namespace=ns)["data"] == {"a": "1"}

    # Deployments, whose controller writes right after a create: the drop loses no other
    # writer's entry and is not lost to them.
    for index in range(5):
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": f"d{index}", "namespace": ns},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": f"d{index}"}},
                "template": {
                    "metadata": {"labels": {"app": f"d{index}"}},
                    "spec": {"containers": [{"name": "c", "image": "example.com/c:1"}]},
                },
            },
        }
        deployment["metadata"]["annotations"] = {"removed-later": "yes"}
        client.apply(deployment, current=None)
        read = client.get_object("Deployment", ns, f"d{index}")
        del deployment["metadata"]["annotations"]
        client.apply(deployment, current=read)
        stored = cluster.get_json("deployment", f"d{index}", "--show-managed-fields", namespace=ns)
        ours = [e["operation"] for e in stored["metadata"]["managedFields"] if e["manager"] == "tritonscale"]
        assert ours == ["Apply"], stored["metadata"]["managedFields"]
        assert "removed-later" not in stored["metadata"].get("annotations", {})
        assert any(e["manager"] == "kube-controller-manager" for e in stored["metadata"]["managedFields"])


def test_an_unschedulable_gpu_product_shows_the_schedulers_reason(
    cluster: Cluster, operator: OperatorThread
) -> None:
    ns, name = "e2e-unschedulable", "h100"
    cluster.create_namespace(ns)
    service = make_inference_service(
        name,
        ns,
        spec__replicas=1,
        spec__accelerator={"resource": "nvidia.com/gpu", "count": 1, "product": "NVIDIA-H100-80GB-HBM3"},
    )
    cluster.kubectl("apply", "-f", "-", input=_yaml(service))
    # Within a minute, not after a ten-minute progress deadline.
    degraded = _wait_condition(cluster, operator, ns, name, "Degraded", "True", "Unschedulable")
    assert "1 pod cannot be scheduled: 0/" in degraded["message"] and "node" in degraded["message"]
    assert "Add nodes they fit on" in degraded["message"]
    # No replica is ready because none can be placed: Ready says so rather than a vague reason.
    _wait_condition(cluster, operator, ns, name, "Ready", "False", "Unschedulable")
    cluster.wait_until(
        lambda: "Unschedulable" in _reasons(cluster, ns, name, "Warning"), "an Unschedulable Warning Event"
    )


def test_fewer_ready_replicas_than_desired_is_not_ready(cluster: Cluster, operator: OperatorThread) -> None:
    """A node with room for one of two replicas: serving 1/2 is not Ready (it was, before)."""
    pool = NodePool(
        name="e2e-small",
        count=1,
        labels={"e2e-pool": "small"},
        allocatable={"cpu": "4", "memory": "16Gi", "ephemeral-storage": "100Gi", "pods": "110"},
        zones=("zone-a",),
    )
    cluster.apply_yaml(node_manifests([pool]))
    ns, name = "e2e-short", "short"
    cluster.create_namespace(ns)
    service = make_inference_service(
        name,
        ns,
        spec__replicas=2,
        spec__triton={"resources": {"requests": {"cpu": "3"}}},
        spec__capacity={
            "nodePoolPreset": "custom",
            "custom": {"onDemand": {"nodeSelector": {"e2e-pool": "small"}}},
        },
    )
    try:
        cluster.kubectl("apply", "-f", "-", input=_yaml(service))
        # (Pods are ready before their Deployment counts them: "0/2" can come first, briefly.)
        ready = _wait_condition(
            cluster,
            operator,
            ns,
            name,
            "Ready",
            "False",
            "Unschedulable",
            timeout_s=90,
            message_starts="1/2 Triton replicas ready",
        )
        assert "Insufficient cpu" in ready["message"]
        assert _get(cluster, ns, name)["status"]["replicas"] == 1
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false")
        cluster.kubectl("delete", "node", *pool.node_names(), "--wait=false")


def test_a_child_the_api_server_refuses_is_reported_and_never_rolled_out(
    cluster: Cluster, operator: OperatorThread
) -> None:
    """An admission policy (as Kyverno or Gatekeeper would) refuses Deployments of more than
    three replicas: the new spec is not applied, and the status says so."""
    ns, name = "e2e-refused", "capped"
    cluster.create_namespace(ns, labels={"e2e-replica-cap": "3"})
    cluster.apply_yaml(
        [
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicy",
                "metadata": {"name": "e2e-replica-cap"},
                "spec": {
                    "failurePolicy": "Fail",
                    "matchConstraints": {
                        "resourceRules": [
                            {
                                "apiGroups": ["apps"],
                                "apiVersions": ["v1"],
                                "operations": ["CREATE", "UPDATE"],
                                "resources": ["deployments"],
                            }
                        ]
                    },
                    "validations": [
                        {"expression": "object.spec.replicas <= 3", "message": "at most 3 replicas here"}
                    ],
                },
            },
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": {"name": "e2e-replica-cap"},
                "spec": {
                    "policyName": "e2e-replica-cap",
                    "validationActions": ["Deny"],
                    "matchResources": {"namespaceSelector": {"matchLabels": {"e2e-replica-cap": "3"}}},
                },
            },
        ]
    )
    try:
        # The API server loads a new policy asynchronously (CI once saw replicas: 5 accepted):
        # wait until a server-side dry run of an over-cap Deployment is refused.
        probe = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "policy-probe", "namespace": ns},
            "spec": {
                "replicas": 4,
                "selector": {"matchLabels": {"probe": "policy"}},
                "template": {
                    "metadata": {"labels": {"probe": "policy"}},
                    "spec": {"containers": [{"name": "probe", "image": "probe"}]},
                },
            },
        }
        cluster.wait_until(
            lambda: (
                "at most 3 replicas here"
                in cluster.kubectl(
                    "create", "--dry-run=server", "-f", "-", input=_yaml(probe), check=False
                ).stderr
            ),
            "the replica-cap policy to take effect",
        )
        cluster.kubectl("apply", "-f", "-", input=_yaml(make_inference_service(name, ns, spec__replicas=2)))
        wait_settled(cluster, operator, ns, name, Expected(replicas=2, on_demand=2, spot=0))
        cluster.kubectl("patch", "tis", name, "-n", ns, "--type=merge", "-p", '{"spec": {"replicas": 5}}')
        degraded = _wait_condition(cluster, operator, ns, name, "Degraded", "True", "ApplyRejected")
        assert "at most 3 replicas here" in degraded["message"]
        progressing = _condition(_get(cluster, ns, name), "Progressing")
        assert progressing is not None
        assert (progressing["status"], progressing["reason"]) == ("False", "ApplyRejected")
        assert _deployment(cluster, ns, f"{name}-ondemand")["spec"]["replicas"] == 2
        cluster.wait_until(
            lambda: "ApplyRejected" in _reasons(cluster, ns, name, "Warning"), "an ApplyRejected Warning"
        )
    finally:
        cluster.kubectl(
            "delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", "e2e-replica-cap"
        )


# --------------------------------------------------------------------------------------------
# scaling without surprises


def _router_pods(cluster: Cluster, ns: str, name: str) -> set[str]:
    return {
        p["metadata"]["uid"]
        for p in _pods(cluster, ns, f"{INSTANCE}={name},app.kubernetes.io/component=router")
        if not p["metadata"].get("deletionTimestamp")
    }


def test_kubectl_scale_never_restarts_the_routers(cluster: Cluster, operator: OperatorThread) -> None:
    ns, name = "e2e-scale-routers", "steady"
    cluster.create_namespace(ns)
    cluster.kubectl("apply", "-f", "-", input=_yaml(make_inference_service(name, ns, spec__replicas=1)))
    wait_settled(cluster, operator, ns, name, Expected(replicas=1, on_demand=1, spot=0))
    routers = _router_pods(cluster, ns, name)
    generation = _deployment(cluster, ns, f"{name}-router")["metadata"]["generation"]
    for replicas in (3, 2):
        cluster.kubectl("scale", f"tis/{name}", f"--replicas={replicas}", "-n", ns)
        wait_settled(cluster, operator, ns, name, Expected(replicas=replicas, on_demand=replicas, spot=0))
    assert _deployment(cluster, ns, f"{name}-router")["metadata"]["generation"] == generation
    assert _router_pods(cluster, ns, name) == routers


def test_kubectl_scale_of_an_autoscaled_service_is_answered_and_pausing_hands_it_over(
    cluster: Cluster, operator: OperatorThread
) -> None:
    ns, name = "e2e-pause", "auto"
    cluster.create_namespace(ns)
    # The e2e operator reads no Triton pods (kwok has none to read): the autoscaler holds.
    service = make_inference_service(
        name, ns, spec__replicas=2, spec__autoscaling={"minReplicas": 1, "maxReplicas": 6}
    )
    cluster.kubectl("apply", "-f", "-", input=_yaml(service))
    wait_settled(cluster, operator, ns, name, Expected(replicas=2, on_demand=2, spot=0))
    active = _wait_condition(cluster, operator, ns, name, "ScalingActive", "True", "Active")
    assert PAUSE_ANNOTATION in active["message"]

    cluster.kubectl("scale", f"tis/{name}", "--replicas=4", "-n", ns)
    cluster.wait_until(
        lambda: "ManualScaleIgnored" in _reasons(cluster, ns, name, "Warning"), "a ManualScaleIgnored Warning"
    )
    assert _deployment(cluster, ns, f"{name}-ondemand")["spec"]["replicas"] == 2

    cluster.kubectl("annotate", "tis", name, "-n", ns, f"{PAUSE_ANNOTATION}=true")
    _wait_condition(cluster, operator, ns, name, "ScalingActive", "False", "Paused")
    wait_settled(cluster, operator, ns, name, Expected(replicas=4, on_demand=4, spot=0))
    cluster.kubectl("scale", f"tis/{name}", "--replicas=3", "-n", ns)
    wait_settled(cluster, operator, ns, name, Expected(replicas=3, on_demand=3, spot=0))
    assert _reasons(cluster, ns, name, "Warning").count("ManualScaleIgnored") == 1


# --------------------------------------------------------------------------------------------
# first contact


def test_text_outside_the_basic_multilingual_plane_survives_apply(
    cluster: Cluster, operator: OperatorThread
) -> None:
    ns, name = "e2e-emoji", "rocket"
    cluster.create_namespace(ns)
    service = make_inference_service(
        name, ns, spec__replicas=1, spec__triton={"env": [{"name": "GREETING", "value": "launch 🚀 𝄞"}]}
    )
    cluster.kubectl("apply", "-f", "-", input=_yaml(service))
    wait_settled(cluster, operator, ns, name, Expected(replicas=1, on_demand=1, spot=0))
    container = _deployment(cluster, ns, f"{name}-ondemand")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "GREETING", "value": "launch 🚀 𝄞"} in container["env"]


def test_the_chart_refuses_one_port_for_metrics_and_health(cluster: Cluster) -> None:
    result = cluster.helm(
        "template", "x", str(CHART), "--set", "metricsPort=9000", "--set", "healthPort=9000", check=False
    )
    assert result.returncode != 0
    assert "metricsPort and healthPort must differ (both are 9000)" in result.stderr


def test_the_helm_test_pod_is_not_selected_by_the_operators_service(cluster: Cluster) -> None:
    rendered = list(yaml.safe_load_all(cluster.helm("template", "x", str(CHART)).stdout))
    service = next(d for d in rendered if d and d["kind"] == "Service")
    test_pod = next(d for d in rendered if d and d["kind"] == "Pod")
    selector = service["spec"]["selector"].items()
    assert not selector <= test_pod["metadata"]["labels"].items()


def test_the_notes_crd_upgrade_command_works_for_the_installed_chart(cluster: Cluster) -> None:
    notes = cluster.helm("install", "notes-check", str(CHART), "--dry-run", "-n", "default").stdout
    command = next(
        line.strip() for line in notes.splitlines() if "helm show crds ./charts/tritonscale" in line
    )
    # As a user would type it, from a checkout, with the cluster's helm and kubectl on PATH; as a
    # server-side dry run, because a real update of the CRD re-initialises its storage for a
    # moment, and an operator (re)starting in another test would see 429s from it.
    command = command.replace("kubectl apply ", "kubectl apply --dry-run=server ", 1)
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=CHART.parents[1],
        env=cluster.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "inferenceservices.tritonscale.io serverside-applied (server dry run)" in result.stdout


# --------------------------------------------------------------------------------------------
# deleting works without the operator


def test_an_inference_service_is_deleted_after_the_operator_is_uninstalled(
    cluster: Cluster, operator: OperatorThread, tmp_path: Path
) -> None:
    """No finalizer is ever added, so `kubectl delete` needs no operator: install a second
    release watching one namespace, let it build a stack, uninstall it, delete."""
    ns, system, release = "e2e-uninstall", "e2e-uninstall-system", "second"
    cluster.create_namespace(ns)
    cluster.helm(
        "install", release, str(CHART), "-n", system, "--create-namespace", "--wait", "--timeout", "2m"
    )
    kubeconfig = cluster.service_account_kubeconfig(
        system, f"{release}-tritonscale", tmp_path / "second.kubeconfig", create=False
    )
    operator.stop()  # the session's operator watches every namespace: only the second one runs
    second = OperatorThread(
        OperatorConfig(
            namespaces=(ns,),
            kubeconfig=str(kubeconfig),
            metrics_port=0,
            health_port=0,
            read_triton_pods=False,
            read_routers=False,
        ),
        cluster.logs_dir / "second-operator.log",
    )
    try:
        second.start()
        try:
            service = make_inference_service(
                "orphan", ns, spec__replicas=1, spec__autoscaling={"minReplicas": 1, "maxReplicas": 2}
            )
            cluster.kubectl("apply", "-f", "-", input=_yaml(service))
            wait_settled(cluster, second, ns, "orphan", Expected(replicas=1, on_demand=1, spot=0))
            assert not _get(cluster, ns, "orphan")["metadata"].get("finalizers")
        finally:
            second.stop()
        assert_log_clean(second.log_path)
        cluster.helm("uninstall", release, "-n", system, "--wait")
        # No operator runs anywhere now.
        cluster.kubectl("delete", "tis", "orphan", "-n", ns, "--timeout=30s")
        cluster.wait_until(lambda: not _children(cluster, ns, "orphan", ALL_KINDS), "garbage collection")
    finally:
        operator.start()


# --------------------------------------------------------------------------------------------
# Events an admin reads


def test_repeated_events_raise_a_count_and_many_similar_ones_are_combined(
    cluster: Cluster, operator_kubeconfig: Path
) -> None:
    """With the operator's own identity, as `kubectl describe` shows them."""
    client = KubeClient.connect(str(operator_kubeconfig))
    service = {"metadata": {"namespace": "default", "name": "events-probe", "uid": str(uuid.uuid4())}}
    for _ in range(3):
        client.post_event(service, "Warning", "Unschedulable", "0/3 nodes are available")
    for n in range(12):
        client.post_event(service, "Normal", "ScaledUp", f"{n} -> {n + 1}")

    events = _events(cluster, "default", "events-probe")
    unschedulable = [e for e in events if e["reason"] == "Unschedulable"]
    assert [(e["count"], e["message"]) for e in unschedulable] == [(3, "0/3 nodes are available")]
    scaled = sorted(e["message"] for e in events if e["reason"] == "ScaledUp")
    assert len(scaled) == 10, scaled  # nine on their own, then one combined from the rest
    combined = [e for e in events if e["message"].startswith("(combined from similar events)")]
    assert [(e["count"], e["message"]) for e in combined] == [(3, "(combined from similar events): 11 -> 12")]


def _connections_made(client: KubeClient) -> int:
    """TLS connections the client has opened to the API server so far."""
    pools = client.api_client.rest_client.pool_manager.pools
    keys = pools.keys()  # the container refuses plain iteration
    return sum(pools[key].num_connections for key in keys)


def test_writes_whose_answer_is_not_read_give_their_connection_back(
    cluster: Cluster, operator_kubeconfig: Path
) -> None:
    """A status patch, an Event's count and an eviction are sent without reading the answer;
    one left unread kept its connection from the pool, so the next request paid a new TLS
    handshake (the operator's and the API server's CPU, at every status write)."""
    namespace = "connection-probe"
    cluster.create_namespace(namespace)
    cluster.apply_yaml(make_inference_service("probe", namespace))
    client = KubeClient.connect(str(operator_kubeconfig))
    stored = client.get_inference_service(namespace, "probe")
    assert stored is not None
    cluster.apply_yaml(_bare_pod("evicted", namespace, {"app": "probe"}))  # no budget: it may go
    before = _connections_made(client)
    for n in range(5):  # a refused status patch raises
        client.patch_inference_service_status(namespace, "probe", {"desiredReplicas": n + 1})
        client.post_event(stored, "Normal", "Probe", "the same message, so its count is raised")
    assert client.evict_pod(namespace, "evicted")
    # The Event was created once and its count raised four times (post_event logs, not raises).
    assert [e["count"] for e in _events(cluster, namespace, "probe") if e["reason"] == "Probe"] == [5]
    assert before == 1 and _connections_made(client) == 1  # one thread, one request at a time
    cluster.kubectl("delete", "namespace", namespace, "--wait=false")


# --------------------------------------------------------------------------------------------
# network policies


def _selector_string(selector: dict[str, Any]) -> str:
    """A LabelSelector as kubectl's -l takes it."""
    terms = [f"{k}={v}" for k, v in selector.get("matchLabels", {}).items()]
    for requirement in selector.get("matchExpressions", []):
        key, operator, values = requirement["key"], requirement["operator"], requirement.get("values", [])
        terms.append(
            {
                "In": f"{key} in ({','.join(values)})",
                "NotIn": f"{key} notin ({','.join(values)})",
                "Exists": key,
                "DoesNotExist": f"!{key}",
            }[operator]
        )
    return ",".join(terms)


def _selected(
    cluster: Cluster, kind: str, selector: dict[str, Any], namespace: str | None = None
) -> set[str]:
    args = [kind, "-l", _selector_string(selector)] if _selector_string(selector) else [kind]
    items = (
        cluster.get_json(*args, namespace=namespace)["items"]
        if namespace
        else cluster.get_json(*args)["items"]
    )
    return {item["metadata"]["name"] for item in items}


def _bare_pod(name: str, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"nodeName": "no-such-node", "containers": [{"name": "main", "image": "busybox:1.36"}]},
    }


def test_declared_clients_guard_the_stack_with_network_policies_that_select_the_right_pods(
    cluster: Cluster, operator: OperatorThread
) -> None:
    """Declaring router clients guards the service: the API server accepts both NetworkPolicies,
    each selects exactly its component's pods, Triton admits only this service's routers, the
    router only the declared clients (their selectors evaluated by the API server against real
    pods and namespaces); dropping the clients removes the policies. The sandbox runs no network
    plugin, so whether packets are dropped is the plugin's part and is not tested here."""
    ns, clients_ns, name = "e2e-netpol", "e2e-netpol-clients", "guarded"
    cluster.create_namespace(ns)
    cluster.create_namespace(clients_ns, labels={"team": "web"})
    cluster.create_namespace("e2e-netpol-others", labels={"team": "ads"})
    cluster.apply_yaml(
        [
            _bare_pod("shop", clients_ns, {"app": "shop", "tier": "api"}),
            _bare_pod("batch", clients_ns, {"app": "batch"}),
            _bare_pod("shop", "e2e-netpol-others", {"app": "shop"}),
            _bare_pod("neighbour", ns, {"app": "neighbour"}),
        ]
    )
    clients = [
        {
            "namespaceSelector": {"matchLabels": {"team": "web"}},
            "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["shop"]}]},
        },
        # No namespaceSelector: this namespace only (the CRD once defaulted it to {}: every one).
        {"podSelector": {"matchLabels": {"app": "neighbour"}}},
    ]
    body = make_inference_service(
        name, ns, spec__replicas=2, spec__loadBalancing={"router": {"clients": clients}}
    )
    cluster.kubectl("apply", "-f", "-", input=_yaml(body))
    wait_settled(cluster, operator, ns, name, Expected(replicas=2, on_demand=2, spot=0))

    policies = {p["metadata"]["name"]: p for p in _children(cluster, ns, name, "networkpolicies")}
    assert sorted(policies) == [f"{name}-router", f"{name}-triton"]
    uid = _get(cluster, ns, name)["metadata"]["uid"]
    assert all(p["metadata"]["ownerReferences"][0]["uid"] == uid for p in policies.values())
    triton_pods = {
        p["metadata"]["name"]
        for p in _pods(cluster, ns, f"{INSTANCE}={name},app.kubernetes.io/component=triton")
    }
    router_pods = {
        p["metadata"]["name"]
        for p in _pods(cluster, ns, f"{INSTANCE}={name},app.kubernetes.io/component=router")
    }
    assert len(triton_pods) == 2 and len(router_pods) == 2

    triton = policies[f"{name}-triton"]["spec"]
    assert _selected(cluster, "pods", triton["podSelector"], ns) == triton_pods
    inference = [rule for rule in triton["ingress"] if {p["port"] for p in rule["ports"]} & {8000, 8001}]
    (only_routers,) = inference
    (peer,) = only_routers["from"]
    assert set(peer) == {"podSelector"}  # this namespace only
    assert _selected(cluster, "pods", peer["podSelector"], ns) == router_pods

    router = policies[f"{name}-router"]["spec"]
    assert _selected(cluster, "pods", router["podSelector"], ns) == router_pods
    (client_rule,) = [rule for rule in router["ingress"] if {p["port"] for p in rule["ports"]} & {8000, 8001}]
    client_peer, own_peer = client_rule["from"]
    assert _selected(cluster, "namespaces", client_peer["namespaceSelector"]) == {clients_ns}
    assert _selected(cluster, "pods", client_peer["podSelector"], clients_ns) == {"shop"}
    stored = _get(cluster, ns, name)["spec"]["loadBalancing"]["router"]["clients"][1]
    assert set(stored) == {"podSelector"}, stored
    assert set(own_peer) == {"podSelector"}, own_peer
    assert _selected(cluster, "pods", own_peer["podSelector"], ns) == {"neighbour"}
    # The router reaches only this service's Triton pods (and DNS).
    (to_triton,) = [rule for rule in router["egress"] if "to" in rule]
    (triton_peer,) = to_triton["to"]
    assert _selected(cluster, "pods", triton_peer["podSelector"], ns) == triton_pods

    # Clients no longer declared (and the operator guards nothing by default): policies go.
    cluster.kubectl(
        "patch", "tis", name, "-n", ns, "--type=json", "-p", '[{"op":"remove","path":"/spec/loadBalancing"}]'
    )
    cluster.wait_until(
        lambda: not _children(cluster, ns, name, "networkpolicies"), "the NetworkPolicies to be removed"
    )
    wait_settled(cluster, operator, ns, name, Expected(replicas=2, on_demand=2, spot=0))

    # Serving variants guards the routers' control port (the shares) even so: one policy, on
    # the routers' ingress only; clients still reach them from anywhere. (This operator runs
    # outside the cluster, so no peer may reach the control port at all.)
    variants = {
        "spec": {
            "model": {
                "variants": [
                    {"name": "int8", "repository": "s3://models/int8", "accuracy": 0.99, "speedup": 2}
                ]
            },
            "autoscaling": {"minReplicas": 1, "maxReplicas": 4, "accuracy": {"floor": 0.99}},
        }
    }
    cluster.kubectl("patch", "tis", name, "-n", ns, "--type=merge", "-p", json.dumps(variants))
    cluster.wait_until(
        lambda: (
            [p["metadata"]["name"] for p in _children(cluster, ns, name, "networkpolicies")]
            == [f"{name}-router"]
        ),
        "the routers' NetworkPolicy for the variants' control port",
    )
    wait_settled(cluster, operator, ns, name, Expected(replicas=2, on_demand=2, spot=0))
    (only,) = _children(cluster, ns, name, "networkpolicies")
    spec = only["spec"]
    assert spec["policyTypes"] == ["Ingress"] and "egress" not in spec, spec
    routers_now = {
        p["metadata"]["name"]
        for p in _pods(cluster, ns, f"{INSTANCE}={name},app.kubernetes.io/component=router")
    }
    assert _selected(cluster, "pods", spec["podSelector"], ns) == routers_now
    by_port = {p["port"]: rule for rule in spec["ingress"] for p in rule["ports"]}
    open_ports = {p["port"] for rule in spec["ingress"] if "from" not in rule for p in rule["ports"]}
    assert open_ports == {8000, 8001, 8404}, spec
    assert 8406 not in by_port, spec
    cluster.kubectl("delete", "namespace", ns, clients_ns, "e2e-netpol-others", "--wait=false")


def test_the_chart_with_network_policies_is_accepted_and_passes_its_flags(cluster: Cluster) -> None:
    """`networkPolicy.enabled`: the operator's own NetworkPolicy passes the API server, and the
    Deployment passes the flags `tritonscale run` takes."""
    rendered = list(
        yaml.safe_load_all(
            cluster.helm(
                "template", "np", str(CHART), "-n", "default", "--set", "networkPolicy.enabled=true",
                "--set", "networkPolicy.metricsNamespaceLabels.team=monitoring",
            ).stdout
        )
    )  # fmt: skip
    policies = {d["metadata"]["name"]: d for d in rendered if d and d["kind"] == "NetworkPolicy"}
    assert sorted(policies) == ["np-tritonscale", "np-tritonscale-test"]
    for policy in policies.values():
        cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=_yaml(policy))
    (deployment,) = [d for d in rendered if d and d["kind"] == "Deployment"]
    test_pod = yaml.safe_load(
        cluster.helm(
            "template", "np", str(CHART), "-n", "default", "--show-only", "templates/tests/test-health.yaml"
        ).stdout
    )
    pod_labels = {
        "operator": deployment["spec"]["template"]["metadata"]["labels"],
        "test": test_pod["metadata"]["labels"],
    }
    for name, component in (("np-tritonscale", "operator"), ("np-tritonscale-test", "test")):
        selector = policies[name]["spec"]["podSelector"]["matchLabels"]
        assert selector.items() <= pod_labels[component].items(), (name, selector)
        other = pod_labels["test" if component == "operator" else "operator"]
        assert not selector.items() <= other.items(), name
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--network-policies" in args
    assert "--network-policy-operator-namespace=default" in args
    assert "--network-policy-metrics-namespace-label=team=monitoring" in args
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    operator_labels = dict(
        a.split("=", 1)[1].split("=", 1) for a in args if a.startswith("--network-policy-operator-label=")
    )
    assert operator_labels and operator_labels.items() <= labels.items()
    # The flags parse into what the renderer is given (make_context parses and checks, runs nothing).
    params = run.make_context("run", args[1:]).params
    assert params["network_policies"] and params["network_policy_operator_namespace"] == "default"
    assert dict(params["operator_labels"]) == operator_labels
    assert params["metrics_namespace_labels"] == (("team", "monitoring"),)
