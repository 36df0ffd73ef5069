"""One scheduler for every periodic job of every InferenceService (autoscaling ticks, status
rechecks): an asyncio task over a heap of due times, running the jobs on its own bounded thread
pool.

Why not a kopf daemon per resource: a synchronous daemon holds one of kopf's worker threads for
ever, so past a handful of resources no thread was left for spec changes (16 services: no
change applied in 94 s). Here the number of threads is fixed and independent of the number of
resources, and kopf's own executor stays free for reconciles.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

log = logging.getLogger(__name__)
STOP_WAIT_S = 5.0  # how long a stop waits for running jobs (a tick takes a second or two)

Key = tuple[str, str]  # (namespace, name)
# A job runs in a worker thread and returns the seconds until it should run again (None: stop).
Job = Callable[[str, str], float | None]


@dataclass(order=True)
class _Entry:
    due: float
    sequence: int
    key: Key = field(compare=False)
    generation: int = field(compare=False)


class Scheduler:
    """Runs `job(namespace, name)` for each tracked key, again after the delay it returns.

    A key runs at most once at a time; at most `workers` jobs run at once. `lateness` receives
    how late each run started against its due time (the tick-lateness metric)."""

    def __init__(
        self,
        job: Job,
        workers: int,
        name: str,
        lateness: Callable[[float], None] = lambda _: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.job = job
        self.workers = workers
        self.name = name
        self.lateness = lateness
        self.clock = clock
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._heap: list[_Entry] = []
        self._generation: dict[Key, int] = {}
        self._sequence = itertools.count()
        self._wake: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._task: asyncio.Task[None] | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._in_flight: set[Key] = set()
        self._stopping = False
        # The loop's last sign of progress (a turn, a job started or finished): liveness reads it.
        self.heartbeat = clock()
        self.finished_at = clock()  # when a job last finished
        self._running: set[asyncio.Task[None]] = set()
        self._busy = 0  # threads inside a job now (they may write); read at shutdown
        self._busy_lock = threading.Lock()

    # --- registry (called from the event loop) -----------------------------------------------
    def track(self, namespace: str, name: str, delay: float = 0.0) -> None:
        """Run the job for this key `delay` s from now, unless it is tracked already."""
        key = (namespace, name)
        if key in self._generation:
            return
        self._generation[key] = next(self._sequence)
        self._push(key, self.clock() + delay)

    def run_within(self, namespace: str, name: str, delay: float) -> None:
        """Run the job for this key no later than `delay` s from now, tracking it if it is not
        yet. Safe to call from any thread (reconciles run in worker threads)."""
        if self._event_loop is None:
            return
        self._event_loop.call_soon_threadsafe(self._run_within, (namespace, name), delay)

    def _run_within(self, key: Key, delay: float) -> None:
        if key not in self._generation:
            self.track(*key, delay=delay)
            return
        due = self.clock() + delay
        queued = [e.due for e in self._heap if e.key == key and e.generation == self._generation[key]]
        if queued and min(queued) <= due:
            return
        self._generation[key] = next(self._sequence)  # the later entry is dropped when popped
        self._push(key, due)

    def untrack(self, namespace: str, name: str) -> None:
        """Stop running the job for this key (a run in progress finishes)."""
        self._generation.pop((namespace, name), None)

    def tracked(self) -> set[Key]:
        return set(self._generation)

    def _push(self, key: Key, due: float) -> None:
        heapq.heappush(self._heap, _Entry(due, next(self._sequence), key, self._generation[key]))
        if self._wake is not None:
            self._wake.set()

    # --- the loop ------------------------------------------------------------------------------
    def start(self) -> None:
        self._stopping = False
        self._event_loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(self.workers)
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=self.name)

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def busy(self) -> int:
        """Threads running a job now: a job may write, so the leader Lease waits for none."""
        with self._busy_lock:
            return self._busy

    def _call(self, namespace: str, name: str) -> float | None:
        with self._busy_lock:
            self._busy += 1
        try:
            return self.job(namespace, name)
        finally:
            with self._busy_lock:
                self._busy -= 1

    async def stop(self) -> None:
        """Start no more jobs, drop the queued ones, and give the running ones STOP_WAIT_S to
        finish (`busy` says whether any is left)."""
        if self._task is not None:
            # A flag, not only cancel(): Python 3.11's wait_for can lose a cancellation that
            # arrives as the wake-up event fires.
            self._stopping = True
            assert self._wake is not None
            self._wake.set()
            _, pending = await asyncio.wait({self._task}, timeout=5.0)
            for task in pending:  # waiting for a worker slot that a stuck job holds
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self._running:
            await asyncio.wait(set(self._running), timeout=STOP_WAIT_S)

    async def _loop(self) -> None:
        assert self._wake is not None and self._slots is not None
        while not self._stopping:
            self.heartbeat = self.clock()
            now = self.clock()
            while not self._stopping and self._heap and self._heap[0].due <= now:
                entry = heapq.heappop(self._heap)
                if self._generation.get(entry.key) != entry.generation:
                    continue  # untracked (or tracked anew) since it was queued
                if entry.key in self._in_flight:  # moved earlier while a run was going on
                    heapq.heappush(
                        self._heap, _Entry(now + 1.0, next(self._sequence), entry.key, entry.generation)
                    )
                    continue
                self._in_flight.add(entry.key)
                await self._slots.acquire()
                if self.stopping:  # stopped while waiting for a slot: start nothing more
                    self._slots.release()
                    self._in_flight.discard(entry.key)
                    break
                # A backlog (every service due at a start) keeps the loop here for minutes,
                # starting one job as another ends: progress, not a stopped loop.
                self.heartbeat = self.clock()
                task = asyncio.get_running_loop().create_task(self._run(entry))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
                now = self.clock()
            self._wake.clear()
            wait = min(1.0, self._heap[0].due - now) if self._heap else 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(wait, 0.0))

    async def _run(self, entry: _Entry) -> None:
        assert self._slots is not None
        started = self.clock()
        self.lateness(max(0.0, started - entry.due))
        delay: float | None
        try:
            delay = await asyncio.get_running_loop().run_in_executor(self.executor, self._call, *entry.key)
        except Exception:
            log.exception("%s job for %s/%s failed; retrying in 10 s", self.name, *entry.key)
            delay = 10.0
        finally:
            self._slots.release()
            self._in_flight.discard(entry.key)
            self.heartbeat = self.finished_at = self.clock()
        if self._generation.get(entry.key) != entry.generation:
            return
        if delay is None:
            self._generation.pop(entry.key, None)
            return
        # The next run is due a period after this one was due, not after it ended, so ticks do
        # not drift; a run that overran its period is followed a period after it ended.
        due = entry.due + delay
        self._push(entry.key, due if due > self.clock() else self.clock() + delay)

    async def responsive(self, timeout_s: float, wait_s: float) -> bool:
        """Whether a worker thread picks up a no-op within `wait_s`, or, every one busy, one
        finished a job within `timeout_s` (liveness: busy is not stuck)."""
        return await pool_responsive(self.executor, self.clock() - self.finished_at, timeout_s, wait_s)


async def pool_responsive(
    executor: Executor, since_finished_s: float, timeout_s: float, wait_s: float
) -> bool:
    """Whether a thread of `executor` picks up a no-op within `wait_s`, or, every one busy, a job
    finished less than `timeout_s` ago (`since_finished_s`)."""
    future = asyncio.get_running_loop().run_in_executor(executor, lambda: None)
    try:
        await asyncio.wait_for(future, wait_s)
    except TimeoutError:
        return since_finished_s <= timeout_s
    return True
