"""The fault matrix's control-plane rows (issue 13), on a control plane of their own, since
they restart its API server and freeze its etcd: the operator SIGKILLed at random points of
reconciles and autoscaling ticks, the API server restarted, etcd frozen, and two operator
replicas electing a leader with the active one killed.

The operator runs as a process of its own (`tritonscale run`) with tokens of the chart's
ServiceAccount; the API server's audit log says which token made each request. Each test
records its figures for docs/reliability.md (tests/reliability.py).
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Generator
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import urllib3
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.builders import make_inference_service
from tests.e2e.conftest import CHART, OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, RELEASE
from tests.e2e.faults import (
    ConnectionCounter,
    OperatorProcess,
    api_port,
    audit_time,
    credential,
    lease_holder,
    made_with,
    running,
    through_relay,
)
from tests.reliability import record
from tritonscale.clients.kube import KubeClient
from tritonscale.clients.leader import LEASE_DURATION_S
from tritonscale.clients.pod_watch import ManagedPods
from tritonscale.permissions import LEADER_NEEDS, NODE_NEEDS, OPERATOR_NEEDS
from tritonscale.render.names import COMPONENT_TRITON, StackNames
from tritonscale_sandbox.cluster import Cluster

pytestmark = pytest.mark.e2e

CHILD_KINDS = "configmaps,services,deployments,poddisruptionbudgets,networkpolicies"
INSTANCE = "app.kubernetes.io/instance"
MANAGED = "app.kubernetes.io/managed-by=tritonscale"
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
SETTLE_TIMEOUT_S = 90.0
KILL_TRIALS = 24


@pytest.fixture(scope="module")
def fault_cluster(
    testenv_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Generator[Cluster, None, None]:
    """A control plane for this module alone, with the chart installed (CRD, RBAC, Lease Role)."""
    cluster = Cluster.start(tmp_path_factory.mktemp("fault-cluster"), testenv_bin)
    failed = True
    try:
        cluster.helm(
            "install", RELEASE, str(CHART), "--namespace", OPERATOR_NAMESPACE, "--create-namespace",
            "--wait", "--timeout", "2m",
        )  # fmt: skip
        cluster.wait_for("crd/inferenceservices.tritonscale.io", "condition=Established", timeout_s=60)
        cluster.wait_until(
            lambda: cluster.kubectl("get", "inferenceservices", "-A", check=False).returncode == 0,
            "the InferenceService storage to answer lists",
        )
        yield cluster
        failed = False
    finally:
        cluster.stop(keep_logs=failed)


def _token_kubeconfig(cluster: Cluster, path: Path) -> Path:
    """A kubeconfig with a fresh token of the chart's ServiceAccount: each operator replica has
    its own, as each pod has its own projected token, so the audit log tells them apart."""
    return cluster.service_account_kubeconfig(
        OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, path, create=False
    )


def _writes(cluster: Cluster, credential_id: str) -> list[dict[str, Any]]:
    """Writes that one token made and the API server carried out (2xx), oldest first."""
    user = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"
    return [
        e
        for e in cluster.audit_events(user)
        if e["verb"] in WRITE_VERBS
        and made_with(e, credential_id)
        and 200 <= e.get("responseStatus", {}).get("code", 0) < 300
    ]


def _status_settled(cluster: Cluster, namespace: str, name: str, replicas: int) -> bool:
    obj = cluster.get_json("inferenceservice", name, namespace=namespace)
    status = obj.get("status", {})
    ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)
    return bool(
        status.get("observedGeneration") == obj["metadata"]["generation"]
        and ready is not None
        and ready["status"] == "True"
        and status.get("replicas") == replicas
    )


def _wait_settled(cluster: Cluster, operator: OperatorProcess, namespace: str, want: dict[str, int]) -> float:
    """Wait until every service is Ready at its replica count; the seconds it took."""
    began = time.monotonic()

    def settled() -> bool:
        operator.assert_healthy()
        return all(_status_settled(cluster, namespace, name, n) for name, n in want.items())

    try:
        cluster.wait_until(settled, f"{namespace} to settle at {want}", timeout_s=SETTLE_TIMEOUT_S)
    except TimeoutError as error:
        statuses = {
            o["metadata"]["name"]: o.get("status")
            for o in cluster.get_json("inferenceservices", namespace=namespace)["items"]
        }
        raise AssertionError(f"{error}\n{json.dumps(statuses, indent=1)}\n{operator.log_tail()}") from None
    return time.monotonic() - began


def _children(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    return list(cluster.get_json(CHILD_KINDS, "-l", MANAGED, namespace=namespace)["items"])


def _assert_exact_stacks(cluster: Cluster, namespace: str, names: list[str]) -> None:
    """Every managed object in the namespace is a child of one of the services, owned by it (no
    orphan), and each service has the same set of children as the others (no duplicate)."""
    uids = {
        o["metadata"]["name"]: o["metadata"]["uid"]
        for o in cluster.get_json("inferenceservices", namespace=namespace)["items"]
    }
    by_owner: dict[str, list[tuple[str, str]]] = {n: [] for n in names}
    for child in _children(cluster, namespace):
        owners = child["metadata"].get("ownerReferences", [])
        assert len(owners) == 1 and owners[0]["kind"] == "InferenceService", child["metadata"]
        owner = owners[0]["name"]
        assert owners[0]["uid"] == uids.get(owner), f"orphan: {child['kind']} {child['metadata']['name']}"
        assert child["metadata"]["labels"][INSTANCE] == owner
        by_owner[owner].append((child["kind"], child["metadata"]["name"].removeprefix(owner)))
    shapes = {owner: sorted(kids) for owner, kids in by_owner.items()}
    assert len({tuple(s) for s in shapes.values()}) == 1, shapes
    assert sorted(shapes[names[0]]) == sorted(
        [
            ("ConfigMap", "-router"),
            ("Deployment", "-ondemand"),
            ("Deployment", "-router"),
            ("PodDisruptionBudget", "-router"),
            ("PodDisruptionBudget", "-triton"),
            ("Service", ""),
            ("Service", "-triton"),
        ]
    ), shapes


def _deployment_generations(cluster: Cluster, namespace: str, name: str) -> dict[str, int]:
    return {
        d["metadata"]["name"]: d["metadata"]["generation"]
        for d in cluster.get_json("deployments", "-l", f"{INSTANCE}={name}", namespace=namespace)["items"]
    }


# --------------------------------------------------------------------------------------------
# operator killed


def test_an_operator_killed_at_random_points_converges_every_time(
    fault_cluster: Cluster, tmp_path: Path
) -> None:
    """SIGKILL at a random moment after the start, 24 times, while a spec change is in flight
    (two services alternate their replica counts) and an autoscaled service ticks with no
    metrics: after each restart every service settles at its newest spec with exactly its own
    children, and the autoscaled service's Deployment is never written a replica count (with no
    metrics it must hold; a count from stale data would change its generation)."""
    cluster = fault_cluster
    ns = "faults-kill"
    cluster.create_namespace(ns)
    kubeconfig = _token_kubeconfig(cluster, tmp_path / "operator.kubeconfig")
    operator = OperatorProcess(kubeconfig, tmp_path / "operator.log", f"--namespace={ns}")
    fixed = ["alpha", "beta"]
    scaled = "gamma"
    for name in fixed:
        cluster.apply_yaml(make_inference_service(name, ns, spec__replicas=2))
    cluster.apply_yaml(
        make_inference_service(
            scaled,
            ns,
            spec__autoscaling={
                "minReplicas": 2,
                "maxReplicas": 6,
                "periodSeconds": 2,
                "latency": {"targetMilliseconds": 100},
            },
        )
    )
    want = {"alpha": 2, "beta": 2, scaled: 2}
    operator.start()
    try:
        _wait_settled(cluster, operator, ns, want)
        held = _deployment_generations(cluster, ns, scaled)
        rng = random.Random(13)
        delays, settle_times = [], []
        for trial in range(KILL_TRIALS):
            operator.kill()
            replicas = 3 if trial % 2 == 0 else 2
            for name in fixed:
                cluster.kubectl(
                    "patch",
                    "tis",
                    name,
                    "-n",
                    ns,
                    "--type=merge",
                    "-p",
                    json.dumps({"spec": {"replicas": replicas}}),
                )
                want[name] = replicas
            operator.start()
            # From the process start: imports and login take ~2 s, the reconciles of three
            # services and the first autoscaling ticks follow within the next seconds.
            delay = rng.uniform(1.0, 6.0)
            delays.append(delay)
            time.sleep(delay)
            operator.kill()
            operator.start()
            settle_times.append(_wait_settled(cluster, operator, ns, want))
            _assert_exact_stacks(cluster, ns, [*fixed, scaled])
            assert _deployment_generations(cluster, ns, scaled) == held, (
                f"trial {trial}: a replica count was applied"
            )
    finally:
        operator.kill()
    record(
        "operator killed",
        f"SIGKILL {KILL_TRIALS} times, 1-6 s after start, spec changes in flight, 3 services",
        "converged every time; no orphan, no duplicate; no replica count applied without metrics",
        trials=KILL_TRIALS,
        settle_median_s=round(sorted(settle_times)[len(settle_times) // 2], 1),
        settle_max_s=round(max(settle_times), 1),
    )


# --------------------------------------------------------------------------------------------
# API server restarted, etcd frozen


def _wait_applied(cluster: Cluster, operator: OperatorProcess, ns: str, name: str, replicas: int) -> float:
    """Seconds until the operator has applied a replica count to the service's Deployment (its
    pods becoming Ready is the control plane's business, which also recovers from the fault)."""
    began = time.monotonic()

    def applied() -> bool:
        operator.assert_healthy()
        deployment = cluster.get_json("deployment", f"{name}-ondemand", namespace=ns)
        return bool(deployment["spec"]["replicas"] == replicas)

    cluster.wait_until(
        applied, f"{ns}/{name} to be applied at {replicas} replicas", timeout_s=SETTLE_TIMEOUT_S
    )
    return time.monotonic() - began


def test_the_operator_rides_out_an_api_server_restart_without_a_hot_loop(
    fault_cluster: Cluster, tmp_path: Path
) -> None:
    """The API server is stopped for 20 s and started again: the operator keeps running,
    retries at a bounded rate while it is down (connections counted at a relay in front of the
    API server), and applies a change made after the restart. The pod watch (clients.pod_watch)
    reconnects: it sees the pod that change adds."""
    cluster = fault_cluster
    ns = "faults-apiserver"
    cluster.create_namespace(ns)
    relay = ConnectionCounter(api_port(cluster))
    kubeconfig = through_relay(
        _token_kubeconfig(cluster, tmp_path / "direct.kubeconfig"), relay, tmp_path / "operator.kubeconfig"
    )
    operator = OperatorProcess(kubeconfig, tmp_path / "operator.log", f"--namespace={ns}")
    cluster.apply_yaml(
        make_inference_service(
            "steady",
            ns,
            spec__autoscaling={"minReplicas": 2, "maxReplicas": 4, "periodSeconds": 2},
        )
    )
    cluster.apply_yaml(make_inference_service("fixed", ns, spec__replicas=2))
    pods = ManagedPods(
        KubeClient.connect(str(_token_kubeconfig(cluster, tmp_path / "watch.kubeconfig"))).core, (ns,)
    ).start()
    fixed_triton = StackNames("fixed", ns).component_selector(COMPONENT_TRITON)
    try:
        with running(operator):
            _wait_settled(cluster, operator, ns, {"steady": 2, "fixed": 2})
            cluster.wait_until(
                lambda: len(pods.ready_addresses(ns, fixed_triton) or []) == 2,
                "the pod watch to see 2 Triton pods",
            )
            time.sleep(3)
            down_s = 20.0
            stopped = time.monotonic()
            unavailable_s = cluster.restart("kube-apiserver", downtime_s=down_s)
            attempts = relay.opened_between(stopped, stopped + down_s)
            operator.assert_healthy()
            cluster.kubectl(
                "patch", "tis", "fixed", "-n", ns, "--type=merge", "-p", '{"spec":{"replicas":3}}'
            )
            caught_up_s = _wait_applied(cluster, operator, ns, "fixed", 3)
            ready_s = _wait_settled(cluster, operator, ns, {"fixed": 3}) + caught_up_s
            cluster.wait_until(
                lambda: len(pods.ready_addresses(ns, fixed_triton) or []) == 3,
                "the pod watch, reconnected, to see the third Triton pod",
            )
    finally:
        pods.stop()
    relay.close()
    rate = attempts / down_s
    record(
        "API server restarted",
        f"kube-apiserver stopped {down_s:.0f} s, then started",
        f"operator kept running; {attempts} connection attempts while down; change applied after",
        unavailable_s=round(unavailable_s, 1),
        attempts_per_s=round(rate, 2),
        change_applied_s=round(caught_up_s, 1),
        change_ready_s=round(ready_s, 1),
    )
    # Watches (InferenceServices, Deployments, nodes), the scheduled reconciles and ticks: a
    # few attempts a second at most; kopf's default watch reconnect (every 0.1 s) would be 30.
    assert rate <= 3.0, f"{attempts} connection attempts in {down_s:.0f} s while the API server was down"


def test_the_operator_rides_out_a_frozen_etcd(fault_cluster: Cluster, tmp_path: Path) -> None:
    """etcd is frozen (SIGSTOP) for 30 s: requests hang at the API server. The operator keeps
    running, and catches up with a change made once etcd is back."""
    cluster = fault_cluster
    ns = "faults-etcd"
    cluster.create_namespace(ns)
    kubeconfig = _token_kubeconfig(cluster, tmp_path / "operator.kubeconfig")
    mine = credential(kubeconfig)
    operator = OperatorProcess(kubeconfig, tmp_path / "operator.log", f"--namespace={ns}")
    cluster.apply_yaml(
        make_inference_service(
            "steady", ns, spec__autoscaling={"minReplicas": 2, "maxReplicas": 4, "periodSeconds": 2}
        )
    )
    cluster.apply_yaml(make_inference_service("fixed", ns, spec__replicas=2))
    user = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"
    with running(operator):
        _wait_settled(cluster, operator, ns, {"steady": 2, "fixed": 2})
        frozen_s = 30.0
        began_wall = time.time()
        cluster.pause("etcd")
        try:
            time.sleep(frozen_s)
        finally:
            cluster.resume("etcd")
        ended_wall = time.time()
        operator.assert_healthy()
        cluster.wait_until(
            lambda: cluster.kubectl("get", "tis", "-n", ns, check=False).returncode == 0, "the API to answer"
        )
        cluster.kubectl("patch", "tis", "fixed", "-n", ns, "--type=merge", "-p", '{"spec":{"replicas":3}}')
        caught_up_s = _wait_applied(cluster, operator, ns, "fixed", 3)
        _wait_settled(cluster, operator, ns, {"fixed": 3})
    during = [
        e
        for e in cluster.audit_events(user)
        if made_with(e, mine) and began_wall <= audit_time(e) < ended_wall
    ]
    record(
        "etcd frozen",
        f"etcd SIGSTOPped {frozen_s:.0f} s",
        f"operator kept running; {len(during)} requests reached the API server meanwhile; change applied after",
        requests_while_frozen=len(during),
        change_applied_s=round(caught_up_s, 1),
    )
    assert len(during) / frozen_s <= 3.0, f"{len(during)} requests in {frozen_s:.0f} s while etcd was frozen"


