"""The sandbox node agent's pure parts: what a pod's namespaces would do, probes' counting,
and the cluster DNS answers (the agent itself runs for real in tests/e2e/test_demo.py)."""

from __future__ import annotations

import http.server
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.builders import make_inference_service
from tritonscale.api.resource import parse_inference_service
from tritonscale.render.names import StackNames
from tritonscale.render.router import RouterOptions, render_router_config
from tritonscale_sandbox.node_agent import (
    POD_BLOCK_PREFIX,
    POD_NETWORK,
    PodContext,
    PodNetworkError,
    _Probe,
    check_pod_ports,
    image_repository,
    localize_haproxy_config,
    probe_once,
    reserve_pod_block,
    service_records,
)


def _context(tmp_path: Path, mounts: dict[str, Path] | None = None) -> PodContext:
    return PodContext(
        pod={"metadata": {"name": "p", "namespace": "ns"}, "spec": {}},
        container={"name": "c", "ports": [{"name": "http", "containerPort": 8000}]},
        ip="127.42.0.9",
        pod_dir=tmp_path,
        mounts=mounts or {},
        nameserver="127.41.0.253:5353",
        cluster=None,  # type: ignore[arg-type]  # not used by these helpers
    )


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("haproxy:2.6", "haproxy"),
        ("nvcr.io/nvidia/tritonserver:24.10-py3", "nvcr.io/nvidia/tritonserver"),
        ("ghcr.io/tritonscale/tritonscale:0.1.0", "ghcr.io/tritonscale/tritonscale"),
        ("registry:5000/team/haproxy", "registry:5000/team/haproxy"),
        ("haproxy@sha256:abc", "haproxy"),
    ],
)
def test_image_repository_drops_tag_and_digest_but_not_a_registry_port(image: str, repository: str) -> None:
    assert image_repository(image) == repository


def test_the_rendered_router_config_binds_the_pod_address_asks_the_cluster_dns_and_uses_mounted_paths(
    tmp_path: Path,
) -> None:
    service = parse_inference_service(make_inference_service())
    rendered = render_router_config(service, StackNames(service.name, service.namespace), RouterOptions())
    config_dir, runtime_dir = tmp_path / "config", tmp_path / "runtime"
    ctx = _context(tmp_path, {"/usr/local/etc/haproxy": config_dir, "/var/run/haproxy": runtime_dir})

    local = localize_haproxy_config(rendered, ctx)

    assert "parse-resolv-conf" in rendered and "parse-resolv-conf" not in local
    assert "nameserver cluster-dns 127.41.0.253:5353" in local
    binds = [line.split()[1] for line in local.splitlines() if line.strip().startswith("bind ")]
    assert binds and all(b.startswith("127.42.0.9:") for b in binds), binds
    assert f"stats socket {runtime_dir}/admin.sock" in local
    # Paths that are not under a mount (URIs, health paths) are left alone.
    assert "monitor-uri /healthz" in local
    assert "/v2/health/ready" in local


