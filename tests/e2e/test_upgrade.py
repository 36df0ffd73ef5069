"""Upgrades (issue 13): from the previous release's CRD and examples to this checkout's CRD and
operator, on a control plane of its own where the operator runs as the chart's Deployment (a
real `tritonscale run` process on a process-backed node under the sandbox's node agent).

The previous release is tests/e2e/data/release-2026-12-01: the CRD and examples as they were
at commit 27d415e. Its resources must stay valid under the new CRD, and a chart upgrade that
replaces the operator must restart no Triton or router pod, since what they run is unchanged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import CHART, OPERATOR_NAMESPACE, RELEASE
from tests.e2e.faults import audit_time, lease_holder
from tests.reliability import record
from tritonscale_sandbox.cluster import Cluster, NodePool, Taint, default_node_pools
from tritonscale_sandbox.node_agent import NodeAgent

pytestmark = pytest.mark.e2e

PREVIOUS = Path(__file__).parent / "data" / "release-2026-12-01"
EXAMPLES = ("minimal", "latency-autoscaled", "gpu-spot")
SYSTEM_POOL = ("tritonscale.io/test-pool", "system")
SERVING_KINDS = "deployments,configmaps,services,poddisruptionbudgets"
POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"


@pytest.fixture(scope="module")
def upgrade_cluster(
    testenv_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Generator[Cluster, None, None]:
    """The default kwok pools for the stacks, plus one process-backed node, tainted, for the
    operator's own pods."""
    work = tmp_path_factory.mktemp("upgrade-cluster")
    system = NodePool(
        name="system",
        labels={SYSTEM_POOL[0]: SYSTEM_POOL[1]},
        taints=(Taint(SYSTEM_POOL[0], SYSTEM_POOL[1]),),
        process_backed=True,
    )
    cluster = Cluster.start(work / "cluster", testenv_bin, [*default_node_pools(), system])
    agent = NodeAgent(cluster, work / "nodes").start()
    failed = True
    try:
        yield cluster
        failed = False
    finally:
        agent.stop(grace_s=2.0)
        cluster.stop(keep_logs=failed)


def _helm_values(tag: str) -> list[str]:
    return [
        "--set", f"image.tag={tag}",
        "--set", "operator.readTritonPods=false",  # kwok pods have made-up addresses
        "--set", "operator.readRouters=false",
        "--set", "operator.logFormat=plain",
        "--set-json", "nodeSelector=" + json.dumps({SYSTEM_POOL[0]: SYSTEM_POOL[1]}),
        "--set-json", "tolerations=" + json.dumps([{"key": SYSTEM_POOL[0], "operator": "Exists"}]),
    ]  # fmt: skip


def _services(cluster: Cluster) -> list[dict[str, Any]]:
    return list(cluster.get_json("inferenceservices", "-A")["items"])


def _wait_all_ready(cluster: Cluster, what: str, timeout_s: float) -> None:
    try:
        cluster.wait_until(lambda: _all_ready(cluster), what, timeout_s=timeout_s)
    except TimeoutError as error:
        statuses = {s["metadata"]["name"]: s.get("status", {}).get("conditions") for s in _services(cluster)}
        pods = cluster.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
        logs = cluster.kubectl(
            "logs",
            "-n",
            OPERATOR_NAMESPACE,
            "-l",
            "app.kubernetes.io/name=tritonscale",
            "--tail=30",
            check=False,
        )
        raise AssertionError(
            f"{error}\n{json.dumps(statuses, indent=1)}\n{pods}\n{logs.stdout}{logs.stderr}"
        ) from None


def _all_ready(cluster: Cluster) -> bool:
    """Every service handled at its generation, and Ready but for the old gpu-spot example,
    whose placement of that release finds no node among this cluster's pools (its pods stay
    Pending, which is stable too)."""
    services = _services(cluster)
    return len(services) == len(EXAMPLES) and all(
        s.get("status", {}).get("observedGeneration") == s["metadata"]["generation"]
        and (
            s["metadata"]["name"] == "resnet"
            or any(c["type"] == "Ready" and c["status"] == "True" for c in s["status"].get("conditions", []))
        )
        for s in services
    )


def _serving_state(cluster: Cluster) -> dict[str, Any]:
    """What a restart or a rewrite would change: every stack pod's uid, and every child's
    resourceVersion (a no-op server-side apply leaves it alone)."""
    pods = {
        f"{p['metadata']['namespace']}/{p['metadata']['name']}": p["metadata"]["uid"]
        for p in cluster.get_json("pods", "-A", "-l", "app.kubernetes.io/managed-by=tritonscale")["items"]
    }
    children = {
        f"{o['kind']} {o['metadata']['namespace']}/{o['metadata']['name']}": o["metadata"]["resourceVersion"]
        for o in cluster.get_json(SERVING_KINDS, "-A", "-l", "app.kubernetes.io/managed-by=tritonscale")[
            "items"
        ]
    }
    return {"pods": pods, "children": children}


def _operator_pods(cluster: Cluster) -> list[dict[str, Any]]:
    return list(
        cluster.get_json("pods", "-l", "app.kubernetes.io/name=tritonscale", namespace=OPERATOR_NAMESPACE)[
            "items"
        ]
    )


