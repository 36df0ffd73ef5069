"""A small in-memory stand-in for the cluster API the reconciler uses (unit tests only)."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import Any

from tritonscale.errors import ConflictError, RejectedError, TransientError


class FakeCluster:
    """Stores objects like an API server would, closely enough for the reconciler's logic.

    `reject` decides whether an object is refused (RejectedError), `fail_next` makes the next
    call fail transiently, `before_write` runs before each write (someone else acting between
    the reconciler's read and its write); `calls` records every write in order.
    """

    def __init__(self) -> None:
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.pod_lists = 0  # list_pods calls
        self.reads: list[tuple[str, ...]] = []  # ("get", kind, name) and ("list", "Deployment")
        self.dry_runs: list[tuple[str, str]] = []  # (kind, name) of each dry-run write
        self.events: list[tuple[str, str, str]] = []
        self.calls: list[tuple[str, ...]] = []
        self.reject: Callable[[dict[str, Any]], str | None] = lambda obj: None
        self.before_write: Callable[[dict[str, Any]], None] = lambda obj: None
        self.fail_next: str | None = None
        self._uids = itertools.count(1)

    # --- InferenceServices -------------------------------------------------
    def add_service(self, obj: dict[str, Any]) -> dict[str, Any]:
        stored = copy.deepcopy(obj)
        stored["metadata"].setdefault("uid", f"tis-{next(self._uids)}")
        stored["metadata"].setdefault("generation", 1)
        self.services[(stored["metadata"]["namespace"], stored["metadata"]["name"])] = stored
        return stored

    def get_inference_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._maybe_fail()
        found = self.services.get((namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def patch_inference_service_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> None:
        self._maybe_fail()
        stored_version = self.services[(namespace, name)]["metadata"].setdefault("resourceVersion", "1")
        if resource_version is not None and resource_version != stored_version:
            raise ConflictError(f"{namespace}/{name} changed: {resource_version} != {stored_version}")
        self.services[(namespace, name)]["metadata"]["resourceVersion"] = str(int(stored_version) + 1)
        self.calls.append(("status", namespace, name))
        current = self.services[(namespace, name)].setdefault("status", {})
        _merge_patch(current, status)

    # --- children ----------------------------------------------------------
    def get_object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self._maybe_fail()
        self.reads.append(("get", kind, name))
        found = self.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def apply(
        self, obj: dict[str, Any], *, current: dict[str, Any] | None, dry_run: bool = False
    ) -> dict[str, Any]:
        self._maybe_fail()
        self.before_write(obj)
        reason = self.reject(obj)
        key = (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
        if reason:
            raise RejectedError(f"apply {key}: {reason}")
        found = self.objects.get(key)
        uid = current and current["metadata"]["uid"]
        if (found and found["metadata"]["uid"]) != uid:  # the uid precondition, as KubeClient.apply
            raise ConflictError(
                f"apply {key}: expected uid {uid}, found {found and found['metadata']['uid']}"
            )
        if dry_run:
            self.dry_runs.append((obj["kind"], obj["metadata"]["name"]))
            return copy.deepcopy(obj)
        self.calls.append(("apply", *key))
        existing = self.objects.get(key)
        stored = copy.deepcopy(obj)
        stored["metadata"]["uid"] = existing["metadata"]["uid"] if existing else f"uid-{next(self._uids)}"
        stored["metadata"]["generation"] = (existing or {}).get("metadata", {}).get("generation", 0) + (
            0 if existing and existing.get("spec") == obj.get("spec") else 1
        )
        if existing is not None and "status" in existing:
            stored["status"] = existing["status"]
        self.objects[key] = stored
        return copy.deepcopy(stored)

    def list_deployments(self, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        self._maybe_fail()
        self.reads.append(("list", "Deployment"))
        return [  # as a list's items come: without kind and apiVersion
            {k: copy.deepcopy(v) for k, v in o.items() if k not in ("kind", "apiVersion")}
            for (kind, ns, _), o in sorted(self.objects.items())
            if kind == "Deployment"
            and ns == namespace
            and selector.items() <= o["metadata"]["labels"].items()
        ]

    def list_pods(self, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        self._maybe_fail()
        self.pod_lists += 1
        return self.matching_pods(namespace, selector)

    def matching_pods(self, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        """The pods a list would give, without counting as one (what a watch holds)."""
        return [
            copy.deepcopy(p)
            for (ns, _), p in sorted(self.pods.items())
            if ns == namespace and selector.items() <= p["metadata"]["labels"].items()
        ]

    def delete_object(self, kind: str, namespace: str, name: str, uid: str) -> None:
        self._maybe_fail()
        key = (kind, namespace, name)
        if key in self.objects and self.objects[key]["metadata"]["uid"] == uid:
            self.calls.append(("delete", *key))
            del self.objects[key]

    def post_event(self, service: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        self.events.append((event_type, reason, message))

    def evict_pod(self, namespace: str, name: str) -> bool:
        """Like the Eviction API without a budget in the way: the pod starts terminating; one
        already terminating is accepted again, as the API server does (404 once it is gone)."""
        pod = self.pods.get((namespace, name))
        if pod is None:
            return False
        self.calls.append(("evict", namespace, name))
        pod["metadata"].setdefault("deletionTimestamp", "2026-01-01T00:00:00Z")
        return True

    # --- test controls -----------------------------------------------------
    def deployment(self, namespace: str, name: str) -> dict[str, Any]:
        return self.objects[("Deployment", namespace, name)]

    def make_ready(self, namespace: str, name: str, ready: int | None = None) -> None:
        """Pretend the Deployment's pods came up (as the controller and kubelets would report)."""
        deployment = self.deployment(namespace, name)
        want = deployment["spec"]["replicas"] if ready is None else ready
        deployment["status"] = {
            "observedGeneration": deployment["metadata"]["generation"],
            "replicas": want,
            "readyReplicas": want,
            "updatedReplicas": deployment["spec"]["replicas"],
        }

    def make_all_ready(self) -> None:
        for kind, namespace, name in list(self.objects):
            if kind == "Deployment":
                self.make_ready(namespace, name)

    def _maybe_fail(self) -> None:
        if self.fail_next is not None:
            message, self.fail_next = self.fail_next, None
            raise TransientError(message, delay=1.0)


def _merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """A JSON merge patch (RFC 7386), as the API server applies one: null removes a key, an
    object merges into an object key by key (keys it leaves out are kept), anything else
    replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
