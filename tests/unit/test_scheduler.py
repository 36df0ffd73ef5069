"""The one scheduler behind every periodic job: a fixed number of threads for any number of
resources, no drift, and a stop that sticks."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

from tritonscale.reconcilers import scheduler as scheduler_module
from tritonscale.reconcilers.scheduler import Scheduler


def run(coroutine_factory):  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine_factory())


def test_far_more_resources_than_threads_all_tick_on_time() -> None:
    runs: Counter[str] = Counter()
    late: list[float] = []
    threads: set[str] = set()

    def job(namespace: str, name: str) -> float:
        runs[name] += 1
        threads.add(threading.current_thread().name)
        time.sleep(0.001)
        return 0.2

    async def main() -> None:
        scheduler = Scheduler(job, workers=4, name="t", lateness=late.append)
        scheduler.start()
        for index in range(100):
            scheduler.track("ns", f"s{index}")
        await asyncio.sleep(1.05)
        await scheduler.stop()

    run(main)
    assert len(runs) == 100
    # 100 jobs of 1 ms on 4 threads every 200 ms fit easily: each ran about 5 times.
    assert min(runs.values()) >= 4, runs.most_common()[-3:]
    assert len(threads) <= 4
    assert sorted(late)[int(len(late) * 0.99)] < 0.5


def test_a_stuck_job_holds_one_thread_not_the_others() -> None:
    release = threading.Event()
    runs: Counter[str] = Counter()

    def job(namespace: str, name: str) -> float:
        runs[name] += 1
        if name == "stuck":
            release.wait(5)
        return 0.1

    async def main() -> None:
        scheduler = Scheduler(job, workers=2, name="t")
        scheduler.start()
        scheduler.track("ns", "stuck")
        scheduler.track("ns", "fine")
        await asyncio.sleep(0.55)
        release.set()
        await scheduler.stop()

    run(main)
    assert runs["stuck"] == 1
    assert runs["fine"] >= 4


def test_untracked_or_finished_jobs_stop_and_tracking_twice_runs_once() -> None:
    runs: Counter[str] = Counter()

    def job(namespace: str, name: str) -> float | None:
        runs[name] += 1
        return None if name == "once" else 0.05

    async def main() -> None:
        scheduler = Scheduler(job, workers=2, name="t")
        scheduler.start()
        scheduler.track("ns", "once")
        scheduler.track("ns", "gone")
        scheduler.track("ns", "gone")
        await asyncio.sleep(0.12)
        scheduler.untrack("ns", "gone")
        counted = runs["gone"]
        await asyncio.sleep(0.2)
        assert runs["gone"] == counted
        assert scheduler.tracked() == set()
        await scheduler.stop()

    run(main)
    assert runs["once"] == 1
    assert 2 <= runs["gone"] <= 4  # at 0, 50 and 100 ms: tracking twice did not double it


def test_a_failing_job_is_retried_not_dropped() -> None:
    runs: Counter[str] = Counter()

    def job(namespace: str, name: str) -> float:
        runs[name] += 1
        raise RuntimeError("boom")

    async def main() -> None:
        scheduler = Scheduler(job, workers=1, name="t")
        scheduler.start()
        scheduler.track("ns", "x")
        await asyncio.sleep(0.1)
        assert scheduler.tracked() == {("ns", "x")}
        await scheduler.stop()

    run(main)
    assert runs["x"] == 1


def test_liveness_sees_a_pool_whose_every_thread_is_stuck() -> None:
    release = threading.Event()

    def job(namespace: str, name: str) -> float:
        release.wait(5)
        return 1.0

    async def main() -> tuple[bool, bool, bool, bool]:
        scheduler = Scheduler(job, workers=1, name="t")
        scheduler.start()
        before = await scheduler.responsive(0.5, wait_s=0.1)
        scheduler.track("ns", "stuck")
        await asyncio.sleep(0.05)
        # Busy with a job, but one finished within the timeout (the start counts as one).
        busy = await scheduler.responsive(0.5, wait_s=0.1)
        await asyncio.sleep(0.5)
        stuck = await scheduler.responsive(0.5, wait_s=0.1)
        release.set()
        after = await scheduler.responsive(0.5, wait_s=0.1)
        await scheduler.stop()
        return before, busy, stuck, after

    assert asyncio.run(main()) == (True, True, False, True)


def test_a_backlog_that_keeps_finishing_is_alive_though_no_worker_is_free() -> None:
    """300 services due at a start: the loop waits for a free slot for minutes while jobs
    finish every moment. /healthz must pass (it failed for 210 s and the kubelet restarted
    the operator twice); each probe answers within the kubelet's 5 s."""
    import types

    import kopf

    from tritonscale.handlers import operator as handlers

    def job(namespace: str, name: str) -> float:
        time.sleep(0.05)
        return 60.0

    async def main() -> list[tuple[str, float]]:
        scheduler = Scheduler(job, workers=2, name="autoscale")
        scheduler.start()
        for index in range(300):
            scheduler.track("ns", f"s{index}")
        memo = types.SimpleNamespace(schedulers=(scheduler,))
        settings = kopf.OperatorSettings()
        outcomes = []
        for _ in range(3):
            await asyncio.sleep(1.2)
            began = time.monotonic()
            try:
                outcome = await handlers.loops_make_progress(memo=memo, settings=settings)
            except kopf.PermanentError as error:
                outcome = f"failed: {error}"
            outcomes.append((outcome, time.monotonic() - began))
        await scheduler.stop()
        return outcomes

    original = handlers.LIVENESS_TIMEOUT_S
    handlers.LIVENESS_TIMEOUT_S = 1.0  # the backlog outlasts it: the old probe failed here
    try:
        outcomes = asyncio.run(main())
    finally:
        handlers.LIVENESS_TIMEOUT_S = original
    assert [outcome for outcome, _ in outcomes] == ["ok"] * 3, outcomes
    assert all(took < 5.0 for _, took in outcomes), outcomes


