"""The pod watch's bookkeeping (clients.pod_watch) without an API server: what it keeps from
each event, what it answers, and when it lists again. The real watch against a real API
server is tests/e2e/test_pod_watch.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from urllib3.exceptions import ReadTimeoutError

from tritonscale.clients import pod_watch
from tritonscale.clients.pod_watch import ManagedPods
from tritonscale.render.names import (
    COMPONENT_ROUTER,
    COMPONENT_TRITON,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    StackNames,
)


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


def test_it_answers_the_starts_of_one_service_s_ready_pods() -> None:
    """The cold start is learnt from them (policy.service_facts): (created, seconds to Ready)."""
    later = pod("bert-triton-a", "bert", COMPONENT_TRITON, "10.0.1.2")
    later["metadata"]["creationTimestamp"] = "2026-01-01T00:00:03Z"  # Ready 2 s after it was made
    managed = synced(
        [
            later,
            pod("bert-triton-b", "bert", COMPONENT_TRITON, "10.0.1.1"),
            pod("bert-triton-c", "bert", COMPONENT_TRITON, None),  # not Ready: no start yet
            pod("bert-router-a", "bert", COMPONENT_ROUTER, "10.0.0.1"),
        ]
    )
    answer = managed.starts_and_addresses("nlp", TRITON)
    assert answer is not None
    starts, addresses = answer
    assert [(created.isoformat(), seconds) for created, seconds in starts] == [
        ("2026-01-01T00:00:00+00:00", 5.0),  # oldest first
        ("2026-01-01T00:00:03+00:00", 2.0),
    ]
    assert addresses == ["10.0.1.1", "10.0.1.2"]
    assert managed.starts_and_addresses(
        "nlp", StackNames("t5", "nlp").component_selector(COMPONENT_TRITON)
    ) == (
        (),
        [],
    )
    assert ManagedPods(NoServer()).starts_and_addresses("nlp", TRITON) is None  # not listed: the caller lists


def test_it_answers_a_stack_s_pods_cut_to_what_its_status_reads() -> None:
    """Every pod of the service, Ready or not, with its name, labels, deletion, node and
    scheduling verdict, and nothing else of it (policy.pod_fields)."""
    waiting = pod("bert-triton-b", "bert", COMPONENT_TRITON, None)
    verdict = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}
    waiting["status"]["conditions"] = [verdict]
    placed = pod("bert-triton-a", "bert", COMPONENT_TRITON, "10.0.1.1")
    placed["spec"] = {"nodeName": "gpu-1", "containers": [{"name": "triton"}]}
    placed["metadata"]["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    managed = synced([waiting, placed, pod("gpt-triton-a", "gpt", COMPONENT_TRITON, "10.0.2.1")])
    stack = {key: TRITON[key] for key in (LABEL_INSTANCE, LABEL_MANAGED_BY)}
    assert managed.stack_pods("nlp", stack) == [
        {
            "metadata": {
                "name": "bert-triton-a",
                "labels": placed["metadata"]["labels"],
                "deletionTimestamp": "2026-01-01T00:01:00Z",
            },
            "spec": {"nodeName": "gpu-1"},
            "status": {"conditions": []},  # Ready is not read from here
        },
        {
            "metadata": {"name": "bert-triton-b", "labels": waiting["metadata"]["labels"]},
            "spec": {},
            "status": {"conditions": [verdict]},
        },
    ]
    assert ManagedPods(NoServer()).stack_pods("nlp", stack) is None  # not listed: the caller lists


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


class Response:
    """What the client returns with _preload_content=False: a list page's body, or a watch's
    stream of lines."""

    def __init__(
        self, body: Any = None, lines: list[dict[str, Any]] | None = None, then: Exception | None = None
    ) -> None:
        self.data = json.dumps(body).encode()
        self.lines, self.then = lines or [], then

    def stream(self, amt: Any = None, decode_content: Any = None) -> Any:
        for line in self.lines:
            yield (json.dumps(line) + "\n").encode()
        if self.then is not None:
            raise self.then

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


class ScriptedServer:
    """Answers lists page by page and watches from a script; records what was asked."""

    def __init__(self, pods: list[dict[str, Any]], watches: list[Any], stop: threading.Event) -> None:
        self.pods, self.watches, self.stop = pods, watches, stop
        self.asked: list[str] = []
        self.on_watch: Callable[[], None] = lambda: None

    def list_pod_for_all_namespaces(self, **kwargs: Any) -> Response:
        assert kwargs["label_selector"] == "app.kubernetes.io/managed-by=tritonscale"
        if kwargs.get("watch"):
            self.asked.append(f"watch from {kwargs['resource_version']}")
            self.on_watch()
            if not self.watches:
                self.stop.set()
                return Response(lines=[])
            step = self.watches.pop(0)
            if isinstance(step, Exception):
                raise step
            if isinstance(step, tuple):  # events, then the connection fails
                return Response(lines=step[0], then=step[1])
            return Response(lines=step)
        start = int(kwargs.get("_continue") or 0)
        self.asked.append(f"list from {start}")
        page = self.pods[start : start + kwargs["limit"]]
        after = str(start + kwargs["limit"]) if start + kwargs["limit"] < len(self.pods) else None
        return Response({"metadata": {"resourceVersion": "10", "continue": after}, "items": page})


def test_the_watch_lists_in_pages_applies_events_and_lists_again_when_its_version_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 410 comes as an ERROR event in the stream (the client's Watch helper fails on it
    without deserializing pods): it lists again at once. A connection lost stops the answers
    until the next list."""
    monkeypatch.setattr(pod_watch, "PAGE", 2)
    monkeypatch.setattr(pod_watch, "RETRY_S", 0.0)
    routers = [pod(f"bert-router-{i}", "bert", COMPONENT_ROUTER, f"10.0.0.{i}") for i in range(3)]
    gone = {"metadata": routers[0]["metadata"] | {"resourceVersion": "11"}, "status": {}}
    added = pod("bert-router-9", "bert", COMPONENT_ROUTER, "10.0.0.9")
    added["metadata"]["resourceVersion"] = "12"
    answers: list[list[str] | None] = []
    managed = ManagedPods(NoServer())
    (scope,) = managed.watches.values()
    server = ScriptedServer(
        routers,
        [
            [
                {"type": "DELETED", "object": gone},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "13"}}},
                {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}},
            ],
            ConnectionError("refused"),
            [{"type": "ADDED", "object": added}],
        ],
        managed.stopping,
    )
    scope.lister, scope.args = server.list_pod_for_all_namespaces, ()
    lost = scope._lost

    def record_lost(why: str, delay: float) -> None:
        lost(why, delay)
        answers.append(managed.ready_addresses("nlp", ROUTERS))

    monkeypatch.setattr(scope, "_lost", record_lost)
    scope._run()
    first_list = ["list from 0", "list from 2", "watch from 10"]
    # After the 410, listed again at once; after the lost connection, too; the server ended the
    # last watch: resumed from its last event's version.
    assert server.asked == first_list * 3 + ["watch from 12"]
    assert answers == [None]
    assert managed.ready_addresses("nlp", ROUTERS) == ["10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.9"]


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
    monkeypatch.setattr(scope, "_list", lambda: None)
    monkeypatch.setattr(scope, "_watch", lambda: None)  # ends at once, no event
    scope._run()
    assert stopping.waits == [pod_watch.RETRY_S] * 3


def test_a_watch_silent_too_long_resumes_from_its_last_version_and_answers_nothing_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read that times out (no event nor bookmark for SILENCE_S: the connection may be dead)
    resumes from the last version seen, not from the list's, without a list; until the new
    watch is open the answers may be stale, so there are none."""
    monkeypatch.setattr(pod_watch, "RETRY_S", 0.0)
    managed = ManagedPods(NoServer())
    (scope,) = managed.watches.values()
    added = pod("bert-router-1", "bert", COMPONENT_ROUTER, "10.0.0.1")
    added["metadata"]["resourceVersion"] = "12"
    server = ScriptedServer(
        [pod("bert-router-0", "bert", COMPONENT_ROUTER, "10.0.0.0")],
        [([{"type": "ADDED", "object": added}], ReadTimeoutError(None, "", "read timed out")), []],
        managed.stopping,
    )
    answers: list[list[str] | None] = []
    server.on_watch = lambda: answers.append(managed.ready_addresses("nlp", ROUTERS))
    scope.lister, scope.args = server.list_pod_for_all_namespaces, ()
    scope._run()
    assert server.asked == ["list from 0", "watch from 10", "watch from 12", "watch from 12"]
    assert answers == [["10.0.0.0"], None, ["10.0.0.0", "10.0.0.1"]]
    assert managed.ready_addresses("nlp", ROUTERS) == ["10.0.0.0", "10.0.0.1"]
