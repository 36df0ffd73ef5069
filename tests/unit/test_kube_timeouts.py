"""Every request of the Kubernetes client gives up on a server that accepts and never answers
(a half-open connection): without a timeout a reconcile worker would wait on it for good. And an
answer cut short: an eviction the server accepted is done though its body is lost."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest

from tests.builders import make_inference_service
from tritonscale.clients import kube as kube_module
from tritonscale.clients.kube import KubeClient
from tritonscale.errors import TransientError

TIMEOUT_S = 0.3
# The silent server never answers, so without the timeout a call waits for good: any bound far
# below forever tells them apart. A wide one, since a loaded CI machine stretches everything.
GAVE_UP_WITHIN_S = 20.0


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An HTTP address that accepts connections and never sends a byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(connection)  # held open, never answered

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()


@pytest.fixture
def client(silent_server: str, monkeypatch: pytest.MonkeyPatch) -> KubeClient:
    monkeypatch.setattr(kube_module, "REQUEST_TIMEOUT_S", TIMEOUT_S)
    configuration = kubernetes.client.Configuration()
    configuration.host = silent_server
    configuration.retries = 0
    return KubeClient(kubernetes.client.ApiClient(configuration))


CONFIG_MAP = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "svc-router", "namespace": "default"},
    "data": {"a": "b"},
}

EXISTING = {**CONFIG_MAP, "metadata": {**CONFIG_MAP["metadata"], "uid": "uid-1"}}

RAISING: dict[str, Callable[[KubeClient], Any]] = {
    "get InferenceService": lambda k: k.get_inference_service("default", "svc"),
    "list InferenceServices": lambda k: k.list_inference_services("default"),
    "list Events": lambda k: k.list_events("default", {"kind": "InferenceService"}),
    "get a child": lambda k: k.get_object("ConfigMap", "default", "svc-router"),
    "create": lambda k: k.apply(CONFIG_MAP, current=None),
    "apply": lambda k: k.apply(CONFIG_MAP, current=EXISTING),
    "list Deployments": lambda k: k.list_deployments("default", {"app": "x"}),
    "list Pods": lambda k: k.list_pods("default", {"app": "x"}),
    "delete": lambda k: k.delete_object("ConfigMap", "default", "svc-router", "uid-1"),
    "patch status": lambda k: k.patch_inference_service_status("default", "svc", {"replicas": 1}),
}


@pytest.mark.parametrize("call", RAISING.values(), ids=RAISING.keys())
def test_a_silent_server_is_a_transient_error_within_the_timeout(
    client: KubeClient, call: Callable[[KubeClient], Any]
) -> None:
    began = time.monotonic()
    with pytest.raises(TransientError, match="timed out"):
        call(client)
    assert time.monotonic() - began < GAVE_UP_WITHIN_S


def test_eviction_and_events_give_up_within_the_timeout_without_raising(client: KubeClient) -> None:
    """Both are best effort: a failure is logged, never raised into the reconcile."""
    began = time.monotonic()
    assert client.evict_pod("default", "pod-1") is False
    client.post_event(make_inference_service("svc"), "Normal", "Test", "a message")
    assert time.monotonic() - began < GAVE_UP_WITHIN_S


def _answering_once(head: bytes, body: bytes) -> tuple[str, Callable[[], None]]:
    """An HTTP address that answers each connection with `head`, then `body`, then hangs up."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(1.0)
                with contextlib.suppress(TimeoutError):
                    connection.recv(65536)  # the request (small enough for one read)
                connection.sendall(head + body)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def close() -> None:
        stop.set()
        thread.join()
        listener.close()

    return f"http://127.0.0.1:{listener.getsockname()[1]}", close


@pytest.mark.parametrize(
    ("head", "body", "evicted"),
    [
        # Accepted, but the connection drops within the body: the eviction was done.
        (
            b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n",
            b'{"kind"',
            True,
        ),
        (b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n", b"{}", True),
        # The budget refuses for now: not done, try later.
        (
            b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n",
            b"{}",
            False,
        ),
    ],
    ids=["answer-lost", "answered", "refused"],
)
def test_an_eviction_is_done_once_the_server_accepts_it_whether_or_not_its_answer_is_read(
    head: bytes, body: bytes, evicted: bool
) -> None:
    address, close = _answering_once(head, body)
    try:
        configuration = kubernetes.client.Configuration()
        configuration.host = address
        configuration.retries = 0
        client = KubeClient(kubernetes.client.ApiClient(configuration))
        assert client.evict_pod("default", "pod-1") is evicted
    finally:
        close()