def test_a_key_can_be_asked_to_run_sooner_from_another_thread() -> None:
    runs: list[str] = []

    def job(namespace: str, name: str) -> float | None:
        runs.append(name)
        return 60.0 if name == "a" else None  # "once" is a one-shot job

    async def main() -> None:
        scheduler = Scheduler(job, workers=1, name="t")
        scheduler.start()
        scheduler.track("ns", "a", delay=60.0)
        await asyncio.sleep(0.05)
        assert runs == []
        threading.Thread(target=scheduler.run_within, args=("ns", "a", 0.1)).start()
        threading.Thread(target=scheduler.run_within, args=("ns", "once", 0.1)).start()
        await asyncio.sleep(0.4)
        assert scheduler.tracked() == {("ns", "a")}
        await scheduler.stop()

    asyncio.run(main())
    assert sorted(runs) == ["a", "once"]


def test_liveness_fails_when_a_loop_stops_turning_or_no_worker_is_free() -> None:
    """/healthz runs this probe; kopf answers 500 when it raises."""
    import types

    import kopf

    from tritonscale.handlers.operator import LIVENESS_TIMEOUT_S, loops_make_progress

    release = threading.Event()

    def job(namespace: str, name: str) -> float:
        release.wait(5)
        return 1.0

    async def main() -> list[str]:
        outcomes: list[str] = []
        scheduler = Scheduler(job, workers=1, name="autoscale")
        scheduler.start()
        memo = types.SimpleNamespace(schedulers=(scheduler,))
        settings = kopf.OperatorSettings()

        async def probe() -> str:
            try:
                return await loops_make_progress(memo=memo, settings=settings)
            except kopf.PermanentError as error:
                return f"failed: {error}"

        await asyncio.sleep(0.05)
        outcomes.append(await probe())
        scheduler.heartbeat -= LIVENESS_TIMEOUT_S + 1  # the loop has not turned for that long
        outcomes.append(await probe())
        await asyncio.sleep(0.05)  # it turns again
        scheduler.track("ns", "stuck")
        await asyncio.sleep(0.05)
        scheduler.finished_at -= LIVENESS_TIMEOUT_S + 1  # and nothing has finished for that long
        outcomes.append(await probe())
        release.set()
        await scheduler.stop()
        return outcomes

    ok, stale, busy = asyncio.run(main())
    assert ok == "ok"
    assert stale.startswith("failed: the autoscale loop made no progress for")
    assert busy == "failed: no autoscale worker was free, and none finished a job for 20s"


def test_kopfs_workers_busy_with_reconciles_that_finish_are_alive() -> None:
    """kopf queues every service's resume at a start: a no-op waits behind them all. The probe
    judges by finished reconciles then, and fails only when none finished for the timeout."""
    import types
    from concurrent.futures import ThreadPoolExecutor

    import kopf

    from tritonscale.handlers import operator as handlers

    release = threading.Event()

    async def main() -> tuple[str, str]:
        settings = kopf.OperatorSettings()
        settings.execution.executor = ThreadPoolExecutor(max_workers=1)
        settings.execution.executor.submit(release.wait, 10)
        memo = types.SimpleNamespace(schedulers=())

        async def probe() -> str:
            try:
                return await handlers.loops_make_progress(memo=memo, settings=settings)
            except kopf.PermanentError as error:
                return f"failed: {error}"

        handlers._ReconcileProgress.finished_at = time.monotonic()
        busy = await probe()
        handlers._ReconcileProgress.finished_at = time.monotonic() - handlers.LIVENESS_TIMEOUT_S - 1
        stuck = await probe()
        release.set()
        return busy, stuck

    busy, stuck = asyncio.run(main())
    assert busy == "ok"
    assert stuck == "failed: no reconcile worker was free, and none finished"


def test_a_stop_starts_nothing_more_drops_the_queued_and_waits_for_the_running() -> None:
    """The leader Lease is released only once no job can write: a stop under a backlog must
    not go on starting jobs, and says whether any is still running."""
    started: list[str] = []
    release = threading.Event()

    def job(namespace: str, name: str) -> float:
        started.append(name)
        release.wait(10) if name == "stuck" else time.sleep(0.3)
        return 60.0

    async def main() -> tuple[int, int, float, int]:
        scheduler = Scheduler(job, workers=2, name="t")
        scheduler.start()
        for index in range(200):
            scheduler.track("ns", f"s{index}")
        await asyncio.sleep(0.5)
        began = time.monotonic()
        await scheduler.stop()
        took = time.monotonic() - began
        count_at_stop, busy_after = len(started), scheduler.busy
        await asyncio.sleep(0.7)
        return count_at_stop, busy_after, took, len(started)

    count_at_stop, busy_after, took, count_later = asyncio.run(main())
    assert count_later == count_at_stop, "jobs were started after the stop"
    assert count_at_stop <= 2 * 2 + 2, count_at_stop  # about 0.5 s of two workers' 0.3 s jobs
    assert busy_after == 0 and took < 2.0, (busy_after, took)

    async def stuck() -> int:
        scheduler = Scheduler(job, workers=1, name="t")
        scheduler.start()
        scheduler.track("ns", "stuck")
        await asyncio.sleep(0.1)
        await scheduler.stop()
        return scheduler.busy

    original = scheduler_module.STOP_WAIT_S
    scheduler_module.STOP_WAIT_S = 0.3
    try:
        assert asyncio.run(stuck()) == 1  # still running: the Lease must not be released
    finally:
        scheduler_module.STOP_WAIT_S = original
        release.set()
