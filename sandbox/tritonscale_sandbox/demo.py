"""`tritonscale demo`: the whole product on one machine, from real components.

A real control plane (etcd, kube-apiserver, controller-manager, scheduler) with process-backed
nodes (`node_agent`): Triton pods are real tritonservers, router pods real HAProxy, and the
operator pod is `tritonscale run` started from the Helm chart with its ServiceAccount's token.
A real Prometheus scrapes them through the chart's PodMonitors and ServiceMonitor and evaluates
its rules (`monitoring`). The operator autoscales on that Prometheus.

The scenario (`Scenario`): steady load, a 4x surge, every spot node interrupted (Karpenter's
disruption taint, then the nodes deleted), the surge ending, spot capacity returning. A live view
shows the InferenceService as `tritonscale status` does; at the end a summary and a PNG timeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tritonscale.bench.schedule import parse_schedule
from tritonscale.bench.stats import RunSamples
from tritonscale.cli.status import report_from, service_details
from tritonscale_sandbox.cluster import (
    CAPACITY_TYPE_LABEL,
    ON_DEMAND,
    SPOT,
    Cluster,
    NodePool,
    node_manifests,
)
from tritonscale_sandbox.monitoring import ClusterPrometheus, install_monitoring_crds
from tritonscale_sandbox.node_agent import NodeAgent
from tritonscale_sandbox.paths import cache_root
from tritonscale_sandbox.process import left_in_sessions, sessions_mark
from tritonscale_sandbox.triton import SimulatedModel, install_dir, install_triton, model_repository

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "tritonscale"
NAMESPACE, NAME = "demo", "resnet"
OPERATOR_NAMESPACE = "tritonscale"
OBJECTIVE_MS = 100.0
PROMETHEUS_HOST = "127.41.0.254"
INTERRUPTION_TAINT = {"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}
# 40 ms per batch of up to 2: one replica serves ~45 req/s flat out and ~25 req/s within
# 100 ms, so the steady 15 req/s needs the two minimum replicas and the 4x surge three or four.
MIN_REPLICAS = 2
DEMO_MODEL = SimulatedModel("simulated", base_ms=40, per_item_ms=2, max_batch_size=2, max_queue_delay_us=0)


@dataclass(frozen=True)
class Scenario:
    """When each thing happens, in seconds from the end of the warm-up.

    The warm-up runs the steady load first, as a service that has been serving for a while:
    a freshly started one has cold first requests and a metrics window still filling, which is
    not what a surge meets in production. It is long enough for the start's transients to be
    over a stabilization window before the surge: the first traffic, seen as a ramp from zero
    while the metrics window fills, can add a replica that goes about 50 s after the load
    starts, and a surge within the 30 s window after that scale-down undoes it (a reversal),
    after which the autoscaler keeps surge headroom for an hour, so replicas would not fall
    after the surge. (With a 45 s warm-up that happened in one CI run and one of two runs here.)"""

    base_rps: float = 15.0
    surge_factor: float = 4.0
    warmup_s: float = 100.0
    surge_at_s: float = 30.0
    spot_notice_at_s: float = 75.0
    spot_reclaim_at_s: float = 90.0
    surge_end_at_s: float = 130.0
    spot_return_at_s: float = 145.0
    end_s: float = 255.0

    @classmethod
    def short(cls) -> Scenario:
        """The closed-loop test's version: the same steps, closer together."""
        return cls(
            surge_at_s=20.0,
            spot_notice_at_s=50.0,
            spot_reclaim_at_s=60.0,
            surge_end_at_s=100.0,
            spot_return_at_s=110.0,
            end_s=190.0,
        )

    def schedule(self) -> str:
        surge = self.base_rps * self.surge_factor
        return f"step:{self.base_rps:g}@0,{surge:g}@{self.surge_at_s:g},{self.base_rps:g}@{self.surge_end_at_s:g}"

    def steps(self) -> list[tuple[float, str]]:
        return [
            (self.surge_at_s, f"surge x{self.surge_factor:g}"),
            (self.spot_notice_at_s, "spot interruption notice"),
            (self.spot_reclaim_at_s, "spot nodes reclaimed"),
            (self.surge_end_at_s, "surge ends"),
            (self.spot_return_at_s, "spot returns"),
        ]


def node_pools() -> list[NodePool]:
    """Two on-demand and three spot machines (8 CPUs each), all process-backed."""
    allocatable = {"cpu": "8", "memory": "32Gi", "ephemeral-storage": "200Gi", "pods": "110"}
    return [
        NodePool(
            name="on-demand",
            count=2,
            labels={CAPACITY_TYPE_LABEL: ON_DEMAND},
            allocatable=allocatable,
            instance_type="m5.2xlarge",
            process_backed=True,
        ),
        NodePool(
            name="spot",
            count=3,
            labels={CAPACITY_TYPE_LABEL: SPOT},
            allocatable=allocatable,
            instance_type="m5.2xlarge",
            process_backed=True,
        ),
    ]


