"""Operator scale benchmark: N InferenceServices on the real control plane with kwok nodes.

    .venv/bin/python benchmarks/operator_scale.py              # 1,000 services; JSON in results/
    .venv/bin/python benchmarks/operator_scale.py --count 200  # a quicker look

Every service is autoscaled from Prometheus: half from a real local Prometheus (reachable, but
it holds no Triton series, so each tick reads and finds nothing), half from an address where
nothing listens. The operator runs as its own process (`tritonscale run`) with the chart's
ServiceAccount, as in a cluster. Measured:

- cold start: every InferenceService created first, then the operator started; the time until
  each one's status.observedGeneration matches its generation (all reconciled);
- spec changes under that load: one service at a time gets a new spec; the time until its
  status reports the new generation (p50, p99);
- then the time until every stack is Ready (its pods started by the controllers and kwok): the
  steady window below starts after it;
- autoscale tick lateness (from the operator's own histogram) and tick count over a window;
- the operator's RSS and CPU over the steady window, read from /proc;
- the API requests per second the operator issues, from the API server's priority-and-fairness
  counter for its flow schema (the operator is the only service account outside kube-system),
  and over the steady window by verb and resource from the API server's audit log. The steady
  window is one resync period (300 s) by default: every service's resync falls in it once (its
  facts, re-read every 10 minutes, about half of them).

Targets (issue: loops that scale): all reconciled from cold <= 60 s, spec change <= 5 s p99,
tick lateness p99 <= 2 s, RSS <= 250 MB.

`--floor` measures what no operator can beat on this machine instead: the same stacks, rendered
in-process and written straight to the API server with server-side apply from 8 threads (no
ownership reads, no dry runs, no status, no autoscaling), and the time until all are written,
with the control plane's CPU meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from tritonscale_sandbox.cluster import Cluster, NodePool, default_node_pools
from tritonscale_sandbox.net import free_ports
from tritonscale_sandbox.prometheus import LocalPrometheus

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "operator_scale.json"
CHART = ROOT / "charts" / "tritonscale"
NAMESPACES = 10
POLL_S = 10.0  # listing every InferenceService loads the API server too: not too often
UNREACHABLE = "http://127.0.0.1:9"
OPERATOR_USER = "system:serviceaccount:tritonscale-system:tritonscale"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def bench_pool(count: int) -> NodePool:
    """Enough kwok nodes for every service's Triton pod and two routers."""
    nodes = max(4, (3 * count) // 200 + 1)
    return NodePool(
        name="bench",
        count=nodes,
        labels={"karpenter.sh/capacity-type": "on-demand"},
        allocatable={"cpu": "2000", "memory": "8000Gi", "ephemeral-storage": "20000Gi", "pods": "250"},
        instance_type="bench.huge",
    )


def service(index: int, prometheus_url: str) -> dict[str, Any]:
    url = prometheus_url if index % 2 == 0 else UNREACHABLE
    return {
        "apiVersion": "tritonscale.io/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": f"svc-{index}", "namespace": f"bench-{index % NAMESPACES}"},
        "spec": {
            "model": {"repository": "s3://models/demo", "names": ["simulated"]},
            "replicas": 1,
            "triton": {
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi", "ephemeral-storage": "1Gi"}}
            },
            "autoscaling": {
                "minReplicas": 1,
                "maxReplicas": 4,
                "metrics": {"source": "prometheus", "prometheusURL": url},
            },
        },
    }


def list_services(cluster: Cluster) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json("inferenceservices", "-A")["items"]
    return items


def reconciled(item: dict[str, Any]) -> bool:
    return item.get("status", {}).get("observedGeneration") == item["metadata"].get("generation")


