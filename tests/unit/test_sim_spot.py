"""The simulator's spot capacity: the market's rates, reclaims, pool outages, the operator's
fallback run by the simulator, cost accounting by capacity type, and `simulate --spot`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tritonscale.cli.simulate import simulate
from tritonscale.policy.spot_fallback import return_window_s
from tritonscale.sim.engine import SimEnvironment, SimResult, Simulation
from tritonscale.sim.policies import LatencyPolicy, Objective
from tritonscale.sim.runner import Scenario, run_scenario, run_spot_scenario
from tritonscale.sim.spot import (
    BANDS,
    HOURS_PER_MONTH,
    STRATEGIES,
    CapacityPlan,
    MarketTimeline,
    SpotMarket,
    spot_capacity,
)
from tritonscale.sim.workloads import RateStep, Workload, arrivals, built_in

ENV = SimEnvironment(cold_start_s=30.0, max_replicas=20)
CAPACITY = spot_capacity(on_demand_base=1, max_fraction=0.75, fallback_after_s=60)  # 8 -> 2 + 6 spot
OBJECTIVE = Objective(target_ms=100.0, percentile=95.0)


class Hold:
    """A policy that keeps asking for the same count."""

    name = "hold"
    period_s = 10.0

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas

    def step(self, view: object) -> tuple[int, str]:
        return self.replicas, "hold"


def light(duration_s: float, rate: float = 20.0) -> np.ndarray:
    return arrivals(Workload("light", (RateStep(0.0, rate),), duration_s), 7)


def run_held(
    strategy: str, market: SpotMarket, duration_s: float, timeline: MarketTimeline | None = None
) -> SimResult:
    plan = CapacityPlan(strategy, CAPACITY, market, timeline=timeline)
    return Simulation(light(duration_s), ENV, 100, 95).run(Hold(8), 8, duration_s, capacity=plan)


def state_at(result: SimResult, time: float) -> tuple[int, int, int, int]:
    """(on-demand up, spot up, unschedulable spot pods, stand-ins) in effect at `time`."""
    assert result.capacity is not None
    return next(c for c in reversed(result.capacity.changes) if c[0] <= time)[1:]


def test_bands_are_midpoints_per_instance_month_split_between_pool_losses_and_single_reclaims() -> None:
    assert BANDS == {"<5": 0.025, "5-10": 0.075, "10-15": 0.125, "15-20": 0.175, ">20": 0.25}
    market = SpotMarket(BANDS["10-15"], interruption_scale=2.0, pool_share=0.25)
    assert market.rate_per_s == pytest.approx(0.125 * 2.0 / (HOURS_PER_MONTH * 3600.0))
    assert market.pool_rate_per_s + market.independent_rate_per_s == pytest.approx(market.rate_per_s)
    assert market.pool_rate_per_s == pytest.approx(0.25 * market.rate_per_s)
    assert market.spot_price == pytest.approx(0.3)
    assert market.outage_mean_s == pytest.approx(1800.0 * math.exp(0.72))
    with pytest.raises(ValueError, match="pool_share"):
        SpotMarket(pool_share=1.5)


def test_market_events_come_at_the_configured_rates() -> None:
    """A long seed-fixed draw: exact counts, compared with the Poisson expectations (a fixed seed
    cannot fail by chance; the tolerances are 3 standard deviations)."""
    day = 86400.0
    market = SpotMarket(BANDS["10-15"], interruption_scale=100_000.0, outage_median_s=60.0, seed=3)
    timeline = market.timeline(day, max_spot=10)
    assert len(timeline.candidates) == 2113
    expected = market.independent_rate_per_s * 10 * day  # candidates at max_spot x the rate
    assert abs(len(timeline.candidates) - expected) < 3 * math.sqrt(expected)
    # Pool losses form an alternating renewal process: a gap at the pool rate, then an outage.
    cycle = 1.0 / market.pool_rate_per_s + market.outage_mean_s
    assert len(timeline.outages) == 176
    assert abs(len(timeline.outages) - day / cycle) < 3 * math.sqrt(day / cycle)
    assert all(a[1] <= b[0] for a, b in zip(timeline.outages, timeline.outages[1:], strict=False))
    # The same seed at a higher band: the same events, earlier (common random numbers).
    higher = SpotMarket(BANDS[">20"], interruption_scale=100_000.0, outage_median_s=60.0, seed=3)
    assert len(higher.timeline(day, max_spot=10).candidates) > len(timeline.candidates)


def test_reclaims_happen_at_the_configured_rate() -> None:
    """Six spot replicas for ten minutes, single reclaims only and no notice: every accepted
    candidate interrupts one of the six, so reclaims are Poisson with mean rate x 6 x T."""
    duration = 600.0
    market = SpotMarket(BANDS["10-15"], interruption_scale=1_000_000.0, notice_s=0.0, pool_share=0.0, seed=11)
    result = run_held("spot-static", market, duration)
    assert result.capacity is not None
    expected = market.independent_rate_per_s * 6 * duration
    assert expected == pytest.approx(171.23, abs=0.01)
    assert result.capacity.reclaims == 181
    assert abs(result.capacity.reclaims - expected) < 3 * math.sqrt(expected)
    # Each reclaimed replica was replaced at once: six spot pods all along, none unschedulable.
    assert all(c[2] == 6 and c[3] == 0 for c in result.capacity.changes)
    assert result.capacity.pool_outages == 0


def test_a_pool_outage_makes_spot_unschedulable_and_stand_ins_come_then_leave() -> None:
    outage = MarketTimeline(outages=((300.0, 900.0),), candidates=(), max_spot=20)
    market = SpotMarket(notice_s=30.0, discount=0.7)
    fallback = run_held("spot-fallback", market, 1500.0, outage)
    static = run_held("spot-static", market, 1500.0, outage)
    assert fallback.capacity is not None and static.capacity is not None
    assert fallback.capacity.reclaims == 6 and fallback.capacity.pool_outages == 1

    # At the outage every spot node gets its notice and is cordoned; the PodDisruptionBudget lets
    # one replica go at once (its pod cannot be placed); the rest serve until the 30 s notice runs
    # out. The operator sees the notice: six on-demand stand-ins at once, without waiting for
    # fallbackAfterSeconds (the pending pod counts too, as the drained pod's replacement).
    assert state_at(fallback, 299) == (2, 6, 0, 0)
    assert state_at(fallback, 300) == (8, 5, 1, 6)
    assert state_at(fallback, 330) == (8, 0, 6, 6)
    # Spot is back at 900, ready after its cold start (930); the stand-ins leave half at a time,
    # one return window (2 x fallbackAfterSeconds, 120 s) apart.
    window = return_window_s(60)
    assert state_at(fallback, 900) == (8, 6, 0, 6)
    assert state_at(fallback, 930 + window - 1) == (8, 6, 0, 6)
    assert state_at(fallback, 930 + window) == (5, 6, 0, 3)
    assert state_at(fallback, 930 + 2 * window) == (3, 6, 0, 1)
    assert state_at(fallback, 930 + 3 * window) == (2, 6, 0, 0)
    assert fallback.capacity.stand_in_s == pytest.approx(930 + 3 * window - 300)

    # The static mix waits for spot: six pods unschedulable for the whole outage, no stand-in.
    assert state_at(static, 600) == (2, 0, 6, 0)
    assert static.capacity.stand_in_s == 0
    assert static.capacity.unschedulable_pod_hours == pytest.approx((1 * 30 + 6 * 570) / 3600)
    assert static.capacity.spot_unavailable_s == pytest.approx(600)


def test_cost_accounting_by_capacity_type() -> None:
    outage = MarketTimeline(outages=((300.0, 900.0),), candidates=(), max_spot=20)
    market = SpotMarket(notice_s=30.0, discount=0.8)
    fallback = run_held("spot-fallback", market, 1500.0, outage)
    report = fallback.capacity
    assert report is not None
    # Spot: six until 300, five until the notice ends at 330, none until 900, six after.
    spot_s = 6 * 300 + 5 * 30 + 6 * 600
    # On-demand: the base two all along, plus the stand-ins from the notice at 300: six until
    # 1050, three until 1170, one until 1290.
    stand_in_s = 6 * 750 + 3 * 120 + 1 * 120
    assert report.spot_replica_hours == pytest.approx(spot_s / 3600)
    assert report.on_demand_replica_hours == pytest.approx((2 * 1500 + stand_in_s) / 3600)
    assert report.stand_in_replica_hours == pytest.approx(stand_in_s / 3600)
    assert report.cost == pytest.approx(report.on_demand_replica_hours + 0.2 * report.spot_replica_hours)
    assert fallback.replica_hours == pytest.approx(report.on_demand_replica_hours + report.spot_replica_hours)
    assert fallback.summary()["cost"] == pytest.approx(report.cost, abs=1e-4)
    # Without any event: 2 on-demand and 6 spot replicas, all along.
    calm = run_held("spot-static", SpotMarket(interruption_scale=0.0, discount=0.8), 600.0)
    assert calm.capacity is not None
    assert calm.capacity.on_demand_replica_hours == pytest.approx(2 * 600 / 3600)
    assert calm.capacity.spot_replica_hours == pytest.approx(6 * 600 / 3600)
    assert calm.capacity.cost == pytest.approx((2 + 6 * 0.2) * 600 / 3600)


def test_on_demand_only_costs_one_and_is_the_classic_run() -> None:
    scenario = Scenario(built_in("bursty", 900, 150, 2), 2, ENV, OBJECTIVE)
    classic = run_scenario(scenario, ["latency"])[0]
    market = SpotMarket(BANDS[">20"], interruption_scale=100_000.0, seed=2)
    results = {
        r.capacity.strategy: r
        for r in run_spot_scenario(scenario, ["latency"], CAPACITY, market)
        if r.capacity
    }
    assert list(results) == list(STRATEGIES)
    on_demand = results["on-demand"]
    assert on_demand.capacity is not None
    assert np.array_equal(on_demand.latencies_s, classic.latencies_s)
    assert on_demand.replica_hours == pytest.approx(classic.replica_hours)
    assert on_demand.capacity.spot_replica_hours == 0
    assert on_demand.capacity.cost == pytest.approx(classic.replica_hours)  # 1.0 per replica-hour
    for strategy in ("spot-static", "spot-fallback"):
        report = results[strategy].capacity
        assert report is not None and report.reclaims > 0
    static, fallback = results["spot-static"], results["spot-fallback"]
    assert static.capacity is not None and static.capacity.cost < on_demand.capacity.cost
    # Spot is gone for 765 of the 900 s here: the fallback pays on-demand for its stand-ins and,
    # spot having taken replicas, for a spare (0.55 against 0.49 on-demand only), and holds the
    # objective where the static mix does not (97.5 % against 83 %).
    assert fallback.slo_attainment > static.slo_attainment + 0.1


def test_static_and_fallback_are_one_run_when_the_market_is_calm() -> None:
    scenario = Scenario(built_in("smooth", 600, 150, 1), 1, ENV, OBJECTIVE)
    calm = SpotMarket(interruption_scale=0.0)
    static, fallback = run_spot_scenario(
        scenario, ["latency"], CAPACITY, calm, ("spot-static", "spot-fallback")
    )
    assert np.array_equal(static.latencies_s, fallback.latencies_s)
    assert static.capacity is not None and fallback.capacity is not None
    assert static.capacity.changes == fallback.capacity.changes


def test_policies_see_the_count_they_asked_for_and_every_serving_replica() -> None:
    """provisioned is the autoscaler's own count (status.desiredReplicas); stand-ins serve."""
    seen: list[tuple[float, int, int]] = []

    class Peek(Hold):
        def step(self, view: object) -> tuple[int, str]:
            seen.append((view.now, view.provisioned, view.ready))  # type: ignore[attr-defined]
            return 8, "peek"

    outage = MarketTimeline(outages=((100.0, 10_000.0),), candidates=(), max_spot=20)
    plan = CapacityPlan("spot-fallback", CAPACITY, SpotMarket(notice_s=30.0), timeline=outage)
    Simulation(light(400), ENV, 100, 95).run(Peek(8), 8, 400, capacity=plan)
    by_time = {t: (provisioned, ready) for t, provisioned, ready in seen}
    assert by_time[90] == (8, 8)
    assert by_time[110] == (8, 7)  # the notice at 100: the drain evicted one replica at once
    # Six stand-ins asked for at the notice are ready at 130, when the spot nodes go.
    assert by_time[130] == (8, 8)
    assert by_time[200] == (8, 8)


