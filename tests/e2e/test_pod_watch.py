"""The operator's pod watch (clients.pod_watch) against the real API server, with the chart's
RBAC: it keeps the Ready addresses and starts of the operator's pods as they come and go, picks
only the pods the operator manages, and costs one list and a watch where the reads listed every
time.
Reconnecting after the API server restarts: tests/e2e/test_faults.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.e2e.conftest import ChartRelease
from tests.e2e.faults import credential, made_with
from tritonscale.api.observation import ScalingTarget
from tritonscale.clients.kube import KubeClient
from tritonscale.clients.observations import KubernetesEndpoints
from tritonscale.clients.pod_watch import ManagedPods
from tritonscale.policy.pod_fields import stack_pod_view
from tritonscale.policy.service_facts import pod_starts
from tritonscale.render.names import (
    COMPONENT_ROUTER,
    COMPONENT_TRITON,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    StackNames,
)
from tritonscale_sandbox.cluster import Cluster

pytestmark = pytest.mark.e2e

NAMESPACE = "pod-watch"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


def pause_deployment(name: str, labels: dict[str, str], replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": PAUSE_IMAGE}]},
            },
        },
    }


def ready_ips(cluster: Cluster, selector: dict[str, str]) -> list[str]:
    """What kubectl sees: the Ready pods' IPs (a pod being deleted included, as the watch)."""
    label_selector = ",".join(f"{key}={value}" for key, value in selector.items())
    pods = cluster.get_json("pods", "-l", label_selector, namespace=NAMESPACE)["items"]
    return sorted(
        pod["status"]["podIP"]
        for pod in pods
        if pod["status"].get("podIP")
        and any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))
    )


def listed_stack_pods(cluster: Cluster, instance: str) -> list[dict[str, Any]]:
    """A service's pods as kubectl lists them, cut to what the stack's status reads."""
    selector = f"{LABEL_INSTANCE}={instance},{LABEL_MANAGED_BY}={MANAGED_BY}"
    pods = cluster.get_json("pods", "-l", selector, namespace=NAMESPACE)["items"]
    return sorted((stack_pod_view(pod) for pod in pods), key=lambda view: view["metadata"]["name"])


def kept_pod_names(managed: ManagedPods) -> set[str]:
    """The names of the router pods of `bert` the watch keeps."""
    (scope,) = managed.watches.values()
    with scope.lock:
        return set(scope.by_instance.get((NAMESPACE, "bert"), {}))


