"""The InferenceService spec: what a user asks for.

Every field carries a description: the CRD generator copies them, so `kubectl explain` shows them.
"""

from __future__ import annotations

import decimal
import re
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints, field_validator

from tritonscale.api.base import ApiModel, Rule

# A resource quantity as Kubernetes writes one, never negative (a Pod refuses a negative one).
QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# What a container may request: cpu, memory, ephemeral-storage, hugepages-<size>, or an extended
# resource, whose name is qualified by a domain (`nvidia.com/gpu`); the name after the prefix is
# at most 63 characters, as in any qualified name.
RESOURCE_NAME_PATTERN = (
    r"^(cpu|memory|ephemeral-storage|hugepages-[0-9]+[KMGTPE]?i?|"
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?)$"
)
LABEL_KEY_PATTERN = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
# The prefix of a label key is a DNS subdomain of at most 253 characters. LABEL_KEY_PATTERN gives
# its shape, this its length: RE2 (the CRD's and CEL's regex engine) cannot say both in one pattern.
LABEL_KEY_PREFIX_PATTERN = r"^([^/]{1,253}/)?[^/]*$"
# DNS-1123, as the API server requires: a subdomain (at most 253 characters) and a label (63).
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# What reaches a process (arguments, environment, the image reference) is a C string: the
# container runtime cannot pass a NUL, and pods whose spec holds one never start.
# No whitespace nor NUL. Whitespace written out: the API server's RE2 reads \\s as ASCII
# whitespace only, pydantic's engine as Unicode's, so `\\s` would admit a no-break space that the
# operator then refuses.
NO_SPACE = r"\t\n\v\f\r \x00\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"
IMAGE_PATTERN = rf"^[^{NO_SPACE}]+$"
C_STRING_PATTERN = r"^[^\x00]*$"

# tritonserver flags the operator sets itself; letting args override them would break probes,
# the router and metrics (--strict-readiness=false reports a server ready before its models are).
MANAGED_TRITON_FLAGS = (
    "--model-repository",
    "--model-store",
    "--http-port",
    "--grpc-port",
    "--metrics-port",
    "--http-address",
    "--grpc-address",
    "--metrics-address",
    "--allow-http",
    "--allow-grpc",
    "--allow-metrics",
    "--strict-readiness",
)
# --metrics-config keys the operator sets: the latency summary and its quantiles, from the
# objective's percentile, are what the autoscaler reads (without them only a mean is left).
MANAGED_METRICS_CONFIG = ("summary_latencies", "summary_quantiles")
# The shortest prefix tritonserver takes for --metrics-config (the other --metrics-* options
# part at the next letter); an arg may also be the value after a separate --metrics-config.
METRICS_CONFIG_PREFIX = "--metrics-c"
# tritonserver parses its command line with getopt_long, which takes any unambiguous prefix of a
# long option for the option: `--http-po=9000` sets --http-port, `--model-repo=/x` adds a model
# repository. So args may not start with a prefix of a managed flag either (none of
# tritonserver's own options is one; an ambiguous prefix only makes tritonserver exit).
MANAGED_TRITON_FLAG_PREFIXES = tuple(
    sorted({flag[:end] for flag in MANAGED_TRITON_FLAGS for end in range(len("--x"), len(flag) + 1)})
)