# --------------------------------------------------------------------------------------------
# two replicas, one leader


def _wait_holder(cluster: Cluster, prefix: str, timeout_s: float, check: Callable[[], None]) -> float:
    began = time.monotonic()

    def held() -> bool:
        check()
        return lease_holder(cluster, OPERATOR_NAMESPACE).startswith(prefix)

    cluster.wait_until(held, f"{prefix} to hold the Lease", timeout_s=timeout_s)
    return time.monotonic() - began


def test_a_standby_takes_over_from_a_killed_leader_and_they_never_both_write(
    fault_cluster: Cluster, tmp_path: Path
) -> None:
    """Two replicas with leader election: one leads, the other writes nothing; the leader is
    SIGKILLed and the standby leads within 60 s and applies a change made meanwhile; every write
    of the first comes before every write of the second (the audit log, by token). Then a clean
    stop (SIGTERM) of the new leader hands over at once, as a rolling update does."""
    cluster = fault_cluster
    ns = "faults-ha"
    cluster.create_namespace(ns)
    first_kc = _token_kubeconfig(cluster, tmp_path / "first.kubeconfig")
    second_kc = _token_kubeconfig(cluster, tmp_path / "second.kubeconfig")
    election = f"--leader-election-namespace={OPERATOR_NAMESPACE}"
    # Secrets a pod's environment could hold, to look for on the metrics and health ports.
    secret_env = {"AWS_SECRET_ACCESS_KEY": f"e2e-secret-{uuid.uuid4().hex}"}
    first, second = (
        OperatorProcess(
            kubeconfig,
            tmp_path / f"{name}.log",
            f"--namespace={ns}",
            election,
            pod_name=name,
            serve_ports=True,
            env=secret_env,
        )
        for name, kubeconfig in (("first", first_kc), ("second", second_kc))
    )
    cluster.apply_yaml(make_inference_service("ha", ns, spec__replicas=2))
    try:
        first.start()
        _wait_holder(cluster, "first_", 60, first.assert_healthy)
        _wait_settled(cluster, first, ns, {"ha": 2})
        second.start()
        time.sleep(8)  # the standby has started and campaigned a few times
        assert lease_holder(cluster, OPERATOR_NAMESPACE).startswith("first_")
        assert _writes(cluster, credential(second_kc)) == [], "the standby wrote"
        scraped = _assert_ports_carry_nothing_secret(
            [first, second], [first_kc, second_kc], list(secret_env.values())
        )
        assert (_leader_gauge(first), _leader_gauge(second)) == (1.0, 0.0)

        killed_wall = time.time()
        first.kill()
        cluster.kubectl("patch", "tis", "ha", "-n", ns, "--type=merge", "-p", '{"spec":{"replicas":3}}')
        takeover_s = _wait_holder(cluster, "second_", 90, second.assert_healthy)
        applied_s = _wait_settled(cluster, second, ns, {"ha": 3}) + takeover_s

        first_writes = [
            e for e in _writes(cluster, credential(first_kc)) if e["objectRef"]["resource"] != "leases"
        ]
        second_writes = [
            e for e in _writes(cluster, credential(second_kc)) if e["objectRef"]["resource"] != "leases"
        ]
        assert first_writes and second_writes
        assert max(audit_time(e) for e in first_writes) < killed_wall
        assert max(audit_time(e) for e in first_writes) < min(audit_time(e) for e in second_writes)
        assert takeover_s <= 60.0

        # A clean stop releases the Lease: the next replica leads in seconds, not a lease duration.
        first.start()
        time.sleep(3)
        stopped = time.monotonic()
        second.stop()
        _wait_holder(cluster, "first_", 60, first.assert_healthy)
        handover_s = time.monotonic() - stopped
        assert handover_s < LEASE_DURATION_S, f"handover took {handover_s:.1f}s: the Lease was not released"
    finally:
        first.kill()
        second.kill()
    record(
        "operator replica killed (HA)",
        "2 replicas with a Lease; SIGKILL of the leader; then SIGTERM of the new one",
        "standby led and applied the pending change; no write by both; clean stop handed over",
        takeover_s=round(takeover_s, 1),
        change_applied_s=round(applied_s, 1),
        clean_handover_s=round(handover_s, 1),
        lease_duration_s=LEASE_DURATION_S,
    )
    record(
        "metrics and health ports",
        "/metrics and /healthz of a leader and a standby, scraped; their tokens and a secret in "
        "their environment looked for",
        f"{scraped} bytes served, no token, key, certificate or environment secret in them",
        bytes_scraped=scraped,
    )


