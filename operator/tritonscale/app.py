"""Start the operator: kopf with our handlers, the shared clients in memo, and /metrics."""

from __future__ import annotations

import asyncio
import logging
import threading

import kopf
from prometheus_client import start_http_server

from tritonscale.api.resource import InferenceService
from tritonscale.api.spec import MetricsSourceKind
from tritonscale.clients.kube import KubeClient
from tritonscale.clients.observations import (
    KubernetesEndpoints,
    PrometheusSource,
    TritonModelConfigs,
    TritonSource,
    UnavailableSource,
)
from tritonscale.config import OperatorConfig
from tritonscale.handlers import watch as _watch  # (importing registers the watch handlers)
from tritonscale.handlers.operator import (  # (importing registers the handlers)
    resync_job,
    status_recheck_job,
)
from tritonscale.metrics import SERVICES, TICK_LATENESS
from tritonscale.reconcilers.autoscale import AutoscaleReconciler, ObservationSource
from tritonscale.reconcilers.scheduler import Scheduler
from tritonscale.reconcilers.stack import StackReconciler
from tritonscale.render.stack import RenderOptions

SCHEDULER_WORKERS = 2  # threads of the resync and of the status-recheck schedulers, each
UNSETTLED_RECHECK_S = 15.0  # how soon a stack with replicas missing is looked at again


class SourceChooser:
    """Picks each InferenceService's observation source; sources are shared and long-lived."""

    def __init__(self, config: OperatorConfig, kube: KubeClient) -> None:
        self.config = config
        self.triton = TritonSource(KubernetesEndpoints(kube.core))
        self.prometheus: dict[str, PrometheusSource] = {}

    def __call__(self, service: InferenceService) -> tuple[ObservationSource, str]:
        assert service.spec.autoscaling is not None
        metrics = service.spec.autoscaling.metrics
        url = metrics.prometheus_url or self.config.prometheus_url
        if metrics.source == MetricsSourceKind.TRITON or (
            metrics.source == MetricsSourceKind.AUTO and not url
        ):
            if not self.config.read_triton_pods:
                return UnavailableSource("reading Triton pods is switched off for this operator"), "triton"
            return self.triton, "triton"
        if url is None:
            return (
                UnavailableSource(
                    "no Prometheus URL: set spec.autoscaling.metrics.prometheusURL or --prometheus-url"
                ),
                "prometheus",
            )
        if url not in self.prometheus:
            self.prometheus[url] = PrometheusSource(url, window=self.config.prometheus_window)
        return self.prometheus[url], f"prometheus {url}"


def build_memo(config: OperatorConfig) -> kopf.Memo:
    """Clients and reconcilers shared by every handler."""
    kube = KubeClient.connect(
        config.kubeconfig,
        connections=config.reconcile_workers + config.autoscale_workers + 2 * SCHEDULER_WORKERS + 4,
    )
    memo = kopf.Memo()
    memo.config = config
    memo.kube = kube
    memo.reconciler = StackReconciler(
        kube,
        RenderOptions(cluster_domain=config.cluster_domain),
        on_unsettled=lambda namespace, name: memo.status_scheduler.run_within(
            namespace, name, UNSETTLED_RECHECK_S
        ),
        troubled_nodes=lambda: dict(memo.troubled_nodes),  # a copy: the watch changes it
    )
    memo.troubled_nodes = {}  # node name -> why its pods are about to go (handlers.watch)
    memo.bodies = {}  # (namespace, name) -> the newest InferenceService the watch delivered
    memo.autoscaler = AutoscaleReconciler(
        kube,
        memo.reconciler,
        SourceChooser(config, kube),
        read=lambda ns, name: memo.bodies.get((ns, name)),
        read_model_configs=TritonModelConfigs()
        if config.read_triton_pods
        else (lambda target, hosts: "reading Triton pods is switched off for this operator"),
    )
    memo.autoscale_scheduler = Scheduler(
        memo.autoscaler.tick,
        workers=config.autoscale_workers,
        name="autoscale",
        lateness=TICK_LATENESS.observe,
    )
    memo.resync_scheduler = Scheduler(resync_job(memo.reconciler), workers=SCHEDULER_WORKERS, name="resync")
    memo.status_scheduler = Scheduler(
        status_recheck_job(memo.reconciler), workers=SCHEDULER_WORKERS, name="status"
    )
    memo.schedulers = (memo.autoscale_scheduler, memo.resync_scheduler, memo.status_scheduler)
    # /metrics reads every service's newest copy; list() of a dict's values is atomic under the GIL.
    SERVICES.source = lambda: list(memo.bodies.values())
    return memo


def run_operator(
    config: OperatorConfig,
    stop_flag: threading.Event | None = None,
    ready_flag: threading.Event | None = None,
) -> None:
    """Run until stopped (SIGINT/SIGTERM, or `stop_flag` when run in a thread by tests)."""
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=config.listen_address)
    host = f"[{config.listen_address}]" if ":" in config.listen_address else config.listen_address
    liveness = f"http://{host}:{config.health_port}/healthz" if config.health_port else None
    if stop_flag is not None:
        asyncio.set_event_loop(asyncio.new_event_loop())
    quiet = logging.getLogger("kopf.objects")
    if not any(isinstance(f, _watch.QuietWatchHandlers) for f in quiet.filters):
        quiet.addFilter(_watch.QuietWatchHandlers())
    kopf.run(
        standalone=True,
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        liveness_endpoint=liveness,
        memo=build_memo(config),
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )
