"""The requests KubeClient.apply sends, against a scripted HTTP server: what a child write asks
of the API server and how its answers become errors (the real server's behaviour is proven in
tests/e2e/test_correctness.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import kubernetes
import pytest

from tritonscale.clients.kube import KubeClient
from tritonscale.errors import ConflictError, RejectedError

CONFIG_MAP = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "svc-router", "namespace": "default"},
    "data": {"a": "b"},
}
PATH = "/api/v1/namespaces/default/configmaps/svc-router"
CREATE_ENTRY = {"manager": "tritonscale", "operation": "Update", "time": "t1", "fieldsV1": {"f:data": {}}}
APPLY_ENTRY = {"manager": "tritonscale", "operation": "Apply", "time": "t2", "fieldsV1": {"f:data": {}}}
OTHER_ENTRY = {"manager": "kube-controller-manager", "operation": "Update", "time": "t3"}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any


@dataclass
class Script:
    """The answers, in order: (status, body); every request is recorded."""

    answers: list[tuple[int, dict[str, Any]]]
    requests: list[Request] = field(default_factory=list)


def stored(uid: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {**CONFIG_MAP, "metadata": {**CONFIG_MAP["metadata"], "uid": uid, "managedFields": entries}}


def status(code: int, reason: str, causes: list[dict[str, str]] | None = None) -> tuple[int, dict[str, Any]]:
    return code, {
        "kind": "Status",
        "code": code,
        "reason": reason,
        "message": reason,
        "details": {"causes": causes or []},
    }


@pytest.fixture
def served() -> Iterator[tuple[Script, KubeClient]]:
    script = Script([])

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            script.requests.append(
                Request(
                    self.command,
                    url.path,
                    dict(parse_qsl(url.query)),
                    self.headers.get("Content-Type", ""),
                    json.loads(raw) if raw else None,
                )
            )
            code, body = script.answers.pop(0)
            payload = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = _answer  # noqa: N815 (http.server's names)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    configuration = kubernetes.client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    configuration.retries = 0
    try:
        yield script, KubeClient(kubernetes.client.ApiClient(configuration))
    finally:
        server.shutdown()
        server.server_close()


def test_a_new_child_is_created_then_applied_with_the_created_uid(served: tuple[Script, KubeClient]) -> None:
    script, client = served
    script.answers = [(201, stored("u1", [CREATE_ENTRY])), (200, stored("u1", [APPLY_ENTRY, CREATE_ENTRY]))]
    client.apply(CONFIG_MAP, current=None)
    create, apply = script.requests
    assert (create.method, create.path) == ("POST", "/api/v1/namespaces/default/configmaps")
    assert create.query == {"fieldManager": "tritonscale", "fieldValidation": "Strict"}
    assert create.body == CONFIG_MAP
    assert (apply.method, apply.path, apply.content_type) == ("PATCH", PATH, "application/apply-patch+yaml")
    assert apply.query == {"fieldManager": "tritonscale", "force": "true"}
    assert apply.body["metadata"]["uid"] == "u1", "the apply must name the object it created"


def test_a_name_taken_since_the_read_is_a_conflict_and_nothing_else_is_sent(
    served: tuple[Script, KubeClient],
) -> None:
    script, client = served
    script.answers = [status(409, "AlreadyExists")]
    with pytest.raises(ConflictError):
        client.apply(CONFIG_MAP, current=None)
    assert [r.method for r in script.requests] == ["POST"]


def test_a_dry_run_of_a_new_child_is_a_dry_run_create_alone(served: tuple[Script, KubeClient]) -> None:
    script, client = served
    script.answers = [(201, stored("", []))]
    client.apply(CONFIG_MAP, current=None, dry_run=True)
    [create] = script.requests
    assert create.method == "POST" and create.query["dryRun"] == "All"


def test_an_existing_child_is_applied_with_its_uid_and_a_replaced_one_is_a_conflict(
    served: tuple[Script, KubeClient],
) -> None:
    script, client = served
    current = stored("u1", [APPLY_ENTRY, OTHER_ENTRY])
    script.answers = [
        (200, current),
        status(422, "Invalid", [{"field": "metadata.uid", "message": "field is immutable"}]),
        status(409, "Conflict"),  # "uid mismatch": deleted since
        status(422, "Invalid", [{"field": "spec.ports", "message": "Required value"}]),
    ]
    client.apply(CONFIG_MAP, current=current)
    [apply] = script.requests
    assert apply.method == "PATCH" and apply.body["metadata"]["uid"] == "u1"
    for _ in range(2):
        with pytest.raises(ConflictError):
            client.apply(CONFIG_MAP, current=current)
    with pytest.raises(RejectedError):  # refused for what it is: retrying cannot help
        client.apply(CONFIG_MAP, current=current)


def test_the_creates_entry_is_dropped_before_the_next_write_reading_again_when_it_moved(
    served: tuple[Script, KubeClient],
) -> None:
    script, client = served
    current = stored("u1", [APPLY_ENTRY, CREATE_ENTRY])
    script.answers = [
        status(422, "Invalid"),  # a test operation failed: another writer moved the entries
        (200, stored("u1", [OTHER_ENTRY, APPLY_ENTRY, CREATE_ENTRY])),
        (200, stored("u1", [OTHER_ENTRY, APPLY_ENTRY])),
        (200, stored("u1", [OTHER_ENTRY, APPLY_ENTRY])),
    ]
    client.apply(CONFIG_MAP, current=current)
    first, read, second, apply = script.requests
    assert first.body == [
        {"op": "test", "path": "/metadata/uid", "value": "u1"},
        {"op": "test", "path": "/metadata/managedFields/1", "value": CREATE_ENTRY},
        {"op": "remove", "path": "/metadata/managedFields/1"},
    ]
    assert first.content_type == "application/json-patch+json"
    assert read.method == "GET"
    assert second.body[1:] == [
        {"op": "test", "path": "/metadata/managedFields/2", "value": CREATE_ENTRY},
        {"op": "remove", "path": "/metadata/managedFields/2"},
    ]
    assert apply.content_type == "application/apply-patch+yaml"


def test_no_write_when_the_creates_entry_cannot_be_dropped(served: tuple[Script, KubeClient]) -> None:
    """Written with the entry in place, a field this rendering leaves out would stay."""
    script, client = served
    current = stored("u1", [APPLY_ENTRY, CREATE_ENTRY])
    script.answers = [status(404, "NotFound")]
    with pytest.raises(ConflictError, match="deleted"):
        client.apply(CONFIG_MAP, current=current)
    script.answers = [status(422, "Invalid"), (200, current)] * 3
    with pytest.raises(ConflictError, match="kept changing"):
        client.apply(CONFIG_MAP, current=current)
    assert all(r.content_type != "application/apply-patch+yaml" for r in script.requests)
