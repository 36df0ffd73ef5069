"""A request-level discrete-event simulator of Triton replicas behind a least-connections router.

Model, chosen to be fast enough for a day of traffic in seconds:
- every replica is a dynamic-batching server: when it frees up it takes every waiting request
  (up to max_batch) and runs them in tau(b) = base_ms + per_item_ms * b;
- the least-connections router is idealised as one shared FIFO queue in front of the replicas
  (a free replica takes the oldest requests), so requests are served in arrival order;
- a request that waited longer than the queue timeout is dropped (a miss);
- a new replica serves only after a cold start; a removed one finishes its batch and leaves;
- policies act every `period_s` and see metrics as a scraper would: values over a window, as
  of the last scrape, some seconds late;
- with a `CapacityPlan` (sim.spot), replicas run on on-demand or spot capacity, placed as the
  operator places them, and a spot market reclaims them (see sim.spot for that model);
- with `variants`, every replica also serves faster variants of the model next to the primary
  (the operator's variant sidecar): the routers send each request to a variant with the share a
  policy set for it (`route_variants`), and a replica runs one batch of one model at a time,
  taking the model whose oldest waiting request is oldest.

The hot loop is one iteration per batch; per-request arrays are filled in bulk between decisions.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from tritonscale.api.observation import Observation, RouterSample
from tritonscale.policy.placement import Placement
from tritonscale.policy.queueing import ServiceTime
from tritonscale.policy.variants import Variant
from tritonscale.sim.spot import CapacityPlan, CapacityReport, MarketTimeline, integrate, make_strategy


@dataclass(frozen=True)
class SimEnvironment:
    """The simulated replicas and how metrics reach the policies."""

    base_ms: float = 20.0
    per_item_ms: float = 3.0
    max_batch: int = 8
    cold_start_s: float = 30.0
    scrape_interval_s: float = 15.0
    metric_lag_s: float = 5.0
    metric_window_s: float = 30.0
    queue_timeout_s: float = 10.0
    min_replicas: int = 1
    max_replicas: int = 40
    variants: tuple[Variant, ...] = ()  # faster variants every replica serves next to the primary
    # The share of requests the routers send each variant from the start: with a policy that
    # never changes them, a fixed mix (what a user gets from static router weights).
    initial_shares: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.initial_shares and len(self.initial_shares) != len(self.variants):
            raise ValueError(f"initial shares {self.initial_shares} do not fit {len(self.variants)} variants")

    @property
    def service(self) -> ServiceTime:
        """The replicas' tau(b): the same type and formulas the policy's queueing model uses."""
        return ServiceTime(self.base_ms, self.per_item_ms, self.max_batch)

    def batch_s(self, batch: int) -> float:
        return self.service.batch_ms(batch) / 1000.0

    def most_rps(self) -> float:
        """The most one replica serves, at full batches, with the initial shares on the variants."""
        if not self.initial_shares:
            return self.service.capacity_rps()
        shares = (1.0 - sum(self.initial_shares), *self.initial_shares)
        services = (self.service, *(variant.service(self.service) for variant in self.variants))
        return 1.0 / sum(
            share / service.capacity_rps() for share, service in zip(shares, services, strict=True)
        )


class ClusterView(Protocol):
    """What a policy may look at when it decides."""

    @property
    def now(self) -> float: ...

    @property
    def provisioned(self) -> int: ...

    @property
    def ready(self) -> int: ...

    @property
    def spot_ready(self) -> int:
        """Ready replicas on spot capacity (0 without a spot market)."""
        ...

    def observation(self, window_s: float, scrape_s: float, lag_s: float) -> Observation: ...

    def router_sample(self) -> RouterSample: ...

    def served_counts(self) -> tuple[float, ...]:
        """Requests served so far by the primary and each variant, as the replicas count them."""
        ...

    def route_variants(self, shares: tuple[float, ...]) -> None:
        """From now on, the routers send each variant this share of the requests."""
        ...


class SimPolicy(Protocol):
    """An autoscaler under simulation."""

    name: str
    period_s: float

    def step(self, view: ClusterView) -> tuple[int, str]: ...


@dataclass
class Timeline:
    """What happened over time, for reports and plots."""

    decision_times: list[float] = field(default_factory=list)
    desired: list[int] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    provisioned_changes: list[tuple[float, int]] = field(default_factory=list)


@dataclass(frozen=True)
class SimResult:
    """One policy on one workload."""

    policy: str
    requests: int
    dropped: int
    slo_attainment: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    replica_hours: float
    scale_actions: int
    flaps: int
    duration_s: float
    arrivals: np.ndarray = field(repr=False)
    latencies_s: np.ndarray = field(repr=False)
    waits_s: np.ndarray = field(repr=False)  # queued before a batch took it (inf when dropped)
    timeline: Timeline = field(repr=False)
    window_attainment: float = 1.0  # share of 1-minute windows whose percentile met the objective
    flap_replicas: int = 0  # replicas moved by the reversals counted in `flaps`
    capacity: CapacityReport | None = field(default=None, repr=False)
    variants: VariantReport | None = field(default=None, repr=False)

    def summary(self) -> dict[str, float | int | str | None]:
        def finite(value: float) -> float | None:
            return round(value, 3) if math.isfinite(value) else None

        return {
            "policy": self.policy,
            "requests": self.requests,
            "dropped": self.dropped,
            "slo_attainment": round(self.slo_attainment, 6),
            "p50_ms": finite(self.p50_ms),
            "p95_ms": finite(self.p95_ms),
            "p99_ms": finite(self.p99_ms),
            "replica_hours": round(self.replica_hours, 4),
            "window_attainment": round(self.window_attainment, 6),
            "scale_actions": self.scale_actions,
            "flaps": self.flaps,
            "flaps_per_hour": round(self.flaps / (self.duration_s / 3600.0), 3),
            "flap_replicas": self.flap_replicas,
            **(self.capacity.summary() if self.capacity is not None else {}),
            **(self.variants.summary() if self.variants is not None else {}),
        }


@dataclass(frozen=True)
class VariantReport:
    """What the variants served in one run."""

    shares: tuple[float, ...]  # of the requests served, per variant
    served_accuracy: float  # the mean accuracy of the requests served (the primary's is 1)
    worst_window_accuracy: float  # the lowest such mean over a trailing budget window
    window_s: float

    def summary(self) -> dict[str, float]:
        return {
            "variant_share": round(sum(self.shares), 6),
            "served_accuracy": round(self.served_accuracy, 6),
            "worst_window_accuracy": round(self.worst_window_accuracy, 6),
        }


def flap_stats(changes: list[tuple[float, int]], within_s: float = 300.0) -> tuple[int, int]:
    """(reversals, replicas they moved): a reversal is a change against the direction of the
    previous one, within `within_s` of it; its size is how many replicas it moved back (no more
    than the previous change moved: 5 -> 6 -> 1 undoes one replica, the other four are a new
    decision, not a flap)."""
    flaps = moved = 0
    previous: tuple[float, int, int] | None = None  # (time, direction, size)
    for index in range(1, len(changes)):
        time, count = changes[index]
        step = count - changes[index - 1][1]
        direction = 1 if step > 0 else -1
        if previous is not None and direction != previous[1] and time - previous[0] <= within_s:
            flaps += 1
            moved += min(abs(step), previous[2])
        previous = (time, direction, abs(step))
    return flaps, moved


WINDOW_S = 60.0


def window_attainment(
    arrivals: np.ndarray, latencies_s: np.ndarray, slo_s: float, percentile: float, duration_s: float
) -> float:
    """The share of 1-minute windows (by arrival) whose percentile met the objective; drops count
    as infinitely slow, windows without requests as met."""
    if arrivals.size == 0:
        return 1.0
    windows = max(1, math.ceil(duration_s / WINDOW_S))
    index = np.minimum((arrivals // WINDOW_S).astype(np.int64), windows - 1)
    order = np.lexsort((latencies_s, index))
    sorted_index = index[order]
    starts = np.searchsorted(sorted_index, np.arange(windows), side="left")
    ends = np.searchsorted(sorted_index, np.arange(windows), side="right")
    sorted_latencies = latencies_s[order]
    met = 0
    for start, end in zip(starts, ends, strict=True):
        count = end - start
        if count == 0:
            met += 1
            continue
        # inverted-CDF percentile, as everywhere else here
        rank = max(1, math.ceil(percentile / 100.0 * count))
        met += bool(sorted_latencies[start + rank - 1] <= slo_s)
    return met / windows


class Simulation:
    """Runs policies against one arrival sequence; every run sees exactly the same requests."""

    def __init__(
        self,
        arrivals: np.ndarray,
        env: SimEnvironment,
        slo_ms: float,
        percentile: float,
        scrape_phase: float = 0.0,
    ) -> None:
        """`scrape_phase`: where Prometheus's scrapes fall within the scrape interval (a fraction
        of it), the same for every policy of a run; with none, a controller that syncs as often
        as the scrapes (HPA: both 15 s) always read the stalest sample."""
        self.arrivals = np.ascontiguousarray(arrivals, dtype=float)
        self.env = env
        self.slo_s = slo_ms / 1000.0
        self.percentile = percentile
        self.scrape_phase = scrape_phase

    def run(
        self,
        policy: SimPolicy,
        initial_replicas: int,
        duration_s: float,
        capacity: CapacityPlan | None = None,
    ) -> SimResult:
        """One policy's run; with `capacity`, replicas have capacity types and a spot market."""
        if capacity is None:
            if self.env.variants:
                return _VariantRun(self, policy, initial_replicas, duration_s).execute()
            return _Run(self, policy, initial_replicas, duration_s).execute()
        if self.env.variants:
            raise ValueError("the simulator does not combine model variants with a capacity plan")
        return _CapacityRun(self, policy, initial_replicas, duration_s, capacity).execute()


