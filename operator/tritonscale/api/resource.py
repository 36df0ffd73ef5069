"""The whole InferenceService resource, and turning raw objects into it with readable errors."""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tritonscale.api.base import RuleViolations, cut_short
from tritonscale.api.spec import DNS_LABEL_PATTERN, InferenceServiceSpec
from tritonscale.api.status import InferenceServiceStatus

GROUP: Final = "tritonscale.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "InferenceService"
PLURAL: Final = "inferenceservices"
SINGULAR: Final = "inferenceservice"
SHORT_NAMES: Final = ("tis",)
CATEGORIES: Final = ("tritonscale",)


# A name ending in this suffix would be another InferenceService's headless Service
# (`echo-triton` is `echo`'s): refused, here and by the API server (NAME_RULE in the CRD).
RESERVED_NAME_SUFFIX: Final = "-triton"
NAME_RULE_MESSAGE: Final = (
    f"metadata.name: must not end in {RESERVED_NAME_SUFFIX!r}: "
    f"<name>{RESERVED_NAME_SUFFIX} is the headless Service of InferenceService <name>"
)
NAME_RULE_CEL: Final = f"!self.metadata.name.endsWith('{RESERVED_NAME_SUFFIX}')"


# `kubectl annotate tis/NAME autoscaling.tritonscale.io/paused=true` freezes the autoscaler;
# spec.replicas (and so `kubectl scale`) then sets the count, as with KEDA's paused annotation.
# Not under `tritonscale.io/`: kopf keeps its own state there and ignores changes to those keys.
PAUSE_ANNOTATION: Final = "autoscaling.tritonscale.io/paused"
# The key of releases before 2026-12-02, still honoured so an upgrade does not un-pause a
# service; kopf does not see changes to it, so they take effect at the autoscaler's next tick.
LEGACY_PAUSE_ANNOTATION: Final = "tritonscale.io/autoscaling-paused"


class ObjectMeta(BaseModel):
    """The parts of metadata the operator reads; everything else is ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    # A DNS-1123 label, as the API server requires; checked here too because `tritonscale
    # render` reads files, and the renderers refuse any other namespace (it reaches haproxy.cfg).
    namespace: str = Field(default="default", max_length=63, pattern=DNS_LABEL_PATTERN)
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _not_a_childs_name(cls, name: str) -> str:
        if name.endswith(RESERVED_NAME_SUFFIX):
            raise ValueError(NAME_RULE_MESSAGE.removeprefix("metadata.name: "))
        return name


class InferenceService(BaseModel):
    """An InferenceService as stored by the API server."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    api_version: Literal["tritonscale.io/v1alpha1"] = Field(
        default="tritonscale.io/v1alpha1", alias="apiVersion"
    )
    kind: Literal["InferenceService"] = KIND
    metadata: ObjectMeta
    spec: InferenceServiceSpec
    status: InferenceServiceStatus = Field(default_factory=InferenceServiceStatus)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def autoscaling_paused(self) -> bool:
        return any(
            self.metadata.annotations.get(key, "").strip().lower() == "true"
            for key in (PAUSE_ANNOTATION, LEGACY_PAUSE_ANNOTATION)
        )

    @property
    def autoscaled(self) -> bool:
        """The autoscaler decides the replica count (on, and not paused)."""
        return self.spec.autoscaling_enabled and not self.autoscaling_paused


class Problem(BaseModel):
    """One thing wrong with a resource: the dotted path of the field and what is wrong."""

    model_config = ConfigDict(frozen=True)

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class InvalidInferenceService(ValueError):
    """The resource is not a valid InferenceService; `problems` names each field at fault."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(problem) for problem in problems))
        self.problems = problems


def _shown(value: object, limit: int = 80) -> str:
    """A bad value as a message shows it: its repr, cut short (a 4000-character value repeated
    in a status condition would exceed what the condition holds)."""
    return cut_short(repr(value), limit)


def _dotted(location: tuple[int | str, ...]) -> str:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


def _problems(error: ValidationError) -> list[Problem]:
    problems: list[Problem] = []
    for detail in error.errors():
        location = tuple(detail["loc"])
        cause = detail.get("ctx", {}).get("error")
        if isinstance(cause, RuleViolations):
            problems.extend(
                Problem(path=_dotted((*location, *field.split("."))), message=message)
                for field, message in cause.violations
            )
            continue
        message = (
            detail["msg"]
            .removeprefix("Value error, ")
            .replace("Input should be", "must be")
            .replace("List should have", "must have")
            .replace("Dictionary should have", "must have")
            .replace("String should have", "must have")
            .replace(" after validation", "")
        )
        if detail["type"] == "missing":
            message = "required field is missing"
        elif detail["type"] == "extra_forbidden":
            message = "unknown field"
        elif detail["type"] == "string_pattern_mismatch":
            message = f"invalid value {_shown(detail['input'])} (must match {detail['ctx']['pattern']})"
        if location and location[-1] == "[key]":
            # A map's bad key is the map's problem (as the API server names it), not a field's.
            location = location[:-2]
            message = message.replace("invalid value", "invalid key", 1)
        elif detail["type"] == "enum":
            message = f"unsupported value {_shown(detail['input'])}: {detail['msg'].removeprefix('Input should be ')}"
        # `int | str` fields (quantities) report one error per member: keep the one of the
        # member the value was written as (a number's bound, a string's pattern).
        if location and location[-1] in ("int", "str", "constrained-int", "constrained-str"):
            written_as_number = isinstance(detail["input"], int) and not isinstance(detail["input"], bool)
            if location[-1] != ("constrained-int" if written_as_number else "constrained-str"):
                continue
            location = location[:-1]
        problems.append(Problem(path=_dotted(location), message=message))
    return problems


def parse_inference_service(obj: Any) -> InferenceService:
    """Validate a raw object (from YAML or the API server) as an InferenceService.

    Raises InvalidInferenceService listing every problem, each naming its dotted field path.
    """
    if not isinstance(obj, dict):
        raise InvalidInferenceService([Problem(path="(document)", message="not a mapping")])
    if obj.get("kind") != KIND or obj.get("apiVersion") != API_VERSION:
        raise InvalidInferenceService(
            [
                Problem(
                    path="apiVersion",
                    message=f"expected apiVersion {API_VERSION} and kind {KIND}, "
                    f"got {obj.get('apiVersion')!r} {obj.get('kind')!r}",
                )
            ]
        )
    try:
        return InferenceService.model_validate(obj)
    except ValidationError as error:
        raise InvalidInferenceService(_problems(error)) from None
