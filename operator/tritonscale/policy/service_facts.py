"""What the autoscaler assumes about one service, learnt from the service itself: how long a new
Triton pod takes to become Ready (its cold start) and how large a batch a replica can run.

Pure: pods and Triton model configurations come in as the API's JSON.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

DEFAULT_COLD_START_S = 30.0  # until the service has started a pod of its own
RECENT_STARTS = 20  # the cold start is the median of this many most recent pod starts
DEFAULT_MAX_BATCH = 1  # unknown batching: assume none (more replicas, never fewer than needed)


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def pod_start(pod: Mapping[str, Any]) -> tuple[datetime, float] | None:
    """(created, seconds from creation to Ready) of a pod that is Ready; None otherwise.

    A pod that turned unready and Ready again reports its last transition, which overstates
    its start: the median over recent starts keeps such outliers from mattering."""
    created = _time(pod.get("metadata", {}).get("creationTimestamp"))
    for condition in pod.get("status", {}).get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("status") == "True":
            ready = _time(condition.get("lastTransitionTime"))
            if created is not None and ready is not None and ready >= created:
                return created, (ready - created).total_seconds()
    return None


@dataclass(frozen=True)
class ColdStart:
    seconds: float
    source: str  # where the figure comes from, for status and logs


def recent_starts(starts: Iterable[tuple[datetime, float] | None]) -> tuple[tuple[datetime, float], ...]:
    """The most recent of these pod starts (None for a pod not Ready), oldest first."""
    return tuple(sorted(start for start in starts if start is not None)[-RECENT_STARTS:])


def pod_starts(pods: Sequence[Mapping[str, Any]]) -> tuple[tuple[datetime, float], ...]:
    """(created, seconds to Ready) of the most recent pod starts, oldest first."""
    return recent_starts(pod_start(pod) for pod in pods)


def cold_start(starts: Sequence[tuple[datetime, float]], override_s: int | None) -> ColdStart:
    """The spec's figure when set; else the median of the recent pod starts; else the default."""
    if override_s is not None:
        return ColdStart(float(override_s), "spec.autoscaling.coldStartSeconds")
    if not starts:
        return ColdStart(DEFAULT_COLD_START_S, "default (no Triton pod has become Ready yet)")
    median = statistics.median(seconds for _, seconds in starts)
    return ColdStart(median, f"median of the last {len(starts)} pod starts")


@dataclass(frozen=True)
class Batching:
    max_batch: int  # the largest batch one replica runs from separate requests
    source: str
    from_model_config: bool = False


def batching(configs: Sequence[Mapping[str, Any]] | str) -> Batching:
    """From Triton's model configurations (GET v2/models/<name>/config), or the reason they
    could not be read. Triton batches separate requests only with dynamic batching on, up to
    max_batch_size; with several models the smallest limit holds (the service is as fast as its
    slowest step)."""
    if isinstance(configs, str):
        return Batching(DEFAULT_MAX_BATCH, f"default (model configuration not read: {configs})")
    if not configs:
        return Batching(DEFAULT_MAX_BATCH, "default (no model configuration)")
    limits = []
    for config in configs:
        size = int(config.get("max_batch_size") or 0)
        dynamic = "dynamic_batching" in config or "sequence_batching" in config
        limits.append(size if dynamic and size > 0 else 1)
    limit = min(limits)
    if limit == 1:
        return Batching(1, "model configuration (no dynamic batching)", from_model_config=True)
    return Batching(
        limit, f"model configuration (dynamic batching, max_batch_size {limit})", from_model_config=True
    )


def ready_address(pod: Mapping[str, Any]) -> str | None:
    """The pod's IP address while it is Ready; None otherwise."""
    status = pod.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    return str(status["podIP"]) if ready and status.get("podIP") else None


def ready_pod_addresses(pods: Sequence[Mapping[str, Any]]) -> list[str]:
    """IP addresses of the Ready pods, sorted."""
    return sorted(address for pod in pods if (address := ready_address(pod)) is not None)