def test_service_records_follow_selector_readiness_and_termination() -> None:
    def pod(
        name: str, ip: str, labels: dict[str, str], ready: bool, terminating: bool = False
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": name, "namespace": "ns", "labels": labels}
        if terminating:
            metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        condition = {"type": "Ready", "status": "True" if ready else "False"}
        return {"metadata": metadata, "status": {"podIP": ip, "conditions": [condition]}}

    triton = {"app": "triton"}
    pods = [
        pod("a", "127.42.0.2", triton, ready=True),
        pod("b", "127.42.0.3", triton, ready=False),
        pod("c", "127.42.0.4", triton, ready=True, terminating=True),
        pod("d", "127.42.0.5", {"app": "router"}, ready=True),
        {
            **pod("e", "127.42.0.6", triton, ready=True),
            "metadata": {"name": "e", "namespace": "other", "labels": triton},
        },
    ]
    services = [
        {
            "metadata": {"name": "triton", "namespace": "ns"},
            "spec": {"clusterIP": "None", "selector": triton},
        },
        {
            "metadata": {"name": "all", "namespace": "ns"},
            "spec": {"selector": triton, "publishNotReadyAddresses": True},
        },
        {"metadata": {"name": "external", "namespace": "ns"}, "spec": {}},
    ]

    records = service_records(services, pods, "cluster.local")

    assert records["triton.ns.svc.cluster.local"] == ["127.42.0.2"]
    assert sorted(records["all.ns.svc.cluster.local"]) == ["127.42.0.2", "127.42.0.3"]
    assert records["external.ns.svc.cluster.local"] == []  # no selector selects nothing


@pytest.fixture
def health_server() -> Iterator[tuple[str, dict[str, int]]]:
    """A local HTTP server whose /healthz answers the status code in `state["code"]`."""
    state = {"code": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(state["code"] if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()


def test_http_and_tcp_probes_hit_the_pod_address_by_port_name(
    health_server: tuple[str, dict[str, int]],
) -> None:
    address, state = health_server
    host, port = address.split(":")
    container = {"name": "c", "ports": [{"name": "health", "containerPort": int(port)}]}
    http_probe = {"httpGet": {"path": "/healthz", "port": "health"}}
    assert probe_once(http_probe, container, host)
    state["code"] = 503
    assert not probe_once(http_probe, container, host)
    assert probe_once({"tcpSocket": {"port": int(port)}}, container, host)
    assert not probe_once({"httpGet": {"path": "/healthz", "port": 1}}, container, host)
    with pytest.raises(Exception, match="only httpGet and tcpSocket"):
        probe_once({"exec": {"command": ["true"]}}, container, host)


def test_a_probe_passes_and_fails_by_its_thresholds() -> None:
    probe = _Probe({"periodSeconds": 2, "failureThreshold": 2, "successThreshold": 1})
    probe.record(True, now=0.0)
    assert probe.passed and probe.next_at == 2.0
    probe.record(False, now=2.0)
    assert probe.passed and not probe.failed  # one failure is below the threshold
    probe.record(False, now=4.0)
    assert not probe.passed and probe.failed
    probe.record(True, now=6.0)
    assert probe.passed and not probe.failed


def test_env_has_literal_values_and_the_downward_apis_pod_fields(tmp_path: Path) -> None:
    context = _context(tmp_path)
    context = PodContext(
        **{
            **context.__dict__,
            "container": {
                "name": "c",
                "env": [
                    {"name": "LITERAL", "value": "x"},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                ],
            },
        }
    )
    assert context.env() == {
        "LITERAL": "x", "POD_NAME": "p", "POD_NAMESPACE": "ns", "POD_IP": "127.42.0.9", "SECRET": "",
    }  # fmt: skip


def test_each_agent_holds_its_own_pod_address_block(tmp_path: Path) -> None:
    held = [reserve_pod_block(tmp_path) for _ in range(2 ** (POD_BLOCK_PREFIX - POD_NETWORK.prefixlen))]
    assert len({block for block, _ in held}) == len(held)
    assert all(block.subnet_of(POD_NETWORK) for block, _ in held)
    with pytest.raises(PodNetworkError, match="held by another sandbox"):
        reserve_pod_block(tmp_path)
    freed, descriptor = held.pop()
    os.close(descriptor)
    block, descriptor = reserve_pod_block(tmp_path)
    assert block == freed
    for _, fd in [*held, (block, descriptor)]:
        os.close(fd)


def test_a_pod_port_taken_on_every_address_is_refused_by_name() -> None:
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))
        port = listener.getsockname()[1]
        listener.listen()
        with pytest.raises(PodNetworkError, match=f"port {port} is taken"):
            check_pod_ports("127.42.9.2", (port,))
    check_pod_ports("127.42.9.2", (port,))
