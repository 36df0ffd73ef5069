"""The chart's monitoring objects work in the sandbox: with the Prometheus Operator's CRDs
installed, ``helm install`` with podMonitors, serviceMonitor and prometheusRule on creates them,
and :class:`ClusterPrometheus` (the sandbox's stand-in for the operator) scrapes the pods they
select and loads the chart's rules, following changes.

The scraped pods are API objects on a Node nobody manages (no kwok annotation), so their status
is what the test writes: Running with a loopback pod IP where a tiny HTTP server in this process
serves ``/metrics``.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import shutil
import subprocess
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tritonscale.api.spec import MAX_VARIANTS
from tritonscale.render.variants import variant_annotation
from tritonscale_sandbox.cluster import Cluster
from tritonscale_sandbox.monitoring import ClusterPrometheus, install_monitoring_crds
from tritonscale_sandbox.net import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "tritonscale"
RELEASE = "monitoring"
NAMESPACE = "tritonscale-monitoring"
MODELS = "monitoring-models"
NODE = "loopback-monitoring-0"
POD_IP = "127.0.77.1"
# Intervals the schema allows, short so that targets are scraped within seconds.
MONITORING_VALUES = (
    *("--set", "monitoring.podMonitors.enabled=true", "--set", "monitoring.podMonitors.interval=1s"),
    *("--set", "monitoring.serviceMonitor.enabled=true", "--set", "monitoring.serviceMonitor.interval=1s"),
    *("--set", "monitoring.prometheusRule.enabled=true"),
)
TRITON_LABELS = {
    "app.kubernetes.io/managed-by": "tritonscale",
    "app.kubernetes.io/component": "triton",
    "app.kubernetes.io/instance": "monitoring-check",
}
# The chart's Service (and so its ServiceMonitor) selects the operator's pods by these.
OPERATOR_LABELS = {
    "app.kubernetes.io/name": "tritonscale",
    "app.kubernetes.io/instance": RELEASE,
    "app.kubernetes.io/component": "operator",
}
WAIT_S = 60.0


class _Metrics(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        found = self.path == "/metrics"
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        if found:
            self.wfile.write(b"# TYPE up_test gauge\nup_test 1\n")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _metrics_server() -> Generator[int, None, None]:
    """A /metrics endpoint on POD_IP (any 127/8 address is this host's)."""
    port = free_port(POD_IP)
    server = http.server.ThreadingHTTPServer((POD_IP, port), _Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def metrics_port() -> Generator[int, None, None]:
    with _metrics_server() as port:
        yield port


@pytest.fixture
def variant_metrics_port() -> Generator[int, None, None]:
    """Where a variant's tritonserver in the same pod serves its metrics."""
    with _metrics_server() as port:
        yield port


def _pod(
    name: str,
    namespace: str,
    labels: dict[str, str],
    port: int,
    variant_port: int | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    ports = [{"name": "metrics", "containerPort": port}, {"name": "other", "containerPort": 1}]
    if variant_port is not None:
        ports.append({"name": "v0-metrics", "containerPort": variant_port})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations or {},
        },
        "spec": {
            "nodeName": NODE,
            "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10", "ports": ports}],
        },
    }


def _run_on_loopback(cluster: Cluster, namespace: str, name: str) -> None:
    status = {
        "phase": "Running",
        "podIP": POD_IP,
        "podIPs": [{"ip": POD_IP}],
        "hostIP": "127.0.0.1",
        "conditions": [{"type": "Ready", "status": "True"}],
    }
    cluster.request(
        "PATCH",
        f"/api/v1/namespaces/{namespace}/pods/{name}/status",
        {"status": status},
        content_type="application/merge-patch+json",
    )


def _delete_pod(cluster: Cluster, namespace: str, name: str) -> None:
    # No kubelet confirms a graceful deletion on this node.
    cluster.kubectl(
        "delete", "pod", name, "-n", namespace, "--grace-period=0", "--force", "--ignore-not-found"
    )


def _up(prometheus: ClusterPrometheus, pool_prefix: str) -> list[dict[str, Any]]:
    return [
        t
        for t in prometheus.targets()
        if t["scrapePool"].startswith(pool_prefix)
        and t["health"] == "up"
        and t["labels"]["instance"].startswith(POD_IP)
    ]