class _Run:
    """The state of one simulation run (also the ClusterView its policy sees)."""

    def __init__(self, sim: Simulation, policy: SimPolicy, initial_replicas: int, duration_s: float) -> None:
        self.sim = sim
        self.env = sim.env
        self.policy = policy
        self.duration_s = duration_s
        self.arrival_list: list[float] = sim.arrivals.tolist()
        count = len(self.arrival_list)
        self.completion = np.full(count, np.nan)
        self.execution = np.full(count, np.nan)
        self.batch = np.zeros(count)
        self.filled = 0
        self.records_lo: list[int] = []
        self.records_size: list[int] = []
        self.records_end: list[float] = []
        self.materialized = 0
        self.model_of: np.ndarray | None = None  # which model served each request (with variants)
        self.heap: list[tuple[float, int]] = []
        self.ready_at: dict[int, float] = {}
        self.free_at: dict[int, float] = {}
        self.removed: set[int] = set()
        self.next_server = 0
        self.head = 0
        self._now = 0.0
        self.timeline = Timeline()
        self._start(initial_replicas)

    def _start(self, initial_replicas: int) -> None:
        self._add(initial_replicas, ready_at=0.0)

    # --- ClusterView ---------------------------------------------------------
    @property
    def now(self) -> float:
        return self._now

    @property
    def provisioned(self) -> int:
        return len(self.ready_at)

    @property
    def ready(self) -> int:
        return sum(1 for t in self.ready_at.values() if t <= self._now)

    @property
    def spot_ready(self) -> int:
        return 0

    def observation(self, window_s: float, scrape_s: float, lag_s: float) -> Observation:
        """Metrics over `window_s` as of the last scrape visible `lag_s` after it was taken."""
        self._materialize()
        visible = self._now - lag_s
        if scrape_s > 0:
            # A scrape's timing is the cluster's (phased); a read at decision time (no lag) is the
            # controller's own.
            offset = self.sim.scrape_phase * scrape_s if lag_s > 0 else 0.0
            visible = math.floor((visible - offset) / scrape_s) * scrape_s + offset
        start = visible - window_s
        if start < 0:
            return Observation.unavailable("not enough history", self.ready, self._now - visible)
        arrivals = self.sim.arrivals
        reach = self.env.queue_timeout_s + self.env.batch_s(self.env.max_batch)
        first = int(np.searchsorted(arrivals, start - reach))
        last = int(np.searchsorted(arrivals, visible, side="right"))
        window_first = int(np.searchsorted(arrivals, start, side="right"))
        rate = (last - window_first) / window_s
        completion = self.completion[first:last]
        with np.errstate(invalid="ignore"):
            done = (completion > start) & (completion <= visible)
        latencies = (completion - arrivals[first:last])[done]
        execution = self.execution[first:last]
        started = completion - execution
        with np.errstate(invalid="ignore"):
            pending = int(np.count_nonzero(np.isnan(completion) | (started > visible)))
        if latencies.size == 0:
            latency = None if rate > 0 else 0.0
            return Observation(
                arrival_rate_rps=rate,
                latency_ms=latency,
                ready_replicas=self.ready,
                pending_requests=float(pending),
                sample_age_s=self._now - visible,
                rate_age_s=self._now - visible + window_s / 2,
                missing="no completed requests in the window" if latency is None else None,
            )
        primary = done
        if self.model_of is not None:
            # The service-time statistics are the primary model's (Triton's per model); the
            # percentile and the rate are every request's.
            primary = done & (self.model_of[first:last] == 0)
        variant_share = 1.0 - np.count_nonzero(primary) / latencies.size
        if not primary.any():
            return Observation(
                arrival_rate_rps=rate,
                latency_ms=1000.0 * float(np.percentile(latencies, self.sim.percentile)),
                ready_replicas=self.ready,
                pending_requests=float(pending),
                concurrency=rate * float(np.mean(latencies)),
                sample_age_s=self._now - visible,
                rate_age_s=self._now - visible + window_s / 2,
                variant_share=variant_share,
            )
        done_execution = execution[primary]
        batches = self.batch[first:last][primary]
        sizes, inverse, counts = np.unique(batches, return_inverse=True, return_counts=True)
        mean_ms = np.bincount(inverse, weights=done_execution) / counts * 1000.0
        profile = tuple(
            (float(b), float(ms), float(n / b)) for b, ms, n in zip(sizes, mean_ms, counts, strict=True)
        )
        return Observation(
            arrival_rate_rps=rate,
            latency_ms=1000.0 * float(np.percentile(latencies, self.sim.percentile)),
            ready_replicas=self.ready,
            mean_compute_ms=1000.0 * float(np.mean(done_execution)),
            average_batch=float(np.mean(batches)),
            pending_requests=float(pending),
            concurrency=rate * float(np.mean(latencies)),
            batch_profile=profile,
            sample_age_s=self._now - visible,
            rate_age_s=self._now - visible + window_s / 2,
            variant_share=variant_share,
        )

    def router_sample(self) -> RouterSample:
        """What the operator reads from the routers now (clients.router): every request routed
        so far, and those in flight (at a replica or waiting; a request that will be dropped
        waits until its queue timeout)."""
        self._materialize()
        arrivals = self.sim.arrivals
        routed = int(np.searchsorted(arrivals, self._now, side="right"))
        reach = self.env.queue_timeout_s + self.env.batch_s(self.env.max_batch)
        first = int(np.searchsorted(arrivals, self._now - reach))
        completion = self.completion[first:routed]
        with np.errstate(invalid="ignore"):
            done = completion <= self._now
            timed_out = np.isinf(completion) & (
                arrivals[first:routed] + self.env.queue_timeout_s <= self._now
            )
        in_flight = int(completion.size - np.count_nonzero(done | timed_out))
        return RouterSample(at=self._now, requests=float(routed), in_flight=float(in_flight))

    def served_counts(self) -> tuple[float, ...]:
        return (float(self.head),)

    def route_variants(self, shares: tuple[float, ...]) -> None:
        if any(shares):
            raise ValueError("this simulated service has no variants")

    # --- replicas ------------------------------------------------------------
    def _add(self, count: int, ready_at: float) -> list[int]:
        added = []
        for _ in range(count):
            server = self.next_server
            self.next_server += 1
            self.ready_at[server] = ready_at
            self.free_at[server] = ready_at
            heapq.heappush(self.heap, (ready_at, server))
            added.append(server)
        return added

    def _remove(self, count: int, among: list[int] | None = None) -> None:
        """Cancel cold starts first, then retire idle replicas, then the ones that free up first."""
        now = self._now

        def removal_order(server: int) -> tuple[bool, float]:
            warming = self.ready_at[server] > now
            return (not warming, -self.ready_at[server] if warming else self.free_at[server])

        order = sorted(self.ready_at if among is None else among, key=removal_order)
        for server in order[:count]:
            self._retire(server)

    def _retire(self, server: int) -> None:
        """The replica takes no more work (its batch in flight completes) and is no longer paid for."""
        del self.ready_at[server]
        self.removed.add(server)

    def _scale_to(self, desired: int) -> None:
        desired = min(max(desired, self.env.min_replicas), self.env.max_replicas)
        current = self.provisioned
        if desired > current:
            self._add(desired - current, ready_at=self._now + self.env.cold_start_s)
        elif desired < current:
            self._remove(current - desired)
        if desired != current:
            self.timeline.provisioned_changes.append((self._now, desired))

    # --- the event loop ------------------------------------------------------
    def _serve_until(self, horizon: float) -> None:
        arrivals = self.arrival_list
        count = len(arrivals)
        heap, removed, free_at = self.heap, self.removed, self.free_at
        timeout = self.env.queue_timeout_s
        max_batch = self.env.max_batch
        batch_s = [self.env.batch_s(b) for b in range(max_batch + 1)]
        lo_list, size_list, end_list = self.records_lo, self.records_size, self.records_end
        head = self.head
        while heap and head < count:
            free, server = heap[0]
            arrival = arrivals[head]
            start = free if free > arrival else arrival
            if start >= horizon:
                break
            heapq.heappop(heap)
            if server in removed:
                continue
            if start - arrival > timeout:
                cut = bisect_left(arrivals, start - timeout, head)
                lo_list.append(head)
                size_list.append(cut - head)
                end_list.append(math.inf)
                head = cut
                if head >= count:
                    heapq.heappush(heap, (free, server))
                    break
                arrival = arrivals[head]
                start = free if free > arrival else arrival
                if start >= horizon:
                    heapq.heappush(heap, (free, server))
                    break
            end_index = bisect_right(arrivals, start, head, min(head + max_batch, count))
            size = end_index - head
            done = start + batch_s[size]
            lo_list.append(head)
            size_list.append(size)
            end_list.append(done)
            head = end_index
            free_at[server] = done
            heapq.heappush(heap, (done, server))
        self.head = head

    def _materialize(self) -> None:
        """Fill the per-request arrays from the batch records made since the last call."""
        records = len(self.records_lo)
        if records == self.materialized:
            return
        sizes = np.array(self.records_size[self.materialized :], dtype=np.int64)
        ends = np.array(self.records_end[self.materialized :])
        first = self.records_lo[self.materialized]
        last = first + int(sizes.sum())
        self.completion[first:last] = np.repeat(ends, sizes)
        dropped = ~np.isfinite(ends)
        batch_sizes = np.where(dropped, 0, sizes).astype(float)
        self.batch[first:last] = np.repeat(batch_sizes, sizes)
        batch_s = np.array([self.env.batch_s(b) for b in range(self.env.max_batch + 1)])
        per_batch = np.where(dropped, np.nan, batch_s[batch_sizes.astype(int)])
        self.execution[first:last] = np.repeat(per_batch, sizes)
        self.materialized = records

    def execute(self) -> SimResult:
        period = self.policy.period_s
        decision = period
        self.timeline.provisioned_changes.append((0.0, self.provisioned))
        while decision < self.duration_s:
            self._serve_until(decision)
            self._now = decision
            desired, reason = self.policy.step(self)
            desired = min(max(desired, self.env.min_replicas), self.env.max_replicas)
            self._scale_to(desired)
            self.timeline.decision_times.append(decision)
            self.timeline.desired.append(desired)
            self.timeline.ready.append(self.ready)
            self.timeline.reasons.append(reason)
            decision += period
        self._now = self.duration_s
        self._serve_until(math.inf)
        self._materialize()
        return self._result()

    def _replica_seconds(self) -> float:
        changes = self.timeline.provisioned_changes
        replica_seconds = 0.0
        for index, (time, replicas) in enumerate(changes):
            end = changes[index + 1][0] if index + 1 < len(changes) else self.duration_s
            replica_seconds += replicas * max(0.0, end - time)
        return replica_seconds

    def _capacity_report(self) -> CapacityReport | None:
        return None

    def _result(self) -> SimResult:
        latencies = self.completion - self.sim.arrivals
        latencies[np.isnan(latencies)] = math.inf
        waits = self.completion - self.execution - self.sim.arrivals
        waits[~np.isfinite(waits)] = math.inf
        requests = latencies.size
        dropped = int(np.count_nonzero(np.isinf(latencies)))
        within = int(np.count_nonzero(latencies <= self.sim.slo_s))
        changes = self.timeline.provisioned_changes
        flaps, flap_replicas = flap_stats(changes)
        capacity = self._capacity_report()
        replica_seconds = (
            self._replica_seconds()
            if capacity is None
            else 3600.0 * (capacity.on_demand_replica_hours + capacity.spot_replica_hours)
        )
        p50, p95, p99 = (
            (1000.0 * float(v) for v in np.percentile(latencies, [50, 95, 99], method="inverted_cdf"))
            if requests
            else (math.nan, math.nan, math.nan)
        )
        return SimResult(
            policy=self.policy.name,
            requests=requests,
            dropped=dropped,
            slo_attainment=within / requests if requests else 1.0,
            p50_ms=p50,
            p95_ms=p95,
            p99_ms=p99,
            replica_hours=replica_seconds / 3600.0,
            scale_actions=len(changes) - 1,
            flaps=flaps,
            duration_s=self.duration_s,
            arrivals=self.sim.arrivals,
            latencies_s=latencies,
            waits_s=waits,
            window_attainment=window_attainment(
                self.sim.arrivals, latencies, self.sim.slo_s, self.sim.percentile, self.duration_s
            ),
            flap_replicas=flap_replicas,
            timeline=self.timeline,
            capacity=capacity,
        )