def _reconciled_by(cluster: Cluster, pod_name: str, since: float) -> set[str]:
    """namespace/name of the ConfigMaps that pod's operator read since then: a reconcile of an
    applied stack reads each child a list of its Deployments cannot show, the router ConfigMap
    among them, before deciding to write it (and leaves one that is as it should be alone)."""
    return {
        f"{e['objectRef']['namespace']}/{e['objectRef']['name']}"
        for e in cluster.audit_events()
        if e["verb"] == "get"
        and e.get("objectRef", {}).get("resource") == "configmaps"
        and pod_name in e["user"].get("extra", {}).get(POD_NAME_EXTRA, [])
        and audit_time(e) >= since
        and e.get("responseStatus", {}).get("code") == 200
    }


def test_an_upgrade_keeps_old_resources_valid_and_restarts_no_serving_pod(upgrade_cluster: Cluster) -> None:
    cluster = upgrade_cluster
    # The previous release: its CRD, its examples, and its chart installed over them (this
    # checkout's chart stands in for the previous one: the operator's code is what upgrades).
    cluster.kubectl("apply", "--server-side", "-f", str(PREVIOUS / "crd.yaml"))
    cluster.wait_for("crd/inferenceservices.tritonscale.io", "condition=Established", timeout_s=60)
    cluster.wait_until(
        lambda: cluster.kubectl("get", "inferenceservices", "-A", check=False).returncode == 0,
        "the InferenceService storage to answer lists",
    )
    for example in EXAMPLES:
        cluster.kubectl("apply", "-f", str(PREVIOUS / f"{example}.yaml"))
    cluster.helm(
        "install", RELEASE, str(CHART), "-n", OPERATOR_NAMESPACE, "--create-namespace",
        *_helm_values("previous"), "--wait", "--timeout", "3m",
    )  # fmt: skip
    _wait_all_ready(cluster, "the previous release's services to be Ready", 180)

    # The CRD upgrade, as the chart's NOTES tell users to do it.
    crds = cluster.helm("show", "crds", str(CHART)).stdout
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=crds)
    cluster.wait_for("crd/inferenceservices.tritonscale.io", "condition=Established", timeout_s=60)
    installed = cluster.get_json("crd", "inferenceservices.tritonscale.io")["spec"]["versions"][0]["schema"]
    assert installed == yaml.safe_load(crds)["spec"]["versions"][0]["schema"]
    # Every stored resource is valid as a new object under the new schema (no ratcheting: a
    # create checks every rule), and a no-op update is accepted.
    for service in _services(cluster):
        meta = service["metadata"]
        fresh = {
            "apiVersion": service["apiVersion"],
            "kind": service["kind"],
            "metadata": {"name": f"{meta['name']}-v2", "namespace": meta["namespace"]},
            "spec": service["spec"],
        }
        cluster.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(fresh))
        cluster.kubectl(
            "annotate",
            "tis",
            meta["name"],
            "-n",
            meta["namespace"],
            "tritonscale.io/upgrade-check=1",
            "--overwrite",
        )
    _wait_all_ready(cluster, "the services to be Ready after the CRD upgrade", 60)

    # The operator upgrade: a new image, the same specs.
    before = _serving_state(cluster)
    old_pods = {p["metadata"]["name"] for p in _operator_pods(cluster)}
    started = time.time()
    began = time.monotonic()
    cluster.helm(
        "upgrade",
        RELEASE,
        str(CHART),
        "-n",
        OPERATOR_NAMESPACE,
        *_helm_values("next"),
        "--wait",
        "--timeout",
        "3m",
    )
    new_pods = [p for p in _operator_pods(cluster) if p["metadata"]["name"] not in old_pods]
    assert len(new_pods) == 1 and new_pods[0]["spec"]["containers"][0]["image"].endswith(":next"), new_pods
    new_pod = new_pods[0]["metadata"]["name"]
    cluster.wait_until(
        lambda: lease_holder(cluster, OPERATOR_NAMESPACE).startswith(f"{new_pod}_"),
        "the new operator to lead",
        timeout_s=90,
    )
    leading_s = time.monotonic() - began
    # The new operator resumes every service: it reconciles each stack once (one router
    # ConfigMap a stack).
    stacks = {
        f"{o['metadata']['namespace']}/{o['metadata']['name']}"
        for o in cluster.get_json("configmaps", "-A", "-l", "app.kubernetes.io/managed-by=tritonscale")[
            "items"
        ]
    }
    try:
        cluster.wait_until(
            lambda: _reconciled_by(cluster, new_pod, started) >= stacks,
            "the new operator to reconcile every stack",
            timeout_s=90,
        )
    except TimeoutError as error:
        seen = sorted(
            {
                (
                    e["verb"],
                    e["objectRef"].get("resource"),
                    str(e["user"].get("extra", {}).get(POD_NAME_EXTRA)),
                )
                for e in cluster.audit_events()
                if audit_time(e) >= started and e.get("objectRef")
            }
        )
        raise AssertionError(f"{error}: {new_pod}, {stacks}; requests since the upgrade: {seen}") from None
    resumed_s = time.monotonic() - began
    time.sleep(5)  # anything a resume would roll out would have started by now
    after = _serving_state(cluster)
    assert after["pods"] == before["pods"], "an upgrade restarted serving pods"
    assert after["children"] == before["children"], "an upgrade rewrote children"
    assert _all_ready(cluster)
    record(
        "operator and CRD upgraded",
        f"CRD and {len(EXAMPLES)} examples of release 2026-12-01, then this CRD and a chart upgrade to a new image",
        f"old resources valid under the new CRD; 0 of {len(before['pods'])} serving pods restarted, "
        f"0 of {len(before['children'])} children rewritten",
        new_operator_leading_s=round(leading_s, 1),
        every_stack_resumed_s=round(resumed_s, 1),
        serving_pods=len(before["pods"]),
    )
