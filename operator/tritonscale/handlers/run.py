"""Start the operator: kopf with our handlers, the shared clients in memo, and /metrics."""

from __future__ import annotations

import asyncio
import threading

import kopf
from prometheus_client import start_http_server

from tritonscale.clients.kube import KubeClient
from tritonscale.config import OperatorConfig
from tritonscale.handlers import operator as _handlers  # noqa: F401  (registers the handlers)
from tritonscale.reconcilers.stack import StackReconciler
from tritonscale.render.stack import RenderOptions


def build_memo(config: OperatorConfig) -> kopf.Memo:
    """Clients and reconcilers shared by every handler."""
    kube = KubeClient.connect(config.kubeconfig)
    memo = kopf.Memo()
    memo.config = config
    memo.kube = kube
    memo.reconciler = StackReconciler(kube, RenderOptions(cluster_domain=config.cluster_domain))
    return memo


def run_operator(
    config: OperatorConfig,
    stop_flag: threading.Event | None = None,
    ready_flag: threading.Event | None = None,
) -> None:
    """Run until stopped (SIGINT/SIGTERM, or `stop_flag` when run in a thread by tests)."""
    if config.metrics_port:
        start_http_server(config.metrics_port)
    liveness = f"http://0.0.0.0:{config.health_port}/healthz" if config.health_port else None
    if stop_flag is not None:
        asyncio.set_event_loop(asyncio.new_event_loop())
    kopf.run(
        standalone=True,
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        liveness_endpoint=liveness,
        memo=build_memo(config),
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )
