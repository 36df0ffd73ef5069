"""The operator's only door to the Kubernetes API (official `kubernetes` client).

Objects go in and come out as plain dicts, so nothing above this module knows the client's
model classes; API failures come out as TransientError or RejectedError.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import kubernetes
import urllib3
import yaml
from kubernetes.client.exceptions import ApiException

from tritonscale.api.resource import GROUP, KIND, PLURAL, VERSION
from tritonscale.clients.events import Drop, EventCorrelator, Update
from tritonscale.errors import ConflictError, NamespaceTerminatingError, RejectedError, TransientError
from tritonscale.render.names import FIELD_MANAGER

APPLY_CONTENT_TYPE: Final = "application/apply-patch+yaml"
# Every request gives up rather than hang on a server that does not answer: a person at a
# terminal waits no longer, and a half-open connection would hold a reconcile worker for good
# (a write that timed out is retried as transient; each is idempotent). Below the API server's
# own 60 s limit, far above what a request takes even at 1,000 services.
REQUEST_TIMEOUT_S: Final = 20.0
DROP_ATTEMPTS: Final = 3  # reads and patches to drop a create's managedFields entry (KubeClient.apply)
IN_CLUSTER_NAMESPACE_FILE: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
log = logging.getLogger(__name__)


class KubeconfigError(Exception):
    """No usable credentials: the kubeconfig is missing or invalid, or has no such context."""


def _api_message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "").get("message", error.reason))
    except (TypeError, ValueError):
        return str(error.reason)


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Map client failures onto the two kinds the reconciler tells apart."""
    try:
        yield
    except ApiException as error:
        message = f"{what}: {_api_message(error)}"
        if error.status == 403 and "being terminated" in message:
            raise NamespaceTerminatingError(message) from error
        if error.status == 422 and _replaced(error):
            raise ConflictError(message) from error
        if error.status in (400, 403, 422):
            raise RejectedError(message) from error
        if error.status == 409:
            raise ConflictError(message) from error
        delay = 30.0 if error.status == 429 else 5.0
        raise TransientError(message, delay=delay) from error
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise TransientError(f"{what}: {error}", delay=5.0) from error


def _replaced(error: ApiException) -> bool:
    """Whether an apply with a uid precondition found another object of that name."""
    try:
        causes = json.loads(error.body or "").get("details", {}).get("causes", [])
    except (TypeError, ValueError, AttributeError):
        return False
    return any(cause.get("field") == "metadata.uid" for cause in causes)


def _entries_of_updates(obj: dict[str, Any], manager: str) -> list[dict[str, Any]]:
    """`manager`'s managedFields entries from writes to the object itself that were not
    applies (our create's), whose fields an apply cannot take back from them."""
    return [
        entry
        for entry in obj["metadata"].get("managedFields", [])
        if entry.get("manager") == manager
        and entry.get("operation") != "Apply"
        and not entry.get("subresource")
    ]


# Where each child kind is written (server-side apply is a PATCH on the object's own path).
_CHILD_PATHS: Final = {
    "ConfigMap": "/api/v1/namespaces/{namespace}/configmaps/{name}",
    "Service": "/api/v1/namespaces/{namespace}/services/{name}",
    "Deployment": "/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
    "PodDisruptionBudget": "/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/{name}",
    "NetworkPolicy": "/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/{name}",
}


def apply_body(obj: dict[str, Any]) -> bytes:
    """The apply patch as UTF-8 JSON. The client's own encoding escapes text outside the Basic
    Multilingual Plane (an emoji) as a surrogate pair, which the API server's YAML decoder of
    apply patches refuses ("invalid Unicode character escape code"); raw UTF-8 is valid YAML."""
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class Connection:
    """Where and as whom a client talks to the API server (kopf is given the same)."""

    server: str
    ca_path: str | None = None
    insecure: bool = False
    scheme: str | None = None
    token: str | None = None
    certificate_path: str | None = None
    private_key_path: str | None = None
    username: str | None = None
    password: str | None = None


def _read_out(response: Any) -> None:
    """Read an answer nobody needs (sent with _preload_content=False, so not parsed): only a
    response read to its end gives its connection back to the pool; one left unread is lost,
    and a later request pays a new connection and TLS handshake."""
    response.read()