def serving(item: dict[str, Any]) -> bool:
    """Ready: its desired replicas and a router ready (kwok starts the pods)."""
    conditions = item.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def operator_usage(pid: int) -> tuple[float, float]:
    """(CPU seconds so far, RSS in MB) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 1e6
    return cpu, rss


COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "prometheus")


def component_cpu() -> dict[str, float]:
    """CPU seconds so far of each control-plane process and of Prometheus (by command name)."""
    found: dict[str, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0].decode()
            name = Path(argv0).name
            if name in COMPONENTS:
                found[name] = found.get(name, 0.0) + operator_usage(int(entry.name))[0]
        except (OSError, IndexError, ValueError):
            continue
    return found


def operator_requests(cluster: Cluster) -> float:
    """Requests dispatched for the `service-accounts` flow schema (the operator's)."""
    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("apiserver_flowcontrol_dispatched_requests_total{")
            and 'flow_schema="service-accounts"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def requests_by_kind(cluster: Cluster, user: str, since: datetime, until: datetime) -> dict[str, int]:
    """Requests `user` made between two times, by verb and resource (and the answer's code when
    it is not a success), from the audit log (its rotated files too): each counted in the
    window it was received in, once answered (a watch still open when the log is read is not)."""
    counts: dict[str, int] = {}
    quoted = json.dumps(user)
    for path in cluster.audit_files():
        with path.open() as lines:
            for line in lines:
                if quoted not in line or '"ResponseComplete"' not in line or not line.endswith("\n"):
                    continue  # not the user's, not answered yet, or still being written
                event = json.loads(line)
                if event.get("user", {}).get("username") != user:
                    continue
                received = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
                ref = event.get("objectRef") or {}
                if since <= received < until and ref:
                    resource = ref.get("resource", "") + (
                        f"/{ref['subresource']}" if ref.get("subresource") else ""
                    )
                    key = f"{event['verb']} {resource}"
                    code = (event.get("responseStatus") or {}).get("code", 200)
                    if not 200 <= code < 300:
                        key += f" ({code})"  # refused or failed: e.g. a write that lost a conflict
                    counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def histogram_buckets(text: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts of a Prometheus histogram, by upper bound."""
    return {
        float("inf") if le == "+Inf" else float(le): float(value)
        for le, value in re.findall(rf'^{name}_bucket{{le="([^"]+)"}} (\S+)$', text, re.M)
    }


def window_quantile(
    before: dict[float, float], after: dict[float, float], q: float
) -> tuple[float | None, float]:
    """The q-quantile (a bucket's upper bound) and the count of what a histogram recorded
    between two scrapes."""
    deltas = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    if not deltas or deltas[-1][1] <= 0:
        return None, 0.0
    total = deltas[-1][1]
    return next(le for le, count in deltas if count >= q * total), total


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text: str = response.read().decode()
    return text


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def testenv_bin_dir() -> Path:
    """The control plane's binaries (scripts/build-testenv.sh builds them once)."""
    built = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-testenv.sh")], capture_output=True, text=True, check=True
    )
    return Path(built.stdout.strip().splitlines()[-1])


def run(count: int, changes: int, steady_s: float) -> dict[str, Any]:
    bin_dir = testenv_bin_dir()
    workdir = Path(tempfile.mkdtemp(prefix="tritonscale-scale-"))
    say(f"starting the control plane with kwok nodes in {workdir}")
    cluster = Cluster.start(workdir / "cluster", bin_dir, [*default_node_pools(), bench_pool(count)])
    prometheus = LocalPrometheus([], work_dir=workdir / "prometheus").start()
    operator: subprocess.Popen[bytes] | None = None
    try:
        cluster.helm(
            "install", "tritonscale", str(CHART), "-n", "tritonscale-system", "--create-namespace", "--wait"
        )
        kubeconfig = cluster.service_account_kubeconfig(
            "tritonscale-system", "tritonscale", workdir / "operator.kubeconfig", create=False
        )
        for index in range(NAMESPACES):
            cluster.create_namespace(f"bench-{index}")
        say(f"creating {count} InferenceServices (operator not running yet)")
        documents = [service(i, prometheus.url) for i in range(count)]
        for start in range(0, count, 100):
            cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(documents[start : start + 100]))
        metrics_port, health_port = free_ports(2)
        requests_before = operator_requests(cluster)
        components_before = component_cpu()
        say("starting the operator")
        started, started_wall = time.monotonic(), datetime.now(UTC)
        log = (workdir / "operator.log").open("w")
        operator = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("tritonscale")),
                "run",
                "--kubeconfig",
                str(kubeconfig),
                "--metrics-port",
                str(metrics_port),
                "--health-port",
                str(health_port),
                "--log-format",
                "plain",
                "--no-read-triton-pods",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        done = 0
        while done < count:
            if operator.poll() is not None:
                raise RuntimeError(
                    f"the operator exited {operator.returncode}; see {workdir / 'operator.log'}"
                )
            done = sum(reconciled(item) for item in list_services(cluster))
            say(f"cold start: {done}/{count} reconciled after {time.monotonic() - started:.0f}s")
            if done < count:
                time.sleep(POLL_S)
            if time.monotonic() - started > 1800:
                break
        cold_s, cold_end_wall = time.monotonic() - started, datetime.now(UTC)
        cold_requests = operator_requests(cluster) - requests_before
        cpu0, _ = operator_usage(operator.pid)
        components_after = component_cpu()
        cold_cpu = {
            name: round(components_after.get(name, 0.0) - components_before.get(name, 0.0), 1)
            for name in components_after
        }

        say(f"{changes} spec changes, one at a time, under the autoscaling load")
        latencies: list[float] = []
        rng = random.Random(7)
        for change in range(changes):
            index = rng.randrange(count)
            ns, name = f"bench-{index % NAMESPACES}", f"svc-{index}"
            policy = ("RoundRobin", "LeastConnections", "PowerOfTwoChoices")[change % 3]
            before = cluster.get_json("inferenceservice", name, namespace=ns)["metadata"]["generation"]
            # A spec no earlier change gave (a service drawn twice once got the one it had:
            # no new generation, and the wait below ran out at 120 s).
            patch = {
                "spec": {
                    "loadBalancing": {"policy": policy},
                    "triton": {"args": [f"--log-verbose={change + 1}"]},
                }
            }
            sent = time.monotonic()
            cluster.kubectl(
                "patch", "inferenceservice", name, "-n", ns, "--type=merge", "-p", json.dumps(patch)
            )
            while True:
                item = cluster.get_json("inferenceservice", name, namespace=ns)
                if item["metadata"]["generation"] > before and reconciled(item):
                    break
                if time.monotonic() - sent > 120:
                    say(f"  {ns}/{name}: generation {before} not reconciled after 120 s")
                    break
                time.sleep(0.05)
            latencies.append(time.monotonic() - sent)
        say(f"spec changes: p50 {percentile(latencies, 0.5):.2f}s, p99 {percentile(latencies, 0.99):.2f}s")

        # The controllers and kwok start the pods well after the stacks are written: until every
        # stack is Ready, status refreshes and first decisions are still coming, not a steady state.
        serving_count = 0
        while time.monotonic() - started < 1800:
            serving_count = sum(serving(item) for item in list_services(cluster))
            say(f"settling: {serving_count}/{count} Ready after {time.monotonic() - started:.0f}s")
            if serving_count >= count:
                break
            time.sleep(POLL_S)
        serving_s = time.monotonic() - started

        say(f"steady state for {steady_s:.0f}s")
        lateness = "tritonscale_autoscale_tick_lateness_seconds"
        first = histogram_buckets(scrape(metrics_port), lateness)
        cpu1, _ = operator_usage(operator.pid)
        requests1 = operator_requests(cluster)
        rss_samples: list[float] = []
        window_start, window_start_wall = time.monotonic(), datetime.now(UTC)
        while time.monotonic() - window_start < steady_s:
            rss_samples.append(operator_usage(operator.pid)[1])
            time.sleep(5)
        elapsed = time.monotonic() - window_start
        cpu2, rss = operator_usage(operator.pid)
        requests2 = operator_requests(cluster)
        window_end_wall = datetime.now(UTC)
        last = histogram_buckets(scrape(metrics_port), lateness)
        say("counting the cold start's and the steady window's requests in the audit log")
        cold_by_kind = requests_by_kind(cluster, OPERATOR_USER, started_wall, cold_end_wall)
        by_kind = requests_by_kind(cluster, OPERATOR_USER, window_start_wall, window_end_wall)
        lateness_p99, ticks = window_quantile(first, last, 0.99)
        lateness_p50, _ = window_quantile(first, last, 0.5)
        return {
            "count": count,
            "cpus": os.cpu_count(),
            "cold_start_s": round(cold_s, 1),
            "all_reconciled": done >= count,
            # From the operator's start until every stack is Ready (all its pods started).
            "all_ready_s": round(serving_s, 1),
            "all_ready": serving_count >= count,
            "cold_start_api_requests_per_s": round(cold_requests / cold_s, 1),
            # Per service, so that runs of different sizes compare.
            "cold_start_api_requests_per_service_by_kind": {
                kind: round(n / count, 2) for kind, n in cold_by_kind.items()
            },
            "cold_start_cpu_s": round(cpu0, 1),
            "cold_start_cpu_s_by_component": cold_cpu,
            "spec_change_s": {
                "p50": round(percentile(latencies, 0.5), 2),
                "p99": round(percentile(latencies, 0.99), 2),
                "max": round(max(latencies), 2),
                "samples": len(latencies),
            },
            "steady": {
                "window_s": round(elapsed, 1),
                "ticks_per_s": round(ticks / elapsed, 1),
                "expected_ticks_per_s": round(count / 10.0, 1),
                "tick_lateness_p50_s_at_most": lateness_p50,
                "tick_lateness_p99_s_at_most": lateness_p99,
                "operator_cpu_percent": round(100 * (cpu2 - cpu1) / elapsed, 1),
                "operator_rss_mb": round(rss, 1),
                "operator_rss_mb_max": round(max([*rss_samples, rss]), 1),
                "api_requests_per_s": round((requests2 - requests1) / elapsed, 1),
                "api_requests_per_s_by_kind": {kind: round(n / elapsed, 2) for kind, n in by_kind.items()},
            },
        }
    finally:
        if operator is not None:
            operator.terminate()
            try:
                operator.wait(timeout=30)
            except subprocess.TimeoutExpired:
                operator.kill()
        prometheus.stop()
        cluster.stop()


