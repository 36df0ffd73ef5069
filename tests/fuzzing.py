"""Hypothesis strategies and checks for fuzzing InferenceServices with bad input (issue 13).

Shared by the unit tier (tests/unit/test_fuzz_spec.py) and the integration tier
(tests/integration/test_fuzz_haproxy.py, tests/integration/test_fuzz_promql.py).

`accepted_bodies()` draws InferenceServices the model should accept: the examples and the
builder's minimal service with every field a user controls replaced, strings by hostile text
where the field's pattern lets it through (arguments, environment values, images, the model
repository, queries, labels, annotations) and by values at their length limits where it does not
(names, namespaces, label keys and values), numbers anywhere in their bounds and at them.
`with_hostile_names()` adds copies with a hostile name and namespace. `mutated_bodies()` breaks
1-3 fields of an example or of such a body (hostile text, numbers beyond their bounds, wrong
types, unknown fields, whole objects replaced), or replaces the whole document. `near_*` draw
near misses for fields with a Kubernetes format. The checks below say what the API server
accepts (is_dns_label, is_qualified_name, ...), whether a problem path names a field, and read
PromQL label matchers back as Prometheus does.
"""

from __future__ import annotations

import copy
import functools
import math
import re
from pathlib import Path
from typing import Any, get_args, get_origin

from hypothesis import strategies as st
from pydantic import BaseModel

from tests.builders import load_example, make_inference_service
from tritonscale.api.resource import PAUSE_ANNOTATION, InferenceService
from tritonscale.api.spec import MANAGED_METRICS_CONFIG, MANAGED_TRITON_FLAGS, PRODUCT_LABELLED_RESOURCES

ROOT = Path(__file__).parents[1]
BASES: tuple[dict[str, Any], ...] = (
    make_inference_service(),
    *(load_example(path) for path in sorted((ROOT / "examples").glob("*.yaml"))),
)

# --------------------------------------------------------------------------------------------
# Hostile text
# --------------------------------------------------------------------------------------------

HOSTILE_PIECES = (
    # line and record breaks, for every parser that splits on one of them
    "\n",
    "\r",
    "\r\n",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x1e",
    "\x85",
    "\u2028",
    "\u2029",
    # other control characters
    "\x00",
    "\x07",
    "\x1b[31m",
    "\t",
    "\x7f",
    # unicode that displays differently from what it is
    "\u202e",  # right-to-left override
    "\u200b",  # zero-width space
    "\u200d",
    "\ufeff",
    "\u00a0",
    "\ufffd",
    "é",
    "日本語",
    "\U0001f999",
    "\U0010ffff",
    # quoting, escaping and templating
    '"',
    "'",
    "`",
    "\\",
    "\\n",
    '\\"',
    "{{",
    "}}",
    "{{ owner }}",
    "{%",
    "%}",
    "{#",
    "#",
    "$",
    "$namespace",
    "${name}",
    "$$",
    "%[src]",
    "${HOME}",
    "$(reboot)",
    ";",
    "&&",
    "|",
    " ",
    "=",
    # HAProxy directives and sections
    "\nbackend evil\n",
    "\n    server evil 10.0.0.1:80",
    "\nglobal\n",
    "\nfrontend x\n    bind :1\n",
    "use_backend evil",
    "http-request deny",
    "stats enable",
    "server-template",
    "acl",
    # PromQL
    '"}',
    '",namespace=~".*',
    "=~",
    ".*",
    "{",
    "}",
    # Triton flags
    "--http-port=1",
    "--model-repository=/x",
    "--model-repo=/x",
)
LONG_LENGTHS = (62, 63, 64, 128, 129, 252, 253, 254, 512, 513, 1024, 1025, 2048, 2049, 4096, 4097)


def _long(length: int, piece: str, at: int) -> str:
    text = "a" * min(at, length) + piece
    return text + "a" * max(0, length - len(text))


long_text = st.builds(
    _long, st.sampled_from(LONG_LENGTHS), st.sampled_from(HOSTILE_PIECES), st.integers(0, 4097)
)
# Every ASCII character and the unicode the pieces above hold; full unicode comes from st.text().
HOSTILE_CHARS = "".join(chr(c) for c in range(128)) + "".join(
    sorted({c for piece in HOSTILE_PIECES for c in piece if ord(c) >= 128})
)
hostile_text = st.one_of(
    # one draw per piece: a few pieces and single characters make most values
    st.lists(st.sampled_from(HOSTILE_PIECES + tuple(HOSTILE_CHARS)), min_size=1, max_size=4).map("".join),
    long_text,
    st.text(max_size=8),
)


def without_whitespace(text: str) -> str:
    """What a `^[^\\s\\x00]+$` pattern lets through (str.isspace is a superset of regex \\s)."""
    return "".join(c for c in text if not c.isspace() and c != "\x00") or "x"


