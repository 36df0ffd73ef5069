"""The operator's own Prometheus metrics."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram

from tritonscale.api.observation import Observation
from tritonscale.policy.autoscaling import Decision, Verdict

RECONCILES = Counter(
    "tritonscale_reconcile_total",
    "Reconciles of InferenceServices, by outcome (ok, retry, rejected).",
    ["outcome"],
)
RECONCILE_SECONDS = Histogram(
    "tritonscale_reconcile_duration_seconds",
    "Time one reconcile took (render, apply, observe, status).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

TICK_LATENESS = Histogram(
    "tritonscale_autoscale_tick_lateness_seconds",
    "How late an autoscaling tick started against its schedule.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)


class AutoscalerMetrics:
    """Per-InferenceService gauges and counters of the autoscaling loop."""

    def __init__(self) -> None:
        labels = ["namespace", "name"]
        self.desired = Gauge("tritonscale_desired_replicas", "Triton replicas the autoscaler wants.", labels)
        self.ready = Gauge("tritonscale_ready_replicas", "Ready Triton replicas, as observed.", labels)
        self.latency = Gauge(
            "tritonscale_observed_latency_milliseconds",
            "Measured latency at the objective's percentile.",
            labels,
        )
        self.rate = Gauge(
            "tritonscale_observed_rate_rps", "Measured arrival rate (requests per second).", labels
        )
        self.target = Gauge("tritonscale_target_latency_milliseconds", "The latency objective.", labels)
        self.metrics_available = Gauge(
            "tritonscale_metrics_available", "1 when the last observation could be trusted, else 0.", labels
        )
        self.scale_events = Counter(
            "tritonscale_scale_events_total",
            "Changes of desired replicas, by direction.",
            [*labels, "direction"],
        )
        self.decisions = Counter(
            "tritonscale_autoscaler_decisions_total",
            "Autoscaling decisions, by verdict (ScaleUp, Panic, ScaleDown, WaitForHistory, Hold, "
            "MetricsMissing): the same word the decision's status reason and log line render.",
            [*labels, "verdict"],
        )
        self.decision_seconds = Histogram(
            "tritonscale_autoscaler_decision_duration_seconds",
            "Time one autoscaling decision took, observation included.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )

    def record(
        self, namespace: str, name: str, decision: Decision, observation: Observation, target_ms: float
    ) -> None:
        self.desired.labels(namespace, name).set(decision.desired)
        self.ready.labels(namespace, name).set(observation.ready_replicas)
        self.target.labels(namespace, name).set(target_ms)
        self.metrics_available.labels(namespace, name).set(0 if decision.metrics_missing else 1)
        if not decision.metrics_missing:
            self.latency.labels(namespace, name).set(observation.latency_ms or 0.0)
            self.rate.labels(namespace, name).set(observation.arrival_rate_rps or 0.0)
        if decision.direction != "hold":
            self.scale_events.labels(namespace, name, decision.direction).inc()
        self.decisions.labels(namespace, name, decision.verdict.value).inc()

    def forget(self, namespace: str, name: str) -> None:
        for gauge in (self.desired, self.ready, self.latency, self.rate, self.target, self.metrics_available):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name)
        for direction in ("up", "down"):
            with contextlib.suppress(KeyError):
                self.scale_events.remove(namespace, name, direction)
        for verdict in Verdict:
            with contextlib.suppress(KeyError):
                self.decisions.remove(namespace, name, verdict.value)


AUTOSCALER = AutoscalerMetrics()