Quantity = (
    Annotated[int, Field(ge=0)] | Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN, max_length=64)]
)
_QUANTITY_SUFFIXES = {
    **{suffix: Decimal(1024) ** (i + 1) for i, suffix in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
    **{
        suffix: Decimal(10) ** (3 * i)
        for i, suffix in enumerate(("n", "u", "m", "", "k", "M", "G", "T", "P", "E"), -3)
    },
}
_QUANTITY_PARTS = re.compile(
    r"^\+?(?P<number>[0-9]+(\.[0-9]*)?|\.[0-9]+)"
    r"(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE](?P<exponent>[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)))?$"
)


# Wide enough for any exponent a 64-character quantity can write (1e999...); exact to 80 digits.
_QUANTITY_CONTEXT = decimal.Context(prec=80, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)


def quantity_value(quantity: int | str) -> Decimal:
    """A quantity's value (QUANTITY_PATTERN's forms): 100m is 0.1, 2Gi is 2147483648, 1e3 is
    1000, 1E is 10**18 (exa). Raises ArithmeticError for a value beyond any decimal's range."""
    parts = _QUANTITY_PARTS.match(str(quantity))
    if parts is None:
        raise ValueError(f"not a quantity: {quantity!r}")
    with decimal.localcontext(_QUANTITY_CONTEXT):
        number = Decimal(parts["number"])
        if parts["exponent"] is not None:
            return number * Decimal(10) ** Decimal(parts["exponent"])
        return number * _QUANTITY_SUFFIXES[parts["suffix"] or ""]


def is_positive_quantity(quantity: int | str) -> bool:
    """Whether the API server's quantity() reads `quantity` as more than 0: it refuses an
    exponent that is not a whole number within 32 bits (1e1.5, 1e99999999999), which the
    pattern admits."""
    parts = _QUANTITY_PARTS.match(str(quantity))
    exponent = parts["exponent"] if parts is not None else None
    if exponent is not None and (not exponent.lstrip("+-").isdigit() or abs(int(exponent)) >= 2**31):
        return False
    try:
        return quantity_value(quantity) > 0
    except ArithmeticError:
        return False


def compare_quantities(a: int | str, b: int | str) -> int | None:
    """-1, 0 or 1 as `a` is less than, equal to or more than `b` by value; None when one is
    beyond what can be computed (the API server's own quantity() admitted it: not ours to refuse)."""
    try:
        left, right = quantity_value(a), quantity_value(b)
    except ArithmeticError:
        return None
    return (left > right) - (left < right)


def is_whole_quantity(quantity: int | str) -> bool:
    """1, 1.0, 1000m and 1k are whole; 0.5 and 1500m are not (None: cannot tell, so yes)."""
    try:
        value = quantity_value(quantity)
        with decimal.localcontext(_QUANTITY_CONTEXT):
            return value == value.to_integral_value()
    except ArithmeticError:
        return True


def is_extended_resource(name: str) -> bool:
    """An extended resource (a device plugin's, `nvidia.com/gpu`): whole units only, and never
    overcommitted, so a request must equal its limit."""
    return "/" in name


ResourceName = Annotated[str, StringConstraints(pattern=RESOURCE_NAME_PATTERN, max_length=253)]
LABEL_KEY_PREFIX_MESSAGE = "the prefix of a label key (before the /) must be at most 253 characters"


def is_label_key(key: str) -> bool:
    """A valid Kubernetes label key: a name of at most 63 characters with an optional prefix."""
    return bool(re.match(LABEL_KEY_PATTERN, key) and re.match(LABEL_KEY_PREFIX_PATTERN, key))


def _label_key_prefix(key: str) -> str:
    if not re.match(LABEL_KEY_PREFIX_PATTERN, key):
        raise ValueError(LABEL_KEY_PREFIX_MESSAGE)
    return key


LabelKey = Annotated[
    str,
    StringConstraints(pattern=LABEL_KEY_PATTERN, max_length=317),
    AfterValidator(_label_key_prefix),
    Field(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": f"self.matches(r'{LABEL_KEY_PREFIX_PATTERN}')", "message": LABEL_KEY_PREFIX_MESSAGE}
            ]
        }
    ),
]
LabelValue = Annotated[str, StringConstraints(pattern=LABEL_VALUE_PATTERN, max_length=63)]
ModelName = Annotated[str, StringConstraints(pattern=MODEL_NAME_PATTERN, min_length=1, max_length=128)]
TritonArg = Annotated[str, StringConstraints(pattern=C_STRING_PATTERN, min_length=1, max_length=1024)]


def _cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{value}'" for value in values) + "]"


class ResourceRequirements(ApiModel):
    """Compute resources for a container, as in a Pod spec."""

    rules = (
        Rule(
            field="limits",
            message="extended resources (a domain/name such as example.com/fpga) come in whole units",
            cel=(
                "(!has(self.requests) || self.requests.all(k, !k.contains('/') || "
                "quantity(string(self.requests[k])).isInteger())) && "
                "(!has(self.limits) || self.limits.all(k, !k.contains('/') || "
                "quantity(string(self.limits[k])).isInteger()))"
            ),
            holds=lambda self: all(
                is_whole_quantity(value)
                for side in (self.requests, self.limits)
                for name, value in side.items()
                if is_extended_resource(name)
            ),
        ),
        Rule(
            field="requests",
            message=(
                "an extended resource (a domain/name such as example.com/fpga) in requests must be "
                "in limits with the same value: it is never overcommitted (limits alone suffice)"
            ),
            cel=(
                "!has(self.requests) || self.requests.all(k, !k.contains('/') || (has(self.limits) && "
                "k in self.limits && quantity(string(self.limits[k])).compareTo(quantity(string(self.requests[k]))) == 0))"
            ),
            holds=lambda self: all(
                name in self.limits and compare_quantities(self.limits[name], value) in (0, None)
                for name, value in self.requests.items()
                if is_extended_resource(name)
            ),
        ),
        Rule(
            field="requests",
            message="requests must not exceed limits",
            cel=(
                "!has(self.requests) || !has(self.limits) || self.requests.all(k, !(k in self.limits) || "
                "quantity(string(self.requests[k])).compareTo(quantity(string(self.limits[k]))) <= 0)"
            ),
            holds=lambda self: all(
                compare_quantities(value, self.limits[name]) in (-1, 0, None)
                for name, value in self.requests.items()
                if name in self.limits
            ),
        ),
    )

    requests: dict[ResourceName, Quantity] = Field(
        default_factory=dict,
        max_length=16,
        description="Minimum resources the scheduler reserves, e.g. {cpu: '2', memory: 8Gi}.",
    )
    limits: dict[ResourceName, Quantity] = Field(
        default_factory=dict,
        max_length=16,
        description="Maximum resources the container may use, e.g. {memory: 8Gi}.",
    )


# Requests a container gets for what its spec names neither in requests nor in limits (a limit
# alone sets the request): without them a Triton replica would be BestEffort (the first evicted)
# and its model downloads could fill the node's disk unseen.
DEFAULT_TRITON_REQUESTS = {"cpu": "1", "memory": "2Gi", "ephemeral-storage": "10Gi"}
DEFAULT_ROUTER_REQUESTS = {"cpu": "100m", "memory": "64Mi", "ephemeral-storage": "64Mi"}


