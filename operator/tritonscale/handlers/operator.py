"""kopf handlers: a few lines each, all work happens in the reconcilers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from tritonscale.api.resource import (
    GROUP,
    KIND,
    PAUSE_ANNOTATION,
    PLURAL,
    VERSION,
    InvalidInferenceService,
    parse_inference_service,
)
from tritonscale.errors import RejectedError, TransientError
from tritonscale.handlers.watch import RESYNC_S
from tritonscale.metrics import RECONCILE_SECONDS, RECONCILES
from tritonscale.reconcilers.scheduler import pool_responsive
from tritonscale.reconcilers.stack import Outcome, StackReconciler
from tritonscale.render.names import LABEL_MANAGED_BY, MANAGED_BY

log = logging.getLogger(__name__)
ANNOTATION_PREFIX = "tritonscale.io"
LIVENESS_TIMEOUT_S = 20.0
# How long the probe waits for an idle worker before it judges by finished work instead: the
# chart's probes give /healthz 5 s, and a probe that waited for a busy pool failed on time alone.
PROBE_WAIT_S = 1.0
# Retries of kopf's own requests (watches included) while the API server is away: soon at first,
# then every 5 s for ten minutes. kopf's default (1, 1, 2, 3, 5, 8, 13, 21) gives up after 54 s
# and, near its end, sees the API server back up to 21 s late: an API server restart of 30 s
# left spec changes unapplied for 52 s.
API_RETRY_BACKOFFS_S = (1.0, 2.0, 4.0) + (5.0,) * 120
CHILD_EVENT_COALESCE_S = 1.0  # child events within this long cause one status refresh


def configure_settings(settings: kopf.OperatorSettings, workers: int) -> None:
    """Our own annotation prefix, quiet events, and a sized executor for reconciles.

    No handler needs a finalizer (no kopf daemons, timers or deletion handlers: children go by
    garbage collection), so deleting an InferenceService never waits for the operator; kopf
    removes a finalizer left by an older version the next time it sees the resource."""
    settings.persistence.finalizer = f"{ANNOTATION_PREFIX}/finalizer"
    settings.execution.max_workers = workers
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    # Watching CRDs/namespaces for new resources would need cluster-wide rights we do not use.
    settings.scanning.disabled = True
    settings.networking.error_backoffs = API_RETRY_BACKOFFS_S
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


class _ReconcileProgress:
    """When a reconcile in kopf's executor last finished. At a start kopf queues every service's
    resume at once: a no-op queued behind hundreds waits minutes while reconciles finish every
    second (300 services: /healthz failed for 210 s and the kubelet restarted the operator twice)."""

    finished_at = time.monotonic()
    skipped_at_stop = 0  # reconciles that returned at once, the operator stopping


def _guarded(action: Callable[[str, str], Outcome | None], namespace: str, name: str) -> None:
    """Run a reconcile; a spec or object the cluster refuses is reported on the resource (status
    and a Warning Event) and logged as a warning, not raised: retrying unchanged cannot help,
    the next change or resync tries again, and it is the user's to fix, not an operator error."""
    started = time.perf_counter()
    try:
        action(namespace, name)
    except TransientError as error:
        RECONCILES.labels("retry").inc()
        raise kopf.TemporaryError(str(error), delay=error.delay) from error
    except RejectedError as error:
        RECONCILES.labels("rejected").inc()
        log.warning("%s/%s not applied: %s", namespace, name, error)
        return
    finally:
        RECONCILE_SECONDS.observe(time.perf_counter() - started)
        _ReconcileProgress.finished_at = time.monotonic()
    RECONCILES.labels("ok").inc()


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    configure_settings(settings, memo.config.reconcile_workers)
    for scheduler in memo.schedulers:
        scheduler.start()
    memo.pods.start()


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    # Together: each waits for its running jobs, and the grace period is short.
    await asyncio.gather(*(scheduler.stop() for scheduler in memo.schedulers))
    memo.pods.stop()
    if _ReconcileProgress.skipped_at_stop:
        log.info(
            "%d reconciles queued at the stop were skipped: the next start reconciles every service",
            _ReconcileProgress.skipped_at_stop,
        )


@kopf.on.probe(id="loops")
async def loops_make_progress(memo: Any, settings: kopf.OperatorSettings, **_: Any) -> str:
    """Liveness: fails (HTTP 500 on /healthz) when a scheduler loop has made no progress (no
    turn, no job started or finished) for LIVENESS_TIMEOUT_S, or a pool of workers (a
    scheduler's or kopf's) has no thread free within PROBE_WAIT_S and finished nothing for
    LIVENESS_TIMEOUT_S. Busy is not stuck: a backlog that keeps finishing passes, in seconds."""
    now = time.monotonic()
    for scheduler in memo.schedulers:
        if now - scheduler.heartbeat > LIVENESS_TIMEOUT_S:
            raise kopf.PermanentError(
                f"the {scheduler.name} loop made no progress for {now - scheduler.heartbeat:.0f}s"
            )
        if not await scheduler.responsive(LIVENESS_TIMEOUT_S, PROBE_WAIT_S):
            raise kopf.PermanentError(
                f"no {scheduler.name} worker was free, and none finished a job for {LIVENESS_TIMEOUT_S:.0f}s"
            )
    since_finished_s = time.monotonic() - _ReconcileProgress.finished_at
    if not await pool_responsive(
        settings.execution.executor, since_finished_s, LIVENESS_TIMEOUT_S, PROBE_WAIT_S
    ):
        raise kopf.PermanentError("no reconcile worker was free, and none finished")
    return "ok"


