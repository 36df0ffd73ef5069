"""Start the operator: kopf with our handlers, the shared clients in memo, and /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator

import kopf
from prometheus_client import start_http_server

from tritonscale.api.resource import InferenceService
from tritonscale.api.spec import MetricsSourceKind
from tritonscale.clients.kube import KubeClient
from tritonscale.clients.leader import Leadership
from tritonscale.clients.observations import (
    KubernetesEndpoints,
    PrometheusSource,
    TritonModelConfigs,
    TritonSource,
    UnavailableSource,
    url_host,
)
from tritonscale.clients.pod_watch import ManagedPods
from tritonscale.clients.router import HaproxyStats, set_variant_cuts
from tritonscale.config import OperatorConfig
from tritonscale.handlers import watch as _watch  # (importing registers the watch handlers)
from tritonscale.handlers.operator import (  # (importing registers the handlers)
    resync_job,
    status_recheck_job,
)
from tritonscale.metrics import LEADER, SERVICES, TICK_LATENESS
from tritonscale.reconcilers.autoscale import AutoscaleReconciler, ObservationSource
from tritonscale.reconcilers.scheduler import Scheduler
from tritonscale.reconcilers.stack import StackReconciler
from tritonscale.render.stack import RenderOptions

log = logging.getLogger(__name__)
SCHEDULER_WORKERS = 2  # threads of the resync and of the status-recheck schedulers, each
UNSETTLED_RECHECK_S = 15.0  # how soon a stack with replicas missing is looked at again
LOST_LEADERSHIP_EXIT = 3  # the exit code of a leader that lost its Lease


class ListenError(Exception):
    """A port the operator serves on cannot be bound: `flag` names the option that set it."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(message)
        self.flag = flag


def _listen_check(address: str, port: int, flag: str, *, dual_stack: bool) -> None:
    """Refuse at start a port that is taken or an address this host lacks (the health server
    binds later, inside kopf, where the failure would be a traceback). Every address the name
    gives is tried, as the servers bind them; an IPv6 one as the server will bind it:
    prometheus_client's serves IPv4 on it too, asyncio's (kopf's) IPv6 only."""
    try:
        for family, kind, protocol, _, where in socket.getaddrinfo(
            address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            with socket.socket(family, kind, protocol) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual_stack else 1)
                probe.bind(where)
    except OSError as error:
        raise ListenError(flag, f"cannot listen on {address}:{port}: {error}") from None


class SourceChooser:
    """Picks each InferenceService's observation source; sources are shared and long-lived."""

    def __init__(self, config: OperatorConfig, kube: KubeClient, pods: ManagedPods | None = None) -> None:
        self.config = config
        self.triton = TritonSource(KubernetesEndpoints(kube.core, pods))
        self.prometheus: dict[str, PrometheusSource] = {}

    def __call__(self, service: InferenceService) -> tuple[ObservationSource, str]:
        assert service.spec.autoscaling is not None
        metrics = service.spec.autoscaling.metrics
        url = metrics.prometheus_url or self.config.prometheus_url
        # A PromQL query asks for Prometheus: without a URL, `auto` says so rather than
        # dropping the query for Triton's statistics.
        queries = metrics.latency_query is not None or metrics.rate_query is not None
        if metrics.source == MetricsSourceKind.TRITON or (
            metrics.source == MetricsSourceKind.AUTO and not url and not queries
        ):
            if not self.config.read_triton_pods:
                return UnavailableSource("reading Triton pods is switched off for this operator"), "triton"
            return self.triton, "triton"
        if url is None:
            return (
                UnavailableSource(
                    "no Prometheus URL"
                    + (" for spec.autoscaling.metrics' queries" if queries else "")
                    + ": set spec.autoscaling.metrics.prometheusURL or --prometheus-url"
                ),
                "prometheus",
            )
        if url not in self.prometheus:
            self.prometheus[url] = PrometheusSource(
                url,
                window=self.config.prometheus_window,
                ca_file=self.config.prometheus_ca_file,
                connections=self.config.autoscale_workers,
            )
        return self.prometheus[url], f"prometheus {url}"


def connect(config: OperatorConfig) -> KubeClient:
    return KubeClient.connect(
        config.kubeconfig,
        # One for each thread that may call at once, and one held open by each pod watch.
        connections=config.reconcile_workers
        + config.autoscale_workers
        + 2 * SCHEDULER_WORKERS
        + 4
        + max(1, len(config.namespaces)),
    )


