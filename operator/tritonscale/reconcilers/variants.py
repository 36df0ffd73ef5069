"""The variants' shares of one service's requests (spec.model.variants), decided with the pure
policy (policy.variants) at every read of its routers (every 2 s) and set on each router pod
(clients.router.set_variant_cuts). What was served is counted from the routers' answers per
backend, so the accuracy budget spends what the replicas served, not what was asked."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from tritonscale.api.observation import Observation, RouterReading, RouterSignal
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
    served_since,
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
        steady_spend=autoscaling.accuracy.steady_spend,
        steady_variant=autoscaling.accuracy.steady_variant,
    )


# A router unread this long is taken to be gone: if it comes back its counts start a new series.
FORGET_ROUTER_S = 300.0


@dataclass
class _Watch:
    state: VariantState = field(default_factory=VariantState)
    names: tuple[str, ...] = ()  # the variants' names the ledger counts, in order
    # The ledger's running totals, built from each router's own increments: a router unread
    # for a while, replaced or restarted (its counters back at zero) loses nothing counted.
    totals: tuple[float, ...] = ()
    # address -> (what it had served, when it was read)
    seen: dict[str, tuple[tuple[float, ...], float]] = field(default_factory=dict)
    pushed: dict[str, tuple[dict[str, int], float]] = field(default_factory=dict)  # address -> (cuts, when)
    last: VariantDecision | None = None
    observed_ms: float | None = None  # the percentile the autoscaler's last observation measured


class VariantController:
    """Per service: the accuracy ledger, the last decision and what each router holds."""

    def __init__(self, set_cuts: CutSetter) -> None:
        self.set_cuts = set_cuts
        self._watches: dict[tuple[str, str], _Watch] = {}

    def forget(self, namespace: str, name: str, *, release_routers: bool = False) -> None:
        """Drop a service no longer decided for; with `release_routers` (it still exists, paused
        or no longer autoscaled), its routers are sent back to the model only: nothing would
        take a share back otherwise. A deleted service's routers go with it."""
        watch = self._watches.pop((namespace, name), None)
        if watch is None or not release_routers:
            return
        for address, (cuts, _) in list(watch.pushed.items()):
            if any(cuts.values()):
                try:
                    self.set_cuts(address, dict.fromkeys(cuts, 0))
                except Exception as error:  # a router gone with its service
                    log.info("router %s of %s/%s kept its shares: %s", address, namespace, name, error)

    @staticmethod
    def _count(
        watch: _Watch, readings: dict[str, RouterReading], now: float, models: int
    ) -> tuple[float, ...]:
        """The ledger's totals with what each router served since it was last read."""
        totals = list(watch.totals) if len(watch.totals) == models else [0.0] * models
        for address, reading in readings.items():
            served = tuple(reading.served[i] if i < len(reading.served) else 0.0 for i in range(models))
            before = watch.seen.get(address)
            if before is not None:
                previous = before[0]
                # A counter that went back: the router restarted, and counts from zero.
                restarted = any(new < old for new, old in zip(served, previous, strict=True))
                for i in range(models):
                    totals[i] += served[i] if restarted else served[i] - previous[i]
            # A router seen for the first time starts its own series: what it served before
            # (a new pod's first seconds) is not counted.
            watch.seen[address] = (served, now)
        for address, (_, at) in list(watch.seen.items()):
            if now - at > FORGET_ROUTER_S:
                del watch.seen[address]
        watch.totals = tuple(totals)
        return watch.totals

    def account(self, service: InferenceService, observation: Observation, now: float) -> Observation:
        """The autoscaler's observation with what the variants served counted in: the model's
        metrics (Prometheus or Triton's) cover only the model's own servers, so while variants
        serve, the rate is the routers' count of everything served over about the rate's window
        (a rateQuery of the user's is left as it is), and the observation says the variants'
        share (a model is learnt only from a fleet serving what it is sized for: nothing, or a
        standing share)."""
        watch = self._watches.get((service.namespace, service.name))
        if watch is None or variant_settings(service) is None:
            return observation
        watch.observed_ms = observation.latency_ms if observation.usable else None
        span_s = max(2.0 * observation.rate_age_s, 4.0 * ROUTER_PERIOD_S)
        served = served_since(watch.state.counts, now - span_s)
        if served is None or served.variant_fraction <= 0.0:
            return observation
        metrics = service.spec.autoscaling.metrics if service.spec.autoscaling is not None else None
        if metrics is not None and metrics.rate_query is not None:
            # The user's own rate query: what it counts is theirs to say.
            return replace(observation, variant_share=served.variant_fraction)
        # The routers' count of everything served over about the rate's window (the model's
        # own count, scaled up, says nothing once the variants serve nearly all of it).
        rate = max(observation.arrival_rate_rps or 0.0, served.rate_rps)
        return replace(
            observation,
            arrival_rate_rps=rate,
            variant_share=served.variant_fraction,
        )

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
        max_batch: int | None = None,
    ) -> VariantDecision | None:
        """Decide the shares from the routers' newest readings and set them on every router;
        None when the service serves no variants. `max_batch` is the model configuration's
        (None while it is unread)."""
        key = (service.namespace, service.name)
        settings = variant_settings(service)
        if settings is None:
            self._watches.pop(key, None)
            return None
        watch = self._watches.setdefault(key, _Watch())
        models = 1 + len(settings.variants)
        names = tuple(v.name for v in settings.variants)
        if names != watch.names:
            # Other variants than last time (the spec changed): a new ledger and new shares. A
            # variant only re-measured (its accuracy or speedup) keeps the ledger: the window's
            # history still counts against the floor.
            watch.state, watch.names = VariantState(), names
            watch.totals, watch.seen = (0.0,) * models, {}
        counts = self._count(watch, readings, now, models)
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
            observed_ms=watch.observed_ms,
            max_batch=max_batch,
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