BACKLOG_SERVICES = 120
POD_GRACE_S = 30.0  # the kubelet's default terminationGracePeriodSeconds, which the chart keeps
# Reconciles that may still finish after the count before a stop: the 8 in flight, and those
# that start before the signal is handled.
STOP_MARGIN_RECONCILES = 40


def _services_with_children(cluster: Cluster, namespace: str) -> int:
    deployments = cluster.get_json("deployments", "-l", MANAGED, namespace=namespace)["items"]
    return len({d["metadata"]["labels"][INSTANCE] for d in deployments})


def test_a_stop_during_a_starts_backlog_fits_the_grace_period_and_hands_over(
    fault_cluster: Cluster, tmp_path: Path
) -> None:
    """A rolling update stops the leader while its start's reconciles are still queued (every
    service's resume at once): it exits within the pod's grace period with the Lease released,
    the queued reconciles skipped, and the next replica reconciles every service."""
    cluster = fault_cluster
    ns = "faults-backlog"
    cluster.create_namespace(ns)
    names = [f"backlog-{i:03d}" for i in range(BACKLOG_SERVICES)]
    # No Triton pod and one router pod each: the test is about the operator, not the kubelets.
    cluster.apply_yaml(
        [
            make_inference_service(name, ns, spec__replicas=0, spec__loadBalancing__router__replicas=1)
            for name in names
        ]
    )
    args = (f"--namespace={ns}", f"--leader-election-namespace={OPERATOR_NAMESPACE}")
    first = OperatorProcess(
        _token_kubeconfig(cluster, tmp_path / "first.kubeconfig"),
        tmp_path / "first.log",
        *args,
        pod_name="first",
    )
    second = OperatorProcess(
        _token_kubeconfig(cluster, tmp_path / "second.kubeconfig"),
        tmp_path / "second.log",
        *args,
        pod_name="second",
    )
    try:
        first.start()
        _wait_holder(cluster, "first_", 60, first.assert_healthy)

        def some_reconciled() -> bool:
            first.assert_healthy()
            return bool(cluster.get_json("deployments", "-l", MANAGED, namespace=ns)["items"])

        cluster.wait_until(some_reconciled, "the first reconciles", timeout_s=60)
        reconciled_at_stop = _services_with_children(cluster, ns)
        stop_s = first.stop(timeout_s=POD_GRACE_S)
        assert stop_s is not None, f"still running {POD_GRACE_S:.0f}s after SIGTERM:\n{first.log_tail()}"
        # Those in flight at the signal finish; the rest wait for the next leader. Before, every
        # queued one ran first (all 120 here, in 9.5 s; a stop's length grew with the backlog).
        reconciled_by_first = _services_with_children(cluster, ns)
        assert reconciled_by_first <= reconciled_at_stop + STOP_MARGIN_RECONCILES < len(names), (
            f"{reconciled_at_stop} services reconciled at the stop, {reconciled_by_first} after it"
        )
        log = (tmp_path / "first.log").read_text(errors="replace")
        assert re.search(r"\b[1-9]\d* reconciles queued at the stop were skipped", log), first.log_tail()
        assert lease_holder(cluster, OPERATOR_NAMESPACE) == "", "the Lease was not released"

        second.start()
        began = time.monotonic()

        def all_reconciled() -> bool:
            second.assert_healthy()
            services = cluster.get_json("inferenceservices", namespace=ns)["items"]
            return all(
                s.get("status", {}).get("observedGeneration") == s["metadata"]["generation"] for s in services
            )

        cluster.wait_until(all_reconciled, "the next leader to reconcile every service", timeout_s=240)
        settle_s = time.monotonic() - began
        _assert_exact_stacks(cluster, ns, names)
    finally:
        first.kill()
        second.kill()
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    record(
        "operator stopped during its start's backlog",
        f"SIGTERM of the leader while the resumes of {BACKLOG_SERVICES} services were queued",
        f"exited within the {POD_GRACE_S:.0f} s grace period with the Lease released; the next "
        "replica reconciled every service",
        services=BACKLOG_SERVICES,
        reconciled_before_stop=reconciled_at_stop,
        reconciled_by_the_stopping_leader=reconciled_by_first,
        stop_s=round(stop_s, 1),
        next_leader_settled_s=round(settle_s, 1),
    )


