"""The pod watch's bookkeeping (clients.pod_watch) without an API server: what it keeps from
each event, what it answers, and when it lists again. The real watch against a real API
server is tests/e2e/test_pod_watch.py."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tritonscale.clients import pod_watch
from tritonscale.clients.pod_watch import ManagedPods
from tritonscale.render.names import COMPONENT_ROUTER, COMPONENT_TRITON, StackNames


def pod(
    name: str, instance: str, component: str, address: str | None, namespace: str = "nlp"
) -> dict[str, Any]:
    conditions = (
        [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:05Z"}] if address else []
    )
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "resourceVersion": "1",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": StackNames(instance, namespace).component_selector(component),
        },
        "status": {"podIP": address or "", "conditions": conditions},
    }


class NoServer:
    """Where the watch would list and watch; these tests drive it without one."""

    def list_pod_for_all_namespaces(self, **_: Any) -> None:
        raise AssertionError("no API server here")

    list_namespaced_pod = list_pod_for_all_namespaces


def synced(pods: list[dict[str, Any]], namespaces: tuple[str, ...] = ()) -> ManagedPods:
    managed = ManagedPods(NoServer(), namespaces)
    for scope in managed.watches.values():
        for each in pods:
            scope.apply("ADDED", each)
        scope.synced = True
    return managed


ROUTERS = StackNames("bert", "nlp").component_selector(COMPONENT_ROUTER)
TRITON = StackNames("bert", "nlp").component_selector(COMPONENT_TRITON)


def test_it_answers_each_component_s_ready_addresses_of_one_service() -> None:
    managed = synced(
        [
            pod("bert-router-a", "bert", COMPONENT_ROUTER, "10.0.0.2"),
            pod("bert-router-b", "bert", COMPONENT_ROUTER, "10.0.0.1"),
            pod("bert-router-c", "bert", COMPONENT_ROUTER, None),  # not Ready yet
            pod("bert-triton-a", "bert", COMPONENT_TRITON, "10.0.1.1"),
            pod("gpt-router-a", "gpt", COMPONENT_ROUTER, "10.0.2.1"),
            pod("bert-router-a", "bert", COMPONENT_ROUTER, "10.0.3.1", namespace="vision"),
        ]
    )
    assert managed.ready_addresses("nlp", ROUTERS) == ["10.0.0.1", "10.0.0.2"]
    assert managed.ready_addresses("nlp", TRITON) == ["10.0.1.1"]
    assert managed.ready_addresses(
        "vision", StackNames("bert", "vision").component_selector(COMPONENT_ROUTER)
    ) == ["10.0.3.1"]
    assert managed.ready_addresses("nlp", StackNames("t5", "nlp").component_selector(COMPONENT_ROUTER)) == []


def test_events_replace_move_and_drop_what_is_kept() -> None:
    managed = synced([pod("bert-router-a", "bert", COMPONENT_ROUTER, None)])
    (scope,) = managed.watches.values()
    for kind, each in (
        ("MODIFIED", pod("bert-router-a", "bert", COMPONENT_ROUTER, "10.0.0.1")),  # became Ready
        ("ADDED", pod("bert-router-b", "bert", COMPONENT_ROUTER, "10.0.0.2")),
        ("DELETED", pod("bert-router-a", "bert", COMPONENT_ROUTER, "10.0.0.1")),
        ("BOOKMARK", {"metadata": {"resourceVersion": "7"}}),
    ):
        scope.apply(kind, each)
    assert managed.ready_addresses("nlp", ROUTERS) == ["10.0.0.2"]
    # Relabelled to another service: it leaves the first one's answer.
    moved = pod("bert-router-b", "gpt", COMPONENT_ROUTER, "10.0.0.2")
    scope.apply("MODIFIED", moved)
    assert managed.ready_addresses("nlp", ROUTERS) == []
    assert scope.by_instance.keys() == {("nlp", "gpt")}


def test_it_does_not_answer_until_listed_nor_for_selectors_that_are_not_the_operator_s() -> None:
    managed = ManagedPods(NoServer())
    assert managed.ready_addresses("nlp", ROUTERS) is None  # not listed yet: the caller lists
    managed = synced([pod("bert-router-a", "bert", COMPONENT_ROUTER, "10.0.0.1")])
    assert managed.ready_addresses("nlp", {"app": "bert"}) is None
    assert managed.ready_addresses("nlp", {k: v for k, v in ROUTERS.items() if "instance" not in k}) is None
    # Watching some namespaces only: another namespace is not one it can answer for.
    scoped = synced([pod("bert-router-a", "bert", COMPONENT_ROUTER, "10.0.0.1")], namespaces=("nlp",))
    assert scoped.ready_addresses("nlp", ROUTERS) == ["10.0.0.1"]
    assert scoped.ready_addresses("vision", ROUTERS) is None


def test_an_expired_watch_lists_again_at_once_and_a_failure_stops_answering_until_listed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pod_watch, "RETRY_S", 0.0)
    managed = ManagedPods(NoServer())
    (scope,) = managed.watches.values()
    calls: list[str] = []
    answers_during_failure: list[list[str] | None] = []
    outcomes: list[Any] = [
        ApiException(status=410, reason="Gone"),  # expired: list again
        "2",  # the server ended the watch: resume from version 2, no list
        ConnectionError("refused"),  # lost: stop answering, list again later
    ]

    def listed() -> str:
        calls.append("list")
        scope.by_instance = {}
        scope._keep(pod("bert-router-a", "bert", COMPONENT_ROUTER, "10.0.0.1"))
        scope.synced = True
        return "1"

    def watched(version: str) -> str:
        calls.append(f"watch from {version}")
        if not outcomes:
            managed.stop()
            return version
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            if isinstance(outcome, ConnectionError):
                answers_during_failure.append(None)
            raise outcome
        return str(outcome)

    original_lost = scope._lost

    def lost(why: str) -> None:
        original_lost(why)
        answers_during_failure[-1] = managed.ready_addresses("nlp", ROUTERS)

    monkeypatch.setattr(scope, "_list", listed)
    monkeypatch.setattr(scope, "_watch", watched)
    monkeypatch.setattr(scope, "_lost", lost)
    thread = threading.Thread(target=scope._run)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert calls == ["list", "watch from 1", "list", "watch from 1", "watch from 2", "list", "watch from 1"]
    assert answers_during_failure == [None]
    assert managed.ready_addresses("nlp", ROUTERS) == ["10.0.0.1"]


def test_a_watch_the_server_ends_at_once_is_resumed_after_a_pause_not_in_a_hot_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (scope,) = ManagedPods(NoServer()).watches.values()

    class Stopping:
        waits: list[float] = []

        def is_set(self) -> bool:
            return len(self.waits) >= 3

        def wait(self, seconds: float) -> bool:
            self.waits.append(seconds)
            return self.is_set()

    stopping = Stopping()
    monkeypatch.setattr(scope, "stopping", stopping)
    monkeypatch.setattr(scope, "_list", lambda: "1")
    monkeypatch.setattr(scope, "_watch", lambda version: version)  # ends at once, no event
    scope._run()
    assert stopping.waits == [pod_watch.RETRY_S] * 3
