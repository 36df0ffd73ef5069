"""The simulator: accounting, replica mechanics, workloads, baselines and the command."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from tritonscale.cli.simulate import simulate
from tritonscale.sim.engine import SimEnvironment, Simulation, flap_stats, window_attainment
from tritonscale.sim.policies import (
    FRESH_FEED,
    POLICIES,
    HpaAverageValuePolicy,
    HpaPercentilePolicy,
    KedaPolicy,
    KpaPolicy,
    Objective,
    RayPolicy,
    capacity_table,
    load_test,
    parse_policy_name,
    prometheus_feed,
    steady_spend_of,
    steady_variant_of,
)
from tritonscale.sim.runner import Scenario, make_policy, prepare, run_scenario
from tritonscale.sim.workloads import BUILT_IN, RateStep, Workload, arrivals, built_in, from_trace

ENV = SimEnvironment()
OBJECTIVE = Objective(target_ms=100.0, percentile=95.0)


class Script:
    """A policy that plays a fixed schedule of (from time, replicas)."""

    name = "script"
    period_s = 5.0

    def __init__(self, schedule: list[tuple[float, int]]) -> None:
        self.schedule = schedule

    def step(self, view: object) -> tuple[int, str]:
        now = view.now  # type: ignore[attr-defined]
        return [n for t, n in self.schedule if t <= now][-1], "scripted"


def poisson(rate: float, duration: float, seed: int = 3) -> np.ndarray:
    return arrivals(Workload("steady", (RateStep(0.0, rate),), duration), seed)


def test_every_request_is_served_or_dropped() -> None:
    times = poisson(400, 120)
    result = Simulation(times, ENV, 100, 95).run(Script([(0, 1)]), 1, 120)
    assert result.requests == times.size
    assert result.dropped > 0, "one replica cannot carry 400 req/s: the queue must time out"
    assert np.count_nonzero(np.isfinite(result.latencies_s)) + result.dropped == result.requests
    assert result.slo_attainment < 0.5


def test_replica_hours_count_provisioned_time() -> None:
    result = Simulation(poisson(50, 600), ENV, 100, 95).run(Script([(0, 2), (300, 4)]), 2, 600)
    assert result.replica_hours == pytest.approx((2 * 300 + 4 * 300) / 3600, rel=0.02)
    assert result.scale_actions == 1


def test_new_replicas_serve_only_after_the_cold_start() -> None:
    env = SimEnvironment(cold_start_s=60.0)
    times = poisson(300, 240)
    result = Simulation(times, env, 100, 95).run(Script([(0, 1), (60, 4)]), 1, 240)
    latencies = result.latencies_s
    before = latencies[(times > 70) & (times < 110)]
    after = latencies[times > 200]
    assert np.median(before) > 1.0, "extra capacity helped before its cold start ended"
    assert np.percentile(after, 95) < 0.1


def test_observations_are_late_by_the_scrape_and_lag() -> None:
    seen = []

    class Peek:
        name = "peek"
        period_s = 10.0

        def step(self, view: object) -> tuple[int, str]:
            seen.append(view.observation(30.0, 15.0, 5.0))  # type: ignore[attr-defined]
            return 2, "peek"

    Simulation(poisson(100, 200), ENV, 100, 95).run(Peek(), 2, 200)
    assert seen[0].missing  # no 30 s of history at t=10
    ages = [o.sample_age_s for o in seen if not o.missing]
    assert min(ages) >= 5.0 and max(ages) < 20.0 + 1e-9
    # A rate over 30 s is the rate of 15 s before its sample was taken.
    assert all(o.rate_age_s == pytest.approx(o.sample_age_s + 15.0) for o in seen if not o.missing)
    rates = [o.arrival_rate_rps for o in seen if not o.missing]
    assert np.mean(rates) == pytest.approx(100, rel=0.1)


def test_flaps_are_reversals_within_five_minutes() -> None:
    assert flap_stats([(0, 2), (10, 4), (20, 2), (400, 4)])[0] == 1
    assert flap_stats([(0, 2), (10, 4), (20, 6), (30, 8)])[0] == 0
    # A reversal moves back at most what the step before it moved.
    assert flap_stats([(0, 5), (60, 6), (120, 1)]) == (1, 1)
    assert flap_stats([(0, 5), (60, 9), (120, 7)]) == (1, 2)
    assert flap_stats([(0, 2), (10, 4), (500, 2)])[0] == 0


@pytest.mark.parametrize("name", BUILT_IN)
def test_built_in_workloads_have_the_requested_mean(name: str) -> None:
    workload = built_in(name, 3600, 200, seed=1)
    times = arrivals(workload, 1)
    assert times.size / 3600 == pytest.approx(workload.mean_rate_rps, rel=0.05)
    assert workload.mean_rate_rps == pytest.approx(200)
    assert np.all(np.diff(times) >= 0)


def test_choppy_swings_revert_within_minutes() -> None:
    """`choppy`'s log-rate around its drifting level spreads by about 0.15 and forgets itself
    over minutes (a 90 s correlation time): swings come back, unlike a trend."""
    duration = 6 * 3600.0
    workload = built_in("choppy", duration, 1000.0, seed=3)
    times = np.arange(5.0, duration, 10.0)
    rates = workload.rate_at(times)
    hourly = np.ones(361) / 361  # the level drifts over the whole duration: an hour's mean is it
    swings = (np.log(rates) - np.convolve(np.log(rates), hourly, mode="same"))[360:-360]
    assert 0.12 < float(np.std(swings)) < 0.18

    def autocorrelation(lag: int) -> float:
        return float(np.corrcoef(swings[:-lag], swings[lag:])[0, 1])

    assert 0.2 < autocorrelation(9) < 0.5  # 90 s: about 1/e
    assert abs(autocorrelation(60)) < 0.15  # 10 min: gone
    assert built_in("choppy", 600.0, 1000.0, seed=3) == built_in("choppy", 600.0, 1000.0, seed=3)


def test_gamma_arrivals_are_burstier_than_poisson() -> None:
    def cv_of(cv: float) -> float:
        gaps = np.diff(arrivals(Workload("w", (RateStep(0, 100, cv),), 600), 1))
        return float(np.std(gaps) / np.mean(gaps))

    assert cv_of(1.0) == pytest.approx(1.0, abs=0.08)
    assert cv_of(2.0) == pytest.approx(2.0, abs=0.25)


def test_trace_files_are_read_and_checked(tmp_path: Path) -> None:
    good = tmp_path / "trace.csv"
    good.write_text("time_s,rate_rps,cv\n0,10,1\n60,50,1.5\n")
    workload = from_trace(good, 120)
    assert [s.rate_rps for s in workload.steps] == [10, 50]
    assert workload.mean_rate_rps == pytest.approx(30)
    bad = tmp_path / "bad.csv"
    bad.write_text("time,rate\n0,1\n")
    with pytest.raises(ValueError, match="header"):
        from_trace(bad)
    decreasing = tmp_path / "decreasing.csv"
    decreasing.write_text("time_s,rate_rps\n0,1\n10,1\n5,2\n")
    with pytest.raises(ValueError, match=r"decreasing\.csv:4: time_s 5 does not come after"):
        from_trace(decreasing)
    late = tmp_path / "late.csv"  # the same rules as `bench --trace`: the first row is at 0
    late.write_text("time_s,rate_rps\n10,1\n")
    with pytest.raises(ValueError, match=r"late\.csv:2: the first row must be at time_s 0"):
        from_trace(late)
    for text, message in (
        ("time_s,rate_rps,cv\n0,1,0\n", r":2: cv 0 must be > 0"),
        ("time_s,rate_rps\n0,-1\n", r":2: rate_rps -1 is not in"),
        ("time_s,rate_rps\n0,x\n", r":2: rate_rps 'x' is not a number"),
        ("time_s,rate_rps\n", "no rows"),
    ):
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            from_trace(bad)
    untimed = from_trace(good)
    assert untimed.name == "trace" and untimed.duration_s == 120  # the last row plus its interval
    assert from_trace(good, 90).duration_s == 90  # its beginning
    with pytest.raises(
        ValueError, match=r"the trace lasts 120 s; a duration of 121 s would run past its end"
    ):
        from_trace(good, 121)


def test_simulate_runs_a_trace_for_its_own_length_and_refuses_to_run_past_it(tmp_path: Path) -> None:
    trace = tmp_path / "short.csv"
    trace.write_text("time_s,rate_rps\n0,20\n300,40\n600,20\n")
    out = tmp_path / "run.json"
    result = CliRunner().invoke(
        simulate, ["--trace", str(trace), "--policy", "static-peak", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    records = json.loads(out.read_text())
    assert len(records) == 1 and records[0]["workload"]["duration_s"] == 900  # a list, even of one
    refused = CliRunner().invoke(simulate, ["--trace", str(trace), "--duration-s", "3600"])
    assert refused.exit_code == 2
    assert "the trace lasts 900 s; a duration of 3600 s would run past its end" in refused.output
    assert "Invalid value for --duration-s" in refused.output  # the flag at fault, not the trace


def test_capacity_grows_with_replicas_and_shrinks_with_burstiness() -> None:
    poisson_table = capacity_table(ENV, OBJECTIVE, up_to_rps=400, seed=1)
    bursty_table = capacity_table(ENV, OBJECTIVE, up_to_rps=400, seed=1, cv=2.0)
    assert all(b > a for a, b in itertools.pairwise(poisson_table[1:]))
    assert bursty_table[2] < poisson_table[2]


def test_baselines_follow_their_rules_on_a_step() -> None:
    times = arrivals(Workload("step", (RateStep(0, 100), RateStep(600, 600)), 1200), 5)
    sim = Simulation(times, ENV, 100, 95)
    feed = prometheus_feed(ENV)
    for policy in (
        HpaAverageValuePolicy(ENV, "rps", 100.0, feed, "hpa-rps"),
        HpaAverageValuePolicy(ENV, "inflight", 3.0, feed, "hpa-inflight"),
        HpaPercentilePolicy(ENV, OBJECTIVE, feed),
        KedaPolicy(ENV, "rps", 100.0, feed, "keda-rps"),
        KpaPolicy(ENV, target_concurrency=8.0),
        KpaPolicy(ENV, target_concurrency=8.0, scale_down_delay_s=300.0, name="kpa-delay"),
        RayPolicy(ENV),
    ):
        result = sim.run(policy, 1, 1200)
        after = [n for t, n in result.timeline.provisioned_changes if t > 600]
        assert after and max(after) >= 3, f"{policy.name} did not react to a 6x step"
    ray = sim.run(RayPolicy(ENV), 1, 1200)
    first_up = next(t for t, n in ray.timeline.provisioned_changes if t > 600)
    assert first_up >= 630, "Ray Serve waits upscale_delay_s (30 s) before scaling up"


def test_oracle_is_cheapest_and_everyone_sees_the_same_requests() -> None:
    scenario = Scenario(built_in("diurnal", 3600, 200, 2), 2, ENV, OBJECTIVE)
    results = {r.policy: r for r in run_scenario(scenario, ["latency", "static-peak", "oracle"])}
    assert len({r.requests for r in results.values()}) == 1
    assert results["oracle"].replica_hours < results["static-peak"].replica_hours
    assert results["oracle"].slo_attainment > 0.98
    assert results["latency"].slo_attainment > 0.98


def test_reactive_reference_sees_the_true_rate_at_once_and_pays_for_headroom() -> None:
    step = Workload("step", (RateStep(0, 100), RateStep(300, 600)), 900)
    scenario = Scenario(step, 4, ENV, OBJECTIVE)
    results = run_scenario(scenario, ["oracle"], reference_headrooms=(1.0, 1.5))
    oracle, exact, roomy = results
    assert (exact.policy, roomy.policy) == ("reactive-x1", "reactive-x1.5")
    first_up = next(t for t, n in exact.timeline.provisioned_changes if t >= 300)
    assert first_up <= 301, "it knows the true rate, so it reacts within one second"
    # Reacting at once still leaves a cold start uncovered; the oracle provisions ahead.
    assert exact.slo_attainment < oracle.slo_attainment
    assert roomy.replica_hours > exact.replica_hours
    assert roomy.slo_attainment >= exact.slo_attainment


def test_simulate_command_writes_json_and_plot(tmp_path: Path) -> None:
    plot, out = tmp_path / "sim.png", tmp_path / "sim.json"
    result = CliRunner().invoke(
        simulate,
        [
            "--policy",
            "latency,hpa-rps@0.6",
            "--workload",
            "smooth",
            "--duration-s",
            "900",
            "--mean-rps",
            "100",
            "--json",
            str(out),
            "--plot",
            str(plot),
        ],
    )
    assert result.exit_code == 0, result.output
    records = json.loads(out.read_text())
    assert [r["policy"] for r in records] == ["latency", "hpa-rps@0.6"]
    for key in (
        "requests",
        "slo_attainment",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "replica_hours",
        "scale_actions",
        "flaps",
        "flap_replicas",
        "window_attainment",
        "environment",
    ):
        assert key in records[0]
    assert records[0]["environment"]["feed"] == "prometheus"
    assert records[0]["environment"]["cold_start_s"] == 30.0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_rejects_unknown_policy() -> None:
    result = CliRunner().invoke(simulate, ["--policy", "magic", "--duration-s", "60"])
    assert result.exit_code == 2 and "unknown policy" in result.output
    assert "Invalid value for --policy" in result.output and result.output.rstrip().endswith("or all")
    knob = CliRunner().invoke(simulate, ["--policy", "hpa-rps@5", "--duration-s", "60"])
    assert (
        knob.exit_code == 2 and "utilisation must be between" in knob.output and "or all" not in knob.output
    )


def test_simulate_refuses_bad_input_before_running_naming_the_flag(tmp_path: Path) -> None:
    """Nothing is simulated (a run can take minutes) when an output cannot be written or a
    value cannot be used: each is a usage error naming its flag, not a traceback."""
    cases = [
        ("--json", ["--json", str(tmp_path / "missing" / "run.json")]),
        ("--json", ["--json", str(tmp_path)]),  # a folder
        ("--json", ["--json", "~/run.json"]),  # written as given: the shell expands ~, not we
        ("--plot", ["--plot", str(tmp_path / "missing" / "run.png")]),
        ("--seed", ["--seed", "-1"]),
        ("--variant", ["--variant", "int8:0.9:nan"]),
    ]
    for flag, arguments in cases:
        result = CliRunner().invoke(simulate, ["--workload", "smooth", "--duration-s", "60", *arguments])
        assert result.exit_code == 2, (flag, result.output)
        assert f"Invalid value for '{flag}'" in result.output or f"Invalid value for {flag}" in result.output
        assert "Traceback" not in result.output and "requests" not in result.output


def test_hpa_on_requests_per_pod_sizes_the_fleet_from_the_total_rate() -> None:
    """600 req/s at a target of 100 req/s per pod: six pods, whatever the fleet was."""
    times = arrivals(Workload("steady", (RateStep(0, 600),), 600), 3)
    sim = Simulation(times, ENV, 100, 95)
    result = sim.run(HpaAverageValuePolicy(ENV, "rps", 100.0, FRESH_FEED, "hpa-rps"), 2, 600)
    assert result.timeline.provisioned_changes[-1][1] in (6, 7)  # 10 % tolerance around 6


def test_the_p95_anti_pattern_multiplies_by_ready_pods() -> None:
    """Pods still starting are not counted: the recommendation is ratio x ready, as HPA does."""
    times = arrivals(Workload("steady", (RateStep(0, 300),), 300), 3)
    sim = Simulation(times, ENV, 100, 95)
    result = sim.run(HpaPercentilePolicy(ENV, OBJECTIVE, FRESH_FEED), 1, 300)
    assert result.timeline.provisioned_changes[0] == (0.0, 1)
    assert len(result.timeline.provisioned_changes) > 1


def test_kpa_scale_down_delay_holds_the_highest_decision_of_the_window() -> None:
    times = arrivals(Workload("drop", (RateStep(0, 600), RateStep(300, 50)), 900), 4)
    sim = Simulation(times, ENV, 100, 95)
    plain = sim.run(KpaPolicy(ENV, target_concurrency=8.0), 4, 900)
    held = sim.run(KpaPolicy(ENV, target_concurrency=8.0, scale_down_delay_s=300.0), 4, 900)
    # Both carry 5 replicas before the drop at 300 s; the delay keeps them for 300 s after the
    # last decision that wanted them.
    first_down = next(t for t, n in plain.timeline.provisioned_changes if t > 300 and n < 5)
    held_down = next((t for t, n in held.timeline.provisioned_changes if t > 300 and n < 5), 900.0)
    assert held_down - first_down >= 240


def test_load_test_measures_what_one_replica_carries() -> None:
    table = capacity_table(ENV, OBJECTIVE, up_to_rps=200, seed=1)
    tested = load_test(ENV, OBJECTIVE, table)
    assert tested.rps == table[1]
    assert 0 < tested.queued < tested.in_flight  # Little's law: waiting is part of the time in flight


def test_policy_names_take_a_utilisation_only_when_tunable() -> None:
    assert parse_policy_name("hpa-rps@0.6") == ("hpa-rps", 0.6)
    assert parse_policy_name("kpa") == ("kpa", 0.7)
    assert parse_policy_name("latency-variants@0.5:0.25") == ("latency-variants", 0.5)
    assert steady_spend_of("latency-variants@0.5:0.25") == 0.25
    assert steady_spend_of("latency-variants@1:0") == 0.0  # given, so named: not the plain run
    assert steady_spend_of("latency-variants@1") is None
    assert steady_variant_of("latency-variants@1:0.25=small") == "small"
    assert steady_variant_of("latency-variants@1:0.25") is None
    assert parse_policy_name("latency-variants@1:0.25=small") == ("latency-variants", 1.0)
    for bad, why in (
        ("latency-variants@1=small", "give both"),
        ("latency-variants@1:0.25=", "name the steady variant"),
        ("latency-variants@1:0=small", "above 0"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_policy_name(bad)
    with pytest.raises(ValueError, match="steady spend"):
        parse_policy_name("latency-variants@1:2")
    with pytest.raises(ValueError, match="steady spend"):
        parse_policy_name("latency-variants@1:x")
    with pytest.raises(ValueError, match="takes no"):
        parse_policy_name("latency@0.5")
    with pytest.raises(ValueError, match="unknown policy"):
        parse_policy_name("hpa")
    with pytest.raises(ValueError, match="must be a number"):
        parse_policy_name("ray-tuned@x")


def test_flaps_count_reversals_and_the_replicas_they_move() -> None:
    changes = [(0.0, 4), (60.0, 8), (120.0, 5), (1000.0, 9), (1100.0, 8)]
    assert flap_stats(changes) == (2, 4)  # 8 -> 5 (3 back) and 9 -> 8 (1 back); 5 -> 9 came late
    assert flap_stats(changes)[0] == 2


def test_window_attainment_counts_minutes_whose_percentile_met_the_objective() -> None:
    arrivals_s = np.array([1.0, 2.0, 3.0, 61.0, 62.0, 63.0, 121.0])
    latencies = np.array([0.05, 0.05, 0.05, 0.05, 0.5, 0.5, np.inf])
    # minute 1: p95 50 ms (met); minute 2: p95 500 ms; minute 3: a drop; minute 4: no request
    assert window_attainment(arrivals_s, latencies, 0.1, 95.0, 240.0) == 0.5


@pytest.mark.parametrize("feed", ["prometheus", "fresh"])
def test_every_baseline_reads_the_runs_feed(feed: str) -> None:
    """Equal information: under either feed every baseline sees its metrics as fresh as the
    others (each keeps its own averaging window, such as Ray's 30 s look-back)."""
    env = SimEnvironment()
    scenario = Scenario(built_in("smooth", 300.0, 200.0, 1), 1, env, Objective(100.0, 95.0), feed=feed)
    prepared = prepare(scenario)
    expected = FRESH_FEED if feed == "fresh" else prometheus_feed(env)
    baselines = [
        name for name in POLICIES if not name.startswith(("latency", "static", "oracle", "reactive"))
    ]
    assert "ray" in baselines and "ray-tuned" in baselines
    for name in baselines:
        policy = make_policy(name, scenario, prepared.needed, prepared.table, prepared.tested)
        assert (policy.feed.scrape_s, policy.feed.lag_s) == (expected.scrape_s, expected.lag_s), name


class _AgeProbe:
    """Holds 2 replicas and notes the age of the sample each 15 s sync reads."""

    name = "probe"
    period_s = 15.0

    def __init__(self, lag_s: float) -> None:
        self.lag_s = lag_s
        self.ages: list[float] = []

    def step(self, view: Any) -> tuple[int, str]:
        observation = view.observation(30.0, 15.0, self.lag_s)
        if observation.usable:
            self.ages.append(observation.sample_age_s)
        return 2, "hold"


def test_the_scrape_phase_sets_how_stale_a_synced_sample_is_but_not_a_read_at_decision_time() -> None:
    """HPA syncs every 15 s, as often as Prometheus scrapes: with the scrapes at the syncs'
    phase it always read the stalest sample (15 s old, each new one visible 5 s after a sync).
    Where they fall is the cluster's."""
    times = np.sort(np.random.default_rng(1).uniform(0.0, 300.0, 3000))
    ages = {}
    for phase in (0.0, 0.5):
        probe = _AgeProbe(lag_s=5.0)
        Simulation(times, SimEnvironment(), 100.0, 95.0, scrape_phase=phase).run(probe, 2, 300.0)
        ages[phase] = set(probe.ages)
    assert ages == {0.0: {15.0}, 0.5: {7.5}}
    fresh = _AgeProbe(lag_s=0.0)
    Simulation(times, SimEnvironment(), 100.0, 95.0, scrape_phase=0.5).run(fresh, 2, 300.0)
    assert set(fresh.ages) == {0.0}
