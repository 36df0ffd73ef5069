"""What the autoscaler sees of a running stack at one moment."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RouterReading:
    """One router pod's counters as read."""

    routed: float  # requests routed since its process started (HTTP requests and gRPC calls)
    in_flight: float  # requests at the replicas or queued in the router
    # Requests answered with a 2xx since it started: by the model's processes, then by each
    # variant's (spec.model.variants order); just the model's without variants.
    served: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class RouterSample:
    """All routers of one service at one moment."""

    at: float  # seconds, monotonic
    requests: float  # cumulative requests routed
    in_flight: float  # requests at the replicas or queued in the router


@dataclass(frozen=True, slots=True)
class RouterSignal:
    """What the router samples say about the present load."""

    rate_rps: float  # since the last change point, or over the whole history without one
    since_s: float  # the length of that segment
    # The rate at the newest sample and its slope (req/s per s) on a line through the counts
    # since the change point, when the slope stands clear of counting noise; else rate_rps, 0.
    present_rps: float
    slope_rps_per_s: float
    previous_rps: float | None  # the rate before the change point, when there is one
    in_flight: float  # at the newest sample
    age_s: float  # how old the newest sample is

    @property
    def surged(self) -> bool:
        """The rate rose at a change point within the history."""
        return self.previous_rps is not None and self.rate_rps > self.previous_rps

    def describe(self) -> str:
        if self.previous_rps is None:
            return (
                f"router {self.rate_rps:.0f} req/s over {self.since_s:.0f}s, {self.in_flight:.0f} in flight"
            )
        return (
            f"router {self.present_rps:.0f} req/s, {self.slope_rps_per_s:+.0f}/s, "
            f"since a change {self.since_s:.0f}s ago from {self.previous_rps:.0f}; {self.in_flight:.0f} in flight"
        )


@dataclass(frozen=True, slots=True)
class Observation:
    """One sample of a stack's load and latency, from Prometheus or from Triton directly.

    Times are milliseconds, rates requests per second. A field is None when its source had no
    value; `missing` says why the sample as a whole cannot be trusted (empty, NaN, stale or
    unreachable metrics), in which case the autoscaler holds its replicas. It is never zeros.
    """

    arrival_rate_rps: float | None
    latency_ms: float | None  # at the objective's percentile
    ready_replicas: int
    mean_compute_ms: float | None = None  # per request: the execution time of the batch it rode
    average_batch: float | None = None  # the mean size of the batches requests rode
    pending_requests: float | None = None
    concurrency: float | None = None  # mean requests in flight (queued + executing), all replicas
    # (batch size, mean execution ms, executions) per size run in the window, when the source
    # has per-batch-size statistics (Triton's statistics API does; Prometheus metrics do not).
    batch_profile: tuple[tuple[float, float, float], ...] = ()
    sample_age_s: float = 0.0
    # How long ago the arrival rate held: the sample's age plus half the window it was averaged
    # over (a rate over the last minute is the rate of half a minute ago on a steady ramp).
    rate_age_s: float = 0.0
    missing: str | None = None
    # Measured on some of the ready replicas only (e.g. "statistics from 2 of 3 ready pods; ...
    # unreachable"): usable to scale up, never to scale down.
    partial: str | None = None
    # The routers' counts, read every 2 s (policy.surge): fresher than any metrics window.
    router: RouterSignal | None = None
    # The share of the window's requests a faster variant served (policy.variants): the latency
    # is theirs too, the service-time statistics only the primary model's.
    variant_share: float = 0.0
    # Ready replicas on spot capacity (status.spotReplicas), which a reclaim can take; None when
    # not known. Their fall tells the autoscaler that spot takes replicas, and only while some
    # serve on spot does it keep a spare (policy.autoscaling.with_spare).
    spot_ready_replicas: int | None = None

    @staticmethod
    def unavailable(reason: str, ready_replicas: int, sample_age_s: float = math.inf) -> Observation:
        """An observation that says only why there is none."""
        return Observation(
            arrival_rate_rps=None,
            latency_ms=None,
            ready_replicas=ready_replicas,
            sample_age_s=sample_age_s,
            missing=reason,
        )

    @property
    def usable(self) -> bool:
        """A rate, and a latency unless there was no traffic to measure one from."""
        if self.missing is not None or self.arrival_rate_rps is None:
            return False
        return self.latency_ms is not None or self.arrival_rate_rps == 0


def finite_or_none(value: float | None) -> float | None:
    """Metric values that are NaN, infinite or negative carry no information."""
    if value is None or math.isnan(value) or math.isinf(value) or value < 0:
        return None
    return float(value)


@dataclass(frozen=True)
class ScalingTarget:
    """What to observe: one InferenceService's Triton pods and models."""

    namespace: str
    name: str
    models: tuple[str, ...]
    percentile: float
    pod_prefixes: tuple[str, ...]  # the Triton Deployments' names; pods are <prefix>-<hash>-<id>
    ready_replicas: int
    pod_selector: Mapping[str, str]  # labels of its Triton pods (render.names, the one definition)
    latency_query: str | None = None
    rate_query: str | None = None
