"""Router benchmark: real tritonservers behind the real HAProxy router, load from `tritonscale bench`.

    .venv/bin/python benchmarks/router.py            # about 5 minutes; writes benchmarks/results/router.json

Measures, in one run:
  (a) router overhead: open loop at 500 req/s on the `instant` model, straight to one Triton
      replica and through the router with that replica as its only server (HTTP and gRPC);
      the added p50 and p99 (medians of repeated, interleaved runs);
  (b) balancing policies on heterogeneous replicas: two replicas and one 10x slower, the same
      Poisson arrivals at 75% of their total capacity for each policy (RoundRobin,
      LeastConnections, PowerOfTwoChoices): throughput, errors and latency percentiles;
  (c) the load generator's own ceiling on one core: `tritonscale bench` pinned to CPU 0 against
      the `instant` model, everything else on CPU 1; its request rate and CPU use.
Targets: router adds <= 0.3 ms p50 and <= 1 ms p99 at 500 req/s; LeastConnections p99 <= 0.6 x
RoundRobin p99 on (b); the bench drives >= 2,000 req/s from one core.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tritonscale.api.resource import parse_inference_service
from tritonscale_sandbox.router import DnsServer, LocalRouter
from tritonscale_sandbox.triton import (
    TRITON_VERSION,
    SimulatedModel,
    TritonPool,
    TritonServer,
    instant_model,
    model_repository,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "router.json"
BENCH = [str(Path(sys.executable).with_name("tritonscale"))]
BENCH_CPU = "0"
SERVER_CPU = "1"

OVERHEAD_RATE = 500
OVERHEAD_PAIRS = 8
OVERHEAD_SECONDS = 3.0

WORK_MODEL = "work"
WORK_MS_PER_ITEM = 4.0  # a fast replica serves 250 items/s, batched or not
SLOW_FACTOR = 10.0
FAST_REPLICAS = 2
UTILISATION = 0.75
POLICY_SECONDS = 15.0
POLICY_TIMEOUT_S = 10.0
POLICIES = ("RoundRobin", "LeastConnections", "PowerOfTwoChoices")

CEILING_SECONDS = 6.0


def service_for(policy: str, replicas: int) -> Any:
    return parse_inference_service(
        {
            "apiVersion": "tritonscale.io/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": "bench", "namespace": "default"},
            "spec": {
                "model": {"repository": "file:///models", "names": [WORK_MODEL]},
                "replicas": replicas,
                "loadBalancing": {"policy": policy},
            },
        }
    )


def pin(pids: Sequence[int | None], cpu: str) -> None:
    """Move processes (all their threads) to `cpu`."""
    for pid in pids:
        if pid:
            subprocess.run(["taskset", "-a", "-pc", cpu, str(pid)], capture_output=True, check=False)


def pin_server(server: TritonServer) -> None:
    pin(server.process_ids(), SERVER_CPU)


def bench(*args: str) -> tuple[dict[str, Any], float]:
    """Run `tritonscale bench` pinned to BENCH_CPU; return its JSON and its CPU seconds."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = ["taskset", "-c", BENCH_CPU, *BENCH, "bench", "--no-progress", "--json", out.name, *args]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        stderr = process.stderr.read().decode() if process.stderr else ""
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{stderr}")
        document: dict[str, Any] = json.loads(Path(out.name).read_text())
    return document, usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def router_for(policy: str, addresses: list[str], slots: int, work: Path) -> Iterator[LocalRouter]:
    with (
        DnsServer("triton.test", addresses, work_dir=work / f"dns-{policy}") as dns,
        LocalRouter(service_for(policy, slots), dns, work_dir=work / f"router-{policy}") as router,
    ):
        pin([router.pid], SERVER_CPU)
        router.wait_ready(hosts=addresses)
        yield router