@kopf.on.login()
def login(*, memo: Any, **_: Any) -> kopf.ConnectionInfo:
    """kopf watches and patches as the reconciler's client does: same kubeconfig or in-cluster
    identity (kopf's default login would read $KUBECONFIG or in-cluster credentials on its own)."""
    connection = memo.kube.connection()
    return kopf.ConnectionInfo(
        server=connection.server,
        ca_path=connection.ca_path,
        insecure=connection.insecure,
        scheme=connection.scheme,
        token=connection.token,
        certificate_path=connection.certificate_path,
        private_key_path=connection.private_key_path,
        username=connection.username,
        password=connection.password,
    )


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
@kopf.on.resume(GROUP, VERSION, PLURAL)
def reconcile(
    *, namespace: str | None, name: str, memo: Any, body: kopf.Body, diff: kopf.Diff | None = None, **_: Any
) -> None:
    """Any change of the resource, `kubectl scale` included, and every operator start.

    Once the operator is stopping, a reconcile not yet started returns at once: the next
    leader's start reconciles every service anyway, and the stop must fit the grace period."""
    assert namespace is not None  # the resource is namespaced
    if memo.stopping.is_set():
        RECONCILES.labels("skipped").inc()
        _ReconcileProgress.skipped_at_stop += 1
        log.debug("%s/%s not reconciled: the operator is stopping", namespace, name)
        return
    _guarded(memo.reconciler.reconcile, namespace, name)
    ignored = ignored_manual_scale(body, diff)
    if ignored is not None:
        memo.kube.post_event(dict(body), "Warning", "ManualScaleIgnored", ignored)


def ignored_manual_scale(body: Mapping[str, Any], diff: kopf.Diff | None) -> str | None:
    """What to tell someone who changed spec.replicas (`kubectl scale`) while the autoscaler
    decides the count, or None when that is not what happened."""
    if not diff:
        return None
    changed = next((d for d in diff if tuple(d[1]) == ("spec", "replicas")), None)
    if changed is None:
        return None
    try:
        service = parse_inference_service(dict(body))
    except InvalidInferenceService:
        return None
    autoscaling = service.spec.autoscaling
    if autoscaling is None or not service.autoscaled:
        return None
    return (
        f"spec.replicas was set to {changed[3]}, but the autoscaler decides the replica count "
        f"(minReplicas {autoscaling.min_replicas}, maxReplicas {autoscaling.max_replicas}); "
        f"to scale by hand, pause it first: kubectl annotate tis {service.name} "
        f"{PAUSE_ANNOTATION}=true"
    )


def status_recheck_job(reconciler: StackReconciler) -> Callable[[str, str], float | None]:
    """Look at a stack's status once more (no apply): asked for while replicas are missing, as
    the scheduler's verdict on new pods comes after the Deployment event that woke us."""

    def run(namespace: str, name: str) -> float | None:
        try:
            reconciler.refresh_status(namespace, name)
        except TransientError as error:
            return error.delay
        except RejectedError:
            return None
        return None

    return run


def resync_job(reconciler: StackReconciler) -> Callable[[str, str], float | None]:
    """Put back what someone changed by hand in a child object; stop once the resource is gone."""

    def run(namespace: str, name: str) -> float | None:
        try:
            outcome = reconciler.reconcile(namespace, name)
        except TransientError as error:
            logging.getLogger(__name__).info("resync of %s/%s deferred: %s", namespace, name, error)
            return error.delay
        except RejectedError:
            return RESYNC_S  # reported on the resource by the reconciler
        return None if outcome is None else RESYNC_S

    return run


def _owner(body: kopf.Body) -> tuple[str, str] | None:
    """(namespace, name) of the InferenceService a child belongs to."""
    owner = next((ref for ref in body.metadata.get("ownerReferences", []) if ref.get("kind") == KIND), None)
    namespace = body.metadata.namespace
    return None if owner is None or namespace is None else (namespace, owner["name"])


@kopf.on.event("apps", "v1", "deployments", labels={LABEL_MANAGED_BY: MANAGED_BY})
async def child_deployment_changed(*, type: str, body: kopf.Body, memo: Any, **_: Any) -> None:
    """Pods became ready or went away: refresh status soon; a deleted child is recreated.

    Runs in the event loop and only schedules: a rollout sends a burst of Deployment events,
    and the refreshes they ask for within CHILD_EVENT_COALESCE_S become one."""
    owner = _owner(body)
    if owner is None:
        return
    if type == "DELETED":
        memo.resync_scheduler.run_within(*owner, 0.0)
    else:
        memo.status_scheduler.run_within(*owner, CHILD_EVENT_COALESCE_S)


@kopf.on.event("", "v1", "services", labels={LABEL_MANAGED_BY: MANAGED_BY})
async def child_service_deleted(*, type: str, body: kopf.Body, memo: Any, **_: Any) -> None:
    """A Service deleted by hand is put back at once, not at the next resync (minutes): it is
    what clients call, or how the routers find Triton. (When the InferenceService itself is
    deleted the resync finds it gone and does nothing.)"""
    owner = _owner(body)
    if type == "DELETED" and owner is not None:
        memo.resync_scheduler.run_within(*owner, 0.0)
