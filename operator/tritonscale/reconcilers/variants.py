"""The variants' shares of one service's requests (spec.model.variants), decided with the pure
policy (policy.variants) at every read of its routers (every 2 s) and set on each router pod
(clients.router.set_variant_cuts). What was served is counted from the routers' answers per
backend, so the accuracy budget spends what the replicas served, not what was asked."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from tritonscale.api.observation import RouterReading, RouterSignal
from tritonscale.api.resource import InferenceService
from tritonscale.policy.autoscaling import AutoscalerState, LatencyAutoscaler, correction_at
from tritonscale.policy.queueing import ServiceTime
from tritonscale.policy.surge import ROUTER_PERIOD_S
from tritonscale.policy.variants import (
    AccuracyBudget,
    ServedCounts,
    Variant,
    VariantDecision,
    VariantSettings,
    VariantState,
    bridge,
    decide_variants,
)
from tritonscale.render.router import variant_cuts
from tritonscale.render.variants import served_variants

log = logging.getLogger(__name__)

# Sets one router pod's cuts (by address); returns what it holds, raises when it refuses.
CutSetter = Callable[[str, dict[str, int]], dict[str, int]]
REPUSH_S = 10.0  # cuts are set again this often even when unchanged (a restarted router starts at 0)


def variant_settings(service: InferenceService) -> VariantSettings | None:
    """The policy's settings for a service that serves variants, else None."""
    variants = served_variants(service)
    autoscaling = service.spec.autoscaling
    if not variants or autoscaling is None or autoscaling.accuracy is None:
        return None
    return VariantSettings(
        target_ms=autoscaling.latency.target_milliseconds,
        percentile=autoscaling.latency.percentile,
        variants=tuple(Variant(v.name, v.accuracy, v.speedup) for v in variants),
        budget=AccuracyBudget(autoscaling.accuracy.floor, float(autoscaling.accuracy.window_seconds)),
        period_s=ROUTER_PERIOD_S,
    )


@dataclass
class _Watch:
    state: VariantState = field(default_factory=VariantState)
    routers: frozenset[str] = frozenset()
    pushed: dict[str, tuple[dict[str, int], float]] = field(default_factory=dict)  # address -> (cuts, when)
    last: VariantDecision | None = None


class VariantController:
    """Per service: the accuracy ledger, the last decision and what each router holds."""

    def __init__(self, set_cuts: CutSetter) -> None:
        self.set_cuts = set_cuts
        self._watches: dict[tuple[str, str], _Watch] = {}

    def forget(self, namespace: str, name: str) -> None:
        self._watches.pop((namespace, name), None)

    def last(self, namespace: str, name: str) -> VariantDecision | None:
        watch = self._watches.get((namespace, name))
        return None if watch is None else watch.last

    def bridge(
        self,
        service: InferenceService,
        autoscaler: LatencyAutoscaler,
        state: AutoscalerState | None,
        rate_rps: float,
    ) -> float:
        """How much more the ready replicas carry with the variants over a cold start (1 without)."""
        settings = variant_settings(service)
        if settings is None or state is None:
            return 1.0
        watch = self._watches.get((service.namespace, service.name), _Watch())
        return bridge(
            settings, watch.state, autoscaler.service_time(state), rate_rps, autoscaler.settings.cold_start_s
        )

    def decide(
        self,
        service: InferenceService,
        now: float,
        readings: dict[str, RouterReading],
        signal: RouterSignal | None,
        primary: ServiceTime | None,
        state: AutoscalerState | None,
        ready: int,
        desired: int,
    ) -> VariantDecision | None:
        """Decide the shares from the routers' newest readings and set them on every router;
        None when the service serves no variants."""
        key = (service.namespace, service.name)
        settings = variant_settings(service)
        if settings is None:
            self._watches.pop(key, None)
            return None
        watch = self._watches.setdefault(key, _Watch())
        if frozenset(readings) != watch.routers:
            # Other routers than last time: their counters are not one series, so the ledger
            # starts afresh (the budget then builds from what they serve).
            watch.state = VariantState(shares=watch.state.shares)
            watch.routers = frozenset(readings)
        models = 1 + len(settings.variants)
        counts = tuple(
            sum(r.served[i] if i < len(r.served) else 0.0 for r in readings.values()) for i in range(models)
        )
        rate = signal.present_rps if signal is not None else 0.0
        decision, watch.state = decide_variants(
            settings,
            watch.state,
            now,
            ServedCounts(now, counts),
            rate_rps=rate,
            in_flight=signal.in_flight if signal is not None else 0.0,
            slope_rps_per_s=signal.slope_rps_per_s if signal is not None else 0.0,
            ready=ready,
            arriving=max(0, desired - ready),
            primary=primary if signal is not None else None,
            correction=correction_at(state, rate / max(ready, 1)) if state is not None else 1.0,
        )
        watch.last = decision
        cuts = variant_cuts(decision.shares)
        for address in readings:
            held = watch.pushed.get(address)
            if held is not None and held[0] == cuts and now - held[1] < REPUSH_S:
                continue
            try:
                self.set_cuts(address, cuts)
                watch.pushed[address] = (cuts, now)
            except Exception as error:  # one router not taking it must not stop the others
                log.warning("router %s of %s/%s did not take the shares %s: %s", address, *key, cuts, error)
                watch.pushed.pop(address, None)
        for gone in set(watch.pushed) - set(readings):
            del watch.pushed[gone]
        return decision


def describe_shares(settings: VariantSettings, decision: VariantDecision) -> str:
    """ "30 % on resnet50-int8" (or "the model only")."""
    serving = [
        f"{100 * share:.0f} % on {variant.name}"
        for variant, share in zip(settings.variants, decision.shares, strict=True)
        if share > 0
    ]
    return ", ".join(serving) if serving else "the model only"


def finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
