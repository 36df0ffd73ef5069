"""Variant serving, the replica side, on real processes: the rendered container's launcher starts
the model's tritonserver and one per variant (each serving its variant under the model's name
from a view of the repository), and takes them all down together."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.builders import make_inference_service
from tritonscale.api.resource import parse_inference_service
from tritonscale.ports import variant_ports
from tritonscale.render.names import StackNames
from tritonscale.render.triton import render_triton_deployment
from tritonscale_sandbox.triton import SimulatedModel, TritonInstall, free_loopback_block, model_repository

pytestmark = pytest.mark.integration


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def _infer_ms(port: int, model: str, count: int = 20) -> float:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    data = np.ones((1, 1), dtype=np.float32)
    tensor = httpclient.InferInput("INPUT0", [1, 1], "FP32")
    tensor.set_data_from_numpy(data)
    started = time.perf_counter()
    for _ in range(count):
        client.infer(model, [tensor])
    return 1000 * (time.perf_counter() - started) / count


def test_the_launcher_serves_each_variant_under_the_models_name_and_stops_them_together(
    triton_install: TritonInstall, tmp_path: Path
) -> None:
    repository = model_repository(
        tmp_path / "repo",
        [
            SimulatedModel(name="sim", base_ms=40, per_item_ms=0, max_batch_size=8),
            SimulatedModel(name="sim-fast", base_ms=5, per_item_ms=0, max_batch_size=8),
        ],
    )
    service = parse_inference_service(
        make_inference_service(
            spec__model={
                "repository": str(repository),
                "names": ["sim"],
                "variants": [{"name": "sim-fast", "accuracy": 0.99, "speedup": 2}],
            },
            spec__autoscaling={"accuracy": {"floor": 0.995}},
            spec__triton={
                "args": [
                    f"--backend-directory={triton_install.backend_dir}",
                    "--allow-gpu-metrics=false",
                    "--exit-timeout-secs=2",
                ]
            },
        )
    )
    deployment = render_triton_deployment(service, StackNames("svc", "default"), "on-demand", 1)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[:2] == ["/bin/bash", "-c"] and container["args"] == []
    env = triton_install.environment()
    env["PATH"] = f"{triton_install.server_binary.parent}:{env['PATH']}"
    env["TMPDIR"] = str(tmp_path)
    script = command[2].replace("/tmp/tritonscale-variants", str(tmp_path / "views"))
    process = subprocess.Popen(
        ["/bin/bash", "-c", script], env=env, start_new_session=True, stdout=subprocess.DEVNULL
    )
    variant_http = variant_ports(0)[0]
    try:
        deadline = time.monotonic() + 60
        while not (_ready(8000) and _ready(variant_http)):
            assert process.poll() is None, "the launcher exited"
            assert time.monotonic() < deadline, "the servers did not become ready"
            time.sleep(0.2)
        # Both serve the model's name; the variant process answers at the variant's speed.
        primary_ms, variant_ms = _infer_ms(8000, "sim"), _infer_ms(variant_http, "sim")
        # 40 and 5 ms models: the gap, not an absolute bound a loaded machine could break.
        assert primary_ms > 35 and primary_ms - variant_ms > 20, (primary_ms, variant_ms)
        with urllib.request.urlopen(f"http://127.0.0.1:{variant_http}/v2/models/sim/config") as reply:
            assert json.load(reply)["name"] == "sim"
        # One process dying takes the container down (the kubelet restarts it whole).
        os.killpg(process.pid, 0)
        variant_pid = int(
            subprocess.run(
                # This launcher's own session: never another test's server on the same port.
                ["pgrep", "-s", str(process.pid), "-f", "--", f"^tritonserver .*--http-port={variant_http}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()[0]
        )
        os.kill(variant_pid, signal.SIGKILL)
        assert process.wait(timeout=30) != 0
        assert not _ready(8000)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_sigterm_stops_every_server(triton_install: TritonInstall, tmp_path: Path) -> None:
    repository = model_repository(
        tmp_path / "repo",
        [SimulatedModel(name="sim", base_ms=1), SimulatedModel(name="sim-fast", base_ms=1)],
    )
    service = parse_inference_service(
        make_inference_service(
            spec__model={
                "repository": str(repository),
                "names": ["sim"],
                "variants": [{"name": "sim-fast", "accuracy": 0.99, "speedup": 2}],
            },
            spec__autoscaling={"accuracy": {"floor": 0.995}},
            spec__triton={
                "args": [f"--backend-directory={triton_install.backend_dir}", "--exit-timeout-secs=2"]
            },
        )
    )
    (container,) = render_triton_deployment(service, StackNames("svc", "default"), "on-demand", 1)["spec"][
        "template"
    ]["spec"]["containers"]
    env = triton_install.environment()
    env["PATH"] = f"{triton_install.server_binary.parent}:{env['PATH']}"
    script = container["command"][2].replace("/tmp/tritonscale-variants", str(tmp_path / "views"))
    process = subprocess.Popen(["/bin/bash", "-c", script], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (_ready(8000) and _ready(variant_ports(0)[0])):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        left = subprocess.run(
            ["pgrep", "-s", str(process.pid)], check=False, capture_output=True, text=True
        ).stdout.split()
        assert left == [], f"left running: {left}"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# --- the router side ---------------------------------------------------------------------


def test_the_router_sends_each_variant_the_share_the_operator_sets_without_a_reload(
    triton_install: TritonInstall, tmp_path: Path
) -> None:
    """Two replicas, each a model server and a variant server under the model's name (as the
    launcher runs them), behind the rendered HAProxy; shares set at runtime, measured from
    Triton's own counters for HTTP and gRPC clients that call the model's name."""
    import tritonclient.grpc as grpcclient

    from tritonscale.clients.router import VariantSharesRefused, parse_stats, set_variant_cuts
    from tritonscale.render.router import variant_cuts
    from tritonscale_sandbox.router import DnsServer, LocalRouter
    from tritonscale_sandbox.triton import TritonServer

    primary_repo = model_repository(
        tmp_path / "primary", [SimulatedModel(name="sim", base_ms=2, per_item_ms=0)]
    )
    variant_repo = model_repository(
        tmp_path / "variant", [SimulatedModel(name="sim", base_ms=1, per_item_ms=0)]
    )
    base = ipaddress.IPv4Address(free_loopback_block(2))
    hosts = (str(base), str(base + 1))
    http_port, grpc_port, metrics_port = variant_ports(0)
    servers = [
        TritonServer(primary_repo, host=host, install=triton_install, log_dir=tmp_path, models=["sim"])
        for host in hosts
    ] + [
        TritonServer(
            variant_repo,
            host=host,
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            name=f"{host}-variant",
            install=triton_install,
            log_dir=tmp_path,
            models=["sim"],
        )
        for host in hosts
    ]
    service = parse_inference_service(
        make_inference_service(
            spec__model={
                "repository": "/models",
                "names": ["sim"],
                "variants": [{"name": "sim-fast", "accuracy": 0.99, "speedup": 2}],
            },
            spec__autoscaling={"accuracy": {"floor": 0.995}},
            spec__replicas=2,
        )
    )
    started: list[TritonServer] = []
    stopped: set[TritonServer] = set()
    try:
        for server in servers:
            server.start()
            started.append(server)
        for server in servers:
            server.wait_ready()
        with DnsServer("triton.test", hosts, work_dir=tmp_path / "dns") as dns:
            router = LocalRouter(service, dns, work_dir=tmp_path / "router")
            router.start()
            try:
                router.wait_ready(hosts=hosts)
                deadline = time.monotonic() + 20
                while {s.host for s in router.servers() if s.backend.endswith("_v0") and s.is_up} != set(
                    hosts
                ) or (
                    len({s.backend for s in router.servers() if s.backend.endswith("_v0") and s.is_up}) != 2
                ):
                    assert time.monotonic() < deadline, "variant servers not UP"
                    time.sleep(0.1)

                def served() -> tuple[int, int]:
                    """Requests the model servers and the variant servers counted."""
                    counts = [0, 0]
                    for server in servers:
                        if server in stopped:
                            continue
                        with urllib.request.urlopen(
                            f"http://{server.host}:{server.http_port}/v2/models/sim/stats"
                        ) as r:
                            stats = json.load(r)["model_stats"][0]["inference_stats"]["success"]["count"]
                        counts[server.http_port != 8000] += int(stats)
                    return counts[0], counts[1]

                http = httpclient.InferenceServerClient(router.http_endpoint)
                grpc = grpcclient.InferenceServerClient(router.grpc_endpoint)
                data = np.ones((1, 1), dtype=np.float32)
                http_input = httpclient.InferInput("INPUT0", [1, 1], "FP32")
                http_input.set_data_from_numpy(data)
                grpc_input = grpcclient.InferInput("INPUT0", [1, 1], "FP32")
                grpc_input.set_data_from_numpy(data)

                def send(count: int) -> tuple[int, int]:
                    before = served()
                    for index in range(count):
                        if index % 2:
                            grpc.infer("sim", [grpc_input])
                        else:
                            http.infer("sim", [http_input])
                    # Triton may count a request just after its response reaches the client:
                    # wait (briefly) until every request is counted, then compare the split.
                    deadline = time.monotonic() + 5
                    after = served()
                    while sum(after) - sum(before) < count and time.monotonic() < deadline:
                        time.sleep(0.05)
                        after = served()
                    return after[0] - before[0], after[1] - before[1]

                assert send(200) == (200, 0), "no share set: the model serves everything"
                host, port = router.control_address
                started_at = time.perf_counter()
                held = set_variant_cuts(host, variant_cuts((0.3,)), port=port)
                switch_ms = 1000 * (time.perf_counter() - started_at)
                assert held == {"v0": 3000}
                primary, variant = send(2000)
                share = variant / (primary + variant)
                print(f"share set 0.30, served {share:.3f} by the variant; switch {switch_ms:.2f} ms")
                assert abs(share - 0.3) < 0.05  # binomial sd 0.01 at 2000 requests
                # The routers' counts (the autoscaler's 2 s signal) include the variants' requests,
                # and what each answered is what Triton's own counters say each served.
                with urllib.request.urlopen(
                    f"http://{router.bind_address}:{router.options.metrics_port}/stats;csv"
                ) as r:
                    reading = parse_stats(r.read().decode())
                assert reading.routed >= 2200
                assert reading.served == tuple(float(n) for n in served())
                # Bad values are refused and change nothing.
                with pytest.raises(VariantSharesRefused):
                    set_variant_cuts(host, {"v0": 20000}, port=port)
                with urllib.request.urlopen(f"http://{host}:{port}/variants") as r:
                    assert r.read().decode() == "v0 3000\n"
                set_variant_cuts(host, variant_cuts((1.0,)), port=port)
                assert send(100) == (0, 100)
                # The variant's servers gone (a variant still loading, or failing its checks):
                # once the router sees them down, its share stays on the model, not a 503.
                for server in servers[len(hosts) :]:
                    server.stop()
                    stopped.add(server)
                deadline = time.monotonic() + 30
                while any(s.is_up for s in router.servers() if s.backend.endswith("_v0")):
                    assert time.monotonic() < deadline, "variant servers still UP"
                    time.sleep(0.2)
                assert send(100) == (100, 0)
                set_variant_cuts(host, variant_cuts((0.0,)), port=port)
                assert send(100) == (100, 0)
            finally:
                router.stop()
    finally:
        for server in started:
            server.stop()
