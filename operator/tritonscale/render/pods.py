"""What every Deployment the operator renders shares: the Deployment skeleton, resources,
the Pod Security `restricted` settings and spreading."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from tritonscale.api.resource import InferenceService
from tritonscale.api.spec import ResourceRequirements

ZONE_KEY: Final = "topology.kubernetes.io/zone"
HOSTNAME_KEY: Final = "kubernetes.io/hostname"
# Triton and router pods pause this long before their stop signal, so that routers (DNS: the
# EndpointSlice, a 5 s TTL, a 1 s re-resolution) and kube-proxy drop them while they still serve.
PRE_STOP_S: Final = 10
STOP_MARGIN_S: Final = 5


def grace_period_s(service: InferenceService) -> int:
    """A stopping Triton or router pod's grace period: the pause, then the longest a request in
    flight may take (spec.loadBalancing.router.timeoutSeconds), and a margin; a fixed 30 s killed
    every request still running 25 s in at each rollout, scale-down, drain or eviction."""
    return PRE_STOP_S + service.spec.load_balancing.router.timeout_seconds + STOP_MARGIN_S


def deployment(
    *,
    name: str,
    namespace: str,
    labels: dict[str, str],
    selector: dict[str, str],
    replicas: int,
    max_surge: int | str,
    pod_spec: dict[str, Any],
    metrics_port: int,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A Deployment whose pods Prometheus scrapes on `metrics_port`."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector},
            # Never drop ready capacity during a rollout: surge first, then retire.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": max_surge, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        **(annotations or {}),
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(metrics_port),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def container_resources(
    resources: ResourceRequirements, extra_limits: dict[str, int], defaults: Mapping[str, str]
) -> dict[str, Any]:
    """Pod-spec resources; extended resources (accelerators) must appear in limits. A resource
    in `defaults` that the spec names neither in requests nor in limits is requested at its
    default (a limit alone already sets the request)."""
    requests = {key: str(value) for key, value in sorted(resources.requests.items())}
    limits = {key: str(value) for key, value in sorted(resources.limits.items())}
    for key, value in defaults.items():
        if key not in requests and key not in limits:
            requests[key] = value
    requests = dict(sorted(requests.items()))
    for key, count in extra_limits.items():
        limits[key] = str(count)
        requests[key] = str(count)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def restricted_container_security() -> dict[str, Any]:
    """What the Pod Security `restricted` level asks of every container."""
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def restricted_pod_security(uid: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def spread_constraints(selector: dict[str, str]) -> list[dict[str, Any]]:
    """Spread replicas over zones and nodes when possible, without blocking scheduling."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector},
        }
        for key in (ZONE_KEY, HOSTNAME_KEY)
    ]