def floor(count: int) -> dict[str, Any]:
    """The time the control plane alone takes to accept every stack's objects."""
    from concurrent.futures import ThreadPoolExecutor

    from tritonscale.api.resource import parse_inference_service
    from tritonscale.clients.kube import KubeClient
    from tritonscale.policy.placement import split_replicas
    from tritonscale.policy.replicas import reconciled_replicas
    from tritonscale.render.stack import RenderOptions, render_stack

    bin_dir = testenv_bin_dir()
    workdir = Path(tempfile.mkdtemp(prefix="tritonscale-floor-"))
    say(f"starting the control plane with kwok nodes in {workdir}")
    cluster = Cluster.start(workdir / "cluster", bin_dir, [*default_node_pools(), bench_pool(count)])
    try:
        for index in range(NAMESPACES):
            cluster.create_namespace(f"bench-{index}")
        objects = []
        for index in range(count):
            parsed = parse_inference_service(service(index, UNREACHABLE))
            placement = split_replicas(reconciled_replicas(parsed), parsed.spec.capacity)
            objects += render_stack(parsed, placement, RenderOptions())
        client = KubeClient.connect(str(cluster.kubeconfig), connections=8)
        before = component_cpu()
        say(f"applying {len(objects)} objects of {count} stacks from 8 threads")
        started, client_before = time.monotonic(), time.process_time()
        with ThreadPoolExecutor(8) as pool:
            for done, _ in enumerate(pool.map(client.server_side_apply, objects), start=1):
                if done % 1000 == 0:
                    say(f"{done}/{len(objects)} written after {time.monotonic() - started:.0f}s")
        elapsed = time.monotonic() - started
        client_cpu = time.process_time() - client_before
        after = component_cpu()
        return {
            "count": count,
            "cpus": os.cpu_count(),
            "objects": len(objects),
            "all_written_s": round(elapsed, 1),
            "writes_per_s": round(len(objects) / elapsed, 1),
            "client_cpu_s": round(client_cpu, 1),  # this process: the Python client, as the operator's
            "cpu_s_by_component": {
                name: round(after.get(name, 0.0) - before.get(name, 0.0), 1) for name in after
            },
        }
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1000, help="InferenceServices to create")
    parser.add_argument("--changes", type=int, default=50, help="spec changes to time")
    parser.add_argument(
        "--steady-s", type=float, default=300.0, help="length of the steady window (default: a resync period)"
    )
    parser.add_argument("--out", type=Path, default=None, help=f"JSON results (default {RESULTS.name})")
    parser.add_argument("--floor", action="store_true", help="the control plane alone: see above")
    args = parser.parse_args()
    result = floor(args.count) if args.floor else run(args.count, args.changes, args.steady_s)
    args.out = args.out or RESULTS.with_name("operator_scale_floor.json" if args.floor else RESULTS.name)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
