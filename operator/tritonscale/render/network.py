"""NetworkPolicies that guard one InferenceService's stack: only the router reaches Triton, only
the declared clients reach the router, and the router reaches only Triton (and DNS). A service
serving variants that is not otherwise guarded gets only the routers' ingress policy, which
restricts only their control port (the variants' shares) to the operator.

Both allow what the stack needs besides: metrics scrapes (Prometheus, from the namespaces
`NetworkPolicyOptions.metrics_namespace_labels` selects) and the operator itself on Triton's
HTTP port (it reads model configs and, for the Triton statistics source, each replica's
statistics) and on the routers' stats port (their counts, every 2 s). Health probes come from the kubelet on the node, which network plugins let
through whatever a policy says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tritonscale.api.resource import InferenceService
from tritonscale.api.spec import LabelSelector, RouterClient
from tritonscale.ports import (
    GRPC_PORT,
    HTTP_PORT,
    METRICS_PORT,
    ROUTER_CONTROL_PORT,
    ROUTER_METRICS_PORT,
    variant_ports,
)
from tritonscale.render.names import COMPONENT_ROUTER, COMPONENT_TRITON, StackNames
from tritonscale.render.variants import served_variants

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by the API server on every namespace
DNS_PORT = 53


@dataclass(frozen=True)
class NetworkPolicyOptions:
    """Operator-wide settings of the rendered NetworkPolicies (the chart's `networkPolicy`).

    `enabled` renders them for every InferenceService; one that declares router clients gets
    them anyway, and one serving variants the routers' (guarded()). `operator_namespace` and
    `operator_labels` say where the operator's pods are (None: not in the cluster, and then
    nothing lets it reach Triton pods).
    `metrics_namespace_labels` selects the namespaces metrics may be scraped from (None: every
    namespace)."""

    enabled: bool = False
    operator_namespace: str | None = None
    operator_labels: tuple[tuple[str, str], ...] = ()
    metrics_namespace_labels: tuple[tuple[str, str], ...] | None = None


def guarded(service: InferenceService, options: NetworkPolicyOptions) -> bool:
    """Whether this service's stack gets NetworkPolicies: a service serving variants always does,
    since its routers' control port (the variants' shares) must take no one but the operator."""
    return (
        options.enabled
        or service.spec.load_balancing.router.clients is not None
        or bool(served_variants(service))
    )


def _guarded_only_for_variants(service: InferenceService, options: NetworkPolicyOptions) -> bool:
    """Guarded only for its variants' control port: the rest stays as open as unguarded."""
    return not options.enabled and service.spec.load_balancing.router.clients is None


def _selector(selector: LabelSelector) -> dict[str, Any]:
    rendered: dict[str, Any] = {}
    if selector.match_labels:
        rendered["matchLabels"] = dict(selector.match_labels)
    if selector.match_expressions:
        rendered["matchExpressions"] = [
            {
                "key": requirement.key,
                "operator": str(requirement.operator),
                **({"values": list(requirement.values)} if requirement.values else {}),
            }
            for requirement in selector.match_expressions
        ]
    return rendered


def _client_peer(client: RouterClient) -> dict[str, Any]:
    # A peer with only a namespaceSelector means every pod there; with only a podSelector, pods
    # in the policy's own namespace: the same meaning the API documents for `clients`.
    peer: dict[str, Any] = {}
    if client.namespace_selector is not None:
        peer["namespaceSelector"] = _selector(client.namespace_selector)
    if client.pod_selector is not None:
        peer["podSelector"] = _selector(client.pod_selector)
    return peer


def _ports(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def _metrics_rule(options: NetworkPolicyOptions, *ports: int) -> dict[str, Any]:
    labels = options.metrics_namespace_labels
    selector = {"matchLabels": dict(labels)} if labels else {}
    return {"from": [{"namespaceSelector": selector}], "ports": _ports(*ports)}


def _policy(
    names: StackNames, name: str, component: str, ingress: list[dict[str, Any]], egress: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": names.namespace, "labels": names.common_labels(component)},
        "spec": {
            "podSelector": {"matchLabels": names.component_selector(component)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }


def render_network_policies(
    service: InferenceService, names: StackNames, options: NetworkPolicyOptions
) -> list[dict[str, Any]]:
    """The Triton pods' and the router pods' NetworkPolicies."""
    # The model's ports, and each served variant's (render.variants): the routers call them all.
    serving, metrics = [HTTP_PORT, GRPC_PORT], [METRICS_PORT]
    for index in range(len(served_variants(service))):
        http, grpc, variant_metrics = variant_ports(index)
        serving += [http, grpc]
        metrics.append(variant_metrics)
    from_router = {
        "from": [{"podSelector": {"matchLabels": names.component_selector(COMPONENT_ROUTER)}}],
        "ports": _ports(*serving),
    }
    triton_ingress = [from_router, _metrics_rule(options, *metrics)]
    from_operator: list[dict[str, Any]] = []
    if options.operator_namespace is not None:
        from_operator = [
            {
                "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: options.operator_namespace}},
                "podSelector": {"matchLabels": dict(options.operator_labels)},
            }
        ]
        triton_ingress.append({"from": from_operator, "ports": _ports(HTTP_PORT)})
    clients = service.spec.load_balancing.router.clients
    client_peers = [_client_peer(c) for c in clients] if clients is not None else [{"podSelector": {}}]
    open_stack = _guarded_only_for_variants(service, options)
    router_ingress = (
        # A rule without `from` admits every source: guarded only for the control port, the
        # routers keep taking clients and scrapes from wherever they did.
        [{"ports": _ports(HTTP_PORT, GRPC_PORT, ROUTER_METRICS_PORT)}]
        if open_stack
        else [
            {"from": client_peers, "ports": _ports(HTTP_PORT, GRPC_PORT)},
            _metrics_rule(options, ROUTER_METRICS_PORT),
        ]
    )
    if from_operator:
        # The autoscaler reads the routers' counts from their stats page (clients.router), and
        # sets the variants' shares on their control port: no one else may.
        operator_ports = [ROUTER_METRICS_PORT, *([ROUTER_CONTROL_PORT] if served_variants(service) else [])]
        router_ingress.append({"from": from_operator, "ports": _ports(*operator_ports)})
    # The router only ever calls this service's Triton pods, and DNS to find them.
    router_egress = [
        {
            "to": [{"podSelector": {"matchLabels": names.component_selector(COMPONENT_TRITON)}}],
            "ports": _ports(*serving),
        },
        {"ports": [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}]},
    ]
    # Triton loads models from wherever the repository is (S3, GCS, a file server): its egress
    # stays open, and the policy says so rather than leaving it unstated.
    triton_egress: list[dict[str, Any]] = [{}]
    router = _policy(names, names.router_network_policy, COMPONENT_ROUTER, router_ingress, router_egress)
    if open_stack:
        # Only the routers' ingress is restricted (the control port); what they and the Triton
        # pods reach, and who reaches the Triton pods, stays as without NetworkPolicies.
        router["spec"]["policyTypes"] = ["Ingress"]
        del router["spec"]["egress"]
        return [router]
    return [
        _policy(names, names.triton_network_policy, COMPONENT_TRITON, triton_ingress, triton_egress),
        router,
    ]
