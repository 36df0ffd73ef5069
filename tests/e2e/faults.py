"""Tools of the fault tests: the operator as a separate process (so it can be SIGKILLed), and a
TCP relay in front of the API server that counts the connections the operator opens.

A client whose server is down opens a new connection for every attempt (the refused or reset
ones are not kept alive), so connections opened per second while the API server is down are the
attempts per second: what a hot retry loop would drive up.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from tritonscale.clients.leader import LEASE_NAME
from tritonscale_sandbox.cluster import Cluster
from tritonscale_sandbox.net import free_ports


class OperatorProcess:
    """`tritonscale run` in a process of its own, with a kubeconfig and extra flags."""

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        *args: str,
        pod_name: str = "",
        serve_ports: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """With `serve_ports`, /metrics and /healthz on free loopback ports (`metrics_url`,
        `health_url`); `env` is added to the process's environment."""
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.args = args
        self.pod_name = pod_name
        self.env = dict(env or {})
        self.metrics_port, self.health_port = free_ports(2, "127.0.0.1") if serve_ports else (0, 0)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/healthz"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        env = {**os.environ, **self.env}
        if self.pod_name:
            env["POD_NAME"] = self.pod_name
        with self.log_path.open("ab") as log:
            argv = [
                sys.executable, "-m", "tritonscale.cli", "run", f"--kubeconfig={self.kubeconfig}",
                f"--metrics-port={self.metrics_port}", f"--health-port={self.health_port}",
                "--listen-address=127.0.0.1", "--no-read-triton-pods", "--no-read-routers", "--log-format=plain",
                *self.args,
            ]  # fmt: skip
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up, no Lease released, writes cut off wherever they were."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self, timeout_s: float = 60.0) -> float | None:
        """SIGTERM, as the kubelet stops a pod, then wait: the seconds the process took to exit,
        or None when it was still running after `timeout_s` and was killed."""
        if not self.running:
            return 0.0
        assert self.process is not None
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        return time.monotonic() - began

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as error:
            return f"(no log: {error})"

    def assert_healthy(self) -> None:
        if not self.running:
            raise AssertionError(f"the operator process exited; last lines:\n{self.log_tail()}")


class ConnectionCounter:
    """A TCP relay on a free loopback port to `upstream`; notes when each connection opened."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.opened: list[float] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stopped = False
        threading.Thread(target=self._accept, name="relay", daemon=True).start()

    def opened_between(self, start: float, end: float) -> int:
        return sum(1 for t in list(self.opened) if start <= t < end)

    def close(self) -> None:
        self._stopped = True
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.opened.append(time.monotonic())
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
        except OSError:
            client.close()  # as a refused connection looks to the client: it fails at once
            return
        upstream.settimeout(None)

        def pump(source: socket.socket, sink: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := source.recv(65536):
                    sink.sendall(data)
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        pump(client, upstream)


def through_relay(kubeconfig: Path, relay: ConnectionCounter, path: Path) -> Path:
    """A copy of `kubeconfig` whose server is the relay (same certificate: 127.0.0.1)."""
    config = yaml.safe_load(kubeconfig.read_text())
    for entry in config["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{relay.port}"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def api_port(cluster: Cluster) -> int:
    return int(cluster.server.rsplit(":", 1)[1])


@contextlib.contextmanager
def running(*operators: OperatorProcess) -> Iterator[None]:
    for op in operators:
        op.start()
    try:
        yield
    finally:
        for op in operators:
            op.kill()


CREDENTIAL_ID = "authentication.kubernetes.io/credential-id"


def credential(kubeconfig: Path) -> str:
    """The audit log's credential id of the kubeconfig's token (its JWT ID)."""
    token = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"]
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return f"JTI={claims['jti']}"


def made_with(event: dict[str, Any], credential_id: str) -> bool:
    """The audited request was made with that token."""
    return credential_id in event["user"].get("extra", {}).get(CREDENTIAL_ID, [])


def audit_time(event: dict[str, Any]) -> float:
    """When the API server received an audited request, as a Unix time."""
    return datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()


def lease_holder(cluster: Cluster, namespace: str) -> str:
    """The leader Lease's holder in `namespace` ("" when there is none yet)."""
    result = cluster.kubectl("get", "lease", LEASE_NAME, "-n", namespace, "-o", "json", check=False)
    return (
        str(json.loads(result.stdout)["spec"].get("holderIdentity") or "") if result.returncode == 0 else ""
    )