@functools.cache
def nonblank(limit: int) -> st.SearchStrategy[str]:
    """Hostile text a `^[^\\s\\x00]+$` field of at most `limit` characters accepts."""
    return hostile_text.map(lambda text: without_whitespace(text)[:limit])


@functools.cache
def bounded(limit: int, min_size: int = 0) -> st.SearchStrategy[str]:
    return hostile_text.map(lambda text: text[:limit]).filter(lambda text: len(text) >= min_size)


@functools.cache
def c_strings(limit: int, min_size: int = 0) -> st.SearchStrategy[str]:
    """Hostile text for what reaches a process (arguments, environment): anything but NUL."""
    return (
        bounded(limit, min_size)
        .map(lambda text: text.replace("\x00", ""))
        .filter(lambda text: len(text) >= min_size)
    )


# --------------------------------------------------------------------------------------------
# Names, label keys and values, at their length limits
# --------------------------------------------------------------------------------------------


def _repair(chars: str, alnum: str = "a") -> str:
    """A DNS-1123 subdomain from any string over [a-z0-9.-]: alphanumeric ends, and no dot
    next to another dot or a dash. Keeps the length."""
    out = list(chars)
    if out[0] in ".-":
        out[0] = alnum
    if out[-1] in ".-":
        out[-1] = alnum
    for i in range(1, len(out) - 1):
        if out[i] == "." and (out[i - 1] in ".-" or out[i + 1] in ".-"):
            out[i] = alnum
    return "".join(out)


def _lengths(boundaries: tuple[int, ...], most: int) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(boundaries), st.integers(1, most))


def _stretched(alphabet: str, lengths: st.SearchStrategy[int]) -> st.SearchStrategy[str]:
    """Strings of the drawn lengths over `alphabet`: a short drawn run, repeated (drawing each
    character of a 253-character name costs more than the rest of a whole InferenceService)."""
    return st.builds(
        lambda n, run: (run * n)[:n], lengths, st.text(alphabet=alphabet, min_size=1, max_size=8)
    )


@functools.cache
def dns_subdomains(most: int = 253) -> st.SearchStrategy[str]:
    """DNS-1123 subdomains (what the API server allows as an InferenceService's name)."""
    boundaries = tuple(n for n in (1, 2, 45, 53, 54, 55, 56, 57, 62, 63, 64, 65, 252, 253) if n <= most)
    return _stretched("a0z9-.", _lengths(boundaries, most)).map(_repair)


@functools.cache
def dns_labels(most: int = 63) -> st.SearchStrategy[str]:
    """DNS-1123 labels (namespaces), starting with a letter or a digit."""
    boundaries = tuple(n for n in (1, 2, 62, 63) if n <= most)
    return _stretched("a0z9-", _lengths(boundaries, most)).map(_repair)


subdomains = dns_subdomains()
namespaces = dns_labels()


label_names = _stretched("aZ09-_.", _lengths((1, 2, 62, 63), 63)).map(
    lambda s: ("a" + s[1:-1] + "9")[: len(s)] if len(s) > 1 else "a"
)
label_values = st.one_of(st.just(""), label_names)
# Keys whose prefix is at most 253 characters (see test_label_key_prefix_length_gap).
label_keys = st.one_of(
    label_names,
    st.builds(lambda prefix, name: f"{prefix}/{name}", subdomains, label_names),
)
# Lowercase, as the model's RESOURCE_NAME_PATTERN wants; the name part within 63 characters.
resource_names = st.one_of(
    st.sampled_from(["cpu", "memory", "ephemeral-storage", "nvidia.com/gpu", "example.com/fpga"]),
    st.builds(
        lambda prefix, name: f"{prefix}/{name}",
        dns_subdomains(100),
        _stretched("a0-_.", _lengths((1, 63), 63)).map(
            lambda s: _repair(s.replace("_", "-")).replace("-", "_", 1)
        ),
    ).filter(lambda name: len(name) <= 253),
)
quantities = st.one_of(
    st.integers(0, 2**40),
    st.sampled_from(["0", "1", "100m", "1.5", ".5", "+1", "2Gi", "1e3", "1E-3", "512Mi", "1k", "0.000001"]),
)
model_names = _stretched("aZ09_.-", _lengths((1, 2, 127, 128), 128)).map(lambda s: "m" + s[1:])
env_names = st.one_of(
    st.from_regex(r"\A[-._a-zA-Z][-._a-zA-Z0-9]{0,16}\Z", fullmatch=True),
    st.sampled_from(["_", "-", ".", "..", "A" * 256]),
)


@functools.cache
def bounded_ints(low: int, high: int) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from([low, low + 1, high - 1, high]), st.integers(low, high))


@functools.cache
def bounded_floats(low: float, high: float, low_open: bool = False) -> st.SearchStrategy[float]:
    edges = [high, (low + high) / 2] + ([] if low_open else [low])
    return st.one_of(
        st.sampled_from(edges),
        st.floats(low, high, exclude_min=low_open, allow_nan=False, allow_infinity=False),
    )


