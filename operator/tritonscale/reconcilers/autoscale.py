"""The autoscaling loop: observe, decide with the pure policy, record why, apply through the
stack reconciler. One call is one tick for one InferenceService."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from tritonscale.api.observation import Observation, ScalingTarget
from tritonscale.api.resource import InferenceService, InvalidInferenceService, parse_inference_service
from tritonscale.api.status import InferenceServiceStatus
from tritonscale.errors import RejectedError
from tritonscale.metrics import AUTOSCALER
from tritonscale.policy.autoscaling import AutoscalerState, Decision, LatencyAutoscaler, settings_from_spec
from tritonscale.policy.replicas import reconciled_replicas
from tritonscale.reconcilers.stack import ClusterApi, StackReconciler, utc_now
from tritonscale.render.names import StackNames
from tritonscale.status import autoscaling_status, without_autoscaling

log = logging.getLogger(__name__)
IDLE_RECHECK_S = 30.0  # how often a service without autoscaling is looked at again


class ObservationSource(Protocol):
    def observe(self, target: ScalingTarget) -> Observation: ...


# Picks the source for a service: returns (source, its name for messages).
SourceChooser = Callable[[InferenceService], tuple[ObservationSource, str]]

# Autoscaler-owned status fields that must be cleared explicitly (a merge patch keeps what it omits).
_CLEARABLE = ("observedLatencyMilliseconds", "observedRateRps")


def status_patch(status: InferenceServiceStatus) -> dict[str, Any]:
    patch = status.to_wire()
    for key in _CLEARABLE:
        patch.setdefault(key, None)
    return patch


def scaling_target(service: InferenceService, cluster_domain: str = "cluster.local") -> ScalingTarget:
    spec = service.spec
    assert spec.autoscaling is not None
    names = StackNames(service.name, service.namespace, cluster_domain)
    return ScalingTarget(
        namespace=service.namespace,
        name=service.name,
        instance=names.instance,
        models=tuple(spec.model.names),
        percentile=spec.autoscaling.latency.percentile,
        pod_prefixes=(names.on_demand_deployment, names.spot_deployment),
        ready_replicas=service.status.replicas,
        latency_query=spec.autoscaling.metrics.latency_query,
        rate_query=spec.autoscaling.metrics.rate_query,
    )


class AutoscaleReconciler:
    """Runs autoscaling ticks; keeps each service's policy memory between them."""

    def __init__(
        self,
        api: ClusterApi,
        stack: StackReconciler,
        choose_source: SourceChooser,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.stack = stack
        self.choose_source = choose_source
        self.clock = clock
        self.monotonic = monotonic
        self._states: dict[tuple[str, str], AutoscalerState] = {}
        self._was_missing: dict[tuple[str, str], bool] = {}

    def forget(self, namespace: str, name: str) -> None:
        """Drop the memory and metrics of a service that is gone or no longer autoscaled."""
        self._states.pop((namespace, name), None)
        self._was_missing.pop((namespace, name), None)
        AUTOSCALER.forget(namespace, name)

    def tick(self, namespace: str, name: str) -> float:
        """One autoscaling step; returns the seconds until the next one."""
        with self.stack.lock(namespace, name):
            body = self.api.get_inference_service(namespace, name)
            if body is None:
                self.forget(namespace, name)
                return IDLE_RECHECK_S
            try:
                service = parse_inference_service(body)
            except InvalidInferenceService:
                return IDLE_RECHECK_S  # the stack reconciler reports it
            autoscaling = service.spec.autoscaling
            if autoscaling is None or not autoscaling.enabled:
                self._switch_off(service)
                return IDLE_RECHECK_S
            started = time.perf_counter()
            decision, observation, source_name = self._decide(service)
            AUTOSCALER.decision_seconds.observe(time.perf_counter() - started)
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
                source=source_name,
                now=self.clock(),
                generation=service.metadata.generation,
            )
            if status != service.status:
                self.api.patch_inference_service_status(namespace, name, status_patch(status))
            self._announce(body, service, decision, source_name)
            AUTOSCALER.record(namespace, name, decision, observation, autoscaling.latency.target_milliseconds)
        if decision.desired != current:
            try:
                self.stack.reconcile(namespace, name)
            except RejectedError as error:
                log.warning(
                    "applying %s replicas to %s/%s failed: %s", decision.desired, namespace, name, error
                )
        return float(autoscaling.period_seconds)

    def _decide(self, service: InferenceService) -> tuple[Decision, Observation, str]:
        assert service.spec.autoscaling is not None
        key = (service.namespace, service.name)
        source, source_name = self.choose_source(service)
        observation = source.observe(scaling_target(service, self.stack.options.cluster_domain))
        policy = LatencyAutoscaler(settings_from_spec(service.spec.autoscaling))
        current = service.status.desired_replicas or reconciled_replicas(service)
        decision, state = policy.decide(
            observation, self._states.get(key, AutoscalerState()), self.monotonic(), current
        )
        self._states[key] = state
        return decision, observation, source_name

    def _announce(
        self, body: dict[str, Any], service: InferenceService, decision: Decision, source: str
    ) -> None:
        key = (service.namespace, service.name)
        if decision.direction != "hold":
            reason = "ScaledUp" if decision.direction == "up" else "ScaledDown"
            self.api.post_event(body, "Normal", reason, decision.reason)
        was_missing = self._was_missing.get(key, False)
        if decision.metrics_missing and not was_missing:
            self.api.post_event(
                body, "Warning", "MetricsUnavailable", f"{decision.reason} (source: {source})"
            )
        elif was_missing and not decision.metrics_missing:
            self.api.post_event(body, "Normal", "MetricsAvailable", f"metrics from {source} are back")
        self._was_missing[key] = decision.metrics_missing

    def _switch_off(self, service: InferenceService) -> None:
        self.forget(service.namespace, service.name)
        cleared = without_autoscaling(service.status)
        if cleared != service.status:
            self.api.patch_inference_service_status(service.namespace, service.name, status_patch(cleared))
