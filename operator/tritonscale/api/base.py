"""Shared base for the API models: frozen, camelCase on the wire, and cross-field rules.

A cross-field rule is written once, as a `Rule`, and enforced twice: by the API server (the CRD
generator emits it as a CEL `x-kubernetes-validations` entry) and by pydantic (the model checks
the same rule in Python when it is built). Tests feed the same invalid resources to both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel


@dataclass(frozen=True)
class Rule:
    """A cross-field rule on one object of the resource.

    `cel` is evaluated by the API server with `self` bound to the object; `holds` is the same
    rule in Python; `field` is the offending field, relative to the object (dotted).
    """

    field: str
    message: str
    cel: str
    holds: Callable[[Any], bool]


class RuleViolations(ValueError):
    """Raised by a model whose rules do not hold; carries (relative field, message) pairs."""

    def __init__(self, violations: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in violations))
        self.violations = violations


def cut_short(text: str, limit: int) -> str:
    """`text`, or its first `limit` - 1 characters and an ellipsis when it is longer."""
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def _rules_json_schema(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    rules: tuple[Rule, ...] = getattr(cls, "rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [
            {"rule": rule.cel, "message": rule.message, "fieldPath": "." + rule.field} for rule in rules
        ]


class ApiModel(BaseModel):
    """Base of every spec/status object: immutable, camelCase aliases, unknown fields rejected."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        json_schema_extra=_rules_json_schema,
    )

    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        broken = [(rule.field, rule.message) for rule in self.rules if not rule.holds(self)]
        if broken:
            raise RuleViolations(broken)
        return self

    def to_wire(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys, unset optionals left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
