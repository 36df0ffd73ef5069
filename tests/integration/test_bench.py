"""`tritonscale bench` against real tritonservers: open and closed loop, HTTP and gRPC, JSON and
PNG reports, and a model the bench knows nothing about (inputs from its metadata)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tritonscale.cli import main
from tritonscale_sandbox.triton import TritonInstall, TritonPool

pytestmark = pytest.mark.integration

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
INSTANT = ("--model", "instant", "--shape", "INPUT0:1")
"""The sandbox's `instant` model takes INPUT0 FP32 [-1]: one value per row."""


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
        "--url", triton_pool[0].http_endpoint, "--model", "simulated", "--shape", "INPUT0:1", "--rate", "80",
        "--duration", "3", "--warmup", "0.5", "--plot", str(plot),
    )  # fmt: skip
    assert_sane(document)
    run = document["runs"][0]
    assert document["config"]["mode"] == "open"
    # Poisson arrivals at 80/s for 3 s: about 240 requests (5 sigma is about 77).
    assert 160 <= run["requests"] <= 320
    assert run["schedule"]["scheduled"] == run["requests"]
    # Kept to the schedule: nothing dropped, and under half the sends over 10 ms late (the
    # bench shares 2 cores with Triton here, and a busy machine delays some; a scheduler that
    # lags is late on nearly all).
    assert run["schedule"]["dropped"] == 0
    assert run["schedule"]["very_late_sends"] <= 0.5 * run["schedule"]["sent"], run["schedule"]
    # The simulated model takes 20 ms + 1 ms per item, and latency counts from the scheduled time.
    assert run["latency_ms"]["p50"] >= 20
    assert plot.read_bytes().startswith(PNG_MAGIC)


def test_closed_loop_over_grpc_repeated(triton_pool: TritonPool) -> None:
    document = bench(
        "--url", triton_pool[1].grpc_url, "--protocol", "grpc", *INSTANT,
        "--concurrency", "4", "--duration", "1.5", "--warmup", "0.3", "--repeat", "2",
    )  # fmt: skip
    assert_sane(document, runs=2)
    assert document["config"]["mode"] == "closed"
    spread = document["summary"]["latency_ms"]["p50"]
    assert spread["min"] <= spread["median"] <= spread["max"]


def test_open_loop_follows_a_schedule_and_a_trace(triton_pool: TritonPool, tmp_path: Path) -> None:
    document = bench(
        "--url", triton_pool[0].http_endpoint, *INSTANT, "--schedule", "step:50@0,150@1",
        "--duration", "2", "--warmup", "0",
    )  # fmt: skip
    assert_sane(document)
    # 50/s for 1 s then 150/s for 1 s: about 200 requests.
    assert 130 <= document["runs"][0]["requests"] <= 270

    trace = tmp_path / "trace.csv"
    trace.write_text("time_s,rate_rps\n0,40\n1,120\n")
    document = bench(
        "--url",
        triton_pool[0].http_endpoint,
        *INSTANT,
        "--trace",
        str(trace),
        "--duration",
        "2",
        "--warmup",
        "0",
    )
    assert_sane(document)
    assert 100 <= document["runs"][0]["requests"] <= 220


def test_unreachable_endpoint_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["bench", "--url", "127.0.0.1:9", *INSTANT, "--duration", "1", "--timeout", "2"]
    )
    assert result.exit_code != 0
    assert "cannot serve model instant" in result.output


# --------------------------------------------------------------------------------------------
# Any model: a Python-backend model written here, which the bench was not written for.

REVIEWS_CONFIG = """
name: "reviews"
backend: "python"
max_batch_size: 8
input [
  { name: "TOKENS", data_type: TYPE_INT64, dims: [ -1 ] },
  { name: "LANG", data_type: TYPE_STRING, dims: [ 1 ] },
  { name: "WEIGHTS", data_type: TYPE_FP16, dims: [ 2 ], optional: true }
]
output [ { name: "SCORE", data_type: TYPE_FP32, dims: [ 1 ] } ]
dynamic_batching { }
instance_group [ { count: 1, kind: KIND_CPU } ]
"""

# Fails every request whose tensors are not exactly what the configuration says, so a run
# without errors shows that the bench sent the right names, datatypes and shapes.
REVIEWS_MODEL = textwrap.dedent(
    """
    import numpy as np
    import triton_python_backend_utils as pb_utils


    def problems(request):
        tokens = pb_utils.get_input_tensor_by_name(request, "TOKENS").as_numpy()
        lang = pb_utils.get_input_tensor_by_name(request, "LANG").as_numpy()
        weights = pb_utils.get_input_tensor_by_name(request, "WEIGHTS")
        rows = tokens.shape[0]
        if tokens.dtype != np.int64 or tokens.ndim != 2 or tokens.shape[1] < 1:
            yield f"TOKENS {tokens.dtype} {tokens.shape}"
        if lang.shape != (rows, 1) or not all(isinstance(v, bytes) and v for v in lang.reshape(-1)):
            yield f"LANG {lang.dtype} {lang.shape}"
        if weights is not None and (weights.as_numpy().dtype != np.float16 or weights.as_numpy().shape != (rows, 2)):
            yield f"WEIGHTS {weights.as_numpy().dtype} {weights.as_numpy().shape}"


    class TritonPythonModel:
        def execute(self, requests):
            responses = []
            for request in requests:
                wrong = list(problems(request))
                if wrong:
                    error = pb_utils.TritonError("unexpected inputs: " + "; ".join(wrong))
                    responses.append(pb_utils.InferenceResponse(error=error))
                    continue
                tokens = pb_utils.get_input_tensor_by_name(request, "TOKENS").as_numpy()
                score = tokens.mean(axis=1, keepdims=True).astype(np.float32)
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("SCORE", score)]))
            return responses
    """
)


@pytest.fixture(scope="module")
def reviews_server(
    triton_install: TritonInstall, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonPool]:
    """One tritonserver serving only the `reviews` model."""
    repository = tmp_path_factory.mktemp("any-model")
    (repository / "reviews" / "1").mkdir(parents=True)
    (repository / "reviews" / "config.pbtxt").write_text(REVIEWS_CONFIG)
    (repository / "reviews" / "1" / "model.py").write_text(REVIEWS_MODEL)
    pool = TritonPool(
        1,
        repository,
        install=triton_install,
        log_dir=tmp_path_factory.mktemp("any-model-logs"),
        models=("reviews",),
    )
    with pool:
        yield pool


def sent_shapes(document: dict[str, Any]) -> dict[str, tuple[str, list[list[int]]]]:
    return {item["name"]: (item["datatype"], item["shapes"]) for item in document["config"]["inputs"]}


def test_any_model_with_random_inputs_over_grpc(reviews_server: TritonPool) -> None:
    document = bench(
        "--url", reviews_server[0].grpc_url, "--protocol", "grpc", "--model", "reviews",
        "--shape", "TOKENS:6", "--batch", "3", "--concurrency", "2", "--duration", "1", "--warmup", "0.2",
    )  # fmt: skip
    assert_sane(document)
    # WEIGHTS is optional, but its shape is fixed: it is sent too.
    assert sent_shapes(document) == {
        "TOKENS": ("INT64", [[3, 6]]),
        "LANG": ("BYTES", [[3, 1]]),
        "WEIGHTS": ("FP16", [[3, 2]]),
    }
    assert document["config"]["input_data"] is None and document["config"]["shapes"] == {"TOKENS": [6]}


def test_any_model_with_inputs_from_a_file_over_http(reviews_server: TritonPool, tmp_path: Path) -> None:
    data = tmp_path / "reviews.json"
    data.write_text(
        json.dumps(
            {
                "data": [
                    {"TOKENS": [101, 7592, 102], "LANG": ["en"]},
                    {
                        "TOKENS": {"content": [101, 2, 3, 4, 102], "shape": [5]},
                        "LANG": ["de"],
                        "WEIGHTS": [0.5, 2],
                    },
                ]
            }
        )
    )
    document = bench(
        "--url", reviews_server[0].http_endpoint, "--model", "reviews", "--input-data", str(data),
        "--rate", "60", "--duration", "1", "--warmup", "0",
    )  # fmt: skip
    assert_sane(document)
    assert sent_shapes(document) == {
        "TOKENS": ("INT64", [[1, 3], [1, 5]]),
        "LANG": ("BYTES", [[1, 1]]),
        "WEIGHTS": ("FP16", [[1, 2]]),
    }


def test_any_model_refuses_what_it_cannot_send(reviews_server: TritonPool, tmp_path: Path) -> None:
    url = ["bench", "--url", reviews_server[0].http_endpoint, "--model", "reviews", "--duration", "1"]
    missing = CliRunner().invoke(main, url)
    assert missing.exit_code == 2
    assert "input TOKENS (INT64) of model reviews has shape [-1] with a dynamic dimension" in missing.output
    assert "--shape TOKENS:1" in missing.output

    too_big = CliRunner().invoke(main, [*url, "--shape", "TOKENS:4", "--batch", "9"])
    assert (
        too_big.exit_code == 2
        and "--batch 9 is more than the max_batch_size 8 of model reviews" in too_big.output
    )

    data = tmp_path / "bad.json"
    data.write_text(json.dumps({"data": [{"TOKENS": [1, 2], "LANG": [3]}]}))
    bad_data = CliRunner().invoke(main, [*url, "--input-data", str(data)])
    assert bad_data.exit_code == 2
    assert "data[0]: input LANG (BYTES [1]): BYTES values must be strings" in bad_data.output
