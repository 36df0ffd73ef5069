"""The reconcile loop against an in-memory cluster: idempotent, careful, and honest in status."""

from __future__ import annotations

import copy
import gc
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.builders import make_inference_service
from tests.unit.fakes import FakeCluster
from tritonscale.api.status import CONDITION_MESSAGE_MAX, ConditionStatus, ConditionType
from tritonscale.errors import ConflictError, NamespaceTerminatingError, RejectedError, TransientError
from tritonscale.policy.pod_fields import stack_pod_view
from tritonscale.reconcilers.stack import StackReconciler
from tritonscale.status import set_condition

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def stack_reconciler(cluster: FakeCluster, watched: bool, **options: Any) -> StackReconciler:
    """The reconciler; with `watched`, the stack's pods come from a watch that keeps only
    policy.pod_fields' view of each (as clients.pod_watch does), and the tests check that no
    list was needed (only an eviction lists): whatever the status reads must be in that view."""
    if not watched:
        return StackReconciler(cluster, **options)
    return StackReconciler(
        cluster,
        watched_pods=lambda ns, selector: [stack_pod_view(p) for p in cluster.matching_pods(ns, selector)],
        **options,
    )


def setup(watched: bool = False, **overrides: Any) -> tuple[FakeCluster, StackReconciler]:
    cluster = FakeCluster()
    cluster.add_service(make_inference_service(name="resnet", namespace="vision", **overrides))
    return cluster, stack_reconciler(cluster, watched, clock=lambda: NOW)


def conditions(cluster: FakeCluster) -> dict[str, tuple[str, str]]:
    status = cluster.services[("vision", "resnet")]["status"]
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_first_reconcile_creates_the_stack_and_reports_progress() -> None:
    cluster, reconciler = setup(spec__replicas=3)
    outcome = reconciler.reconcile("vision", "resnet")
    assert outcome is not None and outcome.applied == 7
    kinds = sorted(kind for kind, _, _ in cluster.objects)
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "Deployment",
        "PodDisruptionBudget",
        "PodDisruptionBudget",
        "Service",
        "Service",
    ]
    assert cluster.deployment("vision", "resnet-ondemand")["spec"]["replicas"] == 3
    status = cluster.services[("vision", "resnet")]["status"]
    assert status["desiredReplicas"] == 3 and status["replicas"] == 0
    assert status["endpoint"] == "http://resnet.vision.svc:8000"
    assert conditions(cluster)["Ready"] == ("False", "NoReadyReplicas")
    assert conditions(cluster)["Progressing"] == ("True", "RollingOut")
    assert ("Normal", "Reconciled") in [(t, r) for t, r, _ in cluster.events]


def test_status_follows_the_pods_and_ready_is_announced_once() -> None:
    cluster, reconciler = setup(spec__replicas=2)
    reconciler.reconcile("vision", "resnet")
    cluster.make_all_ready()
    reconciler.refresh_status("vision", "resnet")
    assert conditions(cluster)["Ready"] == ("True", "Serving")
    assert cluster.services[("vision", "resnet")]["status"]["replicas"] == 2
    reconciler.refresh_status("vision", "resnet")
    assert [r for _, r, _ in cluster.events].count("Ready") == 1
    # The rollout's end is announced once, with what is serving.
    rolled = [m for _, r, m in cluster.events if r == "RolledOut"]
    assert rolled == ["generation 1 rolled out: 2 Triton replicas and 2 routers ready"]


def test_reconciling_again_changes_nothing() -> None:
    cluster, reconciler = setup(spec__capacity={"spot": {"enabled": True}}, spec__replicas=4)
    reconciler.reconcile("vision", "resnet")
    cluster.make_all_ready()
    reconciler.reconcile("vision", "resnet")
    snapshot = {
        key: (o["metadata"]["generation"], o.get("spec"), o.get("data")) for key, o in cluster.objects.items()
    }
    status = cluster.services[("vision", "resnet")]["status"]
    cluster.calls.clear()
    reconciler.reconcile("vision", "resnet")
    assert {
        key: (o["metadata"]["generation"], o.get("spec"), o.get("data")) for key, o in cluster.objects.items()
    } == snapshot
    assert cluster.services[("vision", "resnet")]["status"] == status
    assert not [c for c in cluster.calls if c[0] in ("status", "delete")]


def test_a_refused_object_leaves_the_stack_untouched() -> None:
    cluster, reconciler = setup()
    cluster.reject = lambda obj: "forbidden" if obj["kind"] == "PodDisruptionBudget" else None
    with pytest.raises(RejectedError, match="forbidden"):
        reconciler.reconcile("vision", "resnet")
    assert not [c for c in cluster.calls if c[0] == "apply"], "dry-run must catch it before any write"
    assert conditions(cluster)["Degraded"] == ("True", "ApplyRejected")
    assert ("Warning", "ApplyRejected") in [(t, r) for t, r, _ in cluster.events]


