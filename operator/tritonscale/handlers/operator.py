"""kopf handlers: a few lines each, all work happens in the reconcilers."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import kopf

from tritonscale.api.resource import GROUP, KIND, PLURAL, VERSION
from tritonscale.errors import RejectedError, TransientError
from tritonscale.metrics import RECONCILE_SECONDS, RECONCILES
from tritonscale.reconcilers.stack import Outcome, StackReconciler
from tritonscale.render.names import LABEL_MANAGED_BY, MANAGED_BY

ANNOTATION_PREFIX = "tritonscale.io"


def configure_settings(settings: kopf.OperatorSettings) -> None:
    """Our own annotation prefix, no finalizer (children go by garbage collection), quiet events."""
    settings.persistence.finalizer = f"{ANNOTATION_PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    # Watching CRDs/namespaces for new resources would need cluster-wide rights we do not use.
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


def _guarded(action: Callable[[str, str], Outcome | None], namespace: str, name: str) -> None:
    started = time.perf_counter()
    try:
        action(namespace, name)
    except TransientError as error:
        RECONCILES.labels("retry").inc()
        raise kopf.TemporaryError(str(error), delay=error.delay) from error
    except RejectedError as error:
        RECONCILES.labels("rejected").inc()
        raise kopf.PermanentError(str(error)) from error
    finally:
        RECONCILE_SECONDS.observe(time.perf_counter() - started)
    RECONCILES.labels("ok").inc()


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    configure_settings(settings)


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
def reconcile(*, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    """Any change of the resource, `kubectl scale` included, and every operator start."""
    assert namespace is not None  # the resource is namespaced
    _guarded(memo.reconciler.reconcile, namespace, name)


@kopf.timer(GROUP, VERSION, PLURAL, interval=60.0, initial_delay=60.0)
def resync(*, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    """Put back what someone changed by hand in a child object."""
    assert namespace is not None
    _guarded(memo.reconciler.reconcile, namespace, name)


@kopf.on.event("apps", "v1", "deployments", labels={LABEL_MANAGED_BY: MANAGED_BY})
def child_deployment_changed(*, type: str, body: kopf.Body, memo: Any, **_: Any) -> None:
    """Pods became ready or went away: refresh status; a deleted child is recreated."""
    owner = next((ref for ref in body.metadata.get("ownerReferences", []) if ref.get("kind") == KIND), None)
    if owner is None or body.metadata.namespace is None:
        return
    reconciler: StackReconciler = memo.reconciler
    action = reconciler.reconcile if type == "DELETED" else reconciler.refresh_status
    try:
        action(body.metadata.namespace, owner["name"])
    except (TransientError, RejectedError) as error:
        logging.getLogger(__name__).info("status refresh of %s deferred: %s", owner["name"], error)