ACCURACY_WINDOW_S = 3600.0  # the trailing window VariantReport's worst accuracy is taken over


class _VariantRun(_Run):
    """Replicas that serve the primary model and its faster variants (SimEnvironment.variants):
    the routers send each request to a variant with its share at that moment (a weighted choice,
    as HAProxy's server weights make it); a replica runs one batch of one model at a time, the
    model whose oldest waiting request is oldest (two Triton processes sharing an accelerator,
    first come first served)."""

    def __init__(self, sim: Simulation, policy: SimPolicy, initial_replicas: int, duration_s: float) -> None:
        super().__init__(sim, policy, initial_replicas, duration_s)
        count = len(self.arrival_list)
        models = 1 + len(self.env.variants)
        services = (self.env.service, *(variant.service(self.env.service) for variant in self.env.variants))
        self.batch_tables = [
            [service.batch_ms(b) / 1000.0 for b in range(self.env.max_batch + 1)] for service in services
        ]
        self.accuracy = np.array([1.0, *(variant.accuracy for variant in self.env.variants)])
        self.served_by = np.zeros(count, dtype=np.int64)
        self.model_of = self.served_by
        self.shares = np.zeros(models - 1)
        if self.env.initial_shares:
            self.route_variants(self.env.initial_shares)
        self.labelled = 0
        # Per model: the requests routed to it (indices, and arrival times for bisect), in order.
        self.queue_index = [np.empty(count, dtype=np.int64) for _ in range(models)]
        self.queue_length = [0] * models
        self.queue_time: list[list[float]] = [[] for _ in range(models)]
        self.heads = [0] * models
        self.served = [0] * models
        self.records_model: list[int] = []
        self.rng = np.random.default_rng(count)

    # --- ClusterView ---------------------------------------------------------
    def served_counts(self) -> tuple[float, ...]:
        return tuple(float(n) for n in self.served)

    def route_variants(self, shares: tuple[float, ...]) -> None:
        if len(shares) != len(self.shares) or any(share < 0 for share in shares) or sum(shares) > 1 + 1e-9:
            raise ValueError(f"shares {shares} do not fit {len(self.shares)} variants")
        self.shares = np.array(shares, dtype=float)

    # --- routing and serving -------------------------------------------------
    def _label(self, horizon: float) -> None:
        """Route the arrivals before `horizon` with the shares as they are now."""
        arrivals = self.sim.arrivals
        end = (
            int(np.searchsorted(arrivals, horizon, side="left")) if math.isfinite(horizon) else arrivals.size
        )
        if end <= self.labelled:
            return
        start = self.labelled
        draws = self.rng.random(end - start)
        bucket = np.searchsorted(np.cumsum(self.shares), draws, side="right")
        models = np.where(bucket >= self.shares.size, 0, bucket + 1)
        self.served_by[start:end] = models
        for model in range(len(self.queue_index)):
            indices = start + np.flatnonzero(models == model)
            length = self.queue_length[model]
            self.queue_index[model][length : length + indices.size] = indices
            self.queue_length[model] = length + indices.size
            self.queue_time[model].extend(arrivals[indices].tolist())
        self.labelled = end

    def _oldest(self) -> tuple[int, float]:
        best, best_time = -1, math.inf
        for model, times in enumerate(self.queue_time):
            head = self.heads[model]
            if head < len(times) and times[head] < best_time:
                best, best_time = model, times[head]
        return best, best_time

    def _serve_until(self, horizon: float) -> None:
        self._label(horizon)
        heap, removed, free_at = self.heap, self.removed, self.free_at
        timeout, max_batch = self.env.queue_timeout_s, self.env.max_batch
        heads, times, tables = self.heads, self.queue_time, self.batch_tables
        while heap:
            model, oldest = self._oldest()
            if model < 0:
                break
            free, server = heap[0]
            start = free if free > oldest else oldest
            if start >= horizon:
                break
            heapq.heappop(heap)
            if server in removed:
                continue
            if start - oldest > timeout:
                for other, queue in enumerate(times):
                    cut = bisect_left(queue, start - timeout, heads[other])
                    if cut > heads[other]:
                        self._record(other, heads[other], cut - heads[other], math.inf)
                        heads[other] = cut
                model, oldest = self._oldest()
                start = free if free > oldest else oldest
                if model < 0 or start >= horizon:
                    heapq.heappush(heap, (free, server))
                    break
            queue, head = times[model], heads[model]
            end_index = bisect_right(queue, start, head, min(head + max_batch, len(queue)))
            size = end_index - head
            done = start + tables[model][size]
            self._record(model, head, size, done)
            self.served[model] += size
            heads[model] = end_index
            free_at[server] = done
            heapq.heappush(heap, (done, server))

    def _record(self, model: int, head: int, size: int, end: float) -> None:
        self.records_model.append(model)
        self.records_lo.append(head)
        self.records_size.append(size)
        self.records_end.append(end)

    def _materialize(self) -> None:
        records = len(self.records_lo)
        if records == self.materialized:
            return
        new = slice(self.materialized, records)
        models = np.array(self.records_model[new], dtype=np.int64)
        heads = np.array(self.records_lo[new], dtype=np.int64)
        sizes = np.array(self.records_size[new], dtype=np.int64)
        ends = np.array(self.records_end[new])
        for model, table in enumerate(self.batch_tables):
            mine = models == model
            if not mine.any():
                continue
            m_heads, m_sizes, m_ends = heads[mine], sizes[mine], ends[mine]
            offsets = np.cumsum(m_sizes) - m_sizes
            positions = np.arange(int(m_sizes.sum())) + np.repeat(m_heads - offsets, m_sizes)
            indices = self.queue_index[model][positions]
            self.completion[indices] = np.repeat(m_ends, m_sizes)
            dropped = ~np.isfinite(m_ends)
            batch_sizes = np.where(dropped, 0, m_sizes)
            self.batch[indices] = np.repeat(batch_sizes.astype(float), m_sizes)
            per_batch = np.where(dropped, np.nan, np.array(table)[batch_sizes])
            self.execution[indices] = np.repeat(per_batch, m_sizes)
        self.materialized = records

    def _result(self) -> SimResult:
        result = super()._result()
        served = np.isfinite(result.latencies_s)
        accuracy = self.accuracy[self.served_by]
        total = int(np.count_nonzero(served))
        shares = tuple(
            float(np.count_nonzero(served & (self.served_by == model))) / max(total, 1)
            for model in range(1, len(self.accuracy))
        )
        mean = float(accuracy[served].mean()) if total else 1.0
        # The worst trailing window, on a 1-minute grid (the whole run when it is shorter).
        minutes = max(1, math.ceil(self.duration_s / WINDOW_S))
        minute = np.minimum((self.sim.arrivals // WINDOW_S).astype(np.int64), minutes - 1)
        counts = np.bincount(minute[served], minlength=minutes)
        sums = np.bincount(minute[served], weights=accuracy[served], minlength=minutes)
        width = min(minutes, round(ACCURACY_WINDOW_S / WINDOW_S))
        window_counts = np.convolve(counts, np.ones(width), mode="valid")
        window_sums = np.convolve(sums, np.ones(width), mode="valid")
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(window_counts > 0, window_sums / window_counts, 1.0)
        report = VariantReport(shares, mean, float(means.min()), ACCURACY_WINDOW_S)
        return replace(result, variants=report)


ON_DEMAND, SPOT = "on-demand", "spot"


class _CapacityRun(_Run):
    """A run whose replicas have capacity types: the simulated operator places the autoscaler's
    desired count with the plan's strategy, and the spot market notices, evicts and takes spot
    replicas (sim.spot describes the model). Policies see `provisioned` as the count they asked
    for (the operator's status.desiredReplicas) and `ready` as every serving replica."""

    def __init__(
        self, sim: Simulation, policy: SimPolicy, initial_replicas: int, duration_s: float, plan: CapacityPlan
    ) -> None:
        self.plan = plan
        self.strategy = make_strategy(plan.strategy, plan.capacity)
        max_spot = max(sim.env.max_replicas, initial_replicas)
        self.market: MarketTimeline = plan.timeline or plan.market.timeline(duration_s, max_spot)
        self.kind: dict[int, str] = {}
        self.pending = 0  # spot pods the scheduler cannot place
        self.draining: dict[int, float] = {}  # spot replicas under notice -> when their node goes
        self.spot_up = True
        self.target = Placement(on_demand=0, spot=0)
        self.desired_total = initial_replicas
        self.reclaims = 0
        self.pool_outages = 0
        self.changes: list[tuple[float, int, int, int, int]] = []
        super().__init__(sim, policy, initial_replicas, duration_s)

    @property
    def provisioned(self) -> int:
        return self.desired_total

    def _start(self, initial_replicas: int) -> None:
        self.target = self.strategy.plan(initial_replicas, 0, 0, 0.0)
        for server in self._add(self.target.on_demand, ready_at=0.0):
            self.kind[server] = ON_DEMAND
        for server in self._add(self.target.spot, ready_at=0.0):
            self.kind[server] = SPOT
        self._snapshot()

    def _retire(self, server: int) -> None:
        super()._retire(server)
        self.draining.pop(server, None)
        del self.kind[server]

    def _servers(self, kind: str) -> list[int]:
        return [server for server in self.ready_at if self.kind[server] == kind]

    @property
    def spot_ready(self) -> int:
        return sum(1 for server in self._servers(SPOT) if self.ready_at[server] <= self._now)

    # --- the operator ---------------------------------------------------------
    def _reconcile(self) -> None:
        """The stack reconciler: placement (and fallback) from the pools as they are now."""
        self.target = self.strategy.plan(
            self.desired_total, self.spot_ready, self.pending, self._now, interrupted_spot=len(self.draining)
        )
        self._scale_pool(ON_DEMAND, self.target.on_demand)
        self._scale_pool(SPOT, self.target.spot)
        self._drain()

    def _scale_pool(self, kind: str, target: int) -> None:
        """The pool's Deployment at `target` pods: new pods start (spot ones only where the pool
        has capacity), surplus ones go: unschedulable ones first, then as the scale-down order says."""
        servers = self._servers(kind)
        pods = len(servers) + (self.pending if kind == SPOT else 0)
        if target > pods:
            if kind == SPOT and not self.spot_up:
                self.pending += target - pods
                return
            for server in self._add(target - pods, ready_at=self._now + self.env.cold_start_s):
                self.kind[server] = kind
        elif target < pods:
            surplus = pods - target
            if kind == SPOT:
                cancelled = min(surplus, self.pending)
                self.pending -= cancelled
                surplus -= cancelled
            if surplus:
                self._remove(surplus, among=servers)

    # --- the spot market and the node drain ------------------------------------
    def _notice(self, server: int) -> None:
        self.draining[server] = self._now + self.plan.market.notice_s
        self.reclaims += 1

    def _drain(self) -> None:
        """Evict noticed replicas as the PodDisruptionBudget (minAvailable desired - 1, unhealthy
        pods always evictable) allows; each evicted pod is replaced at once. Ready stand-ins count
        as available, so once they are up every noticed replica may go."""
        if not self.draining:
            return
        expected = self.target.desired
        healthy = sum(1 for ready_at in self.ready_at.values() if ready_at <= self._now)
        for server in sorted(self.draining, key=lambda s: (self.draining[s], s)):
            if self.ready_at[server] > self._now:
                self._lose(server)
            elif healthy >= expected:
                self._lose(server)
                healthy -= 1

    def _lose(self, server: int) -> None:
        self._retire(server)
        self._scale_pool(SPOT, self.target.spot)

    def _expire(self) -> None:
        """Nodes whose notice has run out are gone, with whatever still ran on them."""
        for server, gone_at in list(self.draining.items()):
            if gone_at <= self._now:
                self._lose(server)

    def _pool_lost(self) -> None:
        self.spot_up = False
        self.pool_outages += 1
        for server in self._servers(SPOT):
            if server not in self.draining:
                self._notice(server)

    def _pool_back(self) -> None:
        self.spot_up = True
        if self.pending:
            waiting, self.pending = self.pending, 0
            for server in self._add(waiting, ready_at=self._now + self.env.cold_start_s):
                self.kind[server] = SPOT

    def _reclaim_candidate(self, draw: float) -> None:
        if not self.spot_up:
            return  # every spot replica already has its notice
        up = [server for server in self._servers(SPOT) if server not in self.draining]
        victim = self.market.victim(draw, len(up))
        if victim is not None:
            self._notice(up[victim])

    def _snapshot(self) -> None:
        on_demand = sum(1 for server in self.ready_at if self.kind[server] == ON_DEMAND)
        entry = (self._now, on_demand, len(self.ready_at) - on_demand, self.pending, self.strategy.stand_ins)
        if self.changes and self.changes[-1][1:] == entry[1:]:
            return
        if self.changes and self.changes[-1][0] == self._now:
            self.changes[-1] = entry
        else:
            self.changes.append(entry)

    # --- the event loop ------------------------------------------------------
    def execute(self) -> SimResult:
        period, tick = self.policy.period_s, self.plan.tick_s
        next_decision, next_tick = period, tick
        outages, candidates = self.market.outages, self.market.candidates
        next_outage, next_candidate = 0, 0
        outage_end: float | None = None
        self.timeline.provisioned_changes.append((0.0, self.provisioned))
        while True:
            upcoming = [next_decision, next_tick]
            if outage_end is not None:
                upcoming.append(outage_end)
            elif next_outage < len(outages):
                upcoming.append(outages[next_outage][0])
            if next_candidate < len(candidates):
                upcoming.append(candidates[next_candidate][0])
            if self.draining:
                upcoming.append(min(self.draining.values()))
            now = min(upcoming)
            if now >= self.duration_s:
                break
            self._serve_until(now)
            self._now = now
            if outage_end is not None and outage_end <= now:
                self._pool_back()
                outage_end = None
            if outage_end is None and next_outage < len(outages) and outages[next_outage][0] <= now:
                outage_end = outages[next_outage][1]
                next_outage += 1
                self._pool_lost()
            while next_candidate < len(candidates) and candidates[next_candidate][0] <= now:
                self._reclaim_candidate(candidates[next_candidate][1])
                next_candidate += 1
            self._expire()
            self._drain()
            if next_decision <= now:
                desired, reason = self.policy.step(self)
                desired = min(max(desired, self.env.min_replicas), self.env.max_replicas)
                if desired != self.desired_total:
                    self.timeline.provisioned_changes.append((now, desired))
                    self.desired_total = desired
                self._reconcile()
                self.timeline.decision_times.append(now)
                self.timeline.desired.append(desired)
                self.timeline.ready.append(self.ready)
                self.timeline.reasons.append(reason)
                next_decision += period
            if next_tick <= now:
                self._reconcile()
                next_tick += tick
            self._snapshot()
        self._now = self.duration_s
        self._serve_until(math.inf)
        self._materialize()
        return self._result()

    def _capacity_report(self) -> CapacityReport:
        changes = tuple(self.changes)
        on_demand_s, spot_s, pending_s, stand_in_s, with_stand_ins_s = integrate(changes, self.duration_s)
        outages = tuple((start, end) for start, end in self.market.outages if start < self.duration_s)
        unavailable = sum(min(end, self.duration_s) - start for start, end in outages)
        return CapacityReport(
            strategy=self.strategy.name,
            on_demand_replica_hours=on_demand_s / 3600.0,
            spot_replica_hours=spot_s / 3600.0,
            stand_in_replica_hours=stand_in_s / 3600.0,
            unschedulable_pod_hours=pending_s / 3600.0,
            spot_price=self.plan.market.spot_price,
            reclaims=self.reclaims,
            pool_outages=self.pool_outages,
            spot_unavailable_s=unavailable,
            stand_in_s=with_stand_ins_s,
            changes=changes,
            outages=outages,
        )
