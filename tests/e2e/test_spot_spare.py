"""A spot machine lost without notice: the autoscaler keeps one spare replica, for real.

The demo's environment (real control plane, process-backed nodes running real tritonservers and
HAProxy, the operator pod from the chart, Prometheus scraping through the chart's monitors) under
a steady load that needs three replicas: one on on-demand, two on spot. Then one spot machine
goes without an interruption notice (its Node deleted, its processes killed at once), so the
fleet is short before anything stands in. The policy notes the loss and keeps one replica more
than the objective needs while replicas serve on spot (`policy.autoscaling.with_spare`).
"""

from __future__ import annotations

import io
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from tritonscale_sandbox.demo import DemoEnvironment, LoadThread, Scenario
from tritonscale_sandbox.process import left_in_sessions, sessions_mark
from tritonscale_sandbox.triton import install_triton

pytestmark = pytest.mark.e2e

SPARE = "one spare on spot"
SPARE_OF = re.compile(r"\(one spare on spot, which took a replica \d+s ago: (\d+) \+ 1\)")
# The demo's model carries ~25 req/s per replica within 100 ms: 70 req/s needs three. (At 60 the
# fitted model sometimes asked for two while the window held three: the spare then kept the three
# rather than adding a fourth.)
STEADY_RPS = 70.0


def _desired(env: DemoEnvironment) -> int:
    return int((env.cluster_service().get("status") or {}).get("desiredReplicas") or 0)


def _scale_events(env: DemoEnvironment) -> list[tuple[tuple[str, int], str]]:
    """The scale events as ((name, count), message), oldest first. A repeated message raises
    an existing Event's count rather than adding one, so (name, count) tells what is new."""
    scaled = [e for e in env.events() if e.get("reason") in ("ScaledUp", "ScaledDown")]
    scaled.sort(key=lambda e: str(e.get("lastTimestamp") or e["metadata"]["creationTimestamp"]))
    return [((e["metadata"]["name"], int(e.get("count") or 1)), str(e.get("message"))) for e in scaled]


def _scale_messages(env: DemoEnvironment) -> list[str]:
    """The scale events' messages, oldest first."""
    return [message for _, message in _scale_events(env)]


def _model_count(env: DemoEnvironment) -> int | None:
    """What the model asked for at the last scale (`model says N`)."""
    said = [
        int(m.group(1)) for message in _scale_messages(env) if (m := re.search(r"model says (\d+)", message))
    ]
    return said[-1] if said else None


def _settled(env: DemoEnvironment, spot_nodes: set[str], since: list[float], hold_s: float) -> bool:
    """Desired at three or more, below maxReplicas (room for a spare: the start's surge can
    take the fleet to the bound for a while), and the model's own count (not one the window
    holds), every replica ready, two or more on spot, and no change of desired for `hold_s`
    (`since` keeps [when desired last changed, that desired])."""
    desired = _desired(env)
    bound = int(env.cluster_service()["spec"]["autoscaling"]["maxReplicas"])
    if desired != since[1]:
        since[:] = [time.monotonic(), desired]
    pods = env.ready_triton_pods()
    on_spot = [p for p in pods if p["spec"].get("nodeName") in spot_nodes]
    return (
        3 <= desired < bound
        and _model_count(env) == desired
        and len(pods) == desired
        and len(on_spot) >= 2
        and time.monotonic() - since[0] >= hold_s
    )


def _wait(
    env: DemoEnvironment, condition: Callable[[], bool], what: str, timeout_s: float, log: Callable[[], str]
) -> None:
    try:
        env.api.wait_until(condition, what, timeout_s=timeout_s, interval_s=1.0)
    except TimeoutError as error:
        pytest.fail(f"{error}\n{log()}")


@pytest.mark.timeout(900)
def test_a_spot_machine_lost_without_notice_leaves_one_spare_replica(
    testenv_bin: Path, tmp_path: Path
) -> None:
    install_triton()
    output = io.StringIO()
    env = DemoEnvironment(tmp_path / "work", Console(file=output, width=120))
    mark = sessions_mark()
    load: LoadThread | None = None
    try:
        env.start()
        routers = env.router_addresses()
        assert routers, output.getvalue()
        steady = Scenario(base_rps=STEADY_RPS, surge_factor=1.0, warmup_s=0.0, end_s=600.0)
        load = LoadThread(f"{routers[0]}:8001", steady)
        load.start()

        def log() -> str:
            return f"desired {_desired(env)}; scale events: {_scale_messages(env)}\n{output.getvalue()}"

        spot_nodes = set(env.spot_nodes())
        since = [time.monotonic(), -1]
        _wait(
            env,
            lambda: _settled(env, spot_nodes, since, hold_s=45.0),
            "three or more settled replicas, below maxReplicas",
            300.0,
            log,
        )
        # A calm market keeps no spare.
        assert not any(SPARE in m for m in _scale_messages(env)), log()

        # The machine goes: prefer one that runs a single Triton pod, so spot still serves.
        counts = Counter(
            node for pod in env.ready_triton_pods() if (node := pod["spec"].get("nodeName")) in spot_nodes
        )
        lost = min(counts, key=lambda node: counts[node])
        print(f"spot pods by node: {dict(counts)}")
        seen_before = {key for key, _ in _scale_events(env)}
        env.api.request("DELETE", f"/api/v1/nodes/{lost}")
        deleted = time.monotonic()

        def since_the_loss() -> list[str]:
            return [message for key, message in _scale_events(env) if key not in seen_before]

        def spare_taken() -> bool:
            return any(SPARE in m for m in since_the_loss())

        _wait(env, spare_taken, f"a scale event that keeps a spare after losing {lost}", 150.0, log)
        after = since_the_loss()
        print(f"{time.monotonic() - deleted:.0f}s after {lost} was deleted:", *after, sep="\n  ")
        # The loss leaves the fleet short: the first change is up. It may not name the spare yet:
        # a backlog can ask for more than maxReplicas (then the spare beyond the bound is moot,
        # and it is named when the count comes down to the objective's plus one).
        assert "scaling up" in after[0], log()
        # The spare is named with the objective's count, e.g. "model says 4 (one spare on spot,
        # which took a replica 6s ago: 3 + 1); scaling up 3 -> 4"; and it is in the count (right
        # after a change, one replica a step until the metrics settle, a minute on).
        assert any(SPARE_OF.search(m) for m in after), log()

        def spare_in_the_count() -> bool:
            named = [int(m.group(1)) for m in map(SPARE_OF.search, since_the_loss()) if m is not None]
            return _desired(env) >= named[-1] + 1

        _wait(env, spare_in_the_count, "desired at the objective plus the spare", 90.0, log)
    finally:
        if load is not None:
            load.cancel()
        processes = env.processes()
        env.stop()
    assert processes
    left = left_in_sessions(mark, settle_s=5.0)
    assert left == [], output.getvalue()