def test_invalid_spec_is_reported_on_the_resource_and_nothing_is_applied() -> None:
    cluster, reconciler = setup()
    cluster.services[("vision", "resnet")]["spec"]["autoscaling"] = {"minReplicas": 4, "maxReplicas": 2}
    with pytest.raises(RejectedError, match=r"spec\.autoscaling\.maxReplicas"):
        reconciler.reconcile("vision", "resnet")
    assert not cluster.objects
    assert conditions(cluster)["Ready"] == ("False", "InvalidSpec")
    assert any(r == "InvalidSpec" and "spec.autoscaling.maxReplicas" in m for _, r, m in cluster.events)


def test_an_invalid_spec_with_huge_values_is_still_reported_naming_the_fields() -> None:
    # Values the CRD of an earlier release let through (NUL characters), long enough that
    # quoting them whole would exceed what a status condition holds.
    cluster, reconciler = setup()
    spec = cluster.services[("vision", "resnet")]["spec"]
    spec["triton"] = {"env": [{"name": f"V{i}", "value": "\x00" * 4000} for i in range(10)]}
    with pytest.raises(RejectedError, match=r"spec\.triton\.env\[9\]\.value"):
        reconciler.reconcile("vision", "resnet")
    assert not cluster.objects
    assert conditions(cluster)["Ready"] == ("False", "InvalidSpec")
    ready = next(
        c for c in cluster.services[("vision", "resnet")]["status"]["conditions"] if c["type"] == "Ready"
    )
    assert "spec.triton.env[0].value" in ready["message"] and len(ready["message"]) < 4000


def test_a_condition_message_longer_than_a_condition_holds_is_cut_short() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    [condition] = set_condition(
        [], ConditionType.DEGRADED, ConditionStatus.TRUE, "ApplyRejected", "x" * 40000, now, 1
    )
    assert len(condition.message) == CONDITION_MESSAGE_MAX and condition.message.endswith("…")


def test_a_services_lock_is_shared_while_held_and_not_kept_after() -> None:
    _, reconciler = setup()
    first = reconciler.lock("vision", "resnet")
    assert reconciler.lock("vision", "resnet") is first
    assert reconciler.lock("vision", "other") is not first
    del first
    gc.collect()
    assert len(reconciler._locks) == 0


def test_transient_failures_propagate_for_retry() -> None:
    cluster, reconciler = setup()
    cluster.fail_next = "API server unavailable"
    with pytest.raises(TransientError):
        reconciler.reconcile("vision", "resnet")


def test_gone_resource_is_nothing_to_do() -> None:
    cluster = FakeCluster()
    assert StackReconciler(cluster).reconcile("vision", "missing") is None


def test_disabling_spot_keeps_spot_replicas_until_on_demand_is_ready() -> None:
    cluster, reconciler = setup(
        spec__capacity={"onDemandBase": 1, "spot": {"enabled": True}}, spec__replicas=4
    )
    reconciler.reconcile("vision", "resnet")
    cluster.make_all_ready()
    service = cluster.services[("vision", "resnet")]
    service["spec"]["capacity"]["spot"]["enabled"] = False
    service["metadata"]["generation"] = 2
    reconciler.reconcile("vision", "resnet")
    assert ("Deployment", "vision", "resnet-spot") in cluster.objects, (
        "spot capacity dropped before on-demand was ready"
    )
    assert cluster.deployment("vision", "resnet-ondemand")["spec"]["replicas"] == 4
    cluster.make_ready("vision", "resnet-ondemand")
    reconciler.reconcile("vision", "resnet")
    assert ("Deployment", "vision", "resnet-spot") not in cluster.objects


def test_scale_follows_spec_replicas_when_autoscaling_is_off() -> None:
    cluster, reconciler = setup(spec__replicas=2)
    reconciler.reconcile("vision", "resnet")
    cluster.services[("vision", "resnet")]["spec"]["replicas"] = 5  # what `kubectl scale` writes
    reconciler.reconcile("vision", "resnet")
    assert cluster.deployment("vision", "resnet-ondemand")["spec"]["replicas"] == 5


def test_autoscaled_replicas_come_from_the_last_decision_within_bounds() -> None:
    cluster, reconciler = setup(spec__replicas=2, spec__autoscaling={"minReplicas": 1, "maxReplicas": 6})
    cluster.services[("vision", "resnet")]["status"] = {"desiredReplicas": 9}
    reconciler.reconcile("vision", "resnet")
    assert cluster.deployment("vision", "resnet-ondemand")["spec"]["replicas"] == 6


def test_deployments_of_others_are_never_pruned() -> None:
    cluster, reconciler = setup()
    reconciler.reconcile("vision", "resnet")
    stranger = dict(cluster.deployment("vision", "resnet-ondemand"))
    stranger = {
        **stranger,
        "metadata": {**stranger["metadata"], "name": "resnet-old", "ownerReferences": [{"uid": "other"}]},
    }
    cluster.objects[("Deployment", "vision", "resnet-old")] = stranger
    reconciler.reconcile("vision", "resnet")
    assert ("Deployment", "vision", "resnet-old") in cluster.objects


def _foreign(kind: str, name: str, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    references = [owner] if owner else []
    return {
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": "vision",
            "uid": f"uid-{name}",
            "ownerReferences": references,
        },
        "data": {"keep": "me"},
    }


def test_an_object_of_a_childs_name_that_is_not_ours_is_never_adopted() -> None:
    """A user's ConfigMap called resnet-router stays theirs: nothing is written, it is reported."""
    cluster, reconciler = setup()
    mine = _foreign("ConfigMap", "resnet-router")
    cluster.objects[("ConfigMap", "vision", "resnet-router")] = mine
    with pytest.raises(RejectedError, match="ConfigMap resnet-router already exists"):
        reconciler.reconcile("vision", "resnet")
    assert cluster.objects == {("ConfigMap", "vision", "resnet-router"): mine}
    assert conditions(cluster)["Degraded"] == ("True", "NameConflict")
    assert conditions(cluster)["Progressing"] == ("False", "NameConflict")
    warnings = [m for t, r, m in cluster.events if (t, r) == ("Warning", "NameConflict")]
    assert len(warnings) == 1 and "belongs to no InferenceService" in warnings[0]
    # Retrying while the conflict lasts repeats no Event; removing the object lets it through.
    with pytest.raises(RejectedError):
        reconciler.reconcile("vision", "resnet")
    assert [r for _, r, _ in cluster.events].count("NameConflict") == 1
    del cluster.objects[("ConfigMap", "vision", "resnet-router")]
    reconciler.reconcile("vision", "resnet")
    assert (
        cluster.objects[("ConfigMap", "vision", "resnet-router")]["metadata"]["ownerReferences"][0]["name"]
        == "resnet"
    )
    assert conditions(cluster)["Degraded"] == ("False", "AsExpected")


def test_a_new_services_children_are_not_read_and_a_taken_name_is_still_refused() -> None:
    """Nothing of a never-applied service is read (seven 404s per service in a cold start):
    the dry run of the creates finds a taken name, and then everything is read and checked."""
    cluster, reconciler = setup()
    reconciler.reconcile("vision", "resnet")
    assert not [r for r in cluster.reads if r[0] == "get" and r[1] != "NetworkPolicy"]
    assert len(cluster.objects) == 7

    cluster.add_service(make_inference_service(name="bert", namespace="vision"))
    mine = _foreign("Service", "bert-triton")
    cluster.objects[("Service", "vision", "bert-triton")] = mine
    cluster.reads.clear()
    with pytest.raises(RejectedError, match="Service bert-triton already exists"):
        reconciler.reconcile("vision", "bert")
    assert ("get", "Service", "bert-triton") in cluster.reads
    assert [key for key in cluster.objects if key[2].startswith("bert")] == [
        ("Service", "vision", "bert-triton")
    ]
    assert cluster.objects[("Service", "vision", "bert-triton")] == mine


def test_a_taken_name_refused_first_for_another_reason_is_still_a_name_conflict() -> None:
    """The API server validates (and admission webhooks and quotas check) a create before it
    finds the name taken: a refused dry run of a never-applied stack is read and checked too."""
    cluster, reconciler = setup()
    cluster.objects[("ConfigMap", "vision", "resnet-router")] = _foreign("ConfigMap", "resnet-router")
    cluster.reject = lambda obj: "exceeded quota: configmaps" if obj["kind"] == "ConfigMap" else None
    with pytest.raises(RejectedError, match="ConfigMap resnet-router already exists"):
        reconciler.reconcile("vision", "resnet")
    assert conditions(cluster)["Degraded"] == ("True", "NameConflict")


def _fails_then_refuses_without_adopting(
    cluster: FakeCluster, reconciler: StackReconciler, mine: dict[str, Any]
) -> None:
    """A user's ConfigMap resnet-router that appears during the write: the write fails, the
    retry reads it and refuses, and it stays theirs."""
    with pytest.raises(ConflictError):
        reconciler.reconcile("vision", "resnet")
    assert cluster.objects[("ConfigMap", "vision", "resnet-router")] == mine, "not adopted"
    with pytest.raises(RejectedError, match="ConfigMap resnet-router already exists"):
        reconciler.reconcile("vision", "resnet")
    assert cluster.objects[("ConfigMap", "vision", "resnet-router")] == mine


