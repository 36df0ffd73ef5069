"""The load generator's pure parts: schedules, arrivals and summaries."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

from tritonscale.bench.report import write_request_log
from tritonscale.bench.schedule import ScheduleError, load_trace, parse_schedule, poisson_arrivals
from tritonscale.bench.stats import RunSamples, summarize_run, summarize_runs


def test_step_schedule_holds_each_rate() -> None:
    schedule = parse_schedule("step:10@0,40@30,10@110")
    assert [schedule.rate_at(t) for t in (0, 29.9, 30, 109, 110, 500)] == [10, 10, 40, 40, 10, 10]
    assert schedule.mean(120) == pytest.approx((10 * 30 + 40 * 80 + 10 * 10) / 120)
    assert schedule.peak(120) == 40


def test_ramp_changes_linearly() -> None:
    schedule = parse_schedule("ramp:100:1000:60")
    assert schedule.rate_at(30) == pytest.approx(550)
    assert schedule.rate_at(90) == 1000
    assert schedule.mean(60) == pytest.approx(550, rel=1e-6)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ramp:1:2", "ramp wants"),
        ("step:10@5", "start at time 0"),
        ("step:10@0,20@0", "must increase"),
        ("step:ten@0", "not a number"),
        ("poisson:5", "unknown schedule"),
        ("constant:-1", ">= 0"),
    ],
)
def test_bad_schedules_say_why(spec: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse_schedule(spec)


def test_trace_files(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("time_s,rate_rps\n0,5\n10,50\n")
    schedule = load_trace(trace)
    assert schedule.rate_at(0) == 5 and schedule.rate_at(9.9) == 5 and schedule.rate_at(12) == 50
    assert schedule.describe() == "trace trace.csv"
    trace.write_text("t,r\n0,5\n")
    with pytest.raises(ScheduleError, match="header"):
        load_trace(trace)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("time_s,rate_rps\n0,5\n10,ten\n", r"trace\.csv:3: rate_rps 'ten' is not a number"),
        ("time_s,rate_rps\n5,5\n", r"trace\.csv:2: the first row must be at time_s 0"),
        ("time_s,rate_rps\n0,5\n10,6\n10,7\n", r"trace\.csv:4: time_s 10 does not come after"),
        ("time_s,rate_rps\n0,-5\n", r"trace\.csv:2: rate_rps -5 is not in"),
        ("time_s,rate_rps\n", "no rows"),
        # The bench's arrivals are Poisson: a trace asking for other variation is refused...
        ("time_s,rate_rps,cv\n0,5,1\n10,5,2\n", r"trace\.csv:3: cv 2: the bench sends Poisson"),
    ],
)
def test_bad_trace_files_say_which_line(tmp_path: Path, text: str, message: str) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text(text)
    with pytest.raises(ScheduleError, match=message):
        load_trace(trace)


def test_trace_with_a_cv_of_one_is_poisson(tmp_path: Path) -> None:
    # ...but one whose cv is 1 throughout is what the bench does anyway.
    trace = tmp_path / "trace.csv"
    trace.write_text("time_s,rate_rps,cv\n0,5,1\n10,50,\n")
    assert load_trace(trace).points == ((0.0, 5.0), (10.0, 50.0))
    with pytest.raises(ScheduleError, match="cannot read trace"):
        load_trace(tmp_path / "missing.csv")


def test_poisson_arrivals_follow_the_schedule() -> None:
    schedule = parse_schedule("step:100@0,400@50")
    times = list(poisson_arrivals(schedule, 100.0, random.Random(3)))
    first = sum(1 for t in times if t < 50) / 50
    second = sum(1 for t in times if t >= 50) / 50
    assert first == pytest.approx(100, rel=0.1) and second == pytest.approx(400, rel=0.1)
    assert times == sorted(times) and all(0 <= t < 100 for t in times)


def test_summaries_count_errors_and_order_percentiles() -> None:
    samples = RunSamples(mode="open", duration_s=10.0, scheduled=110)
    for index in range(100):
        samples.add_success(index * 0.1, 0.010 + index * 0.0001, 0.009)
        samples.send_lags.append(0.0001)
    for _ in range(10):
        samples.add_error(5.0, "timeout", "deadline", 30.0)
        samples.send_lags.append(0.0001)
    run = summarize_run(samples)
    assert run["requests"] == 110 and run["successes"] == 100 and run["errors"] == {"timeout": 10}
    latency = run["latency_ms"]
    assert latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert run["latency_with_errors_ms"]["max"] == pytest.approx(30000)
    assert run["schedule"]["fell_behind"] is False
    both = summarize_runs([run, run])
    assert both["runs"] == 2 and both["error_count"] == 20


def test_the_request_log_has_every_request_in_order(tmp_path: Path) -> None:
    samples = RunSamples(mode="open", duration_s=10.0)
    samples.add_success(2.0, 0.050, 0.040)
    samples.add_error(1.0, "timeout", "deadline", 30.0)
    samples.add_success(0.5, 0.010, 0.009)
    path = tmp_path / "requests.csv"
    write_request_log([samples, samples], path)
    rows = list(csv.DictReader(path.open()))
    assert [(r["run"], r["due_s"], r["latency_ms"], r["error"]) for r in rows[:3]] == [
        ("1", "0.500000", "10.000", ""),
        ("1", "1.000000", "", "timeout"),
        ("1", "2.000000", "50.000", ""),
    ]
    assert len(rows) == 6 and rows[2]["service_latency_ms"] == "40.000"