def _leader_gauge(operator: OperatorProcess) -> float:
    """`tritonscale_leader` as the operator's /metrics serves it."""
    with urllib.request.urlopen(operator.metrics_url, timeout=5) as response:
        body = response.read().decode()
    for family in text_string_to_metric_families(body):
        if family.name == "tritonscale_leader":
            return float(family.samples[0].value)
    raise AssertionError(f"{operator.metrics_url} serves no tritonscale_leader")


def _assert_ports_carry_nothing_secret(
    operators: list[OperatorProcess], kubeconfigs: list[Path], secrets: list[str]
) -> int:
    """What /metrics and /healthz serve holds no credential the operators have: their tokens
    (nor any 16-character piece of one), the kubeconfig's certificates, PEM blocks, or `secrets`
    from their environment. Returns the bytes scraped."""
    needles = list(secrets)
    for kubeconfig in kubeconfigs:
        config = yaml.safe_load(kubeconfig.read_text())
        token = config["users"][0]["user"]["token"]
        needles += [token[i : i + 16] for i in range(0, len(token) - 16, 8)]
        needles += [config["clusters"][0]["cluster"].get("certificate-authority-data", "")[:40]]
    needles = [n for n in needles if n]
    scraped = 0
    for operator in operators:
        for url in (operator.metrics_url, operator.health_url):
            with urllib.request.urlopen(url, timeout=5) as response:
                body = response.read().decode(errors="replace")
            scraped += len(body)
            assert body, url
            found = [n for n in needles if n in body]
            assert not found, f"{url} serves a secret: {found[:3]}"
            assert "BEGIN " not in body and "PRIVATE KEY" not in body, url
    return scraped


# --------------------------------------------------------------------------------------------
# node drained


def _ready_pods(cluster: Cluster, namespace: str, component: str) -> list[dict[str, Any]]:
    pods = cluster.get_json("pods", "-l", f"app.kubernetes.io/component={component}", namespace=namespace)[
        "items"
    ]
    return [p for p in pods if _pod_ready(p)]


def _pod_ready(pod: dict[str, Any]) -> bool:
    return pod["metadata"].get("deletionTimestamp") is None and any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", [])
    )


