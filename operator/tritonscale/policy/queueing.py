"""A batching-aware queueing model of Triton replicas behind a least-connections router.

Each replica runs dynamic batches whose execution time grows with the batch size,
tau(b) = tau0 + alpha * b, and the router spreads requests like one shared queue in front of
c replicas. With lambda the arrival rate, lambda_r = lambda / c per replica, p the percentile as
a fraction and S1 = tau(1):

- Unbatched regime (lambda_r * S1 < 1): a request waits only when every replica is busy.
  The wait tail is Erlang-C's, P(W > t) = C(c, lambda * S1) * exp(-(c / S1 - lambda) * t), halved
  because service times are near-deterministic rather than exponential (the usual M/D/c
  correction), and capped at p * S1, since a waiting request joins the next batch of the first
  replica to free up:

      W_p = min(0.5 * ln(C / (1 - p)) / (c / S1 - lambda), p * S1)      (0 when C <= 1 - p)
      T_p = S1 + W_p

- Batching regime (lambda_r * S1 >= 1): every replica is always busy and settles at the batch
  size that keeps up, b = lambda_r * tau0 / (1 - lambda_r * alpha). A request waits for the
  running batch (uniform residual), rides the next one, and near saturation also queues behind
  other batches; with rho = lambda_r / mu_max the utilisation of the full-batch capacity
  mu_max = max_batch / tau(max_batch), the queueing term pools over replicas like Erlang-C:

      T_p = tau(b) * (1 + p) + 0.3 * tau(b) * C(c, lambda / mu_max) / (c * (1 - rho))

  (infinite once b would exceed max_batch; 0.3 was fitted to the simulator).

The two meet at lambda_r * S1 = 1. Checked against the simulator (tests/unit/test_queueing.py):
within about 20 % where it matters; the autoscaler corrects the remaining bias with the
observed percentile (feedback), so it needs the right shape more than exact values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

QUEUEING_WEIGHT = 0.3


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability that an arrival has to wait, M/M/c with `offered_load` = lambda / mu."""
    if offered_load <= 0:
        return 0.0
    if offered_load >= servers:
        return 1.0
    blocking = 1.0  # Erlang B, computed by the stable recurrence
    for k in range(1, servers + 1):
        blocking = offered_load * blocking / (k + offered_load * blocking)
    return servers * blocking / (servers - offered_load * (1 - blocking))


@dataclass(frozen=True)
class ServiceTime:
    """tau(b) = base_ms + per_item_ms * b, for batches of up to max_batch requests."""

    base_ms: float
    per_item_ms: float = 0.0
    max_batch: int = 1

    def batch_ms(self, batch: float) -> float:
        return self.base_ms + self.per_item_ms * batch

    def capacity_rps(self) -> float:
        """Most requests per second one replica completes (full batches back to back)."""
        return 1000.0 * self.max_batch / self.batch_ms(self.max_batch)


def predicted_latency_ms(replicas: int, rate_rps: float, service: ServiceTime, percentile: float) -> float:
    """Latency at `percentile` (e.g. 95) for `replicas` replicas at `rate_rps`; inf if overloaded."""
    if replicas <= 0:
        return math.inf
    single_s = service.batch_ms(1) / 1000.0
    if rate_rps <= 0:
        return 1000.0 * single_s
    tail = 1.0 - percentile / 100.0
    per_replica = rate_rps / replicas
    if per_replica * single_s < 1.0:
        wait_probability = erlang_c(replicas, rate_rps * single_s)
        wait_s = 0.0
        if wait_probability > tail:
            wait_s = 0.5 * math.log(wait_probability / tail) / (replicas / single_s - rate_rps)
        return 1000.0 * (single_s + min(wait_s, (1.0 - tail) * single_s))
    base_s, per_item_s = service.base_ms / 1000.0, service.per_item_ms / 1000.0
    if per_replica * per_item_s >= 1.0:
        return math.inf
    batch = max(1.0, per_replica * base_s / (1.0 - per_replica * per_item_s))
    if batch > service.max_batch:
        return math.inf
    execution_ms = service.batch_ms(batch)
    full_rps = service.capacity_rps()
    utilisation = per_replica / full_rps
    if utilisation >= 1.0:
        return math.inf
    queueing = erlang_c(replicas, rate_rps / full_rps) / (replicas * (1.0 - utilisation))
    return execution_ms * (2.0 - tail + QUEUEING_WEIGHT * queueing)


