"""The cluster harness runs a real control plane: scheduling, kwok pod lifecycle, garbage
collection, Pod Security admission and RBAC all behave as in a real cluster."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tritonscale_sandbox.cluster import (
    CAPACITY_TYPE_LABEL,
    GPU_PRODUCT,
    Cluster,
    ClusterError,
    KubectlError,
    default_node_pools,
)

pytestmark = pytest.mark.e2e

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


def _deployment(
    name: str,
    replicas: int,
    *,
    pod_spec_extra: dict[str, Any] | None = None,
    resources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": PAUSE_IMAGE}
    if resources:
        container["resources"] = resources
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container], **(pod_spec_extra or {})},
            },
        },
    }


def _pods(cluster: Cluster, namespace: str, app: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json("pods", "-l", f"app={app}", namespace=namespace)["items"]
    return items


def _ready(obj: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in obj.get("status", {}).get("conditions", [])
    )


def _node_labels(cluster: Cluster, node: str) -> dict[str, str]:
    labels: dict[str, str] = cluster.get_json("node", node)["metadata"]["labels"]
    return labels


def test_api_server_reports_the_pinned_version(cluster: Cluster) -> None:
    version = cluster.get_raw("/version")
    assert version["gitVersion"].startswith("v1.34."), version
    assert cluster.bin_dir.parent.name.startswith(f"testenv-{version['gitVersion']}-")
    client = cluster.kubectl("version", "--client", "-o", "json").stdout
    assert version["gitVersion"] in client


def test_nodes_of_every_pool_are_ready_with_labels_taints_and_allocatable(cluster: Cluster) -> None:
    for pool in default_node_pools():
        nodes = cluster.get_json("nodes", "-l", f"karpenter.sh/nodepool={pool.name}")["items"]
        assert sorted(n["metadata"]["name"] for n in nodes) == pool.node_names()
        zones = set()
        for node in nodes:
            name = node["metadata"]["name"]
            assert _ready(node), f"{name} is not Ready: {node['status'].get('conditions')}"
            labels = node["metadata"]["labels"]
            for key, value in pool.labels.items():
                assert labels.get(key) == value, (name, key)
            assert labels["type"] == "kwok"
            assert labels["node.kubernetes.io/instance-type"] == pool.instance_type
            assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
            zones.add(labels["topology.kubernetes.io/zone"])
            taints = {(t["key"], t.get("value", ""), t["effect"]) for t in node["spec"].get("taints", [])}
            assert taints == {(t.key, t.value, t.effect) for t in pool.taints}, name
            for resource, quantity in pool.allocatable.items():
                assert node["status"]["allocatable"][resource] == quantity, (name, resource)
        assert zones == {"zone-a", "zone-b"}

    spot = cluster.get_json("nodes", "-l", f"{CAPACITY_TYPE_LABEL}=spot")["items"]
    assert spot
    assert all(n["metadata"]["labels"]["nvidia.com/gpu.product"] == GPU_PRODUCT for n in spot)
    assert all(n["status"]["allocatable"]["nvidia.com/gpu"] == "8" for n in spot)


def test_spot_tolerating_deployment_is_scheduled_on_spot_nodes_and_becomes_ready(cluster: Cluster) -> None:
    ns = "e2e-spot"
    cluster.create_namespace(ns)
    spot_placement = {
        "tolerations": [
            {"key": CAPACITY_TYPE_LABEL, "operator": "Equal", "value": "spot", "effect": "NoSchedule"}
        ],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": CAPACITY_TYPE_LABEL, "operator": "In", "values": ["spot"]}
                            ]
                        }
                    ]
                }
            }
        },
    }
    cluster.apply_yaml(_deployment("spotty", 3, pod_spec_extra=spot_placement), namespace=ns)
    cluster.wait_for("deployment/spotty", "condition=Available", namespace=ns, timeout_s=90)
    cluster.wait_until(lambda: sum(_ready(p) for p in _pods(cluster, ns, "spotty")) == 3, "3 ready spot pods")
    pods = _pods(cluster, ns, "spotty")
    for pod in pods:
        assert pod["status"]["phase"] == "Running"
        assert _node_labels(cluster, pod["spec"]["nodeName"])[CAPACITY_TYPE_LABEL] == "spot"
        assert pod["status"].get("podIP"), pod["status"]

    # Scaling down deletes pods; kwok plays the kubelet that confirms the deletion.
    cluster.kubectl("scale", "deployment/spotty", "--replicas=1", "-n", ns)
    cluster.wait_until(lambda: len(_pods(cluster, ns, "spotty")) == 1, "spot pods to be deleted")


def test_gpu_request_lands_on_an_on_demand_gpu_node(cluster: Cluster) -> None:
    ns = "e2e-gpu"
    cluster.create_namespace(ns)
    gpu = {"limits": {"nvidia.com/gpu": "1"}, "requests": {"cpu": "1", "memory": "1Gi"}}
    cluster.apply_yaml(_deployment("gpu", 2, resources=gpu), namespace=ns)
    cluster.apply_yaml(_deployment("cpu", 2, resources={"requests": {"cpu": "12"}}), namespace=ns)
    cluster.wait_for("deployment/gpu", "condition=Available", namespace=ns, timeout_s=90)
    cluster.wait_for("deployment/cpu", "condition=Available", namespace=ns, timeout_s=90)
    for pod in _pods(cluster, ns, "gpu"):
        labels = _node_labels(cluster, pod["spec"]["nodeName"])
        assert labels["nvidia.com/gpu.product"] == GPU_PRODUCT
        # Spot nodes are tainted and this pod does not tolerate it.
        assert labels[CAPACITY_TYPE_LABEL] == "on-demand"
    # 12 CPUs fit a 16-CPU node once; the scheduler spreads or packs, never onto spot.
    for pod in _pods(cluster, ns, "cpu"):
        assert _node_labels(cluster, pod["spec"]["nodeName"])[CAPACITY_TYPE_LABEL] == "on-demand"

    # More GPUs than any node has: the pod stays Pending with a scheduler event.
    cluster.apply_yaml(_deployment("too-big", 1, resources={"limits": {"nvidia.com/gpu": "9"}}), namespace=ns)
    pending = cluster.wait_until(
        lambda: [
            p
            for p in _pods(cluster, ns, "too-big")
            if any(
                c["type"] == "PodScheduled" and c["reason"] == "Unschedulable"
                for c in p["status"].get("conditions", [])
            )
        ],
        "the oversized pod to be marked Unschedulable",
    )
    assert pending[0]["status"]["phase"] == "Pending"


def test_job_pods_complete(cluster: Cluster) -> None:
    ns = "e2e-job"
    cluster.create_namespace(ns)
    cluster.apply_yaml(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "once"},
            "spec": {
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "main", "image": PAUSE_IMAGE}],
                    }
                }
            },
        },
        namespace=ns,
    )
    cluster.wait_for("job/once", "condition=Complete", namespace=ns, timeout_s=90)


def test_deleting_an_owner_garbage_collects_its_owned_configmap(cluster: Cluster) -> None:
    ns = "e2e-gc"
    cluster.create_namespace(ns)
    cluster.apply_yaml(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}, "data": {"a": "1"}},
        namespace=ns,
    )
    uid = cluster.get_json("configmap", "owner", namespace=ns)["metadata"]["uid"]
    cluster.apply_yaml(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "owned",
                "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}],
            },
            "data": {"b": "2"},
        },
        namespace=ns,
    )
    cluster.kubectl("delete", "configmap", "owner", "-n", ns)
    cluster.wait_until(
        lambda: cluster.kubectl("get", "configmap", "owned", "-n", ns, check=False).returncode != 0,
        "the garbage collector to delete the owned ConfigMap",
        timeout_s=90,
    )
    missing = cluster.kubectl("get", "configmap", "owned", "-n", ns, check=False)
    assert "NotFound" in missing.stderr


def test_restricted_namespace_rejects_a_privileged_pod(cluster: Cluster) -> None:
    ns = "e2e-restricted"
    cluster.create_namespace(ns, labels={"pod-security.kubernetes.io/enforce": "restricted"})
    privileged = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged"},
        "spec": {
            "containers": [{"name": "main", "image": PAUSE_IMAGE, "securityContext": {"privileged": True}}]
        },
    }
    with pytest.raises(KubectlError) as rejected:
        cluster.apply_yaml(privileged, namespace=ns)
    assert "violates PodSecurity" in rejected.value.stderr
    assert "restricted" in rejected.value.stderr

    compliant = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "compliant"},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "main",
                    "image": PAUSE_IMAGE,
                    "securityContext": {
                        "runAsUser": 65532,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
    cluster.apply_yaml(compliant, namespace=ns)
    cluster.wait_for("pod/compliant", "condition=Ready", namespace=ns, timeout_s=90)


def test_service_account_kubeconfig_is_restricted_by_rbac(cluster: Cluster, tmp_path: Path) -> None:
    ns = "e2e-rbac"
    cluster.create_namespace(ns)
    cluster.apply_yaml(
        [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "pod-reader", "namespace": ns},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "reader-reads-pods", "namespace": ns},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}],
            },
        ]
    )
    kubeconfig = cluster.service_account_kubeconfig(ns, "reader", tmp_path / "reader.kubeconfig")

    def can_i(*args: str) -> str:
        result = cluster.kubectl("auth", "can-i", *args, kubeconfig=kubeconfig, check=False)
        return result.stdout.strip()

    whoami = cluster.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig)
    assert f"system:serviceaccount:{ns}:reader" in whoami.stdout
    cluster.wait_until(lambda: can_i("list", "pods", "-n", ns) == "yes", "RBAC to grant list pods")
    assert can_i("create", "pods", "-n", ns) == "no"
    assert can_i("list", "pods", "-n", "default") == "no"
    assert can_i("list", "secrets", "-n", ns) == "no"
    assert can_i("create", "deployments", "-n", ns) == "no"
    # The admin identity, by contrast, may do anything.
    assert cluster.kubectl("auth", "can-i", "create", "deployments", "-n", ns).stdout.strip() == "yes"

    cluster.kubectl("get", "pods", "-n", ns, kubeconfig=kubeconfig)
    forbidden = cluster.kubectl("get", "secrets", "-n", ns, kubeconfig=kubeconfig, check=False)
    assert forbidden.returncode != 0
    assert "Forbidden" in forbidden.stderr


def test_a_component_that_dies_fails_start_with_its_log(testenv_bin: Path, tmp_path: Path) -> None:
    """Start-up problems raise loudly, quoting the failing component's log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for binary in testenv_bin.iterdir():
        (bin_dir / binary.name).symlink_to(binary)
    (bin_dir / "kube-apiserver").unlink()
    broken = bin_dir / "kube-apiserver"
    broken.write_text("#!/bin/sh\necho 'E0000 simulated apiserver failure: bad flag' >&2\nexit 3\n")
    broken.chmod(0o755)
    workdir = tmp_path / "cluster"
    with pytest.raises(ClusterError) as failed:
        Cluster.start(workdir, bin_dir, node_pools=[], timeout_s=30)
    message = str(failed.value)
    assert "kube-apiserver exited with code 3" in message
    assert "simulated apiserver failure" in message
    # Everything that was started is stopped again, and the logs stay for inspection.
    assert (workdir / "logs" / "etcd.log").exists()
    leftovers = subprocess.run(["pgrep", "-f", str(workdir)], capture_output=True, text=True, check=False)
    assert leftovers.stdout.strip() == "", "processes of the failed cluster are still running"


def test_helm_installs_a_chart_into_the_cluster(cluster: Cluster, tmp_path: Path) -> None:
    chart = tmp_path / "demo"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    )
    cluster.helm("install", "demo", str(chart), "-n", "e2e-helm", "--create-namespace", "--wait")
    data = cluster.get_json("configmap", "demo-cm", namespace="e2e-helm")["data"]
    assert data == {"greeting": "hello"}
    assert "demo" in cluster.helm("list", "-n", "e2e-helm", "-q").stdout