# Near misses for fields with a Kubernetes format: the right characters and the wrong ones, runs
# of dots and dashes, lengths either side of each limit.
near_dns_names = st.one_of(
    _stretched("a0.-", _lengths((1, 2, 62, 63, 64, 252, 253, 254), 260)),
    _stretched("a0.-Z_", _lengths((1, 63, 64), 70)),
    hostile_text,
)
near_label_values = st.one_of(_stretched("aZ0.-_", _lengths((1, 62, 63, 64), 70)), st.just(""), hostile_text)


def near_qualified_names(longest_prefix: int) -> st.SearchStrategy[str]:
    """[prefix/]name near misses; prefixes up to `longest_prefix` characters."""
    prefixes = _stretched("a0.-", _lengths((1, 63, 64, 252, 253, 254, 300), longest_prefix)).filter(
        lambda prefix: len(prefix) <= longest_prefix
    )
    names = _stretched("aZ0.-_", _lengths((1, 62, 63, 64), 70))
    return st.one_of(names, st.builds(lambda p, n: f"{p}/{n}", prefixes, names), hostile_text)


near_managed_flags = st.builds(
    lambda flag, end, value: flag[:end] + value,
    st.sampled_from(MANAGED_TRITON_FLAGS),
    st.integers(1, 20),
    st.sampled_from(["", "=", "=1", "x", "-x=1"]),
)
near_args = st.one_of(
    near_managed_flags,
    st.sampled_from(
        [
            "--log-verbose=1",
            "--model-control-mode=explicit",
            "--http-thread-count=4",
            "--",
            "--metrics-config=counter_latencies=false",
            "--metrics-config=summary_latencies=false",
            "--metrics-con=summary_quantiles=0.5:0.1",
            "summary_latencies=false",
            "--log-file=/logs/summary_latencies.log",
        ]
    ),
    hostile_text.filter(bool),
)


# --------------------------------------------------------------------------------------------
# Bodies the model accepts
# --------------------------------------------------------------------------------------------


def sets_a_managed_flag(arg: str) -> bool:
    """Whether tritonserver (getopt_long: a long option, `=value` or not, abbreviated to any
    prefix) would take `arg` for a flag the operator manages, or it names a metrics
    configuration key the operator manages."""
    name = arg.split("=", 1)[0]
    return (len(name) > len("--") and any(flag.startswith(name) for flag in MANAGED_TRITON_FLAGS)) or any(
        arg.startswith(key)
        or ("--metrics-config".startswith(name) and len(name) >= len("--metrics-c") and key in arg)
        for key in MANAGED_METRICS_CONFIG
    )


triton_args = c_strings(1024, min_size=1).filter(lambda arg: not sets_a_managed_flag(arg))


@st.composite
def tolerations(draw: st.DrawFn) -> dict[str, Any]:
    operator = draw(st.sampled_from(["Equal", "Exists", None]))
    out: dict[str, Any] = {"key": draw(label_keys)}
    if operator is not None:
        out["operator"] = operator
    if operator != "Exists" and draw(st.booleans()):
        out["value"] = draw(label_values)
    if draw(st.booleans()):
        out["effect"] = draw(st.sampled_from(["NoSchedule", "PreferNoSchedule", "NoExecute"]))
    return out


pool_placements = st.fixed_dictionaries(
    {},
    optional={
        "nodeSelector": st.dictionaries(label_keys, label_values, max_size=2),
        "tolerations": st.lists(tolerations(), max_size=2),
    },
)


_names = st.one_of(subdomains, st.sampled_from(["x", "triton", "a-tritonx", "a..b", "0.-9"]))
_now_and_then = st.sampled_from([False] * 9 + [True])


@st.composite
def _label_selectors(draw: st.DrawFn) -> dict[str, Any]:
    selector: dict[str, Any] = {}
    if draw(st.booleans()):
        selector["matchLabels"] = draw(st.dictionaries(label_keys, label_values, max_size=2))
    if draw(st.booleans()):
        operator = draw(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]))
        values = draw(st.lists(label_values, min_size=1, max_size=2)) if operator in ("In", "NotIn") else []
        selector["matchExpressions"] = [
            {"key": draw(label_keys), "operator": operator, **({"values": values} if values else {})}
        ]
    return selector


_router_clients = st.one_of(
    st.fixed_dictionaries({"podSelector": _label_selectors()}),
    st.fixed_dictionaries({"namespaceSelector": _label_selectors()}),
    st.fixed_dictionaries({"namespaceSelector": _label_selectors(), "podSelector": _label_selectors()}),
)
_labels = st.dictionaries(hostile_text, hostile_text, max_size=1)
_annotations = st.dictionaries(st.one_of(st.just(PAUSE_ANNOTATION), hostile_text), hostile_text, max_size=1)
_model_name_lists = st.lists(model_names, min_size=1, max_size=3, unique=True)
_arg_lists = st.lists(triton_args, max_size=3)
_key_references = st.fixed_dictionaries(
    {"name": subdomains, "key": st.from_regex(r"\A[-._a-zA-Z0-9]{1,40}\Z", fullmatch=True)},
    optional={"optional": st.booleans()},
)
_env_lists = st.lists(
    st.one_of(
        st.fixed_dictionaries({"name": env_names}, optional={"value": c_strings(4096)}),
        st.fixed_dictionaries(
            {
                "name": env_names,
                "valueFrom": st.one_of(
                    st.builds(lambda ref: {"secretKeyRef": ref}, _key_references),
                    st.builds(lambda ref: {"configMapKeyRef": ref}, _key_references),
                ),
            }
        ),
    ),
    max_size=2,
    unique_by=lambda var: var["name"],
)
_standard_resources = st.dictionaries(
    st.sampled_from(["cpu", "memory", "ephemeral-storage", "hugepages-2Mi"]), quantities, max_size=2
)
_extended_resources = st.dictionaries(
    resource_names.filter(lambda name: "/" in name), st.integers(0, 2**40), max_size=2
)


@st.composite
def resource_requirements(draw: st.DrawFn, accelerator: str | None = None) -> dict[str, Any]:
    """Requests and limits a Pod takes: a standard resource in one of them (so never a request
    over its limit), an extended one in whole units in limits, and in requests only at the same
    value; never the accelerator's own resource (accelerator.count sets it)."""
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    for name, value in draw(_standard_resources).items():
        side = draw(st.sampled_from(("requests", "limits", "both")))
        if side in ("requests", "both"):
            requests[name] = value
        if side in ("limits", "both"):
            limits[name] = value  # equal, as written or by value (CEL's quantity() must agree)
    for name, value in draw(_extended_resources).items():
        if name == accelerator:
            continue
        limits[name] = value
        if draw(st.booleans()):
            requests[name] = value
    return {"requests": requests, "limits": limits}


