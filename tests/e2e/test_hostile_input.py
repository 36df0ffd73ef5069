"""Bad input (issue 13) on the real control plane: a corpus of hostile resources applied over a
Ready InferenceService, as a user's `kubectl apply --server-side` would apply them.

Each is refused by the API server (schema, CEL, strict field validation, size limits); or
accepted and reported in status by the operator (Degraded=True, InvalidSpec) where the schema
cannot say it; or it changes nothing the operator reads (a `status` sent to the main resource).
A drawn body that the API server would store as a valid spec (it drops null fields, as users
unset a field) is not hostile: a server-side dry run tells, and it is counted, not applied.
A schema can only refuse what is applied under it: resources stored under an earlier CRD keep
what it let through. So the cases that a newer CRD refuses (NUL characters, which no process can
receive) are also applied under the previous release's CRD (tests/e2e/data/release-2026-12-01),
and there the operator must report them. Whatever happens, the operator writes no child: the API server's audit log shows no write by
the operator's ServiceAccount to the service's ConfigMaps, Services, Deployments or
PodDisruptionBudgets while the corpus is applied, their generations and resourceVersions are
unchanged, and the service is Ready again once its spec is restored.

The corpus: NAMED_CASES (huge numbers, megabyte strings, unicode that looks like ASCII, control
characters, conflicting fields, wrong types, unknown fields, deep nesting, forged status) and
DRAWN_CASES bodies drawn by tests/fuzzing.py's `mutated_bodies()` (derandomized) that the model
refuses, each renamed to the healthy service.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from tests.builders import DELETE, make_inference_service, set_path
from tests.e2e.conftest import CHART, OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, OperatorThread
from tests.e2e.faults import audit_time
from tests.e2e.test_operator import CHILD_KINDS, Expected, _children, _condition, _get, wait_settled
from tests.fuzzing import mutated_bodies
from tests.reliability import record
from tritonscale.api.resource import InvalidInferenceService, parse_inference_service
from tritonscale_sandbox.cluster import Cluster

pytestmark = pytest.mark.e2e

NAMESPACE, NAME = "e2e-hostile", "target"
FIELD_MANAGER = "e2e-hostile-user"
DRAWN_CASES = 40
REPORT_TIMEOUT_S = 30.0
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
CHILD_RESOURCES = set(CHILD_KINDS.split(","))

PREVIOUS_CRD = Path(__file__).parent / "data" / "release-2026-12-01" / "crd.yaml"
CURRENT_CRD = CHART / "crds" / "inferenceservices.tritonscale.io.yaml"
STORED_UNDER_PREVIOUS_CRD = ("repository-nul", "image-nul", "arg-nul", "env-value-nul")
"""Named cases the previous release's CRD accepted."""

AUTOSCALING = {"minReplicas": 1, "maxReplicas": 3, "latency": {"targetMilliseconds": 100, "percentile": 95}}


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"a": value}
    return value