def test_latency_policy_keeps_running_through_an_outage() -> None:
    times = arrivals(Workload("steady", (RateStep(0.0, 400.0),), 900), 3)
    outage = MarketTimeline(outages=((300.0, 600.0),), candidates=(), max_spot=20)
    plan = CapacityPlan("spot-fallback", CAPACITY, SpotMarket(notice_s=120.0), timeline=outage)
    result = Simulation(times, ENV, 100, 95).run(LatencyPolicy(ENV, OBJECTIVE), 4, 900, capacity=plan)
    assert result.capacity is not None
    assert result.capacity.stand_in_s > 0
    assert result.slo_attainment > 0.9


def test_simulate_spot_writes_rows_per_strategy_json_and_plot(tmp_path: Path) -> None:
    plot, out = tmp_path / "spot.png", tmp_path / "spot.json"
    result = CliRunner().invoke(
        simulate,
        [
            "--spot",
            "--workload",
            "smooth",
            "--duration-s",
            "600",
            "--mean-rps",
            "150",
            "--spot-band",
            ">20",
            "--interruption-scale",
            "200000",
            "--spot-notice-s",
            "30",
            "--spot-discount",
            "0.8",
            "--json",
            str(out),
            "--plot",
            str(plot),
        ],
    )
    assert result.exit_code == 0, result.output
    for strategy in STRATEGIES:
        assert strategy in result.output
    records = json.loads(out.read_text())
    assert [r["capacity_strategy"] for r in records] == list(STRATEGIES)
    for key in (
        "slo_attainment",
        "replica_hours_on_demand",
        "replica_hours_spot",
        "replica_hours_stand_in",
        "cost",
        "cost_vs_on_demand_only",
        "attainment_vs_on_demand_only_points",
        "reclaims",
        "pool_outages",
        "stand_in_s",
        "spot_market",
        "capacity",
    ):
        assert key in records[2], key
    on_demand, static, fallback = records
    assert on_demand["cost_vs_on_demand_only"] == 1.0 and on_demand["replica_hours_spot"] == 0
    assert on_demand["cost"] == pytest.approx(on_demand["replica_hours"], abs=1e-3)
    assert fallback["cost"] == pytest.approx(
        fallback["replica_hours_on_demand"] + 0.2 * fallback["replica_hours_spot"], abs=1e-3
    )
    assert fallback["spot_market"]["band"] == ">20" and fallback["spot_market"]["notice_s"] == 30
    assert fallback["spot_market"]["interruption_scale"] == 200000
    assert fallback["capacity"] == {"on_demand_base": 1, "spot_max_fraction": 0.75, "fallback_after_s": 60}
    assert static["reclaims"] > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_spot_options_need_spot_and_the_default_run_is_unchanged(tmp_path: Path) -> None:
    stray = CliRunner().invoke(simulate, ["--spot-band", "5-10", "--duration-s", "60"])
    assert stray.exit_code == 2 and "--spot-band only applies with --spot" in stray.output
    out = tmp_path / "plain.json"
    plain = CliRunner().invoke(
        simulate, ["--workload", "smooth", "--duration-s", "300", "--mean-rps", "100", "--json", str(out)]
    )
    assert plain.exit_code == 0, plain.output
    [record] = json.loads(out.read_text())
    assert "capacity_strategy" not in record and "cost" not in record


