"""The operator's own Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
