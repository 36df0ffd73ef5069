"""The load generator: open loop (Poisson arrivals following a rate schedule) or closed loop
(N clients, each sending its next request when the previous one is answered), on asyncio.

Open loop never waits for answers before sending: each request is due at its scheduled time
and its latency is measured from that time, so a slow server cannot slow the arrivals down
and hide its own latency (coordinated omission). When the generator itself cannot keep up
(sends later than scheduled, or more than `max_inflight` requests outstanding) the run says
so (see `RunSamples.send_lags`, `dropped`).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from tritonscale.bench.inputs import ModelSpec, model_spec
from tritonscale.bench.schedule import RateSchedule, constant_rate, poisson_arrivals
from tritonscale.bench.stats import RunSamples
from tritonscale.clients.triton import (
    InferenceClient,
    InferenceFailed,
    InferenceRequest,
    Protocol,
    inference_client,
)

BATCH_WINDOW_S = 0.00005
"""The pacer hands requests due within this window to the event loop together."""
GIL_SWITCH_INTERVAL_S = 0.0002
DRAIN_GRACE_S = 1.0


@dataclass(frozen=True)
class Target:
    """Where to send what."""

    protocol: Protocol
    endpoint: str
    model: str
    timeout_s: float = 30.0
    connections: int = 64


@dataclass(frozen=True)
class LoadPlan:
    """How much load, for how long. Open loop needs `schedule`, closed loop `concurrency`."""

    mode: Literal["open", "closed"]
    duration_s: float
    warmup_s: float = 0.0
    schedule: RateSchedule | None = None
    concurrency: int = 0
    max_inflight: int = 10_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.duration_s <= 0 or self.warmup_s < 0:
            raise ValueError("duration must be > 0 and warmup >= 0")
        if self.mode == "open" and self.schedule is None:
            raise ValueError("an open-loop plan needs a schedule")
        if self.mode == "closed" and self.concurrency < 1:
            raise ValueError("a closed-loop plan needs concurrency >= 1")
        if self.max_inflight < 1:
            raise ValueError("max_inflight must be >= 1")


@dataclass
class LiveCounters:
    """Progress of the current run, for a progress display (updated as requests finish)."""

    phase: str = "starting"
    elapsed_s: float = 0.0
    total_s: float = 0.0
    completed: int = 0
    errors: int = 0
    inflight: int = 0


class _Recorder:
    """Records one request's outcome into the samples when it belongs to the measured window."""

    def __init__(self, samples: RunSamples, live: LiveCounters, warmup_s: float) -> None:
        self.samples = samples
        self.live = live
        self.warmup_s = warmup_s

    async def call(
        self,
        loop: asyncio.AbstractEventLoop,
        client: InferenceClient,
        request: InferenceRequest,
        due: float,
        offset: float,
    ) -> None:
        """Send now; `due` is the loop time it was due at, `offset` its time since the run began."""
        live = self.live
        live.inflight += 1
        sent = loop.time()
        if self.samples.mode == "open" and offset >= self.warmup_s:
            self.samples.send_lags.append(sent - due)
        try:
            await client.infer(request)
        except InferenceFailed as failure:
            live.errors += 1
            if offset >= self.warmup_s:
                self.samples.add_error(
                    offset - self.warmup_s, failure.kind, failure.message, loop.time() - due
                )
        else:
            done = loop.time()
            live.completed += 1
            if offset >= self.warmup_s:
                self.samples.add_success(offset - self.warmup_s, done - due, done - sent)
        finally:
            live.inflight -= 1


async def _drain(tasks: set[asyncio.Task[None]], timeout_s: float) -> int:
    """Wait for outstanding requests (bounded); cancel what is left and return how many."""
    if not tasks:
        return 0
    _, pending = await asyncio.wait(set(tasks), timeout=timeout_s)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
    return len(pending)


def _record_unfinished(samples: RunSamples, count: int, timeout_s: float) -> None:
    for _ in range(count):
        samples.add_error(
            samples.duration_s, "unfinished", f"no answer {timeout_s:.0f}s after the run ended", timeout_s
        )


def _arrivals(plan: LoadPlan) -> Iterator[float]:
    """Offsets from the run's start: warm-up at the schedule's first rate, then the schedule."""
    assert plan.schedule is not None
    rng = random.Random(plan.seed)
    warmup = poisson_arrivals(constant_rate(plan.schedule.rate_at(0.0)), plan.warmup_s, rng)
    measured = (plan.warmup_s + t for t in poisson_arrivals(plan.schedule, plan.duration_s, rng))
    return itertools.chain(warmup, measured)