@st.composite
def accepted_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """Bodies the model should accept (see `with_hostile_names` for names it should not)."""
    body: dict[str, Any] = copy.deepcopy(draw(st.sampled_from(BASES)))
    metadata = body["metadata"]
    metadata["name"] = draw(_names)
    metadata["namespace"] = draw(namespaces)
    if draw(st.booleans()):
        metadata["uid"] = draw(hostile_text)
    metadata["labels"] = draw(_labels)
    metadata["annotations"] = draw(_annotations)

    spec = body["spec"]
    spec["model"] = {
        "repository": draw(nonblank(2048)),
        "names": draw(_model_name_lists),
    }
    spec["replicas"] = draw(bounded_ints(0, 1000))

    triton = spec.setdefault("triton", {})
    triton["args"] = draw(_arg_lists)
    triton["env"] = draw(_env_lists)
    if draw(st.booleans()):
        triton["image"] = draw(nonblank(512))
    if draw(st.booleans()):
        triton["imagePullPolicy"] = draw(st.sampled_from(["Always", "IfNotPresent", "Never"]))
    if draw(st.booleans()):
        triton["serviceAccountName"] = draw(subdomains)
    if draw(st.booleans()):
        triton["startupTimeoutSeconds"] = draw(bounded_ints(30, 86400))
    if draw(st.booleans()):
        triton["sharedMemory"] = draw(quantities.filter(lambda q: q not in (0, "0")))
    accelerator = spec.get("accelerator")
    if draw(st.booleans()):
        triton["resources"] = draw(resource_requirements(accelerator and accelerator.get("resource")))

    if accelerator is not None:
        accelerator["count"] = draw(bounded_ints(1, 64))
        if "product" in accelerator:
            accelerator["product"] = draw(label_values)

    capacity = spec.setdefault("capacity", {})
    spot_enabled = draw(st.booleans())
    custom = capacity.get("nodePoolPreset") == "custom" or draw(_now_and_then)
    needs_custom = accelerator is not None and accelerator.get("resource") not in PRODUCT_LABELLED_RESOURCES
    if custom or (needs_custom and "product" in accelerator):
        capacity["nodePoolPreset"] = "custom"
        capacity["custom"] = {
            "onDemand": draw(pool_placements),
            "spot": draw(pool_placements),
            "acceleratorProductLabel": draw(label_keys),
        }
        if spot_enabled and not capacity["custom"]["spot"].get("nodeSelector"):
            capacity["custom"]["spot"]["nodeSelector"] = {draw(label_keys): draw(label_values)}
    elif not needs_custom:
        capacity["nodePoolPreset"] = draw(st.sampled_from(["karpenter", "gke", "eks", "aks"]))
    capacity["spot"] = {
        "enabled": spot_enabled,
        "maxFraction": draw(bounded_floats(0.0, 1.0, low_open=spot_enabled)),
        "fallbackAfterSeconds": draw(bounded_ints(0, 3600)),
    }

    spec["loadBalancing"] = {
        "policy": draw(st.sampled_from(["RoundRobin", "LeastConnections", "PowerOfTwoChoices"])),
        "router": {
            "replicas": draw(bounded_ints(1, 20)),
            "image": draw(nonblank(512)),
            "timeoutSeconds": draw(bounded_ints(1, 3600)),
        },
    }
    if draw(_now_and_then):
        spec["loadBalancing"]["router"]["clients"] = draw(st.lists(_router_clients, min_size=1, max_size=3))

    on_demand_base_most = 1000
    spec.pop("autoscaling", None)
    if draw(st.booleans()):
        low, high = sorted((draw(bounded_ints(1, 1000)), draw(bounded_ints(1, 1000))))
        source = draw(st.sampled_from(["auto", "prometheus", "triton"]))
        metrics: dict[str, Any] = {"source": source}
        if draw(st.booleans()):
            metrics["prometheusURL"] = draw(st.sampled_from(["http://", "https://"])) + draw(nonblank(2040))
        if source != "triton":
            for key in ("latencyQuery", "rateQuery"):
                if draw(st.booleans()):
                    metrics[key] = draw(bounded(4096, min_size=1))
        enabled = draw(st.booleans())
        spec["autoscaling"] = {
            "enabled": enabled,
            "minReplicas": low,
            "maxReplicas": high,
            "periodSeconds": draw(bounded_ints(1, 300)),
            "latency": {
                "targetMilliseconds": draw(bounded_floats(0.0, 600000.0, low_open=True)),
                "percentile": draw(bounded_floats(50.0, 99.9)),
            },
            "metrics": metrics,
            "scaleDown": {
                "stabilizationSeconds": draw(bounded_ints(0, 3600)),
                "maxStepPercent": draw(bounded_ints(1, 100)),
            },
        }
        if draw(st.booleans()):
            spec["autoscaling"]["coldStartSeconds"] = draw(bounded_ints(1, 3600))
        names = spec["model"]["names"]
        if enabled and len(names) == 1 and draw(st.sampled_from([False] * 3 + [True])):
            # Faster variants, each from its own repository (the model's may be any string);
            # served only while autoscaling is enabled.
            count = draw(st.integers(1, 3))
            variant_names = draw(st.lists(model_names, min_size=count, max_size=count, unique=True))
            spec["model"]["variants"] = [
                {
                    "name": variant,
                    "repository": draw(nonblank(2048)),
                    "accuracy": draw(bounded_floats(0.0, 1.0, low_open=True)),
                    "speedup": draw(bounded_floats(1.0, 100.0, low_open=True)),
                }
                for variant in variant_names
                if variant not in names
            ]
            spec["autoscaling"]["accuracy"] = {
                "floor": draw(bounded_floats(0.5, 0.999999)),
                "windowSeconds": draw(bounded_ints(60, 86400)),
                "steadySpend": draw(bounded_floats(0.0, 1.0)),
            }
            if not spec["model"]["variants"]:
                del spec["model"]["variants"], spec["autoscaling"]["accuracy"]
        if enabled:
            on_demand_base_most = high
        if draw(st.booleans()):
            body["status"] = {"desiredReplicas": draw(st.integers(0, 2000))}
    capacity["onDemandBase"] = draw(bounded_ints(0, on_demand_base_most))
    return body


def with_hostile_names(body: dict[str, Any], name: str, namespace: str) -> list[dict[str, Any]]:
    """The body, and copies with a hostile name and with a hostile namespace: the model must
    refuse those, or the renderers cope with them."""
    variants = [body]
    for key, value in (("name", name), ("namespace", namespace)):
        variant = copy.deepcopy(body)
        variant["metadata"][key] = value
        variants.append(variant)
    return variants


# --------------------------------------------------------------------------------------------
# Bodies with broken fields
# --------------------------------------------------------------------------------------------