# (case id, overrides as {dotted path: value} on the healthy body)
NAMED_CASES: list[tuple[str, dict[str, Any]]] = [
    # huge values
    ("replicas-2^63", {"spec.replicas": 2**63}),
    ("replicas-negative", {"spec.replicas": -1}),
    ("max-replicas-10^9", {"spec.autoscaling": {**AUTOSCALING, "maxReplicas": 10**9}}),
    (
        "target-1e308-ms",
        {"spec.autoscaling": {**AUTOSCALING, "latency": {"targetMilliseconds": 1e308, "percentile": 95}}},
    ),
    ("memory-1e1000Gi", {"spec.triton.resources": {"requests": {"memory": "1e1000Gi"}}}),
    ("model-name-1MiB", {"spec.model.names": ["m" * (1 << 20)]}),
    ("annotation-300KiB", {"metadata.annotations": {"note": "x" * 300_000}}),
    ("args-10k", {"spec.triton.args": ["--log-verbose=1"] * 10_000}),
    # unicode
    ("model-name-rtl-override", {"spec.model.names": ["sim\u202eulated"]}),
    ("model-name-zero-width", {"spec.model.names": ["sim\u200bulated"]}),
    ("model-name-cyrillic-s", {"spec.model.names": ["\u0455imulated"]}),
    ("policy-fullwidth", {"spec.loadBalancing": {"policy": "\uff2c\uff45\uff41\uff53\uff54Connections"}}),
    # control characters
    ("repository-nul", {"spec.model.repository": "s3://models/\x00demo"}),
    ("repository-newline-flag", {"spec.model.repository": "s3://models/demo\n--model-control-mode=none"}),
    ("image-nul", {"spec.triton.image": "nvcr.io/nvidia/tritonserver\x00:24.10-py3"}),
    ("arg-nul", {"spec.triton.args": ["--log-verbose=1\x00--http-port=1"]}),
    ("arg-abbreviated-managed-flag", {"spec.triton.args": ["--http-po=9000"]}),
    ("env-value-nul", {"spec.triton.env": [{"name": "A", "value": "x\x00y"}]}),
    ("env-name-escape", {"spec.triton.env": [{"name": "A\x1b[31m", "value": "x"}]}),
    ("label-value-newline", {"metadata.labels": {"team": "a\nb"}}),
    (
        "node-selector-key-prefix-254",
        {
            "spec.capacity": {
                "nodePoolPreset": "custom",
                "custom": {"onDemand": {"nodeSelector": {"a" * 254 + "/b": "v"}}},
            }
        },
    ),
    (
        "prometheus-url-nul",
        {"spec.autoscaling": {**AUTOSCALING, "metrics": {"prometheusURL": "http://p\x00:9090"}}},
    ),
    # conflicting fields
    ("min-above-max", {"spec.autoscaling": {**AUTOSCALING, "minReplicas": 5, "maxReplicas": 2}}),
    ("on-demand-base-above-max", {"spec.autoscaling": AUTOSCALING, "spec.capacity": {"onDemandBase": 4}}),
    ("spot-fraction-1.5", {"spec.capacity": {"spot": {"enabled": True, "maxFraction": 1.5}}}),
    ("custom-preset-without-custom", {"spec.capacity": {"nodePoolPreset": "custom"}}),
    ("accelerator-count-without-resource", {"spec.accelerator": {"count": 1}}),
    # wrong types, unknown fields, nesting, missing parts
    ("replicas-string", {"spec.replicas": "3"}),
    ("model-names-string", {"spec.model.names": "simulated"}),
    ("unknown-field", {"spec.replica": 3}),
    ("env-nested-100", {"spec.triton.env": _nested(100)}),
    ("model-missing", {"spec.model": DELETE}),
    ("spec-null", {"spec": None}),
    # what the operator does not read from the main resource
    ("status-forged", {"status": {"desiredReplicas": 9, "conditions": []}}),
]


def _healthy() -> dict[str, Any]:
    return make_inference_service(NAME, NAMESPACE, spec__replicas=2)


def _named(overrides: dict[str, Any]) -> Any:
    body = _healthy()
    for dotted, value in overrides.items():
        set_path(body, dotted, value if value is DELETE else copy.deepcopy(value))
    return body


def _renamed(body: Any) -> Any:
    """A drawn body aimed at the healthy service: same name and namespace."""
    if isinstance(body, dict) and isinstance(body.get("metadata"), dict):
        body = copy.deepcopy(body)
        body["metadata"]["name"], body["metadata"]["namespace"] = NAME, NAMESPACE
    return body


def _refused_by_the_model(body: Any) -> bool:
    try:
        parse_inference_service(body)
    except InvalidInferenceService:
        return True
    return False


def _drawn() -> list[tuple[str, Any]]:
    """DRAWN_CASES distinct drawn bodies the model refuses (derandomized: the same every run)."""
    bodies: list[Any] = []

    @settings(
        max_examples=DRAWN_CASES * 4,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=mutated_bodies())
    def collect(case: tuple[Any, list[str]]) -> None:
        bodies.append(_renamed(case[0]))

    collect()
    seen: set[str] = set()
    drawn: list[tuple[str, Any]] = []
    for body in bodies:
        text = _dump(body)
        if text not in seen and _refused_by_the_model(body):
            seen.add(text)
            drawn.append((f"drawn-{len(drawn)}", body))
    return drawn[:DRAWN_CASES]


def _dump(body: Any) -> str:
    return yaml.safe_dump(body, sort_keys=False, allow_unicode=False)


def _child_versions(cluster: Cluster) -> dict[str, tuple[Any, str]]:
    """kind/name: (generation, resourceVersion) of every child; Deployments and budgets change
    resourceVersion with their status, so for them only the generation counts."""
    versions = {}
    for child in _children(cluster, NAMESPACE, NAME):
        meta = child["metadata"]
        status_kind = child["kind"] in ("Deployment", "PodDisruptionBudget")
        versions[f"{child['kind']}/{meta['name']}"] = (
            meta.get("generation"),
            "" if status_kind else meta["resourceVersion"],
        )
    return versions