def _lowest_ready(events: list[dict[str, Any]], full: dict[str, int]) -> dict[str, int]:
    """Replay a pod watch: the fewest ready pods of each component, counted from the moment all
    `full` of them were first ready."""
    ready: dict[str, set[str]] = {component: set() for component in full}
    lowest: dict[str, int] = {}
    for event in events:
        pod = event["object"]
        component = pod["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        if component not in ready:
            continue
        name = pod["metadata"]["name"]
        if event["type"] != "DELETED" and _pod_ready(pod):
            ready[component].add(name)
        else:
            ready[component].discard(name)
        if component in lowest or len(ready[component]) == full[component]:
            lowest[component] = min(lowest.get(component, full[component]), len(ready[component]))
    return lowest


def test_a_drained_node_keeps_the_serving_capacity_the_disruption_budgets_promise(
    fault_cluster: Cluster, tmp_path: Path
) -> None:
    """`kubectl drain` of the node holding the most Triton replicas of a 4-replica service (its
    pods only: other tests' stacks, with no operator running, share the node): the
    eviction API consults the operator's PodDisruptionBudgets (Triton: minAvailable desired-1,
    router: maxUnavailable 1), so ready Triton replicas never fall below 3 and a router is
    always ready (every pod change watched), while every pod leaves the node and the service
    ends Ready on the other."""
    cluster = fault_cluster
    ns = "faults-drain"
    cluster.create_namespace(ns)
    operator = OperatorProcess(
        _token_kubeconfig(cluster, tmp_path / "operator.kubeconfig"),
        tmp_path / "operator.log",
        f"--namespace={ns}",
        serve_ports=True,
    )
    cluster.apply_yaml(make_inference_service("drained", ns, spec__replicas=4))
    events: list[dict[str, Any]] = []
    with running(operator):
        _wait_settled(cluster, operator, ns, {"drained": 4})
        assert _leader_gauge(operator) == 1.0, "a lone operator without an election writes: it leads"
        nodes = [p["spec"]["nodeName"] for p in _ready_pods(cluster, ns, "triton")]
        busiest = max(set(nodes), key=nodes.count)
        api = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(cluster.kubeconfig)))
        watch = kubernetes.watch.Watch()

        stopped = threading.Event()

        def follow() -> None:
            try:
                for event in watch.stream(api.list_namespaced_pod, ns, timeout_seconds=300):
                    events.append({"type": event["type"], "object": event["raw_object"]})
            except urllib3.exceptions.ProtocolError:
                # The watch's stop is seen only at its next event: once the test is done, the
                # API server going away with the cluster ends the stream instead.
                if not stopped.is_set():
                    raise

        threading.Thread(target=follow, daemon=True).start()
        try:
            cluster.wait_until(lambda: len(events) >= 6, "the watch to list the pods")
            began = time.monotonic()
            drain = cluster.kubectl(
                "drain",
                busiest,
                "--ignore-daemonsets",
                "--delete-emptydir-data",
                "--timeout=180s",
                f"--pod-selector={INSTANCE}=drained",
                timeout_s=200,
            )
            drained_s = time.monotonic() - began
            _wait_settled(cluster, operator, ns, {"drained": 4})
            time.sleep(2)
        finally:
            stopped.set()
            watch.stop()
            cluster.kubectl("uncordon", busiest)
        left = [
            p for p in cluster.get_json("pods", namespace=ns)["items"] if p["spec"].get("nodeName") == busiest
        ]
    assert not left, [p["metadata"]["name"] for p in left]
    lowest = _lowest_ready(list(events), {"triton": 4, "router": 2})
    assert len(events) > 6 + 2 * nodes.count(busiest), "the watch saw no evictions"
    assert lowest["triton"] >= 3, lowest
    assert lowest["router"] >= 1, lowest
    record(
        "node drained",
        f"kubectl drain of the node with {nodes.count(busiest)} of 4 Triton replicas",
        "budgets held: Triton never below 3 ready, a router always ready; service Ready elsewhere",
        drain_s=round(drained_s, 1),
        min_ready_triton=lowest["triton"],
        min_ready_routers=lowest["router"],
        pod_changes_watched=len(events),
        evictions_refused_by_budget=(drain.stdout + drain.stderr).count("disruption budget"),
    )


# --------------------------------------------------------------------------------------------
# least privilege


def _can_i_list(cluster: Cluster, kubeconfig: Path, namespace: str) -> set[tuple[str, str, str, str]]:
    """(group, resource, resource name or "", verb) of `kubectl auth can-i --list`'s table."""
    table = cluster.kubectl("auth", "can-i", "--list", "-n", namespace, kubeconfig=kubeconfig).stdout
    granted = set()
    for line in table.splitlines()[1:]:
        match = re.match(r"^(\S+)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]\s*$", line)
        if match is None:  # non-resource URLs: the first column is empty
            continue
        kind, _, names, verbs = match.groups()
        resource, _, subresource = kind.partition("/")
        plural, _, group = resource.partition(".")
        full = f"{plural}/{subresource}" if subresource else plural
        for name in names.split() or [""]:
            for verb in verbs.split():
                granted.add((group, full, name, verb))
    return granted


def _needs_as_grants() -> set[tuple[str, str, str, str]]:
    return {
        (need.group, need.resource, name, verb)
        for need in (*OPERATOR_NEEDS, *NODE_NEEDS, *LEADER_NEEDS)
        for name in need.resource_names or ("",)
        for verb in need.verbs
    }


def test_the_chart_identity_holds_exactly_the_declared_needs(fault_cluster: Cluster, tmp_path: Path) -> None:
    """`kubectl auth can-i --list` for the chart's ServiceAccount, less what every authenticated
    identity gets (a ServiceAccount with no binding, asked the same), equals what
    tritonscale.permissions declares: no extra verb, none missing; in the release namespace
    (where the leader Lease lives) and in any other."""
    cluster = fault_cluster
    operator_kc = _token_kubeconfig(cluster, tmp_path / "operator.kubeconfig")
    nobody_kc = cluster.service_account_kubeconfig("default", "nobody", tmp_path / "nobody.kubeconfig")
    cluster.create_namespace("faults-rbac")
    declared = _needs_as_grants()
    for namespace, expected in (
        (OPERATOR_NAMESPACE, declared),
        ("faults-rbac", {g for g in declared if g[:2] != ("coordination.k8s.io", "leases")}),
    ):
        baseline = _can_i_list(cluster, nobody_kc, namespace)
        held = _can_i_list(cluster, operator_kc, namespace) - baseline
        assert held - expected == set(), f"extra in {namespace}"
        assert expected - held == set(), f"missing in {namespace}"
    record(
        "least privilege",
        "kubectl auth can-i --list for the chart's ServiceAccount vs tritonscale.permissions",
        "no extra verb, none missing",
        verbs_held=len(declared),
    )