KEY = "<key>"  # a path segment replaced by a drawn (hostile) map key
MUTABLE_PATHS = (
    "apiVersion",
    "kind",
    "metadata",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "metadata.generation",
    "metadata.labels",
    f"metadata.labels.{KEY}",
    f"metadata.annotations.{KEY}",
    "metadata.annotations.PAUSE",
    "spec",
    f"spec.{KEY}",
    "spec.model",
    "spec.model.repository",
    "spec.model.names",
    "spec.model.names[0]",
    "spec.model.names[1]",
    "spec.triton",
    "spec.triton.image",
    "spec.triton.imagePullPolicy",
    "spec.triton.args",
    "spec.triton.args[0]",
    "spec.triton.env",
    "spec.triton.env[0]",
    "spec.triton.env[0].name",
    "spec.triton.env[0].value",
    "spec.triton.resources",
    "spec.triton.resources.requests.cpu",
    f"spec.triton.resources.limits.{KEY}",
    "spec.triton.serviceAccountName",
    "spec.triton.startupTimeoutSeconds",
    "spec.triton.sharedMemory",
    "spec.accelerator",
    "spec.accelerator.resource",
    "spec.accelerator.count",
    "spec.accelerator.product",
    "spec.accelerator.topology",
    "spec.capacity",
    "spec.capacity.nodePoolPreset",
    "spec.capacity.onDemandBase",
    "spec.capacity.spot.enabled",
    "spec.capacity.spot.maxFraction",
    "spec.capacity.spot.fallbackAfterSeconds",
    "spec.capacity.custom",
    f"spec.capacity.custom.onDemand.nodeSelector.{KEY}",
    "spec.capacity.custom.spot.tolerations[0]",
    "spec.capacity.custom.spot.tolerations[0].key",
    "spec.capacity.custom.spot.tolerations[0].value",
    "spec.capacity.custom.acceleratorProductLabel",
    "spec.loadBalancing.policy",
    "spec.loadBalancing.router",
    "spec.loadBalancing.router.replicas",
    "spec.loadBalancing.router.image",
    "spec.loadBalancing.router.timeoutSeconds",
    "spec.loadBalancing.router.resources.requests.memory",
    "spec.autoscaling",
    "spec.autoscaling.enabled",
    "spec.autoscaling.minReplicas",
    "spec.autoscaling.maxReplicas",
    "spec.autoscaling.periodSeconds",
    "spec.autoscaling.coldStartSeconds",
    "spec.autoscaling.latency.targetMilliseconds",
    "spec.autoscaling.latency.percentile",
    "spec.autoscaling.metrics.source",
    "spec.autoscaling.metrics.prometheusURL",
    "spec.autoscaling.metrics.latencyQuery",
    "spec.autoscaling.metrics.rateQuery",
    "spec.autoscaling.scaleDown.stabilizationSeconds",
    "spec.autoscaling.scaleDown.maxStepPercent",
    "spec.replicas",
    "status",
    "status.desiredReplicas",
    "status.conditions",
    f"status.{KEY}",
)

BOUNDARY_NUMBERS: tuple[Any, ...] = (
    *(n + d for n in (0, 1, 20, 50, 64, 100, 300, 1000, 3600, 600000) for d in (-1, 0, 1)),
    *(2**31, 2**63, -(2**63), 10**30, 0.5, 99.9, 99.91, 100.0, -0.0, 1e-300),
    *(math.nan, math.inf, -math.inf, True, False),
)
hostile_numbers = st.one_of(
    st.sampled_from(BOUNDARY_NUMBERS),
    st.integers(-(2**70), 2**70),
    st.floats(),
)
junk = st.recursive(
    st.one_of(st.none(), st.booleans(), hostile_numbers, hostile_text),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(hostile_text, children, max_size=3)
    ),
    max_leaves=6,
)


def path_parts(path: str) -> list[str]:
    """`a.b[0].c` as ["a", "b", "[0]", "c"]."""
    return re.findall(r"[^.\[\]]+|\[\d+\]", path)


