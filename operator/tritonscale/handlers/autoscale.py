"""The autoscaling daemon: one per InferenceService, ticking at its own spec's period."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from tritonscale.api.resource import GROUP, PLURAL, VERSION
from tritonscale.errors import RejectedError, TransientError
from tritonscale.reconcilers.autoscale import IDLE_RECHECK_S, AutoscaleReconciler


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10.0, initial_delay=5.0)
def autoscale(
    *,
    stopped: kopf.DaemonStopped,
    namespace: str | None,
    name: str,
    memo: Any,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    """Observe, decide and apply every spec.autoscaling.periodSeconds until the resource goes."""
    assert namespace is not None
    autoscaler: AutoscaleReconciler = memo.autoscaler
    while not stopped:
        try:
            period = autoscaler.tick(namespace, name)
        except (TransientError, RejectedError) as error:
            logger.warning("autoscaling step failed, retrying: %s", error)
            period = IDLE_RECHECK_S / 3
        stopped.wait(period)
    autoscaler.forget(namespace, name)
