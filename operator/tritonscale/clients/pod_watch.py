"""The ready addresses and starts of the operator's own pods (Triton and routers), and what a
settling stack's status reads of them, kept by one watch.

The routers are read every 2 s and the Triton source every tick, for each service; listing
their pods each time cost the API server tens of lists a second at 1,000 services. One watch
per scope (the whole cluster, or each watched namespace), selected on the server by the
managed-by label, keeps what those reads need: each pod's labels, its address once Ready, and
how long it took to become Ready (the service's learnt cold start), and the few fields the
stack's status and the spot drain read while a stack settles (policy.pod_fields): each status
refresh of a settling stack used to list its pods, several times per stack in a cold start.
Until the watch has listed its scope, and while it reconnects after a failure, its answers
are None and callers list as before.

The client's `Watch` helper is not used: without deserializing every pod into a model class
(costly at thousands of pods) it fails on the server's in-stream errors, the expired version
(410) among them. The stream is read line by line here instead.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines
from urllib3.exceptions import ReadTimeoutError

from tritonscale.policy.pod_fields import stack_pod_view
from tritonscale.policy.service_facts import pod_start, ready_address, recent_starts
from tritonscale.render.names import LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY

log = logging.getLogger(__name__)

SELECTOR: Final = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
PAGE: Final = 500  # pods a list page holds: a cold list of thousands stays small in memory
WATCH_TIMEOUT_S: Final = 240  # the server ends each watch about this soon; resumed from the last version
# The server sends a bookmark about once a minute: a connection silent for this long is dead, and
# the watch resumes rather than answer from a state that no longer moves.
SILENCE_S: Final = 120.0
REQUEST_TIMEOUT_S: Final = 20.0  # a list page, or connecting a watch, gives up after this
RETRY_S: Final = 5.0  # after a failure, reconnect this much later ...
MOST_RETRY_S: Final = 300.0  # ... doubling while failures follow each other, up to this


@dataclass(frozen=True)
class WatchedPod:
    labels: Mapping[str, str]
    address: str | None  # None until Ready with an IP
    start: tuple[datetime, float] | None  # (created, seconds to Ready) once Ready
    view: Mapping[str, Any]  # what the stack's status reads (policy.pod_fields.stack_pod_view)


class _ScopeWatch:
    """List then watch the managed pods of one scope (a namespace, or None for the cluster)."""

    def __init__(self, core_api: Any, namespace: str | None, stopping: threading.Event) -> None:
        self.lister: Callable[..., Any]
        self.args: tuple[str, ...]
        if namespace is None:
            self.lister, self.args = core_api.list_pod_for_all_namespaces, ()
        else:
            self.lister, self.args = core_api.list_namespaced_pod, (namespace,)
        self.scope = namespace or "the cluster"
        self.stopping = stopping
        self.lock = threading.Lock()
        # (namespace, instance label) -> pod name -> what is kept, and each pod's instance to
        # move or drop it: a read looks at one service's few pods, not at every pod.
        self.by_instance: dict[tuple[str, str], dict[str, WatchedPod]] = {}
        self.instance_of: dict[tuple[str, str], tuple[str, str]] = {}
        self.synced = False
        self.version: str | None = None  # the last resourceVersion seen (list, event or bookmark)
        self.response: Any = None  # the open watch, closed by stop()
        self.thread = threading.Thread(target=self._run, name=f"pod-watch {self.scope}", daemon=True)

    def _run(self) -> None:
        delay = RETRY_S
        while not self.stopping.is_set():
            try:
                if self.version is None:
                    self._list()
                    delay = RETRY_S  # the server answers again: a later failure starts afresh
                    if self.stopping.is_set():
                        break
                began = time.monotonic()
                self._watch()
                if time.monotonic() - began < RETRY_S:
                    # Ended at once (a proxy that cuts watches short?): not in a hot loop.
                    self.stopping.wait(RETRY_S)
                continue  # the server ended the watch: resume from the last version seen
            except ApiException as error:
                if error.status == 410:  # too old to resume from: list afresh, at once
                    log.info("the pod watch in %s expired; listing again", self.scope)
                    self._unsynced()
                    continue
                self._lost(f"{error.status} {error.reason}", delay)
            except ReadTimeoutError:
                if self.version is not None and self.synced:
                    # Silent too long: not answered from until a watch resumes from the last
                    # version seen (or, too old, a list).
                    self._unsynced(keep_version=True)
                    continue
                self._lost("a read timed out", delay)
            except Exception as error:  # any failure: reconnect later; callers list meanwhile
                self._lost(str(error) or type(error).__name__, delay)
            self.stopping.wait(delay)
            delay = min(2 * delay, MOST_RETRY_S)

    def _unsynced(self, *, keep_version: bool = False) -> None:
        with self.lock:
            self.synced = False
            if not keep_version:
                self.version = None

    def _lost(self, why: str, delay: float) -> None:
        if not self.stopping.is_set():
            log.warning(
                "watching pods in %s failed (%s); listing them meanwhile, again in %.0fs",
                self.scope,
                why,
                delay,
            )
        self._unsynced()

    def _list(self) -> None:
        """Replace what is kept with a fresh list, page by page, and watch from its version."""
        by_instance: dict[tuple[str, str], dict[str, WatchedPod]] = {}
        instance_of: dict[tuple[str, str], tuple[str, str]] = {}
        after: str | None = None
        while True:
            response = self.lister(
                *self.args,
                label_selector=SELECTOR,
                limit=PAGE,
                _continue=after,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT_S,
            )
            page = json.loads(response.data)
            for pod in page.get("items") or []:
                _keep(by_instance, instance_of, pod)
            after = page["metadata"].get("continue")
            if not after:
                break
        with self.lock:
            self.by_instance, self.instance_of = by_instance, instance_of
            self.version = str(page["metadata"]["resourceVersion"])
            self.synced = True

    def _watch(self) -> None:
        """Apply events from the last version seen until the server ends the watch."""
        self.response = self.lister(
            *self.args,
            label_selector=SELECTOR,
            resource_version=self.version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_TIMEOUT_S,
            watch=True,
            _preload_content=False,
            _request_timeout=(REQUEST_TIMEOUT_S, SILENCE_S),
        )
        try:
            if self.stopping.is_set():  # stopped while this watch was being opened
                return
            with self.lock:
                self.synced = True  # resumed where it left off (a silence had made it unsure)
            for line in iter_resp_lines(self.response):  # type: ignore[no-untyped-call]
                if self.stopping.is_set():
                    break
                if not line:
                    continue
                event = json.loads(line)
                kind, pod = event["type"], event["object"]
                if kind == "ERROR":  # a Status: 410 when the version is too old to resume from
                    raise ApiException(status=pod.get("code"), reason=pod.get("message"))
                self.apply(kind, pod)
        finally:
            self.response.close()
            self.response.release_conn()
            self.response = None

    def apply(self, kind: str, pod: Mapping[str, Any]) -> None:
        """One watch event: ADDED, MODIFIED, DELETED (a BOOKMARK only moves the version)."""
        with self.lock:
            self.version = str(pod["metadata"]["resourceVersion"])
            if kind == "BOOKMARK":
                return
            _drop(self.by_instance, self.instance_of, pod)
            if kind != "DELETED":
                _keep(self.by_instance, self.instance_of, pod)

    def close(self) -> None:
        """Stop reading: shut the open watch, so the thread leaves its read now (a watch being
        opened meanwhile is left at its first line, or the server's next bookmark)."""
        response = self.response
        if response is not None:
            try:
                response.shutdown()
            except Exception:  # already closed, or a client without shutdown(): it ends at its timeout
                log.debug("could not shut the pod watch in %s", self.scope, exc_info=True)

    def matching(self, namespace: str, selector: Mapping[str, str]) -> list[WatchedPod] | None:
        with self.lock:
            if not self.synced:
                return None
            pods = self.by_instance.get((namespace, selector[LABEL_INSTANCE]), {})
            return [
                pod
                for pod in pods.values()
                if all(pod.labels.get(key) == value for key, value in selector.items())
            ]


def _keep(
    by_instance: dict[tuple[str, str], dict[str, WatchedPod]],
    instance_of: dict[tuple[str, str], tuple[str, str]],
    pod: Mapping[str, Any],
) -> None:
    metadata = pod["metadata"]
    labels = dict(metadata.get("labels") or {})
    instance = (str(metadata["namespace"]), labels.get(LABEL_INSTANCE, ""))
    by_instance.setdefault(instance, {})[metadata["name"]] = WatchedPod(
        labels, ready_address(pod), pod_start(pod), stack_pod_view(pod)
    )
    instance_of[(instance[0], metadata["name"])] = instance


def _drop(
    by_instance: dict[tuple[str, str], dict[str, WatchedPod]],
    instance_of: dict[tuple[str, str], tuple[str, str]],
    pod: Mapping[str, Any],
) -> None:
    metadata = pod["metadata"]
    instance = instance_of.pop((str(metadata["namespace"]), metadata["name"]), None)
    if instance is not None:
        pods = by_instance[instance]
        pods.pop(metadata["name"], None)
        if not pods:
            del by_instance[instance]


class ManagedPods:
    """Ready addresses and starts of the operator's pods by label selector, from one watch per
    scope."""

    def __init__(self, core_api: Any, namespaces: tuple[str, ...] = ()) -> None:
        self.stopping = threading.Event()
        scopes: tuple[str | None, ...] = namespaces or (None,)
        self.watches = {scope: _ScopeWatch(core_api, scope, self.stopping) for scope in scopes}

    def start(self) -> ManagedPods:
        for scope in self.watches.values():
            scope.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        for scope in self.watches.values():
            scope.close()

    def matching(self, namespace: str, selector: Mapping[str, str]) -> list[WatchedPod] | None:
        """The pods the selector matches; None when this cannot answer (not listed yet, the
        watch reconnecting, or a selector that is not one of ours): the caller lists instead."""
        if selector.get(LABEL_MANAGED_BY) != MANAGED_BY or LABEL_INSTANCE not in selector:
            return None
        scope = self.watches.get(None) or self.watches.get(namespace)
        return None if scope is None else scope.matching(namespace, selector)

    def ready_addresses(self, namespace: str, selector: Mapping[str, str]) -> list[str] | None:
        """The Ready pods' addresses, sorted; None when this cannot answer."""
        pods = self.matching(namespace, selector)
        return None if pods is None else sorted(pod.address for pod in pods if pod.address is not None)

    def stack_pods(self, namespace: str, selector: Mapping[str, str]) -> list[dict[str, Any]] | None:
        """The pods the selector matches, each cut to what the stack's status reads
        (policy.pod_fields), in name order; None when this cannot answer."""
        pods = self.matching(namespace, selector)
        if pods is None:
            return None
        return sorted(
            (copy.deepcopy(dict(pod.view)) for pod in pods), key=lambda view: view["metadata"].get("name", "")
        )

    def starts_and_addresses(
        self, namespace: str, selector: Mapping[str, str]
    ) -> tuple[tuple[tuple[datetime, float], ...], list[str]] | None:
        """The most recent starts of the Ready pods, oldest first, and their addresses, sorted,
        from one look at the same pods; None when this cannot answer."""
        pods = self.matching(namespace, selector)
        if pods is None:
            return None
        return recent_starts(pod.start for pod in pods), sorted(
            pod.address for pod in pods if pod.address is not None
        )
