"""Triton Deployments (one per capacity pool), the headless Service and the Triton PDB."""

from __future__ import annotations

import math
from typing import Any, Final

from tritonscale.api.resource import InferenceService
from tritonscale.api.spec import DEFAULT_TRITON_REQUESTS, STARTUP_PROBE_PERIOD_S, EnvVar, KeyReference
from tritonscale.ports import GRPC_PORT, HTTP_PORT, METRICS_PORT, variant_ports
from tritonscale.render.names import (
    COMPONENT_TRITON,
    LABEL_POOL,
    POOL_ON_DEMAND,
    POOL_SPOT,
    StackNames,
)
from tritonscale.render.pods import (
    PRE_STOP_S,
    container_resources,
    deployment,
    grace_period_s,
    restricted_container_security,
    restricted_pod_security,
    spread_constraints,
)
from tritonscale.render.presets import (
    accelerator_tolerations,
    node_requirements,
    pool_tolerations,
    required_node_affinity,
)
from tritonscale.render.variants import launcher_script, served_variants, variant_annotations, variant_args

TRITON_UID: Final = 1000  # the `triton-server` user of NVIDIA's images


DEFAULT_SUMMARY_QUANTILES = ((0.5, 0.05), (0.9, 0.01), (0.95, 0.001), (0.99, 0.001))


def env_var(var: EnvVar) -> dict[str, Any]:
    """The container's variable: its value, or the Secret's or ConfigMap's key the kubelet reads."""
    if var.value_from is None:
        return {"name": var.name, "value": var.value}
    source = var.value_from
    kind, ref = (
        ("secretKeyRef", source.secret_key_ref)
        if source.secret_key_ref is not None
        else ("configMapKeyRef", source.config_map_key_ref)
    )
    assert isinstance(ref, KeyReference)  # the model's rule: exactly one of the two
    selector: dict[str, Any] = {"name": ref.name, "key": ref.key}
    if ref.optional:
        selector["optional"] = True
    return {"name": var.name, "valueFrom": {kind: selector}}


def summary_quantiles(service: InferenceService) -> str:
    """Triton's latency summary quantiles (quantile:error pairs), with the objective's percentile
    among them so the autoscaler can read it directly."""
    quantiles = dict(DEFAULT_SUMMARY_QUANTILES)
    if service.spec.autoscaling is not None:
        quantiles.setdefault(round(service.spec.autoscaling.latency.percentile / 100, 6), 0.001)
    return ",".join(f"{q:g}:{e:g}" for q, e in sorted(quantiles.items()))


def _common_args(service: InferenceService) -> list[str]:
    """The flags every tritonserver of a replica takes: metrics, readiness, then the user's."""
    return [
        "--allow-metrics=true",
        "--metrics-config=summary_latencies=true",
        f"--metrics-config=summary_quantiles={summary_quantiles(service)}",
        "--strict-readiness=true",
        # A stop lets the requests in flight finish, up to the longest one may take.
        f"--exit-timeout-secs={service.spec.load_balancing.router.timeout_seconds}",
        *service.spec.triton.args,
    ]


def triton_args(service: InferenceService) -> list[str]:
    """tritonserver's command line: the managed flags, then the user's."""
    return [
        "tritonserver",
        f"--model-repository={service.spec.model.repository}",
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        f"--metrics-port={METRICS_PORT}",
        *_common_args(service),
    ]


MODEL_DOWNLOAD_DIR: Final = "/tmp"  # where tritonserver downloads s3://, gs:// and as:// models