def _defaults_text(defaults: dict[str, str]) -> str:
    return ", ".join(f"{key} {value}" for key, value in defaults.items())


MAX_VARIANTS = 3


class ModelVariant(ApiModel):
    """A faster variant of the model (quantized, pruned, distilled) that every replica serves next
    to it, under the model's name, so clients change nothing; the autoscaler sends it a share of
    the requests while new replicas start (and, with a steady spend, all the time), within
    spec.autoscaling.accuracy."""

    name: ModelName = Field(
        description=(
            "The variant's name: its model's directory in spec.model.repository, or, with "
            "`repository`, only a name (that repository holds it under the model's name)."
        )
    )
    repository: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        pattern=IMAGE_PATTERN,
        description=(
            "Its own model repository, holding it under the model's name (clients keep calling "
            "that name): a local path, s3://, gs:// or as:// URL."
        ),
    )
    accuracy: float = Field(
        gt=0.0,
        le=1.0,
        description="Its accuracy relative to the model's (1.0), as measured offline: 0.99 is one point less.",
    )
    speedup: float = Field(
        gt=1.0,
        le=100.0,
        description=(
            "How many times faster than the model it runs a batch on the same accelerator, as measured "
            "offline (perf_analyzer): 2 takes half the time."
        ),
    )


class ModelSource(ApiModel):
    """Where Triton loads models from and which of them matter."""

    rules = (
        Rule(
            field="variants",
            message="variants are of the one model in names: they need exactly one",
            cel="!has(self.variants) || size(self.variants) == 0 || size(self.names) == 1",
            holds=lambda self: not self.variants or len(self.names) == 1,
        ),
        Rule(
            field="variants",
            message=(
                "a variant without its own repository is linked from spec.model.repository under the "
                "model's name, which needs a local path; give variants in an object store a repository "
                "that holds them under the model's name"
            ),
            cel="!has(self.variants) || !self.repository.matches('^[a-z0-9]+://') || self.variants.all(v, has(v.repository))",
            holds=lambda self: (
                not re.match(r"^[a-z0-9]+://", self.repository)
                or all(v.repository is not None for v in self.variants)
            ),
        ),
        Rule(
            field="variants",
            message="variant names must be unique and differ from the model's",
            cel=(
                "!has(self.variants) || "
                "self.variants.all(v, !(v.name in self.names) && self.variants.exists_one(w, w.name == v.name))"
            ),
            holds=lambda self: (
                len({v.name for v in self.variants}) == len(self.variants)
                and not {v.name for v in self.variants} & set(self.names)
            ),
        ),
    )

    repository: str = Field(
        min_length=1,
        max_length=2048,
        pattern=IMAGE_PATTERN,
        description=(
            "Model repository passed to `tritonserver --model-repository`: a local path, "
            "s3://, gs:// or as:// URL."
        ),
    )
    names: list[ModelName] = Field(
        min_length=1,
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description=(
            "Models whose metrics matter: the autoscaler measures their latency and rate. A replica "
            "is ready when Triton is (strict readiness: every model the repository loads); a name "
            "Triton does not serve yields no metrics, so the autoscaler holds."
        ),
    )

    variants: list[ModelVariant] = Field(
        default_factory=list,
        max_length=MAX_VARIANTS,
        description=(
            "Faster variants of the model, each served by its own Triton process in every replica "
            "under the model's name; served only with spec.autoscaling.accuracy and autoscaling "
            "enabled."
        ),
    )

    @field_validator("names")
    @classmethod
    def _names_unique(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError("model names must be unique")
        return names


class KeyReference(ApiModel):
    """One key of a Secret or ConfigMap in the InferenceService's namespace. The kubelet reads
    it when it starts a replica: the operator needs no access to it."""

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="The Secret's or ConfigMap's name.",
    )
    key: str = Field(
        min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="The key within it."
    )
    optional: bool = Field(
        default=False,
        description="Start the replica without the variable when the object or key is missing (false: the replica waits for it).",
    )


class EnvVarSource(ApiModel):
    """Where a variable's value comes from instead of the spec (credentials belong in a Secret:
    a value in the spec is readable by everyone who may read the InferenceService)."""

    rules = (
        Rule(
            field="secretKeyRef",
            message="valueFrom takes exactly one of secretKeyRef and configMapKeyRef",
            cel="has(self.secretKeyRef) != has(self.configMapKeyRef)",
            holds=lambda self: (self.secret_key_ref is None) != (self.config_map_key_ref is None),
        ),
    )

    secret_key_ref: KeyReference | None = Field(default=None, description="A key of a Secret.")
    config_map_key_ref: KeyReference | None = Field(default=None, description="A key of a ConfigMap.")


