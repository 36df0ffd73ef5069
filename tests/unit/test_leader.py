"""Leader election survives every kind of failed Lease call: a leader whose calls fail stops
(on_lost) within its renew deadline, a standby whose calls fail keeps campaigning, and a Lease
call against a server that never answers takes one call timeout, not one per retry."""

from __future__ import annotations

import copy
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from tritonscale.clients import leader as leader_module
from tritonscale.clients.kube import KubeClient
from tritonscale.clients.leader import CALL_TIMEOUT_S, Leadership, lease_api


class _NotFound(ApiException):
    def __init__(self) -> None:
        super().__init__(status=404, reason="Not Found")
        self.body = '{"code": 404}'


class FakeCoordination:
    """A Lease API that can be made to fail as a network does (urllib3 errors, not ApiException)."""

    def __init__(self) -> None:
        self.lease: Any = None
        self.failing = False
        self.lock = threading.Lock()

    def _network(self) -> None:
        if self.failing:
            raise urllib3.exceptions.MaxRetryError(
                None, "/lease", urllib3.exceptions.ReadTimeoutError(None, "/lease", "read timed out")
            )

    def read_namespaced_lease(self, name: str, namespace: str, **_: Any) -> Any:
        with self.lock:
            self._network()
            if self.lease is None:
                raise _NotFound()
            return copy.deepcopy(self.lease)

    def create_namespaced_lease(self, namespace: str, body: Any, **_: Any) -> Any:
        with self.lock:
            self._network()
            self.lease = copy.deepcopy(body)
            return body

    def replace_namespaced_lease(self, name: str, namespace: str, body: Any, **_: Any) -> Any:
        with self.lock:
            self._network()
            self.lease = copy.deepcopy(body)
            return body


@pytest.fixture
def short_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shortest durations the election library accepts, so the tests take seconds."""
    monkeypatch.setattr(leader_module, "LEASE_DURATION_S", 3)
    monkeypatch.setattr(leader_module, "RENEW_DEADLINE_S", 2)
    monkeypatch.setattr(leader_module, "RETRY_PERIOD_S", 1)


def _kube() -> KubeClient:
    return KubeClient(kubernetes.client.ApiClient(kubernetes.client.Configuration()))


def test_a_leader_whose_lease_calls_fail_stops_within_its_renew_deadline(short_lease: None) -> None:
    fake = FakeCoordination()
    lost = threading.Event()
    leadership = Leadership(_kube(), "ns", "me", lost.set, coordination=fake)
    assert leadership.wait()
    time.sleep(1.5)  # renewing
    assert not lost.is_set()
    fake.failing = True
    assert lost.wait(6.0), "the leader never stopped: it would write on while a standby leads"


def test_a_standby_whose_lease_calls_fail_keeps_campaigning_and_leads_once_they_work(
    short_lease: None,
) -> None:
    fake = FakeCoordination()
    fake.failing = True
    leadership = Leadership(_kube(), "ns", "standby", lambda: None, coordination=fake)
    result: list[bool] = []
    stop = threading.Event()
    waiter = threading.Thread(target=lambda: result.append(leadership.wait(stop)), daemon=True)
    waiter.start()
    time.sleep(2.5)
    assert not result
    fake.failing = False
    waiter.join(10.0)
    stop.set()
    assert result == [True]
    assert fake.lease.spec.holder_identity == "standby"


def test_release_gives_the_lease_up_and_a_failing_release_does_not_raise(short_lease: None) -> None:
    fake = FakeCoordination()
    lost = threading.Event()
    leadership = Leadership(_kube(), "ns", "me", lost.set, coordination=fake)
    assert leadership.wait()
    leadership.release()
    assert fake.lease.spec.holder_identity is None
    time.sleep(2.5)  # the renew loop writes nothing once released, and no stop is reported
    assert fake.lease.spec.holder_identity is None and not lost.is_set()

    other = Leadership(_kube(), "ns", "other", lambda: None, coordination=FakeCoordination())
    assert other.wait()
    other._coordination._api.failing = True  # type: ignore[attr-defined]
    other.release()  # logged, not raised


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An address that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def test_a_lease_call_to_a_silent_server_takes_one_timeout_not_one_per_retry(silent_server: str) -> None:
    configuration = kubernetes.client.Configuration()
    configuration.host = silent_server
    kube = KubeClient(kubernetes.client.ApiClient(configuration))  # urllib3 retries 3 times here
    leadership = Leadership(kube, "ns", "me", lambda: None)
    began = time.monotonic()
    with pytest.raises(ApiException):
        leadership._coordination.read_namespaced_lease("lease", "ns")
    assert time.monotonic() - began < 2 * CALL_TIMEOUT_S
    assert lease_api(kube).api_client.configuration.retries == 0
