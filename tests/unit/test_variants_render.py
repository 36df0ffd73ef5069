"""What a service with variants renders: the launcher in the Triton container, the routers'
share selection and control port, and NetworkPolicies that let only the operator set shares."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

from tests.builders import make_inference_service
from tritonscale.api.resource import parse_inference_service
from tritonscale.ports import ROUTER_CONTROL_PORT, variant_ports
from tritonscale.render.names import StackNames
from tritonscale.render.network import NetworkPolicyOptions, guarded, render_network_policies
from tritonscale.render.router import (
    RouterOptions,
    render_router_config,
    render_router_deployment,
    render_variants_map,
    variant_cuts,
)
from tritonscale.render.triton import render_triton_deployment
from tritonscale.render.variants import variant_annotation

NAMES = StackNames("svc", "default")


def service(budget: bool = True, **model: Any):  # type: ignore[no-untyped-def]
    spec_model = {
        "repository": "/models",
        "names": ["resnet"],
        "variants": [
            {"name": "resnet-int8", "accuracy": 0.99, "speedup": 2},
            {"name": "resnet-small", "repository": "s3://other/repo", "accuracy": 0.95, "speedup": 4},
        ],
        **model,
    }
    overrides: dict[str, Any] = {"spec__model": spec_model}
    if budget:
        overrides["spec__autoscaling"] = {"accuracy": {"floor": 0.995}}
    return parse_inference_service(make_inference_service(**overrides))


def container(svc) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    deployment = render_triton_deployment(svc, NAMES, "on-demand", 2)
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def test_without_a_budget_variants_are_not_served_and_nothing_changes() -> None:
    declared = container(service(budget=False))
    plain = container(
        parse_inference_service(
            make_inference_service(spec__model={"repository": "/models", "names": ["resnet"]})
        )
    )
    assert declared == plain
    assert "command" not in declared
    assert render_variants_map(service(budget=False)) is None


def test_the_launcher_runs_one_server_per_variant_on_its_ports_under_the_models_name() -> None:
    triton = container(service())
    assert triton["command"][:2] == ["/bin/bash", "-c"] and triton["args"] == []
    script = triton["command"][2]
    lines = script.splitlines()
    servers = [shlex.split(line.split(" & ")[0]) for line in lines if line.startswith("tritonserver")]
    assert len(servers) == 3
    primary, int8, small = servers
    assert "--model-repository=/models" in primary and "--http-port=8000" in primary
    http, grpc, metrics = variant_ports(0)
    assert (
        f"--http-port={http}" in int8
        and f"--grpc-port={grpc}" in int8
        and f"--metrics-port={metrics}" in int8
    )
    # int8 from the model's repository: a view named as the model; small from its own repository.
    assert "--model-repository=/tmp/tritonscale-variants/0" in int8
    assert "--model-repository=s3://other/repo" in small
    assert "mkdir -p /tmp/tritonscale-variants/0/resnet" in script
    assert "/models/resnet-int8/config.pbtxt" in script
    # Every server shares the user's flags; each variant has its own shared-memory prefix.
    assert primary[-4:] == int8[-4:] == small[-4:]
    assert any("shm-region-prefix-name=tritonscale_variant1_" in arg for arg in small)
    ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    assert ports["v1-http"] == variant_ports(1)[0]
    assert "wait -n" in lines and any(line.startswith("trap ") for line in lines)
    # The pods name the variant behind each v<index>-metrics port, for the chart's PodMonitor.
    annotations = render_triton_deployment(service(), NAMES, "on-demand", 2)["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert annotations[variant_annotation(0)] == "resnet-int8"
    assert annotations[variant_annotation(1)] == "resnet-small"
    assert ports["v1-metrics"] == variant_ports(1)[2]
    unserved = render_triton_deployment(service(budget=False), NAMES, "on-demand", 2)
    assert variant_annotation(0) not in unserved["spec"]["template"]["metadata"]["annotations"]


def test_the_routers_draw_each_request_and_only_the_operator_may_set_the_shares() -> None:
    svc = service()
    config = render_router_config(svc, NAMES, RouterOptions())
    assert "backend triton_http_v0" in config and "backend triton_grpc_v1" in config
    assert config.count("rand(10000)") == 2  # the HTTP and the gRPC frontends
    assert f"bind :{ROUTER_CONTROL_PORT}" in config
    assert render_variants_map(svc) == "v0 0\nv1 0\n"
    assert variant_cuts((0.25, 0.4)) == {"v0": 2500, "v1": 6500}
    assert variant_cuts((0.7, 0.4)) == {"v0": 7000, "v1": 10000}
    router = render_router_deployment(svc, NAMES, config)
    ports = {p["name"] for p in router["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert "control" in ports
    options = NetworkPolicyOptions(enabled=True, operator_namespace="ops", operator_labels=(("app", "op"),))
    triton_policy, router_policy = render_network_policies(svc, NAMES, options)
    from_routers = triton_policy["spec"]["ingress"][0]["ports"]
    assert {p["port"] for p in from_routers} == {8000, 8001, *variant_ports(0)[:2], *variant_ports(1)[:2]}
    # Metrics scrapes reach every tritonserver of the pod: the model's and each variant's.
    scrapes = triton_policy["spec"]["ingress"][1]["ports"]
    assert {p["port"] for p in scrapes} == {8002, variant_ports(0)[2], variant_ports(1)[2]}
    control = [
        rule
        for rule in router_policy["spec"]["ingress"]
        if ROUTER_CONTROL_PORT in {p["port"] for p in rule["ports"]}
    ]
    (only_operator,) = control
    assert only_operator["from"][0]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "ops"}
    }
    plain = render_router_config(service(budget=False), NAMES, RouterOptions())
    assert "rand(" not in plain and "frontend control" not in plain


def test_a_service_serving_variants_is_guarded_only_at_its_routers_control_port() -> None:
    """Without the chart's networkPolicy or declared clients, a service serving variants still
    gets a router NetworkPolicy: the control port (the shares) takes only the operator; clients
    reach the routers from anywhere, and nothing else changes."""
    options = NetworkPolicyOptions(operator_namespace="ops", operator_labels=(("app", "op"),))
    assert guarded(service(), options) and not guarded(service(budget=False), options)
    (router_policy,) = render_network_policies(service(), NAMES, options)
    spec = router_policy["spec"]
    assert spec["policyTypes"] == ["Ingress"] and "egress" not in spec
    by_port = {p["port"]: rule for rule in spec["ingress"] for p in rule["ports"]}
    open_ports = {p["port"] for rule in spec["ingress"] if "from" not in rule for p in rule["ports"]}
    assert open_ports == {8000, 8001, 8404}
    assert by_port[ROUTER_CONTROL_PORT]["from"][0]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "ops"}
    }


def test_the_view_keeps_the_inputs_names_and_drops_only_the_models(tmp_path: Path) -> None:
    """The launcher's view of a variant in the model's repository, made by bash as the
    container would: Triton takes the name from the directory, and the inputs keep theirs."""
    variant = tmp_path / "resnet-int8"
    (variant / "1").mkdir(parents=True)
    (variant / "1" / "model.onnx").write_text("weights")
    (variant / "config.pbtxt").write_text(
        'name: "resnet-int8"\nplatform: "onnxruntime_onnx"\ninput [\n  {\n    name: "INPUT0"\n'
        '    data_type: TYPE_FP32\n  }\n]\noutput [\n  {\n    name: "OUTPUT0"\n  }\n]\n'
    )
    svc = service(repository=str(tmp_path))
    script = container(svc)["command"][2]
    view_lines = script.split("\ntritonserver")[0].replace(
        "/tmp/tritonscale-variants", str(tmp_path / "views")
    )
    subprocess.run(["bash", "-euc", view_lines], check=True)
    view = tmp_path / "views" / "0" / "resnet"
    config = (view / "config.pbtxt").read_text()
    assert 'name: "resnet-int8"' not in config
    assert 'name: "INPUT0"' in config and 'name: "OUTPUT0"' in config
    assert (view / "1").resolve() == (variant / "1").resolve()


def test_a_variant_with_no_server_up_leaves_its_share_on_the_model() -> None:
    """The cuts are cumulative: a draw within v0's cut that v0 cannot take goes to the model,
    not on to v1 (a less accurate variant the budget never allowed that share)."""
    config = render_router_config(service(), NAMES, RouterOptions())
    for backend in ("triton_http", "triton_grpc"):
        rules = [line.strip() for line in config.splitlines() if line.strip().startswith("use_backend")]
        mine = [rule for rule in rules if rule.split()[1].startswith(backend)]
        assert mine == [
            f"use_backend {backend}_v0 if {{ var(txn.variant_draw),sub(txn.cut_v0) lt 0 }} {{ nbsrv({backend}_v0) gt 0 }}",
            f"use_backend {backend} if {{ var(txn.variant_draw),sub(txn.cut_v0) lt 0 }}",
            f"use_backend {backend}_v1 if {{ var(txn.variant_draw),sub(txn.cut_v1) lt 0 }} {{ nbsrv({backend}_v1) gt 0 }}",
            f"use_backend {backend} if {{ var(txn.variant_draw),sub(txn.cut_v1) lt 0 }}",
        ], mine