def test_a_namespaced_install_manages_its_namespaces_and_can_touch_no_other(
    fault_cluster: Cluster, tmp_path: Path
) -> None:
    """`operator.watchNamespaces`: the chart binds the operator's role in those namespaces only
    (nodes, which have no namespace, stay readable cluster-wide). The operator, run as the chart
    runs it with that release's ServiceAccount, serves a watched namespace, leaves an
    InferenceService elsewhere alone, is never refused, and holds no right outside."""
    cluster = fault_cluster
    watched, other = "faults-ns-watched", "faults-ns-other"
    for ns in (watched, other):
        cluster.create_namespace(ns)
    cluster.helm(
        "install", "scoped", str(CHART), "-n", "faults-scoped", "--create-namespace", "--skip-crds",
        "--set", f"operator.watchNamespaces={{{watched}}}", "--wait", "--timeout", "2m",
    )  # fmt: skip
    kubeconfig = cluster.service_account_kubeconfig(
        "faults-scoped", "scoped-tritonscale", tmp_path / "scoped.kubeconfig", create=False
    )
    nobody = cluster.service_account_kubeconfig("default", "nobody", tmp_path / "nobody.kubeconfig")
    operator = OperatorProcess(
        kubeconfig,
        tmp_path / "operator.log",
        f"--namespace={watched}",
        "--leader-election-namespace=faults-scoped",
    )
    for ns in (watched, other):
        cluster.apply_yaml(make_inference_service("scoped", ns, spec__replicas=1))
    with running(operator):
        _wait_settled(cluster, operator, watched, {"scoped": 1})
        time.sleep(3)
    untouched = cluster.get_json("inferenceservice", "scoped", namespace=other)
    assert not untouched.get("status"), untouched.get("status")
    assert _children(cluster, other) == []
    log = (tmp_path / "operator.log").read_text()
    assert "forbidden" not in log.lower(), log[-3000:]
    outside = _can_i_list(cluster, kubeconfig, other) - _can_i_list(cluster, nobody, other)
    assert outside == {("", "nodes", "", "list"), ("", "nodes", "", "watch")}, outside
    record(
        "least privilege",
        "namespaced install (operator.watchNamespaces), an InferenceService in an unwatched namespace",
        "served the watched namespace, never refused; the other untouched; no right there but nodes",
        rights_outside=len(outside),
    )


def _while_unready(cluster: Cluster, received: str) -> bool:
    """Whether an audit event's requestReceivedTimestamp falls between an API server restart and
    its /readyz passing."""
    at = datetime.fromisoformat(received)
    return any(started <= at <= ready for started, ready in cluster.apiserver_unready)


def test_every_request_the_operators_made_was_a_declared_need(fault_cluster: Cluster) -> None:
    """Runs after the fault tests of this module: the API server's audit of every request the
    operators made (reconciles, resyncs, status, autoscaling ticks, the Lease) shows nothing the
    permissions do not declare; the chart grants only those, so nothing was refused either.
    (Except by an API server restarted moments before and not yet ready: it serves requests
    before its RBAC informers have synced the grants, and refuses them, kubernetes#101422. A CI
    run saw one such refusal.)"""
    user = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"
    declared = {(g, r, v) for g, r, _, v in _needs_as_grants()}
    observed: dict[tuple[str, str, str], int] = {}
    refused: list[str] = []
    refused_while_unready = 0
    for event in fault_cluster.audit_events(user):
        ref = event.get("objectRef")
        if not ref or ref.get("apiGroup") == "authorization.k8s.io":  # discovery, can-i
            continue
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        key = (ref.get("apiGroup", ""), resource, event["verb"])
        observed[key] = observed.get(key, 0) + 1
        status = event.get("responseStatus", {})
        if status.get("code") == 403 and _while_unready(fault_cluster, event["requestReceivedTimestamp"]):
            refused_while_unready += 1
        elif status.get("code") == 403:
            refused.append(
                f"{event.get('requestReceivedTimestamp')} {event['verb']} {resource} "
                f"in {ref.get('namespace')!r}: {status.get('message')}"
            )
    assert sum(observed.values()) > 100, "the fault tests made too few requests to judge"
    assert set(observed) - declared == set()
    assert refused == [], "\n".join(refused)
    record(
        "least privilege",
        "the API server's audit of every operator request in the fault tests",
        f"{sum(observed.values())} requests, all within the declared needs, none refused "
        f"({refused_while_unready} by a restarted API server before /readyz)",
        requests=sum(observed.values()),
        needs_used=f"{len(set(observed))} of {len(declared)}",
    )