def inference_service(repository: Path) -> dict[str, Any]:
    """The example the demo applies: a real (simulated-latency) model, p95 under 100 ms,
    one on-demand replica as a base and up to 75 % on spot."""
    return {
        "apiVersion": "tritonscale.io/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "model": {"repository": str(repository), "names": [DEMO_MODEL.name]},
            "triton": {"resources": {"requests": {"cpu": "500m", "memory": "512Mi"}}},
            "capacity": {
                "nodePoolPreset": "karpenter",
                "onDemandBase": 1,
                "spot": {"enabled": True, "maxFraction": 0.75, "fallbackAfterSeconds": 20},
            },
            "loadBalancing": {"policy": "LeastConnections"},
            "autoscaling": {
                "minReplicas": MIN_REPLICAS,
                "maxReplicas": 6,
                "periodSeconds": 5,
                "latency": {"targetMilliseconds": OBJECTIVE_MS, "percentile": 95},
                "metrics": {"source": "prometheus"},
                "scaleDown": {"stabilizationSeconds": 30},
            },
        },
    }


# --------------------------------------------------------------------------------------------
# Set-up of what is missing


class DemoFailure(RuntimeError):
    """A step of the demo failed in a way a user can act on: said in one line, no traceback."""


# What can go wrong on a user's machine (a missing or broken component, a port taken, a step
# timing out): said in a line with where the logs are. Anything else is a bug: its traceback.
# RuntimeError covers the sandbox's own (DemoFailure, ClusterError, PodNetworkError,
# RouterError, TritonServerError); OSError the system's, TimeoutError among them.
EXPECTED_FAILURES = (RuntimeError, OSError)


def ensure_installed(console: Console) -> None:
    """Build or download what is missing (cached under the versioned cache dir), with the
    scripts' own progress shown."""
    testenv = REPO / "scripts" / "build-testenv.sh"
    console.print(
        "[bold]Kubernetes control plane[/] (scripts/build-testenv.sh: seconds when cached, "
        "7-13 minutes the first time on 2 cores)"
    )
    # In a session of its own, so that an interrupt stops its background `go build` too.
    build = subprocess.Popen([str(testenv)], start_new_session=True)
    try:
        code = build.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(build.pid, signal.SIGTERM)
        build.wait()
        raise
    if code != 0:
        raise DemoFailure("building the control plane failed: scripts/build-testenv.sh's output is above")
    if not (install_dir() / "COMPLETE").is_file():
        console.print("[bold]tritonserver[/] (scripts/install-triton.sh: a 55 MB download the first time)")
    install_triton(show_progress=True)


# --------------------------------------------------------------------------------------------
# The running environment


@dataclass
class Sample:
    """One second of the timeline."""

    at_s: float
    desired: int | None
    on_demand_ready: int
    spot_ready: int
    operator_p95_ms: float | None
    operator_rate_rps: float | None


@dataclass
class Timeline:
    samples: list[Sample] = field(default_factory=list)
    steps: list[tuple[float, str]] = field(default_factory=list)
    failed_steps: list[str] = field(default_factory=list)
    """Scripted steps that raised, with the error: the rest of the scenario still runs."""
    started_at: datetime | None = None
    """When t=0 was on the wall clock (the end of the warm-up)."""
    lock: threading.Lock = field(default_factory=threading.Lock)


