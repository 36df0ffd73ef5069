"""Generate the InferenceService CRD from the pydantic models.

The models are the one description of the API; `crds/inferenceservices.tritonscale.io.yaml` is
this module's output (`python -m tritonscale.api.crd > crds/...`), and a unit test fails when the
committed file and the models disagree.

Pydantic emits JSON Schema 2020-12; Kubernetes wants a structural OpenAPI v3.0 schema. The
translation inlines references, drops nulls from optionals, turns `int | str` into
`x-kubernetes-int-or-string`, gives nested objects a `{}` default so the API server fills in
their own defaults, and turns constrained map keys into CEL rules.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Iterator
from typing import Any

from tritonscale.api.base import cut_short
from tritonscale.api.resource import (
    CATEGORIES,
    GROUP,
    KIND,
    NAME_RULE_CEL,
    NAME_RULE_MESSAGE,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
)
from tritonscale.api.spec import InferenceServiceSpec
from tritonscale.api.status import InferenceServiceStatus
from tritonscale.yamlfmt import dump

_DROPPED_KEYS = {"title", "additionalProperties", "propertyNames", "patternProperties", "$defs"}


def _cel_quote(pattern: str) -> str:
    return "r'" + pattern.replace("'", "\\'") + "'"


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    """Translate one pydantic JSON-schema node into a structural OpenAPI v3.0 node."""
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **node}
    if "anyOf" in node:
        members = [m for m in node.pop("anyOf") if m.get("type") != "null"]
        types = sorted(m.get("type", "") for m in members)
        if types == ["integer", "string"]:
            string_member = next(m for m in members if m["type"] == "string")
            integer_member = next(m for m in members if m["type"] == "integer")
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
            node["x-kubernetes-int-or-string"] = True
            # Each bound applies to its own type only (OpenAPI), so both sit on the node; the
            # string's length also bounds what CEL rules over the value may cost.
            for key in ("pattern", "maxLength", "minLength"):
                if key in string_member:
                    node[key] = string_member[key]
            for key in ("minimum", "maximum"):
                if key in integer_member:
                    node[key] = integer_member[key]
        elif len(members) == 1:
            # The one member, unprocessed: its properties are translated once, below, where an
            # optional nested object is still recognisable by its anyOf (and gets no {} default).
            member = dict(members[0])
            if "$ref" in member:
                member = {**defs[member.pop("$ref").rsplit("/", 1)[-1]], **member}
            node = {**member, **node}
            if node.get("default") is None:
                node.pop("default", None)
            return _structural(node, defs)
        else:
            raise ValueError(f"cannot express a union in a structural schema: {members}")
    # JSON Schema 2020 bounds (pydantic's gt/lt) in OpenAPI v3 form: a bound and a flag.
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(exclusive), int | float) and not isinstance(node[exclusive], bool):
            node[bound] = node.pop(exclusive)
            node[exclusive] = True

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "properties":
            out[key] = {name: _structural(child, defs) for name, child in value.items()}
            for name, child in out[key].items():
                # Nested objects default to {} so the API server applies their own defaults;
                # optional objects (None by default) stay absent.
                optional = "anyOf" in value[name] or name in node.get("required", [])
                nested_object = child.get("type") == "object" and "properties" in child
                if nested_object and "default" not in child and not optional:
                    child["default"] = {}
        elif key == "items":
            out[key] = _structural(value, defs)
        else:
            out[key] = value

    if node.get("type") == "object" and "properties" not in node:
        value_schemas = list(node.get("patternProperties", {}).values())
        value_schema = value_schemas[0] if value_schemas else node.get("additionalProperties", {})
        out["additionalProperties"] = _structural(value_schema, defs) if value_schema else {"type": "string"}
        key_rules = _map_key_rules(node)
        if key_rules:
            out["x-kubernetes-validations"] = key_rules + out.get("x-kubernetes-validations", [])
    return out


def _map_key_rules(node: dict[str, Any]) -> list[dict[str, str]]:
    patterns = list(node.get("patternProperties", {}))
    max_length = node.get("propertyNames", {}).get("maxLength")
    rules = []
    if patterns:
        rules.append(
            {
                "rule": f"self.all(k, k.matches({_cel_quote(patterns[0])}))",
                "message": f"keys must match {patterns[0]}",
            }
        )
    if max_length:
        rules.append(
            {
                "rule": f"self.all(k, size(k) <= {max_length})",
                "message": f"keys must be at most {max_length} characters",
            }
        )
    # A key type's own rules are written on `self`, the key; on the map they hold for every key.
    for key_rule in node.get("propertyNames", {}).get("x-kubernetes-validations", []):
        assert key_rule["rule"].startswith("self."), key_rule
        rules.append({**key_rule, "rule": "self.all(k, k." + key_rule["rule"].removeprefix("self.") + ")"})
    return rules


_KEY_ORDER = ("type", "description", "default", "enum")


def _readable(node: Any) -> Any:
    """Order schema keys for people: type, description and default first, children last."""
    if isinstance(node, list):
        return [_readable(item) for item in node]
    if not isinstance(node, dict):
        return node
    first = [key for key in _KEY_ORDER if key in node]
    last = [key for key in ("properties", "items", "additionalProperties") if key in node]
    middle = sorted(key for key in node if key not in first and key not in last)
    return {
        key: node[key] if key in ("default", "enum") else _readable(node[key])
        for key in first + middle + last
    }


def openapi_schema(model: type[Any]) -> dict[str, Any]:
    """The structural OpenAPI v3.0 schema of a pydantic model, as the CRD carries it."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    result: dict[str, Any] = _readable(_structural(schema, schema.get("$defs", {})))
    return result


