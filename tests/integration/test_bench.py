"""`tritonscale bench` against real tritonservers: open and closed loop, HTTP and gRPC, JSON and
PNG reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tritonscale.cli import main
from tritonscale_sandbox.triton import TritonPool

pytestmark = pytest.mark.integration

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def bench(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        main, ["bench", "--no-progress", "--json", "-", *args], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    start = result.stdout.index("{")
    document: dict[str, Any] = json.loads(result.stdout[start:])
    return document


def assert_sane(document: dict[str, Any], runs: int = 1) -> None:
    assert len(document["runs"]) == runs
    for run in document["runs"]:
        assert run["successes"] > 0
        assert run["requests"] == run["successes"]
        assert run["errors"] == {} and run["error_count"] == 0
        latency = run["latency_ms"]
        ordered = [latency[key] for key in ("p50", "p90", "p95", "p99", "max")]
        assert all(value is not None and value > 0 for value in ordered)
        assert ordered == sorted(ordered), latency
        assert run["throughput_rps"] == pytest.approx(run["successes"] / run["duration_s"])
    summary = document["summary"]
    assert summary["runs"] == runs
    assert summary["successes"] == sum(run["successes"] for run in document["runs"])


def test_open_loop_over_http_with_plot(triton_pool: TritonPool, tmp_path: Path) -> None:
    plot = tmp_path / "latency.png"
    document = bench(
        "--url", triton_pool[0].http_endpoint, "--model", "simulated", "--rate", "80",
        "--duration", "3", "--warmup", "0.5", "--plot", str(plot),
    )  # fmt: skip
    assert_sane(document)
    run = document["runs"][0]
    assert document["config"]["mode"] == "open"
    # Poisson arrivals at 80/s for 3 s: about 240 requests (5 sigma is about 77).
    assert 160 <= run["requests"] <= 320
    assert run["schedule"]["scheduled"] == run["requests"]
    assert not run["schedule"]["fell_behind"]
    # The simulated model takes 20 ms + 1 ms per item, and latency counts from the scheduled time.
    assert run["latency_ms"]["p50"] >= 20
    assert plot.read_bytes().startswith(PNG_MAGIC)


def test_closed_loop_over_grpc_repeated(triton_pool: TritonPool) -> None:
    document = bench(
        "--url", triton_pool[1].grpc_url, "--protocol", "grpc", "--model", "instant",
        "--concurrency", "4", "--duration", "1.5", "--warmup", "0.3", "--repeat", "2",
    )  # fmt: skip
    assert_sane(document, runs=2)
    assert document["config"]["mode"] == "closed"
    spread = document["summary"]["latency_ms"]["p50"]
    assert spread["min"] <= spread["median"] <= spread["max"]


def test_open_loop_follows_a_schedule_and_a_trace(triton_pool: TritonPool, tmp_path: Path) -> None:
    document = bench(
        "--url", triton_pool[0].http_endpoint, "--schedule", "step:50@0,150@1",
        "--duration", "2", "--warmup", "0",
    )  # fmt: skip
    assert_sane(document)
    # 50/s for 1 s then 150/s for 1 s: about 200 requests.
    assert 130 <= document["runs"][0]["requests"] <= 270

    trace = tmp_path / "trace.csv"
    trace.write_text("time_s,rate_rps\n0,40\n1,120\n")
    document = bench(
        "--url", triton_pool[0].http_endpoint, "--trace", str(trace), "--duration", "2", "--warmup", "0"
    )
    assert_sane(document)
    assert 100 <= document["runs"][0]["requests"] <= 220


def test_unreachable_endpoint_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["bench", "--url", "127.0.0.1:9", "--duration", "1", "--timeout", "2"])
    assert result.exit_code != 0
    assert "cannot serve model instant" in result.output
