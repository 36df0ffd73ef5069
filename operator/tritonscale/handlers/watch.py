"""The watch of InferenceServices feeds the schedulers (reconcilers.scheduler): it keeps a copy
of every resource for the autoscaling ticks, ticks the autoscaled ones, and resyncs each one
every RESYNC_S (not a kopf timer, which would add a finalizer and a task per resource)."""

from __future__ import annotations

import copy
import hashlib
import logging
from typing import Any

import kopf

from tritonscale.api.resource import GROUP, PLURAL, VERSION, InvalidInferenceService, parse_inference_service
from tritonscale.api.spec import AutoscalingSpec
from tritonscale.policy.interruption import node_trouble
from tritonscale.policy.surge import ROUTER_PERIOD_S
from tritonscale.reconcilers.scheduler import Scheduler
from tritonscale.status import AUTOSCALER_CONDITIONS


class QuietWatchHandlers(logging.Filter):
    """Drop kopf's "Handler 'x' succeeded." for the watch handlers: they run on every event of
    every InferenceService, child Deployment and Node (node heartbeats included), and say
    nothing an admin needs; failures are still logged."""

    HANDLERS = ("track", "child_deployment_changed", "node_changed")
    _QUIET = frozenset(f"Handler '{name}' succeeded." for name in HANDLERS)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in self._QUIET


FIRST_TICK_DELAY_S = 5.0  # let the first reconcile create the stack before observing it


def first_tick_delay(namespace: str, name: str, period_s: float) -> float:
    """When a newly tracked service first ticks: FIRST_TICK_DELAY_S and a share of a period
    that is the same for it every time. The scheduler keeps each service's phase (a tick is due
    a period after the last was due), so services tracked at once, every one at an operator's
    start, would otherwise all tick in the same instant every period, late behind each other."""
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).digest()
    share = int.from_bytes(digest[:8], "big") / 2**64  # uniform over names alike but for a number
    return FIRST_TICK_DELAY_S + share * period_s


RESYNC_S = 300.0  # a deleted Deployment is recreated at once, on its own event


def tick_period_s(body: dict[str, Any]) -> float | None:
    """The autoscaling period while it needs ticks: autoscaling is on, or its status is still to
    be cleared (switched off while we were away: one tick, the default period); else None. An
    invalid spec is the stack reconciler's to report; it is ticked once it is fixed."""
    try:
        service = parse_inference_service(body)
    except InvalidInferenceService:
        return None
    if service.spec.autoscaling is not None and service.spec.autoscaling_enabled:
        return float(service.spec.autoscaling.period_seconds)
    if any(c.type in AUTOSCALER_CONDITIONS for c in service.status.conditions):
        return float(AutoscalingSpec.model_fields["period_seconds"].default)
    return None


@kopf.on.event(GROUP, VERSION, PLURAL)
async def track(*, type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    """Every watch event (the initial listing included): keep the newest copy for the ticks,
    start ticking an autoscaled service, stop with a deleted one. Runs in the event loop and
    never blocks."""
    namespace, name = body.metadata.namespace, body.metadata.name
    if namespace is None or name is None:
        return
    autoscale: Scheduler = memo.autoscale_scheduler
    routers: Scheduler = memo.router_scheduler
    resync: Scheduler = memo.resync_scheduler
    if type == "DELETED":
        memo.bodies.pop((namespace, name), None)
        autoscale.untrack(namespace, name)
        routers.untrack(namespace, name)
        resync.untrack(namespace, name)
        memo.autoscaler.forget(namespace, name)  # its policy memory, router samples and series
        return
    memo.bodies[(namespace, name)] = copy.deepcopy(dict(body))
    resync.track(namespace, name, delay=RESYNC_S)
    period_s = tick_period_s(memo.bodies[(namespace, name)])
    if period_s is not None:
        autoscale.track(namespace, name, delay=first_tick_delay(namespace, name, period_s))
        if memo.config.read_routers:
            routers.track(namespace, name, delay=first_tick_delay(namespace, name, ROUTER_PERIOD_S))


def _spot_enabled(body: dict[str, Any]) -> bool:
    spot = ((body.get("spec") or {}).get("capacity") or {}).get("spot") or {}
    return bool(spot.get("enabled"))


@kopf.on.event("", "v1", "nodes")
async def node_changed(*, type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    """Keep the nodes being interrupted, drained or lost (policy.interruption); when one starts
    or stops, every service with spot looks at its pods at once (no apply unless stand-ins
    change). Runs in the event loop and never blocks."""
    name = body.metadata.name
    trouble = None if type == "DELETED" else node_trouble(body)
    known: dict[str, str] = memo.troubled_nodes
    if known.get(name) == trouble:
        return
    if trouble is None:
        known.pop(name, None)
    else:
        known[name] = trouble
    for (namespace, service), service_body in list(memo.bodies.items()):
        if _spot_enabled(service_body):
            memo.status_scheduler.run_within(namespace, service, 0.0)