def overhead(pool: TritonPool, work: Path) -> dict[str, Any]:
    """(a): direct vs through the router, one replica. Short runs alternate direct and router
    so that both see the same background noise; the added latency is the median of the
    differences within pairs."""
    target = pool[0]
    results: dict[str, Any] = {}
    with router_for("RoundRobin", [target.host], 2, work) as router:
        for protocol, direct, routed in (
            ("http", target.http_endpoint, router.http_endpoint),
            ("grpc", target.grpc_url, router.grpc_endpoint),
        ):
            runs: dict[str, list[dict[str, Any]]] = {"direct": [], "router": []}
            for pair in range(OVERHEAD_PAIRS):
                order = [("direct", direct), ("router", routed)]
                for path, endpoint in order if pair % 2 == 0 else reversed(order):
                    document, _ = bench(
                        "--url", endpoint, "--protocol", protocol,
                        "--model", "instant", "--shape", "INPUT0:1",
                        "--rate", str(OVERHEAD_RATE), "--duration", str(OVERHEAD_SECONDS), "--warmup", "0.5",
                        "--seed", str(pair),
                    )  # fmt: skip
                    runs[path].append(document["runs"][0])
            row: dict[str, Any] = {}
            for path, chosen in runs.items():
                row[path] = {
                    "p50_ms": statistics.median(r["latency_ms"]["p50"] for r in chosen),
                    "p99_ms": statistics.median(r["latency_ms"]["p99"] for r in chosen),
                    "errors": sum(r["error_count"] for r in chosen),
                    "runs_fell_behind": sum(r["schedule"]["fell_behind"] for r in chosen),
                }
            for key in ("p50", "p99"):
                added = [
                    r["latency_ms"][key] - d["latency_ms"][key]
                    for d, r in zip(runs["direct"], runs["router"], strict=True)
                ]
                row[f"added_{key}_ms"] = statistics.median(added)
                row[f"added_{key}_pairs_ms"] = [round(a, 3) for a in added]
            results[protocol] = row
    return results


def policies(pool: TritonPool, work: Path) -> dict[str, Any]:
    """(b): the same open-loop load through each policy; the slow replica restarts before each
    run so that no backlog from the previous policy is left in its queue."""
    capacity = FAST_REPLICAS * 1000 / WORK_MS_PER_ITEM + 1000 / (WORK_MS_PER_ITEM * SLOW_FACTOR)
    rate = round(UTILISATION * capacity)
    results: dict[str, Any] = {"offered_rps": rate, "capacity_rps": capacity, "utilisation": UTILISATION}
    slow_index = len(pool) - 1
    for policy in POLICIES:
        pool.restart(slow_index)
        pin_server(pool[slow_index])
        with router_for(policy, pool.addresses, len(pool), work) as router:
            document, _ = bench(
                "--url", router.http_endpoint, "--model", WORK_MODEL, "--shape", "INPUT0:1",
                "--rate", str(rate),
                "--duration", str(POLICY_SECONDS), "--warmup", "2", "--timeout", str(POLICY_TIMEOUT_S),
                "--connections", "2000", "--seed", "7",
            )  # fmt: skip
            run = document["runs"][0]
            sent = {s.host: s.total_sessions for s in router.servers("triton_http")}
        slow_host = pool[slow_index].host
        results[policy] = {
            "throughput_rps": run["throughput_rps"],
            "offered_rps": run["schedule"]["offered_rps"],
            "errors": run["errors"],
            "latency_ms": run["latency_ms"],
            "latency_with_errors_ms": run["latency_with_errors_ms"],
            "slow_replica_share": sent.get(slow_host, 0) / max(1, sum(sent.values())),
            "fell_behind": run["schedule"]["fell_behind"],
        }
    pool.restart(slow_index)
    pin_server(pool[slow_index])
    return results