def mixed_latency_ms(replicas: int, loads: Sequence[tuple[float, ServiceTime]], percentile: float) -> float:
    """Latency at `percentile` of all requests when each replica serves several models, one batch
    of one model at a time (a model and its faster variants sharing an accelerator): `loads` is
    (rate, tau(b)) per model. With one model loaded, `predicted_latency_ms` exactly.

    Each model batches only its own requests, so splitting a load between models shrinks every
    batch: a model's batch holds what arrived since its last one, a cycle C of the batches of
    all models ago. C is the fixed point of C = sum_m work_m(lambda_m * C), where a model with n
    requests a cycle does n batches of one below one request, tau_m(n) up to max_batch, and n /
    max_batch full batches beyond. (Costing a variant's request at 1/speedup of the primary's
    at the primary's batch size instead predicted 128 ms where the simulator measured 151 ms,
    and this 147 ms: one replica, tau 40 + 2b ms, max batch 2, 60 req/s, 55 % on a 4x faster
    variant, the real variants loop's replica.) A request waits for the next batch (uniform over
    the cycle, or over the spacing of the batches of a model that runs several full ones a
    cycle), then rides its model's; the queueing term is `predicted_latency_ms`'s over that
    wait, with the utilisation of full batches. The wait is the same for every model: the oldest
    request goes first, so once one model runs several batches a cycle, another's request is
    taken as soon as it is older than that model's waiting ones, not a whole cycle later.
    (Charging a whole cycle predicted 424 ms where the simulator measures 78 ms: 1300 req/s on
    4 replicas of tau 20 + 3b ms, batches up to 8, 95 % on a 2x variant; this, 75 ms. Charging
    it to the model with 6 % of the load there, 313 ms against 82 ms; this, 69 ms.) The
    percentile of the mix is the slowest model's at the tail its share leaves (the faster
    models' requests taken as within it).
    """
    loaded = [(rate, service) for rate, service in loads if rate > 0]
    if len(loaded) <= 1:
        rate, service = loaded[0] if loaded else (0.0, loads[0][1])
        return predicted_latency_ms(replicas, rate, service, percentile)
    if replicas <= 0:
        return math.inf
    tail = 1.0 - percentile / 100.0
    total = sum(rate for rate, _ in loaded)
    per_replica = [rate / replicas for rate, _ in loaded]
    services = [service for _, service in loaded]
    utilisation = full_batch_utilisation(replicas, loaded)
    if utilisation >= 1.0:
        return math.inf
    unbatched = (
        sum(rate * s.batch_ms(1) / 1000.0 for rate, s in zip(per_replica, services, strict=True)) < 1.0
    )
    if unbatched:
        # As predicted_latency_ms below one batch per arrival, with the mix's mean service time.
        mean_s = sum(rate * s.batch_ms(1) for rate, s in loaded) / total / 1000.0
        wait_probability = erlang_c(replicas, total * mean_s)
        wait_s = 0.0
        if wait_probability > tail:
            wait_s = 0.5 * math.log(wait_probability / tail) / (replicas / mean_s - total)

        def latency(model: int, tail_left: float) -> float:
            return services[model].batch_ms(1) + 1000.0 * min(wait_s, (1.0 - tail_left) * mean_s)

    else:
        cycle_s = _cycle_s(per_replica, services)
        batches = [
            min(s.max_batch, max(1.0, rate * cycle_s)) for rate, s in zip(per_replica, services, strict=True)
        ]
        queueing = erlang_c(replicas, replicas * utilisation) / (replicas * (1.0 - utilisation))

        # A model with more than a full batch a cycle runs several, interleaved with the others'
        # (the oldest request goes first): every request waits for the next of those.
        wait_ms = min(
            1000.0 * cycle_s / max(1.0, rate * cycle_s / s.max_batch)
            for rate, s in zip(per_replica, services, strict=True)
        )

        def latency(model: int, tail_left: float) -> float:
            return wait_ms * (1.0 - tail_left + QUEUEING_WEIGHT * queueing) + services[model].batch_ms(
                batches[model]
            )

    slowest_first = sorted(range(len(loaded)), key=lambda model: -latency(model, tail))
    left = tail
    for model in slowest_first:
        share = loaded[model][0] / total
        if share > left:
            return latency(model, left / share)
        left -= share
    return latency(slowest_first[-1], tail)


def full_batch_utilisation(replicas: int, loads: Sequence[tuple[float, ServiceTime]]) -> float:
    """The share of each replica's time its accelerator is busy when every model runs full
    batches (the least it can be): at or beyond 1 the replicas cannot keep up."""
    if replicas <= 0:
        return math.inf
    return sum(rate / replicas * s.batch_ms(s.max_batch) / s.max_batch / 1000.0 for rate, s in loads)


def _cycle_s(per_replica: Sequence[float], services: Sequence[ServiceTime]) -> float:
    """The batching cycle of `mixed_latency_ms` (seconds), by bisection: the work of a cycle
    grows with it more slowly than it (the loads are within full-batch capacity), and faster
    than it for a short one (they are beyond one batch per arrival); the longest where the two
    meet (at exactly one batch per arrival every cycle up to one request a model meets them)."""

    def work_s(cycle: float) -> float:
        total = 0.0
        for rate, service in zip(per_replica, services, strict=True):
            arrived = rate * cycle
            if arrived <= 1.0:
                total += arrived * service.batch_ms(1) / 1000.0
            elif arrived <= service.max_batch:
                total += service.batch_ms(arrived) / 1000.0
            else:
                total += arrived / service.max_batch * service.batch_ms(service.max_batch) / 1000.0
        return total

    low, high = 0.0, max(service.batch_ms(service.max_batch) for service in services) / 1000.0
    while work_s(high) > high:
        high *= 2.0
    for _ in range(50):
        middle = (low + high) / 2.0
        low, high = (middle, high) if work_s(middle) >= middle else (low, middle)
    return high


def fewest_replicas(meets: Callable[[int], bool], most: int, within: int | None = None) -> int:
    """Smallest count in 1..most for which `meets` holds (it must hold for every larger count
    once it holds); `most + 1` when not even `most` is enough. When `meets(within)` holds, the
    search stays in 1..within: the same answer where `meets` keeps holding once it holds, and
    where it does not (a latency correction learnt at a light load a replica can fail counts far
    above the need) the fewest below a count known to do."""
    high = within if within is not None and 1 <= within < most and meets(within) else most
    if high == most and not meets(most):
        return most + 1
    low = 1
    while low < high:
        middle = (low + high) // 2
        if meets(middle):
            high = middle
        else:
            low = middle + 1
    return low
