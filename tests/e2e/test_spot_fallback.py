"""Spot fallback and return on the real control plane: kwok nodes, the real scheduler and the
taint-eviction controller. Spot nodes reclaimed (a NoExecute taint evicts the replicas, which then
cannot be placed) bring the full replica count back on on-demand; spot capacity given back moves
replicas back without ready replicas ever falling below desired, sampled throughout."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import pytest

from tests.builders import make_inference_service
from tests.e2e.conftest import OperatorThread
from tests.e2e.test_operator import _condition, _get, _yaml
from tests.reliability import record
from tritonscale_sandbox.cluster import Cluster, NodePool, node_manifests

pytestmark = pytest.mark.e2e

NS, NAME = "e2e-fallback", "flaky"
RECLAIM_TAINT = "tritonscale.test/reclaimed=true:NoExecute"


def pools(prefix: str) -> list[NodePool]:
    """An on-demand and a spot pool of two kwok nodes each, for one test alone."""
    return [
        NodePool(
            name=f"{prefix}-{kind}",
            count=2,
            labels={prefix: kind},
            allocatable={"cpu": "16", "memory": "64Gi", "ephemeral-storage": "200Gi", "pods": "110"},
            zones=("zone-a", "zone-b"),
        )
        for kind in ("ondemand", "spot")
    ]


def spot_service(prefix: str, namespace: str) -> dict[str, Any]:
    """4 replicas: 1 on on-demand, 3 on spot; stand-ins after 5 s of unschedulable spot."""
    return make_inference_service(
        NAME,
        namespace,
        spec__replicas=4,
        spec__triton={"resources": {"requests": {"cpu": "1"}}},
        spec__capacity={
            "nodePoolPreset": "custom",
            "custom": {
                "onDemand": {"nodeSelector": {prefix: "ondemand"}},
                "spot": {"nodeSelector": {prefix: "spot"}},
            },
            "onDemandBase": 1,
            "spot": {"enabled": True, "maxFraction": 0.75, "fallbackAfterSeconds": 5},
        },
    )


POOLS = pools("e2e-fallback")


def _ready_replicas(cluster: Cluster, namespace: str = NS) -> dict[str, int]:
    deployments = cluster.get_json(
        "deployments", "-l", f"app.kubernetes.io/instance={NAME}", namespace=namespace
    )
    return {
        d["metadata"]["name"].removeprefix(f"{NAME}-"): int(d.get("status", {}).get("readyReplicas") or 0)
        for d in deployments["items"]
    }


def _wanted(cluster: Cluster, pool: str, namespace: str = NS) -> int:
    deployment: dict[str, Any] = cluster.get_json("deployment", f"{NAME}-{pool}", namespace=namespace)
    return int(deployment["spec"]["replicas"])


def test_reclaimed_spot_falls_back_to_on_demand_and_returns_without_a_dip(
    cluster: Cluster, operator: OperatorThread
) -> None:
    cluster.apply_yaml(node_manifests(POOLS))
    spot_nodes = POOLS[1].node_names()
    cluster.create_namespace(NS)
    service = spot_service("e2e-fallback", NS)
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    try:
        cluster.kubectl("apply", "-f", "-", input=_yaml(service))
        cluster.wait_until(
            lambda: (
                _ready_replicas(cluster).get("ondemand") == 1 and _ready_replicas(cluster).get("spot") == 3
            ),
            "1 on-demand and 3 spot replicas ready",
            timeout_s=90,
        )

        # Spot is reclaimed: every spot node gets a NoExecute taint, its replicas are evicted and
        # their replacements cannot be placed anywhere.
        reclaimed = time.monotonic()
        cluster.kubectl("taint", "nodes", *spot_nodes, RECLAIM_TAINT)
        cluster.wait_until(
            lambda: _ready_replicas(cluster).get("ondemand", 0) >= 4,
            "4 ready on-demand replicas after spot was reclaimed",
            timeout_s=120,
        )
        recovered_s = time.monotonic() - reclaimed
        print(f"full capacity back on on-demand {recovered_s:.1f} s after every spot node was reclaimed")
        status = _get(cluster, NS, NAME)["status"]
        assert status["spotFallback"]["standIns"] == 3
        spot = _condition(_get(cluster, NS, NAME), "SpotFallback")
        assert spot is not None and (spot["status"], spot["reason"]) == ("True", "SpotUnavailable")
        assert "3 on-demand replicas stand in" in spot["message"]
        assert recovered_s <= 60, f"full capacity took {recovered_s:.1f} s to come back"

        # Spot comes back; sample the ready replicas until every stand-in has left.
        def sample() -> None:
            while not stop.is_set():
                ready = _ready_replicas(cluster)
                samples.append((time.monotonic(), ready.get("ondemand", 0) + ready.get("spot", 0)))
                stop.wait(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        cluster.kubectl("taint", "nodes", *spot_nodes, RECLAIM_TAINT.split("=", maxsplit=1)[0] + "-")
        cluster.wait_until(
            lambda: _wanted(cluster, "ondemand") == 1 and _ready_replicas(cluster).get("spot") == 3,
            "every stand-in gone and 3 spot replicas ready",
            timeout_s=240,
        )
        returned = time.monotonic()
        stop.set()
        sampler.join(timeout=5)
        # Dense enough to say capacity never dipped: about one sample a second over the return,
        # never 5 s apart, to its end (each is a kubectl call, slower when the machine is loaded).
        times = [at for at, _ in samples] + [returned]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(samples) > 40 and max(gaps) <= 5.0, (
            f"{len(samples)} samples, largest gap {max(gaps):.1f} s"
        )
        assert min(ready for _, ready in samples) >= 4, "ready replicas fell below desired during the return"
        spot = _condition(_get(cluster, NS, NAME), "SpotFallback")
        assert spot is not None and (spot["status"], spot["reason"]) == ("False", "SpotAvailable")
        reasons = [
            e["reason"]
            for e in cluster.get_json(
                "events", "--field-selector", f"involvedObject.name={NAME}", namespace=NS
            )["items"]
        ]
        assert "SpotFallback" in reasons and "SpotReturn" in reasons
        record(
            "spot loss",
            "every spot node of a 1 on-demand + 3 spot service tainted NoExecute (reclaimed), then back",
            "on-demand stand-ins for all 3; ready replicas never below 4 on the way back",
            capacity_back_s=round(recovered_s, 1),
            min_ready_during_return=min(ready for _, ready in samples),
        )
    finally:
        stop.set()
        cluster.kubectl("delete", "namespace", NS, "--wait=false")
        cluster.kubectl("delete", "node", *POOLS[0].node_names(), *spot_nodes, "--wait=false")


def test_a_spot_market_that_flaps_every_minute_does_not_make_replicas_ping_pong(
    cluster: Cluster, operator: OperatorThread
) -> None:
    """Spot reclaimed for 30 s, back for 30 s, four times: the on-demand count goes up once to
    cover spot and stays there; it never moves back and forth."""
    prefix, namespace = "e2e-flap", "e2e-flap"
    flap_pools = pools(prefix)
    spot_nodes = flap_pools[1].node_names()
    cluster.apply_yaml(node_manifests(flap_pools))
    cluster.create_namespace(namespace)
    counts: list[int] = []
    stop = threading.Event()
    try:
        cluster.kubectl("apply", "-f", "-", input=_yaml(spot_service(prefix, namespace)))
        cluster.wait_until(
            lambda: _ready_replicas(cluster, namespace).get("spot") == 3,
            "3 spot replicas ready",
            timeout_s=90,
        )

        def sample() -> None:
            while not stop.is_set():
                counts.append(_wanted(cluster, "ondemand", namespace))
                stop.wait(1.0)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        for _ in range(4):
            cluster.kubectl("taint", "nodes", *spot_nodes, RECLAIM_TAINT)
            time.sleep(30)
            cluster.kubectl("taint", "nodes", *spot_nodes, RECLAIM_TAINT.split("=", maxsplit=1)[0] + "-")
            time.sleep(30)
        stop.set()
        sampler.join(timeout=5)
        changes = [(a, b) for a, b in itertools.pairwise(counts) if a != b]
        print(f"on-demand replicas over the flapping market: {sorted(set(counts))}, changes {changes}")
        assert changes == [(1, 4)], f"on-demand replicas moved back and forth: {changes}"
    finally:
        stop.set()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")
        cluster.kubectl("delete", "node", *flap_pools[0].node_names(), *spot_nodes, "--wait=false")


def _serving_addresses(cluster: Cluster, namespace: str) -> set[str]:
    """The Triton pod addresses the router resolves: ready endpoints of the headless Service."""
    slices = cluster.get_json(
        "endpointslices", "-l", f"kubernetes.io/service-name={NAME}-triton", namespace=namespace
    )["items"]
    return {
        address
        for endpoint_slice in slices
        for endpoint in endpoint_slice.get("endpoints") or []
        if (endpoint.get("conditions") or {}).get("ready")
        for address in endpoint.get("addresses", [])
    }


def _spot_pod_ips(cluster: Cluster, namespace: str, spot_nodes: list[str]) -> set[str]:
    pods = cluster.get_json("pods", "-l", f"app.kubernetes.io/instance={NAME}", namespace=namespace)["items"]
    return {
        p["status"]["podIP"]
        for p in pods
        if p["spec"].get("nodeName") in spot_nodes and p.get("status", {}).get("podIP")
    }


def test_an_interruption_notice_brings_stand_ins_first_then_drains_spot_out_of_the_router(
    cluster: Cluster, operator: OperatorThread
) -> None:
    """Karpenter's disruption taint (NoSchedule: nothing evicts the pods by itself) on every spot
    node: on-demand stand-ins start at once, without waiting for fallbackAfterSeconds; once
    they are ready the spot pods are evicted and leave the router's endpoints; ready replicas
    never fall below desired, sampled throughout."""
    prefix, namespace = "e2e-notice", "e2e-notice"
    notice_pools = pools(prefix)
    spot_nodes = notice_pools[1].node_names()
    cluster.apply_yaml(node_manifests(notice_pools))
    cluster.create_namespace(namespace)
    service = spot_service(prefix, namespace)
    service["spec"]["capacity"]["spot"]["fallbackAfterSeconds"] = 600  # the notice must not wait for it
    samples: list[int] = []
    stop = threading.Event()
    try:
        cluster.kubectl("apply", "-f", "-", input=_yaml(service))
        cluster.wait_until(
            lambda: _ready_replicas(cluster, namespace) == {"ondemand": 1, "spot": 3, "router": 2},
            "1 on-demand, 3 spot and 2 router replicas ready",
            timeout_s=90,
        )
        spot_ips = _spot_pod_ips(cluster, namespace, spot_nodes)
        assert len(spot_ips) == 3
        # The endpoints follow readiness a moment later.
        cluster.wait_until(
            lambda: spot_ips <= _serving_addresses(cluster, namespace), "the spot pods in the endpoints"
        )

        def sample() -> None:
            while not stop.is_set():
                ready = _ready_replicas(cluster, namespace)
                samples.append(ready.get("ondemand", 0) + ready.get("spot", 0))
                stop.wait(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        noticed = time.monotonic()
        cluster.kubectl("taint", "nodes", *spot_nodes, "karpenter.sh/disrupted:NoSchedule")
        cluster.wait_until(
            lambda: _ready_replicas(cluster, namespace).get("ondemand", 0) >= 4,
            "3 on-demand stand-ins ready after the notice",
            timeout_s=60,
        )
        stand_ins_s = time.monotonic() - noticed
        spot = _condition(_get(cluster, namespace, NAME), "SpotFallback")
        assert spot is not None and (spot["status"], spot["reason"]) == ("True", "SpotInterrupted"), spot
        assert "Karpenter is disrupting the node (karpenter.sh/disrupted)" in spot["message"]
        cluster.wait_until(
            lambda: not (spot_ips & _serving_addresses(cluster, namespace)),
            "the noticed spot pods out of the router's endpoints",
            timeout_s=60,
        )
        drained_s = time.monotonic() - noticed
        print(
            f"interruption notice: stand-ins ready {stand_ins_s:.1f} s after it, "
            f"spot pods out of the router {drained_s:.1f} s after it"
        )
        time.sleep(10)  # and while the evicted pods' replacements wait for spot
        stop.set()
        sampler.join(timeout=5)
        assert len(samples) > 10, "too few samples to say capacity never dipped"
        assert min(samples) >= 4, f"ready replicas fell below desired during the drain: {samples}"
        events = cluster.get_json(
            "events", "--field-selector", f"involvedObject.name={NAME}", namespace=namespace
        )["items"]
        assert {"SpotFallback", "SpotDrained"} <= {e["reason"] for e in events}
        assert _wanted(cluster, "ondemand", namespace) == 4
    finally:
        stop.set()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")
        cluster.kubectl("delete", "node", *notice_pools[0].node_names(), *spot_nodes, "--wait=false")