class DemoEnvironment:
    """The cluster, the node agent, Prometheus and the chart, installed and serving."""

    def __init__(self, work_dir: Path, console: Console) -> None:
        self.work_dir = work_dir
        self.console = console
        self.cluster: Cluster | None = None
        self.agent: NodeAgent | None = None
        self.prometheus: ClusterPrometheus | None = None

    def start(self) -> None:
        say = self.console.print
        t0 = time.monotonic()
        say("starting the control plane (etcd, kube-apiserver, controller-manager, scheduler)")
        self.cluster = Cluster.start(self.work_dir / "cluster", node_pools=node_pools())
        say("starting the node agent: 5 process-backed nodes (2 on-demand, 3 spot) and the cluster DNS")
        self.agent = NodeAgent(self.cluster, self.work_dir / "nodes")  # kept first: stop() cleans up
        self.agent.start()
        install_monitoring_crds(self.cluster)
        self.prometheus = ClusterPrometheus(
            self.cluster, self.work_dir / "prometheus", host=PROMETHEUS_HOST, scrape_interval_s=2.0
        )
        self.prometheus.start()
        say(
            f"Prometheus on {self.prometheus.url}, scraping what the chart's PodMonitors and ServiceMonitor select"
        )
        say("helm install tritonscale charts/tritonscale")
        self.cluster.helm(
            "install", "tritonscale", str(CHART), "-n", OPERATOR_NAMESPACE, "--create-namespace",
            "--set", f"operator.prometheusURL={self.prometheus.url}",
            "--set", "operator.prometheusWindow=10s",
            "--set", "operator.logFormat=plain",
            # The operator stays off spot, which this demo takes away.
            "--set-json", "nodeSelector=" + json.dumps({CAPACITY_TYPE_LABEL: ON_DEMAND}),
            "--set", "monitoring.podMonitors.enabled=true",
            "--set", "monitoring.podMonitors.interval=2s",
            "--set", "monitoring.serviceMonitor.enabled=true",
            "--set", "monitoring.serviceMonitor.interval=2s",
            "--set", "monitoring.prometheusRule.enabled=true",
            "--wait", "--timeout", "3m",
        )  # fmt: skip
        repository = model_repository(self.work_dir / "models", [DEMO_MODEL])
        self.cluster.create_namespace(NAMESPACE)
        say(f"kubectl apply: InferenceService {NAMESPACE}/{NAME}")
        self.cluster.apply_yaml(inference_service(repository))
        self.cluster.wait_until(
            lambda: _ready(self.cluster_service()), "the InferenceService to be Ready", timeout_s=180
        )
        say(f"serving after {time.monotonic() - t0:.0f} s")

    def stop(self, keep_logs: bool = False) -> None:
        """Stop everything; `keep_logs` keeps the control plane's logs (after a failure)."""
        if self.agent is not None:
            self.agent.stop(grace_s=2.0)
        if self.prometheus is not None:
            self.prometheus.stop()
        if self.cluster is not None:
            self.cluster.stop(keep_logs=keep_logs)

    def processes(self) -> list[tuple[str, int]]:
        """Every process the demo started (for the no-process-left check)."""
        found: list[tuple[str, int]] = []
        if self.cluster is not None:
            found += list(self.cluster.processes())
        if self.agent is not None:
            found += list(self.agent.processes())
            if self.agent.dns.pid is not None:
                found.append(("dnsmasq", self.agent.dns.pid))
        if self.prometheus is not None and self.prometheus.pid is not None:
            found.append(("prometheus", self.prometheus.pid))
        return found

    # ---- reads

    @property
    def api(self) -> Cluster:
        assert self.cluster is not None
        return self.cluster

    def cluster_service(self) -> dict[str, Any]:
        path = f"/apis/tritonscale.io/v1alpha1/namespaces/{NAMESPACE}/inferenceservices/{NAME}"
        result: dict[str, Any] = self.api.request("GET", path)
        return result

    def events(self) -> list[dict[str, Any]]:
        selector = f"involvedObject.kind=InferenceService,involvedObject.name={NAME}"
        items: list[dict[str, Any]] = self.api.request(
            "GET", f"/api/v1/namespaces/{NAMESPACE}/events?fieldSelector={selector}"
        )["items"]
        return items

    def triton_pods(self) -> list[dict[str, Any]]:
        selector = f"app.kubernetes.io/instance={NAME},app.kubernetes.io/component=triton"
        items: list[dict[str, Any]] = self.api.request(
            "GET", f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector={selector}"
        )["items"]
        return items

    def ready_triton_pods(self) -> list[dict[str, Any]]:
        """Triton pods that are Ready and not being deleted."""
        return [p for p in self.triton_pods() if _pod_ready(p) and not p["metadata"].get("deletionTimestamp")]

    def router_addresses(self) -> list[str]:
        """What the cluster DNS answers for the host of the service's status.endpoint (the URL
        clients call), e.g. http://resnet.demo.svc:8000."""
        assert self.agent is not None
        endpoint = (self.cluster_service().get("status") or {}).get("endpoint") or ""
        host = urllib.parse.urlsplit(endpoint).hostname or ""
        if not host:
            return []
        return self.agent.dns.resolve_name(f"{host}.cluster.local" if host.endswith(".svc") else host)

    # ---- the spot market

    def spot_nodes(self) -> list[str]:
        items = self.api.request("GET", f"/api/v1/nodes?labelSelector={CAPACITY_TYPE_LABEL}={SPOT}")["items"]
        return [n["metadata"]["name"] for n in items]

    def interrupt_spot(self) -> None:
        """What Karpenter does on a spot interruption: taint the nodes, then drain them."""
        for node in self.spot_nodes():
            taints = self.api.request("GET", f"/api/v1/nodes/{node}")["spec"].get("taints") or []
            self.api.request(
                "PATCH",
                f"/api/v1/nodes/{node}",
                {"spec": {"taints": [*taints, INTERRUPTION_TAINT]}},
                content_type="application/merge-patch+json",
            )

    def reclaim_spot(self) -> None:
        """The machines are gone: their Node objects go, and with them every process on them."""
        for node in self.spot_nodes():
            with contextlib.suppress(urllib.error.HTTPError):
                self.api.request("DELETE", f"/api/v1/nodes/{node}")

    def return_spot(self) -> None:
        """New machines, under new names as Karpenter gives them: pods of the old ones that the
        pod garbage collector has not removed yet stay on nodes that are gone."""
        nodes = node_manifests([p for p in node_pools() if p.name == "spot"])
        for node in nodes:
            name = f"{node['metadata']['name']}-{int(time.time()) % 100000}"
            node["metadata"]["name"] = name
            node["metadata"]["labels"]["kubernetes.io/hostname"] = name
        self.api.apply_yaml(nodes)