class EnvVar(ApiModel):
    """An environment variable for the Triton container: a value, or a Secret's or ConfigMap's key."""

    rules = (
        Rule(
            field="valueFrom",
            message="an environment variable takes a value or valueFrom, not both",
            cel="!has(self.valueFrom) || !has(self.value) || self.value == ''",
            holds=lambda self: self.value_from is None or self.value == "",
        ),
    )

    name: str = Field(
        min_length=1,
        max_length=256,
        pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$",
        description="Variable name.",
    )
    value: str = Field(default="", max_length=4096, pattern=C_STRING_PATTERN, description="Variable value.")
    value_from: EnvVarSource | None = Field(
        default=None,
        description=(
            "Take the value from a Secret's or ConfigMap's key, e.g. cloud storage credentials: "
            "{secretKeyRef: {name: model-store, key: AWS_SECRET_ACCESS_KEY}}."
        ),
    )


def _sets_managed_metrics_config(arg: str) -> bool:
    return any(
        arg.startswith(key) or (arg.startswith(METRICS_CONFIG_PREFIX) and key in arg)
        for key in MANAGED_METRICS_CONFIG
    )


class PullPolicy(StrEnum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


STARTUP_PROBE_PERIOD_S = 5


class TritonSpec(ApiModel):
    """The Triton Inference Server container."""

    rules = (
        Rule(
            field="args",
            message="args must not set flags the operator manages, nor abbreviate them: "
            + ", ".join(MANAGED_TRITON_FLAGS),
            cel=(
                "!has(self.args) || "
                f"self.args.all(a, !{_cel_list(MANAGED_TRITON_FLAG_PREFIXES)}.exists(f, a == f || a.startsWith(f + '=')))"
            ),
            holds=lambda self: (
                not any(
                    arg == flag or arg.startswith(flag + "=")
                    for arg in self.args
                    for flag in MANAGED_TRITON_FLAG_PREFIXES
                )
            ),
        ),
        Rule(
            field="args",
            message="args must not set the metrics configuration the operator manages (the "
            "autoscaler reads the latency summary): " + ", ".join(MANAGED_METRICS_CONFIG),
            cel=(
                "!has(self.args) || self.args.all(a, "
                + " && ".join(
                    f"!a.startsWith('{key}') && !(a.startsWith('{METRICS_CONFIG_PREFIX}') && a.contains('{key}'))"
                    for key in MANAGED_METRICS_CONFIG
                )
                + ")"
            ),
            holds=lambda self: not any(_sets_managed_metrics_config(arg) for arg in self.args),
        ),
        Rule(
            field="sharedMemory",
            message="sharedMemory must be a quantity more than 0, such as 1Gi",
            cel=(
                "!has(self.sharedMemory) || (isQuantity(string(self.sharedMemory)) && "
                "quantity(string(self.sharedMemory)).isGreaterThan(quantity('0')))"
            ),
            holds=lambda self: is_positive_quantity(self.shared_memory),
        ),
    )

    image: str = Field(
        default="nvcr.io/nvidia/tritonserver:24.10-py3",
        min_length=1,
        max_length=512,
        pattern=IMAGE_PATTERN,
        description="Triton server image.",
    )
    image_pull_policy: PullPolicy | None = Field(
        default=None, description="Image pull policy; Kubernetes' default when unset."
    )
    args: list[TritonArg] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "Extra tritonserver flags, e.g. ['--log-verbose=1']. Ports, addresses, the model "
            "repository, strict readiness and the latency summary's metrics configuration are "
            "managed by the operator."
        ),
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="Environment variables for the Triton container (for example cloud storage settings).",
    )
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements,
        description=(
            "CPU, memory and other resources for each Triton replica. What it names neither in "
            f"requests nor in limits is requested at {_defaults_text(DEFAULT_TRITON_REQUESTS)} (a "
            "limit alone sets the request)."
        ),
    )
    service_account_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,  # as the API server requires of the pod's serviceAccountName
        description="ServiceAccount the Triton pods run as (for example to read a private model bucket).",
    )
    startup_timeout_seconds: int = Field(
        default=600,
        ge=30,
        le=86400,
        description=(
            "How long a replica may take from start to live (downloading and loading its models) "
            "before Kubernetes restarts it: the startup probe's budget, checked every "
            f"{STARTUP_PROBE_PERIOD_S} s. Raise it for models that take longer to load."
        ),
    )
    shared_memory: Quantity = Field(
        default="1Gi",
        description=(
            "Size of /dev/shm, memory-backed and counted against the replica's memory: the Python "
            "backend and shared-memory clients exchange tensors through it."
        ),
    )

    @field_validator("env")
    @classmethod
    def _env_names_unique(cls, env: list[EnvVar]) -> list[EnvVar]:
        names = [var.name for var in env]
        if len(set(names)) != len(names):
            raise ValueError("environment variable names must be unique")
        return env


TPU_RESOURCE = "google.com/tpu"
# Accelerators whose product every built-in preset can select on, and those only the karpenter
# preset can (render/presets.py maps each to its node label); the custom preset names its own.
PRODUCT_LABELLED_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu", TPU_RESOURCE)
KARPENTER_PRODUCT_LABELLED_RESOURCES = ("aws.amazon.com/neuron", "aws.amazon.com/neuroncore")
# GKE's TPU slice topologies: chips per dimension, 2 or 3 dimensions (2x4, 4x4x4).
TPU_TOPOLOGY_PATTERN = r"^[1-9][0-9]{0,2}(x[1-9][0-9]{0,2}){1,2}$"


