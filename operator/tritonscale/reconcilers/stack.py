"""The reconcile loop: read the InferenceService, render, apply, observe, write status.

Level-based: it never asks what changed, only what should exist, so running it again changes
nothing. Everything is rendered and dry-run applied before the first real write, so an object
the API server would refuse leaves the stack as it was rather than half-updated.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from tritonscale.api.resource import KIND, InferenceService, InvalidInferenceService, parse_inference_service
from tritonscale.api.status import ConditionStatus, ConditionType, InferenceServiceStatus, SpotFallbackStatus
from tritonscale.errors import (
    ConflictError,
    NameConflictError,
    NamespaceTerminatingError,
    RejectedError,
    TransientError,
)
from tritonscale.policy.interruption import pods_on_troubled_nodes
from tritonscale.policy.placement import Placement, split_replicas
from tritonscale.policy.replicas import reconciled_replicas
from tritonscale.policy.spot_fallback import next_fallback, with_stand_ins
from tritonscale.render.names import (
    FIELD_MANAGER,
    LABEL_POOL,
    POOL_SPOT,
    StackNames,
)
from tritonscale.render.stack import RenderOptions, render_stack
from tritonscale.status import DeploymentState, StackState, set_condition, stack_status

log = logging.getLogger(__name__)


class ClusterApi(Protocol):
    """What the reconciler needs from the cluster (clients.kube.KubeClient provides it)."""

    def get_inference_service(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def get_object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def apply(
        self, obj: dict[str, Any], *, current: dict[str, Any] | None, dry_run: bool = False
    ) -> dict[str, Any]: ...

    def list_deployments(self, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]: ...

    def list_pods(self, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]: ...

    def delete_object(self, kind: str, namespace: str, name: str, uid: str) -> None: ...

    def patch_inference_service_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> None: ...

    def post_event(self, service: dict[str, Any], event_type: str, reason: str, message: str) -> None: ...

    def evict_pod(self, namespace: str, name: str) -> bool: ...


# Not ready for a reason that is routine (new replicas starting): no Warning for it.
QUIET_NOT_READY_REASONS = frozenset({"ScalingUp"})


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def deployment_state(deployment: dict[str, Any]) -> DeploymentState:
    """Reduce a Deployment to what the status needs."""
    spec = deployment.get("spec", {})
    status = deployment.get("status", {})
    failure = None
    for condition in status.get("conditions", []):
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            failure = condition.get("message", "progress deadline exceeded")
        if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
            failure = condition.get("message", "replica failure")
    return DeploymentState(
        name=deployment["metadata"]["name"],
        desired=int(spec.get("replicas", 1)),
        ready=int(status.get("readyReplicas", 0)),
        updated=int(status.get("updatedReplicas", 0)),
        observed_current_generation=int(status.get("observedGeneration", 0))
        >= int(deployment["metadata"].get("generation", 0)),
        failure=failure,
    )


NO_FALLBACK = SpotFallbackStatus()


def stack_status_patch(status: InferenceServiceStatus) -> dict[str, Any]:
    """The status as a JSON merge patch. A merge patch keeps what it leaves out, so the spot
    fallback's state goes whole, with its cleared clocks as explicit nulls (or null itself when
    spot is off): a stale clock read back would move stand-ins at the wrong time."""
    patch = status.to_wire()
    fallback = status.spot_fallback
    patch["spotFallback"] = None if fallback is None else fallback.model_dump(by_alias=True, mode="json")
    return patch


def _pool(pod: dict[str, Any]) -> str | None:
    labels: dict[str, str] = pod.get("metadata", {}).get("labels", {})
    return labels.get(LABEL_POOL)


def unschedulable_pods(pods: list[dict[str, Any]]) -> tuple[tuple[int, str], ...]:
    """The scheduler's messages for pods it could not place, with their counts, most common first."""
    counts: dict[str, int] = {}
    for pod in pods:
        if pod.get("metadata", {}).get("deletionTimestamp"):
            continue
        for condition in pod.get("status", {}).get("conditions", []):
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                message = condition.get("message") or condition.get("reason") or "unschedulable"
                counts[message] = counts.get(message, 0) + 1
    return tuple(sorted(((n, m) for m, n in counts.items()), key=lambda item: (-item[0], item[1])))


