"""The chart's RBAC grants exactly what tritonscale.permissions says the operator needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tritonscale.permissions import LEADER_LEASE, LEADER_NEEDS, NODE_NEEDS, OPERATOR_NEEDS, grants

TEMPLATES = Path(__file__).parents[2] / "charts" / "tritonscale" / "templates"


def _documents(template: str) -> list[dict[str, Any]]:
    """The template's YAML with its Helm directives and templated lines left out (the rules are
    literal)."""
    text = "\n".join(line for line in (TEMPLATES / template).read_text().splitlines() if "{{" not in line)
    return [d for d in yaml.safe_load_all(text) if d]


def _granted(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_the_cluster_roles_grant_exactly_the_operators_needs() -> None:
    namespaced, nodes = _documents("clusterrole.yaml")
    assert namespaced["kind"] == nodes["kind"] == "ClusterRole"
    assert _granted(namespaced["rules"]) == grants(OPERATOR_NEEDS)
    assert _granted(nodes["rules"]) == grants(NODE_NEEDS)
    assert not any("resourceNames" in rule for rule in namespaced["rules"] + nodes["rules"])


def test_the_leader_role_grants_exactly_the_lease_needs_on_the_one_lease() -> None:
    role = next(d for d in _documents("role.yaml") if d["kind"] == "Role")
    assert _granted(role["rules"]) == grants(LEADER_NEEDS)
    named = [r for r in role["rules"] if set(r["verbs"]) & {"get", "update"}]
    # Limited to the Lease the operator is told to use (--leader-election-name), by default the
    # one the operator uses when not told.
    assert len(named) == 1
    lines = (TEMPLATES / "role.yaml").read_text().splitlines()
    after_named = lines[lines.index("    verbs: [get, update]") - 1]
    assert after_named.strip() == "resourceNames: [{{ .Values.operator.leaderElectionLease | quote }}]"
    values = yaml.safe_load((TEMPLATES.parent / "values.yaml").read_text())
    assert values["operator"]["leaderElectionLease"] == LEADER_LEASE
    deployment = (TEMPLATES / "deployment.yaml").read_text()
    assert "- --leader-election-name={{ .Values.operator.leaderElectionLease }}" in deployment
    # create cannot be limited by name (the name is not known before the object exists)
    assert all("resourceNames" not in r for r in role["rules"] if r["verbs"] == ["create"])