class KubeClient:
    """Reads, server-side applies and deletes the objects of InferenceService stacks."""

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        field_manager: str = FIELD_MANAGER,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api_client = api_client
        self.field_manager = field_manager
        self.events = EventCorrelator()
        self.monotonic = monotonic

    # Each generated API object takes about a second to build (kubernetes 37 validates hundreds
    # of methods): built on first use, so a short-lived command pays only for what it calls.
    @functools.cached_property
    def core(self) -> Any:
        return kubernetes.client.CoreV1Api(self.api_client)

    @functools.cached_property
    def apps(self) -> Any:
        return kubernetes.client.AppsV1Api(self.api_client)

    @functools.cached_property
    def policy(self) -> Any:
        return kubernetes.client.PolicyV1Api(self.api_client)

    @functools.cached_property
    def networking(self) -> Any:
        return kubernetes.client.NetworkingV1Api(self.api_client)

    @functools.cached_property
    def custom(self) -> Any:
        return kubernetes.client.CustomObjectsApi(self.api_client)

    @functools.cached_property
    def _readers(self) -> dict[str, Callable[..., Any]]:
        return {
            "ConfigMap": self.core.read_namespaced_config_map,
            "Service": self.core.read_namespaced_service,
            "Deployment": self.apps.read_namespaced_deployment,
            "PodDisruptionBudget": self.policy.read_namespaced_pod_disruption_budget,
            "NetworkPolicy": self.networking.read_namespaced_network_policy,
        }

    @classmethod
    def connect(cls, kubeconfig: str | None = None, connections: int = 32) -> KubeClient:
        """The given kubeconfig; else in-cluster credentials when running in a pod, else
        $KUBECONFIG or ~/.kube/config. KubeconfigError when none is usable."""
        configuration = kubernetes.client.Configuration()
        # One kept-alive connection per thread that may call at once; the default pool (10 here)
        # made the extra threads open, TLS-handshake and drop a connection for every request.
        configuration.connection_pool_maxsize = connections
        try:
            if kubeconfig is None:
                try:
                    kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                except kubernetes.config.ConfigException:
                    kubernetes.config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            else:
                kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
        except (
            kubernetes.config.ConfigException,
            OSError,
            yaml.YAMLError,
            TypeError,
            ValueError,
            KeyError,
            AttributeError,
        ) as error:
            where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise KubeconfigError(
                f"no usable credentials: not running in a pod, and kubeconfig {where}: {error}"
                if kubeconfig is None
                else f"kubeconfig {kubeconfig}: {error}"
            ) from None
        return cls(kubernetes.client.ApiClient(configuration))

    @classmethod
    def connect_like_kubectl(
        cls, kubeconfig: str | None = None, context: str | None = None
    ) -> tuple[KubeClient, str]:
        """Find the cluster as kubectl does: the kubeconfig (given, else $KUBECONFIG, else
        ~/.kube/config) at `context` or its current one, and only when there is no kubeconfig the
        pod's in-cluster credentials. Returns the client and the namespace kubectl would use (the
        context's, else the pod's own, else "default"). Never writes to the kubeconfig."""
        paths = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        found = [p for p in paths.split(os.pathsep) if p and Path(p).expanduser().exists()]
        if kubeconfig is not None and not found:
            raise KubeconfigError(f"kubeconfig {kubeconfig} not found")
        configuration = kubernetes.client.Configuration()
        # One retry: with REQUEST_TIMEOUT_S each, an unreachable server is reported within a minute.
        configuration.retries = 1
        try:
            if not found and context is None:
                try:
                    kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                except kubernetes.config.ConfigException:
                    raise KubeconfigError(
                        f"no kubeconfig at {paths} and not running in a pod: pass --kubeconfig"
                    ) from None
                namespace = "default"
                if IN_CLUSTER_NAMESPACE_FILE.exists():
                    namespace = IN_CLUSTER_NAMESPACE_FILE.read_text().strip() or namespace
                return cls(kubernetes.client.ApiClient(configuration)), namespace
            contexts, current = kubernetes.config.list_kube_config_contexts(config_file=paths)  # type: ignore[no-untyped-call]
            chosen = current if context is None else next((c for c in contexts if c["name"] == context), None)
            if chosen is None:
                raise KubeconfigError(f"context {context!r} not found in {paths}")
            kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=paths,
                context=chosen["name"],
                client_configuration=configuration,
                persist_config=False,
            )
        except (kubernetes.config.ConfigException, OSError, ValueError, KeyError, TypeError) as error:
            raise KubeconfigError(f"kubeconfig {paths}: {error}") from error
        namespace = str((chosen.get("context") or {}).get("namespace") or "default")
        return cls(kubernetes.client.ApiClient(configuration)), namespace

    def connection(self) -> Connection:
        """This client's server and credentials, read anew each time (an in-cluster token is
        rotated on disk; the client's refresh hook rereads it)."""
        configuration = self.api_client.configuration
        # kubernetes >= 36 keeps the bearer token under BearerToken, older ones under authorization.
        header = configuration.get_api_key_with_prefix(
            "BearerToken"
        ) or configuration.get_api_key_with_prefix("authorization")
        scheme, token = None, None
        if header:
            parts = header.split(" ", 1)
            scheme, token = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])
        return Connection(
            server=configuration.host,
            ca_path=configuration.ssl_ca_cert or None,
            insecure=not configuration.verify_ssl,
            scheme=scheme,
            token=token,
            certificate_path=configuration.cert_file or None,
            private_key_path=configuration.key_file or None,
            username=configuration.username or None,
            password=configuration.password or None,
        )

    @staticmethod
    def _json(response: Any) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(response.data)
        return data

    def get_inference_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The InferenceService as stored, or None when it is gone."""
        with _translated(f"get InferenceService {namespace}/{name}"):
            try:
                response = self.custom.get_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    name,
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT_S,
                )
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
        return self._json(response)

    def list_inference_services(
        self, namespace: str | None = None, name: str | None = None
    ) -> list[dict[str, Any]]:
        """The InferenceServices in `namespace` (all namespaces when None), only the one called
        `name` when given (an empty list when there is none)."""
        where = f"in {namespace}" if namespace else "in all namespaces"
        options: dict[str, Any] = {"_preload_content": False, "_request_timeout": REQUEST_TIMEOUT_S}
        if name is not None:
            options["field_selector"] = f"metadata.name={name}"
        with _translated(f"list InferenceServices {where}"):
            try:
                if namespace is None:
                    response = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **options)
                else:
                    response = self.custom.list_namespaced_custom_object(
                        GROUP, VERSION, namespace, PLURAL, **options
                    )
            except ApiException as error:
                # The resource type itself is unknown: say so rather than "Not Found".
                if error.status == 404:
                    raise RejectedError(
                        f"the server has no {PLURAL}.{GROUP}: is the tritonscale CRD installed?"
                    ) from error
                raise
        items: list[dict[str, Any]] = self._json(response)["items"]
        return items

    def list_events(self, namespace: str | None, involved_object: Mapping[str, str]) -> list[dict[str, Any]]:
        """core/v1 Events whose involvedObject has these fields, e.g. {"kind": KIND, "uid": ...};
        in all namespaces when `namespace` is None."""
        field_selector = ",".join(
            f"involvedObject.{key}={value}" for key, value in sorted(involved_object.items())
        )
        where = f"in {namespace}" if namespace else "in all namespaces"
        with _translated(f"list Events {where}"):
            if namespace is None:
                response = self.core.list_event_for_all_namespaces(
                    field_selector=field_selector, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S
                )
            else:
                response = self.core.list_namespaced_event(
                    namespace,
                    field_selector=field_selector,
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT_S,
                )
        items: list[dict[str, Any]] = self._json(response)["items"]
        return items

    def get_object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A child kind's object as stored, or None when there is none of that name."""
        with _translated(f"get {kind} {namespace}/{name}"):
            try:
                response = self._readers[kind](
                    name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S
                )
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
        return self._json(response)

    def apply(
        self, obj: dict[str, Any], *, current: dict[str, Any] | None, dry_run: bool = False
    ) -> dict[str, Any]:
        """Write a child as our field manager, only if it is still the object the reconciler
        read and checked is this InferenceService's own: `current` is that object as read, or
        None when there was none. Fails with ConflictError when that changed since: another
        object of the name was created, or it was replaced.

        A new child is created, which fails when an object of its name appeared after the read
        (an apply would adopt it), then applied once with its uid, so that the apply owns its
        fields. An existing one is server-side applied with force (taking back fields changed
        by hand) with its uid as a precondition; first, the entry its create left in
        managedFields is dropped, since fields the create also owned would outlive their
        removal from this rendering."""
        kind = obj["kind"]
        metadata = obj["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        path = _CHILD_PATHS[kind].format(namespace=namespace, name=name)
        if current is None:
            with _translated(f"create {kind} {namespace}/{name}"):
                # Strict: unknown fields refused, as the apply that follows refuses them.
                query = [("fieldManager", self.field_manager), ("fieldValidation", "Strict")]
                created = self._send(
                    "POST", path.rsplit("/", 1)[0], query + ([("dryRun", "All")] if dry_run else []), obj
                )
            if dry_run:
                return created
            uid = created["metadata"]["uid"]
        else:
            uid = current["metadata"]["uid"]
            if not dry_run and _entries_of_updates(current, self.field_manager):
                self._drop_update_entries(path, current, uid)
        return self.server_side_apply({**obj, "metadata": {**metadata, "uid": uid}}, dry_run=dry_run)

    def server_side_apply(self, obj: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply `obj` as our field manager, with force; a `metadata.uid` in it is
        a precondition (the API server refuses it for another object of the name, or none)."""
        kind = obj["kind"]
        metadata = obj["metadata"]
        path = _CHILD_PATHS[kind].format(namespace=metadata["namespace"], name=metadata["name"])
        query = [("fieldManager", self.field_manager), ("force", "true")]
        with _translated(f"apply {kind} {metadata['namespace']}/{metadata['name']}"):
            return self._send(
                "PATCH",
                path,
                query + ([("dryRun", "All")] if dry_run else []),
                obj,
                content_type=APPLY_CONTENT_TYPE,
            )

    def _drop_update_entries(self, path: str, obj: dict[str, Any], uid: str) -> None:
        """Remove our manager's Update entries (a create's) from `obj`'s managedFields. Each is
        tested to be still at its index, so no other writer's entry is lost; when one moved,
        the object is read again. Raises ConflictError when that never holds (the write is
        tried again), or when the object is no longer the one read."""
        what = f"drop the create's managedFields entry of {path}"
        deleted = f"{what}: the object was deleted since it was read"
        with _translated(what):
            for _ in range(DROP_ATTEMPTS):
                if obj["metadata"].get("uid") != uid:
                    raise ConflictError(f"{what}: the object was replaced since it was read")
                ours = _entries_of_updates(obj, self.field_manager)
                if not ours:
                    return
                patch: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/uid", "value": uid}]
                for index, entry in reversed(list(enumerate(obj["metadata"]["managedFields"]))):
                    if entry in ours:
                        patch += [
                            {"op": "test", "path": f"/metadata/managedFields/{index}", "value": entry},
                            {"op": "remove", "path": f"/metadata/managedFields/{index}"},
                        ]
                try:
                    self._send("PATCH", path, [], patch, content_type="application/json-patch+json")
                    return
                except ApiException as error:
                    if error.status == 404:
                        raise ConflictError(deleted) from error
                    if error.status not in (409, 422):  # 422: a test operation failed
                        raise
                try:
                    obj = self._send("GET", path, [], None)
                except ApiException as error:
                    if error.status == 404:
                        raise ConflictError(deleted) from error
                    raise
        raise ConflictError(f"{what}: it kept changing")

    def _send(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        body: Any,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """One request through the client's low-level call, which can send an apply patch as
        raw UTF-8 (see apply_body; the generated patch methods accept only a dict). Raises
        ApiException unless the server answers 2xx."""
        method, url, headers, serialized, _ = self.api_client.param_serialize(
            method,
            path,
            query_params=query,
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=apply_body(body) if content_type == APPLY_CONTENT_TYPE else body,
            auth_settings=["BearerToken"],
        )
        response = self.api_client.call_api(
            method, url, header_params=headers, body=serialized, _request_timeout=REQUEST_TIMEOUT_S
        )
        response.read()  # type: ignore[no-untyped-call]
        if not 200 <= response.status < 300:
            raise ApiException(http_resp=response)
        return self._json(response)

    def list_deployments(self, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        return self._list(self.apps.list_namespaced_deployment, "Deployments", namespace, selector)

    def list_pods(self, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        return self._list(self.core.list_namespaced_pod, "Pods", namespace, selector)

    def _list(
        self, lister: Callable[..., Any], what: str, namespace: str, selector: dict[str, str]
    ) -> list[dict[str, Any]]:
        label_selector = ",".join(f"{key}={value}" for key, value in sorted(selector.items()))
        with _translated(f"list {what} in {namespace}"):
            response = lister(
                namespace,
                label_selector=label_selector,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT_S,
            )
        items: list[dict[str, Any]] = self._json(response)["items"]
        return items

    def delete_object(self, kind: str, namespace: str, name: str, uid: str) -> None:
        """Delete a child only if it is still the object we looked at (uid precondition)."""
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"uid": uid},
            "propagationPolicy": "Background",
        }
        path = _CHILD_PATHS[kind].format(namespace=namespace, name=name)
        with _translated(f"delete {kind} {namespace}/{name}"):
            try:
                self._send("DELETE", path, [], body)
            except ApiException as error:
                # Already gone (404), or replaced by another object of that name (409): nothing to do.
                if error.status not in (404, 409):
                    raise

    def evict_pod(self, namespace: str, name: str) -> bool:
        """Evict a pod through the Eviction API, so its PodDisruptionBudget is honoured. False when
        the budget refuses now (429, try again later) or the pod is already gone."""
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
        }
        try:
            answer = self.core.create_namespaced_pod_eviction(
                name, namespace, body, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S
            )
        except ApiException as error:
            # 429: the budget refuses for now; 404: already gone. Anything else (forbidden, the
            # API down) is logged: failing to drain early never fails a reconcile, the node's own
            # drain still comes.
            level = logging.INFO if error.status in (404, 429) else logging.WARNING
            log.log(level, "eviction of %s/%s not done: %s", namespace, name, _api_message(error))
            return False
        except (urllib3.exceptions.HTTPError, OSError) as error:
            log.warning("eviction of %s/%s not done: %s", namespace, name, error)
            return False
        try:
            _read_out(answer)
        except (urllib3.exceptions.HTTPError, OSError) as error:
            # The server said yes before the body was lost: the pod is being evicted.
            log.debug("eviction of %s/%s done; its answer was not read: %s", namespace, name, error)
        return True

    def patch_inference_service_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> None:
        """Merge-patch the status; with `resource_version`, only if the object is still that
        version (ConflictError otherwise)."""
        patch: dict[str, Any] = {"status": status}
        if resource_version is not None:
            patch["metadata"] = {"resourceVersion": resource_version}
        with _translated(f"update status of InferenceService {namespace}/{name}"):
            _read_out(
                self.custom.patch_namespaced_custom_object_status(
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    name,
                    patch,
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT_S,
                )
            )

    def post_event(self, service: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        """Record an Event on the InferenceService, folded into an earlier one or dropped as
        client-go's EventCorrelator would (see clients/events.py); failing to post never fails
        a reconcile."""
        metadata = service["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        involved = metadata.get("uid") or f"{namespace}/{name}"
        action = self.events.decide(involved, event_type, reason, message[:1024], self.monotonic())
        if isinstance(action, Drop):
            log.debug(
                "event %s on %s/%s dropped: the object's event budget is spent", reason, namespace, name
            )
            return
        now = datetime.now(UTC).isoformat()
        try:
            if isinstance(action, Update):
                self._raise_event_count(namespace, action, now)
                return
            body = {
                "metadata": {"generateName": f"{name}.", "namespace": namespace},
                "involvedObject": {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": KIND,
                    "name": name,
                    "namespace": namespace,
                    "uid": metadata.get("uid"),
                    "resourceVersion": metadata.get("resourceVersion"),
                },
                "type": event_type,
                "reason": reason,
                "message": action.message[:1024],
                "source": {"component": FIELD_MANAGER},
                "reportingComponent": FIELD_MANAGER,
                "reportingInstance": socket.gethostname()[:128],
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            }
            created = self.core.create_namespaced_event(
                namespace, body, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S
            )
            self.events.created(action.key, json.loads(created.data)["metadata"]["name"])
        except ApiException as error:
            text = _api_message(error)
            # Nothing can be created in a namespace being deleted, and nobody will read it there.
            level = logging.DEBUG if "being terminated" in text else logging.WARNING
            log.log(level, "could not post event %s on %s/%s: %s", reason, namespace, name, text)
        except (urllib3.exceptions.HTTPError, OSError, ValueError, KeyError) as error:
            log.warning("could not post event %s on %s/%s: %s", reason, namespace, name, error)

    def _raise_event_count(self, namespace: str, update: Update, now: str) -> None:
        patch = {"count": update.count, "lastTimestamp": now, "message": update.message[:1024]}
        try:
            _read_out(
                self.core.patch_namespaced_event(
                    update.name, namespace, patch, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S
                )
            )
        except ApiException as error:
            if error.status != 404:
                raise
            # The Event expired (the API server keeps them an hour): the next one starts afresh.
            self.events.forget(update.key)
