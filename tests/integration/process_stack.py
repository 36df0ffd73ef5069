"""One InferenceService's stack on real local processes, for integration tests: real
tritonservers (started and stopped as the reconciler applies replica counts), dnsmasq answering
for the headless name with the ready ones, the real HAProxy router rendered for the service, and
a real Prometheus scraping every replica and the router with the labels a cluster's PodMonitors
give them. Only the Kubernetes API is replaced, by ProcessBackedCluster."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.builders import make_inference_service
from tritonscale.api.resource import parse_inference_service
from tritonscale.clients.observations import PrometheusSource
from tritonscale.clients.router import HaproxyStats, set_variant_cuts
from tritonscale.ports import variant_ports
from tritonscale.reconcilers.autoscale import AutoscaleReconciler
from tritonscale.reconcilers.stack import StackReconciler
from tritonscale.render.names import COMPONENT_ROUTER, StackNames
from tritonscale_sandbox.local_stack import ProcessBackedCluster
from tritonscale_sandbox.prometheus import LocalPrometheus, ScrapeTarget
from tritonscale_sandbox.router import DnsServer, LocalRouter
from tritonscale_sandbox.triton import Companion, SimulatedModel, TritonInstall, TritonPool, model_repository


def bench_simulated(url: str, *options: str) -> list[str]:
    """`tritonscale bench` against the `simulated` model through `url`, with no warm-up."""
    return [
        sys.executable, "-m", "tritonscale.cli", "bench", "--url", url,
        "--model", "simulated", "--shape", "INPUT0:1", "--warmup", "0", *options,
    ]  # fmt: skip


@contextlib.contextmanager
def process_stack(
    tmp_path: Path,
    triton_install: TritonInstall,
    *,
    namespace: str,
    name: str,
    model: SimulatedModel,
    autoscaling: dict[str, Any],
    capacity: dict[str, Any] | None = None,
    extra_targets: Callable[[], list[ScrapeTarget]] = list,
    prometheus_options: dict[str, Any] | None = None,
    variants: Sequence[tuple[SimulatedModel, float, float]] = (),
) -> Iterator[tuple[ProcessBackedCluster, LocalRouter, LocalPrometheus]]:
    """With `variants` ((model, accuracy, speedup), each model named as `model`), every replica
    also runs a tritonserver per variant on its ports, as the rendered launcher does, sharing
    one accelerator lock."""
    repository = model_repository(tmp_path / "models", [model])
    companions = [
        Companion(
            f"v{index}", model_repository(tmp_path / f"variant-{index}", [variant]), *variant_ports(index)
        )
        for index, (variant, _, _) in enumerate(variants)
    ]
    declared = [
        {
            "name": f"{model.name}-v{index}",
            "repository": str(companion.model_repository),
            "accuracy": accuracy,
            "speedup": speedup,
        }
        for index, ((_, accuracy, speedup), companion) in enumerate(zip(variants, companions, strict=True))
    ]
    body = make_inference_service(
        name=name,
        namespace=namespace,
        spec__model={
            "repository": str(repository),
            "names": [model.name],
            **({"variants": declared} if declared else {}),
        },
        spec__replicas=1,
        spec__loadBalancing={"policy": "LeastConnections"},
        spec__autoscaling=autoscaling,
        **({"spec__capacity": capacity} if capacity is not None else {}),
    )
    names = StackNames(name, namespace)
    pool = TritonPool(
        0,
        repository,
        install=triton_install,
        log_dir=tmp_path / "triton-logs",
        models=(model.name,),
        companions=companions,
    )
    with DnsServer(work_dir=tmp_path / "dns") as dns:
        cluster = ProcessBackedCluster(body, pool, dns)
        options = {"scrape_interval_s": 1.0, **(prometheus_options or {})}
        prometheus = LocalPrometheus([], work_dir=tmp_path / "prometheus", **options)
        router = LocalRouter(parse_inference_service(body), dns, work_dir=tmp_path / "router")
        stop = threading.Event()
        labels = {"namespace": namespace, "inferenceservice": name}

        def publish() -> None:
            # What kubelets, endpoints and Prometheus' service discovery do in a cluster.
            while not stop.is_set():
                cluster.sync_dns()
                router_address = router.metrics_url.removeprefix("http://").removesuffix("/metrics")
                prometheus.set_targets(
                    [
                        *(
                            ScrapeTarget(
                                f"{server.host}:{server.metrics_port}",
                                {**labels, "pod": f"{names.on_demand_deployment}-{index}"},
                            )
                            for index, server in enumerate(pool.servers)
                        ),
                        # Each variant's tritonserver, labelled as the chart's PodMonitor does.
                        *(
                            ScrapeTarget(
                                f"{server.host}:{companion.metrics_port}",
                                {
                                    **labels,
                                    "pod": f"{names.on_demand_deployment}-{index}",
                                    "variant": variant["name"],
                                },
                            )
                            for index, server in enumerate(pool.servers)
                            for companion, variant in zip(companions, declared, strict=True)
                        ),
                        ScrapeTarget(router_address, {**labels, "pod": f"{names.router_deployment}-0"}),
                        *extra_targets(),
                    ]
                )
                stop.wait(0.5)

        publisher = threading.Thread(target=publish, daemon=True)
        try:
            with prometheus, router:
                publisher.start()
                yield cluster, router, prometheus
        finally:
            stop.set()
            publisher.join(timeout=5)
            pool.stop(graceful=False)
            cluster.close()


def scheduled(stop: threading.Event, step: Callable[[], float | None], default_s: float) -> threading.Thread:
    """A started thread running `step` until `stop`, waiting the seconds it returns (`default_s`
    for None) as the operator schedules ticks and router reads."""

    def run() -> None:
        while not stop.is_set():
            period = step()
            stop.wait(period if period is not None else default_s)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def list_router_pods(cluster: ProcessBackedCluster, router: LocalRouter, namespace: str, name: str) -> None:
    """Make the cluster list the router as the Kubernetes API would: one Ready pod at its
    (loopback) address, so the autoscaler's router job finds it."""
    selector = StackNames(name, namespace).component_selector(COMPONENT_ROUTER)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    pod = {
        "metadata": {"name": f"{name}-router-0", "creationTimestamp": stamp, "labels": selector},
        "status": {
            "podIP": router.bind_address,
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": stamp}],
        },
    }
    listed = cluster.list_pods

    def list_pods(pods_namespace: str, wanted: dict[str, str]) -> list[dict[str, Any]]:
        if selector.items() <= wanted.items():
            return [pod]
        return listed(pods_namespace, wanted)

    cluster.list_pods = list_pods  # type: ignore[method-assign]


