"""Bad input (issue 13): the InferenceService model and the renderers, fuzzed with hypothesis.

Bodies are drawn by tests/fuzzing.py: the examples and the builder's minimal service with every
field a user controls replaced by hostile text (line breaks, NUL and other control characters,
right-to-left and zero-width unicode, quotes, backslashes, `{{`, `}}`, `#`, `$`, HAProxy
directives, values up to 4097 characters), names and label keys and values at their length
limits, and numbers at and beyond their bounds.

Every property runs a fixed, derandomized set of examples (CI never meets a new one by chance):

| property                                                              | examples |
|-----------------------------------------------------------------------|----------|
| parse accepts, or raises InvalidInferenceService naming the fields    |      500 |
| ... and values nested 10,000 deep are refused, not a RecursionError  |   18 set |
| accepted specs render objects the API server accepts                  |      400 |
| ... whose haproxy.cfg keeps a benign config's lines and directives    |  (same) |
| ... whose Triton args and env stay one value each                     |  (same) |
| the model accepts only names, keys, values and args Kubernetes and    |          |
|   tritonserver accept (10 fields)                                     |   10x150 |
| `tritonscale render`'s YAML round-trips hostile text                  |      300 |
| PromQL label values cannot leave their quotes, regexes stay literals  |      600 |

The three render properties share one test, and so one set of examples (each body also tried
with a hostile name and a hostile namespace): drawing a whole InferenceService costs more than
checking it. About 3,300 cases in 15-20 s on two cores (`--durations` shows each). The same
haproxy.cfg files pass the real `haproxy -c` in tests/integration/test_fuzz_haproxy.py, and the
PromQL the real `promtool` in tests/integration/test_fuzz_promql.py.

Gaps found between what the model accepts and what Kubernetes accepts, once closed, are tests at
the end of this file.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.builders import make_inference_service
from tests.fuzzing import (
    NAME_RULES,
    accepted_bodies,
    hostile_text,
    is_dns_1035_label,
    is_dns_label,
    is_dns_subdomain,
    is_label_value,
    is_qualified_name,
    mutated_bodies,
    names_a_field,
    near_args,
    near_dns_names,
    near_label_values,
    near_qualified_names,
    promql_selectors,
    regex_literals,
    related,
    sets_a_managed_flag,
    with_hostile_names,
)
from tests.reliability import record
from tritonscale.api.observation import ScalingTarget
from tritonscale.api.resource import InferenceService, InvalidInferenceService, parse_inference_service
from tritonscale.clients.observations import prometheus_queries, promql_string
from tritonscale.policy.placement import split_replicas
from tritonscale.policy.replicas import reconciled_replicas
from tritonscale.ports import variant_ports
from tritonscale.render.names import LABEL_COMPONENT, StackNames
from tritonscale.render.router import RouterOptions, render_router_config
from tritonscale.render.stack import render_stack
from tritonscale.render.triton import env_var, triton_args
from tritonscale.render.variants import served_variants
from tritonscale.yamlfmt import dump_all

FUZZ_BUDGETS: list[int] = []  # each fuzzed test's number of cases, for the reliability report


@pytest.fixture(scope="module", autouse=True)
def _report_cases() -> Iterator[None]:
    yield
    record(
        "bad input",
        "hypothesis: mutated and hostile specs through the model and every renderer",
        "no crash; errors name real fields; nothing escapes its quotes or its line",
        fuzzed_tests=len(FUZZ_BUDGETS),
        cases=sum(FUZZ_BUDGETS),
    )


def fuzz(examples: int) -> settings:
    FUZZ_BUDGETS.append(examples)
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def stack(service: InferenceService) -> list[dict[str, Any]]:
    return render_stack(service, split_replicas(reconciled_replicas(service), service.spec.capacity))


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


@fuzz(500)
@given(case=mutated_bodies())
def test_parse_accepts_or_raises_invalid_naming_the_fields(case: tuple[Any, list[str]]) -> None:
    """Anything at all parses to an InferenceService or raises InvalidInferenceService whose
    problems each name a field of the resource (never KeyError, TypeError, RecursionError...);
    when fields were broken, some problem names one of them."""
    body, mutated = case
    try:
        service = parse_inference_service(body)
    except InvalidInferenceService as error:
        invalid = error
    else:
        assert isinstance(service, InferenceService)
        return
    assert invalid.problems
    for problem in invalid.problems:
        assert names_a_field(problem.path, body), f"{problem.path!r} names no field: {problem}"
        assert isinstance(problem.message, str) and problem.message
    if mutated:
        paths = [problem.path for problem in invalid.problems]
        assert any(related(path, m) for path in paths for m in mutated), (mutated, paths)
    assert str(invalid)


def _nested(kind: str, depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


@pytest.mark.parametrize(
    "path",
    [
        ("spec", "replicas"),
        ("spec", "model", "names"),
        ("spec", "triton", "args"),
        ("spec", "triton", "resources", "requests"),
        ("spec", "capacity", "custom"),
        ("spec", "unknown"),
        ("metadata", "labels"),
        ("metadata", "ignored"),
        ("status", "conditions"),
    ],
    ids=".".join,
)
@pytest.mark.parametrize("kind", ["list", "dict"])
def test_deeply_nested_values_are_refused_not_crashed(path: tuple[str, ...], kind: str) -> None:
    """YAML and JSON nest without limit; hypothesis cannot draw (or print) such values."""
    body = make_inference_service()
    node = body
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = _nested(kind, 10_000)
    if path == ("metadata", "ignored"):
        parse_inference_service(body)
        return
    with pytest.raises(InvalidInferenceService) as raised:
        parse_inference_service(body)
    assert all(names_a_field(problem.path, body) for problem in raised.value.problems)
    assert str(raised.value)


# --------------------------------------------------------------------------------------------
# The rendered objects
# --------------------------------------------------------------------------------------------


def _label_maps(obj: Any, key: str = "") -> list[dict[str, Any]]:
    """Every label map and label selector in an object."""
    found = []
    if isinstance(obj, dict):
        if key in ("labels", "matchLabels"):
            found.append(obj)
        for child_key, child in obj.items():
            found += _label_maps(child, child_key)
    elif isinstance(obj, list):
        for child in obj:
            found += _label_maps(child, key)
    return found


def _annotation_maps(obj: Any) -> list[dict[str, Any]]:
    if isinstance(obj, dict):
        return ([obj["annotations"]] if "annotations" in obj else []) + [
            m for child in obj.values() for m in _annotation_maps(child)
        ]
    if isinstance(obj, list):
        return [m for child in obj for m in _annotation_maps(child)]
    return []


def assert_valid_for_kubernetes(service: InferenceService, objects: list[dict[str, Any]]) -> None:
    """Names, namespaces, labels, selectors, annotations and references the API server accepts."""
    assert len({(o["kind"], o["metadata"]["name"]) for o in objects}) == len(objects)
    for obj in objects:
        kind, metadata = obj["kind"], obj["metadata"]
        name = metadata["name"]
        assert NAME_RULES[kind](name), f"{kind} name {name!r}"
        # render/names.py promises a DNS-1035 label, valid for every kind it names.
        assert is_dns_1035_label(name), f"{kind} name {name!r}"
        assert metadata["namespace"] == service.namespace and is_dns_label(metadata["namespace"])
        for labels in _label_maps(obj):
            for key, value in labels.items():
                assert is_qualified_name(key) and is_label_value(value), (
                    f"{kind} {name} label {key}={value!r}"
                )
        if kind == "Service":
            for key, value in obj["spec"]["selector"].items():
                assert is_qualified_name(key) and is_label_value(value)
        for annotation_map in _annotation_maps(obj):
            for key, value in annotation_map.items():
                assert is_qualified_name(key) and isinstance(value, str), f"annotation {key}={value!r}"
        if service.metadata.uid is not None:
            (reference,) = metadata["ownerReferences"]
            assert reference["name"] == service.name and reference["uid"] == service.metadata.uid
        if kind == "NetworkPolicy":
            for rule in obj["spec"]["ingress"]:
                for peer in rule.get("from", []):  # none: every source
                    for selector in peer.values():
                        for requirement in selector.get("matchExpressions", []):
                            assert is_qualified_name(requirement["key"]), requirement
                            assert all(is_label_value(v) for v in requirement.get("values", [])), requirement
        if kind == "Deployment":
            template = obj["spec"]["template"]
            selector = obj["spec"]["selector"]["matchLabels"]
            assert selector.items() <= template["metadata"]["labels"].items()
            pod = template["spec"]
            if "serviceAccountName" in pod:
                assert is_dns_subdomain(pod["serviceAccountName"])
            for term in (
                pod.get("affinity", {})
                .get("nodeAffinity", {})
                .get("requiredDuringSchedulingIgnoredDuringExecution", {})
                .get("nodeSelectorTerms", [])
            ):
                for requirement in term["matchExpressions"]:
                    assert is_qualified_name(requirement["key"]), requirement
                    assert all(is_label_value(v) for v in requirement.get("values", [])), requirement
            for toleration in pod.get("tolerations", []):
                assert is_qualified_name(toleration["key"]), toleration
                assert is_label_value(toleration.get("value", "")), toleration
            for container in pod["containers"]:
                for section in container["resources"].values():
                    assert all(is_qualified_name(k) and isinstance(v, str) for k, v in section.items())
    # The objects go to the API server as JSON (`tritonscale render` prints them as YAML: see
    # test_yaml_output_round_trips_hostile_text).
    assert json.loads(json.dumps(objects)) == objects


@fuzz(300)
@given(texts=st.lists(hostile_text, min_size=1, max_size=4))
def test_yaml_output_round_trips_hostile_text(texts: list[str]) -> None:
    """`tritonscale render` output means what the objects say, whatever text the fields hold
    (the objects' structure is fixed; only the text in them comes from users)."""
    objects = [{"metadata": {"annotations": {text: text}}, "args": [text, text]} for text in texts]
    assert list(yaml.load_all(dump_all(objects), Loader=yaml.CSafeLoader)) == objects


# --------------------------------------------------------------------------------------------
# haproxy.cfg
# --------------------------------------------------------------------------------------------

_DNS_TOKEN = re.compile(r"[a-z0-9.-]+(:\d+)?")


def _strings(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for key, value in obj.items() for s in (*_strings(key), *_strings(value))]
    if isinstance(obj, list):
        return [s for item in obj for s in _strings(item)]
    return []


def assert_same_directives(config: str, benign: str) -> None:
    """`config` has the benign config's lines, sections and directives: the same number of
    lines, each with the same indentation and keyword (or comment), the same number of words,
    and words that differ are host names, not text."""
    assert all(c == "\n" or " " <= c <= "~" for c in config), (
        "haproxy.cfg holds a control or non-ASCII character"
    )
    lines, benign_lines = config.split("\n"), benign.split("\n")
    assert len(lines) == len(benign_lines)
    for line, reference in zip(lines, benign_lines, strict=True):
        indent = len(line) - len(line.lstrip(" "))
        assert indent == len(reference) - len(reference.lstrip(" ")), (line, reference)
        if reference.lstrip().startswith("#"):
            assert line.lstrip().startswith("#"), (line, reference)
            continue
        words, benign_words = line.split(), reference.split()
        assert len(words) == len(benign_words), (line, reference)
        assert words[:1] == benign_words[:1], (line, reference)
        for word, benign_word in zip(words, benign_words, strict=True):
            assert word == benign_word or _DNS_TOKEN.fullmatch(word), (word, line)


def _benign_twin(service: InferenceService) -> InferenceService:
    """The same spec under a plain name and namespace."""
    metadata = service.metadata.model_copy(update={"name": "benign", "namespace": "benign"})
    return service.model_copy(update={"metadata": metadata})


def assert_haproxy_cfg_is_benign(service: InferenceService, objects: list[dict[str, Any]], body: Any) -> None:
    """No field adds a line, section or directive to haproxy.cfg."""
    (configmap,) = [o for o in objects if o["kind"] == "ConfigMap"]
    config = configmap["data"]["haproxy.cfg"]
    twin = _benign_twin(service)
    benign = render_router_config(twin, StackNames(twin.name, twin.namespace), RouterOptions())
    assert_same_directives(config, benign)
    for text in _strings(body):
        if any(c in text for c in "\n\r") and text not in benign:
            assert text not in config, f"{text!r} is in haproxy.cfg"


# --------------------------------------------------------------------------------------------
# The Triton container
# --------------------------------------------------------------------------------------------


def assert_triton_values_stay_whole(service: InferenceService, objects: list[dict[str, Any]]) -> None:
    """Each of spec.triton.args is one argument of tritonserver, each env var one variable."""
    spec = service.spec
    user_args = list(spec.triton.args)
    deployments = [
        o
        for o in objects
        if o["kind"] == "Deployment" and o["spec"]["selector"]["matchLabels"][LABEL_COMPONENT] == "triton"
    ]
    assert len(deployments) == (2 if spec.capacity.spot.enabled else 1)
    for deployment in deployments:
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        if served_variants(service):
            # A launcher runs the model's tritonserver and the variants': each command line is
            # shell-quoted whole into the script (render.variants), the model's first.
            assert container["command"][:2] == ["/bin/bash", "-c"] and container["args"] == []
            args = triton_args(service)
            script = container["command"][2]
            assert f"\n{shlex.join(args)} & pids=$!\n" in f"\n{script}"
            assert all(
                f"--http-port={variant_ports(index)[0]}" in script
                for index in range(len(spec.model.variants))
            )
        else:
            assert "command" not in container  # the image's entrypoint: no shell to split the args
            args = container["args"]
        assert all(isinstance(arg, str) for arg in args)
        managed = args[: len(args) - len(user_args)]
        assert args[len(managed) :] == user_args, args
        assert len(managed) == 10 and managed[0] == "tritonserver", args
        assert managed[1] == f"--model-repository={spec.model.repository}"
        assert all(re.fullmatch(r"--[a-z-]+=[-a-z0-9_=:.,]+", arg) for arg in managed[2:]), managed
        assert container.get("env", []) == [env_var(var) for var in spec.triton.env]
        for var, rendered in zip(spec.triton.env, container.get("env", []), strict=True):
            if var.value_from is not None:  # the key, whole, for the kubelet to read
                [(kind, selector)] = rendered["valueFrom"].items()
                ref = var.value_from.secret_key_ref or var.value_from.config_map_key_ref
                assert ref is not None and (selector["name"], selector["key"]) == (ref.name, ref.key)
                assert kind == ("secretKeyRef" if var.value_from.secret_key_ref else "configMapKeyRef")
        assert container["image"] == spec.triton.image


@fuzz(400)
@given(
    body=accepted_bodies(),
    uid=st.one_of(st.none(), hostile_text),
    name=hostile_text,
    namespace=hostile_text,
)
def test_accepted_specs_render_safely(
    body: dict[str, Any], uid: str | None, name: str, namespace: str
) -> None:
    """For every spec the model accepts, render_stack does not crash and its objects are what
    the API server accepts, its haproxy.cfg has the benign config's directives, and the Triton
    args and env hold the spec's values one by one. (Three properties over one set of
    examples: drawing a whole InferenceService costs more than checking it.) Each body is also
    tried with a hostile name and with a hostile namespace, which the model should refuse."""
    if uid is not None:
        body["metadata"]["uid"] = uid
    for variant in with_hostile_names(body, name, namespace):
        try:
            service = parse_inference_service(variant)
        except InvalidInferenceService:
            assert variant is not body, "accepted_bodies drew a body the model refuses"
            continue
        objects = stack(service)
        assert_valid_for_kubernetes(service, objects)
        assert_haproxy_cfg_is_benign(service, objects, variant)
        assert_triton_values_stay_whole(service, objects)


# --------------------------------------------------------------------------------------------
# PromQL
# --------------------------------------------------------------------------------------------

promql_text = hostile_text
OVERRIDE = 'custom{namespace="$namespace",svc="${name}",pod=~"$pods",model=~"${models}"}'


def _regex_matches(pattern: str, text: str) -> bool:
    """A Prometheus =~ matcher: anchored at both ends."""
    return re.fullmatch(f"(?:{pattern})", text) is not None


@fuzz(600)
@given(
    namespace=promql_text,
    name=promql_text,
    models=st.lists(promql_text.filter(bool), min_size=1, max_size=3, unique=True),
    prefixes=st.lists(promql_text.filter(bool), min_size=1, max_size=2, unique=True),
    percentile=st.floats(50.0, 99.9),
)
def test_promql_label_values_cannot_leave_their_quotes(
    namespace: str, name: str, models: list[str], prefixes: list[str], percentile: float
) -> None:
    target = ScalingTarget(
        namespace=namespace,
        name=name,
        models=tuple(models),
        percentile=percentile,
        pod_prefixes=tuple(prefixes),
        ready_replicas=1,
        pod_selector={},
        latency_query=OVERRIDE,
    )
    regexes: set[tuple[str, str]] = set()
    for key, query in prometheus_queries(target).items():
        selectors = promql_selectors(query)
        assert selectors, (key, query)
        for matchers in selectors:
            values = {(label, op): value for label, op, value in matchers}
            assert len(values) == len(matchers), query
            expected = {("namespace", "="), ("pod", "=~"), ("model", "=~"), ("variant", "=")}
            if key == "latency":
                expected = {("namespace", "="), ("svc", "="), ("pod", "=~"), ("model", "=~")}
            elif matchers[-1][0] == "quantile":
                expected.add(("quantile", "="))
            assert set(values) == expected, (key, query)
            assert values["namespace", "="] == namespace
            if ("svc", "=") in values:
                assert values["svc", "="] == name
            if ("variant", "=") in values:
                assert values["variant", "="] == ""  # the model's series, not its variants'
            regexes.add((values["model", "=~"], values["pod", "=~"]))
    for models_regex, pods_regex in regexes:
        # Each alternative a literal, every RE2 metacharacter escaped...
        assert regex_literals(models_regex) == models
        assert regex_literals(pods_regex, "-.*") == prefixes
        # ... so it matches the names themselves and nothing else (Prometheus anchors =~).
        for model in models:
            assert _regex_matches(models_regex, model)
            assert not _regex_matches(models_regex, model + "\x01") or model + "\x01" in models
        for prefix in prefixes:
            assert _regex_matches(pods_regex, f"{prefix}-7d9f-x2")


def test_promql_string_of_a_replacement_character_parses() -> None:
    # Prometheus's lexer refuses a raw U+FFFD inside quotes ("invalid UTF-8 rune").
    value = promql_string("a\ufffdb")
    assert promql_selectors(f"up{{namespace={value}}}") == [[("namespace", "=", "a\ufffdb")]]


# --------------------------------------------------------------------------------------------
# What the model accepts of fields with a format Kubernetes or tritonserver checks
# --------------------------------------------------------------------------------------------

CUSTOM = {"nodePoolPreset": "custom", "custom": {"spot": {"nodeSelector": {"pool": "spot"}}}}
# (field, body overrides with the value as VALUE, what Kubernetes or tritonserver accept, values)
VALUE = "\x00value"
FIELD_FORMATS = [
    ("metadata.namespace", {"namespace": VALUE}, is_dns_label, near_dns_names),
    (
        "spec.triton.serviceAccountName",
        {"spec__triton": {"serviceAccountName": VALUE}},
        is_dns_subdomain,
        near_dns_names,
    ),
    (
        "spec.accelerator.resource",
        {"spec__accelerator": {"resource": VALUE}},
        is_qualified_name,
        near_qualified_names(320),
    ),
    (
        "spec.triton.resources.limits.<key>",
        {"spec__triton": {"resources": {"limits": {VALUE: 1}}}},
        is_qualified_name,
        near_qualified_names(320),
    ),
    (
        "spec.accelerator.product",
        {"spec__accelerator": {"resource": "nvidia.com/gpu", "product": VALUE}},
        is_label_value,
        near_label_values,
    ),
    # Label keys: prefixes up to 253 characters here (test_label_key_prefix_length_gap).
    (
        "spec.capacity.custom.onDemand.nodeSelector.<key>",
        {"spec__capacity": {**CUSTOM, "custom": {"onDemand": {"nodeSelector": {VALUE: "v"}}}}},
        is_qualified_name,
        near_qualified_names(253),
    ),
    (
        "spec.capacity.custom.spot.nodeSelector.<value>",
        {"spec__capacity": {**CUSTOM, "custom": {"spot": {"nodeSelector": {"pool": VALUE}}}}},
        is_label_value,
        near_label_values,
    ),
    (
        "spec.capacity.custom.spot.tolerations[0].key",
        {
            "spec__capacity": {
                **CUSTOM,
                "custom": {
                    **CUSTOM["custom"],
                    "spot": {**CUSTOM["custom"]["spot"], "tolerations": [{"key": VALUE}]},
                },
            }
        },
        is_qualified_name,
        near_qualified_names(253),
    ),
    (
        "spec.capacity.custom.acceleratorProductLabel",
        {"spec__capacity": {**CUSTOM, "custom": {**CUSTOM["custom"], "acceleratorProductLabel": VALUE}}},
        is_qualified_name,
        near_qualified_names(253),
    ),
    (
        "spec.triton.args[0]",
        {"spec__triton": {"args": [VALUE]}},
        lambda arg: not sets_a_managed_flag(arg) and "\x00" not in arg,
        near_args,
    ),
]


def _with_value(obj: Any, value: str) -> Any:
    if obj == VALUE:
        return value
    if isinstance(obj, dict):
        return {_with_value(k, value): _with_value(v, value) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_with_value(item, value) for item in obj]
    return obj


@pytest.mark.parametrize(
    ("field", "overrides", "valid", "values"), FIELD_FORMATS, ids=[case[0] for case in FIELD_FORMATS]
)
def test_the_model_accepts_only_what_kubernetes_and_tritonserver_accept(
    field: str, overrides: dict[str, Any], valid: Any, values: st.SearchStrategy[str]
) -> None:
    """A value the model accepts is one the API server accepts in the rendered objects (or, for
    args, one tritonserver does not take for a managed flag): no apply error after admission."""

    @fuzz(150)
    @given(value=values)
    def check(value: str) -> None:
        body = make_inference_service(name="f", **_with_value(overrides, value))
        try:
            parse_inference_service(body)
        except InvalidInferenceService:
            return
        assert valid(value), f"{field}: the model accepts {value!r}"

    check()


# --------------------------------------------------------------------------------------------
# Gaps between what the model accepts and what Kubernetes accepts of the rendered objects
# --------------------------------------------------------------------------------------------


def test_a_label_key_prefix_over_253_characters_is_refused_naming_the_field() -> None:
    """The key pattern bounds the whole key (317); its prefix has a bound of its own (253), as the
    API server then holds the Deployments' node affinity to it."""
    for prefix_length, accepted in ((253, True), (254, False)):
        key = "a" * prefix_length + "/b"
        body = make_inference_service(
            spec__capacity={"nodePoolPreset": "custom", "custom": {"onDemand": {"nodeSelector": {key: "v"}}}}
        )
        if accepted:
            service = parse_inference_service(body)
            assert_valid_for_kubernetes(service, stack(service))
        else:
            with pytest.raises(InvalidInferenceService, match="nodeSelector") as refused:
                parse_inference_service(body)
            assert "253" in str(refused.value)
