"""Cold start and batching learnt from the service's own pods and Triton model configuration."""

from __future__ import annotations

from typing import Any

import pytest

from tritonscale.policy.service_facts import (
    DEFAULT_COLD_START_S,
    RECENT_STARTS,
    batching,
    cold_start,
    pod_start,
    pod_starts,
    ready_pod_addresses,
)


def pod(
    created: str, ready_at: str | None, ip: str | None = "10.0.0.1", ready: str = "True"
) -> dict[str, Any]:
    conditions = (
        [] if ready_at is None else [{"type": "Ready", "status": ready, "lastTransitionTime": ready_at}]
    )
    status: dict[str, Any] = {"conditions": conditions}
    if ip is not None:
        status["podIP"] = ip
    return {"metadata": {"creationTimestamp": created}, "status": status}


def test_a_pod_start_is_creation_to_ready() -> None:
    started = pod_start(pod("2026-01-01T00:00:00Z", "2026-01-01T00:00:42Z"))
    assert started is not None and started[1] == 42.0
    assert pod_start(pod("2026-01-01T00:00:00Z", None)) is None  # not ready yet
    assert pod_start(pod("2026-01-01T00:00:00Z", "2026-01-01T00:00:42Z", ready="False")) is None
    assert pod_start({"metadata": {}, "status": {}}) is None


def test_the_cold_start_is_the_median_of_recent_starts_and_the_spec_wins() -> None:
    pods = [
        pod(f"2026-01-01T00:{m:02d}:00Z", f"2026-01-01T00:{m:02d}:{s:02d}Z")
        for m, s in [(1, 20), (2, 50), (3, 30)]
    ]
    learnt = cold_start(pod_starts(pods), None)
    assert learnt.seconds == 30.0 and "median of the last 3 pod starts" in learnt.source
    assert cold_start(pod_starts(pods), 90).seconds == 90.0
    assert cold_start((), None).seconds == DEFAULT_COLD_START_S


def test_only_the_most_recent_starts_count() -> None:
    old = [
        pod(f"2026-01-01T00:00:{i:02d}Z", f"2026-01-01T00:10:{i:02d}Z") for i in range(RECENT_STARTS)
    ]  # 600 s
    new = [
        pod(f"2026-01-02T00:00:{i:02d}Z", f"2026-01-02T00:00:{i + 5:02d}Z") for i in range(RECENT_STARTS)
    ]  # 5 s
    assert cold_start(pod_starts(old + new), None).seconds == 5.0


@pytest.mark.parametrize(
    ("configs", "limit", "from_config"),
    [
        ([{"max_batch_size": 16, "dynamic_batching": {}}], 16, True),
        ([{"max_batch_size": 16}], 1, True),  # batching only within a client's own request
        ([{"max_batch_size": 0, "dynamic_batching": {}}], 1, True),
        (
            [{"max_batch_size": 16, "dynamic_batching": {}}, {"max_batch_size": 4, "dynamic_batching": {}}],
            4,
            True,
        ),
        ("10.0.0.1 connection refused", 1, False),
    ],
)
def test_batching_comes_from_the_model_configuration(configs: Any, limit: int, from_config: bool) -> None:
    found = batching(configs)
    assert found.max_batch == limit and found.from_model_config == from_config
    if not from_config:
        assert "connection refused" in found.source


def test_ready_pod_addresses() -> None:
    pods = [
        pod("2026-01-01T00:00:00Z", "2026-01-01T00:00:10Z", "10.0.0.2"),
        pod("2026-01-01T00:00:00Z", None, "10.0.0.3"),
        pod("2026-01-01T00:00:00Z", "2026-01-01T00:00:10Z", None),
        pod("2026-01-01T00:00:00Z", "2026-01-01T00:00:10Z", "10.0.0.1"),
    ]
    assert ready_pod_addresses(pods) == ["10.0.0.1", "10.0.0.2"]
