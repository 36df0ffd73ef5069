"""NetworkPolicies (issue 13): only the router reaches Triton, only declared clients reach the
router; rendered when the operator guards every service or the service declares its clients,
and removed, never another's, when guarding is switched off."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner

from tests.builders import make_inference_service
from tests.unit.fakes import FakeCluster
from tests.unit.test_reconciler import _foreign
from tritonscale.api.resource import InvalidInferenceService, parse_inference_service
from tritonscale.cli.run import run
from tritonscale.errors import RejectedError, TransientError
from tritonscale.policy.placement import split_replicas
from tritonscale.ports import GRPC_PORT, HTTP_PORT, METRICS_PORT, ROUTER_METRICS_PORT
from tritonscale.reconcilers.stack import StackReconciler
from tritonscale.render.network import NetworkPolicyOptions
from tritonscale.render.stack import RenderOptions, render_stack

CLIENTS = [
    {"namespaceSelector": {"matchLabels": {"team": "web"}}, "podSelector": {"matchLabels": {"app": "shop"}}},
    {"podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["api"]}]}},
    {"namespaceSelector": {}},
]
OPERATOR = NetworkPolicyOptions(
    enabled=True,
    operator_namespace="tritonscale",
    operator_labels=(("app.kubernetes.io/name", "tritonscale"),),
)


def _stack(body: dict[str, Any], network: NetworkPolicyOptions | None = None) -> list[dict[str, Any]]:
    service = parse_inference_service(body)
    placement = split_replicas(service.spec.replicas, service.spec.capacity)
    return render_stack(service, placement, RenderOptions(network=network or NetworkPolicyOptions()))


def _policies(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == "NetworkPolicy"}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return bool(selector["matchLabels"].items() <= labels.items())


def _pod_labels(objects: list[dict[str, Any]], name: str) -> dict[str, str]:
    deployment = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name)
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def _ports(rule: dict[str, Any]) -> list[int]:
    return [p["port"] for p in rule["ports"]]


def test_an_unguarded_service_has_no_policies() -> None:
    assert _policies(_stack(make_inference_service("echo", "demo"))) == {}


def test_guarding_every_service_lets_only_the_router_reach_triton() -> None:
    body = make_inference_service(
        "echo", "demo", spec__capacity={"spot": {"enabled": True}}, spec__replicas=4
    )
    objects = _stack(body, OPERATOR)
    policies = _policies(objects)
    assert sorted(policies) == ["echo-router", "echo-triton"]
    triton, router = policies["echo-triton"]["spec"], policies["echo-router"]["spec"]
    # Each guards exactly its own pods: both Triton pools, the routers.
    for deployment in ("echo-ondemand", "echo-spot"):
        assert _selects(triton["podSelector"], _pod_labels(objects, deployment))
        assert not _selects(router["podSelector"], _pod_labels(objects, deployment))
    assert _selects(router["podSelector"], _pod_labels(objects, "echo-router"))
    assert not _selects(triton["podSelector"], _pod_labels(objects, "echo-router"))
    assert triton["policyTypes"] == router["policyTypes"] == ["Ingress", "Egress"]
    # Triton reaches its model repository wherever it is; the router only Triton, and DNS.
    assert triton["egress"] == [{}]
    to_triton, dns = router["egress"]
    (triton_peer,) = to_triton["to"]
    assert _selects(triton_peer["podSelector"], _pod_labels(objects, "echo-ondemand"))
    assert _selects(triton_peer["podSelector"], _pod_labels(objects, "echo-spot"))
    assert _ports(to_triton) == [HTTP_PORT, GRPC_PORT]
    assert "to" not in dns and {(p["protocol"], p["port"]) for p in dns["ports"]} == {
        ("UDP", 53),
        ("TCP", 53),
    }

    # Triton's inference ports: this service's routers only; metrics: any namespace (the
    # default); the operator's pods on HTTP (model configs and statistics).
    from_router, metrics, operator = triton["ingress"]
    (router_peer,) = from_router["from"]
    assert set(router_peer) == {"podSelector"} and _selects(
        router_peer["podSelector"], _pod_labels(objects, "echo-router")
    )
    assert _ports(from_router) == [HTTP_PORT, GRPC_PORT]
    assert metrics == {
        "from": [{"namespaceSelector": {}}],
        "ports": [{"protocol": "TCP", "port": METRICS_PORT}],
    }
    assert operator["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "tritonscale"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "tritonscale"}},
        }
    ]
    assert _ports(operator) == [HTTP_PORT]
    # No client declared: the router takes requests from its own namespace.
    # The operator's pods on the stats port (the routers' counts for the autoscaler).
    clients, router_metrics, router_operator = router["ingress"]
    assert clients["from"] == [{"podSelector": {}}] and _ports(clients) == [HTTP_PORT, GRPC_PORT]
    assert _ports(router_metrics) == [ROUTER_METRICS_PORT]
    assert router_operator["from"] == operator["from"] and _ports(router_operator) == [ROUTER_METRICS_PORT]


def test_declaring_clients_guards_the_service_with_exactly_those_peers() -> None:
    body = make_inference_service("echo", "demo", spec__loadBalancing={"router": {"clients": CLIENTS}})
    policies = _policies(_stack(body))
    clients = policies["echo-router"]["spec"]["ingress"][0]
    assert clients["from"] == CLIENTS
    # The operator is not known to be in the cluster: no rule lets it in.
    assert len(policies["echo-triton"]["spec"]["ingress"]) == 2
    assert len(policies["echo-router"]["spec"]["ingress"]) == 2


def test_metrics_scrapes_come_only_from_the_namespaces_selected() -> None:
    options = NetworkPolicyOptions(enabled=True, metrics_namespace_labels=(("team", "monitoring"),))
    policies = _policies(_stack(make_inference_service("echo", "demo"), options))
    for name, port in (("echo-triton", METRICS_PORT), ("echo-router", ROUTER_METRICS_PORT)):
        (rule,) = [r for r in policies[name]["spec"]["ingress"] if _ports(r) == [port]]
        assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}]


def test_a_client_needs_a_selector_and_expressions_their_values() -> None:
    for clients, path in (
        ([{}], "spec.loadBalancing.router.clients[0].podSelector"),
        ([], "spec.loadBalancing.router.clients"),
        (
            [{"podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}}],
            "spec.loadBalancing.router.clients[0].podSelector.matchExpressions[0].values",
        ),
    ):
        with pytest.raises(InvalidInferenceService) as invalid:
            parse_inference_service(
                make_inference_service(spec__loadBalancing={"router": {"clients": clients}})
            )
        assert path in [p.path for p in invalid.value.problems], invalid.value


def _reconciler(body: dict[str, Any]) -> tuple[FakeCluster, StackReconciler]:
    cluster = FakeCluster()
    cluster.add_service(body)
    return cluster, StackReconciler(cluster)


def _network_policies(cluster: FakeCluster) -> list[str]:
    return sorted(name for kind, _, name in cluster.objects if kind == "NetworkPolicy")


def test_switching_guarding_off_removes_the_services_policies() -> None:
    cluster, reconciler = _reconciler(
        make_inference_service("echo", "demo", spec__loadBalancing={"router": {"clients": CLIENTS}})
    )
    reconciler.reconcile("demo", "echo")
    assert _network_policies(cluster) == ["echo-router", "echo-triton"]
    del cluster.services[("demo", "echo")]["spec"]["loadBalancing"]
    reconciler.reconcile("demo", "echo")
    assert _network_policies(cluster) == []
    assert [c[0] for c in cluster.calls if c[1] == "NetworkPolicy"][-2:] == ["delete", "delete"]


def test_an_unguarded_services_policies_are_looked_for_once_until_it_is_guarded_again() -> None:
    cluster, reconciler = _reconciler(make_inference_service("echo", "demo"))
    reconciler.reconcile("demo", "echo")
    looked = [r for r in cluster.reads if r[1] == "NetworkPolicy"]
    assert sorted(looked) == [
        ("get", "NetworkPolicy", "echo-router"),
        ("get", "NetworkPolicy", "echo-triton"),
    ]
    cluster.reads.clear()
    reconciler.reconcile("demo", "echo")
    assert not [r for r in cluster.reads if r[1] == "NetworkPolicy"]

    service = cluster.services[("demo", "echo")]
    service["spec"]["loadBalancing"] = {"router": {"clients": CLIENTS}}
    reconciler.reconcile("demo", "echo")
    assert _network_policies(cluster) == ["echo-router", "echo-triton"]
    del service["spec"]["loadBalancing"]
    reconciler.reconcile("demo", "echo")
    assert _network_policies(cluster) == []


def _unguarded_after_a_failed_apply_keeps_no_policies(
    cluster: FakeCluster, reconciler: StackReconciler, fail: Callable[[dict[str, Any]], None]
) -> None:
    """An apply of echo's guarded spec that `fail` stops after the policies' writes, then the
    spec unguarded: its reconcile removes them."""
    cluster.before_write = fail
    with pytest.raises(TransientError):
        reconciler.reconcile("demo", "echo")
    assert _network_policies(cluster) == ["echo-router", "echo-triton"]
    cluster.before_write = lambda obj: None
    del cluster.services[("demo", "echo")]["spec"]["loadBalancing"]
    reconciler.reconcile("demo", "echo")
    assert _network_policies(cluster) == []


def test_policies_written_by_an_attempt_that_failed_part_way_go_when_no_longer_asked_for() -> None:
    """The policies are written first; a first apply that fails after them leaves a service
    that was never applied but has them: the retry of a spec without guarding removes them."""
    cluster, reconciler = _reconciler(
        make_inference_service("echo", "demo", spec__loadBalancing={"router": {"clients": CLIENTS}})
    )
    config_map_writes = []

    def fail_at_the_config_maps_create(obj: dict[str, Any]) -> None:
        if obj["kind"] == "ConfigMap":
            config_map_writes.append(obj)
            if len(config_map_writes) == 2:  # its dry run passed
                raise TransientError("the API server went away")

    _unguarded_after_a_failed_apply_keeps_no_policies(cluster, reconciler, fail_at_the_config_maps_create)


def test_policies_written_by_a_failed_apply_of_a_once_unguarded_service_go_when_unasked() -> None:
    """Unguarded and looked at, then guarded by an apply that fails after writing the policies,
    then unguarded again: the look was forgotten before those writes, so they are removed."""
    cluster, reconciler = _reconciler(make_inference_service("echo", "demo"))
    reconciler.reconcile("demo", "echo")
    service = cluster.services[("demo", "echo")]
    service["spec"]["loadBalancing"] = {"router": {"clients": CLIENTS}}
    service["spec"]["replicas"] = 3  # so that a Deployment is written after the policies

    def fail_after_the_policies(obj: dict[str, Any]) -> None:
        if obj["kind"] == "Deployment" and _network_policies(cluster):
            raise TransientError("the API server went away")

    _unguarded_after_a_failed_apply_keeps_no_policies(cluster, reconciler, fail_after_the_policies)


def test_a_new_operator_process_removes_policies_an_earlier_one_left() -> None:
    """Guarding switched off by the operator's own options across a restart: the new process
    has not looked yet, so it does."""
    cluster, unguarded = _reconciler(make_inference_service("echo", "demo"))
    unguarded.reconcile("demo", "echo")  # looked, found none
    StackReconciler(cluster, RenderOptions(network=NetworkPolicyOptions(enabled=True))).reconcile(
        "demo", "echo"
    )
    assert _network_policies(cluster) == ["echo-router", "echo-triton"]
    StackReconciler(cluster).reconcile("demo", "echo")
    assert _network_policies(cluster) == []


def test_a_users_network_policy_of_a_childs_name_is_never_adopted_nor_deleted() -> None:
    cluster, reconciler = _reconciler(make_inference_service("echo", "demo"))
    mine = _foreign("NetworkPolicy", "echo-router")
    mine["metadata"]["namespace"] = "demo"
    cluster.objects[("NetworkPolicy", "demo", "echo-router")] = mine
    reconciler.reconcile("demo", "echo")  # unguarded: the user's policy is none of ours
    assert cluster.objects[("NetworkPolicy", "demo", "echo-router")] == mine
    cluster.services[("demo", "echo")]["spec"]["loadBalancing"] = {"router": {"clients": CLIENTS}}
    with pytest.raises(RejectedError, match="NetworkPolicy echo-router already exists"):
        reconciler.reconcile("demo", "echo")
    assert cluster.objects[("NetworkPolicy", "demo", "echo-router")] == mine


@pytest.mark.parametrize(
    "flag", ["--network-policy-operator-label", "--network-policy-metrics-namespace-label"]
)
@pytest.mark.parametrize("value", ["no-equals", "bad key=x", "k=bad value"])
def test_label_flags_are_checked(flag: str, value: str) -> None:
    result = CliRunner().invoke(run, [f"{flag}={value}"])
    assert result.exit_code == 2 and "KEY=VALUE" in result.output, result.output
