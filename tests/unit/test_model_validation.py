"""The model rejects bad resources with a message naming the field, and accepts good ones."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.builders import INVALID_CASES, load_example, make_inference_service, make_invalid
from tritonscale.api.resource import PAUSE_ANNOTATION, InvalidInferenceService, parse_inference_service
from tritonscale.api.spec import InferenceServiceSpec, quantity_value

EXAMPLES = sorted(Path(__file__).parents[2].joinpath("examples").glob("*.yaml"))


@pytest.mark.parametrize(("case", "overrides", "field"), INVALID_CASES, ids=[c[0] for c in INVALID_CASES])
def test_invalid_resource_is_rejected_naming_the_field(
    case: str, overrides: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInferenceService) as raised:
        parse_inference_service(make_invalid(overrides))
    paths = [problem.path for problem in raised.value.problems]
    assert field in paths, f"{case}: expected a problem at {field}, got {raised.value}"


def test_there_are_at_least_twenty_invalid_cases() -> None:
    assert len(INVALID_CASES) >= 20


def test_every_problem_is_reported_not_just_the_first() -> None:
    obj = make_invalid(
        {
            "spec.replicas": -1,
            "spec.loadBalancing": {"policy": "Nope"},
            "spec.autoscaling": {"minReplicas": 3, "maxReplicas": 1},
        }
    )
    with pytest.raises(InvalidInferenceService) as raised:
        parse_inference_service(obj)
    assert {p.path for p in raised.value.problems} >= {
        "spec.replicas",
        "spec.loadBalancing.policy",
        "spec.autoscaling.maxReplicas",
    }


def test_wrong_kind_is_named() -> None:
    obj = make_inference_service()
    obj["kind"] = "Deployment"
    with pytest.raises(InvalidInferenceService) as raised:
        parse_inference_service(obj)
    assert raised.value.problems[0].path == "apiVersion"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_valid(path: Path) -> None:
    service = parse_inference_service(load_example(path))
    assert service.spec.model.names


def test_defaults_fill_a_minimal_spec() -> None:
    service = parse_inference_service(make_inference_service())
    spec = service.spec
    assert spec.load_balancing.policy.value == "LeastConnections"
    assert spec.load_balancing.router.replicas == 2
    assert spec.capacity.node_pool_preset.value == "karpenter"
    assert spec.capacity.spot.enabled is False
    assert spec.autoscaling is None
    assert not spec.autoscaling_enabled


def test_wire_form_round_trips() -> None:
    obj = make_inference_service(
        spec__autoscaling={"maxReplicas": 7, "metrics": {"prometheusURL": "http://p:9090"}},
        spec__accelerator={"resource": "nvidia.com/gpu", "product": "NVIDIA-A100-SXM4-40GB"},
    )
    spec = parse_inference_service(obj).spec
    again = InferenceServiceSpec.model_validate(spec.to_wire())
    assert again == spec
    assert spec.to_wire()["autoscaling"]["metrics"]["prometheusURL"] == "http://p:9090"


def test_model_is_frozen() -> None:
    spec = parse_inference_service(make_inference_service()).spec
    with pytest.raises(ValueError, match="frozen"):
        spec.replicas = 3  # type: ignore[misc]


@given(
    minimum=st.integers(min_value=1, max_value=50),
    maximum=st.integers(min_value=1, max_value=50),
    base=st.integers(min_value=0, max_value=60),
)
def test_replica_bounds_rules_match_their_meaning(minimum: int, maximum: int, base: int) -> None:
    obj = make_inference_service(
        spec__autoscaling={"minReplicas": minimum, "maxReplicas": maximum},
        spec__capacity={"onDemandBase": base},
    )
    valid = minimum <= maximum and base <= maximum
    try:
        parse_inference_service(obj)
    except InvalidInferenceService:
        assert not valid
    else:
        assert valid


@pytest.mark.parametrize(
    ("arg", "accepted"),
    [
        ("--metrics-config=summary_latencies=false", False),
        ("--metrics-c=summary_quantiles=0.5:0.1", False),  # getopt takes the prefix for the flag
        ("summary_latencies=false", False),  # the value after a separate --metrics-config
        ("--strict-readiness=false", False),
        ("--strict-r=false", False),
        ("--metrics-config=counter_latencies=false", True),
        ("--log-file=/logs/summary_latencies.log", True),
        ("--strict-model-config=false", True),
    ],
)
def test_args_may_not_unset_readiness_or_the_latency_summary(arg: str, accepted: bool) -> None:
    """The autoscaler reads the latency summary's quantiles, and the router trusts readiness."""
    body = make_inference_service(spec__triton={"args": [arg]})
    if accepted:
        assert parse_inference_service(body).spec.triton.args == [arg]
    else:
        with pytest.raises(InvalidInferenceService, match=r"spec\.triton\.args"):
            parse_inference_service(body)


def test_a_status_field_this_version_does_not_know_is_ignored_not_an_invalid_spec() -> None:
    # What a newer operator may have written before a rollback (Helm never downgrades the CRD).
    obj = make_inference_service()
    obj["status"] = {"someFutureField": {"x": 1}, "conditions": []}
    assert parse_inference_service(obj).status.conditions == []


def test_the_pause_annotation_of_earlier_releases_still_pauses() -> None:
    obj = make_inference_service()
    obj["metadata"]["annotations"] = {"tritonscale.io/autoscaling-paused": "true"}
    assert parse_inference_service(obj).autoscaling_paused
    obj["metadata"]["annotations"] = {PAUSE_ANNOTATION: "true"}
    assert parse_inference_service(obj).autoscaling_paused
    obj["metadata"]["annotations"] = {}
    assert not parse_inference_service(obj).autoscaling_paused


@pytest.mark.parametrize(
    ("quantity", "value"),
    [
        ("100m", "0.1"),
        ("2Gi", "2147483648"),
        ("1e3", "1000"),
        ("1E", "1000000000000000000"),
        ("1E-3", "0.001"),
        (".5", "0.5"),
        ("+1", "1"),
        (7, "7"),
        ("512Mi", "536870912"),
    ],
)
def test_quantities_are_valued_as_kubernetes_reads_them(quantity: int | str, value: str) -> None:
    assert quantity_value(quantity) == Decimal(value)


def test_requests_are_compared_with_limits_by_value_not_by_text() -> None:
    obj = make_inference_service(
        spec__triton={"resources": {"requests": {"cpu": "900m"}, "limits": {"cpu": "1"}}}
    )
    parse_inference_service(obj)  # 0.9 <= 1, though "900m" > "1" as text
    obj["spec"]["triton"]["resources"] = {"requests": {"memory": "1Gi"}, "limits": {"memory": "1000Mi"}}
    with pytest.raises(
        InvalidInferenceService, match=r"spec\.triton\.resources\.requests: requests must not"
    ):
        parse_inference_service(obj)


def test_quantities_written_differently_but_equal_in_value_are_equal() -> None:
    obj = make_inference_service(
        spec__accelerator={"resource": "nvidia.com/gpu", "count": 1},
        spec__triton={
            "resources": {
                # The accelerator's resource at its count (a spec that rendered before the rule).
                "limits": {"nvidia.com/gpu": "1", "example.com/fpga": "1k", "memory": "1Gi"},
                "requests": {"example.com/fpga": 1000, "memory": 1073741824},
            }
        },
    )
    parse_inference_service(obj)
    # Exponents no decimal holds, which the API server's quantity() admits: not refused here.
    obj["spec"]["triton"]["resources"] = {
        "requests": {"memory": "1e1000000"},
        "limits": {"memory": "1e1000000"},
    }
    parse_inference_service(obj)
    obj["spec"]["triton"]["resources"] = {"limits": {"example.com/fpga": "1500m"}}
    with pytest.raises(InvalidInferenceService, match="whole units"):
        parse_inference_service(obj)
