"""One InferenceService served by local processes, driven by the operator's own reconcilers.

`ProcessBackedCluster` implements the reconcilers' `ClusterApi`: applying a Triton Deployment
starts or stops tritonserver processes, the headless Service is a dnsmasq answering with the
ready ones (so the real HAProxy router discovers them by DNS, as in a cluster), and status and
events are kept in memory. The StackReconciler and AutoscaleReconciler run unchanged on top.
"""

from __future__ import annotations

import copy
import logging
import threading
import uuid
from typing import Any

from tritonscale.errors import ConflictError
from tritonscale.render.names import COMPONENT_TRITON, LABEL_COMPONENT
from tritonscale_sandbox.router import DnsServer
from tritonscale_sandbox.triton import TritonPool, TritonServer

log = logging.getLogger(__name__)


class ProcessBackedCluster:
    """A ClusterApi for one InferenceService whose Triton pods are local processes."""

    def __init__(self, service: dict[str, Any], pool: TritonPool, dns: DnsServer) -> None:
        self.body = copy.deepcopy(service)
        self.body["metadata"].setdefault("uid", str(uuid.uuid4()))
        self.body["metadata"].setdefault("generation", 1)
        self.body.setdefault("status", {})
        self.pool = pool
        self.dns = dns
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[tuple[str, str, str]] = []
        self._lock = threading.RLock()
        self._retiring: list[threading.Thread] = []

    # --- the InferenceService ---------------------------------------------------
    def get_inference_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            metadata = self.body["metadata"]
            if (metadata.get("namespace", "default"), metadata["name"]) != (namespace, name):
                return None
            return copy.deepcopy(self.body)

    def update_spec(self, spec_changes: dict[str, Any]) -> None:
        """Change the spec as `kubectl apply` would (the generation moves on)."""
        with self._lock:
            self.body["spec"].update(copy.deepcopy(spec_changes))
            self.body["metadata"]["generation"] += 1

    def patch_inference_service_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> None:
        """Merge the status in; the one writer here is in this process, so no precondition."""
        with self._lock:
            current = self.body.setdefault("status", {})
            for key, value in status.items():
                if value is None:
                    current.pop(key, None)
                else:
                    current[key] = copy.deepcopy(value)

    def post_event(self, service: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        with self._lock:
            self.events.append((event_type, reason, message))
        log.info("event %s %s: %s", event_type, reason, message)

    # --- children ---------------------------------------------------------------
    def get_object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            found = self.objects.get((kind, name))
            return copy.deepcopy(found) if found is not None else None

    def list_pods(self, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        """Local processes are never unscheduled: no pod reports PodScheduled=False."""
        return []

    def apply(
        self, obj: dict[str, Any], *, current: dict[str, Any] | None, dry_run: bool = False
    ) -> dict[str, Any]:
        with self._lock:
            key = (obj["kind"], obj["metadata"]["name"])
            previous = self.objects.get(key)
            uid = current and current["metadata"]["uid"]
            if (previous and previous["metadata"]["uid"]) != uid:  # as KubeClient.apply's precondition
                raise ConflictError(f"{key} is not the object read (uid {uid})")
            if dry_run:
                return copy.deepcopy(obj)
            stored = copy.deepcopy(obj)
            generation = previous["metadata"]["generation"] if previous else 0
            if previous is None or previous.get("spec") != obj.get("spec"):
                generation += 1
            stored["metadata"]["generation"] = generation
            stored["metadata"]["uid"] = previous["metadata"]["uid"] if previous else str(uuid.uuid4())
            self.objects[key] = stored
            if self._is_triton(stored):
                self._scale_pool()
            return copy.deepcopy(stored)

    def list_deployments(self, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        with self._lock:
            ready = self.ready_servers()
            deployments = []
            for (kind, _), obj in sorted(self.objects.items()):
                if kind != "Deployment" or not selector.items() <= obj["metadata"]["labels"].items():
                    continue
                shown = copy.deepcopy(obj)
                desired = obj["spec"]["replicas"]
                count = (
                    min(desired, len(ready)) if self._is_triton(obj) else desired
                )  # routers: the local router
                if self._is_triton(obj):
                    ready = ready[count:]
                shown["status"] = {
                    "observedGeneration": obj["metadata"]["generation"],
                    "replicas": desired,
                    "readyReplicas": count,
                    "updatedReplicas": desired,
                }
                shown["metadata"]["ownerReferences"] = [{"uid": self.body["metadata"]["uid"]}]
                deployments.append(shown)
            return deployments

    def delete_object(self, kind: str, namespace: str, name: str, uid: str) -> None:
        with self._lock:
            removed = self.objects.pop((kind, name), None)
            if removed is not None and self._is_triton(removed):
                self._scale_pool()

    # --- processes ------------------------------------------------------------------
    @staticmethod
    def _is_triton(obj: dict[str, Any]) -> bool:
        labels = obj["metadata"].get("labels", {})
        return bool(obj["kind"] == "Deployment" and labels.get(LABEL_COMPONENT) == COMPONENT_TRITON)

    def desired_triton_replicas(self) -> int:
        return sum(
            obj["spec"]["replicas"]
            for (kind, _), obj in self.objects.items()
            if kind == "Deployment" and self._is_triton(obj)
        )

    def ready_servers(self) -> list[TritonServer]:
        return [server for server in self.pool.servers if server.is_running and server.is_ready()]

    def _scale_pool(self) -> None:
        desired = self.desired_triton_replicas()
        while len(self.pool.servers) < desired:
            self.pool.add(wait=False)
        if len(self.pool.servers) > desired:
            leaving = [self.pool.servers.pop() for _ in range(len(self.pool.servers) - desired)]
            # Out of DNS first, then stopped: the router drains them like terminating pods.
            self.sync_dns()
            thread = threading.Thread(target=self._retire, args=(leaving,), daemon=True)
            thread.start()
            self._retiring.append(thread)

    @staticmethod
    def _retire(servers: list[TritonServer]) -> None:
        for server in servers:
            try:
                server.stop()
            except Exception:  # a server that will not stop cleanly is killed
                log.exception("stopping %s failed; killing it", server)
                server.kill()

    def sync_dns(self) -> list[str]:
        """Publish the ready servers' addresses (what a headless Service does); returns them."""
        with self._lock:
            addresses = [server.host for server in self.ready_servers()]
        self.dns.set_addresses(addresses, wait=False)
        return addresses

    def endpoints(self, target: object) -> list[str]:
        """Ready Triton addresses, for the Triton observation source."""
        return [server.host for server in self.ready_servers()]

    def close(self) -> None:
        for thread in self._retiring:
            thread.join(timeout=15)