def test_a_name_taken_between_a_new_stacks_dry_run_and_its_create_is_not_adopted() -> None:
    cluster, reconciler = setup()
    mine = _foreign("ConfigMap", "resnet-router")
    writes: list[str] = []

    def user_creates_theirs_after_the_dry_run(obj: dict[str, Any]) -> None:
        writes.append(obj["kind"])
        if writes.count("ConfigMap") == 2:  # the real create, after its dry run passed
            cluster.objects.setdefault(("ConfigMap", "vision", "resnet-router"), copy.deepcopy(mine))

    cluster.before_write = user_creates_theirs_after_the_dry_run
    _fails_then_refuses_without_adopting(cluster, reconciler, mine)


def test_an_object_created_between_the_read_and_the_write_is_not_adopted() -> None:
    """The write names the object it read (none here: ours was deleted by hand), so a user's
    ConfigMap created after the read makes it fail rather than be adopted; the retry reads it
    and refuses."""
    cluster, reconciler = setup()
    reconciler.reconcile("vision", "resnet")
    del cluster.objects[("ConfigMap", "vision", "resnet-router")]
    mine = _foreign("ConfigMap", "resnet-router")

    def user_creates_theirs(obj: dict[str, Any]) -> None:
        cluster.objects.setdefault(("ConfigMap", "vision", "resnet-router"), copy.deepcopy(mine))

    cluster.before_write = user_creates_theirs
    _fails_then_refuses_without_adopting(cluster, reconciler, mine)


def test_a_child_replaced_between_the_read_and_the_write_is_not_adopted() -> None:
    cluster, reconciler = setup()
    reconciler.reconcile("vision", "resnet")
    cluster.services[("vision", "resnet")]["spec"]["replicas"] = 3
    theirs = _foreign("Deployment", "resnet-ondemand")

    def user_replaces_it(obj: dict[str, Any]) -> None:
        if obj["kind"] == "Deployment":
            cluster.objects[("Deployment", "vision", "resnet-ondemand")] = copy.deepcopy(theirs)

    cluster.before_write = user_replaces_it
    with pytest.raises(ConflictError):
        reconciler.reconcile("vision", "resnet")
    assert cluster.objects[("Deployment", "vision", "resnet-ondemand")] == theirs


def test_a_child_of_another_inference_service_is_named_with_its_owner() -> None:
    cluster, reconciler = setup()
    owner = {"kind": "InferenceService", "name": "other", "uid": "uid-other"}
    cluster.objects[("Service", "vision", "resnet")] = _foreign("Service", "resnet", owner)
    with pytest.raises(
        RejectedError, match="Service resnet already exists and belongs to InferenceService other"
    ):
        reconciler.reconcile("vision", "resnet")
    assert list(cluster.objects) == [("Service", "vision", "resnet")]


@pytest.mark.parametrize("watched", [False, True], ids=["listed", "watched"])
def test_unschedulable_pods_surface_with_a_warning_once(watched: bool) -> None:
    cluster, reconciler = setup(watched, spec__replicas=2)
    reconciler.reconcile("vision", "resnet")
    cluster.make_ready("vision", "resnet-router")
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    for index in range(2):
        cluster.pods[("vision", f"resnet-ondemand-{index}")] = {
            "metadata": {
                "name": f"resnet-ondemand-{index}",
                "labels": {
                    "app.kubernetes.io/instance": "resnet",
                    "app.kubernetes.io/managed-by": "tritonscale",
                },
            },
            "status": {
                "conditions": [
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
                ]
            },
        }
    reconciler.refresh_status("vision", "resnet")
    reconciler.refresh_status("vision", "resnet")
    assert conditions(cluster)["Degraded"] == ("True", "Unschedulable")
    assert cluster.pod_lists == (0 if watched else 2)
    assert [m for t, r, m in cluster.events if (t, r) == ("Warning", "Unschedulable")] == [
        f"2 pods cannot be scheduled: {message.rstrip('.')}. "
        "Add nodes they fit on, or lower spec.resources or the replica count"
    ]


def test_a_namespace_being_deleted_is_nothing_to_do() -> None:
    cluster, reconciler = setup()

    def terminating(
        obj: dict[str, Any], *, current: dict[str, Any] | None, dry_run: bool = False
    ) -> dict[str, Any]:
        raise NamespaceTerminatingError("namespace vision is being terminated")

    cluster.apply = terminating  # type: ignore[method-assign]
    assert reconciler.reconcile("vision", "resnet") is None
    assert not cluster.events


def test_an_unchanged_stack_is_not_written_again_but_a_hand_edit_is_put_back() -> None:
    cluster, reconciler = setup(spec__replicas=2)
    reconciler.reconcile("vision", "resnet")
    cluster.calls.clear()
    reconciler.reconcile("vision", "resnet")
    assert not [c for c in cluster.calls if c[0] == "apply"], "an unchanged stack was written again"

    # `kubectl edit` of the router ConfigMap: its manager shows up, so the resync puts it back.
    config = cluster.objects[("ConfigMap", "vision", "resnet-router")]
    config["data"]["haproxy.cfg"] = "edited by hand"
    config["metadata"]["managedFields"] = [{"manager": "kubectl-edit", "operation": "Update"}]
    reconciler.reconcile("vision", "resnet")
    assert [c for c in cluster.calls if c[0] == "apply"] == [
        ("apply", "ConfigMap", "vision", "resnet-router")
    ]
    assert (
        cluster.objects[("ConfigMap", "vision", "resnet-router")]["data"]["haproxy.cfg"] != "edited by hand"
    )


