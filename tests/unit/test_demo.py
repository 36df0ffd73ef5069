"""`tritonscale demo`'s pure parts: the scenario's schedule and the summary's arithmetic (the
demo itself runs for real in tests/e2e/test_demo.py)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tritonscale.bench.schedule import parse_schedule
from tritonscale.bench.stats import RunSamples
from tritonscale.cli import main
from tritonscale_sandbox.demo import (
    Sample,
    Scenario,
    Timeline,
    client_windows,
    run_steps,
    summarise,
    surge_recovery,
    write_plot,
)


@pytest.mark.parametrize("scenario", [Scenario(), Scenario.short()])
def test_the_schedule_surges_by_the_factor_between_its_steps(scenario: Scenario) -> None:
    schedule = parse_schedule(scenario.schedule())
    assert schedule.rate_at(scenario.surge_at_s - 1) == scenario.base_rps
    assert schedule.rate_at(scenario.surge_at_s + 1) == scenario.base_rps * scenario.surge_factor
    assert schedule.rate_at(scenario.surge_end_at_s + 1) == scenario.base_rps
    times = [at for at, _ in scenario.steps()]
    assert times == sorted(times) and times[-1] < scenario.end_s
    assert scenario.spot_notice_at_s < scenario.spot_reclaim_at_s < scenario.spot_return_at_s


def test_the_full_scenario_fits_in_six_minutes() -> None:
    assert Scenario().warmup_s + Scenario().end_s <= 360


def _samples() -> RunSamples:
    samples = RunSamples("open", duration_s=40.0)
    # 0-20 s: fast; 20-30 s: slow (over the objective); 30-40 s: fast again; one error at 25 s.
    for offset in range(40):
        samples.offsets.append(float(offset))
        samples.latencies.append(0.250 if 20 <= offset < 30 else 0.050)
    samples.error_offsets.append(25.0)
    return samples


def _timeline() -> Timeline:
    timeline = Timeline(
        steps=[(20.0, "surge x4"), (24.0, "spot nodes reclaimed")],
        started_at=datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC),
    )
    # A warm-up sample (before the scenario's clock starts) counts for nothing.
    timeline.samples.append(Sample(-5.0, 9, 9, 0, None, None))
    # Two ready replicas (3 asked for from 10 s to 15 s), then the spot one lost at 24 s (still
    # counted ready in the sample at 24 s, before the agent saw its node go) and back, on
    # on-demand, at 27 s.
    for second in range(41):
        lost = 24 <= second < 27
        timeline.samples.append(
            Sample(
                at_s=float(second),
                desired=3 if 10 <= second < 15 else 2,
                on_demand_ready=1 if lost or second < 27 else 2,
                spot_ready=0 if second >= 25 else 1,
                operator_p95_ms=None,
                operator_rate_rps=None,
            )
        )
    return timeline


def test_the_summary_counts_errors_as_misses_and_times_the_recoveries() -> None:
    scenario = Scenario(surge_at_s=20.0, surge_end_at_s=40.0)
    events = [
        {"reason": "ScaledUp", "message": "1 -> 2", "lastTimestamp": "2026-01-01T00:00:00Z"},  # warm-up
        {"reason": "ScaledUp", "message": "2 -> 3", "count": 2, "lastTimestamp": "2026-01-01T00:00:01Z"},
        {"reason": "ScaledDown", "message": "3 -> 2", "lastTimestamp": "2026-01-01T00:00:02Z"},
        {"reason": "Reconciled", "message": "ignored"},
    ]

    summary = summarise(_samples(), _timeline(), scenario, events)

    assert summary.requests == 41 and summary.errors == 1
    assert summary.attainment == pytest.approx(30 / 41)  # 10 slow requests and the error miss
    # Two replicas for 25 s (the stale sample at 24 s counts the lost one), one for 2 s, two for 13 s.
    assert summary.replica_seconds == pytest.approx(2 * 25 + 1 * 2 + 2 * 13)
    # Not 0 s: the sample at 24 s still counted the lost spot pod as ready.
    assert summary.fallback_s == pytest.approx(3.0)
    # Over in the window ending at 30 s, under in the one ending at 40 s: under for good 10 s in.
    assert summary.surge_breached
    assert summary.surge_recovered_s == pytest.approx(10.0)
    # From the timeline's desired count (2 -> 3 -> 2), not from events' counts.
    assert (summary.scale_ups, summary.scale_downs) == (1, 1)
    assert summary.decisions == ["ScaledUp: 2 -> 3", "ScaledDown: 3 -> 2"]
    assert summary.failed_steps == []


def test_a_surge_never_over_the_objective_recovers_at_once_and_one_over_to_its_end_never() -> None:
    scenario = Scenario(surge_at_s=20.0, surge_end_at_s=40.0)
    assert surge_recovery([(30.0, 80.0, 1.0), (40.0, 90.0, 1.0)], scenario) == (False, 0.0)
    assert surge_recovery([(30.0, 80.0, 1.0), (40.0, 190.0, 1.0)], scenario) == (True, None)
    # Over before the surge does not count.
    assert surge_recovery([(20.0, 300.0, 1.0), (30.0, 80.0, 1.0), (40.0, 90.0, 1.0)], scenario) == (
        False,
        0.0,
    )


def test_a_failing_step_is_recorded_and_the_next_steps_still_run() -> None:
    done: list[str] = []

    class Env:
        def interrupt_spot(self) -> None:
            raise RuntimeError("API server unreachable")

        def reclaim_spot(self) -> None:
            done.append("reclaim")

        def return_spot(self) -> None:
            done.append("return")

    scenario = Scenario(
        surge_at_s=0.0,
        spot_notice_at_s=0.01,
        spot_reclaim_at_s=0.02,
        surge_end_at_s=0.03,
        spot_return_at_s=0.04,
    )
    timeline = Timeline()
    run_steps(Env(), scenario, timeline, time.monotonic(), threading.Event())  # type: ignore[arg-type]

    assert done == ["reclaim", "return"]
    assert len(timeline.steps) == 5
    assert len(timeline.failed_steps) == 1
    assert timeline.failed_steps[0].startswith("spot interruption notice at t=0s: RuntimeError: API server")


def test_client_windows_put_errors_in_the_percentile() -> None:
    windows = client_windows(_samples(), 10.0)
    assert [end for end, _, _ in windows] == [10.0, 20.0, 30.0, 40.0]
    assert windows[0][1] == pytest.approx(50.0)
    assert windows[2][1] == float("inf")  # the error is the slowest request of its window
    assert windows[2][2] == pytest.approx(1.1)


def test_the_timeline_plot_is_written(tmp_path: Path) -> None:
    path = tmp_path / "demo.png"
    write_plot(_samples(), _timeline(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_cli_finds_demo_through_the_sandbox_entry_point() -> None:
    command = main.get_command(None, "demo")  # type: ignore[arg-type]
    assert command is not None and command.name == "demo"


def test_without_the_sandbox_demo_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    import click

    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **_: [])
    with pytest.raises(click.ClickException, match=r"needs the sandbox \(pip install -e ./sandbox"):
        main.get_command(None, "demo")  # type: ignore[arg-type]