def ceiling(pool: TritonPool) -> dict[str, Any]:
    """(c): how many requests per second `tritonscale bench` drives from one core."""
    target = pool[0]
    results: dict[str, Any] = {}
    cases = {
        "grpc_closed_64": ("--url", target.grpc_url, "--protocol", "grpc", "--concurrency", "64"),
        "http_closed_64": ("--url", target.http_endpoint, "--protocol", "http", "--concurrency", "64"),
        "grpc_open_2000": ("--url", target.grpc_url, "--protocol", "grpc", "--rate", "2000"),
        "http_open_2000": ("--url", target.http_endpoint, "--protocol", "http", "--rate", "2000"),
    }
    for name, args in cases.items():
        started = time.monotonic()
        document, cpu_s = bench(
            *args, "--model", "instant", "--shape", "INPUT0:1",
            "--duration", str(CEILING_SECONDS), "--warmup", "1",
        )  # fmt: skip
        wall = time.monotonic() - started
        run = document["runs"][0]
        row = {
            "throughput_rps": run["throughput_rps"],
            "errors": run["error_count"],
            "p50_ms": run["latency_ms"]["p50"],
            "p99_ms": run["latency_ms"]["p99"],
            # CPU seconds of the whole bench process (start-up included) per wall second.
            "bench_cpu_fraction": cpu_s / wall,
        }
        if "schedule" in run:
            row["fell_behind"] = run["schedule"]["fell_behind"]
            row["send_lag_p99_ms"] = run["schedule"]["send_lag_ms"]["p99"]
        results[name] = row
    return results


def machine() -> dict[str, Any]:
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    haproxy = subprocess.run(
        ["haproxy", "-v"], capture_output=True, text=True, check=False
    ).stdout.splitlines()[0]
    dnsmasq = subprocess.run(
        ["dnsmasq", "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()[0]
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "os": platform.freedesktop_os_release().get("PRETTY_NAME", ""),
        "python": platform.python_version(),
        "haproxy": haproxy,
        "dnsmasq": dnsmasq,
        "tritonserver": TRITON_VERSION,
        "tritonclient": importlib.metadata.version("tritonclient"),
        "grpcio": importlib.metadata.version("grpcio"),
        "aiohttp": importlib.metadata.version("aiohttp"),
        "pinning": f"bench on CPU {BENCH_CPU}; tritonservers, haproxy and dnsmasq on CPU {SERVER_CPU}",
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"### (a) Router overhead, open loop {OVERHEAD_RATE} req/s, `instant` model, one replica "
        f"({OVERHEAD_PAIRS} alternating pairs of {OVERHEAD_SECONDS:g} s runs; medians)",
        "",
    ]
    lines += [
        "| protocol | direct p50 | router p50 | added p50 | direct p99 | router p99 | added p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for protocol, row in result["overhead"].items():
        lines.append(
            f"| {protocol} | {row['direct']['p50_ms']:.3f} ms | {row['router']['p50_ms']:.3f} ms | "
            f"**{row['added_p50_ms']:+.3f} ms** | {row['direct']['p99_ms']:.3f} ms | {row['router']['p99_ms']:.3f} ms | "
            f"**{row['added_p99_ms']:+.3f} ms** |"
        )
    policy = result["policies"]
    lines += [
        "",
        f"### (b) Policies, {FAST_REPLICAS} replicas + 1 replica {SLOW_FACTOR:g}x slower, open loop "
        f"{policy['offered_rps']} req/s (utilisation {policy['utilisation']:.2f} of {policy['capacity_rps']:.0f} req/s), HTTP",
        "",
        "| policy | throughput | errors | slow replica share | p50 | p99 | max | p99 counting errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in POLICIES:
        row = policy[name]
        errors = ", ".join(f"{k} {v}" for k, v in row["errors"].items()) or "0"
        lat = row["latency_ms"]
        lines.append(
            f"| {name} | {row['throughput_rps']:.1f} req/s | {errors} | {row['slow_replica_share']:.3f} | "
            f"{lat['p50']:.1f} ms | {lat['p99']:.1f} ms | {lat['max']:.1f} ms | "
            f"{row['latency_with_errors_ms']['p99']:.1f} ms |"
        )
    lines += ["", "### (c) Bench ceiling, one core (`taskset -c 0`), `instant` model", ""]
    lines += ["| case | req/s | bench CPU (cores) | p50 | p99 | on schedule |", "|---|---|---|---|---|---|"]
    for name, row in result["ceiling"].items():
        on_schedule = "-" if "fell_behind" not in row else ("no" if row["fell_behind"] else "yes")
        lines.append(
            f"| {name} | {row['throughput_rps']:.0f} | {row['bench_cpu_fraction']:.2f} | {row['p50_ms']:.2f} ms | "
            f"{row['p99_ms']:.2f} ms | {on_schedule} |"
        )
    lines += ["", "### Targets", ""]
    for name, (met, detail) in result["targets"].items():
        lines.append(f"- {name}: {'met' if met else 'NOT met'} ({detail})")
    facts = result["machine"]
    lines += [
        "",
        f"Machine: {facts['cores']} cores ({facts['cpu']}), {facts['memory_gib']} GiB, {facts['os']}, kernel "
        f"{facts['kernel']}; Python {facts['python']}; {facts['haproxy']}; {facts['dnsmasq']}; tritonserver "
        f"{facts['tritonserver']}; tritonclient {facts['tritonclient']}, grpcio {facts['grpcio']}, aiohttp "
        f"{facts['aiohttp']}; {facts['pinning']}; load average before/after "
        f"{result['load_average']['before']} / {result['load_average']['after']}.",
    ]
    return "\n".join(lines)


def targets(result: dict[str, Any]) -> dict[str, tuple[bool, str]]:
    http = result["overhead"]["http"]
    grpc = result["overhead"]["grpc"]
    # Timed-out requests count (with the timeout): RoundRobin's successes alone look fast
    # because its slowest requests never succeed.
    rr = result["policies"]["RoundRobin"]["latency_with_errors_ms"]["p99"]
    lc = result["policies"]["LeastConnections"]["latency_with_errors_ms"]["p99"]
    best = max(row["throughput_rps"] for row in result["ceiling"].values())
    return {
        "router adds <= 0.3 ms p50 at 500 req/s (HTTP)": (
            http["added_p50_ms"] <= 0.3,
            f"HTTP {http['added_p50_ms']:+.3f} ms, gRPC {grpc['added_p50_ms']:+.3f} ms",
        ),
        "router adds <= 1 ms p99 at 500 req/s (HTTP)": (
            http["added_p99_ms"] <= 1.0,
            f"HTTP {http['added_p99_ms']:+.3f} ms, gRPC {grpc['added_p99_ms']:+.3f} ms",
        ),
        "LeastConnections p99 <= 0.6 x RoundRobin p99": (
            lc <= 0.6 * rr,
            f"{lc:.1f} ms vs {rr:.1f} ms = {lc / rr:.3f}x",
        ),
        "bench >= 2,000 req/s from one core": (best >= 2000, f"best {best:.0f} req/s"),
    }


def main() -> None:
    if (os.cpu_count() or 1) < 2:
        sys.exit("needs 2 CPUs: one for the bench, one for the servers")
    before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="tritonscale-router-bench-") as tmp:
        work = Path(tmp)
        repo = model_repository(
            work / "models",
            [
                instant_model(),
                SimulatedModel(
                    name=WORK_MODEL, base_ms=0.0, per_item_ms=WORK_MS_PER_ITEM, max_queue_delay_us=0
                ),
            ],
        )
        with TritonPool(
            FAST_REPLICAS + 1, repo, log_dir=work / "logs", slow_factors={FAST_REPLICAS: SLOW_FACTOR}
        ) as pool:
            for server in pool:
                pin_server(server)
            print("(a) router overhead ...", file=sys.stderr, flush=True)
            result: dict[str, Any] = {"overhead": overhead(pool, work)}
            print("(b) policies ...", file=sys.stderr, flush=True)
            result["policies"] = policies(pool, work)
            print("(c) bench ceiling ...", file=sys.stderr, flush=True)
            result["ceiling"] = ceiling(pool)
    result["machine"] = machine()
    result["load_average"] = {
        "before": [round(x, 2) for x in before],
        "after": [round(x, 2) for x in os.getloadavg()],
    }
    result["targets"] = targets(result)
    result["generated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(markdown(result))
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