def _operator_writes(cluster: Cluster, since: float) -> list[dict[str, Any]]:
    """Writes the operator's ServiceAccount made in the namespace since then, as audited."""
    user = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"
    return [
        e
        for e in cluster.audit_events(user)
        if audit_time(e) >= since
        and e["verb"] in WRITE_VERBS
        and e.get("objectRef", {}).get("namespace") == NAMESPACE
    ]


def _describe(event: dict[str, Any]) -> str:
    ref = event["objectRef"]
    return f"{event['verb']} {ref.get('resource')}/{ref.get('name')}"


def _wait(cluster: Cluster, operator: OperatorThread, check: Callable[[], bool], what: str) -> None:
    def checked() -> bool:
        operator.assert_healthy()
        return check()

    try:
        cluster.wait_until(checked, what, timeout_s=REPORT_TIMEOUT_S)
    except TimeoutError:
        status = _get(cluster, NAMESPACE, NAME).get("status", {})
        raise AssertionError(f"{what}: {json.dumps(status.get('conditions'), indent=1)}") from None


def _reports_invalid(cluster: Cluster) -> bool:
    degraded = _condition(_get(cluster, NAMESPACE, NAME), "Degraded")
    return degraded is not None and (degraded["status"], degraded["reason"]) == ("True", "InvalidSpec")


def _ready_again(cluster: Cluster) -> bool:
    obj = _get(cluster, NAMESPACE, NAME)
    ready, degraded = _condition(obj, "Ready"), _condition(obj, "Degraded")
    return (
        obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]
        and ready is not None
        and ready["status"] == "True"
        and (degraded is None or degraded["status"] == "False")
    )


def _apply(cluster: Cluster, text: str) -> tuple[bool, str]:
    result = cluster.kubectl(
        "apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-", input=text, check=False
    )
    return result.returncode == 0, (result.stderr or result.stdout).strip()


def _switch_crd(cluster: Cluster, operator: OperatorThread, crd: Path, nul_accepted: bool) -> None:
    """Apply a CRD and wait until the API server validates with it (a CRD change takes effect
    a moment after the write). The operator is stopped meanwhile: while the API server rebuilds
    the resource's storage it answers 429, which kopf logs at ERROR as it retries, and the
    session's operator log must have no ERROR line (conftest.assert_log_clean)."""
    operator.stop()
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", f"--field-manager={FIELD_MANAGER}", "-f", str(crd)
    )
    probe = _dump(_named(dict(NAMED_CASES)["repository-nul"]))

    def validating() -> bool:
        dry_run = cluster.kubectl(
            "apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "--dry-run=server", "-f", "-",
            input=probe, check=False,
        )  # fmt: skip
        return (dry_run.returncode == 0) == nul_accepted

    cluster.wait_until(validating, f"the API server to validate with {crd}", timeout_s=60)
    cluster.wait_until(
        lambda: cluster.kubectl("get", "tis", "-A", check=False).returncode == 0,
        "InferenceServices to be listed again",
    )
    operator.start()


class Corpus:
    """Applies hostile bodies over the healthy service, restoring it after each, and keeps
    what happened to each."""

    def __init__(self, cluster: Cluster, operator: OperatorThread) -> None:
        self.cluster, self.operator = cluster, operator
        self.healthy = _dump(_healthy())
        self.outcomes: dict[str, str] = {}

    def apply(self, case: str, body: Any) -> str:
        cluster, operator = self.cluster, self.operator
        current = _get(cluster, NAMESPACE, NAME)
        generation = current["metadata"]["generation"]
        # What the API server would store, first: a drawn body may turn valid once admitted
        # (a null field is dropped, as `kubectl apply` users unset a field), and such a spec
        # is not hostile; it is counted and not applied.
        admitted = cluster.kubectl(
            "apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "--dry-run=server", "-o", "json",
            "-f", "-", input=_dump(body), check=False,
        )  # fmt: skip
        if admitted.returncode == 0:
            would_store = json.loads(admitted.stdout)
            if not _refused_by_the_model(would_store) and would_store.get("spec") != current.get("spec"):
                self.outcomes[case] = "valid once admitted"
                return "valid once admitted"
        accepted, message = _apply(cluster, _dump(body))
        if not accepted:
            assert _get(cluster, NAMESPACE, NAME)["metadata"]["generation"] == generation, case
            self.outcomes[case] = "refused"
            return "refused"
        stored = _get(cluster, NAMESPACE, NAME)
        if _refused_by_the_model(stored):
            _wait(cluster, operator, lambda: _reports_invalid(cluster), f"{case}: Degraded=True InvalidSpec")
            outcome = "reported"
        else:
            # Accepted, and what was stored is valid: the API server dropped what was hostile.
            assert stored["metadata"]["generation"] == generation, (
                f"{case}: accepted, stored as a valid spec and a new generation: {stored['spec']}"
            )
            outcome = "unchanged"
        restored, message = _apply(cluster, self.healthy)
        assert restored, message
        _wait(cluster, operator, lambda: _ready_again(cluster), f"{case}: Ready again after the restore")
        self.outcomes[case] = outcome
        return outcome

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes.values() if o == outcome)