def test_a_resync_of_a_settled_stack_reads_its_deployments_from_one_list() -> None:
    """At 1,000 services the resyncs are most of the operator's steady requests: the listed
    Deployments stand for their own reads, and nothing unwritten is listed twice."""
    cluster, reconciler = setup(spec__capacity={"spot": {"enabled": True}}, spec__replicas=4)
    reconciler.reconcile("vision", "resnet")
    cluster.make_all_ready()
    reconciler.reconcile("vision", "resnet")
    cluster.reads.clear()
    cluster.dry_runs.clear()
    reconciler.reconcile("vision", "resnet")
    assert not cluster.dry_runs, "a settled stack is neither written nor dry-run"
    assert sorted(cluster.reads) == [
        ("get", "ConfigMap", "resnet-router"),
        ("get", "PodDisruptionBudget", "resnet-router"),
        ("get", "PodDisruptionBudget", "resnet-triton"),
        ("get", "Service", "resnet"),
        ("get", "Service", "resnet-triton"),
        ("list", "Deployment"),
    ]


def test_a_hand_edit_of_a_listed_deployment_is_put_back_and_written_deployments_are_listed_again() -> None:
    cluster, reconciler = setup(spec__replicas=2)
    reconciler.reconcile("vision", "resnet")
    cluster.make_all_ready()
    deployment = cluster.deployment("vision", "resnet-ondemand")
    deployment["spec"]["replicas"] = 9
    deployment["metadata"]["managedFields"] = [{"manager": "kubectl-scale", "operation": "Update"}]
    cluster.calls.clear()
    reconciler.reconcile("vision", "resnet")
    assert ("apply", "Deployment", "vision", "resnet-ondemand") in cluster.calls
    assert cluster.deployment("vision", "resnet-ondemand")["spec"]["replicas"] == 2

    # Deployments written (here the new spot pool) are listed again, for the status and the
    # pruning that follow; a write of others is not.
    cluster.services[("vision", "resnet")]["spec"]["capacity"] = {"spot": {"enabled": True}}
    cluster.services[("vision", "resnet")]["spec"]["replicas"] = 4
    cluster.reads.clear()
    reconciler.reconcile("vision", "resnet")
    assert ("Deployment", "vision", "resnet-spot") in cluster.objects
    assert cluster.reads.count(("list", "Deployment")) == 2
    config = cluster.objects[("ConfigMap", "vision", "resnet-router")]
    config["metadata"]["managedFields"] = [{"manager": "kubectl-edit", "operation": "Update"}]
    cluster.reads.clear()
    cluster.calls.clear()
    reconciler.reconcile("vision", "resnet")
    assert [c for c in cluster.calls if c[0] == "apply"] == [
        ("apply", "ConfigMap", "vision", "resnet-router")
    ]
    assert cluster.reads.count(("list", "Deployment")) == 1


def test_the_entry_a_create_leaves_in_managed_fields_is_not_a_hand_edit() -> None:
    """It stays until the next write that changes the child (KubeClient.apply drops it then)."""
    cluster, reconciler = setup(spec__replicas=2)
    reconciler.reconcile("vision", "resnet")
    for obj in cluster.objects.values():
        obj["metadata"]["managedFields"] = [
            {"manager": "tritonscale", "operation": "Apply"},
            {"manager": "tritonscale", "operation": "Update"},
        ]
    cluster.calls.clear()
    reconciler.reconcile("vision", "resnet")
    assert not [c for c in cluster.calls if c[0] == "apply"]


def test_a_spec_change_writes_only_what_it_changes() -> None:
    cluster, reconciler = setup(spec__replicas=2)
    reconciler.reconcile("vision", "resnet")
    cluster.calls.clear()
    cluster.services[("vision", "resnet")]["spec"]["replicas"] = 3
    outcome = reconciler.reconcile("vision", "resnet")
    # The Deployment, and the Triton budget whose minAvailable follows the desired count.
    assert [c for c in cluster.calls if c[0] == "apply"] == [
        ("apply", "Deployment", "vision", "resnet-ondemand"),
        ("apply", "PodDisruptionBudget", "vision", "resnet-triton"),
    ]
    assert outcome is not None and outcome.applied == 2


