"""The committed CRD is what the models generate, and it is one users can live with."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tritonscale.api.crd import custom_resource_definition, render_crd_yaml

ROOT = Path(__file__).parents[2]
CRD_PATH = ROOT / "crds" / "inferenceservices.tritonscale.io.yaml"
CHART_CRD_PATH = ROOT / "charts" / "tritonscale" / "crds" / "inferenceservices.tritonscale.io.yaml"


def _version() -> dict[str, Any]:
    versions: list[dict[str, Any]] = custom_resource_definition()["spec"]["versions"]
    return versions[0]


def _schema_nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _schema_nodes(child, f"{path}.{name}")
    if "items" in node:
        yield from _schema_nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _schema_nodes(node["additionalProperties"], f"{path}{{}}")


def test_committed_crd_matches_the_models() -> None:
    assert CRD_PATH.read_text() == render_crd_yaml(), (
        "crds/ is stale: run `python -m tritonscale.api.crd > crds/inferenceservices.tritonscale.io.yaml`"
    )


def test_chart_carries_the_same_crd() -> None:
    if not CHART_CRD_PATH.parent.parent.exists():
        pytest.fail("the Helm chart is missing")
    assert CHART_CRD_PATH.read_text() == CRD_PATH.read_text(), "copy crds/ into charts/tritonscale/crds/"


def test_names_and_subresources() -> None:
    crd = custom_resource_definition()
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"], names["categories"]) == (
        "InferenceService",
        "inferenceservices",
        ["tis"],
        ["tritonscale"],
    )
    version = _version()
    assert version["name"] == "v1alpha1"
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }


def test_printer_columns() -> None:
    columns = [c["name"] for c in _version()["additionalPrinterColumns"] if c.get("priority", 0) == 0]
    assert columns == ["Ready", "Status", "On-Demand", "Spot", "Latency", "Rate", "Policy", "Age"]
    # What the chart's install notes say `kubectl get tis` shows, and the short name it uses.
    notes = (ROOT / "charts" / "tritonscale" / "templates" / "NOTES.txt").read_text()
    assert f"kubectl get tis -A            # {', '.join(columns)}\n" in notes


def test_every_field_is_described_and_typed() -> None:
    spec = _version()["schema"]["openAPIV3Schema"]["properties"]["spec"]
    status = _version()["schema"]["openAPIV3Schema"]["properties"]["status"]
    for root, schema in (("spec", spec), ("status", status)):
        for path, node in _schema_nodes(schema, root):
            if path.endswith(("[]", "{}")):
                continue
            assert node.get("description"), f"{path} has no description (kubectl explain shows nothing)"
            assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"


def test_schema_is_structural() -> None:
    """No JSON-Schema constructs the API server refuses in a structural schema."""
    text = yaml.safe_dump(_version()["schema"])
    for forbidden in ("$ref", "$defs", "null", "propertyNames", "patternProperties", "title:"):
        assert forbidden not in text, forbidden
    for path, node in _schema_nodes(_version()["schema"]["openAPIV3Schema"]):
        assert node.get("additionalProperties") is not False, path
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string") is True, path


def test_cross_field_rules_are_cel_with_field_paths() -> None:
    rules = [
        (path, rule)
        for path, node in _schema_nodes(_version()["schema"]["openAPIV3Schema"])
        for rule in node.get("x-kubernetes-validations", [])
    ]
    by_message = {rule["message"]: (path, rule) for path, rule in rules}
    path, rule = by_message["maxReplicas must be greater than or equal to minReplicas"]
    assert path == ".spec.properties.autoscaling" or path.endswith(".autoscaling")
    assert rule["rule"] == "self.minReplicas <= self.maxReplicas"
    assert rule["fieldPath"] == ".maxReplicas"
    assert all(rule.get("fieldPath", ".").startswith(".") for _, rule in rules)


def test_nested_objects_default_so_the_api_server_fills_their_defaults() -> None:
    spec = _version()["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["capacity"]["default"] == {}
    assert spec["loadBalancing"]["properties"]["router"]["default"] == {}
    # Optional blocks must stay absent, or a rule like "custom only with the custom preset" fires.
    assert "default" not in spec["autoscaling"]
    assert "default" not in spec["accelerator"]
    assert "default" not in spec["capacity"]["properties"]["custom"]


def test_no_optional_object_gets_a_default_however_deep() -> None:
    """Every field that is None unless set (at any depth, also inside another optional object or
    a list item) stays absent in the CRD: a {} default would be stored with every object and
    change its meaning (router clients' namespaceSelector left out means this namespace; {} means
    every namespace)."""
    import types
    import typing

    import pydantic

    from tritonscale.api.spec import InferenceServiceSpec

    def optional_paths(model: type[pydantic.BaseModel], path: str) -> Iterator[str]:
        for name, field in model.model_fields.items():
            alias = field.alias or name
            union = typing.get_origin(field.annotation) in (typing.Union, types.UnionType)
            args = typing.get_args(field.annotation) if union else (field.annotation,)
            if field.default is None and type(None) in args:
                yield f"{path}.{alias}"
            candidates = [a for a in args if a is not type(None)]
            for candidate in candidates:
                item = typing.get_args(candidate)[0] if typing.get_origin(candidate) is list else candidate
                if isinstance(item, type) and issubclass(item, pydantic.BaseModel):
                    suffix = "[]" if typing.get_origin(candidate) is list else ""
                    yield from optional_paths(item, f"{path}.{alias}{suffix}")

    nodes = dict(_schema_nodes(_version()["schema"]["openAPIV3Schema"]["properties"]["spec"], ".spec"))
    optional = list(optional_paths(InferenceServiceSpec, ".spec"))
    assert ".spec.loadBalancing.router.clients[].namespaceSelector" in optional
    for path in optional:
        assert "default" not in nodes[path], f"{path} gets a default in the CRD"
