"""The autoscaling loop: observe, decide with the pure policy, record why, apply through the
stack reconciler. One call is one tick for one InferenceService."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from tritonscale.api.observation import Observation, RouterReading, RouterSample, RouterSignal, ScalingTarget
from tritonscale.api.resource import InferenceService, InvalidInferenceService, parse_inference_service
from tritonscale.api.status import CapacityModel, InferenceServiceStatus, VariantShare, VariantsStatus
from tritonscale.errors import ConflictError, RejectedError, TransientError
from tritonscale.metrics import AUTOSCALER
from tritonscale.policy.autoscaling import AutoscalerState, Decision, LatencyAutoscaler, settings_from_spec
from tritonscale.policy.replicas import reconciled_replicas
from tritonscale.policy.service_facts import Batching, batching, cold_start, pod_starts, ready_pod_addresses
from tritonscale.policy.surge import ROUTER_PERIOD_S, combined_sample, remember, router_signal, wants_decision
from tritonscale.policy.variants import NO_STANDING_MIX, standing_mix
from tritonscale.reconcilers.stack import ClusterApi, StackReconciler, utc_now
from tritonscale.reconcilers.variants import CutSetter, VariantController, variant_settings
from tritonscale.render.names import COMPONENT_ROUTER, COMPONENT_TRITON, StackNames
from tritonscale.render.variants import served_variants
from tritonscale.status import autoscaling_status, paused_autoscaling, without_autoscaling

log = logging.getLogger(__name__)


class ObservationSource(Protocol):
    def observe(self, target: ScalingTarget) -> Observation: ...

    def forget(self, namespace: str, name: str) -> None:
        """Drop what it remembers of the service (the counters its rates are taken against)."""


# Picks the source for a service: returns (source, its name for messages).
SourceChooser = Callable[[InferenceService], tuple[ObservationSource, str]]

# Autoscaler-owned status fields that must be cleared explicitly (a merge patch keeps what it omits).
_CLEARABLE = (
    "observedLatencyMilliseconds",
    "observedRateRps",
    "targetLatencyMilliseconds",
    "latencyPercentile",
    "capacityModel",
    "latencyOfObjective",
    "variants",
)


def status_patch(status: InferenceServiceStatus) -> dict[str, Any]:
    patch = status.to_wire()
    for key in _CLEARABLE:
        patch.setdefault(key, None)
    return patch


def feedback_notice(decision: Decision, service: InferenceService) -> str | None:
    """The decision's paused feedback, if any, with what to check for this service."""
    if decision.feedback_paused is None:
        return None
    autoscaling = service.spec.autoscaling
    if autoscaling is not None and autoscaling.metrics.rate_query is not None:
        hint = "does spec.autoscaling.metrics.rateQuery return requests per second of this service's pods?"
    else:
        hint = (
            "do clients reach the Triton pods without the routers, or do spec.model.names include an "
            "ensemble and its steps (each counted)?"
        )
    return f"{decision.feedback_paused}; {hint}"


def scaling_target(service: InferenceService, cluster_domain: str = "cluster.local") -> ScalingTarget:
    spec = service.spec
    assert spec.autoscaling is not None
    names = StackNames(service.name, service.namespace, cluster_domain)
    return ScalingTarget(
        namespace=service.namespace,
        name=service.name,
        models=tuple(spec.model.names),
        percentile=spec.autoscaling.latency.percentile,
        pod_prefixes=(names.on_demand_deployment, names.spot_deployment),
        ready_replicas=service.status.replicas,
        pod_selector=names.component_selector(COMPONENT_TRITON),
        latency_query=spec.autoscaling.metrics.latency_query,
        rate_query=spec.autoscaling.metrics.rate_query,
    )


# Reads an InferenceService as last seen (the watch's copy in the operator), None when gone.
BodyReader = Callable[[str, str], dict[str, Any] | None]
# Reads Triton's model configurations from one of these pod addresses; a reason when it cannot.
ModelConfigReader = Callable[[ScalingTarget, list[str]], list[dict[str, Any]] | str]
CONFLICT_RETRY_S = 1.0  # a status write lost to a concurrent one is retried this soon
FACTS_REFRESH_S = 600.0  # re-learn cold start and batching at least this often
FACTS_RETRY_S = 60.0  # ... and this soon when the model configuration could not be read, or pods were missed
# Reads one router pod's counters by address (clients.router); a reason when it cannot.
RouterReader = Callable[[str], RouterReading | str]
# The Ready addresses of the pods a selector picks in a namespace, from a watch (clients.pod_watch);
# None when it cannot answer, and the pods are listed instead.
PodAddresses = Callable[[str, Mapping[str, str]], list[str] | None]
# ... and, from one look, the most recent starts of those pods, (created, seconds to Ready),
# oldest first, with their addresses.
PodStartsAndAddresses = Callable[
    [str, Mapping[str, str]], tuple[tuple[tuple[datetime, float], ...], list[str]] | None
]
ROUTER_PODS_REFRESH_S = 30.0  # re-list the router pods at least this often
ROUTER_RELIST_S = 10.0  # ... and, while one does not answer, at most this often
ROUTER_RETRY_S = 30.0  # after no router answered, try again this much later