class AcceleratorSpec(ApiModel):
    """Accelerators each Triton replica needs."""

    rules = (
        Rule(
            field="topology",
            message=f"topology applies to {TPU_RESOURCE} only",
            cel=f"!has(self.topology) || self.resource == '{TPU_RESOURCE}'",
            holds=lambda self: self.topology is None or self.resource == TPU_RESOURCE,
        ),
    )

    resource: ResourceName = Field(
        description=(
            "Extended resource requested per replica (limits and requests): nvidia.com/gpu, "
            "amd.com/gpu, google.com/tpu, aws.amazon.com/neuron, or any other device plugin's "
            "resource such as an FPGA or ASIC."
        )
    )
    count: int = Field(default=1, ge=1, le=64, description="Accelerators per replica.")
    product: LabelValue | None = Field(
        default=None,
        description=(
            "Accelerator product, required as the value of a node label whose key depends on "
            "capacity.nodePoolPreset and the resource, e.g. a100 (karpenter), nvidia-tesla-a100 "
            "(gke), NVIDIA-A100-SXM4-40GB (eks and aks: GPU feature discovery's "
            "nvidia.com/gpu.product), tpu-v5-lite-podslice (google.com/tpu)."
        ),
    )
    topology: Annotated[str, StringConstraints(pattern=TPU_TOPOLOGY_PATTERN, max_length=16)] | None = Field(
        default=None,
        description=(
            "TPU slice topology, e.g. 2x4 (google.com/tpu only): required as the value of the node "
            "label cloud.google.com/gke-tpu-topology."
        ),
    )


class NodePoolPreset(StrEnum):
    KARPENTER = "karpenter"
    GKE = "gke"
    EKS = "eks"
    AKS = "aks"
    CUSTOM = "custom"


class TolerationOperator(StrEnum):
    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(ApiModel):
    """A toleration, as in a Pod spec."""

    rules = (
        Rule(
            field="value",
            message="value must be empty when operator is Exists",
            cel="self.operator != 'Exists' || !has(self.value) || self.value == ''",
            holds=lambda self: self.operator != TolerationOperator.EXISTS or not self.value,
        ),
    )

    key: LabelKey = Field(description="Taint key to tolerate.")
    operator: TolerationOperator = Field(default=TolerationOperator.EQUAL, description="Exists or Equal.")
    value: LabelValue | None = Field(default=None, description="Taint value (with operator Equal).")
    effect: TaintEffect | None = Field(default=None, description="Taint effect to tolerate; all when unset.")


class PoolPlacement(ApiModel):
    """How to reach one kind of capacity when nodePoolPreset is custom."""

    node_selector: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, max_length=16, description="Node labels this pool's pods require."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=16, description="Taints this pool's pods tolerate."
    )


class CustomPreset(ApiModel):
    """Node labels and taints for clusters that no built-in preset describes."""

    on_demand: PoolPlacement = Field(
        default_factory=PoolPlacement, description="Placement of on-demand replicas."
    )
    spot: PoolPlacement = Field(default_factory=PoolPlacement, description="Placement of spot replicas.")
    accelerator_product_label: LabelKey | None = Field(
        default=None,
        description=(
            "Node label whose value is the accelerator product (for accelerator.product). Pods "
            "that request no accelerator (CPU-only Triton replicas, routers) avoid nodes carrying it."
        ),
    )


def product_has_a_label(accelerator: AcceleratorSpec, capacity: CapacitySpec) -> bool:
    """Whether accelerator.product can become a node-label requirement under this preset."""
    if accelerator.product is None:
        return True
    if capacity.node_pool_preset == NodePoolPreset.CUSTOM:
        return capacity.custom is not None and capacity.custom.accelerator_product_label is not None
    return accelerator.resource in PRODUCT_LABELLED_RESOURCES or (
        capacity.node_pool_preset == NodePoolPreset.KARPENTER
        and accelerator.resource in KARPENTER_PRODUCT_LABELLED_RESOURCES
    )


class SpotSpec(ApiModel):
    """Use of spot (preemptible) capacity."""

    rules = (
        Rule(
            field="maxFraction",
            message="maxFraction must be greater than 0 when spot is enabled",
            cel="!has(self.enabled) || !self.enabled || !has(self.maxFraction) || self.maxFraction > 0.0",
            holds=lambda self: not self.enabled or self.max_fraction > 0,
        ),
    )

    enabled: bool = Field(
        default=False,
        description="Place some replicas on spot capacity. For an hour after spot took a replica, "
        "while some serve on spot, the latency autoscaler keeps one replica more than the "
        "objective needs (N+1), so the next reclaim does not overload the rest.",
    )
    max_fraction: float = Field(
        default=0.75, ge=0.0, le=1.0, description="Largest fraction of replicas that may run on spot."
    )
    fallback_after_seconds: int = Field(
        default=60,
        ge=0,
        le=3600,
        description="Seconds spot pods may stay unschedulable before as many on-demand replicas "
        "stand in for them (the SpotFallback condition says when); the stand-ins leave, half at a "
        "time, once spot has stayed ready for twice this long (at least 60 s).",
    )