def set_path(obj: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set the field at `parts` (keys, and "[i]" list indices), replacing whatever is in the way."""
    node: Any = obj
    for part, following in zip(parts, [*parts[1:], None], strict=True):
        child: Any = [] if following is not None and re.fullmatch(r"\[\d+\]", following) else {}
        if re.fullmatch(r"\[\d+\]", part):
            index = int(part[1:-1])
            while len(node) <= index:
                node.append("x" if following is None else copy.deepcopy(child))
            if following is None:
                node[index] = value
            elif type(node[index]) is not type(child):
                node[index] = child
            node = node[index]
        else:
            if following is None:
                node[part] = value
            elif type(node.get(part)) is not type(child):
                node[part] = child
            node = node[part]


_mutation_bases = st.one_of(st.sampled_from(BASES), accepted_bodies())
_broken_documents: st.SearchStrategy[Any] = st.one_of(
    junk, st.just({}), st.just({"kind": "InferenceService"})
)
_keys = st.one_of(hostile_text, label_keys)


_bad_values = st.one_of(
    hostile_text,
    hostile_numbers,
    junk,
    st.sampled_from([None, [], {}, "", "default"]),
)


@st.composite
def mutated_bodies(draw: st.DrawFn) -> tuple[Any, list[str]]:
    """A body with 1-3 broken fields and the dotted paths broken; or now and then a broken
    document (no paths)."""
    if draw(st.integers(0, 19)) == 0:
        return draw(_broken_documents), []
    body = copy.deepcopy(draw(_mutation_bases))
    paths = []
    for _ in range(draw(st.integers(1, 3))):
        template = draw(st.sampled_from(MUTABLE_PATHS))
        parts = [
            PAUSE_ANNOTATION if part == "PAUSE" else part for part in path_parts(template.replace(KEY, "KEY"))
        ]
        if KEY in template:
            key = draw(_keys)
            parts = [key if part == "KEY" else part for part in parts]
        value = draw(_bad_values)
        set_path(body, parts, value)
        paths.append(".".join(parts).replace(".[", "["))
    return body, paths


# --------------------------------------------------------------------------------------------
# Does a problem path name a field?
# --------------------------------------------------------------------------------------------


def _unwrap(annotation: Any) -> Any:
    """The model, list or dict type inside an Optional / Annotated / union annotation."""
    while True:
        origin = get_origin(annotation)
        args = get_args(annotation)
        if origin is None or origin in (list, dict):
            return annotation
        if hasattr(annotation, "__metadata__"):  # Annotated
            annotation = args[0]
            continue
        members = [a for a in args if a is not type(None)]
        structured = [a for a in members if get_origin(a) in (list, dict) or _is_model(a)]
        annotation = structured[0] if structured else members[0]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def names_a_field(path: str, body: Any) -> bool:
    """Whether a problem path is a field of the InferenceService schema, an element or key of
    one of its lists and maps, or an unknown key the body really has."""
    if path in ("(document)", "apiVersion"):
        return True
    annotation: Any = InferenceService
    node: Any = body
    rest = path
    while rest:
        annotation = _unwrap(annotation)
        if _is_model(annotation):
            fields = {(f.alias or name): f for name, f in annotation.model_fields.items()}
            fields.update(annotation.model_fields)
            match = next(
                (
                    key
                    for key in sorted(fields, key=len, reverse=True)
                    if re.match(re.escape(key) + r"(\.|\[|$)", rest)
                ),
                None,
            )
            if match is None:
                # An unknown field: the rest of the path starts with a key the body has.
                return isinstance(node, dict) and any(
                    isinstance(k, str) and (rest == k or rest.startswith((k + ".", k + "["))) for k in node
                )
            annotation = fields[match].annotation
            node = node.get(match) if isinstance(node, dict) else None
            rest = rest[len(match) :].removeprefix(".")
        elif get_origin(annotation) is list:
            found = re.match(r"\[(\d+)\]\.?", rest)
            if found is None:
                return False
            (annotation,) = get_args(annotation)
            index = int(found.group(1))
            node = node[index] if isinstance(node, list) and index < len(node) else None
            rest = rest[found.end() :]
        else:
            # A map's key (which may hold dots, and be followed by `.[key]`); nothing is below
            # a scalar.
            return get_origin(annotation) is dict
    return True


def related(problem: str, mutated: str) -> bool:
    """Whether a problem path is about a mutated path: the field itself, inside it, one of
    its ancestors, or a sibling (cross-field rules name one field of a pair)."""
    if mutated in ("apiVersion", "kind"):
        return problem == "apiVersion"
    parent = re.sub(r"(\.[^.\[\]]*|\[\d+\])$", "", mutated)
    # Spec-level rules: a change to autoscaling, accelerator or capacity may be reported at
    # the other field of the pair.
    cross_field = ("spec.capacity.onDemandBase", "spec.accelerator.product")
    return (
        problem == mutated
        or problem.startswith((mutated + ".", mutated + "[", parent + ".", parent + "["))
        or mutated.startswith((problem + ".", problem + "["))
        or problem in cross_field
    )


# --------------------------------------------------------------------------------------------
# What Kubernetes requires of the rendered objects
# --------------------------------------------------------------------------------------------

DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def is_dns_label(name: object) -> bool:
    return isinstance(name, str) and len(name) <= 63 and bool(DNS_1123_LABEL.fullmatch(name))


def is_dns_1035_label(name: object) -> bool:
    return isinstance(name, str) and len(name) <= 63 and bool(DNS_1035_LABEL.fullmatch(name))


def is_dns_subdomain(name: object) -> bool:
    return isinstance(name, str) and len(name) <= 253 and bool(DNS_1123_SUBDOMAIN.fullmatch(name))


def is_qualified_name(key: object) -> bool:
    """A label, annotation, taint or resource key: [prefix/]name (IsQualifiedName)."""
    if not isinstance(key, str):
        return False
    prefix, _, name = key.rpartition("/")
    if "/" in key and not is_dns_subdomain(prefix):
        return False
    return len(name) <= 63 and bool(_QUALIFIED_NAME.fullmatch(name))


def is_label_value(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 63 and bool(_LABEL_VALUE.fullmatch(value))


# What the API server requires of each kind's name (ValidateObjectMeta's name function).
NAME_RULES = {
    "Service": is_dns_1035_label,
    "ConfigMap": is_dns_subdomain,
    "Deployment": is_dns_subdomain,
    "PodDisruptionBudget": is_dns_subdomain,
    "NetworkPolicy": is_dns_subdomain,
}


# --------------------------------------------------------------------------------------------
# PromQL label matchers, read back as Prometheus reads them
# --------------------------------------------------------------------------------------------


class PromQLSyntaxError(ValueError):
    pass


_PROMQL_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
_PLAIN_RUN = re.compile(r'[^"\\\n\ufffd]+')
_MATCHER = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*")
# What the operator's queries hold outside their {...} selectors: metric and function names,
# numbers, operators, parentheses and [range] selectors.
_OUTSIDE_SELECTORS = re.compile(r"[a-zA-Z0-9_:()\[\] /*+.,-]")


def read_promql_string(query: str, start: int) -> tuple[str, int]:
    """The double-quoted PromQL string at query[start] and the index after it: Prometheus's
    lexer (a raw newline, or U+FFFD, ends the query with an error; only the escapes below are
    known), then Go's strconv.Unquote."""
    if query[start : start + 1] != '"':
        raise PromQLSyntaxError(f"expected a string at {start}")
    out: list[str] = []
    i = start + 1
    while True:
        if i >= len(query) or query[i] == "\n":
            raise PromQLSyntaxError("unterminated quoted string")
        char = query[i]
        if char == '"':
            return "".join(out), i + 1
        if char == "\ufffd":
            raise PromQLSyntaxError("invalid UTF-8 rune")
        if char != "\\":
            run = _PLAIN_RUN.match(query, i)
            assert run is not None
            out.append(run.group())
            i = run.end()
            continue
        escape = query[i + 1 : i + 2]
        if escape in _PROMQL_ESCAPES or escape == '"':
            out.append(_PROMQL_ESCAPES.get(escape, '"'))
            i += 2
            continue
        digits, base = {"x": (2, 16), "u": (4, 16), "U": (8, 16)}.get(escape, (3, 8))
        offset = 1 if escape in "01234567" else 2
        number = query[i + offset : i + offset + digits]
        allowed = "0123456789abcdefABCDEF"[:base] if base == 16 else "01234567"
        if not escape or len(number) != digits or any(c not in allowed for c in number):
            raise PromQLSyntaxError(f"unknown escape sequence {escape!r}")
        code = int(number, base)
        if code > 0x10FFFF or 0xD800 <= code < 0xE000 or (base == 8 and code > 255):
            raise PromQLSyntaxError(f"invalid escape {number!r}")
        out.append(chr(code))
        i += offset + digits


def promql_selectors(query: str) -> list[list[tuple[str, str, str]]]:
    """Every {label op "value", ...} selector of a query, with values unquoted; raises
    PromQLSyntaxError on anything else than the operator's query shapes."""
    selectors: list[list[tuple[str, str, str]]] = []
    i = 0
    while i < len(query):
        if query[i] != "{":
            if not _OUTSIDE_SELECTORS.fullmatch(query[i]):
                raise PromQLSyntaxError(f"unexpected {query[i]!r} at {i} outside a selector")
            i += 1
            continue
        matchers: list[tuple[str, str, str]] = []
        i += 1
        while True:
            if query[i : i + 1] == "}":
                i += 1
                break
            found = _MATCHER.match(query, i)
            if found is None:
                raise PromQLSyntaxError(f"expected a label matcher at {i}")
            value, i = read_promql_string(query, found.end())
            matchers.append((found.group(1), found.group(2), value))
            if query[i : i + 1] == ",":
                i += 1
            elif query[i : i + 1] != "}":
                raise PromQLSyntaxError(f"expected ',' or '}}' at {i}")
        selectors.append(matchers)
    return selectors


_RE2_META = frozenset("\\.+*?()|[]{}^$")


def regex_literals(regex: str, suffix: str = "") -> list[str]:
    """The strings an `a|b|c` regex (each alternative followed by the regex `suffix`) is made
    of, when each is a literal with every RE2 metacharacter escaped; PromQLSyntaxError if not."""
    tokens: list[tuple[str, bool]] = []  # (character, escaped)
    i = 0
    while i < len(regex):
        if regex[i] == "\\":
            if regex[i + 1 : i + 2] not in _RE2_META:
                raise PromQLSyntaxError(f"not a literal: {regex[i : i + 2]!r}")
            tokens.append((regex[i + 1], True))
            i += 2
        else:
            tokens.append((regex[i], False))
            i += 1
    alternatives: list[list[tuple[str, bool]]] = [[]]
    for char, escaped in tokens:
        if char == "|" and not escaped:
            alternatives.append([])
        else:
            alternatives[-1].append((char, escaped))
    literals = []
    for alternative in alternatives:
        body, tail = (
            alternative[: len(alternative) - len(suffix)],
            alternative[len(alternative) - len(suffix) :],
        )
        if [(c, False) for c in suffix] != tail:
            raise PromQLSyntaxError(f"an alternative of {regex!r} does not end in {suffix!r}")
        if any(char in _RE2_META and not escaped for char, escaped in body):
            raise PromQLSyntaxError(f"an alternative of {regex!r} is not a literal")
        literals.append("".join(char for char, _ in body))
    return literals
