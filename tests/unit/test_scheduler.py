"""The one scheduler behind every periodic job: a fixed number of threads for any number of
resources, no drift, and a stop that sticks."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

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

    async def main() -> tuple[bool, bool, bool]:
        scheduler = Scheduler(job, workers=1, name="t")
        scheduler.start()
        before = await scheduler.responsive(0.5)
        scheduler.track("ns", "stuck")
        await asyncio.sleep(0.05)
        during = await scheduler.responsive(0.2)
        release.set()
        after = await scheduler.responsive(0.5)
        await scheduler.stop()
        return before, during, after

    assert asyncio.run(main()) == (True, False, True)


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
        responsive = scheduler.responsive
        scheduler.responsive = lambda timeout_s: responsive(0.1)  # type: ignore[method-assign]
        outcomes.append(await probe())
        release.set()
        await scheduler.stop()
        return outcomes

    ok, stale, busy = asyncio.run(main())
    assert ok == "ok"
    assert stale.startswith("failed: the autoscale loop last turned")
    assert busy == "failed: no autoscale worker was free for 20s"