@dataclass
class _RouterWatch:
    """One service's routers as last read (clients.router) and the samples of the last minute."""

    addresses: list[str] = field(default_factory=list)
    listed_at: float = -math.inf
    readings: dict[str, RouterReading] = field(default_factory=dict)
    samples: tuple[RouterSample, ...] = ()
    retry_at: float = -math.inf
    asked_for_rps: float = 0.0  # the rate the job last asked a decision for (asked once per rise)


@dataclass(frozen=True)
class _Facts:
    """What was learnt about a service's pods and models, and when."""

    starts: tuple[tuple[datetime, float], ...]
    batching: Batching
    ready: int
    models: tuple[str, ...]
    at: float
    # Fewer Ready pods were found than `ready` counted (a watch behind, a failed list): the
    # newest pod's start and configuration may be missing, so they are looked for again soon.
    short: bool = False

    def stale(self, target: ScalingTarget, ready: int, now: float, configs_readable: bool = True) -> bool:
        # An unread configuration is tried again soon, unless this operator never reads one.
        unread = configs_readable and not self.batching.from_model_config
        retry = FACTS_RETRY_S if unread or self.short else FACTS_REFRESH_S
        # More ready pods than last time: a start to learn from, and a pod to read configs from.
        return ready > self.ready or target.models != self.models or now - self.at >= retry


def _configs_not_read(target: ScalingTarget, hosts: list[str]) -> str:
    return "reading Triton pods is switched off for this operator"