def test_prometheus_scrapes_pods_through_the_charts_monitors_and_loads_its_rules(
    cluster: Cluster, tmp_path: Path, metrics_port: int, variant_metrics_port: int
) -> None:
    install_monitoring_crds(cluster)
    cluster.helm(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--create-namespace",
        *MONITORING_VALUES,
        "--wait",
        "--timeout",
        "2m",
    )
    try:
        cluster.apply_yaml({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})
        cluster.create_namespace(MODELS)
        cluster.apply_yaml(
            [
                # Serving a faster variant: its tritonserver's metrics on port v0-metrics, its
                # name in the annotation the operator renders.
                _pod(
                    "triton-0",
                    MODELS,
                    TRITON_LABELS,
                    metrics_port,
                    variant_port=variant_metrics_port,
                    annotations={variant_annotation(0): "bert-int8"},
                ),
                _pod("operator-0", NAMESPACE, OPERATOR_LABELS, metrics_port),
            ]
        )
        _run_on_loopback(cluster, MODELS, "triton-0")
        _run_on_loopback(cluster, NAMESPACE, "operator-0")

        with ClusterPrometheus(
            cluster, tmp_path / "prometheus", scrape_interval_s=1, sync_interval_s=1
        ) as prometheus:
            promtool = shutil.which("promtool")
            assert promtool is not None
            checked = subprocess.run(
                [promtool, "check", "config", str(prometheus.config_path)],
                capture_output=True,
                text=True,
                check=False,
            )
            assert checked.returncode == 0, checked.stdout + checked.stderr

            # One endpoint for the model's metrics and one for each variant the API allows.
            created = cluster.kubectl(
                "get", "podmonitor", f"{RELEASE}-tritonscale-triton", "-n", NAMESPACE, "-o", "json"
            )
            endpoints = [e["port"] for e in json.loads(created.stdout)["spec"]["podMetricsEndpoints"]]
            assert endpoints == ["metrics", *(f"v{index}-metrics" for index in range(MAX_VARIANTS))]

            pod_monitor_job = f"podMonitor/{NAMESPACE}/{RELEASE}-tritonscale-triton/0"
            [triton] = cluster.wait_until(
                lambda: _up(prometheus, pod_monitor_job), "the triton pod's target up", timeout_s=WAIT_S
            )
            assert triton["labels"] == {
                "namespace": MODELS,
                "pod": "triton-0",
                "container": "main",
                "endpoint": "metrics",
                "job": f"{NAMESPACE}/{RELEASE}-tritonscale-triton",
                "instance": f"{POD_IP}:{metrics_port}",
                "inferenceservice": "monitoring-check",
            }
            # The variant's series carry its name, so the operator's queries (variant="") and
            # dashboards tell them from the model's.
            [variant] = cluster.wait_until(
                lambda: _up(prometheus, f"podMonitor/{NAMESPACE}/{RELEASE}-tritonscale-triton/1"),
                "the variant's metrics target up",
                timeout_s=WAIT_S,
            )
            assert variant["labels"] == {
                **triton["labels"],
                "endpoint": "v0-metrics",
                "instance": f"{POD_IP}:{variant_metrics_port}",
                "variant": "bert-int8",
            }
            [operator] = cluster.wait_until(
                lambda: _up(prometheus, f"serviceMonitor/{NAMESPACE}/{RELEASE}-tritonscale/0/"),
                "the operator pod's target up",
                timeout_s=WAIT_S,
            )
            assert operator["labels"] == {
                "namespace": NAMESPACE,
                "service": f"{RELEASE}-tritonscale",
                "pod": "operator-0",
                "container": "main",
                "endpoint": "metrics",
                "job": f"{RELEASE}-tritonscale",
                "instance": f"{POD_IP}:{metrics_port}",
            }
            series = cluster.wait_until(
                lambda: prometheus.query(f'up_test{{namespace="{MODELS}"}}'),
                "the scraped series",
                timeout_s=WAIT_S,
            )
            assert series[0]["metric"]["inferenceservice"] == "monitoring-check"

            chart_groups = yaml.safe_load((CHART / "files" / "rules.yaml").read_text())["groups"]
            loaded = prometheus.rule_groups()
            assert sorted(g["name"] for g in loaded) == sorted(g["name"] for g in chart_groups)
            assert sum(len(g["rules"]) for g in loaded) == sum(len(g["rules"]) for g in chart_groups)

            # Changes are followed: a deleted pod's target goes, rules switched off are unloaded.
            _delete_pod(cluster, MODELS, "triton-0")
            cluster.wait_until(
                lambda: not [t for t in prometheus.targets() if t["labels"].get("pod") == "triton-0"],
                "the deleted pod's target to go",
                timeout_s=WAIT_S,
            )
            cluster.helm(
                "upgrade",
                RELEASE,
                str(CHART),
                "--namespace",
                NAMESPACE,
                *MONITORING_VALUES,
                "--set",
                "monitoring.prometheusRule.enabled=false",
            )
            cluster.wait_until(
                lambda: not prometheus.rule_groups(), "the rules to be unloaded", timeout_s=WAIT_S
            )
            assert prometheus.reloads >= 1
            assert "sync failed" not in prometheus.sync_log_path.read_text()
    finally:
        _delete_pod(cluster, MODELS, "triton-0")
        _delete_pod(cluster, NAMESPACE, "operator-0")
        cluster.kubectl("delete", "node", NODE, "--ignore-not-found")
        cluster.helm("uninstall", RELEASE, "--namespace", NAMESPACE, check=False)
        cluster.kubectl("delete", "namespace", NAMESPACE, MODELS, "--ignore-not-found", "--wait=false")
