"""Every haproxy.cfg the renderer produces is accepted by the real HAProxy (`haproxy -c`)."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.builders import make_inference_service
from tritonscale.api.resource import parse_inference_service
from tritonscale.render.names import StackNames
from tritonscale.render.router import RouterOptions, render_router_config

POLICIES = ["RoundRobin", "LeastConnections", "PowerOfTwoChoices"]
OPTIONS = {
    "cluster": RouterOptions(),
    "local": RouterOptions(
        nameservers=("127.0.0.1:5353",),
        discovery_name="triton.test",
        bind_address="127.0.0.1",
        http_port=18000,
        grpc_port=18001,
        metrics_port=18404,
        runtime_socket="/tmp/tritonscale-test-admin.sock",
    ),
}


def haproxy_check(config: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(binary).exists():
        pytest.fail("haproxy is not installed: run scripts/install-system-deps.sh")
    path = tmp_path / "haproxy.cfg"
    path.write_text(config)
    return subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, text=True, check=False)


def config_for(policy: str, options: RouterOptions, name: str = "resnet", **overrides: object) -> str:
    service = parse_inference_service(
        make_inference_service(
            name=name, namespace="vision", spec__loadBalancing={"policy": policy}, **overrides
        )
    )
    return render_router_config(service, StackNames(service.name, service.namespace), options)


@pytest.mark.parametrize(("policy", "where"), list(itertools.product(POLICIES, OPTIONS)), ids=str)
def test_rendered_config_passes_haproxy_check(policy: str, where: str, tmp_path: Path) -> None:
    result = haproxy_check(config_for(policy, OPTIONS[where]), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("policy", "algorithm"),
    [("RoundRobin", "roundrobin"), ("LeastConnections", "leastconn"), ("PowerOfTwoChoices", "random(2)")],
)
def test_policy_selects_the_balance_algorithm(policy: str, algorithm: str) -> None:
    config = config_for(policy, RouterOptions())
    assert config.count(f"    balance {algorithm}\n") == 2  # HTTP and gRPC backends


def test_config_discovers_replicas_through_the_headless_service() -> None:
    config = config_for("LeastConnections", RouterOptions(), spec__autoscaling={"maxReplicas": 40})
    # Twice the most replicas, a power of two: a rollout's surge and spot stand-ins fit beside them.
    assert "server-template triton 128 resnet-triton.vision.svc.cluster.local:8000 check" in config
    # HAProxy 2.6 does not pass check-proto on to server-template clones: the gRPC backend's
    # health check names its HTTP/1 port and protocol in the check itself.
    assert "proto h2 check\n" in config and "http-check connect port 8000 proto h1" in config
    assert "parse-resolv-conf" in config
    assert "option httpchk GET /v2/health/ready" in config
    assert "retry-on conn-failure empty-response" in config and "option redispatch" in config
    assert "use-service prometheus-exporter" in config


def test_local_options_name_the_nameserver() -> None:
    config = config_for("RoundRobin", OPTIONS["local"])
    assert "nameserver ns1 127.0.0.1:5353" in config
    assert "parse-resolv-conf" not in config
    assert "bind 127.0.0.1:18000" in config


@pytest.mark.parametrize(
    "options",
    [
        RouterOptions(nameservers=("127.0.0.1:53\n    stats enable",)),
        RouterOptions(discovery_name="x.example\nbackend evil"),
        RouterOptions(bind_address="0.0.0.0:1 ssl"),
        RouterOptions(runtime_socket="/tmp/a sock"),
    ],
)
def test_options_cannot_inject_lines(options: RouterOptions) -> None:
    with pytest.raises(ValueError, match="refusing to render"):
        config_for("RoundRobin", options)


names = st.from_regex(r"\A[a-z0-9]([-a-z0-9.]{0,120}[a-z0-9])?\Z", fullmatch=True).filter(
    lambda n: ".." not in n and ".-" not in n and "-." not in n
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=names, policy=st.sampled_from(POLICIES), replicas=st.integers(min_value=0, max_value=300))
def test_any_valid_resource_renders_a_valid_config_of_fixed_shape(
    name: str, policy: str, replicas: int, tmp_path: Path
) -> None:
    config = config_for(policy, RouterOptions(), name=name, spec__replicas=replicas)
    reference = config_for(policy, RouterOptions(), name="x", spec__replicas=replicas)
    assert config.count("\n") == reference.count("\n")
    result = haproxy_check(config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("autoscaling", [None, {"minReplicas": 1, "maxReplicas": 12}])
def test_scaling_never_changes_the_config_so_never_restarts_routers(autoscaling: object) -> None:
    """The router Deployment rolls when haproxy.cfg changes: scaling from 1 to 16 replicas,
    by hand or by the autoscaler, must leave it byte for byte the same."""
    extra = {} if autoscaling is None else {"spec__autoscaling": autoscaling}
    configs = {config_for("RoundRobin", RouterOptions(), spec__replicas=n, **extra) for n in range(1, 17)}
    assert len(configs) == 1
    assert "server-template triton 32 " in configs.pop()


def test_streams_are_not_held_for_a_body_and_stops_wait_for_requests_in_flight() -> None:
    """A gRPC stream (ModelStreamInfer) has no end to wait for: held, it failed with a 408 after
    10 s; unary calls and HTTP requests are held whole so a crashed replica's can be retried.
    A stop waits for requests in flight up to the longest one may take."""
    config = config_for("RoundRobin", RouterOptions(), spec__loadBalancing__router={"timeoutSeconds": 900})
    defaults = config.split("\ndefaults\n")[1].split("\nfrontend ")[0]
    assert "http-buffer-request" not in defaults
    http = config.split("\nfrontend http\n")[1].split("\nfrontend ")[0]
    grpc = config.split("\nfrontend grpc\n")[1].split("\nfrontend ")[0]
    assert "option http-buffer-request" in http
    assert (
        "http-request wait-for-body time 10s if !{ path /inference.GRPCInferenceService/ModelStreamInfer }"
        in grpc
    )
    assert "hard-stop-after 900s" in config
    assert "maxconn 4096" in http and "maxconn 4096" in grpc and "maxconn 8256" in config
    assert "accepted_payload_size 65535" in config