def _printer_columns() -> list[dict[str, Any]]:
    return [
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": ".status.readyOfDesired",
            "description": "Ready of desired Triton replicas.",
        },
        {
            "name": "Status",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
            "description": "Why the stack is or is not ready (the Ready condition's reason).",
        },
        {
            "name": "On-Demand",
            "type": "integer",
            "jsonPath": ".status.onDemandReplicas",
            "description": "Ready Triton replicas on on-demand capacity.",
        },
        {
            "name": "Spot",
            "type": "integer",
            "jsonPath": ".status.spotReplicas",
            "description": "Ready Triton replicas on spot capacity.",
        },
        {
            "name": "Latency",
            "type": "string",
            "jsonPath": ".status.latencyOfObjective",
            "description": "Measured latency against the objective at its percentile; empty without autoscaling.",
        },
        {
            "name": "Rate",
            "type": "number",
            "jsonPath": ".status.observedRateRps",
            "description": "Arrival rate (req/s) the autoscaler last measured.",
        },
        {
            "name": "Policy",
            "type": "string",
            "jsonPath": ".spec.loadBalancing.policy",
            "description": "Router balancing policy.",
        },
        {
            "name": "Routers",
            "type": "integer",
            "jsonPath": ".status.routerReplicas",
            "priority": 1,
            "description": "Ready router replicas.",
        },
        {
            "name": "Endpoint",
            "type": "string",
            "jsonPath": ".status.endpoint",
            "priority": 1,
            "description": "URL clients call.",
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def custom_resource_definition() -> dict[str, Any]:
    """The InferenceService CustomResourceDefinition."""
    spec_schema = openapi_schema(InferenceServiceSpec)
    status_schema = openapi_schema(InferenceServiceStatus)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "tritonscale", "app.kubernetes.io/part-of": "tritonscale"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": list(CATEGORIES),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": _printer_columns(),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "InferenceService is one Triton model-serving stack: Triton replicas placed "
                            "on on-demand and spot node pools, an HAProxy router, and a latency-objective autoscaler.",
                            "required": ["spec"],
                            "x-kubernetes-validations": [
                                {"rule": NAME_RULE_CEL, "message": NAME_RULE_MESSAGE}
                            ],
                            "properties": {
                                "apiVersion": {"type": "string", "description": "APIVersion of this object."},
                                "kind": {"type": "string", "description": "Kind of this object."},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


_TYPE_NAMES = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
}


_NOUNS = {**_TYPE_NAMES, "boolean": "a boolean"}


# Python's type of a parsed value and its JSON schema type (bool first: it is an int too).
_JSON_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (dict, "object"),
    (list, "array"),
)


def _type_of(value: Any) -> str:
    return next((name for kind, name in _JSON_TYPES if isinstance(value, kind)), type(value).__name__)


def _fits(value: Any, node: dict[str, Any]) -> bool:
    kind = _type_of(value)
    if node.get("x-kubernetes-int-or-string"):
        return kind in ("integer", "string") or (kind == "number" and float(value).is_integer())
    wanted = node.get("type")
    if wanted is None or wanted == kind:
        return True
    # The API server reads 3.0 as the integer 3, and any integer as a number.
    return (wanted == "integer" and kind == "number" and float(value).is_integer()) or (
        wanted == "number" and kind == "integer"
    )


def _type_problems(value: Any, node: dict[str, Any], path: str) -> Iterator[tuple[str, str]]:
    if value is None:
        return  # an unset field: the API server drops it
    if not _fits(value, node):
        wanted = (
            "an integer or a string" if node.get("x-kubernetes-int-or-string") else _TYPE_NAMES[node["type"]]
        )
        found = _type_of(value)
        shown = cut_short(json.dumps(value, ensure_ascii=False, default=str), 40)
        yield path, f"must be {wanted}, not {_NOUNS.get(found, found)} ({shown})"
        return
    if isinstance(value, dict):
        properties = node.get("properties", {})
        others = node.get("additionalProperties")
        for key, item in value.items():
            child = properties.get(key, others if isinstance(others, dict) else None)
            if child is not None:
                yield from _type_problems(item, child, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for index, item in enumerate(value):
            yield from _type_problems(item, node["items"], f"{path}[{index}]")


@functools.cache
def _spec_schema() -> dict[str, Any]:
    return openapi_schema(InferenceServiceSpec)


def spec_type_problems(document: dict[str, Any]) -> list[tuple[str, str]]:
    """(dotted path, what is wrong) for every value in `document`'s spec whose JSON type is not
    the CRD's: what the API server refuses before any other rule, and what parsing the models
    leniently would take ("3" for an integer, "yes" for a boolean). `tritonscale render` checks
    files with it; what the operator reads has passed the API server."""
    return list(_type_problems(document.get("spec"), _spec_schema(), "spec"))


def render_crd_yaml() -> str:
    """The CRD as the YAML committed under crds/."""
    header = "# Generated from operator/tritonscale/api by `python -m tritonscale.api.crd`; do not edit.\n"
    return header + dump(custom_resource_definition())


if __name__ == "__main__":
    sys.stdout.write(render_crd_yaml())