def _ready(service: dict[str, Any]) -> bool:
    conditions = (service.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _pod_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


# --------------------------------------------------------------------------------------------
# Load, observation and the scripted steps


class LoadThread:
    """`tritonscale bench`'s open loop (the same code), driven from a thread so it can be
    watched and cancelled."""

    def __init__(self, endpoint: str, scenario: Scenario) -> None:
        # Imported here, after quietening gRPC: its core logs a line whenever a thread forks
        # (kubectl, helm) while requests are in flight. Read when gRPC loads.
        os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        from tritonscale.bench.runner import LiveCounters, LoadPlan, Target

        self.live = LiveCounters()
        self.samples: RunSamples | None = None
        self.error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._future: Any = None
        self.target = Target("grpc", endpoint, DEMO_MODEL.name, timeout_s=15.0)
        self.plan = LoadPlan(
            "open", scenario.end_s, scenario.warmup_s, schedule=parse_schedule(scenario.schedule()), seed=7
        )
        self._thread = threading.Thread(target=self._loop.run_forever, name="load", daemon=True)

    def start(self) -> None:
        from tritonscale.bench.inputs import build_requests
        from tritonscale.bench.runner import describe_model, run_once

        self._thread.start()
        spec = asyncio.run_coroutine_threadsafe(describe_model(self.target), self._loop).result(30)
        requests = build_requests(spec, shapes={"INPUT0": (1,)}, seed=7)
        self._future = asyncio.run_coroutine_threadsafe(
            run_once(self.target, self.plan, requests, self.live), self._loop
        )

    def wait(self, timeout_s: float) -> RunSamples:
        self.samples = self._future.result(timeout_s)
        return self.samples

    def done(self) -> bool:
        return self._future is not None and bool(self._future.done())

    def cancel(self) -> None:
        """Cancel the run and wait for its clean-up (the bench's pacer thread stops in a
        `finally`, which must run before the loop stops, or interpreter exit waits for it)."""

        async def cancel_all() -> None:
            # Again until none are left: the pacer may hand over a last batch meanwhile.
            while tasks := [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(cancel_all(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)


def observe(env: DemoEnvironment, timeline: Timeline, started: float, stop: threading.Event) -> None:
    """Once a second: desired replicas, ready replicas by pool, the operator's p95 and rate."""
    while not stop.is_set():
        with contextlib.suppress(urllib.error.HTTPError, OSError, KeyError):
            status = env.cluster_service().get("status") or {}
            pods = env.ready_triton_pods()
            pools = [p["metadata"]["labels"].get("tritonscale.io/pool") for p in pods]
            with timeline.lock:
                timeline.samples.append(
                    Sample(
                        at_s=time.monotonic() - started,
                        desired=status.get("desiredReplicas"),
                        on_demand_ready=pools.count(ON_DEMAND),
                        spot_ready=pools.count(SPOT),
                        operator_p95_ms=status.get("observedLatencyMilliseconds"),
                        operator_rate_rps=status.get("observedRateRps"),
                    )
                )
        stop.wait(1.0)


def run_steps(
    env: DemoEnvironment, scenario: Scenario, timeline: Timeline, started: float, stop: threading.Event
) -> None:
    actions: dict[str, Callable[[], None]] = {
        "spot interruption notice": env.interrupt_spot,
        "spot nodes reclaimed": env.reclaim_spot,
        "spot returns": env.return_spot,
    }
    for at_s, step in scenario.steps():
        if stop.wait(max(0.0, started + at_s - time.monotonic())):
            return
        action = actions.get(step)
        at = time.monotonic() - started
        try:
            if action is not None:
                action()
        except Exception as error:
            with timeline.lock:
                timeline.failed_steps.append(f"{step} at t={at:.0f}s: {type(error).__name__}: {error}")
        with timeline.lock:
            timeline.steps.append((at, step))


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Summary:
    requests: int
    errors: int
    attainment: float
    """Share of requests answered within the objective (errors count as misses)."""
    client_p95_ms: float | None
    replica_seconds: float
    peak_desired: int
    scale_ups: int
    scale_downs: int
    decisions: list[str]
    fallback_s: float | None
    """From losing every spot node until ready replicas, none of them on spot, were back at the
    desired count (None: never before spot returned)."""
    surge_breached: bool
    """Whether the client's 10-second p95 went over the objective during the surge."""
    surge_recovered_s: float | None
    """From the surge until the client's 10-second p95 was under the objective for the rest of
    the surge: 0 when it never went over, None when it was still over at the surge's end."""
    replicas_after_surge: int | None
    failed_steps: list[str]


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def client_windows(samples: RunSamples, width_s: float = 10.0) -> list[tuple[float, float | None, float]]:
    """(window end, p95 ms, offered req/s) per window, from the requests' own latencies."""
    end = samples.duration_s
    windows = []
    for index in range(int(end // width_s)):
        low, high = index * width_s, (index + 1) * width_s
        latencies = [
            lat * 1000
            for off, lat in zip(samples.offsets, samples.latencies, strict=True)
            if low <= off < high
        ]
        errors = sum(1 for off in samples.error_offsets if low <= off < high)
        latencies += [math.inf] * errors
        windows.append((high, _percentile(latencies, 0.95), (len(latencies)) / width_s))
    return windows


def surge_recovery(
    windows: list[tuple[float, float | None, float]], scenario: Scenario
) -> tuple[bool, float | None]:
    """(whether the p95 went over the objective in the surge, the seconds from the surge until it
    stayed under for the rest of it: 0 if never over, None if over at its end)."""
    during = [(end, p95) for end, p95, _ in windows if scenario.surge_at_s < end <= scenario.surge_end_at_s]
    over = [end for end, p95 in during if p95 is not None and p95 > OBJECTIVE_MS]
    if not during:
        return False, None
    if not over:
        return False, 0.0
    if over[-1] >= during[-1][0]:
        return True, None
    return True, over[-1] - scenario.surge_at_s


def _event_time(event: dict[str, Any]) -> datetime | None:
    stamp = event.get("lastTimestamp") or event.get("eventTime")
    if not stamp:
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    return None


def summarise(
    samples: RunSamples, timeline: Timeline, scenario: Scenario, events: list[dict[str, Any]]
) -> Summary:
    within = sum(1 for lat in samples.latencies if lat * 1000 <= OBJECTIVE_MS)
    total = len(samples.latencies) + len(samples.error_offsets)
    points = [p for p in timeline.samples if p.at_s >= 0]  # not the warm-up
    replica_seconds = sum(
        (b.at_s - a.at_s) * (a.on_demand_ready + a.spot_ready) for a, b in itertools.pairwise(points)
    )
    reclaim = next((at for at, step in timeline.steps if step == "spot nodes reclaimed"), None)
    spot_back = next((at for at, step in timeline.steps if step == "spot returns"), math.inf)
    fallback_s = None
    if reclaim is not None:
        # Only samples that no longer count a lost spot pod as ready (the agent marks them
        # within a sync of the nodes going), before spot comes back.
        after = [p for p in points if reclaim <= p.at_s < spot_back and p.desired and p.spot_ready == 0]
        back = next((p for p in after if p.on_demand_ready >= (p.desired or 0)), None)
        fallback_s = None if back is None else back.at_s - reclaim
    breached, recovered = surge_recovery(client_windows(samples), scenario)
    # Decisions of the scenario, not of the set-up and warm-up.
    since = timeline.started_at
    scenario_events = [
        e for e in events if since is None or ((when := _event_time(e)) is not None and when >= since)
    ]
    decisions = [
        f"{e.get('reason')}: {e.get('message')}"
        for e in sorted(scenario_events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        if e.get("reason") in ("ScaledUp", "ScaledDown", "SpotFallback", "SpotDrained", "SpotReturn")
    ]
    desired = [p.desired for p in points if p.desired is not None]
    steps = list(itertools.pairwise(desired))
    final = points[-1] if points else None
    return Summary(
        requests=total,
        errors=len(samples.error_offsets),
        attainment=within / total if total else 0.0,
        client_p95_ms=_percentile([lat * 1000 for lat in samples.latencies], 0.95),
        replica_seconds=replica_seconds,
        peak_desired=max(desired, default=0),
        scale_ups=sum(1 for a, b in steps if b > a),
        scale_downs=sum(1 for a, b in steps if b < a),
        decisions=decisions,
        fallback_s=fallback_s,
        surge_breached=breached,
        surge_recovered_s=recovered,
        replicas_after_surge=None if final is None else final.desired,
        failed_steps=list(timeline.failed_steps),
    )


def write_plot(samples: RunSamples, timeline: Timeline, path: Path) -> None:
    """Replicas by pool, the percentile against the objective, and the load, over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = timeline.samples
    at = [p.at_s for p in points]
    figure, (replicas, latency, load) = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    replicas.stackplot(
        at,
        [p.on_demand_ready for p in points],
        [p.spot_ready for p in points],
        labels=["ready on-demand", "ready spot"],
        colors=["#4c72b0", "#dd8452"],
        alpha=0.8,
    )
    replicas.step(at, [p.desired or 0 for p in points], where="post", color="black", label="desired")
    replicas.set_ylabel("Triton replicas")
    replicas.legend(loc="upper left")
    windows = client_windows(samples, 5.0)
    latency.plot(
        [w[0] for w in windows], [min(w[1], 1000.0) if w[1] is not None else math.nan for w in windows],
        label="p95, client side (5 s windows)", color="#c44e52",
    )  # fmt: skip
    latency.plot(
        at, [p.operator_p95_ms if p.operator_p95_ms is not None else math.nan for p in points],
        label="p95 the operator read (Prometheus)", color="#8172b3", linestyle="--",
    )  # fmt: skip
    latency.axhline(OBJECTIVE_MS, color="black", linewidth=0.8, linestyle=":", label="objective")
    latency.set_ylabel("latency (ms)")
    latency.set_yscale("log")
    latency.legend(loc="upper left")
    load.plot([w[0] for w in windows], [w[2] for w in windows], label="offered (client)", color="#55a868")
    load.plot(
        at, [p.operator_rate_rps if p.operator_rate_rps is not None else math.nan for p in points],
        label="rate the operator read", color="#937860", linestyle="--",
    )  # fmt: skip
    load.set_ylabel("requests / s")
    load.set_xlabel("seconds")
    load.legend(loc="upper left")
    for axis in (replicas, latency, load):
        if at and at[0] < 0:
            axis.axvspan(at[0], 0, color="grey", alpha=0.12, linewidth=0)
        for when, _step in timeline.steps:
            axis.axvline(when, color="grey", linewidth=0.8, linestyle="--")
    if at and at[0] < 0:
        replicas.annotate("warm-up", (at[0], 1.02), xycoords=("data", "axes fraction"), fontsize=8)
    for when, step in timeline.steps:
        replicas.annotate(
            step,
            (when, 1.02),
            xycoords=("data", "axes fraction"),
            rotation=25,
            va="bottom",
            ha="left",
            fontsize=8,
        )
    figure.suptitle("tritonscale demo: surge, spot loss and return on real Triton, HAProxy and Kubernetes")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:.1f}{unit}"


def summary_table(summary: Summary) -> Table:
    table = Table(title="Demo summary", show_header=False)
    table.add_row("requests", f"{summary.requests} ({summary.errors} errors)")
    table.add_row(f"within {OBJECTIVE_MS:g} ms", f"{summary.attainment:.2%}")
    table.add_row("client p95", fmt(summary.client_p95_ms, " ms"))
    table.add_row("replica-seconds", f"{summary.replica_seconds:.0f}")
    table.add_row("peak desired replicas", str(summary.peak_desired))
    table.add_row("scale-ups / scale-downs", f"{summary.scale_ups} / {summary.scale_downs}")
    recovery = (
        "never over the objective"
        if not summary.surge_breached
        else "still over at the surge's end"
        if summary.surge_recovered_s is None
        else f"under for good {summary.surge_recovered_s:.0f} s into it"
    )
    table.add_row("client p95 (10 s windows) in the surge", recovery)
    table.add_row("capacity back after losing every spot node", fmt(summary.fallback_s, " s"))
    for failure in summary.failed_steps:
        table.add_row("[red]step failed[/]", failure)
    return table


# --------------------------------------------------------------------------------------------
# The live view


def live_view(env: DemoEnvironment, load: LoadThread, timeline: Timeline, scenario: Scenario) -> Group:
    now = datetime.now(UTC)
    with timeline.lock:
        steps = list(timeline.steps)
        last = timeline.samples[-1] if timeline.samples else None
    done = [step for _, step in steps]
    upcoming = [f"{step} at {at:g}s" for at, step in scenario.steps() if step not in done]
    header = Text()
    at = load.live.elapsed_s - scenario.warmup_s
    header.append(f"warm-up {-at:3.0f}s  " if at < 0 else f"t={at:5.0f}/{scenario.end_s:g}s  ", style="bold")
    header.append(
        f"sent {load.live.completed} ok, {load.live.errors} errors, {load.live.inflight} in flight  "
    )
    if last is not None:
        header.append(f"ready on-demand {last.on_demand_ready}, spot {last.spot_ready}  ")
    header.append(f"done: {', '.join(done) or '-'}; next: {', '.join(upcoming[:1]) or 'end'}", style="dim")
    try:
        report = report_from(env.cluster_service(), env.events())
        return Group(header, service_details(report, now))
    except (urllib.error.HTTPError, OSError) as error:
        return Group(header, Text(f"(cannot read the InferenceService: {error})", style="red"))


# --------------------------------------------------------------------------------------------
# The command


@dataclass
class DemoResult:
    summary: Summary | None = None
    timeline: Timeline = field(default_factory=Timeline)
    operator_pod: dict[str, Any] = field(default_factory=dict)
    """The operator's pod as the API showed it once the service was Ready."""
    processes: list[tuple[str, int]] = field(default_factory=list)
    """Every process the demo had started, just before it stopped them."""
    windows: list[tuple[float, float | None, float]] = field(default_factory=list)
    """The client's 10-second windows: (end, p95 ms, offered req/s)."""
    left_behind: list[tuple[str, int]] = field(default_factory=list)
    """Every process still alive after the stop in a session the demo started (pods the agent
    no longer tracked and their helpers included)."""

    @property
    def failed(self) -> bool:
        return bool(self.left_behind) or bool(self.summary and self.summary.failed_steps)


@contextlib.contextmanager
def _uninterrupted() -> Iterator[None]:
    """Ctrl-C (and SIGTERM, SIGHUP) ignored while stopping: a second press would leave half of
    it running."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in stops}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_demo(
    work_dir: Path, scenario: Scenario, console: Console, *, keep: bool, live: bool, results_dir: Path
) -> DemoResult:
    env = DemoEnvironment(work_dir, console)
    stop = threading.Event()
    load: LoadThread | None = None
    threads: list[threading.Thread] = []
    result = DemoResult()
    mark = sessions_mark()
    failed = True  # until the run ends or is stopped on purpose: then no logs to keep
    try:
        env.start()
        operators = env.api.request(
            "GET",
            f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/pods?labelSelector=app.kubernetes.io/instance=tritonscale",
        )["items"]
        result.operator_pod = operators[0] if operators else {}
        routers = env.router_addresses()
        if not routers:
            raise click.ClickException("the router Service answers with no ready router pod")
        load = LoadThread(f"{routers[0]}:8001", scenario)
        timeline = result.timeline
        console.print(
            f"load through router {routers[0]}: {scenario.warmup_s:g} s warm-up, then "
            f"{scenario.schedule()} for {scenario.end_s:g} s"
        )
        load.start()
        started = time.monotonic() + scenario.warmup_s  # the scenario's clock starts after it
        timeline.started_at = (datetime.now(UTC) + timedelta(seconds=scenario.warmup_s)).replace(
            microsecond=0
        )
        threads = [
            threading.Thread(target=observe, args=(env, timeline, started, stop), daemon=True),
            threading.Thread(target=run_steps, args=(env, scenario, timeline, started, stop), daemon=True),
        ]
        for thread in threads:
            thread.start()
        deadline = started + scenario.end_s + 60
        if live and console.is_terminal:
            with Live(console=console, refresh_per_second=1, transient=False) as view:
                while not load.done() and time.monotonic() < deadline:
                    view.update(live_view(env, load, timeline, scenario))
                    time.sleep(1.0)
        else:
            printed = set()
            while not load.done() and time.monotonic() < deadline:
                with timeline.lock:
                    news = [(at, step) for at, step in timeline.steps if step not in printed]
                for at, step in news:
                    printed.add(step)
                    console.print(f"t={at:5.1f}s {step}")
                time.sleep(1.0)
        samples = load.wait(60)
        stop.set()
        for thread in threads:
            thread.join(10)
        summary = result.summary = summarise(samples, timeline, scenario, env.events())
        result.windows = client_windows(samples)
        results_dir.mkdir(parents=True, exist_ok=True)
        write_plot(samples, timeline, results_dir / "demo.png")
        (results_dir / "demo.json").write_text(
            json.dumps(
                {
                    "scenario": asdict(scenario),
                    "summary": asdict(summary),
                    "steps": timeline.steps,
                    "started_at": timeline.started_at.isoformat() if timeline.started_at else None,
                    "timeline": [asdict(s) for s in timeline.samples],
                },
                indent=1,
            )
        )
        console.print(summary_table(summary))
        for decision in summary.decisions:
            console.print(f"  {decision}")
        console.print(f"timeline: {results_dir / 'demo.png'}; figures: {results_dir / 'demo.json'}")
        failed = False
        if keep:
            bin_dir = env.api.bin_dir
            console.print(
                f"\nThe cluster keeps running until Ctrl-C here (closing this terminal stops it too):\n"
                f"  export KUBECONFIG={env.api.kubeconfig} PATH={bin_dir}:$PATH\n"
                f"  kubectl get tis -A; kubectl describe tis {NAME} -n {NAMESPACE}\n"
                f"  Prometheus: {env.prometheus.url if env.prometheus else '-'}"
            )
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
        return result
    except KeyboardInterrupt:
        failed = False  # stopped on purpose
        raise
    finally:
        with _uninterrupted():
            with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
                console.print("stopping everything (Ctrl-C is ignored until it is done)")
            stop.set()
            if load is not None:
                load.cancel()
            result.processes = env.processes()
            env.stop(keep_logs=failed)
            result.left_behind = left_in_sessions(mark, settle_s=5.0)
        with contextlib.suppress(OSError):
            if result.left_behind:
                console.print(f"[red]processes left behind: {result.left_behind}[/]")
            else:
                console.print(f"stopped everything: {len(result.processes)} processes, none left behind")


@click.command()
@click.option(
    "--short",
    is_flag=True,
    help="The shortened scenario (about 5 minutes of load with the warm-up), as the closed-loop test runs it.",
)
@click.option(
    "--keep",
    is_flag=True,
    help="Leave the cluster running after the summary; prints a kubeconfig and Prometheus URL.",
)
@click.option("--no-live", is_flag=True, help="Print steps as lines instead of the live view.")
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the cluster, pods' logs and Prometheus data go (default: a fresh dir under the cache).",
)
@click.option(
    "--results",
    "results_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-results"),
    show_default=True,
    help="Where demo.png and demo.json go.",
)
@click.option(
    "--skip-setup", is_flag=True, help="Do not check for (or build) the control plane and tritonserver."
)
def demo(
    short: bool, keep: bool, no_live: bool, work_dir: Path | None, results_dir: Path, skip_setup: bool
) -> None:
    """Run the whole product on this machine from real components.

    Starts a Kubernetes control plane with process-backed nodes, installs the chart with
    `helm install`, applies an InferenceService, and drives load through its router: steady,
    a 4x surge, every spot node interrupted and reclaimed, the surge ending, spot returning.
    Ends with a summary and a PNG timeline; Ctrl-C stops everything.
    """
    console = Console()
    scenario = Scenario.short() if short else Scenario()
    try:  # before minutes of setup and scenario, not after them
        results_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise click.BadParameter(f"{results_dir}: {error}", param_hint="--results") from None
    # A closed terminal or a `kill` stops the demo as Ctrl-C does: everything it started goes.
    for stop_signal in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop_signal, _interrupt)
    work: Path | None = None
    try:
        if not skip_setup:
            ensure_installed(console)
        if work_dir is None:
            (cache_root() / "demo").mkdir(parents=True, exist_ok=True)
            work = Path(
                tempfile.mkdtemp(
                    prefix=datetime.now(UTC).strftime("%Y%m%d-%H%M%S-"), dir=cache_root() / "demo"
                )
            )
        else:
            work = work_dir
        result = run_demo(work, scenario, console, keep=keep, live=not no_live, results_dir=results_dir)
    except KeyboardInterrupt:
        if work_dir is None and work is not None:
            shutil.rmtree(work, ignore_errors=True)
        with contextlib.suppress(OSError):
            console.print("interrupted")
        sys.exit(130)
    except EXPECTED_FAILURES as error:
        with contextlib.suppress(OSError):
            console.print(f"[red]demo failed:[/] {type(error).__name__}: {error}{_logs_hint(work)}")
        sys.exit(1)
    if result.failed:
        with contextlib.suppress(OSError):
            console.print(f"[red]demo failed:[/] see the summary above{_logs_hint(work)}")
        sys.exit(1)
    if work_dir is None:  # the user named none: nothing of this run is left in the cache
        shutil.rmtree(work, ignore_errors=True)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _logs_hint(work: Path | None) -> str:
    return (
        f"; pods', Prometheus's and the control plane's logs are in {work}" if work and work.exists() else ""
    )