def _http_probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def render_triton_deployment(
    service: InferenceService, names: StackNames, pool: str, replicas: int
) -> dict[str, Any]:
    """The Deployment of one pool's Triton replicas (`pool` is on-demand or spot)."""
    spot = pool == POOL_SPOT
    spec = service.spec
    selector = names.pool_selector(pool)
    labels = {**names.common_labels(COMPONENT_TRITON), LABEL_POOL: pool}
    extra_limits = {spec.accelerator.resource: spec.accelerator.count} if spec.accelerator else {}
    container: dict[str, Any] = {
        "name": "triton",
        "image": spec.triton.image,
        "args": triton_args(service),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "resources": container_resources(spec.triton.resources, extra_limits, DEFAULT_TRITON_REQUESTS),
        # Models can take minutes to load: the startup probe holds liveness off until then.
        "startupProbe": _http_probe(
            "/v2/health/live",
            period=STARTUP_PROBE_PERIOD_S,
            failures=math.ceil(spec.triton.startup_timeout_seconds / STARTUP_PROBE_PERIOD_S),
        ),
        "livenessProbe": _http_probe("/v2/health/live", period=10, failures=6),
        "readinessProbe": _http_probe("/v2/health/ready", period=2, failures=2),
        # A pause before SIGTERM lets routers drop the pod before it stops accepting (DNS: the
        # EndpointSlice, a 5 s TTL, the router's 1 s re-resolution).
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_S}}},
        "securityContext": restricted_container_security(),
        "volumeMounts": [
            {"name": "shm", "mountPath": "/dev/shm"},
            {"name": "model-download", "mountPath": MODEL_DOWNLOAD_DIR},
        ],
    }
    variants = served_variants(service)
    if variants:
        # One container for the model's tritonserver and one per variant: they share its accelerator.
        common = _common_args(service)
        script = launcher_script(
            service, triton_args(service), [variant_args(service, i, common) for i in range(len(variants))]
        )
        container["command"] = ["/bin/bash", "-c", script]
        container["args"] = []
        for index in range(len(variants)):
            http, grpc, metrics = variant_ports(index)
            container["ports"] += [
                {"name": f"v{index}-http", "containerPort": http, "protocol": "TCP"},
                {"name": f"v{index}-grpc", "containerPort": grpc, "protocol": "TCP"},
                {"name": f"v{index}-metrics", "containerPort": metrics, "protocol": "TCP"},
            ]
    if spec.triton.image_pull_policy is not None:
        container["imagePullPolicy"] = spec.triton.image_pull_policy.value
    if spec.triton.env:
        container["env"] = [env_var(var) for var in spec.triton.env]

    pod_spec: dict[str, Any] = {
        "containers": [container],
        "securityContext": restricted_pod_security(TRITON_UID),
        "terminationGracePeriodSeconds": grace_period_s(service),
        "tolerations": pool_tolerations(spec.capacity, spot)
        + accelerator_tolerations(spec.capacity, spec.accelerator),
        "topologySpreadConstraints": spread_constraints(names.component_selector(COMPONENT_TRITON)),
        # The Python backend exchanges tensors through shared memory; the default 64 MiB is too small.
        # Models from object storage are downloaded here, counted against ephemeral-storage.
        "volumes": [
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": str(spec.triton.shared_memory)}},
            {"name": "model-download", "emptyDir": {}},
        ],
    }
    if spec.triton.service_account_name:
        pod_spec["serviceAccountName"] = spec.triton.service_account_name
    else:
        pod_spec["automountServiceAccountToken"] = False
    # CPU-only replicas are kept off accelerator nodes, accelerator replicas on their product.
    affinity = required_node_affinity(
        node_requirements(spec.capacity, spec.accelerator, spot), None if spot else spec.capacity
    )
    if affinity is not None:
        pod_spec["affinity"] = affinity
    if not pod_spec["tolerations"]:
        del pod_spec["tolerations"]

    return deployment(
        name=names.spot_deployment if spot else names.on_demand_deployment,
        namespace=names.namespace,
        labels=labels,
        selector=selector,
        replicas=replicas,
        max_surge="25%",
        pod_spec=pod_spec,
        metrics_port=METRICS_PORT,
        annotations=variant_annotations(service),
    )


def render_headless_service(names: StackNames) -> dict[str, Any]:
    """Resolves to every ready Triton pod, so routers discover replicas by DNS."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": names.headless_service,
            "namespace": names.namespace,
            "labels": names.common_labels(COMPONENT_TRITON),
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": False,
            "selector": names.component_selector(COMPONENT_TRITON),
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }


def render_disruption_budget(
    names: StackNames, name: str, component: str, desired: int | None = None
) -> dict[str, Any]:
    """Node drains take one replica of the component at a time.

    With `desired` (the Triton replicas asked for) the budget is `minAvailable: desired - 1`
    rather than `maxUnavailable: 1`: the same single replica in normal times, but it counts
    against what was asked for, not against every pod that exists, so spot pods on a node being
    interrupted can all be evicted once on-demand stand-ins for them are ready (maxUnavailable
    counts the stand-ins as expected pods too and lets one go at a time, while the evicted
    pods' replacements cannot be placed)."""
    budget: dict[str, int] = (
        {"maxUnavailable": 1} if desired is None else {"minAvailable": max(desired - 1, 0)}
    )
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": names.namespace, "labels": names.common_labels(component)},
        "spec": {
            **budget,
            "selector": {"matchLabels": names.component_selector(component)},
            # A crash-looping pod must not block a drain forever.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


__all__ = [
    "GRPC_PORT",
    "HTTP_PORT",
    "METRICS_PORT",
    "POOL_ON_DEMAND",
    "POOL_SPOT",
    "render_disruption_budget",
    "render_headless_service",
    "render_triton_deployment",
]