APPLIED_HASH_ANNOTATION = "tritonscale.io/applied-hash"


def with_applied_hash(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` carrying a hash of itself, so an unchanged child need not be written again."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]
    metadata = {
        **obj["metadata"],
        "annotations": {**obj["metadata"].get("annotations", {}), APPLIED_HASH_ANNOTATION: digest},
    }
    return {**obj, "metadata": metadata}


def up_to_date(obj: dict[str, Any], existing: dict[str, Any] | None) -> bool:
    """Whether writing `obj` would change nothing: the child exists, carries the hash of this
    very rendering, and no one else (kubectl edit, scale, patch, another applier) has written
    it since. Anything else is written again, which also puts back what was changed by hand."""
    if existing is None:
        return False
    metadata = existing["metadata"]
    if (
        metadata.get("annotations", {}).get(APPLIED_HASH_ANNOTATION)
        != obj["metadata"]["annotations"][APPLIED_HASH_ANNOTATION]
    ):
        return False
    # Entries a child may show without having been changed by hand: ours (the applies', and the
    # create's until the next write drops it), the Deployment controller's (its revision
    # annotation) and status writers' (the status subresource).
    return all(
        entry.get("subresource") == "status"
        or entry.get("manager") in (FIELD_MANAGER, "kube-controller-manager")
        for entry in metadata.get("managedFields", [])
    )


def owned_by(service: InferenceService, obj: dict[str, Any]) -> bool:
    """Whether `obj` carries an owner reference to this InferenceService."""
    return any(ref.get("uid") == service.metadata.uid for ref in obj["metadata"].get("ownerReferences", []))


def name_conflict(
    service: InferenceService, obj: dict[str, Any], existing: dict[str, Any] | None
) -> str | None:
    """Why `obj` must not be written, when an object of its name exists that this
    InferenceService does not own (server-side apply with force would adopt it)."""
    if existing is None or owned_by(service, existing):
        return None
    references = existing["metadata"].get("ownerReferences", [])
    owners = ", ".join(f"{ref.get('kind')} {ref.get('name')}" for ref in references)
    return f"{obj['kind']} {obj['metadata']['name']} already exists and belongs to " + (
        owners or "no InferenceService"
    )


def left_by_an_earlier_incarnation(service: InferenceService, existing: dict[str, Any]) -> bool:
    """Whether `existing` belongs to an InferenceService of this name that was deleted (another
    uid): deleted and created again, its children go by garbage collection within seconds."""
    return any(
        ref.get("kind") == KIND and ref.get("name") == service.name and ref.get("uid") != service.metadata.uid
        for ref in existing["metadata"].get("ownerReferences", [])
    )


REFUSALS = (RejectedError.reason, NameConflictError.reason)


def standing_refusal(service: InferenceService) -> tuple[str, str] | None:
    """The refusal of the newest spec that status reports, while nothing has applied it since:
    a refresh of status (a child event) must not clear it."""
    status = service.status
    degraded = status.condition(ConditionType.DEGRADED)
    if (
        status.observed_generation == service.metadata.generation
        or degraded is None
        or degraded.status != ConditionStatus.TRUE
        or degraded.reason not in REFUSALS
    ):
        return None
    return degraded.reason, degraded.message


@dataclass(frozen=True)
class Outcome:
    """What one reconcile did."""

    status: InferenceServiceStatus
    applied: int


class StackReconciler:
    """Turns InferenceServices into their stacks; safe to call from several threads."""

    def __init__(
        self,
        api: ClusterApi,
        options: RenderOptions | None = None,
        clock: Callable[[], datetime] = utc_now,
        on_unsettled: Callable[[str, str], None] = lambda namespace, name: None,
        troubled_nodes: Callable[[], Mapping[str, str]] = dict,
        watched_pods: Callable[[str, dict[str, str]], list[dict[str, Any]] | None] = lambda ns, selector: (
            None
        ),
    ) -> None:
        self.api = api
        self.options = options or RenderOptions()
        self.clock = clock
        # Called when replicas are missing for no reason seen yet: the scheduler's verdict on
        # new pods comes after the Deployment event that woke us, so the caller looks again soon.
        self.on_unsettled = on_unsettled
        # Nodes being interrupted, drained or lost (name -> why), kept by a watch of Nodes.
        self.troubled_nodes = troubled_nodes
        # A stack's pods as a watch keeps them (only the fields policy.pod_fields names), or None
        # when the watch cannot answer: then they are listed.
        self.watched_pods = watched_pods
        # Weak: a service's lock lives while someone holds or waits for it, not for every
        # service ever seen.
        self._locks: weakref.WeakValueDictionary[tuple[str, str], threading.RLock] = (
            weakref.WeakValueDictionary()
        )
        self._locks_guard = threading.Lock()
        # Unguarded services (namespace, name) -> uid whose NetworkPolicies are known gone.
        self._network_policies_absent: dict[tuple[str, str], str] = {}

    def lock(self, namespace: str, name: str) -> threading.RLock:
        """The lock every writer of this InferenceService's status holds (reentrant, so the
        autoscaler may reconcile while holding it)."""
        with self._locks_guard:
            return self._locks.setdefault((namespace, name), threading.RLock())

    def reconcile(self, namespace: str, name: str) -> Outcome | None:
        """Apply the stack and refresh status. None when the InferenceService is gone.

        Raises RejectedError when the spec is invalid or the API server refuses an object
        (retrying unchanged cannot help) and TransientError when it is worth retrying.
        """
        return self._run(namespace, name, apply=True)

    def refresh_status(self, namespace: str, name: str) -> Outcome | None:
        """Recompute status from the children without applying anything (on child events).

        It does remove a Deployment left behind (spot switched off) once that is safe."""
        return self._run(namespace, name, apply=False)

    def _run(self, namespace: str, name: str, apply: bool) -> Outcome | None:
        try:
            return self._run_locked(namespace, name, apply)
        except NamespaceTerminatingError:
            log.debug("%s/%s: its namespace is being deleted; nothing to do", namespace, name)
            return None

    def _run_locked(self, namespace: str, name: str, apply: bool) -> Outcome | None:
        with self.lock(namespace, name):
            body = self.api.get_inference_service(namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                self._network_policies_absent.pop((namespace, name), None)
            if body is None:
                return None
            if body["metadata"].get("deletionTimestamp"):
                # Being deleted (foreground: its children go first): writing one back would only
                # give the garbage collector more to remove.
                return None
            try:
                service = parse_inference_service(body)
            except InvalidInferenceService as invalid:
                self._report_invalid(body, invalid)
                raise RejectedError(f"invalid InferenceService {namespace}/{name}: {invalid}") from invalid
            names = StackNames(service.name, service.namespace, self.options.cluster_domain)
            desired = reconciled_replicas(service)
            owned = self._owned_deployments(service, names)
            trouble = self.troubled_nodes() if service.spec.capacity.spot.enabled else {}
            pods = self._pods_if_unsettled(service, names, owned, bool(trouble))
            interrupted = pods_on_troubled_nodes([p for p in pods if _pool(p) == POOL_SPOT], trouble)
            fallback = self._next_fallback(service, names, desired, owned, pods, len(interrupted))
            placement = with_stand_ins(
                split_replicas(desired, service.spec.capacity), fallback or NO_FALLBACK
            )
            previous = service.status.spot_fallback or NO_FALLBACK
            # Stand-ins come or go on a status refresh too: that is when spot trouble shows.
            apply = apply or (fallback or NO_FALLBACK).stand_ins != previous.stand_ins
            problem: tuple[str, str] | None = None
            applied = 0
            if apply:
                try:
                    applied, owned = self._apply(service, names, placement, owned)
                except RejectedError as rejected:
                    problem = (rejected.reason, str(rejected))
            else:
                # A pool left behind (spot switched off) goes as soon as the on-demand pool is
                # ready to carry its replicas, which a child event tells, not at the next resync.
                owned = self._prune_deployments(
                    service, names, render_stack(service, placement, self.options), placement, owned
                )
            shown = problem if apply else standing_refusal(service)
            state = self._observe(names, shown, owned, pods, fallback, interrupted)
            if interrupted and problem is None:
                self._drain_interrupted(body, service, names, state, placement, trouble)
            if (not state.unschedulable and any(d.ready < d.desired for d in state.triton)) or (
                fallback is not None and (fallback.stand_ins or fallback.missing_since)
            ):
                self.on_unsettled(namespace, name)  # also the fallback's and the return's clocks
            status = stack_status(
                service,
                desired,
                state,
                self.clock(),
                names.triton_selector_string,
                names.endpoint_url,
                applied=apply,
            )
            self._write_status(body, service, status, applied)
            if problem is not None:
                raise RejectedError(problem[1])
            return Outcome(status=status, applied=applied)

    def _pods_if_unsettled(
        self,
        service: InferenceService,
        names: StackNames,
        owned: list[dict[str, Any]],
        nodes_in_trouble: bool,
    ) -> list[dict[str, Any]]:
        """The stack's pods, read only when some Deployment lacks ready replicas or some node is
        in trouble (a settled stack needs none): from the pod watch, else listed. The watch may
        be a moment behind a list, as a list is behind the scheduler: either way the status
        follows at the stack's next refresh. Evictions read the pods afresh
        (_drain_interrupted)."""
        if not nodes_in_trouble and not any(
            deployment_state(d).ready < deployment_state(d).desired for d in owned
        ):
            return []
        selector = names.stack_selector()
        watched = self.watched_pods(service.namespace, selector)
        return watched if watched is not None else self.api.list_pods(service.namespace, selector)

    def _next_fallback(
        self,
        service: InferenceService,
        names: StackNames,
        desired: int,
        owned: list[dict[str, Any]],
        pods: list[dict[str, Any]],
        interrupted: int,
    ) -> SpotFallbackStatus | None:
        """The spot fallback's next state (policy.spot_fallback); None while spot is off."""
        capacity = service.spec.capacity
        if not capacity.spot.enabled:
            return None
        spot = next((d for d in owned if d["metadata"]["name"] == names.spot_deployment), None)
        ready = deployment_state(spot).ready if spot is not None else 0
        unschedulable = sum(n for n, _ in unschedulable_pods([p for p in pods if _pool(p) == POOL_SPOT]))
        return next_fallback(
            service.status.spot_fallback or NO_FALLBACK,
            split_replicas(desired, capacity).spot,
            ready,
            unschedulable,
            self.clock(),
            capacity.spot.fallback_after_seconds,
            interrupted_spot=interrupted,
        )

    def _drain_interrupted(
        self,
        body: dict[str, Any],
        service: InferenceService,
        names: StackNames,
        state: StackState,
        placement: Placement,
        trouble: Mapping[str, str],
    ) -> None:
        """Evict spot pods on nodes being interrupted once their on-demand stand-ins are ready:
        surge first, drain after. A terminating pod leaves its Service's endpoints at once, so
        the router stops sending to it before the node takes it down; its graceful shutdown
        lets the requests in flight finish. The eviction honours the PodDisruptionBudget."""
        on_demand = state.on_demand
        if (
            on_demand is None
            or on_demand.desired < placement.on_demand
            or on_demand.ready < placement.on_demand
        ):
            return  # stand-ins still starting: the spot pods keep serving meanwhile
        # Listed, not from the watch: one a moment behind would not yet show the pods evicted a
        # moment ago as terminating, and they would be evicted (and reported drained) again.
        selector = names.stack_selector()
        try:
            pods = self.api.list_pods(service.namespace, selector)
        except TransientError as error:
            log.info(
                "draining %s/%s waits: listing its pods failed: %s", service.namespace, service.name, error
            )
            return  # the next refresh drains; the node's own drain still comes
        interrupted = pods_on_troubled_nodes([p for p in pods if _pool(p) == POOL_SPOT], trouble)
        drained = [
            (pod, why)
            for pod, why in interrupted
            if self.api.evict_pod(service.namespace, pod["metadata"]["name"])
        ]
        if drained:
            nodes = "; ".join(sorted({why for _, why in drained}))
            self.api.post_event(
                body,
                "Normal",
                "SpotDrained",
                f"{len(drained)} spot replicas drained from nodes being interrupted ({nodes}); "
                f"{on_demand.ready} on-demand replicas are ready to carry their load",
            )

    def _apply(
        self,
        service: InferenceService,
        names: StackNames,
        placement: Placement,
        owned: list[dict[str, Any]],
        *,
        unread: bool | None = None,
    ) -> tuple[int, list[dict[str, Any]]]:
        """Write the stack; returns how many objects were written and the owned Deployments.

        `owned` is this service's Deployments as just listed: they stand for their own reads
        (a resync of a settled stack then reads only what the list cannot show), and they are
        listed again only when a Deployment was written.

        A service never applied (no observedGeneration and no owned Deployment) is taken to have
        no children, and none is read (its NetworkPolicies apart, see below): the dry run of
        their creates is the check, since the API server refuses a create whose name is taken.
        When the dry run is refused for any reason, every child is read and checked as for any
        other service (`unread` False), so a taken name is reported as a NameConflict, not as
        whatever the API server checked first."""
        if unread is None:
            unread = service.status.observed_generation is None and not owned
        objects = [with_applied_hash(obj) for obj in render_stack(service, placement, self.options)]
        listed = {d["metadata"]["name"]: d for d in owned}

        def stored(kind: str, name: str) -> dict[str, Any] | None:
            if unread:
                return None
            if kind == "Deployment" and name in listed:
                return listed[name]
            return self.api.get_object(kind, service.namespace, name)

        existing = {
            (obj["kind"], obj["metadata"]["name"]): stored(obj["kind"], obj["metadata"]["name"])
            for obj in objects
        }
        conflicts = [
            conflict
            for obj in objects
            if (conflict := name_conflict(service, obj, existing[(obj["kind"], obj["metadata"]["name"])]))
            is not None
        ]
        if conflicts:
            # Every conflict left by a predecessor of this name: it goes within seconds.
            earlier = [
                f"{kind} {name}"
                for (kind, name), obj in existing.items()
                if obj is not None and left_by_an_earlier_incarnation(service, obj)
            ]
            if len(earlier) == len(conflicts):
                raise TransientError(
                    f"the children of the InferenceService {service.name} deleted before this one was "
                    f"created are still being removed ({', '.join(earlier)})",
                    delay=2.0,
                )
            raise NameConflictError(
                "; ".join(conflicts) + ". Nothing was applied: rename this InferenceService "
                "or remove the other object."
            )
        # Each write names the object it replaces (or none), so that one created or replaced
        # by someone else since it was read above is not adopted: the write fails and the next
        # attempt reads it, and refuses.
        changed = [
            (obj, current)
            for obj in objects
            if not up_to_date(obj, current := existing[(obj["kind"], obj["metadata"]["name"])])
        ]
        try:
            for obj, current in changed:
                self.api.apply(obj, current=current, dry_run=True)
        except (ConflictError, RejectedError):
            if not unread:
                raise
            return self._apply(service, names, placement, owned, unread=False)
        if any(obj["kind"] == "NetworkPolicy" for obj in objects):
            # Forgotten before the writes: if a later one fails, the policies written stay
            # until a reconcile that no longer renders them looks for them.
            self._network_policies_absent.pop((service.namespace, service.name), None)
        for obj, current in changed:
            self.api.apply(obj, current=current)
        # Looked for even when nothing else was read: an attempt that failed part way may have
        # written the policies (they come first) of a spec that no longer asks for them.
        self._prune_network_policies(service, names, objects)
        if any(obj["kind"] == "Deployment" for obj, _ in changed):
            owned = self._owned_deployments(service, names)
        return len(changed), self._prune_deployments(service, names, objects, placement, owned)

    def _prune_network_policies(
        self, service: InferenceService, names: StackNames, rendered: list[dict[str, Any]]
    ) -> None:
        """Remove this service's NetworkPolicies once they are no longer rendered (guarding
        switched off), never another owner's object of that name.

        Looked for once per unguarded service (its uid) and operator process, and again after
        each time it was guarded, not at every resync: only this operator writes them, and only
        while it renders them (which forgets the look, before writing)."""
        wanted = {obj["metadata"]["name"] for obj in rendered if obj["kind"] == "NetworkPolicy"}
        key, uid = (service.namespace, service.name), service.metadata.uid
        if not wanted and uid is not None and self._network_policies_absent.get(key) == uid:
            return  # (a rendering with policies forgot the look in _apply, before writing)
        for name in (names.triton_network_policy, names.router_network_policy):
            if name in wanted:
                continue
            existing = self.api.get_object("NetworkPolicy", service.namespace, name)
            if existing is not None and owned_by(service, existing):
                self.api.delete_object("NetworkPolicy", service.namespace, name, existing["metadata"]["uid"])
        if not wanted and uid is not None:
            self._network_policies_absent[key] = uid

    def _owned_deployments(self, service: InferenceService, names: StackNames) -> list[dict[str, Any]]:
        selector = names.stack_selector()
        return [d for d in self.api.list_deployments(service.namespace, selector) if owned_by(service, d)]

    def _prune_deployments(
        self,
        service: InferenceService,
        names: StackNames,
        rendered: list[dict[str, Any]],
        placement: Placement,
        owned: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        """Remove Deployments no longer rendered (the spot pool after spot is disabled), but
        only once the on-demand pool carries its share and is ready: capacity never dips.
        Returns the owned Deployments that remain.

        The share is checked too because a status refresh may run before the reconcile that
        raises the on-demand replicas, when the old, smaller on-demand pool looks rolled out.
        """
        wanted = {obj["metadata"]["name"] for obj in rendered if obj["kind"] == "Deployment"}
        stale = [d for d in owned if d["metadata"]["name"] not in wanted]
        if not stale:
            return owned
        on_demand = next((d for d in owned if d["metadata"]["name"] == names.on_demand_deployment), None)
        on_demand_state = deployment_state(on_demand) if on_demand is not None else None
        on_demand_ready = (
            on_demand_state is not None
            and on_demand_state.desired >= placement.on_demand
            and on_demand_state.rolled_out
        )
        deleted: set[str] = set()
        for deployment in stale:
            metadata = deployment["metadata"]
            if deployment_state(deployment).ready > 0 and not on_demand_ready:
                log.info("keeping %s until %s is ready", metadata["name"], names.on_demand_deployment)
                continue
            self.api.delete_object("Deployment", service.namespace, metadata["name"], metadata["uid"])
            deleted.add(metadata["name"])
        return [d for d in owned if d["metadata"]["name"] not in deleted]

    def _observe(
        self,
        names: StackNames,
        problem: tuple[str, str] | None,
        owned: list[dict[str, Any]],
        pods: list[dict[str, Any]],
        fallback: SpotFallbackStatus | None,
        interrupted: list[tuple[dict[str, Any], str]],
    ) -> StackState:
        """What the children report, from the Deployments and pods already read."""
        by_name = {d["metadata"]["name"]: deployment_state(d) for d in owned}
        spot_pods = [p for p in pods if _pool(p) == POOL_SPOT]
        covered = fallback is not None and fallback.stand_ins > 0
        return StackState(
            on_demand=by_name.get(names.on_demand_deployment),
            spot=by_name.get(names.spot_deployment),
            router=by_name.get(names.router_deployment),
            problem=problem,
            # Spot pods that wait while stand-ins carry their load are the fallback, not a fault.
            unschedulable=unschedulable_pods([p for p in pods if not (covered and _pool(p) == POOL_SPOT)]),
            fallback=fallback,
            unschedulable_spot=sum(n for n, _ in unschedulable_pods(spot_pods)),
            interrupted_spot=tuple(why for _, why in interrupted),
        )

    def _write_status(
        self, body: dict[str, Any], service: InferenceService, status: InferenceServiceStatus, applied: int
    ) -> None:
        previous = service.status
        if status != previous:
            self.api.patch_inference_service_status(
                service.namespace, service.name, stack_status_patch(status)
            )
        self._post_events(body, previous, status, applied)

    def _post_events(
        self,
        body: dict[str, Any],
        previous: InferenceServiceStatus,
        status: InferenceServiceStatus,
        applied: int,
    ) -> None:
        """Events for transitions only, so a steady state repeats none."""
        degraded, was_degraded = (
            status.condition(ConditionType.DEGRADED),
            previous.condition(ConditionType.DEGRADED),
        )
        if (
            degraded is not None
            and degraded.status == ConditionStatus.TRUE
            and (
                was_degraded is None
                or was_degraded.status != ConditionStatus.TRUE
                or was_degraded.reason != degraded.reason
            )
        ):
            self.api.post_event(body, "Warning", degraded.reason, degraded.message)
        elif applied and previous.observed_generation != status.observed_generation:
            self.api.post_event(
                body,
                "Normal",
                "Reconciled",
                f"applied generation {status.observed_generation}: {applied} objects, "
                f"{status.desired_replicas} Triton replicas desired",
            )
        was = (previous.spot_fallback or NO_FALLBACK).stand_ins
        now = (status.spot_fallback or NO_FALLBACK).stand_ins
        if now > was:
            spot = status.condition(ConditionType.SPOT_FALLBACK)
            self.api.post_event(
                body,
                "Warning",
                "SpotFallback",
                f"{now - was} more on-demand replicas stand in for spot ({now} in all): "
                f"{spot.message if spot else 'spot pods cannot be scheduled'}",
            )
        elif now < was:
            self.api.post_event(
                body,
                "Normal",
                "SpotReturn",
                f"spot stayed ready: {was - now} on-demand stand-ins removed, {now} left",
            )
        rolling, rolled = (
            previous.condition(ConditionType.PROGRESSING),
            status.condition(ConditionType.PROGRESSING),
        )
        if (
            rolling is not None
            and rolling.reason == "RollingOut"
            and rolled is not None
            and rolled.reason == "RolledOut"
        ):
            self.api.post_event(
                body,
                "Normal",
                "RolledOut",
                f"generation {status.observed_generation} rolled out: {status.replicas} Triton replicas "
                f"and {status.router_replicas} routers ready",
            )
        before, after = previous.condition(ConditionType.READY), status.condition(ConditionType.READY)
        if after is not None and (before is None or before.status != after.status):
            if after.status == ConditionStatus.TRUE:
                self.api.post_event(body, "Normal", "Ready", after.message)
            elif before is not None and after.reason not in QUIET_NOT_READY_REASONS:
                self.api.post_event(body, "Warning", "NotReady", f"{after.reason}: {after.message}")

    def _report_invalid(self, body: dict[str, Any], invalid: InvalidInferenceService) -> None:
        """Say on the resource itself why nothing was applied."""
        message = (
            "; ".join(str(problem) for problem in invalid.problems)
            + ". Nothing was applied: fix the field named and apply again"
        )
        try:
            previous = InferenceServiceStatus.model_validate(body.get("status", {}))
        except ValueError:
            previous = InferenceServiceStatus()
        now = self.clock()
        generation = body["metadata"].get("generation")
        conditions = list(previous.conditions)
        conditions = set_condition(
            conditions, ConditionType.READY, ConditionStatus.FALSE, "InvalidSpec", message, now, generation
        )
        conditions = set_condition(
            conditions, ConditionType.DEGRADED, ConditionStatus.TRUE, "InvalidSpec", message, now, generation
        )
        status = previous.model_copy(update={"conditions": conditions})
        metadata = body["metadata"]
        if status != previous:
            self.api.patch_inference_service_status(metadata["namespace"], metadata["name"], status.to_wire())
            self.api.post_event(body, "Warning", "InvalidSpec", message)