class CapacitySpec(ApiModel):
    """Where replicas run: on-demand and spot node pools."""

    rules = (
        Rule(
            field="custom",
            message="custom is required when nodePoolPreset is custom",
            cel="!has(self.nodePoolPreset) || self.nodePoolPreset != 'custom' || has(self.custom)",
            holds=lambda self: self.node_pool_preset != NodePoolPreset.CUSTOM or self.custom is not None,
        ),
        Rule(
            field="custom",
            message="custom may only be set when nodePoolPreset is custom",
            cel="!has(self.custom) || (has(self.nodePoolPreset) && self.nodePoolPreset == 'custom')",
            holds=lambda self: self.custom is None or self.node_pool_preset == NodePoolPreset.CUSTOM,
        ),
        Rule(
            field="custom.spot.nodeSelector",
            message="custom.spot.nodeSelector must name the spot nodes' labels when spot is enabled",
            cel=(
                "!has(self.nodePoolPreset) || self.nodePoolPreset != 'custom' || !has(self.custom) || "
                "!has(self.spot) || !has(self.spot.enabled) || !self.spot.enabled || "
                "(has(self.custom.spot) && has(self.custom.spot.nodeSelector) && "
                "size(self.custom.spot.nodeSelector) > 0)"
            ),
            holds=lambda self: (
                self.node_pool_preset != NodePoolPreset.CUSTOM
                or not self.spot.enabled
                or self.custom is None
                or bool(self.custom.spot.node_selector)
            ),
        ),
    )

    node_pool_preset: NodePoolPreset = Field(
        default=NodePoolPreset.KARPENTER,
        description="Which node labels and taints mark spot and accelerator capacity: karpenter, gke, eks, aks or custom.",
    )
    on_demand_base: int = Field(
        default=1, ge=0, le=1000, description="Replicas that always stay on on-demand capacity."
    )
    spot: SpotSpec = Field(default_factory=SpotSpec, description="Use of spot capacity.")
    custom: CustomPreset | None = Field(
        default=None, description="Node labels and taints, when nodePoolPreset is custom."
    )


class BalancePolicy(StrEnum):
    ROUND_ROBIN = "RoundRobin"
    LEAST_CONNECTIONS = "LeastConnections"
    POWER_OF_TWO_CHOICES = "PowerOfTwoChoices"


class SelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(ApiModel):
    """One requirement of a label selector, as in Kubernetes."""

    rules = (
        Rule(
            field="values",
            message="values must be set with operator In or NotIn, and left out with Exists or DoesNotExist",
            cel="(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)",
            holds=lambda self: (
                (self.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN)) == bool(self.values)
            ),
        ),
    )

    key: LabelKey = Field(description="Label key.")
    operator: SelectorOperator = Field(description="In, NotIn, Exists or DoesNotExist.")
    values: list[LabelValue] = Field(
        default_factory=list, max_length=64, description="Label values (with In and NotIn)."
    )


class LabelSelector(ApiModel):
    """A Kubernetes label selector; empty selects everything."""

    match_labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, max_length=16, description="Labels that must all be present with these values."
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=16, description="Requirements that must all hold."
    )


class RouterClient(ApiModel):
    """Pods that may call the router, as a NetworkPolicy peer."""

    rules = (
        Rule(
            field="podSelector",
            message="set podSelector, namespaceSelector or both",
            cel="has(self.podSelector) || has(self.namespaceSelector)",
            holds=lambda self: self.pod_selector is not None or self.namespace_selector is not None,
        ),
    )

    namespace_selector: LabelSelector | None = Field(
        default=None,
        description="Namespaces the clients run in; left out, this InferenceService's own; {} for every namespace.",
    )
    pod_selector: LabelSelector | None = Field(
        default=None, description="The client pods in those namespaces; left out, every pod there."
    )


class RouterSpec(ApiModel):
    """The HAProxy router in front of the Triton replicas."""

    replicas: int = Field(default=2, ge=1, le=20, description="Router replicas.")
    image: str = Field(
        default="haproxy:2.6",
        min_length=1,
        max_length=512,
        pattern=IMAGE_PATTERN,
        description="HAProxy image.",
    )
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements,
        description=(
            "Resources for each router replica. What it names neither in requests nor in limits "
            f"is requested at {_defaults_text(DEFAULT_ROUTER_REQUESTS)} (a limit alone sets the "
            "request)."
        ),
    )
    timeout_seconds: int = Field(
        default=60,
        ge=1,
        le=3600,
        description="Longest a single inference request may take through the router.",
    )
    clients: list[RouterClient] | None = Field(
        default=None,
        min_length=1,
        max_length=16,
        description=(
            "Who may call the router once NetworkPolicies guard this service (declaring clients "
            "turns them on for it; the chart's networkPolicy.enabled turns them on for every "
            "service). Then only these pods reach the router, and only the router (besides "
            "metrics scrapes and the operator) reaches Triton. Not declared: pods in this "
            "namespace. Enforced by the cluster's network plugin."
        ),
    )


class LoadBalancingSpec(ApiModel):
    """How the router spreads requests across replicas."""

    policy: BalancePolicy = Field(
        default=BalancePolicy.LEAST_CONNECTIONS,
        description="RoundRobin, LeastConnections, or PowerOfTwoChoices (two random picks, least loaded wins).",
    )
    router: RouterSpec = Field(default_factory=RouterSpec, description="The HAProxy router.")