def _spot_pod(index: int, scheduled: bool) -> dict[str, Any]:
    condition = {"type": "PodScheduled", "status": "True"}
    if not scheduled:
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/4 nodes are available: 4 node(s) didn't match Pod's node affinity/selector.",
        }
    return {
        "metadata": {
            "name": f"resnet-spot-{index}",
            "labels": {
                "app.kubernetes.io/instance": "resnet",
                "app.kubernetes.io/managed-by": "tritonscale",
                "tritonscale.io/pool": "spot",
            },
        },
        "status": {"conditions": [condition]},
    }


@pytest.mark.parametrize("watched", [False, True], ids=["listed", "watched"])
def test_on_demand_stands_in_for_unschedulable_spot_and_leaves_once_spot_is_back(watched: bool) -> None:
    """The whole loop on the in-memory cluster: trouble, stand-ins, an Event each way, the
    condition in words, and no drop below desired while spot comes back."""
    clock = [NOW]
    cluster = FakeCluster()
    cluster.add_service(
        make_inference_service(
            name="resnet",
            namespace="vision",
            spec__replicas=4,
            spec__capacity={"onDemandBase": 1, "spot": {"enabled": True, "fallbackAfterSeconds": 30}},
        )
    )
    reconciler = stack_reconciler(cluster, watched, clock=lambda: clock[0])

    def advance(seconds: float) -> None:
        clock[0] = clock[0] + timedelta(seconds=seconds)
        reconciler.refresh_status("vision", "resnet")

    def replicas(pool: str) -> int:
        count: int = cluster.deployment("vision", f"resnet-{pool}")["spec"]["replicas"]
        return count

    reconciler.reconcile("vision", "resnet")
    assert (replicas("ondemand"), replicas("spot")) == (1, 3)
    cluster.make_ready("vision", "resnet-router")
    cluster.make_ready("vision", "resnet-ondemand")
    cluster.make_ready("vision", "resnet-spot", ready=0)
    for index in range(3):
        cluster.pods[("vision", f"resnet-spot-{index}")] = _spot_pod(index, scheduled=False)
    advance(0)
    assert conditions(cluster)["SpotFallback"] == ("False", "WaitingForSpot")
    assert conditions(cluster)["Degraded"] == ("True", "Unschedulable")
    advance(29)
    assert replicas("ondemand") == 1
    advance(1)  # 30 s of unschedulable spot: three stand in at once
    assert (replicas("ondemand"), replicas("spot")) == (4, 3)
    status = cluster.services[("vision", "resnet")]["status"]
    assert status["spotFallback"]["standIns"] == 3
    assert conditions(cluster)["SpotFallback"] == ("True", "SpotUnavailable")
    cluster.make_ready("vision", "resnet-ondemand")
    advance(5)
    assert conditions(cluster)["Ready"][0] == "True"  # 4 of 4 desired ready, on on-demand
    assert conditions(cluster)["Degraded"] == ("False", "AsExpected")  # the waiting spot pods are covered
    assert [r for t, r, _ in cluster.events if r == "SpotFallback"] == ["SpotFallback"]

    # Spot is back: pods placed and ready; the stand-ins leave half at a time, one window each.
    for index in range(3):
        cluster.pods[("vision", f"resnet-spot-{index}")] = _spot_pod(index, scheduled=True)
    cluster.make_ready("vision", "resnet-spot")
    seen = []
    for _ in range(40):
        advance(5)
        seen.append(replicas("ondemand"))
        cluster.make_ready("vision", "resnet-ondemand")
        ready = sum(
            cluster.deployment("vision", f"resnet-{pool}")["status"]["readyReplicas"]
            for pool in ("ondemand", "spot")
        )
        assert ready >= 4
    assert seen[0] == 4 and seen[-1] == 1
    assert sorted(set(seen), reverse=True) == [4, 2, 1]  # 3 -> 1 -> 0 stand-ins, 60 s apart
    assert [r for t, r, _ in cluster.events if r == "SpotReturn"] == ["SpotReturn", "SpotReturn"]
    assert cluster.services[("vision", "resnet")]["status"]["spotFallback"]["standIns"] == 0
    assert conditions(cluster)["SpotFallback"] == ("False", "SpotAvailable")
    assert watched is (cluster.pod_lists == 0)


@pytest.mark.parametrize("watched", [False, True], ids=["listed", "watched"])
def test_a_flapping_spot_market_keeps_the_stand_ins_through_status_round_trips(watched: bool) -> None:
    """The fallback's clocks live in status and go through JSON merge patches: a clock that is
    cleared must be cleared in the stored status too, or an old healthySince comes back and a
    stand-in leaves while spot flaps."""
    clock = [NOW]
    cluster = FakeCluster()
    cluster.add_service(
        make_inference_service(
            name="resnet",
            namespace="vision",
            spec__replicas=4,
            spec__capacity={"onDemandBase": 1, "spot": {"enabled": True, "fallbackAfterSeconds": 5}},
        )
    )
    reconciler = stack_reconciler(cluster, watched, clock=lambda: clock[0])
    reconciler.reconcile("vision", "resnet")
    cluster.make_ready("vision", "resnet-router")
    on_demand: list[int] = []
    for cycle in range(6):
        gone = cycle % 2 == 0
        for index in range(3):
            cluster.pods[("vision", f"resnet-spot-{index}")] = _spot_pod(index, scheduled=not gone)
        cluster.make_ready("vision", "resnet-spot", ready=0 if gone else 3)
        for _ in range(6):  # 30 s in 5 s steps
            clock[0] += timedelta(seconds=5)
            reconciler.refresh_status("vision", "resnet")
            cluster.make_ready("vision", "resnet-ondemand")
            on_demand.append(cluster.deployment("vision", "resnet-ondemand")["spec"]["replicas"])
    assert on_demand[-1] == 4 and sorted(set(on_demand)) == [1, 4]
    assert on_demand == sorted(on_demand), f"stand-ins left while spot flapped: {on_demand}"
    assert watched is (cluster.pod_lists == 0)


@pytest.mark.parametrize("watched", [False, True], ids=["listed", "watched"])
def test_spot_pods_on_an_interrupted_node_get_stand_ins_at_once_and_are_drained_once_those_are_ready(
    watched: bool,
) -> None:
    clock = [NOW]
    trouble: dict[str, str] = {}
    cluster = FakeCluster()
    cluster.add_service(
        make_inference_service(
            name="resnet",
            namespace="vision",
            spec__replicas=4,
            spec__capacity={"onDemandBase": 1, "spot": {"enabled": True, "fallbackAfterSeconds": 300}},
        )
    )
    reconciler = stack_reconciler(
        cluster, watched, clock=lambda: clock[0], troubled_nodes=lambda: dict(trouble)
    )
    reconciler.reconcile("vision", "resnet")
    cluster.make_all_ready()
    for index in range(3):
        pod = _spot_pod(index, scheduled=True)
        pod["spec"] = {"nodeName": "spot-a" if index < 2 else "spot-b"}
        cluster.pods[("vision", f"resnet-spot-{index}")] = pod
    reconciler.refresh_status("vision", "resnet")
    assert cluster.deployment("vision", "resnet-ondemand")["spec"]["replicas"] == 1

    # spot-a gets AWS's 2-minute notice: two stand-ins at once, not after fallbackAfterSeconds.
    trouble["spot-a"] = "AWS spot interruption notice (aws-node-termination-handler/spot-itn)"
    clock[0] += timedelta(seconds=1)
    reconciler.refresh_status("vision", "resnet")
    assert cluster.deployment("vision", "resnet-ondemand")["spec"]["replicas"] == 3
    found = conditions(cluster)["SpotFallback"]
    assert found == ("True", "SpotInterrupted")
    message = next(
        c["message"]
        for c in cluster.services[("vision", "resnet")]["status"]["conditions"]
        if c["type"] == "SpotFallback"
    )
    assert message.startswith(
        "2 of 3 spot pods are on nodes being interrupted (spot-a: AWS spot interruption"
    )
    # Surge first: nothing is evicted while the stand-ins start.
    assert not [c for c in cluster.calls if c[0] == "evict"]

    cluster.make_ready("vision", "resnet-ondemand")
    clock[0] += timedelta(seconds=20)
    reconciler.refresh_status("vision", "resnet")
    assert sorted(c for c in cluster.calls if c[0] == "evict") == [
        ("evict", "vision", "resnet-spot-0"),
        ("evict", "vision", "resnet-spot-1"),
    ]
    assert [r for _, r, _ in cluster.events].count("SpotDrained") == 1
    # Evicted pods are terminating: not evicted again (the API server would accept it), and the
    # stand-ins stay.
    lists = cluster.pod_lists
    reconciler.refresh_status("vision", "resnet")
    assert len([c for c in cluster.calls if c[0] == "evict"]) == 2
    assert cluster.deployment("vision", "resnet-ondemand")["spec"]["replicas"] == 3
    if watched:
        # Only the eviction listed: the watch showed the drained pods terminating.
        assert (lists, cluster.pod_lists) == (1, 1)


