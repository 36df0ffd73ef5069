"""Spot capacity under simulation: a spot pool that reclaims take away, prices, and the three
ways of placing replicas that `tritonscale simulate --spot` compares.

Strategies (the placement runs THE SAME pure functions the operator runs, `policy.placement` and
`policy.spot_fallback`, on the same inputs; no second implementation):
- on-demand: every replica on on-demand capacity (spot disabled).
- spot-static: `split_replicas` (onDemandBase first, then at most maxFraction on spot) and nothing
  else: spot pods that cannot be placed wait until spot comes back.
- spot-fallback: the operator's loop: `split_replicas` of the autoscaler's desired count, then
  `next_fallback` from how many spot pods are unschedulable, how many spot replicas are under an
  interruption notice (the operator sees the node's taint) and how many are ready, then
  `with_stand_ins`: on-demand = base + stand-ins, spot = the split's spot.
The operator reconciles the stack on pod events and rechecks an unsettled stack within 15 s
(`app.UNSETTLED_RECHECK_S`); the simulated operator reconciles after every autoscaler decision and
every `tick_s` (5 s), so stand-ins come 60-65 s after the first spot pod turned unschedulable,
and within 5 s of an interruption notice.

The spot market, and where its numbers come from:
- Interruption frequency per instance and month, in the bands of the AWS Spot Instance Advisor
  ("the rate at which Spot has reclaimed capacity during the trailing month ... < 5%, 5-10%,
  10-15%, 15-20% and >20%", https://aws.amazon.com/ec2/spot/instance-advisor/): each band's
  midpoint (2.5, 7.5, 12.5, 17.5 %), 25 % for >20 %, read as a Poisson rate per instance per
  730-hour month (AWS's billing month).
- Interruptions are correlated: Spot-and-Scoot (Kim et al., arXiv 2604.16457) finds that in over
  92 % of 2,635 interruptions other instances of the same type and zone were interrupted within
  three minutes; in SkyPilot's 4-node V100 preemption traces (github.com/skypilot-org/spot-traces,
  preemption/4-node, 2023) 37-72 % of lost instances went in multi-instance drops. We split the
  band's rate: a share `pool_share` (default 0.5) arrives as pool-wide losses (every spot replica
  gets its notice at once and the pool has no capacity for an outage), the rest as independent
  single-instance reclaims. Each instance still sees the band's rate in all.
- Outages: capacity comes back after a log-normal duration, median 30 min, sigma 1.2 (mean about
  1 h). In SkyPilot's availability traces (V100 p3.2xlarge, 9 zones, 45 days, 2023) the spells
  without spot capacity have medians of 0.4-0.7 h and means of 0.8-3.6 h per zone.
- Notice: 120 s (AWS: "a warning that is issued two minutes before Amazon EC2 stops or terminates
  your Spot Instance") or 30 s (GCP Spot VMs' preemption notice; Azure Spot VMs' eviction notice
  through Scheduled Events). At the notice the node is cordoned and drained (Karpenter's
  interruption handling or aws-node-termination-handler; the eviction API honours
  PodDisruptionBudgets, per Karpenter's interruption-handling design): a replica is evicted when the
  operator's PodDisruptionBudget (minAvailable desired - 1, unhealthyPodEvictionPolicy
  AlwaysAllow) allows, i.e. when at least the desired count is ready (ready stand-ins count);
  otherwise it keeps serving until the notice ends and the node is gone. An evicted or lost replica's pod is replaced at once: with a cold
  start on spot if the pool has capacity, otherwise it waits as an unschedulable pod (the
  trouble the fallback counts). New spot pods during an outage wait likewise. GKE's graceful node
  shutdown does not honour PodDisruptionBudgets, so with 30 s notices blocked replicas here serve
  up to 30 s longer than they would on GKE.
- Capacity is binary, as Spot-and-Scoot's data motivate: while the pool is up any number of spot
  replicas can be placed, during an outage none. One replica per node (a GPU node per Triton pod);
  an interrupted replica's in-flight batch completes (at most max_batch requests, tens of ms).
- Prices: on-demand 1.0 per replica-hour, spot 1 - discount (default 70 %; AWS advertises up to
  90 %, GCP 60-91 %, Azure up to 90 %), billed per second from the pod's start (cold start
  included) until the replica is gone; unschedulable pods cost nothing.

Rates are honest by default (`interruption_scale` 1): at 12.5 % per instance-month a 2 h run of
ten spot replicas expects 0.003 interruptions, which says that spot costs nothing in attainment
almost always, and nothing about the rare hour when the pool goes. `interruption_scale` multiplies
every rate; `STRESSED_SCALE` (8760: a year of the band's interruptions in every hour) makes pool
outages frequent enough to measure: spot is then available 87 % (<5 %) down to 40 % (>20 %) of the
time, the range SkyPilot's V100 traces show (17-90 % per zone), while per-instance reclaims
(0.3-3 per hour) exceed the 0.06-0.46 per hour of SkyPilot's V100 preemption traces: a worst case.

Randomness: pool outages and the candidate times of independent reclaims come from unit-rate
draws scaled by the rate, so every strategy, and every band at the same seed, sees the same
market (a higher band's events are the lower band's, earlier). Independent reclaims are drawn
by thinning: candidates at `max_spot` times the per-instance rate, each accepted with probability
(spot replicas up) / `max_spot`, which is exactly a Poisson process per replica.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import numpy as np

from tritonscale.api.spec import CapacitySpec, SpotSpec
from tritonscale.api.status import SpotFallbackStatus
from tritonscale.policy.placement import Placement, split_replicas
from tritonscale.policy.spot_fallback import next_fallback, with_stand_ins

# AWS Spot Instance Advisor's interruption-frequency bands -> per instance per month.
BANDS: dict[str, float] = {"<5": 0.025, "5-10": 0.075, "10-15": 0.125, "15-20": 0.175, ">20": 0.25}
NOTICES_S = {"aws": 120.0, "gcp/azure": 30.0}
HOURS_PER_MONTH = 730.0
STRESSED_SCALE = 8760.0
STRATEGIES = ("on-demand", "spot-static", "spot-fallback")
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SpotMarket:
    """How the spot pool behaves and what it costs."""

    interruptions_per_month: float = BANDS["10-15"]  # per instance
    interruption_scale: float = 1.0
    notice_s: float = 120.0
    pool_share: float = 0.5
    outage_median_s: float = 1800.0
    outage_sigma: float = 1.2
    discount: float = 0.7
    seed: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.pool_share <= 1.0:
            raise ValueError(f"pool_share must be within [0, 1], got {self.pool_share}")
        if not 0.0 <= self.discount < 1.0:
            raise ValueError(f"discount must be within [0, 1), got {self.discount}")
        if self.interruptions_per_month < 0 or self.interruption_scale < 0 or self.notice_s < 0:
            raise ValueError("interruption rates, their scale and the notice must be >= 0")

    @property
    def spot_price(self) -> float:
        """Per replica-hour, on-demand being 1.0."""
        return 1.0 - self.discount

    @property
    def rate_per_s(self) -> float:
        """Interruptions per spot instance per second, pool-wide losses included."""
        return self.interruptions_per_month * self.interruption_scale / (HOURS_PER_MONTH * 3600.0)

    @property
    def pool_rate_per_s(self) -> float:
        """Pool-wide losses per second (each interrupts every spot instance)."""
        return self.rate_per_s * self.pool_share

    @property
    def independent_rate_per_s(self) -> float:
        """Single-instance reclaims per spot instance per second."""
        return self.rate_per_s * (1.0 - self.pool_share)

    @property
    def outage_mean_s(self) -> float:
        return self.outage_median_s * math.exp(self.outage_sigma**2 / 2.0)

    def timeline(self, duration_s: float, max_spot: int) -> MarketTimeline:
        """The market's events over [0, duration_s), for at most `max_spot` spot replicas."""
        pool_rng = np.random.default_rng([self.seed, 1])
        outages: list[tuple[float, float]] = []
        if self.pool_rate_per_s > 0:
            clock = 0.0
            while True:
                clock += float(pool_rng.exponential()) / self.pool_rate_per_s
                if clock >= duration_s:
                    break
                length = float(pool_rng.lognormal(math.log(self.outage_median_s), self.outage_sigma))
                outages.append((clock, clock + length))
                clock += length
        candidates: list[tuple[float, float]] = []
        candidate_rate = self.independent_rate_per_s * max_spot
        if candidate_rate > 0:
            reclaim_rng = np.random.default_rng([self.seed, 2])
            clock = 0.0
            while True:
                clock += float(reclaim_rng.exponential()) / candidate_rate
                if clock >= duration_s:
                    break
                candidates.append((clock, float(reclaim_rng.uniform())))
        return MarketTimeline(tuple(outages), tuple(candidates), max_spot)

    def describe(self) -> dict[str, float | int | str | None]:
        band = next((name for name, f in BANDS.items() if f == self.interruptions_per_month), None)
        return {
            "band": band,
            "interruptions_per_instance_month": self.interruptions_per_month,
            "interruption_scale": self.interruption_scale,
            "interruptions_per_instance_hour": round(self.rate_per_s * 3600.0, 6),
            "notice_s": self.notice_s,
            "pool_share": self.pool_share,
            "outage_median_s": self.outage_median_s,
            "outage_sigma": self.outage_sigma,
            "discount": self.discount,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class MarketTimeline:
    """Pool outages as (start, end) and independent-reclaim candidates as (time, uniform draw)."""

    outages: tuple[tuple[float, float], ...]
    candidates: tuple[tuple[float, float], ...]
    max_spot: int

    def victim(self, draw: float, up: int) -> int | None:
        """Which of `up` spot replicas (by index) a candidate reclaims, if any (thinning)."""
        if up > self.max_spot:
            raise ValueError(f"{up} spot replicas up, more than the {self.max_spot} the draws allow")
        index = int(draw * self.max_spot)
        return index if index < up else None


class CapacityStrategy(Protocol):
    """Where the autoscaler's desired replicas run, decided as the operator's stack reconciler does."""

    name: str

    def plan(
        self, desired: int, ready_spot: int, unschedulable_spot: int, now_s: float, interrupted_spot: int = 0
    ) -> Placement: ...

    @property
    def stand_ins(self) -> int: ...


class OnDemandOnly:
    name = "on-demand"
    stand_ins = 0

    def plan(
        self, desired: int, ready_spot: int, unschedulable_spot: int, now_s: float, interrupted_spot: int = 0
    ) -> Placement:
        return Placement(on_demand=desired, spot=0)


class StaticSpot:
    """The split alone: spot pods that cannot run just wait."""

    name = "spot-static"
    stand_ins = 0

    def __init__(self, capacity: CapacitySpec) -> None:
        self.capacity = capacity

    def plan(
        self, desired: int, ready_spot: int, unschedulable_spot: int, now_s: float, interrupted_spot: int = 0
    ) -> Placement:
        return split_replicas(desired, self.capacity)


class SpotFallback:
    """The operator's spot fallback: its state lives in the API model, as in status.spotFallback."""

    name = "spot-fallback"

    def __init__(self, capacity: CapacitySpec) -> None:
        self.capacity = capacity
        self.state = SpotFallbackStatus()

    @property
    def stand_ins(self) -> int:
        return self.state.stand_ins

    def plan(
        self, desired: int, ready_spot: int, unschedulable_spot: int, now_s: float, interrupted_spot: int = 0
    ) -> Placement:
        split = split_replicas(desired, self.capacity)
        self.state = next_fallback(
            self.state,
            split.spot,
            ready_spot,
            unschedulable_spot,
            EPOCH + timedelta(seconds=now_s),
            self.capacity.spot.fallback_after_seconds,
            interrupted_spot=interrupted_spot,
        )
        return with_stand_ins(split, self.state)


def spot_capacity(
    on_demand_base: int = 1, max_fraction: float = 0.75, fallback_after_s: int = 60
) -> CapacitySpec:
    """capacity: the API model the operator reads, with spot enabled."""
    return CapacitySpec(
        on_demand_base=on_demand_base,
        spot=SpotSpec(enabled=True, max_fraction=max_fraction, fallback_after_seconds=fallback_after_s),
    )


def make_strategy(name: str, capacity: CapacitySpec) -> CapacityStrategy:
    if name == "on-demand":
        return OnDemandOnly()
    if name == "spot-static":
        return StaticSpot(capacity)
    if name == "spot-fallback":
        return SpotFallback(capacity)
    raise ValueError(f"unknown capacity strategy {name!r}; known: {', '.join(STRATEGIES)}")


@dataclass(frozen=True)
class CapacityPlan:
    """What a simulation run needs to model capacity types: the strategy, the operator's
    capacity spec, the market, and how often the simulated operator reconciles. `timeline`
    replaces the market's random events with given ones (what-if runs and tests)."""

    strategy: str
    capacity: CapacitySpec
    market: SpotMarket
    tick_s: float = 5.0
    timeline: MarketTimeline | None = None


@dataclass(frozen=True)
class CapacityReport:
    """Replica-hours by capacity type, cost and the market's doing in one run."""

    strategy: str
    on_demand_replica_hours: float
    spot_replica_hours: float
    stand_in_replica_hours: float
    unschedulable_pod_hours: float
    spot_price: float
    reclaims: int
    pool_outages: int
    spot_unavailable_s: float
    stand_in_s: float
    # (time, on-demand replicas up, spot replicas up, unschedulable spot pods, stand-ins)
    changes: tuple[tuple[float, int, int, int, int], ...] = field(repr=False)
    outages: tuple[tuple[float, float], ...] = field(repr=False)

    @property
    def cost(self) -> float:
        """In on-demand replica-hours."""
        return self.on_demand_replica_hours + self.spot_replica_hours * self.spot_price

    def summary(self) -> dict[str, float | int | str]:
        return {
            "capacity_strategy": self.strategy,
            "replica_hours_on_demand": round(self.on_demand_replica_hours, 4),
            "replica_hours_spot": round(self.spot_replica_hours, 4),
            "replica_hours_stand_in": round(self.stand_in_replica_hours, 4),
            "unschedulable_pod_hours": round(self.unschedulable_pod_hours, 4),
            "cost": round(self.cost, 4),
            "reclaims": self.reclaims,
            "pool_outages": self.pool_outages,
            "spot_unavailable_s": round(self.spot_unavailable_s, 1),
            "stand_in_s": round(self.stand_in_s, 1),
        }


def integrate(
    changes: tuple[tuple[float, int, int, int, int], ...], duration_s: float
) -> tuple[float, float, float, float, float]:
    """Seconds of (on-demand replicas, spot replicas, unschedulable pods, stand-ins) and the
    time with any stand-in, from the step function `changes` over [0, duration_s)."""
    totals = [0.0, 0.0, 0.0, 0.0]
    with_stand_ins = 0.0
    for index, (time, *counts) in enumerate(changes):
        end = changes[index + 1][0] if index + 1 < len(changes) else duration_s
        length = max(0.0, min(end, duration_s) - time)
        for position, count in enumerate(counts):
            totals[position] += count * length
        if counts[3] > 0:
            with_stand_ins += length
    return totals[0], totals[1], totals[2], totals[3], with_stand_ins