class LatencyObjective(ApiModel):
    """The latency objective the autoscaler holds."""

    target_milliseconds: float = Field(
        default=100.0, gt=0, le=600000, description="Latency target in milliseconds."
    )
    percentile: float = Field(
        default=95.0,
        ge=50.0,
        le=99.9,
        description="Percentile of request latency that must stay under the target.",
    )


class MetricsSourceKind(StrEnum):
    AUTO = "auto"
    PROMETHEUS = "prometheus"
    TRITON = "triton"


class MetricsSpec(ApiModel):
    """Where the autoscaler reads latency and load."""

    rules = (
        Rule(
            field="latencyQuery",
            message="latencyQuery needs a Prometheus source (source prometheus or auto)",
            cel="!has(self.latencyQuery) || self.source != 'triton'",
            holds=lambda self: self.latency_query is None or self.source != MetricsSourceKind.TRITON,
        ),
        Rule(
            field="rateQuery",
            message="rateQuery needs a Prometheus source (source prometheus or auto)",
            cel="!has(self.rateQuery) || self.source != 'triton'",
            holds=lambda self: self.rate_query is None or self.source != MetricsSourceKind.TRITON,
        ),
    )

    source: MetricsSourceKind = Field(
        default=MetricsSourceKind.AUTO,
        description=(
            "prometheus, triton (statistics read from each ready pod), or auto: Prometheus when a "
            "URL is known (here or the operator's --prometheus-url) or a query is set here, else Triton."
        ),
    )
    prometheus_url: str | None = Field(
        default=None,
        alias="prometheusURL",
        max_length=2048,
        pattern=rf"^https?://[^{NO_SPACE}]+$",
        description="Prometheus base URL, e.g. http://prometheus.monitoring:9090.",
    )
    latency_query: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="PromQL overriding the latency query; must return one value in milliseconds.",
    )
    rate_query: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description=(
            "PromQL overriding the arrival-rate query; must return one value in requests per second "
            "of this service's pods (a rate 2x off the routers' count for 2 minutes pauses the "
            "model's feedback: the FeedbackPaused Event)."
        ),
    )


class ScaleDownSpec(ApiModel):
    """How cautiously the autoscaler removes replicas."""

    stabilization_seconds: int = Field(
        default=300,
        ge=0,
        le=3600,
        description=(
            "Scale down only to the highest recommendation seen over this window; while the load "
            "falls steadily (by 10 % or more over the window, far more than it swings) and no "
            "scale-up is this recent, only to the highest of the last 60 s plus periodSeconds."
        ),
    )
    max_step_percent: int = Field(
        default=50, ge=1, le=100, description="Most replicas removed in one step, as a percentage of current."
    )


class AccuracyBudget(ApiModel):
    """How much accuracy the model's variants may cost."""

    rules = (
        Rule(
            field="steadyVariant",
            message="steadyVariant names the variant a steady spend serves: it needs steadySpend above 0",
            cel="!has(self.steadyVariant) || (has(self.steadySpend) && self.steadySpend > 0.0)",
            holds=lambda self: self.steady_variant is None or self.steady_spend > 0,
        ),
    )

    floor: float = Field(
        ge=0.5,
        lt=1.0,
        description=(
            "Lowest mean accuracy served over any window, relative to the model's: 0.995 lets the "
            "variants cost half a point on average."
        ),
    )
    window_seconds: int = Field(
        default=3600, ge=60, le=86400, description="The trailing window the mean is taken over."
    )
    steady_spend: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description=(
            "Fraction of the budget spent all the time: the variant that saves the most with it "
            "(or steadyVariant) serves a standing share of the requests (rounded down to 5 % steps, "
            "at most half), so fewer replicas serve; the rest is kept for surges. 0: variants serve "
            "only while new replicas start."
        ),
    )
    steady_variant: ModelName | None = Field(
        default=None,
        description=(
            "The variant that serves the steady spend's standing share, one of spec.model.variants "
            "(for one whose accuracy was measured on the traffic it would serve all the time); "
            "unset: the one that saves the most accelerator time with it. Surges may use any."
        ),
    )


class AutoscalingSpec(ApiModel):
    """Latency-objective autoscaling."""

    rules = (
        Rule(
            field="maxReplicas",
            message="maxReplicas must be greater than or equal to minReplicas",
            cel="self.minReplicas <= self.maxReplicas",
            holds=lambda self: self.min_replicas <= self.max_replicas,
        ),
    )

    enabled: bool = Field(
        default=True, description="Scale on measured latency; when false, spec.replicas is used."
    )
    min_replicas: int = Field(default=1, ge=1, le=1000, description="Fewest Triton replicas.")
    max_replicas: int = Field(default=10, ge=1, le=1000, description="Most Triton replicas.")
    period_seconds: int = Field(
        default=10, ge=1, le=300, description="Seconds between autoscaling decisions."
    )
    cold_start_seconds: int | None = Field(
        default=None,
        ge=1,
        le=3600,
        description="Seconds from a new Triton pod's creation to Ready, which the autoscaler sizes "
        "ahead for. Unset: the median of this service's recent pod starts (30 until one is seen).",
    )
    latency: LatencyObjective = Field(default_factory=LatencyObjective, description="The latency objective.")
    metrics: MetricsSpec = Field(
        default_factory=MetricsSpec, description="Where latency and load are measured."
    )
    scale_down: ScaleDownSpec = Field(default_factory=ScaleDownSpec, description="Scale-down caution.")
    accuracy: AccuracyBudget | None = Field(
        default=None,
        description=(
            "Serve spec.model.variants while new replicas start (and, with steadySpend, a share "
            "all the time), within this accuracy budget; "
            "unset: the model only."
        ),
    )