@pytest.mark.timeout(900)
def test_hostile_resources_are_refused_or_reported_and_never_touch_children(
    cluster: Cluster, operator: OperatorThread
) -> None:
    cluster.create_namespace(NAMESPACE)
    corpus = Corpus(cluster, operator)
    applied, message = _apply(cluster, corpus.healthy)
    assert applied, message
    wait_settled(cluster, operator, NAMESPACE, NAME, Expected(replicas=2, on_demand=2, spot=0))
    before = _child_versions(cluster)
    assert len(before) == 7, before

    cases = [(case, _named(overrides)) for case, overrides in NAMED_CASES] + _drawn()
    assert len(cases) >= len(NAMED_CASES) + DRAWN_CASES // 2, "too few drawn cases the model refuses"
    began = time.time()
    try:
        for case, body in cases:
            corpus.apply(case, body)
        refused_by_this_crd = sorted(
            case for case, outcome in corpus.outcomes.items() if outcome == "refused"
        )
        try:
            _switch_crd(cluster, operator, PREVIOUS_CRD, nul_accepted=True)
            under_previous = {
                case: corpus.apply(f"{case} (previous CRD)", _named(dict(NAMED_CASES)[case]))
                for case in STORED_UNDER_PREVIOUS_CRD
            }
        finally:
            _switch_crd(cluster, operator, CURRENT_CRD, nul_accepted=False)
    finally:
        # Whatever failed, the service goes back to its healthy spec (a drawn body may ask for
        # capacity other tests need).
        _apply(cluster, corpus.healthy)

    audited = _operator_writes(cluster, began)
    # The audit log does see this operator: it wrote the status of each reported case.
    assert any(e["objectRef"].get("subresource") == "status" for e in audited), audited
    writes = [_describe(e) for e in audited if e["objectRef"].get("resource") in CHILD_RESOURCES]
    assert writes == [], f"the operator wrote children while hostile specs were applied: {writes}"
    assert _child_versions(cluster) == before
    wait_settled(cluster, operator, NAMESPACE, NAME, Expected(replicas=2, on_demand=2, spot=0))
    print(json.dumps(corpus.outcomes, indent=1))
    assert set(STORED_UNDER_PREVIOUS_CRD) <= set(refused_by_this_crd)
    named = {case for case, _ in NAMED_CASES}
    assert not [c for c, o in corpus.outcomes.items() if c in named and o == "valid once admitted"], (
        corpus.outcomes
    )
    assert under_previous == dict.fromkeys(STORED_UNDER_PREVIOUS_CRD, "reported"), under_previous
    refused, reported, unchanged, valid = (
        corpus.count(o) for o in ("refused", "reported", "unchanged", "valid once admitted")
    )
    record(
        "Hostile resources",
        f"{len(cases)} hostile InferenceServices applied over a Ready one ({len(NAMED_CASES)} named: "
        "huge values, unicode, control characters, conflicting fields, wrong types; "
        f"{len(cases) - len(NAMED_CASES)} drawn by hypothesis); {len(under_previous)} NUL cases again "
        "as stored under the previous release's CRD",
        f"{refused} refused by the API server, {unchanged} changed nothing (status sent to the main resource), "
        f"{valid} drawn turned valid once admitted (null fields dropped) and were not applied; "
        f"under the previous CRD {reported} of {len(under_previous)} reported InvalidSpec in status; "
        f"0 child writes",
        cases=len(cases) + len(under_previous),
        refused=refused,
        reported=reported,
        unchanged=unchanged,
        valid_once_admitted=valid,
        child_writes=len(writes),
    )
    cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false")