class AutoscaleReconciler:
    """Runs autoscaling ticks; keeps each service's policy memory between them."""

    def __init__(
        self,
        api: ClusterApi,
        stack: StackReconciler,
        choose_source: SourceChooser,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        read: BodyReader | None = None,
        read_model_configs: ModelConfigReader | None = None,
        read_router: RouterReader | None = None,
        on_surge: Callable[[str, str], None] = lambda namespace, name: None,
        set_router_cuts: CutSetter | None = None,
        pod_addresses: PodAddresses = lambda namespace, selector: None,
        starts_and_addresses: PodStartsAndAddresses = lambda namespace, selector: None,
    ) -> None:
        self.api = api
        self.stack = stack
        self.choose_source = choose_source
        self.clock = clock
        self.monotonic = monotonic
        self.read = read or api.get_inference_service
        self._states: dict[tuple[str, str], AutoscalerState] = {}
        self._was_missing: dict[tuple[str, str], bool] = {}
        self._was_paused: dict[tuple[str, str], bool] = {}  # the model feedback (Decision.feedback_paused)
        # None: this operator does not read Triton pods (--no-read-triton-pods).
        self.read_model_configs = read_model_configs or _configs_not_read
        self._facts: dict[tuple[str, str], _Facts] = {}
        self.read_router = read_router
        self.pod_addresses = pod_addresses
        self.starts_and_addresses = starts_and_addresses
        self.on_surge = on_surge  # asks for a tick now (the operator: the autoscale scheduler)
        self._routers: dict[tuple[str, str], _RouterWatch] = {}
        self._apply_pending: set[tuple[str, str]] = set()  # a count decided, not yet applied
        self._sources: dict[tuple[str, str], ObservationSource] = {}  # the source each one last used
        # The variants' shares (spec.model.variants), set on the routers read every 2 s.
        self.variants = VariantController(set_router_cuts) if set_router_cuts is not None else None

    def forget(self, namespace: str, name: str, *, release_routers: bool = False) -> None:
        """Drop the memory and metrics of a service that is gone or no longer autoscaled (with
        `release_routers`, one that still exists: its routers serve the model only again)."""
        self._states.pop((namespace, name), None)
        self._was_missing.pop((namespace, name), None)
        self._was_paused.pop((namespace, name), None)
        self._facts.pop((namespace, name), None)
        self._routers.pop((namespace, name), None)
        self._apply_pending.discard((namespace, name))
        # After a pause, a first rate against counters from before it would average the pause in.
        source = self._sources.pop((namespace, name), None)
        if source is not None:
            source.forget(namespace, name)
        if self.variants is not None:
            self.variants.forget(namespace, name, release_routers=release_routers)
        AUTOSCALER.forget(namespace, name)

    def _autoscaled(
        self, namespace: str, name: str, read: BodyReader | None = None
    ) -> tuple[dict[str, Any], InferenceService] | None:
        """The body (as `read`, by default the watch's copy, gives it) and parsed service while
        it exists and is autoscaled; else forgets it."""
        body = (read or self.read)(namespace, name)
        if body is None:
            self.forget(namespace, name)
            return None
        try:
            service = parse_inference_service(body)
        except InvalidInferenceService:
            return None  # the stack reconciler reports it; a fixed spec is tracked anew
        if not service.spec.autoscaling_enabled:
            self._switch_off(body, service, without_autoscaling(service.status))
            return None
        if service.autoscaling_paused:
            paused = paused_autoscaling(
                service.status, service.spec.replicas, self.clock(), service.metadata.generation
            )
            self._switch_off(body, service, paused)
            return None  # the annotation's removal is a watch event that starts it again
        return body, service

    def tick(self, namespace: str, name: str) -> float | None:
        """One autoscaling step; returns the seconds until the next one, or None when the
        service is gone or no longer autoscaled.

        The observation is fetched outside the service's lock (it may wait on a slow metrics
        source); the decision and the status write happen under it, against the watch's copy of
        the resource, and the write carries its resourceVersion so it never overwrites a newer
        status. When that copy is behind, the resource is read and decided on once more at once."""
        found = self._autoscaled(namespace, name)
        if found is None:
            return None
        _, service = found
        if service.status.observed_generation is None:
            # Its stack was never applied (a new resource the first reconciles have not reached
            # yet: hundreds at once when the operator starts among them): nothing to observe, and
            # ticking would cost metrics queries and status writes the reconciles wait behind.
            assert service.spec.autoscaling is not None
            return float(service.spec.autoscaling.period_seconds)
        started = time.perf_counter()
        source, source_name = self.choose_source(service)
        previous_source = self._sources.get((namespace, name))
        if previous_source is not None and previous_source is not source:
            previous_source.forget(namespace, name)
        self._sources[(namespace, name)] = source
        target = scaling_target(service, self.stack.options.cluster_domain)
        # The spot count from the copy the target's ready count came from (Prometheus reads it
        # there; Triton's statistics count live pods, newer still): from a later copy, a reclaim
        # written in between showed spot fallen while nothing looked short, and was never noted.
        observation = replace(
            source.observe(target),
            router=self._router_signal(namespace, name),
            spot_ready_replicas=service.status.spot_replicas,
        )
        facts = self._learn_facts(target, observation.ready_replicas)
        with self.stack.lock(namespace, name):
            found = self._autoscaled(namespace, name)
            if found is None:
                return None
            if self.variants is not None:
                # What the variants served counted in, for the decision and the status alike
                # (once: a second decision below is on the same observation).
                observation = self.variants.account(found[1], observation, self.monotonic())
            written = self._decide_and_write(found, observation, facts, source_name)
            if written is None:
                # The watch's copy was behind a status write (the stack's own, often, while it
                # settles): decide again on the resource as it is now, rather than wait for the
                # watch and lose a write a second until it catches up.
                try:
                    found = self._autoscaled(namespace, name, read=self.api.get_inference_service)
                except TransientError as error:
                    log.info(
                        "reading %s/%s again after a lost status write failed: %s", namespace, name, error
                    )
                    return max(CONFLICT_RETRY_S, error.delay)
                if found is None:
                    return None
                written = self._decide_and_write(found, observation, facts, source_name)
                if written is None:
                    return CONFLICT_RETRY_S  # written meanwhile by someone else: decide again soon
            body, service, decision, state = written
            AUTOSCALER.decision_seconds.observe(time.perf_counter() - started)
            autoscaling = service.spec.autoscaling
            assert autoscaling is not None
            self._states[(namespace, name)] = state
            self._announce(body, service, decision, source_name)
            AUTOSCALER.record(namespace, name, decision)
        key = (namespace, name)
        current = decision.current
        if decision.desired != current or key in self._apply_pending:
            # Pending until applied: status already holds the new count, so the next tick sees
            # no change, and nothing else applies it before the resync (minutes).
            self._apply_pending.add(key)
            try:
                self.stack.reconcile(namespace, name)
            except RejectedError as error:
                log.warning(
                    "applying %s replicas to %s/%s failed: %s", decision.desired, namespace, name, error
                )
            except TransientError as error:
                log.info(
                    "applying %s replicas to %s/%s deferred: %s", decision.desired, namespace, name, error
                )
                return min(float(autoscaling.period_seconds), error.delay)
            self._apply_pending.discard(key)
        return float(autoscaling.period_seconds)

    def _decide_and_write(
        self,
        found: tuple[dict[str, Any], InferenceService],
        observation: Observation,
        facts: _Facts,
        source_name: str,
    ) -> tuple[dict[str, Any], InferenceService, Decision, AutoscalerState] | None:
        """Decide on this copy of the resource and write the status it gives, only if the
        resource is still that copy; None when it is not (nothing written, nothing kept)."""
        body, service = found
        namespace, name = service.namespace, service.name
        autoscaling = service.spec.autoscaling
        assert autoscaling is not None
        cold = cold_start(facts.starts, autoscaling.cold_start_seconds)
        decision, state = self._decide(service, observation, cold.seconds, facts.batching.max_batch)
        current = decision.current
        status = autoscaling_status(
            service.status,
            desired=decision.desired,
            current=current,
            reason=decision.reason,
            limited=decision.limited,
            latency_ms=None if decision.metrics_missing else observation.latency_ms,
            rate_rps=None if decision.metrics_missing else observation.arrival_rate_rps,
            missing=(observation.missing or decision.reason) if decision.metrics_missing else None,
            partial=observation.partial,
            feedback_paused=feedback_notice(decision, service),
            source=source_name,
            now=self.clock(),
            generation=service.metadata.generation,
        ).model_copy(
            update={
                "target_latency_milliseconds": autoscaling.latency.target_milliseconds,
                "latency_percentile": autoscaling.latency.percentile,
                "capacity_model": CapacityModel(
                    cold_start_seconds=cold.seconds,
                    cold_start_source=cold.source,
                    max_batch=facts.batching.max_batch,
                    max_batch_source=facts.batching.source,
                ),
                "variants": self._variants_status(service),
            }
        )
        if status != service.status:
            try:
                self.api.patch_inference_service_status(
                    namespace,
                    name,
                    status_patch(status),
                    resource_version=body["metadata"].get("resourceVersion"),
                )
            except ConflictError:
                return None
        return body, service, decision, state

    def router_tick(self, namespace: str, name: str) -> float | None:
        """Read the service's routers (every ROUTER_PERIOD_S) and, when they show a surge the
        last decision did not size for, ask for a tick now; None when the service is gone, no
        longer autoscaled, or no router reader is set."""
        key = (namespace, name)
        found = self._autoscaled(namespace, name) if self.read_router is not None else None
        if self.read_router is None or found is None:
            self._routers.pop(key, None)
            return None
        _, service = found
        now = self.monotonic()
        watch = self._routers.setdefault(key, _RouterWatch())
        if now < watch.retry_at:
            return ROUTER_PERIOD_S
        selector = StackNames(name, namespace).component_selector(COMPONENT_ROUTER)
        watched = self.pod_addresses(namespace, selector)
        if watched is not None:
            # As good as a list: should the watch stop answering, each service lists at its own
            # time, not all of them at once on the next read.
            watch.addresses, watch.listed_at = watched, now
        elif now - watch.listed_at >= ROUTER_PODS_REFRESH_S:
            try:
                watch.addresses = ready_pod_addresses(self.api.list_pods(namespace, selector))
                watch.listed_at = now
            except TransientError as error:
                log.info("listing router pods of %s/%s failed: %s", namespace, name, error)
                watch.listed_at = now - ROUTER_PODS_REFRESH_S + ROUTER_RELIST_S  # not every read
        readings: dict[str, RouterReading] = {}
        for address in watch.addresses:
            reading = self.read_router(address)
            if isinstance(reading, str):
                log.debug("router %s of %s/%s unreadable: %s", address, namespace, name, reading)
                AUTOSCALER.router_read_failures.labels(namespace, name).inc()
                # A router gone or replaced: list them again soon.
                watch.listed_at = min(watch.listed_at, now - ROUTER_PODS_REFRESH_S + ROUTER_RELIST_S)
            else:
                readings[address] = reading
        if not readings:
            # No router answers (none ready yet, or unreachable from here): the autoscaler
            # does without their counts until one does.
            self._routers[key] = _RouterWatch(watch.addresses, watch.listed_at, retry_at=now + ROUTER_RETRY_S)
            AUTOSCALER.record_routers(namespace, name, None)
            return ROUTER_PERIOD_S
        if readings.keys() != watch.readings.keys():
            # Other routers counted than last time: a rate across the two would show a jump or
            # a dip that is not in the load, so the history starts afresh.
            watch.samples = ()
        last = watch.samples[-1] if watch.samples else None
        sample = combined_sample(now, readings, watch.readings, last)
        watch.samples, watch.readings = remember(watch.samples, sample), readings
        signal = router_signal(watch.samples, now)
        AUTOSCALER.record_routers(namespace, name, signal)
        self._route_variants(service, now, readings, signal)
        if signal is None or not signal.surged:
            watch.asked_for_rps = 0.0  # the surge is over (or was never): the next one asks again
        state = self._states.get(key)
        sized_for = max(state.sized_for_rps or 0.0, watch.asked_for_rps) if state is not None else None
        if sized_for is not None and wants_decision(signal, sized_for):
            # Asked once per rise: a tick that cannot act (metrics missing) is not asked again
            # every read for the same surge.
            assert signal is not None
            watch.asked_for_rps = signal.present_rps
            AUTOSCALER.surge_decisions.labels(namespace, name).inc()
            self.on_surge(namespace, name)
        return ROUTER_PERIOD_S

    def _route_variants(
        self,
        service: InferenceService,
        now: float,
        readings: dict[str, RouterReading],
        signal: RouterSignal | None,
    ) -> None:
        """The variants' shares for the next 2 s (policy.variants), set on the routers; an Event
        when they start or stop serving."""
        if self.variants is None:
            return
        key = (service.namespace, service.name)
        state = self._states.get(key)
        facts = self._facts.get(key)
        before = self.variants.last(*key)
        primary = None
        if state is not None and service.spec.autoscaling is not None:
            policy = LatencyAutoscaler(
                settings_from_spec(
                    service.spec.autoscaling, max_batch=facts.batching.max_batch if facts else 1
                )
            )
            primary = policy.service_time(state)
        # Ready replicas as the last decision's metrics saw them (status may lag a new pod).
        ready = (
            state.ready_seen
            if state is not None and state.ready_seen is not None
            else service.status.replicas
        )
        decision = self.variants.decide(
            service,
            now,
            readings,
            signal,
            primary,
            state,
            ready,
            service.status.desired_replicas or ready,
            max_batch=facts.batching.max_batch if facts and facts.batching.from_model_config else None,
        )
        AUTOSCALER.record_variants(service.namespace, service.name, service, decision)
        if decision is None:
            return
        # With a steady spend the standing share serves all the time: the Events mark the
        # shares a surge adds on top of it.
        serving = decision.beyond_standing
        served_before = before is not None and before.beyond_standing
        if serving != served_before:
            body = self.read(*key)
            if body is not None:
                reason = "VariantsServing" if serving else "VariantsStopped"
                self.api.post_event(body, "Normal", reason, decision.reason)

    def _variants_status(self, service: InferenceService) -> VariantsStatus | None:
        accuracy = service.spec.autoscaling.accuracy if service.spec.autoscaling is not None else None
        if self.variants is None and accuracy is not None and served_variants(service):
            # Said, not silently dropped: the shares can only be set through the routers.
            return VariantsStatus(
                shares=[
                    VariantShare(name=variant.name, share=0.0) for variant in service.spec.model.variants
                ],
                served_accuracy=1.0,
                budget_left_points=round(100.0 * (1.0 - accuracy.floor), 4),
                reason="not served: this operator runs with --no-read-routers, and the variants' "
                "shares are set through the routers",
            )
        last = self.variants.last(service.namespace, service.name) if self.variants is not None else None
        if last is None:
            return None
        return VariantsStatus(
            shares=[
                VariantShare(name=variant.name, share=round(share, 4))
                for variant, share in zip(service.spec.model.variants, last.shares, strict=False)
            ],
            served_accuracy=round(last.served_accuracy, 6),
            budget_left_points=round(min(100.0, last.budget_left_points), 4),
            reason=last.reason[:1024],
        )

    def _router_signal(self, namespace: str, name: str) -> RouterSignal | None:
        watch = self._routers.get((namespace, name))
        if watch is None:
            return None
        return router_signal(watch.samples, self.monotonic())

    def _learn_facts(self, target: ScalingTarget, ready: int) -> _Facts:
        """Cold start from the service's own pods and batching from Triton's model
        configuration, re-read when more pods are ready, the models change, or it is old.
        Called outside the service's lock: it may wait on the API server or a pod."""
        key = (target.namespace, target.name)
        now = self.monotonic()
        known = self._facts.get(key)
        readable = self.read_model_configs is not _configs_not_read
        if known is not None and not known.stale(target, ready, now, readable):
            return known
        selector = dict(target.pod_selector)
        watched = self.starts_and_addresses(target.namespace, selector)
        if watched is not None:
            starts, addresses = watched
        else:  # the watch cannot answer: list them
            try:
                pods = self.api.list_pods(target.namespace, selector)
            except TransientError as error:
                log.info("listing Triton pods of %s/%s failed: %s", *key, error)
                pods = []
            starts, addresses = pod_starts(pods), ready_pod_addresses(pods)
        starts = starts or (known.starts if known is not None else ())
        configs = self.read_model_configs(target, addresses) if addresses else "no ready Triton pod"
        found = batching(configs)
        if not found.from_model_config and known is not None and known.batching.from_model_config:
            found = known.batching  # a pod that did not answer this time: keep what one said before
        facts = _Facts(starts, found, ready, target.models, now, short=len(addresses) < ready)
        self._facts[key] = facts
        return facts

    def _decide(
        self, service: InferenceService, observation: Observation, cold_start_s: float, max_batch: int
    ) -> tuple[Decision, AutoscalerState]:
        assert service.spec.autoscaling is not None
        key = (service.namespace, service.name)
        policy = LatencyAutoscaler(
            settings_from_spec(service.spec.autoscaling, cold_start_s, max_batch, service.spec.capacity)
        )
        current = service.status.desired_replicas or reconciled_replicas(service)
        state = self._states.get(key, AutoscalerState())
        carried, standing = 1.0, NO_STANDING_MIX
        if self.variants is not None:
            carried = self.variants.bridge(service, policy, state, observation.arrival_rate_rps or 0.0)
            standing = standing_mix(variant_settings(service))
        return policy.decide(observation, state, self.monotonic(), current, bridge=carried, standing=standing)

    def _announce(
        self, body: dict[str, Any], service: InferenceService, decision: Decision, source: str
    ) -> None:
        key = (service.namespace, service.name)
        changed = decision.direction != "hold"
        if changed:
            reason = "ScaledUp" if decision.direction == "up" else "ScaledDown"
            self.api.post_event(body, "Normal", reason, decision.reason)
        # Every tick's decision at debug (--verbose): why a service held is history too.
        log.log(
            logging.INFO if changed else logging.DEBUG,
            "%s/%s %s: %s",
            service.namespace,
            service.name,
            decision.verdict.value,
            decision.reason,
            extra={"verdict": decision.verdict.value},
        )
        was_missing = self._was_missing.get(key, False)
        if decision.metrics_missing and not was_missing:
            self.api.post_event(
                body, "Warning", "MetricsUnavailable", f"{decision.reason} (source: {source})"
            )
        elif was_missing and not decision.metrics_missing:
            self.api.post_event(body, "Normal", "MetricsAvailable", f"metrics from {source} are back")
        self._was_missing[key] = decision.metrics_missing
        # Metrics missing say nothing about the feedback: its state is kept through an outage.
        if decision.metrics_missing:
            return
        notice, was_paused = feedback_notice(decision, service), self._was_paused.get(key, False)
        paused = notice is not None
        if notice is not None and not was_paused:
            log.warning("%s/%s: %s", service.namespace, service.name, notice)
            self.api.post_event(body, "Warning", "FeedbackPaused", notice)
        elif was_paused and not paused:
            self.api.post_event(
                body, "Normal", "FeedbackResumed", "the routers' and the metrics' rates agree again"
            )
        self._was_paused[key] = paused

    def _switch_off(
        self, body: dict[str, Any], service: InferenceService, cleared: InferenceServiceStatus
    ) -> None:
        self.forget(service.namespace, service.name, release_routers=True)
        if cleared != service.status:
            with contextlib.suppress(ConflictError):  # a newer copy is cleared by its own event
                self.api.patch_inference_service_status(
                    service.namespace,
                    service.name,
                    status_patch(cleared),
                    resource_version=body["metadata"].get("resourceVersion"),
                )