class InferenceServiceSpec(ApiModel):
    """The desired Triton serving stack."""

    rules = (
        Rule(
            field="autoscaling.accuracy",
            message="autoscaling.accuracy needs model.variants to spend it on",
            cel=(
                "!has(self.autoscaling) || !has(self.autoscaling.accuracy) || "
                "(has(self.model.variants) && size(self.model.variants) > 0)"
            ),
            holds=lambda self: (
                self.autoscaling is None or self.autoscaling.accuracy is None or bool(self.model.variants)
            ),
        ),
        Rule(
            field="autoscaling.accuracy.steadyVariant",
            message="autoscaling.accuracy.steadyVariant must name one of model.variants",
            cel=(
                "!has(self.autoscaling) || !has(self.autoscaling.accuracy) || "
                "!has(self.autoscaling.accuracy.steadyVariant) || (has(self.model.variants) && "
                "self.model.variants.exists(v, v.name == self.autoscaling.accuracy.steadyVariant))"
            ),
            holds=lambda self: (
                self.autoscaling is None
                or self.autoscaling.accuracy is None
                or self.autoscaling.accuracy.steady_variant is None
                or self.autoscaling.accuracy.steady_variant in {v.name for v in self.model.variants}
            ),
        ),
        Rule(
            field="capacity.onDemandBase",
            message="capacity.onDemandBase must not exceed autoscaling.maxReplicas",
            cel=(
                "!has(self.autoscaling) || !self.autoscaling.enabled || "
                "self.capacity.onDemandBase <= self.autoscaling.maxReplicas"
            ),
            holds=lambda self: (
                self.autoscaling is None
                or not self.autoscaling.enabled
                or self.capacity.on_demand_base <= self.autoscaling.max_replicas
            ),
        ),
        Rule(
            field="accelerator.product",
            message=(
                "accelerator.product needs a node label naming the product: the built-in presets "
                f"have one for {', '.join(PRODUCT_LABELLED_RESOURCES)}, karpenter also for "
                f"{', '.join(KARPENTER_PRODUCT_LABELLED_RESOURCES)}; otherwise use the custom preset "
                "with capacity.custom.acceleratorProductLabel"
            ),
            cel=(
                "!has(self.accelerator) || !has(self.accelerator.product) || "
                "(self.capacity.nodePoolPreset == 'custom' ? "
                "(has(self.capacity.custom) && has(self.capacity.custom.acceleratorProductLabel)) : "
                f"(self.accelerator.resource in {_cel_list(PRODUCT_LABELLED_RESOURCES)} || "
                "(self.capacity.nodePoolPreset == 'karpenter' && "
                f"self.accelerator.resource in {_cel_list(KARPENTER_PRODUCT_LABELLED_RESOURCES)})))"
            ),
            holds=lambda self: (
                self.accelerator is None or product_has_a_label(self.accelerator, self.capacity)
            ),
        ),
        Rule(
            field="triton.resources",
            message=(
                "triton.resources may name the accelerator's resource only at accelerator.count "
                "(written the same way, e.g. 1), which sets its requests and limits"
            ),
            cel="!has(self.accelerator) || ("
            + " && ".join(
                f"(!has(self.triton.resources.{side}) || !(self.accelerator.resource in self.triton.resources.{side}) || "
                f"string(self.triton.resources.{side}[self.accelerator.resource]) == string(self.accelerator.count))"
                for side in ("requests", "limits")
            )
            + ")",
            holds=lambda self: (
                self.accelerator is None
                or all(
                    str(side[self.accelerator.resource]) == str(self.accelerator.count)
                    for side in (self.triton.resources.requests, self.triton.resources.limits)
                    if self.accelerator.resource in side
                )
            ),
        ),
    )

    model: ModelSource = Field(description="The model repository and the models that matter.")
    triton: TritonSpec = Field(default_factory=TritonSpec, description="The Triton server container.")
    accelerator: AcceleratorSpec | None = Field(
        default=None, description="Accelerators per replica; CPU-only when unset."
    )
    capacity: CapacitySpec = Field(default_factory=CapacitySpec, description="On-demand and spot placement.")
    load_balancing: LoadBalancingSpec = Field(
        default_factory=LoadBalancingSpec, description="The router and its balancing policy."
    )
    autoscaling: AutoscalingSpec | None = Field(
        default=None,
        description="Latency-objective autoscaling; spec.replicas is used when unset or disabled.",
    )
    replicas: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Triton replicas when autoscaling is off; the target of `kubectl scale`.",
    )

    @property
    def autoscaling_enabled(self) -> bool:
        return self.autoscaling is not None and self.autoscaling.enabled