def test_the_watch_follows_the_operator_s_pods_with_one_list(
    cluster: Cluster, chart_release: ChartRelease, tmp_path: Path
) -> None:
    cluster.create_namespace(NAMESPACE)
    routers = StackNames("bert", NAMESPACE).component_selector(COMPONENT_ROUTER)
    cluster.apply_yaml(pause_deployment("bert-router", routers, 2))
    # The same service's labels on pods someone else manages: not the operator's to read.
    cluster.apply_yaml(pause_deployment("lookalike", {**routers, LABEL_MANAGED_BY: "someone-else"}, 1))
    # A Triton pod of another service that no node takes: the scheduler's verdict in its status.
    stranded = pause_deployment(
        "gpt-triton", StackNames("gpt", NAMESPACE).component_selector(COMPONENT_TRITON), 1
    )
    stranded["spec"]["template"]["spec"]["nodeSelector"] = {"tritonscale.test/nowhere": "true"}
    cluster.apply_yaml(stranded)
    cluster.wait_until(lambda: len(ready_ips(cluster, routers)) == 2, "two router pods Ready")
    kubeconfig = cluster.service_account_kubeconfig(
        chart_release.namespace, chart_release.service_account, tmp_path / "watch.kubeconfig", create=False
    )
    managed = ManagedPods(KubeClient.connect(str(kubeconfig)).core).start()
    try:
        cluster.wait_until(
            lambda: managed.ready_addresses(NAMESPACE, routers) == ready_ips(cluster, routers),
            "the watch to list the two router pods",
            timeout_s=30,
        )
        # The Triton source's endpoints (any selector of the operator's will do): the same from
        # the watch as from a list.
        target = ScalingTarget(NAMESPACE, "bert", ("m",), 95.0, ("bert-router",), 2, routers)
        lister = cluster.service_account_kubeconfig(
            chart_release.namespace, chart_release.service_account, tmp_path / "list.kubeconfig", create=False
        )  # a token of its own: the audit below counts the watch's requests alone
        client = KubeClient.connect(str(lister)).core
        assert KubernetesEndpoints(client, managed)(target) == KubernetesEndpoints(client)(target)
        assert KubernetesEndpoints(client)(target) == ready_ips(cluster, routers)
        cluster.kubectl("scale", "deployment", "bert-router", "-n", NAMESPACE, "--replicas=3")
        cluster.wait_until(
            lambda: (
                len(addresses := managed.ready_addresses(NAMESPACE, routers) or []) == 3
                and addresses == ready_ips(cluster, routers)
            ),
            "a third router pod, once Ready",
            timeout_s=30,
        )
        # Each Ready pod's start, for the learnt cold start: as a list gives them.
        label_selector = ",".join(f"{key}={value}" for key, value in routers.items())
        cluster.wait_until(
            lambda: (
                len(
                    listed := pod_starts(
                        cluster.get_json("pods", "-l", label_selector, namespace=NAMESPACE)["items"]
                    )
                )
                == 3
                and (managed.starts_and_addresses(NAMESPACE, routers) or ((), []))[0] == listed
            ),
            "the watch to hold the three pods' starts as a list has them",
            timeout_s=30,
        )

        # What a settling stack's status reads of its pods (node, deletion, the scheduler's
        # verdict): as a list gives it, for the placed pods and for the one no node takes.
        def held_as_listed(instance: str) -> list[dict[str, Any]] | None:
            held = managed.stack_pods(NAMESPACE, {LABEL_INSTANCE: instance, LABEL_MANAGED_BY: MANAGED_BY})
            return held if held == listed_stack_pods(cluster, instance) else None

        cluster.wait_until(
            lambda: (
                (views := held_as_listed("bert")) is not None
                and len(views) == 3
                and all(view["spec"].get("nodeName") for view in views)
            ),
            "the watch to hold bert's three placed pods as a list has them",
            timeout_s=30,
        )
        cluster.wait_until(
            lambda: (
                (views := held_as_listed("gpt")) is not None
                and [c.get("reason") for view in views for c in view["status"]["conditions"]]
                == ["Unschedulable"]
            ),
            "the watch to hold the scheduler's verdict on gpt's pod as a list has it",
            timeout_s=30,
        )
        gone = sorted(kept_pod_names(managed))[0]
        cluster.kubectl("delete", "pod", gone, "-n", NAMESPACE, "--wait=true")
        # kwok may give the replacement the deleted pod's address: the pods kept tell them apart.
        cluster.wait_until(
            lambda: (
                gone not in kept_pod_names(managed)
                and len(kept_pod_names(managed)) == 3
                and managed.ready_addresses(NAMESPACE, routers) == ready_ips(cluster, routers)
                and len(ready_ips(cluster, routers)) == 3
            ),
            "the deleted pod gone from the watch, its replacement in once Ready",
            timeout_s=30,
        )
        lookalike = ready_ips(cluster, {**routers, LABEL_MANAGED_BY: "someone-else"})
        answer = managed.ready_addresses(NAMESPACE, routers)
        assert lookalike and answer is not None and not set(lookalike) & set(answer)
    finally:
        managed.stop()
    # One list, then watches, each selected by the server: nothing else the watch did read pods.
    mine = credential(kubeconfig)
    pod_requests = [
        (event["verb"], event["requestURI"])
        for event in cluster.audit_events()
        if made_with(event, mine)
        and (event.get("objectRef") or {}).get("resource") == "pods"
        and event["stage"] == "ResponseComplete"
    ]
    verbs = [verb for verb, _ in pod_requests]
    assert verbs.count("list") == 1 and set(verbs) <= {"list", "watch"}, pod_requests
    assert all(
        parse_qs(urlsplit(uri).query)["labelSelector"] == ["app.kubernetes.io/managed-by=tritonscale"]
        for _, uri in pod_requests
    ), pod_requests