def test_once_spot_took_a_replica_the_latency_policy_keeps_a_spare_that_rides_out_the_next() -> None:
    """900 req/s is six replicas' work at the objective, at ~82 % of their full-batch capacity:
    a reclaimed one leaves five past saturation until its replacement serves. After the first
    reclaim (at 300 s) the operator's policy keeps a spare (N+1; spot_from_replicas, as
    settings_from_spec derives it), so the second (at 900 s) costs nothing."""
    times = arrivals(Workload("steady", (RateStep(0.0, 900.0),), 1500), 3)
    reclaims = MarketTimeline(outages=(), candidates=((300.0, 0.0), (900.0, 0.0)), max_spot=20)
    within: dict[int | None, tuple[float, float]] = {}
    for spot_from in (None, 2):
        plan = CapacityPlan("spot-fallback", CAPACITY, SpotMarket(notice_s=120.0), timeline=reclaims)
        policy = LatencyPolicy(ENV, OBJECTIVE, spot_from_replicas=spot_from)
        result = Simulation(times, ENV, 100, 95).run(policy, 6, 1500, capacity=plan)
        assert result.capacity is not None and result.capacity.reclaims == 2

        def after(at: float, result: SimResult = result) -> float:
            window = (result.arrivals >= at) & (result.arrivals < at + 120.0)
            return float(np.mean(result.latencies_s[window] <= 0.1))

        within[spot_from] = (after(300.0), after(900.0))
        after_first = [count for at, count in result.timeline.provisioned_changes if at >= 300.0]
        # Without the spare the fleet goes back to six once the first reclaim's overload is
        # over; with it, it stays at seven at least.
        assert min(after_first) == (6 if spot_from is None else 7)
    assert within[None][0] < 0.97 and within[2][0] < 0.97  # the first reclaim: no spare yet
    assert within[None][1] < 0.97
    assert within[2][1] > 0.99