def test_a_drain_reads_the_pods_afresh_so_a_watch_behind_its_evictions_evicts_nothing_twice() -> None:
    """The watch has not shown the evicted pods terminating yet; the API server would accept
    a second eviction (and the reconciler report them drained again): the list before evicting
    shows them."""
    clock = [NOW]
    trouble = {"spot-a": "node is being drained (cordoned)"}
    cluster = FakeCluster()
    cluster.add_service(
        make_inference_service(
            name="resnet",
            namespace="vision",
            spec__replicas=3,
            spec__capacity={"onDemandBase": 1, "spot": {"enabled": True, "fallbackAfterSeconds": 300}},
        )
    )
    behind: list[dict[str, Any]] = []  # the watch's views, frozen once taken
    reconciler = StackReconciler(
        cluster,
        clock=lambda: clock[0],
        troubled_nodes=lambda: dict(trouble),
        watched_pods=lambda ns, selector: (
            copy.deepcopy(behind) or [stack_pod_view(p) for p in cluster.matching_pods(ns, selector)]
        ),
    )
    reconciler.reconcile("vision", "resnet")
    cluster.make_all_ready()
    for index in range(2):
        pod = _spot_pod(index, scheduled=True)
        pod["spec"] = {"nodeName": "spot-a"}
        cluster.pods[("vision", f"resnet-spot-{index}")] = pod
    reconciler.refresh_status("vision", "resnet")  # stand-ins asked for
    behind.extend(stack_pod_view(p) for p in cluster.matching_pods("vision", {}))
    cluster.make_ready("vision", "resnet-ondemand")
    for _ in range(3):
        clock[0] += timedelta(seconds=5)
        reconciler.refresh_status("vision", "resnet")
    assert sorted(c for c in cluster.calls if c[0] == "evict") == [
        ("evict", "vision", "resnet-spot-0"),
        ("evict", "vision", "resnet-spot-1"),
    ]
    assert [r for _, r, _ in cluster.events].count("SpotDrained") == 1


def _new_generation(cluster: FakeCluster, **spec: Any) -> None:
    service = cluster.services[("vision", "resnet")]
    service["spec"].update(spec)
    service["metadata"]["generation"] = service["metadata"].get("generation", 1) + 1


def test_a_status_refresh_claims_no_generation_it_did_not_apply_and_keeps_a_refusal() -> None:
    """A child event refreshes status without applying: it must not report the newest spec as
    observed (CI gates on observedGeneration), nor clear the refusal of it."""
    cluster, reconciler = setup(spec__replicas=2)
    reconciler.reconcile("vision", "resnet")
    cluster.make_all_ready()
    reconciler.refresh_status("vision", "resnet")
    applied = cluster.services[("vision", "resnet")]["status"]["observedGeneration"]

    _new_generation(cluster, replicas=5)  # kopf's update handler has not run yet
    reconciler.refresh_status("vision", "resnet")
    assert cluster.services[("vision", "resnet")]["status"]["observedGeneration"] == applied

    cluster.reject = lambda obj: "admission webhook denied" if obj["kind"] == "Deployment" else None
    with pytest.raises(RejectedError):
        reconciler.reconcile("vision", "resnet")
    events = len(cluster.events)
    reconciler.refresh_status("vision", "resnet")  # a pod of the old stack restarted
    status = cluster.services[("vision", "resnet")]["status"]
    assert status["observedGeneration"] == applied
    assert conditions(cluster)["Degraded"] == ("True", "ApplyRejected")
    assert len(cluster.events) == events, "a refresh flapped Degraded"

    cluster.reject = lambda obj: None
    reconciler.reconcile("vision", "resnet")
    assert cluster.services[("vision", "resnet")]["status"]["observedGeneration"] == applied + 1
    assert conditions(cluster)["Degraded"] == ("False", "AsExpected")


def test_a_service_deleted_and_created_again_waits_seconds_for_its_predecessors_children() -> None:
    """`kubectl delete` then `apply` of the same name: the old children go by garbage collection
    within seconds; meanwhile they are not a name conflict (that would wait for the resync)."""
    cluster, reconciler = setup()
    reconciler.reconcile("vision", "resnet")
    cluster.services[("vision", "resnet")]["metadata"]["uid"] = "uid-created-again"
    cluster.services[("vision", "resnet")].pop("status", None)
    with pytest.raises(TransientError, match="deleted before this one was created") as raised:
        reconciler.reconcile("vision", "resnet")
    assert raised.value.delay <= 5.0
    for key in [k for k in cluster.objects if k[0] != "Deployment"][:2]:
        del cluster.objects[key]  # the collector is part way through
    with pytest.raises(TransientError):
        reconciler.reconcile("vision", "resnet")
    cluster.objects.clear()
    reconciler.reconcile("vision", "resnet")
    assert {o["metadata"]["ownerReferences"][0]["uid"] for o in cluster.objects.values()} == {
        "uid-created-again"
    }


def test_an_inference_service_being_deleted_is_never_written_to() -> None:
    """Foreground deletion removes the children first while the resource still exists: a child's
    deletion event must not make the operator write it back."""
    cluster, reconciler = setup()
    reconciler.reconcile("vision", "resnet")
    cluster.services[("vision", "resnet")]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    cluster.objects.clear()
    calls = len(cluster.calls)
    assert reconciler.reconcile("vision", "resnet") is None
    assert reconciler.refresh_status("vision", "resnet") is None
    assert not cluster.objects
    assert [c for c in cluster.calls[calls:] if c[0] != "get_inference_service"] == []