def _pace(
    loop: asyncio.AbstractEventLoop,
    arrivals: Iterator[float],
    start: float,
    launch: Callable[[list[float]], None],
    stop: threading.Event,
) -> None:
    """Pacer thread: sleep until each arrival is due, then hand it to the event loop.

    A thread, because the event loop's timers fire up to a millisecond late (epoll's
    resolution) while a sleeping thread wakes within tens of microseconds; handing over wakes
    the loop at once. Offsets due within BATCH_WINDOW_S of each other go together.
    """
    batch: list[float] = []
    for offset in arrivals:
        delay = start + offset - time.monotonic()
        if delay > BATCH_WINDOW_S:
            if batch:
                loop.call_soon_threadsafe(launch, batch)
                batch = []
            if stop.wait(delay):
                return
        batch.append(offset)
    if batch:
        loop.call_soon_threadsafe(launch, batch)


async def _open_loop(
    client: InferenceClient,
    next_request: Callable[[], InferenceRequest],
    plan: LoadPlan,
    target: Target,
    live: LiveCounters,
) -> RunSamples:
    loop = asyncio.get_running_loop()
    samples = RunSamples("open", plan.duration_s)
    recorder = _Recorder(samples, live, plan.warmup_s)
    tasks: set[asyncio.Task[None]] = set()
    start = loop.time() + 0.01  # loop.time() is time.monotonic(), the pacer's clock

    def launch(offsets: list[float]) -> None:
        for offset in offsets:
            measured = offset >= plan.warmup_s
            live.elapsed_s = offset
            live.phase = "measuring" if measured else "warm-up"
            if measured:
                samples.scheduled += 1
            if len(tasks) >= plan.max_inflight:
                samples.dropped += measured
                continue
            task = loop.create_task(recorder.call(loop, client, next_request(), start + offset, offset))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    stop = threading.Event()
    # A waking pacer waits for the GIL up to the switch interval (5 ms by default) while the
    # loop runs Python code: shorten it for the run.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    pacer = asyncio.ensure_future(asyncio.to_thread(_pace, loop, _arrivals(plan), start, launch, stop))
    try:
        await asyncio.shield(pacer)
    finally:
        stop.set()  # also when cancelled: the thread must not outlive the run
        await asyncio.wait({pacer})
        sys.setswitchinterval(switch_interval)
    remaining = start + plan.warmup_s + plan.duration_s - loop.time()
    if remaining > 0:
        await asyncio.sleep(remaining)
    live.phase = "draining"
    _record_unfinished(samples, await _drain(tasks, target.timeout_s + DRAIN_GRACE_S), target.timeout_s)
    return samples


async def _closed_loop(
    client: InferenceClient,
    next_request: Callable[[], InferenceRequest],
    plan: LoadPlan,
    target: Target,
    live: LiveCounters,
) -> RunSamples:
    loop = asyncio.get_running_loop()
    samples = RunSamples("closed", plan.duration_s)
    recorder = _Recorder(samples, live, plan.warmup_s)
    start = loop.time()
    end = start + plan.warmup_s + plan.duration_s

    async def user() -> None:
        while (now := loop.time()) < end:
            offset = now - start
            live.elapsed_s = offset
            live.phase = "warm-up" if offset < plan.warmup_s else "measuring"
            await recorder.call(loop, client, next_request(), now, offset)

    users = {loop.create_task(user()) for _ in range(plan.concurrency)}
    await asyncio.wait(users, timeout=plan.warmup_s + plan.duration_s)
    live.phase = "draining"
    _record_unfinished(samples, await _drain(users, target.timeout_s + DRAIN_GRACE_S), target.timeout_s)
    return samples


async def describe_model(target: Target) -> ModelSpec:
    """What the target's model takes, as its server reports it; raises InferenceFailed."""
    async with inference_client(target.protocol, target.endpoint, timeout_s=target.timeout_s) as client:
        description = await client.describe(target.model)
    return model_spec(description.metadata, description.config)


async def check_reachable(target: Target, request: InferenceRequest) -> None:
    """One inference, to fail fast with a clear error when the target cannot serve."""
    async with inference_client(target.protocol, target.endpoint, timeout_s=target.timeout_s) as client:
        await client.infer(request)


async def run_once(
    target: Target, plan: LoadPlan, requests: Sequence[InferenceRequest], live: LiveCounters | None = None
) -> RunSamples:
    """One run: warm-up (not recorded), then `plan.duration_s` of measured load, sending
    `requests` in turn (see `tritonscale.bench.inputs.build_requests`)."""
    if not requests:
        raise ValueError("a run needs at least one request to send")
    live = live or LiveCounters()
    live.total_s = plan.warmup_s + plan.duration_s
    next_request = itertools.cycle(requests).__next__
    async with inference_client(
        target.protocol, target.endpoint, timeout_s=target.timeout_s, connections=target.connections
    ) as client:
        if plan.mode == "open":
            return await _open_loop(client, next_request, plan, target, live)
        return await _closed_loop(client, next_request, plan, target, live)