def build_memo(config: OperatorConfig, kube: KubeClient | None = None) -> kopf.Memo:
    """Clients and reconcilers shared by every handler."""
    kube = kube or connect(config)
    memo = kopf.Memo()
    memo.config = config
    memo.kube = kube
    memo.stopping = threading.Event()  # raised at a stop: reconciles not yet started return at once
    # The routers' and Triton pods' addresses and starts from one watch (started with the
    # schedulers), rather than a list for each read.
    memo.pods = ManagedPods(kube.core, config.namespaces)
    memo.reconciler = StackReconciler(
        kube,
        RenderOptions(cluster_domain=config.cluster_domain, network=config.network_policies),
        on_unsettled=lambda namespace, name: memo.status_scheduler.run_within(
            namespace, name, UNSETTLED_RECHECK_S
        ),
        troubled_nodes=lambda: dict(memo.troubled_nodes),  # a copy: the watch changes it
        watched_pods=memo.pods.stack_pods,
    )
    memo.troubled_nodes = {}  # node name -> why its pods are about to go (handlers.watch)
    memo.bodies = {}  # (namespace, name) -> the newest InferenceService the watch delivered
    memo.autoscaler = AutoscaleReconciler(
        kube,
        memo.reconciler,
        SourceChooser(config, kube, memo.pods),
        read=lambda ns, name: memo.bodies.get((ns, name)),
        read_model_configs=TritonModelConfigs() if config.read_triton_pods else None,
        read_router=HaproxyStats() if config.read_routers else None,
        on_surge=lambda namespace, name: memo.autoscale_scheduler.run_within(namespace, name, 0.0),
        # The variants' shares go to the routers it reads (a service without variants sets none).
        set_router_cuts=set_variant_cuts if config.read_routers else None,
        pod_addresses=memo.pods.ready_addresses,
        starts_and_addresses=memo.pods.starts_and_addresses,
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
    # The routers' counts every 2 s: its own threads, so reading them never delays a tick.
    memo.router_scheduler = Scheduler(memo.autoscaler.router_tick, workers=SCHEDULER_WORKERS, name="router")
    memo.schedulers = (
        memo.autoscale_scheduler,
        memo.router_scheduler,
        memo.resync_scheduler,
        memo.status_scheduler,
    )
    # /metrics reads every service's newest copy; list() of a dict's values is atomic under the GIL.
    SERVICES.source = lambda: list(memo.bodies.values())
    return memo


def run_operator(
    config: OperatorConfig,
    stop_flag: threading.Event | None = None,
    ready_flag: threading.Event | None = None,
) -> None:
    """Run until stopped (SIGINT/SIGTERM, or `stop_flag` when run in a thread by tests).

    With a leader-election namespace, first wait as a standby (healthy, writing nothing) until
    this replica holds the Lease; a leader that loses it exits at once."""
    if config.health_port:
        _listen_check(config.listen_address, config.health_port, "--health-port", dual_stack=False)
    if config.metrics_port:
        _listen_check(config.listen_address, config.metrics_port, "--metrics-port", dual_stack=True)
        start_http_server(config.metrics_port, addr=config.listen_address)
    liveness = (
        f"http://{url_host(config.listen_address)}:{config.health_port}/healthz"
        if config.health_port
        else None
    )
    kube = connect(config)
    leadership = None
    if config.leader_election_namespace:
        leadership = Leadership(
            kube,
            config.leader_election_namespace,
            config.identity or default_identity(),
            _exit_now,
            name=config.leader_election_name,
        )
        with standby_health(config):
            if not leadership.wait(stop_flag):
                return
    LEADER.set(1)  # it writes from here on: as the Lease holder, or as the only replica
    if stop_flag is not None:
        asyncio.set_event_loop(asyncio.new_event_loop())
    quiet = logging.getLogger("kopf.objects")
    if not any(isinstance(f, _watch.QuietWatchHandlers) for f in quiet.filters):
        quiet.addFilter(_watch.QuietWatchHandlers())
    memo = build_memo(config, kube)
    if stop_flag is not None:
        memo.stopping = stop_flag
    try:
        _run_kopf(config, memo, liveness, ready_flag)
    finally:
        LEADER.set(0)
        # kopf returns once its own handlers are done; a scheduler's job may still run (a stop
        # waits STOP_WAIT_S for them). Released while one could write, a standby could lead
        # beside it: then the Lease is left to expire instead.
        writing = sum(scheduler.busy for scheduler in memo.schedulers)
        if leadership is not None and writing:
            log.warning(
                "not releasing Lease %s/%s: %d jobs still running; a standby leads once it expires",
                leadership.namespace,
                leadership.name,
                writing,
            )
        elif leadership is not None:
            leadership.release()


def _run_kopf(
    config: OperatorConfig, memo: kopf.Memo, liveness: str | None, ready_flag: threading.Event | None
) -> None:
    """kopf.run, except that SIGTERM and SIGINT also raise memo.stopping, which reconciles not
    yet started read to return at once. kopf runs to its end every reconcile it has handed its
    executor: at a start it hands over every service's resume, and a stop then (a rolling update)
    lasted as long as the backlog (120 services in the e2e test: 9.5 s; a cold start of 300 on
    a loaded control plane: minutes, past the pod's grace period)."""
    stopping: threading.Event = memo.stopping

    def on_signal(signum: signal.Signals) -> None:
        log.info("%s received: stopping; reconciles not yet started are skipped", signum.name)
        stopping.set()

    async def serve() -> None:
        before = asyncio.all_tasks()
        tasks = await kopf.spawn_tasks(
            standalone=True,
            clusterwide=not config.namespaces,
            namespaces=config.namespaces,
            liveness_endpoint=liveness,
            memo=memo,
            stop_flag=stopping,
            ready_flag=ready_flag,
        )
        if threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, on_signal, signum)  # in place of kopf's own
        try:
            await kopf.run_tasks(tasks, ignored=before)
        finally:
            stopping.set()  # also ends kopf's thread that waits for the flag

    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(serve())


def default_identity() -> str:
    """The pod's name (its hostname in a cluster) and the process, unique among replicas."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{os.getpid()}"


def _exit_now() -> None:
    """A leader that lost its Lease stops every write at once: no clean shutdown, which would
    let handlers finish their writes while a standby may already lead."""
    logging.shutdown()
    os._exit(LOST_LEADERSHIP_EXIT)


class _StandbyHealth(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = self.path == "/healthz"
        body = b"standby: waiting for the leader Lease\n" if ok else b"not found\n"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # probes every few seconds
        pass


@contextlib.contextmanager
def standby_health(config: OperatorConfig) -> Iterator[None]:
    """Answer liveness probes while standing by, on the port kopf's probe takes over after."""
    if not config.health_port:
        yield
        return

    class Server(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in config.listen_address else socket.AF_INET

    server = Server((config.listen_address, config.health_port), _StandbyHealth)
    thread = threading.Thread(target=server.serve_forever, name="standby-health", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
