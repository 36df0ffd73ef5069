"""The HAProxy router: haproxy.cfg, its ConfigMap, the router Deployment and the endpoint Service."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import jinja2

from tritonscale.api.resource import InferenceService
from tritonscale.api.spec import DEFAULT_ROUTER_REQUESTS, BalancePolicy
from tritonscale.ports import GRPC_PORT, HTTP_PORT, ROUTER_CONTROL_PORT, ROUTER_METRICS_PORT, variant_ports
from tritonscale.render.names import COMPONENT_ROUTER, StackNames
from tritonscale.render.pods import (
    PRE_STOP_S,
    container_resources,
    deployment,
    grace_period_s,
    restricted_container_security,
    restricted_pod_security,
    spread_constraints,
)
from tritonscale.render.presets import node_requirements, required_node_affinity
from tritonscale.render.variants import served_variants

HAPROXY_UID: Final = 99  # the `haproxy` user of the official image
CONFIG_DIR: Final = "/usr/local/etc/haproxy"
CONFIG_FILE: Final = "haproxy.cfg"
RUNTIME_DIR: Final = "/var/run/haproxy"
CONFIG_HASH_ANNOTATION: Final = "tritonscale.io/config-hash"
HTTP_BACKEND: Final = "triton_http"
GRPC_BACKEND: Final = "triton_grpc"
BACKEND_SCOPE: Final = "triton"  # a substring of both backends' names and of no other proxy's

BALANCE_ALGORITHMS: Final = {
    BalancePolicy.ROUND_ROBIN: "roundrobin",
    BalancePolicy.LEAST_CONNECTIONS: "leastconn",
    # Two random draws, the one with fewer connections wins.
    BalancePolicy.POWER_OF_TWO_CHOICES: "random(2)",
}

# Every string that reaches haproxy.cfg is checked against one of these, so no field value can
# add a line or a directive to the config.
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_NAMESERVER = re.compile(r"^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):\d{1,5}$")
_BIND_ADDRESS = re.compile(r"^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]|\*|)$")
_SOCKET_PATH = re.compile(r"^/[A-Za-z0-9_./-]+$")
_OWNER = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("tritonscale.render", "templates"),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    autoescape=False,
)


@dataclass(frozen=True)
class RouterOptions:
    """Where the router runs: in a cluster (defaults) or as a local process (tests, sandbox).

    `nameservers` empty means the pod's /etc/resolv.conf (the cluster DNS); `discovery_name`
    overrides the headless Service's DNS name; ports are where HAProxy listens.
    """

    nameservers: tuple[str, ...] = ()
    discovery_name: str | None = None
    bind_address: str = ""
    http_port: int = HTTP_PORT
    grpc_port: int = GRPC_PORT
    metrics_port: int = ROUTER_METRICS_PORT
    runtime_socket: str = f"{RUNTIME_DIR}/admin.sock"
    threads: int = 1
    max_connections: int = 4096
    control_port: int = ROUTER_CONTROL_PORT
    config_dir: str = CONFIG_DIR  # where haproxy.cfg and variants.map are


VARIANTS_MAP_FILE: Final = "variants.map"
SHARE_SCALE: Final = 10000  # shares go to the routers in ten-thousandths


@dataclass(frozen=True)
class RoutedVariant:
    """A variant as the router config names it."""

    key: str  # v0, v1, ...: the map key and the backends' suffix
    name: str
    http_port: int
    grpc_port: int


def routed_variants(service: InferenceService) -> tuple[RoutedVariant, ...]:
    return tuple(
        RoutedVariant(f"v{index}", variant.name, *variant_ports(index)[:2])
        for index, variant in enumerate(served_variants(service))
    )


def render_variants_map(service: InferenceService) -> str | None:
    """The map the routers start from: every variant's cut at 0 (the model only)."""
    variants = routed_variants(service)
    return "".join(f"{variant.key} 0\n" for variant in variants) if variants else None


def variant_cuts(shares: tuple[float, ...]) -> dict[str, int]:
    """The routers' cumulative cuts for the variants' shares (each request draws 0..9999 and goes
    to the first variant whose cut is above the draw)."""
    cuts, total = {}, 0.0
    for index, share in enumerate(shares):
        total += share
        cuts[f"v{index}"] = min(SHARE_SCALE, round(total * SHARE_SCALE))
    return cuts


def _variant_choice(variants: tuple[RoutedVariant, ...], variants_map: str) -> Callable[[str], str]:
    """The frontend lines that send each variant its share (for the HTTP or the gRPC backends)."""

    def choice(default_backend: str) -> str:
        lines = [
            "    # A share of the requests goes to each faster variant (spec.model.variants), drawn per",
            "    # request; the operator sets the shares at runtime (frontend control).",
            f"    http-request set-var(txn.variant_draw) rand({SHARE_SCALE})",
        ]
        lines += [
            f"    http-request set-var(txn.cut_{v.key}) str({v.key}),map_str_int({variants_map},0)"
            for v in variants
        ]
        for v in variants:
            within = f"{{ var(txn.variant_draw),sub(txn.cut_{v.key}) lt 0 }}"
            # Only while the variant has a server up: else its share goes to the model (a
            # variant still loading, or failing its checks, must not turn requests into 503s,
            # nor, the cuts being cumulative, fall through to the next variant's backend).
            lines += [
                f"    use_backend {default_backend}_{v.key} if {within} {{ nbsrv({default_backend}_{v.key}) gt 0 }}",
                f"    use_backend {default_backend} if {within}",
            ]
        return "\n".join(lines)

    return choice


def _checked(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.match(value):
        raise ValueError(f"refusing to render {what} {value!r} into haproxy.cfg")
    return value


MIN_SERVER_SLOTS = 32


def server_slots(service: InferenceService) -> int:
    """How many server slots each backend keeps: room for twice the most replicas there can be
    (a rollout's surge and spot stand-ins run beside them: a ready pod beyond the slots got no
    traffic), rounded up to a power of two and at least MIN_SERVER_SLOTS, so that scaling (by
    hand or by the autoscaler) leaves haproxy.cfg, and so the router pods, untouched. Empty
    slots cost no health checks: HAProxy keeps them in maintenance until DNS fills them."""
    spec = service.spec
    most = 2 * max(spec.autoscaling.max_replicas if spec.autoscaling else 1, spec.replicas, 1)
    return max(MIN_SERVER_SLOTS, 1 << (most - 1).bit_length())


def render_router_config(service: InferenceService, names: StackNames, options: RouterOptions) -> str:
    """haproxy.cfg for this InferenceService."""
    discovery_name = options.discovery_name or names.headless_dns_name
    for port in (options.http_port, options.grpc_port, options.metrics_port, options.control_port):
        if not 0 < port < 65536:
            raise ValueError(f"port {port} out of range")
    variants = routed_variants(service)
    variants_map = f"{_checked(options.config_dir, _SOCKET_PATH, 'config directory')}/{VARIANTS_MAP_FILE}"
    return _TEMPLATES.get_template("haproxy.cfg.j2").render(
        variants=variants,
        variants_map=variants_map,
        variant_choice=_variant_choice(variants, variants_map),
        control_port=int(options.control_port),
        owner=_checked(names.owner, _OWNER, "name"),
        namespace=_checked(names.namespace, _OWNER, "namespace"),
        nameservers=[_checked(ns, _NAMESERVER, "nameserver") for ns in options.nameservers],
        discovery_name=_checked(discovery_name, _DNS_NAME, "discovery name"),
        bind_address=_checked(options.bind_address, _BIND_ADDRESS, "bind address"),
        runtime_socket=_checked(options.runtime_socket, _SOCKET_PATH, "runtime socket"),
        balance=BALANCE_ALGORITHMS[service.spec.load_balancing.policy],
        timeout_seconds=int(service.spec.load_balancing.router.timeout_seconds),
        server_slots=server_slots(service),
        http_port=int(options.http_port),
        grpc_port=int(options.grpc_port),
        metrics_port=int(options.metrics_port),
        triton_http_port=HTTP_PORT,
        triton_grpc_port=GRPC_PORT,
        http_backend=HTTP_BACKEND,
        grpc_backend=GRPC_BACKEND,
        threads=int(options.threads),
        max_connections=int(options.max_connections),
    )


def config_hash(config: str) -> str:
    return hashlib.sha256(config.encode()).hexdigest()[:16]


def render_router_configmap(
    names: StackNames, config: str, variants_map: str | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": names.router_config,
            "namespace": names.namespace,
            "labels": names.common_labels(COMPONENT_ROUTER),
        },
        "data": {CONFIG_FILE: config, **({VARIANTS_MAP_FILE: variants_map} if variants_map else {})},
    }


def render_router_deployment(service: InferenceService, names: StackNames, config: str) -> dict[str, Any]:
    """HAProxy pods; the config hash in the template rolls them when haproxy.cfg changes."""
    router = service.spec.load_balancing.router
    selector = names.component_selector(COMPONENT_ROUTER)
    labels = names.common_labels(COMPONENT_ROUTER)
    # Routers hold every client connection: keep them off spot capacity, and (they need no
    # accelerator) off accelerator nodes.
    requirements = node_requirements(service.spec.capacity, None, spot=False)
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": restricted_pod_security(HAPROXY_UID),
        "terminationGracePeriodSeconds": grace_period_s(service),
        "topologySpreadConstraints": spread_constraints(selector),
        "containers": [
            {
                "name": "haproxy",
                "image": router.image,
                "command": ["haproxy", "-W", "-db", "-f", f"{CONFIG_DIR}/{CONFIG_FILE}"],
                "ports": [
                    {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
                    {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
                    {"name": "metrics", "containerPort": ROUTER_METRICS_PORT, "protocol": "TCP"},
                    *(
                        [{"name": "control", "containerPort": ROUTER_CONTROL_PORT, "protocol": "TCP"}]
                        if served_variants(service)
                        else []
                    ),
                ],
                "resources": container_resources(router.resources, {}, DEFAULT_ROUTER_REQUESTS),
                "readinessProbe": {
                    "httpGet": {"path": "/healthz", "port": "metrics"},
                    "periodSeconds": 2,
                    "failureThreshold": 2,
                },
                "livenessProbe": {
                    "httpGet": {"path": "/healthz", "port": "metrics"},
                    "periodSeconds": 10,
                    "failureThreshold": 3,
                },
                "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_S}}},
                "securityContext": {**restricted_container_security(), "readOnlyRootFilesystem": True},
                "volumeMounts": [
                    {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                    {"name": "runtime", "mountPath": RUNTIME_DIR},
                ],
            }
        ],
        "volumes": [
            {"name": "config", "configMap": {"name": names.router_config}},
            {"name": "runtime", "emptyDir": {}},
        ],
    }
    affinity = required_node_affinity(requirements, service.spec.capacity)
    if affinity is not None:
        pod_spec["affinity"] = affinity
    return deployment(
        name=names.router_deployment,
        namespace=names.namespace,
        labels=labels,
        selector=selector,
        replicas=router.replicas,
        max_surge=1,
        pod_spec=pod_spec,
        metrics_port=ROUTER_METRICS_PORT,
        annotations={CONFIG_HASH_ANNOTATION: config_hash(config)},
    )


def render_endpoint_service(names: StackNames) -> dict[str, Any]:
    """The Service clients call: HTTP 8000, gRPC 8001, router metrics 8404."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": names.endpoint_service,
            "namespace": names.namespace,
            "labels": names.common_labels(COMPONENT_ROUTER),
        },
        "spec": {
            "type": "ClusterIP",
            "selector": names.component_selector(COMPONENT_ROUTER),
            "ports": [
                {
                    "name": "http",
                    "port": HTTP_PORT,
                    "targetPort": "http",
                    "protocol": "TCP",
                    "appProtocol": "http",
                },
                {
                    "name": "grpc",
                    "port": GRPC_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "kubernetes.io/h2c",
                },
                {"name": "metrics", "port": ROUTER_METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }
