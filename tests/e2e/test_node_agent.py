"""The sandbox node agent as a kubelet, against the real control plane: pod IP, phase and
readiness from real probes written back, restarts counted, deletion stops the process and
removes the pod, and a deleted node takes its pods' processes with it.

The pods run a tiny HTTP server (an image name the test maps to a local command), so each
lifecycle step can be provoked on purpose.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tritonscale_sandbox.cluster import Cluster, NodePool
from tritonscale_sandbox.node_agent import POD_NETWORK, Launch, NodeAgent, PodContext

pytestmark = pytest.mark.e2e

IMAGE = "example.test/http-server"
SERVER = """
import http.server, os, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/quit":
            os._exit(3)
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *args): pass
http.server.HTTPServer((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()
"""


def run_server(ctx: PodContext) -> Launch:
    port = ctx.container["ports"][0]["containerPort"]
    return Launch([sys.executable, "-c", SERVER, ctx.ip, str(port)], dict(os.environ))


def _pod(name: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": "server",
                    "image": f"{IMAGE}:1",
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
                }
            ],
        },
    }


@pytest.fixture
def agent(testenv_bin: Path, tmp_path: Path) -> Iterator[tuple[Cluster, NodeAgent]]:
    pools = [NodePool(name="proc", count=2, process_backed=True)]
    with Cluster.start(tmp_path / "cluster", testenv_bin, node_pools=pools) as cluster:
        node_agent = NodeAgent(cluster, tmp_path / "agent", runners={IMAGE: run_server}).start()
        try:
            yield cluster, node_agent
        finally:
            node_agent.stop()


def _get(cluster: Cluster, name: str) -> dict[str, Any]:
    pod: dict[str, Any] = cluster.request("GET", f"/api/v1/namespaces/default/pods/{name}")
    return pod


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


def _pid(node_agent: NodeAgent, name: str) -> int | None:
    return next((pid for key, pid in node_agent.processes() if key == f"default/{name}"), None)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


def _ready_if_present(cluster: Cluster, name: str) -> bool:
    try:
        return _ready(_get(cluster, name))
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return False
        raise


def _restarts(pod: dict[str, Any]) -> int:
    return int(pod["status"]["containerStatuses"][0]["restartCount"])


def _when(pod: dict[str, Any], holds: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    return pod if holds(pod) else None


@pytest.mark.timeout(180)
def test_the_agent_runs_probes_restarts_and_stops_pods_like_a_kubelet(
    agent: tuple[Cluster, NodeAgent],
) -> None:
    cluster, node_agent = agent
    cluster.wait_until(
        lambda: all(
            any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
            for n in cluster.request("GET", "/api/v1/nodes")["items"]
        ),
        "the process-backed nodes to be Ready",
    )
    cluster.apply_yaml([_pod("web", "proc-0"), _pod("doomed", "proc-1")])

    # Running and Ready from its real readiness probe, on its own loopback address.
    pod = cluster.wait_until(lambda: _when(_get(cluster, "web"), _ready), "web Ready")
    assert pod is not None
    ip = pod["status"]["podIP"]
    assert ipaddress.IPv4Address(ip) in POD_NETWORK
    assert pod["status"]["phase"] == "Running"
    with urllib.request.urlopen(f"http://{ip}:8080/", timeout=2) as response:
        assert response.read() == b"ok"

    # The process exits: not ready, restarted after the back-off, the restart counted.
    first_pid = _pid(node_agent, "web")
    assert first_pid is not None
    with pytest.raises(OSError, match=r"Remote end closed|Connection reset"):
        urllib.request.urlopen(f"http://{ip}:8080/quit", timeout=2)
    restarted = cluster.wait_until(
        lambda: _when(_get(cluster, "web"), lambda p: _restarts(p) == 1 and _ready(p)),
        "web restarted and Ready again",
        timeout_s=40,
    )
    assert restarted is not None
    last = restarted["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert last["exitCode"] == 3
    assert _pid(node_agent, "web") not in (None, first_pid)

    # Deleted: the process stops and the agent removes the pod (the kubelet's final delete).
    pid = _pid(node_agent, "web")
    assert pid is not None
    cluster.kubectl("delete", "pod", "web", "--wait=false")
    cluster.wait_until(lambda: not _alive(pid), "web's process to stop", timeout_s=15)
    cluster.wait_until(
        lambda: cluster.kubectl("get", "pod", "web", check=False).returncode != 0, "web gone", timeout_s=15
    )

    # An image with no runner: the reason in the pod's status, and deleting it still completes.
    unknown = _pod("unknown", "proc-0")
    unknown["spec"]["containers"][0]["image"] = "example.test/nothing:1"
    cluster.apply_yaml(unknown)
    cluster.wait_until(
        lambda: _when(
            _get(cluster, "unknown"),
            lambda p: (
                (p["status"].get("containerStatuses") or [{}])[0]
                .get("state", {})
                .get("waiting", {})
                .get("reason")
                == "CreateContainerError"
            ),
        ),
        "unknown to report CreateContainerError",
    )
    cluster.kubectl("delete", "pod", "unknown", "--wait=false")
    cluster.wait_until(
        lambda: cluster.kubectl("get", "pod", "unknown", check=False).returncode != 0,
        "unknown gone",
        timeout_s=15,
    )

    # A node deleted takes its pods' processes with it at once.
    cluster.wait_until(lambda: _ready(_get(cluster, "doomed")), "doomed Ready")
    doomed = _pid(node_agent, "doomed")
    assert doomed is not None
    cluster.kubectl("delete", "node", "proc-1", "--wait=false")
    cluster.wait_until(lambda: not _alive(doomed), "doomed's process to die with its node", timeout_s=10)
    # ... and its pod, until pod GC removes it, is no longer Ready (so no Service answers with it).
    cluster.wait_until(lambda: not _ready_if_present(cluster, "doomed"), "doomed not Ready", timeout_s=5)