def prometheus_autoscaler(
    cluster: ProcessBackedCluster,
    router: LocalRouter,
    prometheus: LocalPrometheus,
    namespace: str,
    name: str,
    *,
    read_routers: bool = False,
    window: str = "10s",
    stale_after_s: float = 15,
    on_surge: Callable[[str, str], None] = lambda namespace, name: None,
    variants: bool = False,
) -> AutoscaleReconciler:
    """The stack reconciled and serving (a ready Triton replica behind a ready router), and an
    autoscaler reading it through Prometheus (rates over `window`); with `read_routers`, its
    router job (`router_tick`) reads the real router's stats page and calls `on_surge`."""
    if read_routers:
        list_router_pods(cluster, router, namespace, name)
    reconciler = StackReconciler(cluster)
    reconciler.reconcile(namespace, name)
    deadline = time.monotonic() + 60
    while not cluster.ready_servers() and time.monotonic() < deadline:
        time.sleep(0.5)
    router.wait_ready(servers_up=1)
    source = PrometheusSource(prometheus.url, window=window, stale_after_s=stale_after_s)
    return AutoscaleReconciler(
        cluster,
        reconciler,
        lambda service: (source, "prometheus"),
        read_router=HaproxyStats(port=router.options.metrics_port) if read_routers else None,
        on_surge=on_surge,
        set_router_cuts=(
            lambda address, cuts: set_variant_cuts(address, cuts, port=router.options.control_port)
        )
        if variants
        else None,
    )
