"""What Triton's latency summaries cost (issue 10, item 6): the real tritonserver with
`--metrics-config summary_latencies=true` (the quantiles the operator renders) and with them
off, on the `instant` model, saturated by `tritonscale bench` in closed loop.

    .venv/bin/python benchmarks/triton_summaries.py   # about 4 minutes; writes benchmarks/results/triton_summaries.json

The server is pinned to CPU 1 and the load generator to CPU 0, runs alternate on and off, and
each figure is the median of REPEATS runs: throughput, and the server's own CPU time per request
(all its processes, from /proc), whose difference is what each request pays for the summaries.
Users report summaries costing up to a third of throughput on fast GPU models; the CPU time per
request says what that is here, whatever the model's own speed.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from tritonscale.render.triton import DEFAULT_SUMMARY_QUANTILES
from tritonscale_sandbox.triton import (
    TRITON_VERSION,
    TritonServer,
    install_triton,
    instant_model,
    model_repository,
)

# The router benchmark's bench runner and pinning, as they are.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from router import bench, pin

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "triton_summaries.json"
REPEATS = 5
RUN_SECONDS = 15.0
CONCURRENCY = 16
SERVER_CPU = "1"
QUANTILES = ",".join(f"{q:g}:{e:g}" for q, e in DEFAULT_SUMMARY_QUANTILES)


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time of these processes so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def one_run(setting: str, repository: Path, work: Path) -> dict[str, Any]:
    model = instant_model().name
    server = TritonServer(
        repository,
        host="127.0.0.1",
        install=install_triton(),
        log_dir=work,
        models=(model,),
        summary_latencies=setting == "on",
        extra_args=[f"--metrics-config=summary_quantiles={QUANTILES}"],
    )
    server.start()
    try:
        server.wait_ready(90)
        pids = [pid for pid in server.process_ids() if pid]
        pin(pids, SERVER_CPU)
        endpoint = f"{server.host}:{server.http_port}"
        common = [
            "--url",
            endpoint,
            "--model",
            model,
            "--shape",
            "INPUT0:1",
            "--concurrency",
            str(CONCURRENCY),
        ]
        bench(*common, "--duration", "3", "--warmup", "0")  # warm the connections and the backend
        before = cpu_seconds(pids)
        document, _ = bench(*common, "--duration", f"{RUN_SECONDS:g}", "--warmup", "0")
        spent = cpu_seconds(pids) - before
        metrics = requests.get(f"http://{server.host}:{server.metrics_port}/metrics", timeout=5).text
        summaries = "nv_inference_request_summary_us{" in metrics
        assert summaries == (setting == "on"), f"summaries {'missing' if setting == 'on' else 'present'}"
        run = document["runs"][0]
        return {
            "throughput_rps": run["throughput_rps"],
            "server_cpu_us_per_request": spent / max(run["successes"], 1) * 1e6,
            "p50_ms": run["latency_ms"]["p50"],
        }
    finally:
        server.stop()


def main() -> None:
    runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory(prefix="triton-summaries-") as folder:
        work = Path(folder)
        repository = model_repository(work / "models", [instant_model()])
        for repeat in range(REPEATS):
            for setting in ("on", "off") if repeat % 2 == 0 else ("off", "on"):
                began = time.monotonic()
                runs[setting].append(one_run(setting, repository, work))
                result = runs[setting][-1]
                print(
                    f"[{repeat + 1}/{REPEATS}] summaries {setting:3}: {result['throughput_rps']:7.0f} req/s, "
                    f"{result['server_cpu_us_per_request']:6.0f} us server CPU/request ({time.monotonic() - began:.0f} s)",
                    flush=True,
                )
    median = {
        setting: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for setting, results in runs.items()
    }
    cost_us = median["on"]["server_cpu_us_per_request"] - median["off"]["server_cpu_us_per_request"]
    loss = 1 - median["on"]["throughput_rps"] / median["off"]["throughput_rps"]
    document = {
        "triton": TRITON_VERSION,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "setup": {"model": "instant (Python backend, no work)", "concurrency": CONCURRENCY, "run_s": RUN_SECONDS,
                  "repeats": REPEATS, "quantiles": QUANTILES},
        "median": median,
        "summary_cpu_us_per_request": cost_us,
        "throughput_loss": loss,
        "runs": runs,
    }  # fmt: skip
    RESULTS.write_text(json.dumps(document, indent=1) + "\n")
    print(
        f"summaries on : {median['on']['throughput_rps']:.0f} req/s, {median['on']['server_cpu_us_per_request']:.0f} us/request\n"
        f"summaries off: {median['off']['throughput_rps']:.0f} req/s, {median['off']['server_cpu_us_per_request']:.0f} us/request\n"
        f"cost: {cost_us:.1f} us of server CPU per request, {loss:.1%} of throughput; written to {RESULTS}"
    )


if __name__ == "__main__":
    main()
