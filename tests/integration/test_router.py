"""The router as it runs in production, on real processes: HAProxy started from the rendered
haproxy.cfg, replicas discovered through DNS (dnsmasq), real tritonservers behind it."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.builders import make_inference_service
from tritonscale.api.resource import parse_inference_service
from tritonscale.bench.inputs import model_spec, random_request
from tritonscale.clients.triton import inference_client
from tritonscale_sandbox.router import GRPC_BACKEND, HTTP_BACKEND, DnsServer, LocalRouter
from tritonscale_sandbox.triton import INSTANT_MODEL, SIMULATED_MODEL, TritonInstall, TritonPool

pytestmark = pytest.mark.integration

REPLICAS = 3
SLOTS = 6  # spec.replicas: server slots per backend, room for added replicas


@pytest.fixture(scope="module")
def pool(
    triton_install: TritonInstall, triton_model_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonPool]:
    """Three tritonservers; tests that kill, slow down or add servers restore this state."""
    with TritonPool(
        REPLICAS,
        triton_model_repository,
        install=triton_install,
        log_dir=tmp_path_factory.mktemp("router-triton-logs"),
        models=(SIMULATED_MODEL, INSTANT_MODEL),
    ) as servers:
        yield servers


@pytest.fixture(scope="module")
def dns(pool: TritonPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    with DnsServer("triton.test", pool.addresses, work_dir=tmp_path_factory.mktemp("dns")) as server:
        yield server


@pytest.fixture
def make_router(dns: DnsServer, pool: TritonPool, tmp_path: Path) -> Iterator[Callable[[str], LocalRouter]]:
    """Start a router for a policy; it waits until every pool server is UP in both backends."""
    routers: list[LocalRouter] = []

    def start(policy: str) -> LocalRouter:
        service = parse_inference_service(
            make_inference_service(name="svc", spec__loadBalancing={"policy": policy}, spec__replicas=SLOTS)
        )
        router = LocalRouter(service, dns, work_dir=tmp_path / f"router-{policy}-{len(routers)}")
        routers.append(router)
        router.start()
        router.wait_ready(hosts=pool.addresses)
        return router

    yield start
    for router in routers:
        router.stop()


def http_infer(client: httpclient.InferenceServerClient, model: str = INSTANT_MODEL) -> str:
    """One inference; returns the replica that answered."""
    data = np.ones((1, 1), dtype=np.float32)
    tensor = httpclient.InferInput("INPUT0", [1, 1], "FP32")
    tensor.set_data_from_numpy(data)
    result = client.infer(model, [tensor])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)
    return str(result.as_numpy("REPLICA").reshape(-1)[0].decode())


@dataclass
class Outcome:
    started: float
    finished: float
    replica: str | None
    error: str | None


class Load:
    """Closed-loop HTTP load from `threads` threads (each with its own client) until stopped."""

    def __init__(self, endpoint: str, model: str, threads: int) -> None:
        self.endpoint = endpoint
        self.model = model
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        client = httpclient.InferenceServerClient(self.endpoint, connection_timeout=10, network_timeout=30)
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    replica, error = http_infer(client, self.model), None
                except Exception as failure:  # every failure counts; the test asserts there are none
                    replica, error = None, f"{type(failure).__name__}: {failure}"
                with self._lock:
                    self.outcomes.append(Outcome(started, time.monotonic(), replica, error))
        finally:
            client.close()

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)


def run_load(endpoint: str, model: str, threads: int, seconds: float) -> list[Outcome]:
    with Load(endpoint, model, threads) as load:
        time.sleep(seconds)
    return load.snapshot()


def replica_shares(outcomes: list[Outcome]) -> Counter[str]:
    assert outcomes and not [o.error for o in outcomes if o.error]
    return Counter(o.replica for o in outcomes if o.replica)


def test_http_and_grpc_inference_through_the_router(
    make_router: Callable[[str], LocalRouter], pool: TritonPool
) -> None:
    router = make_router("RoundRobin")
    http = httpclient.InferenceServerClient(router.http_endpoint)
    assert {http_infer(http) for _ in range(2 * REPLICAS)} == set(pool.addresses)

    grpc = grpcclient.InferenceServerClient(router.grpc_endpoint)
    answered = set()
    for _ in range(2 * REPLICAS):
        data = np.full((1, 1), 7.0, dtype=np.float32)
        tensor = grpcclient.InferInput("INPUT0", [1, 1], "FP32")
        tensor.set_data_from_numpy(data)
        result = grpc.infer(INSTANT_MODEL, [tensor])
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)
        answered.add(result.as_numpy("REPLICA").reshape(-1)[0].decode())
    assert answered == set(pool.addresses)
    assert grpc.is_server_ready() and http.is_model_ready(SIMULATED_MODEL)

    async def through_project_client(protocol: str, endpoint: str) -> set[str | None]:
        async with inference_client(protocol, endpoint) as client:  # type: ignore[arg-type]
            # The request is built from the model's metadata, read through the router too.
            description = await client.describe(INSTANT_MODEL)
            request = random_request(
                model_spec(description.metadata, description.config), shapes={"INPUT0": (1,)}
            )
            replies = await asyncio.gather(*(client.infer(request) for _ in range(12)))
        return {reply.replica for reply in replies}

    assert asyncio.run(through_project_client("http", router.http_endpoint)) == set(pool.addresses)
    assert asyncio.run(through_project_client("grpc", router.grpc_endpoint)) == set(pool.addresses)


def test_a_grpc_stream_through_the_router_answers_each_request_and_stays_open(
    make_router: Callable[[str], LocalRouter], pool: TritonPool
) -> None:
    """ModelStreamInfer (tritonclient's start_stream: decoupled models, LLM tokens) is one
    request that never ends: the router must pass each message on at once and keep the stream
    open past its 10 s limit for a request's headers and body (held whole, it failed with a 408)."""
    router = make_router("RoundRobin")
    client = grpcclient.InferenceServerClient(router.grpc_endpoint)
    replies: list[tuple[float, str]] = []
    arrived = threading.Condition()

    def on_reply(result: grpcclient.InferResult | None, error: Exception | None) -> None:
        with arrived:
            replies.append((time.monotonic(), str(error) if error else "ok"))
            arrived.notify_all()

    def send_and_wait(count: int) -> float:
        data = np.full((1, 1), 3.0, dtype=np.float32)
        tensor = grpcclient.InferInput("INPUT0", [1, 1], "FP32")
        tensor.set_data_from_numpy(data)
        sent = time.monotonic()
        client.async_stream_infer(INSTANT_MODEL, [tensor])
        with arrived:
            assert arrived.wait_for(lambda: len(replies) >= count, timeout=30), "no reply on the stream"
        assert replies[-1][1] == "ok", replies
        return replies[-1][0] - sent

    client.start_stream(callback=on_reply)
    try:
        assert send_and_wait(1) < 5.0
        time.sleep(11.0)  # past `timeout http-request 10s`
        assert send_and_wait(2) < 5.0
    finally:
        client.stop_stream()
        client.close()


def test_round_robin_splits_evenly(make_router: Callable[[str], LocalRouter], pool: TritonPool) -> None:
    router = make_router("RoundRobin")
    shares = replica_shares(run_load(router.http_endpoint, INSTANT_MODEL, threads=4, seconds=2.0))
    total = sum(shares.values())
    assert set(shares) == set(pool.addresses)
    for replica, count in shares.items():
        assert abs(count - total / REPLICAS) <= 0.05 * total + 2, (replica, shares)


def test_least_connections_and_two_choices_spare_a_slow_replica(
    make_router: Callable[[str], LocalRouter], pool: TritonPool
) -> None:
    slow = pool[0]
    slow.set_slow_factor(10)  # 20 ms -> 200 ms per batch on this replica
    try:
        share = {}
        for policy in ("RoundRobin", "LeastConnections", "PowerOfTwoChoices"):
            router = make_router(policy)
            shares = replica_shares(run_load(router.http_endpoint, SIMULATED_MODEL, threads=6, seconds=4.0))
            share[policy] = shares[slow.host] / sum(shares.values())
            router.stop()
    finally:
        slow.set_slow_factor(None)
    assert share["RoundRobin"] == pytest.approx(1 / REPLICAS, abs=0.05), share
    assert share["LeastConnections"] < 0.6 * share["RoundRobin"], share
    assert share["PowerOfTwoChoices"] < 0.85 * share["RoundRobin"], share


def wait_until(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> float:
    """Seconds until `condition()` held; fails the test after `timeout_s`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"condition not met within {timeout_s}s")
        time.sleep(interval_s)
    return time.monotonic() - started


def test_killed_replica_leaves_rotation_without_failed_requests_and_returns(
    make_router: Callable[[str], LocalRouter], pool: TritonPool
) -> None:
    router = make_router("RoundRobin")
    victim = pool[REPLICAS - 1]
    with Load(router.http_endpoint, SIMULATED_MODEL, threads=6) as load:
        time.sleep(1.5)
        pool.kill(REPLICAS - 1)
        out_after = wait_until(lambda: victim.host not in router.up_hosts(HTTP_BACKEND), timeout_s=10)
        wait_until(lambda: victim.host not in router.up_hosts(GRPC_BACKEND), timeout_s=10)
        time.sleep(1.0)
        pool.restart(REPLICAS - 1)
        restarted_at = time.monotonic()
        wait_until(
            lambda: any(o.replica == victim.host and o.started > restarted_at for o in load.snapshot()),
            timeout_s=20,
        )
        time.sleep(0.5)
    outcomes = load.snapshot()
    failures = [o.error for o in outcomes if o.error]
    assert not failures, f"{len(failures)} of {len(outcomes)} requests failed: {failures[:3]}"
    assert out_after <= 2.0, f"killed replica still in rotation {out_after:.2f}s after the kill"
    # Requests that met the dead replica were retried on another one, not failed.
    assert sum(s.redispatches for s in router.servers(HTTP_BACKEND)) >= 1
    router.wait_ready(hosts=pool.addresses)


def test_replicas_added_to_dns_join_without_a_restart(
    make_router: Callable[[str], LocalRouter], pool: TritonPool, dns: DnsServer
) -> None:
    router = make_router("RoundRobin")
    pid = router.pid
    added = pool.add()
    try:
        dns.set_addresses(pool.addresses)
        joined_after = wait_until(lambda: added.host in router.up_hosts(HTTP_BACKEND), timeout_s=15)
        router.wait_ready(hosts=pool.addresses)
        client = httpclient.InferenceServerClient(router.http_endpoint)
        assert {http_infer(client) for _ in range(2 * len(pool))} == set(pool.addresses)
        assert router.pid == pid, "HAProxy was restarted"
        assert joined_after < 10
    finally:
        pool.remove(len(pool) - 1, graceful=False)
        dns.set_addresses(pool.addresses)
    wait_until(lambda: added.host not in router.up_hosts(HTTP_BACKEND), timeout_s=15)
    assert router.pid == pid


METRIC = re.compile(
    r'^haproxy_server_http_responses_total\{proxy="(\w+)",server="(\w+)",code="2xx"\} (\d+)$', re.M
)


def test_metrics_endpoint_reports_traffic_per_replica(
    make_router: Callable[[str], LocalRouter], pool: TritonPool
) -> None:
    router = make_router("RoundRobin")
    client = httpclient.InferenceServerClient(router.http_endpoint)
    answered = Counter(http_infer(client) for _ in range(30))
    grpc = grpcclient.InferenceServerClient(router.grpc_endpoint)
    for _ in range(9):
        tensor = grpcclient.InferInput("INPUT0", [1, 1], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 1), dtype=np.float32))
        grpc.infer(INSTANT_MODEL, [tensor])

    text = router.metrics_text()
    responses = {(proxy, server): int(value) for proxy, server, value in METRIC.findall(text)}
    address_of = {s.name: s.host for s in router.servers(HTTP_BACKEND) if s.address}
    per_replica = {
        address_of[server]: n for (proxy, server), n in responses.items() if proxy == HTTP_BACKEND and n
    }
    assert per_replica == dict(answered)
    grpc_total = sum(n for (proxy, _), n in responses.items() if proxy == GRPC_BACKEND)
    assert grpc_total == 9
    assert len([n for (proxy, _), n in responses.items() if proxy == GRPC_BACKEND and n]) == REPLICAS
    assert 'haproxy_server_status{proxy="triton_http"' in text
