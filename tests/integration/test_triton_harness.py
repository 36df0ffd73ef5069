"""The local Triton harness against real tritonservers: readiness, both test models, service
time, dynamic batching, metrics, slow replicas and failures."""

from __future__ import annotations

import os
import re
import signal
import socket
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.reliability import record
from tritonscale.api.observation import ScalingTarget
from tritonscale.clients.observations import TritonModelConfigs, TritonSource
from tritonscale.policy.service_facts import batching
from tritonscale_sandbox.triton import (
    INSTANT_MODEL,
    IRIS_MODEL,
    SIMULATED_MODEL,
    IrisModel,
    SimulatedModel,
    TritonInstall,
    TritonPool,
    TritonServer,
    TritonServerError,
    free_loopback_block,
    install_dir,
    install_script,
    model_repository,
)

pytestmark = pytest.mark.integration

IRIS_SAMPLES = np.array(
    [
        [5.1, 3.5, 1.4, 0.2],  # a typical setosa
        [5.9, 3.0, 4.2, 1.5],  # a typical versicolor
        [6.7, 3.0, 5.2, 2.3],  # a typical virginica
    ],
    dtype=np.float32,
)


def client(server: TritonServer) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(
        url=server.http_endpoint, connection_timeout=10, network_timeout=30
    )


def infer_simulated(
    c: httpclient.InferenceServerClient, rows: int = 1, model: str = SIMULATED_MODEL
) -> httpclient.InferResult:
    data = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3)
    tensor = httpclient.InferInput("INPUT0", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    result = c.infer(model, [tensor])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)
    return result


def median_latency_ms(c: httpclient.InferenceServerClient, n: int = 7, rows: int = 1) -> float:
    infer_simulated(c, rows)  # warm the connection and the stub
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        infer_simulated(c, rows)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def refuses(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def test_install_is_idempotent_and_versioned(triton_install: TritonInstall) -> None:
    assert triton_install.is_complete()
    assert triton_install.root == install_dir()
    assert triton_install.root.name.startswith("triton-2.51.0-")
    assert (triton_install.backend_dir / "python" / "triton_python_backend_stub").is_file()
    assert (triton_install.backend_dir / "python" / "libtriton_python.so").is_file()
    started = time.monotonic()
    out = subprocess.run(["bash", str(install_script())], capture_output=True, text=True, check=True)
    assert time.monotonic() - started < 10
    assert out.stdout.strip().splitlines()[-1] == str(triton_install.root)


def test_pool_of_two_is_ready_on_distinct_addresses(triton_pool: TritonPool) -> None:
    assert len(triton_pool) == 2
    assert len(set(triton_pool.addresses)) == 2
    for server in triton_pool:
        assert server.is_running
        assert server.is_ready()
        for model in (SIMULATED_MODEL, INSTANT_MODEL, IRIS_MODEL):
            assert server.is_model_ready(model)
        assert server.http_url == f"http://{server.host}:8000"
        assert server.grpc_url == f"{server.host}:8001"
        assert server.metrics_url == f"http://{server.host}:8002/metrics"
        assert server.log_path.is_file()
        assert server.rss_bytes() > 10 * 2**20


def test_iris_classifies_deterministically_on_every_replica(triton_pool: TritonPool) -> None:
    answers = []
    for server in triton_pool:
        c = client(server)
        for _ in range(2):
            tensor = httpclient.InferInput("FEATURES", list(IRIS_SAMPLES.shape), "FP32")
            tensor.set_data_from_numpy(IRIS_SAMPLES)
            result = c.infer(IRIS_MODEL, [tensor])
            probabilities = result.as_numpy("PROBABILITIES")
            labels = [label.decode() for label in result.as_numpy("LABEL").reshape(-1)]
            assert probabilities.shape == (3, 3)
            assert probabilities.dtype == np.float32
            assert np.all(probabilities >= 0)
            np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
            assert list(probabilities.argmax(axis=1)) == [0, 1, 2]
            assert labels == ["setosa", "versicolor", "virginica"]
            answers.append(probabilities)
    for other in answers[1:]:
        np.testing.assert_array_equal(other, answers[0])


def test_simulated_models_echo_and_name_the_replica(triton_pool: TritonPool) -> None:
    for server in triton_pool:
        c = client(server)
        for model in (SIMULATED_MODEL, INSTANT_MODEL):
            result = infer_simulated(c, rows=2, model=model)
            assert [r.decode() for r in result.as_numpy("REPLICA").reshape(-1)] == [server.host] * 2
            assert result.as_numpy("BATCH_SIZE").reshape(-1).tolist() == [2, 2]


def test_simulated_latency_tracks_base_plus_per_item(triton_pool: TritonPool) -> None:
    # Default `simulated`: 20 ms + 1 ms per item.
    c = client(triton_pool[0])
    one = median_latency_ms(c, rows=1)  # ~21 ms
    full = median_latency_ms(c, rows=32)  # ~52 ms
    # Lower bounds and the per-item difference (31 ms): a loaded machine adds to both
    # medians alike, so no absolute upper bound.
    assert one >= 18 and full >= 45, (one, full)
    assert 20 <= full - one <= 90, (one, full)


def test_concurrent_requests_are_dynamically_batched(triton_pool: TritonPool) -> None:
    server = triton_pool[1]
    before = server.model_stats(SIMULATED_MODEL)["model_stats"][0]
    clients = [client(server) for _ in range(16)]

    def burst(c: httpclient.InferenceServerClient) -> list[int]:
        return [int(infer_simulated(c).as_numpy("BATCH_SIZE")[0, 0]) for _ in range(4)]

    with ThreadPoolExecutor(max_workers=16) as pool:
        batches = [b for part in pool.map(burst, clients) for b in part]
    # Triton may count a request just after its response reaches the client: let it settle.
    deadline = time.monotonic() + 5
    after = server.model_stats(SIMULATED_MODEL)["model_stats"][0]
    while int(after["inference_count"]) - int(before["inference_count"]) < 64 and time.monotonic() < deadline:
        time.sleep(0.05)
        after = server.model_stats(SIMULATED_MODEL)["model_stats"][0]
    inferences = int(after["inference_count"]) - int(before["inference_count"])
    executions = int(after["execution_count"]) - int(before["execution_count"])
    assert inferences == 64
    assert executions < inferences / 2, (executions, inferences)
    assert max(batches) > 1
    assert max(batches) <= 32
    sizes = {int(b["batch_size"]) for b in after["batch_stats"]}
    assert any(size > 1 for size in sizes)
    # The same on the metrics endpoint: exec_count < inference count.
    text = server.metrics_text()
    labels = f'model="{SIMULATED_MODEL}",version="1"'
    count = float(re.search(rf"^nv_inference_count\{{{labels}\}} (\S+)$", text, re.M)[1])  # type: ignore[index]
    execs = float(re.search(rf"^nv_inference_exec_count\{{{labels}\}} (\S+)$", text, re.M)[1])  # type: ignore[index]
    assert execs < count


def test_metrics_expose_latency_quantiles(triton_pool: TritonPool) -> None:
    server = triton_pool[0]
    c = client(server)
    for _ in range(5):
        infer_simulated(c)
    text = server.metrics_text()
    labels = f'model="{SIMULATED_MODEL}",version="1"'
    for quantile in ("0.5", "0.9", "0.95", "0.99"):
        match = re.search(
            rf'^nv_inference_request_summary_us\{{{labels},quantile="{quantile}"\}} (\S+)$', text, re.M
        )
        assert match, f"no {quantile} quantile in metrics"
        assert float(match[1]) >= 15_000  # microseconds; the model takes >= 20 ms
    assert re.search(r"^nv_inference_queue_summary_us\{", text, re.M)
    assert re.search(r"^nv_inference_pending_request_count\{", text, re.M)


def test_one_replica_can_be_made_slow(triton_pool: TritonPool) -> None:
    normal = median_latency_ms(client(triton_pool[0]), n=5)
    slow_server = triton_pool.add(slow_factor=10)
    try:
        assert slow_server.host not in triton_pool.addresses[:2]
        slow = median_latency_ms(client(slow_server), n=5)
        assert slow >= 5 * normal, (normal, slow)
        # Back to normal speed while running ...
        slow_server.set_slow_factor(1)
        assert median_latency_ms(client(slow_server), n=5) < 3 * normal
        # ... and slow again.
        slow_server.set_slow_factor(10)
        assert median_latency_ms(client(slow_server), n=3) >= 5 * normal
    finally:
        removed = triton_pool.remove(2)
    assert removed is slow_server
    assert len(triton_pool) == 2
    assert not slow_server.is_running
    assert refuses(slow_server.host, 8000)


def test_slow_factor_from_environment(
    triton_install: TritonInstall, triton_model_repository: Path, tmp_path: Path
) -> None:
    host = free_loopback_block(1)
    server = TritonServer(
        triton_model_repository,
        host=host,
        install=triton_install,
        log_dir=tmp_path,
        env={"TRITONSCALE_SLOW_FACTOR": "4"},
    )
    server.start()
    try:
        server.wait_ready(60)
        assert server.slow_factor is None
        assert median_latency_ms(client(server), n=3) >= 70  # 4 x 21 ms
    finally:
        server.kill()


def test_kill_refuses_connections_and_restart_recovers(triton_pool: TritonPool) -> None:
    server = triton_pool[1]
    pid = server.pid
    assert pid is not None
    processes = server.process_ids()
    assert pid in processes
    assert len(processes) >= 2  # tritonserver and its Python-backend stubs
    triton_pool.kill(1)
    assert not server.is_running
    for port in (8000, 8001, 8002):
        assert refuses(server.host, port)
    # The stub processes went down with the server (same process group).
    assert server.process_ids() == []
    seconds = triton_pool.restart(1)
    assert seconds < 60
    assert server.is_running
    assert server.is_ready()
    assert server.pid != pid
    result = infer_simulated(client(server))
    assert result.as_numpy("REPLICA")[0, 0].decode() == server.host
    assert triton_pool.addresses[1] == server.host


def test_custom_model_configuration(tmp_path: Path) -> None:
    repo = model_repository(
        tmp_path / "repo",
        [
            SimulatedModel(name="sim50", base_ms=50, per_item_ms=5, max_batch_size=8),
            IrisModel(name="flowers"),
        ],
    )
    config = (repo / "sim50" / "config.pbtxt").read_text()
    assert 'name: "sim50"' in config
    assert "max_batch_size: 8" in config
    assert 'key: "base_ms", value: { string_value: "50.0" }' in config
    assert (repo / "sim50" / "1" / "model.py").is_file()
    assert (repo / "flowers" / "1" / "weights.json").is_file()
    assert not (repo / "flowers" / "1" / "train.py").exists()
    with pytest.raises(ValueError, match="unique"):
        model_repository(tmp_path / "dup", [SimulatedModel(), SimulatedModel()])


def test_start_failures_are_reported_with_the_log(
    triton_install: TritonInstall, tmp_path: Path, triton_pool: TritonPool
) -> None:
    broken = tmp_path / "broken"
    (broken / "bad" / "1").mkdir(parents=True)
    (broken / "bad" / "config.pbtxt").write_text('backend: "python"\nthis is not protobuf text\n')
    server = TritonServer(broken, host=free_loopback_block(1), install=triton_install, log_dir=tmp_path)
    server.start()
    try:
        with pytest.raises(TritonServerError, match="exited"):
            server.wait_ready(60)
    finally:
        server.kill()
    # An address whose ports are taken is refused before a process starts.
    busy = TritonServer(broken, host=triton_pool[0].host, install=triton_install, log_dir=tmp_path)
    with pytest.raises(TritonServerError, match="in use"):
        busy.start()
    assert not busy.is_running


def test_the_operator_reads_rates_latency_and_batches_from_real_triton_statistics(
    triton_pool: TritonPool,
) -> None:
    """`TritonSource` (what the operator uses without Prometheus) against real tritonservers."""
    servers = triton_pool.servers
    ports = {(s.http_port, s.metrics_port) for s in servers}
    assert len(ports) == 1  # like pods: one address each, the same ports
    ((http_port, metrics_port),) = ports
    source = TritonSource(
        lambda target: [s.host for s in servers], http_port=http_port, metrics_port=metrics_port
    )
    target = ScalingTarget(
        namespace="t",
        name="t",
        models=(SIMULATED_MODEL,),
        percentile=95.0,
        pod_prefixes=("t-ondemand",),
        ready_replicas=len(servers),
        pod_selector={"app.kubernetes.io/instance": "t"},
    )
    first = source.observe(target)
    assert first.missing is not None and "first sample" in first.missing
    for server in servers:
        c = client(server)
        try:
            for _ in range(10):
                infer_simulated(c, rows=2)
        finally:
            c.close()
    second = source.observe(target)
    assert second.usable, second.missing
    assert second.ready_replicas == len(servers)
    assert second.arrival_rate_rps is not None and second.arrival_rate_rps > 0
    # The simulated model takes 20 ms + 1 ms per item: every figure must see that.
    assert second.mean_compute_ms is not None and 20.0 <= second.mean_compute_ms < 60.0
    assert second.latency_ms is not None and second.latency_ms >= 20.0
    assert second.batch_profile and second.batch_profile[0][0] >= 2.0


def test_with_one_replica_hung_the_triton_source_uses_the_others_and_says_so(triton_pool: TritonPool) -> None:
    """A tritonserver frozen (SIGSTOP: connections accepted, nothing answered) while the other
    serves: the observation comes from the one that answers, scaled to both, marked partial with
    the frozen one named (so the autoscaler may scale up on it, never down)."""
    servers = triton_pool.servers
    ((http_port, metrics_port),) = {(s.http_port, s.metrics_port) for s in servers}
    source = TritonSource(
        lambda target: [s.host for s in servers],
        http_port=http_port,
        metrics_port=metrics_port,
        timeout_s=1.0,
    )
    target = ScalingTarget(
        namespace="t", name="hung", models=(SIMULATED_MODEL,), percentile=95.0, pod_prefixes=("t-ondemand",),
        ready_replicas=len(servers), pod_selector={"app.kubernetes.io/instance": "t"},
    )  # fmt: skip
    source.observe(target)
    frozen = servers[1]
    assert frozen.pid is not None
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        c = client(servers[0])
        try:
            for _ in range(10):
                infer_simulated(c, rows=1)
        finally:
            c.close()
        observation = source.observe(target)
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    assert observation.usable, observation.missing
    assert observation.partial is not None and observation.partial.startswith(
        "statistics from 1 of 2 ready pods"
    )
    assert frozen.host in observation.partial
    assert observation.arrival_rate_rps is not None and observation.arrival_rate_rps > 0
    record(
        "metrics source degraded",
        "1 of 2 tritonservers frozen (SIGSTOP) while the Triton statistics source reads them",
        "observation from the other, scaled to both, flagged partial: scale-up allowed, never down",
        partial=observation.partial.split(";")[0],
    )
    triton_pool.wait_ready()


def test_the_operator_reads_batching_from_real_triton_model_configurations(triton_pool: TritonPool) -> None:
    """`TritonModelConfigs` + `batching`: what the autoscaler assumes about a model's batches."""
    server = triton_pool.servers[0]
    reader = TritonModelConfigs(http_port=server.http_port)

    def target(*models: str) -> ScalingTarget:
        return ScalingTarget(
            namespace="t",
            name="t",
            models=models,
            percentile=95.0,
            pod_prefixes=(),
            ready_replicas=1,
            pod_selector={},
        )

    configs = reader(target(SIMULATED_MODEL), ["127.255.255.254", server.host])  # the first does not answer
    assert isinstance(configs, list) and configs[0]["name"] == SIMULATED_MODEL
    expected = int(configs[0]["max_batch_size"])
    assert expected > 1
    found = batching(configs)
    assert found.from_model_config and found.max_batch == expected
    assert "dynamic batching" in found.source
    missing = reader(target("no-such-model"), [server.host])
    assert isinstance(missing, str) and server.host in missing
