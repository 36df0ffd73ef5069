"""Process-backed pods: the sandbox's kubelet, for nodes labelled `tritonscale.io/sandbox-node`.

kwok fakes pods; the demo needs real ones. `NodeAgent` watches the pods that the real scheduler
binds to its nodes and runs each as a real local process, chosen by the container image the way
a container runtime would pull it:

- `nvcr.io/nvidia/tritonserver` runs the tritonserver binary (scripts/install-triton.sh) with the
  pod's own args, bound to the pod's address;
- `haproxy` runs Debian's HAProxy with the ConfigMap's haproxy.cfg, as mounted;
- `ghcr.io/tritonscale/tritonscale` (the operator image) runs this environment's `tritonscale`
  with the chart's args and env, authenticated by a token for the pod's ServiceAccount from the
  TokenRequest API (as the kubelet projects one).

Without containers there are no network or mount namespaces, so the agent does what they would:
each pod gets its own loopback address as its pod IP (from a /20 of 127.42.0.0/16 that the agent
holds a lock on, so a demo and a test run on one machine never share one), a wildcard `bind :PORT`
becomes `bind <pod IP>:PORT`, paths under a volume's mountPath point into the pod's directory
(where ConfigMap and emptyDir volumes are materialised), and HAProxy's `parse-resolv-conf` (the
pod's /etc/resolv.conf, which the kubelet writes) names the sandbox's cluster DNS.

Like a kubelet, it writes the pod's IP, phase, conditions and container states back to the API;
runs the startup, liveness and readiness probes (httpGet, tcpSocket) against the pod's address;
restarts exited containers with back-off (10 s doubling to 5 min) and counts restarts; on
deletion runs the preStop sleep, sends SIGTERM, waits the grace period, kills, and removes the
pod; and keeps its nodes Ready with a heartbeat every 10 s. A node that is deleted takes its
pods' processes with it at once (SIGKILL: the machine is gone); a NoExecute taint is left to the
control plane's taint eviction, which deletes the pods, which the agent then stops.

It also plays the cluster DNS (see `ClusterDns`): the API server refuses loopback addresses in
EndpointSlices, so CoreDNS's kubernetes plugin could not serve these pods; the agent computes each
Service's answer from the Service's selector and its pods' readiness, as the EndpointSlice
controller would, and serves it from dnsmasq.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import ipaddress
import itertools
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tritonscale.ports import GRPC_PORT, HTTP_PORT, METRICS_PORT, ROUTER_CONTROL_PORT, ROUTER_METRICS_PORT
from tritonscale_sandbox.cluster import PROCESS_NODE_LABEL, Cluster
from tritonscale_sandbox.process import die_with_parent, spawn
from tritonscale_sandbox.process import stop as stop_process
from tritonscale_sandbox.router import DnsServer
from tritonscale_sandbox.triton import TritonInstall, install_dir

POD_NETWORK = ipaddress.IPv4Network("127.42.0.0/16")
POD_BLOCK_PREFIX = 20  # 4094 pod addresses per agent, 16 agents at once
# The fixed ports pods listen on (Triton's, the router's, the chart's operator metrics and health):
# a program listening on one of them on every address would take the pods' traffic.
POD_PORTS = (HTTP_PORT, GRPC_PORT, METRICS_PORT, ROUTER_METRICS_PORT, ROUTER_CONTROL_PORT, 8080, 8081)
NODE_NETWORK = ipaddress.IPv4Network("127.41.0.0/24")
HEARTBEAT_S = 10.0
POLL_S = 0.5
BACKOFF_INITIAL_S = 10.0
BACKOFF_MAX_S = 300.0
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver"
HAPROXY_IMAGE = "haproxy"
OPERATOR_IMAGE = "ghcr.io/tritonscale/tritonscale"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class PodNetworkError(RuntimeError):
    """No pod address block is free, or a pod port is taken on every address."""


def reserve_pod_block(lock_dir: Path | None = None) -> tuple[ipaddress.IPv4Network, int]:
    """A /20 of POD_NETWORK that no other agent on this machine holds, and the descriptor of
    its lock (held until closed, or the process ends)."""
    lock_dir = lock_dir or Path(tempfile.gettempdir()) / "tritonscale-pod-networks"
    if not lock_dir.is_dir():
        lock_dir.mkdir(parents=True, exist_ok=True)
        # Shared by every user's sandboxes on the machine (a CI runner, a developer), as /tmp is.
        with contextlib.suppress(OSError):
            lock_dir.chmod(0o1777)
    blocks = list(POD_NETWORK.subnets(new_prefix=POD_BLOCK_PREFIX))
    random.shuffle(blocks)
    for block in blocks:
        path = lock_dir / f"{block.network_address}.lock"
        try:
            fd = os.open(path, os.O_CREAT | os.O_RDONLY, 0o666)
        except PermissionError:
            continue  # another user's lock file we cannot open: taken as held
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o666)  # whoever created it, every user can lock it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return block, fd
    raise PodNetworkError(f"every pod address block of {POD_NETWORK} is held by another sandbox ({lock_dir})")


def check_pod_ports(address: str, ports: tuple[int, ...] = POD_PORTS) -> None:
    """Refuse to start when a program listens on a pod port on every address: binding the
    pod's own address would fail, or its connections reach that program."""
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # Past connections in TIME_WAIT do not count; a listener does, as for the pods.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError as error:
                if error.errno != errno.EADDRINUSE:
                    raise
                raise PodNetworkError(
                    f"port {port} is taken by a program listening on every address (see `ss -ltnp "
                    f"'sport = :{port}'`): the sandbox's pods listen on {', '.join(map(str, ports))} "
                    "of their own addresses; stop it and try again"
                ) from None


class PodStartError(RuntimeError):
    """The agent cannot run this pod (unknown image, unsupported volume, ...)."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_repository(image: str) -> str:
    """`haproxy:2.6` -> `haproxy`; `nvcr.io/nvidia/tritonserver:24.10-py3` -> `nvcr.io/nvidia/tritonserver`."""
    name = image.split("@", 1)[0]
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > last_slash else name


# --------------------------------------------------------------------------------------------
# What a container runtime and the pod's namespaces would do, done on the host


@dataclass
class PodContext:
    """What a runner needs to start one pod's container."""

    pod: Mapping[str, Any]
    container: Mapping[str, Any]
    ip: str
    pod_dir: Path
    mounts: dict[str, Path]
    """mountPath -> where that volume lives on the host."""
    nameserver: str
    """host:port of the cluster DNS."""
    cluster: Cluster

    def host_path(self, path: str) -> str:
        """`path` as the container sees it -> the host path (the longest mountPath prefix wins)."""
        for mount_path in sorted(self.mounts, key=len, reverse=True):
            if path == mount_path or path.startswith(mount_path.rstrip("/") + "/"):
                return str(self.mounts[mount_path]) + path[len(mount_path.rstrip("/")) :]
        return path

    def env(self) -> dict[str, str]:
        """The container's `env`: literal values, and the downward API's pod name, namespace and
        IP (other `valueFrom` sources are not supported here and come out empty)."""
        fields = {
            "metadata.name": self.pod["metadata"]["name"],
            "metadata.namespace": self.pod["metadata"].get("namespace", ""),
            "status.podIP": self.ip,
        }
        values = {}
        for entry in self.container.get("env") or []:
            if "name" not in entry:
                continue
            field_path = (entry.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath")
            values[entry["name"]] = str(fields.get(field_path, "") if field_path else entry.get("value", ""))
        return values


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]


Runner = Callable[[PodContext], Launch]

_WILDCARD_BIND = re.compile(r"^(\s*bind\s+)(?:\*|0\.0\.0\.0)?:(\d+)", re.MULTILINE)
_RESOLV_CONF = re.compile(r"^(\s*)parse-resolv-conf\s*$", re.MULTILINE)
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])(/[\w./-]+)")


def localize_haproxy_config(text: str, ctx: PodContext) -> str:
    """The config as it behaves inside the pod: wildcard binds on the pod's address,
    /etc/resolv.conf's nameserver (the cluster DNS), mounted paths on the host."""
    text = _WILDCARD_BIND.sub(lambda m: f"{m.group(1)}{ctx.ip}:{m.group(2)}", text)
    text = _RESOLV_CONF.sub(lambda m: f"{m.group(1)}nameserver cluster-dns {ctx.nameserver}", text)
    return _ABSOLUTE_PATH.sub(lambda m: ctx.host_path(m.group(1)), text)


def _argv(ctx: PodContext) -> list[str]:
    return [*(ctx.container.get("command") or []), *(ctx.container.get("args") or [])]


def run_haproxy(ctx: PodContext) -> Launch:
    argv = _argv(ctx)
    if not argv or Path(argv[0]).name != "haproxy" or "-f" not in argv:
        raise PodStartError(f"the haproxy image runs `haproxy ... -f CONFIG`, got {argv}")
    config = Path(ctx.host_path(argv[argv.index("-f") + 1]))
    localized = ctx.pod_dir / "haproxy.cfg"
    localized.write_text(localize_haproxy_config(config.read_text(encoding="utf-8"), ctx), encoding="utf-8")
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    rest = [ctx.host_path(a) for a in argv[1:]]
    rest[rest.index(str(config))] = str(localized)
    return Launch([binary, *rest], {**os.environ, **ctx.env()})


def run_tritonserver(ctx: PodContext) -> Launch:
    argv = _argv(ctx)
    if not argv or Path(argv[0]).name != "tritonserver":
        raise PodStartError(f"the tritonserver image runs `tritonserver ...`, got {argv}")
    install = TritonInstall.at(install_dir())
    if not install.is_complete():
        raise PodStartError(f"no tritonserver install in {install.root}: run scripts/install-triton.sh")
    safe = ctx.ip.replace(".", "_")
    args = [ctx.host_path(a) for a in argv[1:]]
    return Launch(
        [
            str(install.server_binary),
            *args,
            # The pod's network namespace: its own address.
            f"--http-address={ctx.ip}",
            f"--grpc-address={ctx.ip}",
            f"--metrics-address={ctx.ip}",
            # The image's content: backends; and /dev/shm is shared by every pod here.
            f"--backend-directory={install.backend_dir}",
            f"--backend-config=python,shm-region-prefix-name=tritonscale_pod_{safe}_",
            "--allow-gpu-metrics=false",
        ],
        {**install.environment(), **ctx.env(), "TRITONSCALE_REPLICA": str(ctx.pod["metadata"]["name"])},
    )


def run_operator(ctx: PodContext) -> Launch:
    argv = _argv(ctx)
    binary = shutil.which("tritonscale") or str(Path(sys.executable).with_name("tritonscale"))
    if argv and Path(argv[0]).name == "tritonscale":
        argv = argv[1:]
    token = Path(ctx.host_path(f"{SERVICE_ACCOUNT_DIR}/token"))
    if not token.is_file():
        raise PodStartError(f"the operator pod has no ServiceAccount token at {SERVICE_ACCOUNT_DIR}")
    # In a pod the client reads the token at a fixed path; here a kubeconfig names where it is.
    kubeconfig = ctx.pod_dir / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "in-cluster",
                        "cluster": {
                            "server": ctx.cluster.server,
                            "certificate-authority": str(ctx.cluster.ca_file),
                        },
                    }
                ],
                "users": [{"name": "pod", "user": {"tokenFile": str(token)}}],
                "contexts": [
                    {
                        "name": "in-cluster",
                        "context": {
                            "cluster": "in-cluster",
                            "user": "pod",
                            "namespace": ctx.pod["metadata"]["namespace"],
                        },
                    }
                ],
                "current-context": "in-cluster",
            }
        ),
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.update(ctx.env())
    env["KUBECONFIG"] = str(kubeconfig)
    env["HOME"] = str(ctx.host_path("/tmp"))
    # The pod's network namespace: its metrics and health servers on its own address.
    return Launch([binary, *[ctx.host_path(a) for a in argv], f"--listen-address={ctx.ip}"], env)


DEFAULT_RUNNERS: dict[str, Runner] = {
    TRITON_IMAGE: run_tritonserver,
    HAPROXY_IMAGE: run_haproxy,
    OPERATOR_IMAGE: run_operator,
}


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process's whole session (its children too, such as Triton's Python stubs),
    and reap it. Each pod process leads its own session (`spawn`)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


# --------------------------------------------------------------------------------------------
# Probes


def _probe_port(container: Mapping[str, Any], port: Any) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise PodStartError(f"probe port {port!r} is not a port of container {container.get('name')}")


def probe_once(probe: Mapping[str, Any], container: Mapping[str, Any], ip: str) -> bool:
    """One probe attempt against the pod's address (httpGet: 200-399 passes; tcpSocket: connects)."""
    timeout = float(probe.get("timeoutSeconds", 1))
    try:
        if "httpGet" in probe:
            get = probe["httpGet"]
            url = f"http://{ip}:{_probe_port(container, get['port'])}{get.get('path', '/')}"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    return 200 <= int(response.status) < 400
            except urllib.error.HTTPError as error:
                return 200 <= error.code < 400
        if "tcpSocket" in probe:
            with socket.create_connection((ip, _probe_port(container, probe["tcpSocket"]["port"])), timeout):
                return True
    except (OSError, ValueError):
        return False
    raise PodStartError(f"container {container.get('name')}: only httpGet and tcpSocket probes run here")


@dataclass
class _Probe:
    spec: Mapping[str, Any]
    successes: int = 0
    failures: int = 0
    next_at: float = 0.0
    passed: bool = False

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def record(self, ok: bool, now: float) -> None:
        self.next_at = now + float(self.spec.get("periodSeconds", 10))
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= int(self.spec.get("successThreshold", 1)):
                self.passed = True
        else:
            self.successes, self.failures = 0, self.failures + 1
            if self.failures >= int(self.spec.get("failureThreshold", 3)):
                self.passed = False

    @property
    def failed(self) -> bool:
        return self.failures >= int(self.spec.get("failureThreshold", 3))


# --------------------------------------------------------------------------------------------
# One pod


@dataclass
class PodProcess:
    """One pod run as a process by `NodeAgent`, with its own thread (start, probes, restarts,
    termination)."""

    agent: NodeAgent
    pod: dict[str, Any]
    ip: str
    pod_dir: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    ready: bool = False
    started: bool = False
    terminating: bool = False
    gone: threading.Event = field(default_factory=threading.Event)
    kill_now: threading.Event = field(default_factory=threading.Event)
    last_exit: dict[str, Any] | None = None
    waiting_reason: str | None = None
    message: str = ""
    started_at: str = ""
    mounts: dict[str, Path] = field(default_factory=dict)
    node_lost: bool = False
    _thread: threading.Thread | None = None

    @property
    def key(self) -> str:
        return f"{self.pod['metadata']['namespace']}/{self.pod['metadata']['name']}"

    @property
    def uid(self) -> str:
        return str(self.pod["metadata"]["uid"])

    @property
    def container(self) -> Mapping[str, Any]:
        containers: list[Mapping[str, Any]] = self.pod["spec"]["containers"]
        return containers[0]

    @property
    def log_path(self) -> Path:
        return self.pod_dir / f"{self.container['name']}.log"

    def begin(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"pod {self.key}", daemon=True)
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    # ---- the pod's life

    def _run(self) -> None:
        try:
            self._materialise()
            launch = self._launch()
        except (PodStartError, OSError, urllib.error.HTTPError, KeyError) as error:
            self.message = str(error)
            self.waiting_reason = "CreateContainerError"
            self.agent.log(f"{self.key}: cannot start: {error}")
            self._write_status()
            # Nothing runs; once the pod is deleted, confirm it (or it would stay Terminating).
            while not self.terminating and not self.gone.wait(POLL_S):
                pass
            self._terminate()
            return
        backoff = BACKOFF_INITIAL_S
        while not self.terminating and not self.gone.is_set():
            self._start(launch)
            outcome = self._supervise()
            if outcome == "terminate" or self.gone.is_set():
                break
            # Exited or failed its liveness probe: restart after back-off, as restartPolicy Always.
            self.restarts += 1
            self.waiting_reason = "CrashLoopBackOff"
            self._write_status()
            if self.gone.wait(backoff) or self.terminating:
                break
            backoff = min(backoff * 2, BACKOFF_MAX_S)
        self._terminate()

    def _materialise(self) -> None:
        self.pod_dir.mkdir(parents=True, exist_ok=True)
        namespace = self.pod["metadata"]["namespace"]
        volumes: dict[str, Path] = {}
        for volume in self.pod["spec"].get("volumes") or []:
            # Short paths: a Unix socket's path (HAProxy's stats socket) must fit in 108 bytes.
            target = self.agent.volume_root / self.uid[:13] / volume["name"]
            target.mkdir(parents=True, exist_ok=True)
            if "configMap" in volume:
                name = volume["configMap"]["name"]
                config_map = self.agent.cluster.request(
                    "GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}"
                )
                for key, value in (config_map.get("data") or {}).items():
                    (target / key).write_text(value, encoding="utf-8")
            elif "projected" in volume:
                self._project(volume["projected"], target)
            elif "emptyDir" not in volume:
                raise PodStartError(
                    f"volume {volume['name']}: only configMap, emptyDir and projected volumes run here"
                )
            volumes[volume["name"]] = target
        self.mounts = {m["mountPath"]: volumes[m["name"]] for m in self.container.get("volumeMounts") or []}

    def _project(self, projected: Mapping[str, Any], target: Path) -> None:
        """The kubelet's projected volume: a bound ServiceAccount token from the TokenRequest API,
        ConfigMap keys (the cluster's CA bundle) and the pod's namespace."""
        metadata = self.pod["metadata"]
        namespace = metadata["namespace"]
        for source in projected.get("sources") or []:
            if "serviceAccountToken" in source:
                token_spec = source["serviceAccountToken"]
                account = self.pod["spec"].get("serviceAccountName") or "default"
                request = {
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenRequest",
                    "spec": {
                        "expirationSeconds": int(token_spec.get("expirationSeconds", 3607)),
                        "boundObjectRef": {
                            "apiVersion": "v1",
                            "kind": "Pod",
                            "name": metadata["name"],
                            "uid": self.uid,
                        },
                        **({"audiences": [token_spec["audience"]]} if token_spec.get("audience") else {}),
                    },
                }
                answer = self.agent.cluster.request(
                    "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token", request
                )
                (target / token_spec["path"]).write_text(answer["status"]["token"], encoding="utf-8")
            elif "configMap" in source:
                name = source["configMap"]["name"]
                data = (
                    self.agent.cluster.request(
                        "GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}"
                    ).get("data")
                    or {}
                )
                for item in source["configMap"].get("items") or [{"key": k, "path": k} for k in data]:
                    (target / item["path"]).write_text(data[item["key"]], encoding="utf-8")
            elif "downwardAPI" in source:
                for item in source["downwardAPI"].get("items") or []:
                    if item.get("fieldRef", {}).get("fieldPath") != "metadata.namespace":
                        raise PodStartError(
                            f"downwardAPI {item.get('path')}: only metadata.namespace runs here"
                        )
                    (target / item["path"]).write_text(namespace, encoding="utf-8")

    def _launch(self) -> Launch:
        image = image_repository(str(self.container.get("image", "")))
        runner = self.agent.runners.get(image)
        if runner is None:
            raise PodStartError(f"image {image!r} has no local runner (known: {sorted(self.agent.runners)})")
        if len(self.pod["spec"]["containers"]) != 1 or self.pod["spec"].get("initContainers"):
            raise PodStartError("only pods with one container and no init containers run here")
        ctx = PodContext(
            self.pod,
            self.container,
            self.ip,
            self.pod_dir,
            self.mounts,
            self.agent.dns.nameserver,
            self.agent.cluster,
        )
        return runner(ctx)

    def _start(self, launch: Launch) -> None:
        self.started_at = _now()
        self.process = spawn(
            launch.argv,
            self.log_path,
            env=launch.env,
            cwd=self.pod_dir,
            banner=f"==== {self.started_at} start #{self.restarts + 1}: {' '.join(launch.argv)}",
            preexec_fn=die_with_parent,
        )
        self.waiting_reason, self.ready, self.started = None, False, False
        self._write_status()

    def _supervise(self) -> str:
        """Run probes until the process exits ("exited"), fails liveness ("unhealthy") or the
        pod is being deleted ("terminate")."""
        assert self.process is not None
        spec = self.container
        startup = _Probe(spec["startupProbe"]) if "startupProbe" in spec else None
        liveness = _Probe(spec["livenessProbe"]) if "livenessProbe" in spec else None
        readiness = _Probe(spec["readinessProbe"]) if "readinessProbe" in spec else None
        began = time.monotonic()
        for probe in (startup, liveness, readiness):
            if probe is not None:
                probe.next_at = began + float(probe.spec.get("initialDelaySeconds", 0))
        self.started = startup is None
        while True:
            if self.terminating or self.gone.is_set():
                return "terminate"
            code = self.process.poll()
            if code is not None:
                self.last_exit = {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": self.started_at,
                    "finishedAt": _now(),
                }
                self.ready = False
                self.agent.log(f"{self.key}: exited with {code}")
                return "exited"
            now = time.monotonic()
            changed = False
            if not self.started and startup is not None and startup.due(now):
                startup.record(probe_once(startup.spec, spec, self.ip), now)
                if startup.passed:
                    self.started, changed = True, True
                elif startup.failed:
                    return self._kill_unhealthy("startup probe failed")
            if self.started:
                if liveness is not None and liveness.due(now):
                    liveness.record(probe_once(liveness.spec, spec, self.ip), now)
                    if liveness.failed:
                        return self._kill_unhealthy("liveness probe failed")
                ready = self.ready
                if readiness is None:
                    ready = True
                elif readiness.due(now):
                    readiness.record(probe_once(readiness.spec, spec, self.ip), now)
                    ready = readiness.passed
                if ready != self.ready:
                    self.ready, changed = ready, True
            if changed:
                self._write_status()
                self.agent.wake()
            self.gone.wait(0.1)

    def _kill_unhealthy(self, why: str) -> str:
        self.agent.log(f"{self.key}: {why}; restarting the container")
        self._stop_process(float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)))
        self.last_exit = {
            "exitCode": self.process.returncode if self.process else 137,
            "reason": "Error",
            "message": why,
            "startedAt": self.started_at,
            "finishedAt": _now(),
        }
        self.ready = False
        return "unhealthy"

    def _stop_process(self, grace_s: float) -> None:
        if self.process is None:
            return
        if self.kill_now.is_set():
            grace_s = 0.0
        if self.process.poll() is None:
            stop_process(self.process, max(0.0, grace_s), signal.SIGTERM)
        kill_group(self.process)

    def _terminate(self) -> None:
        """preStop, SIGTERM, grace, SIGKILL; then remove the pod from the API (the kubelet's
        final delete), unless the pod or its node is gone already."""
        metadata = self.pod["metadata"]
        grace = float(
            metadata.get(
                "deletionGracePeriodSeconds", self.pod["spec"].get("terminationGracePeriodSeconds", 30)
            )
        )
        deadline = time.monotonic() + grace
        self.ready = False
        pre_stop = (self.container.get("lifecycle") or {}).get("preStop") or {}
        if "sleep" in pre_stop and self.process is not None and self.process.poll() is None:
            self.kill_now.wait(min(float(pre_stop["sleep"].get("seconds", 0)), grace))
        self._stop_process(deadline - time.monotonic())
        if not self.gone.is_set():
            with contextlib.suppress(urllib.error.HTTPError, OSError):
                self.agent.cluster.request(
                    "DELETE",
                    f"/api/v1/namespaces/{metadata['namespace']}/pods/{metadata['name']}",
                    {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}},
                )
        self.agent.log(f"{self.key}: stopped")
        self.gone.set()

    # ---- status

    def mark_node_lost(self) -> None:
        """The pod's node is gone: not ready, its container terminated (the pod object stays
        until the control plane's pod GC removes it)."""
        self.node_lost, self.ready, self.started = True, False, False
        self.message = f"node {self.pod['spec']['nodeName']} is gone"
        self._write_status()

    def _write_status(self) -> None:
        container = self.container
        state: dict[str, Any]
        if self.node_lost:
            state = {"terminated": {"exitCode": 137, "reason": "NodeLost", "message": self.message}}
        elif self.waiting_reason is not None:
            state = {"waiting": {"reason": self.waiting_reason, "message": self.message}}
        else:
            state = {"running": {"startedAt": self.started_at}}
        status_of_container: dict[str, Any] = {
            "name": container["name"],
            "image": container.get("image", ""),
            "imageID": "",
            "containerID": f"process://{self.process.pid}" if self.process else "",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restarts,
            "state": state,
            "lastState": {"terminated": self.last_exit} if self.last_exit else {},
        }
        ready = "True" if self.ready else "False"
        conditions = [
            {"type": "PodReadyToStartContainers", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "Ready", "status": ready},
            {"type": "ContainersReady", "status": ready},
            {"type": "PodScheduled", "status": "True"},
        ]
        now = _now()
        for condition in conditions:
            condition["lastTransitionTime"] = now
        node_ip = self.agent.node_ip(self.pod["spec"]["nodeName"])
        body = {
            "status": {
                "phase": "Running" if self.waiting_reason != "CreateContainerError" else "Pending",
                "podIP": self.ip,
                "podIPs": [{"ip": self.ip}],
                "hostIP": node_ip,
                "hostIPs": [{"ip": node_ip}],
                "startTime": self.pod["status"].get("startTime") or now,
                "conditions": conditions,
                "containerStatuses": [status_of_container],
                "message": self.message,
            }
        }
        metadata = self.pod["metadata"]
        try:
            self.agent.cluster.request(
                "PATCH",
                f"/api/v1/namespaces/{metadata['namespace']}/pods/{metadata['name']}/status",
                body,
                content_type="application/merge-patch+json",
            )
        except (urllib.error.HTTPError, OSError) as error:
            self.agent.log(f"{self.key}: status not written: {error}")


# --------------------------------------------------------------------------------------------
# The agent


def _matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in pod.get("status", {}).get("conditions") or []
    )


def service_records(
    services: list[Mapping[str, Any]], pods: list[Mapping[str, Any]], domain: str
) -> dict[str, list[str]]:
    """`<service>.<namespace>.svc.<domain>` -> the addresses of the pods the Service selects that
    are ready (or all, with publishNotReadyAddresses) and not terminating, as the EndpointSlice
    controller would publish them. There is no kube-proxy here, so a ClusterIP Service's name
    answers with its pods' addresses too (clients spread themselves, like a headless Service)."""
    records: dict[str, list[str]] = {}
    for service in services:
        spec = service.get("spec") or {}
        selector = spec.get("selector") or {}
        namespace = service["metadata"]["namespace"]
        addresses = [
            pod["status"]["podIP"]
            for pod in pods
            if pod["metadata"]["namespace"] == namespace
            and _matches(selector, pod["metadata"].get("labels") or {})
            and (pod.get("status") or {}).get("podIP")
            and not pod["metadata"].get("deletionTimestamp")
            and (spec.get("publishNotReadyAddresses") or _pod_ready(pod))
        ]
        records[f"{service['metadata']['name']}.{namespace}.svc.{domain}"] = addresses
    return records


class NodeAgent:
    """Runs the pods bound to the process-backed nodes (label `tritonscale.io/sandbox-node`),
    keeps those nodes Ready, and keeps the cluster DNS in step. `start()`, then `stop()` (which
    stops every pod process, leaving none behind)."""

    def __init__(
        self,
        cluster: Cluster,
        work_dir: Path,
        *,
        runners: Mapping[str, Runner] | None = None,
        cluster_domain: str = "cluster.local",
        dns_host: str = "127.41.0.253",
    ) -> None:
        self.cluster = cluster
        self.work_dir = work_dir
        self.runners = dict(DEFAULT_RUNNERS if runners is None else runners)
        self.domain = cluster_domain
        self.dns = DnsServer(cluster_domain, host=dns_host, work_dir=work_dir / "dns", ttl_s=1)
        self.pods: dict[str, PodProcess] = {}
        self.pod_block: ipaddress.IPv4Network | None = None
        self._block_lock: int | None = None
        self._ips: Iterator[str] = iter(())
        self._node_ips: dict[str, str] = {}
        self._heartbeat_at: dict[str, float] = {}
        self._ready_since: dict[str, str] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.log_path = work_dir / "node-agent.log"
        self.volume_root = Path(tempfile.mkdtemp(prefix="tritonscale-volumes-"))
        self.errors = 0

    # ---- lifecycle

    def start(self) -> NodeAgent:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.pod_block, self._block_lock = reserve_pod_block()
        self._ips = (str(ip) for ip in itertools.islice(self.pod_block.hosts(), 1, None))
        check_pod_ports(str(self.pod_block[2]))
        self.dns.start()
        self._sync()  # nodes Ready before anyone waits for them
        self._thread = threading.Thread(target=self._loop, name="node-agent", daemon=True)
        self._thread.start()
        return self

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop every pod process (SIGTERM, SIGKILL after `grace_s`), the loop and the DNS."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        for pod in list(self.pods.values()):
            if grace_s <= 0:
                pod.kill_now.set()
            pod.terminating = True
            pod.gone.set()
        for pod in list(self.pods.values()):
            if pod.process is not None:
                stop_process(pod.process, grace_s)
                kill_group(pod.process)
            pod.join(grace_s + 5)
        self.dns.stop()
        shutil.rmtree(self.volume_root, ignore_errors=True)
        if self._block_lock is not None:
            os.close(self._block_lock)
            self._block_lock = None

    def __enter__(self) -> NodeAgent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wake(self) -> None:
        """Sync soon (a pod's readiness changed, so DNS answers change)."""
        self._wake.set()

    def log(self, line: str) -> None:
        with self._lock, self.log_path.open("a", encoding="utf-8") as log:
            log.write(f"{_now()} {line}\n")

    def node_ip(self, node: str) -> str:
        if node not in self._node_ips:
            self._node_ips[node] = str(NODE_NETWORK[len(self._node_ips) + 1])
        return self._node_ips[node]

    def processes(self) -> Iterator[tuple[str, int]]:
        """(pod, pid) of every pod process alive."""
        for pod in list(self.pods.values()):
            if pod.process is not None and pod.process.poll() is None:
                yield pod.key, pod.process.pid

    # ---- the loop

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except (urllib.error.HTTPError, OSError, KeyError, ValueError) as error:
                self.errors += 1
                self.log(f"sync failed: {error}")
            self._wake.wait(POLL_S)
            self._wake.clear()

    def _sync(self) -> None:
        selector = f"{PROCESS_NODE_LABEL[0]}={PROCESS_NODE_LABEL[1]}"
        nodes = self.cluster.request("GET", f"/api/v1/nodes?labelSelector={selector}")["items"]
        names = {n["metadata"]["name"] for n in nodes}
        now = time.monotonic()
        for node in nodes:
            name = node["metadata"]["name"]
            if now - self._heartbeat_at.get(name, -HEARTBEAT_S) >= HEARTBEAT_S:
                self._heartbeat(name)
                self._heartbeat_at[name] = now
        pods = self.cluster.request("GET", "/api/v1/pods")["items"]
        listed = {p["metadata"]["uid"]: p for p in pods}
        for pod in pods:
            node = (pod.get("spec") or {}).get("nodeName")
            uid = pod["metadata"]["uid"]
            if node not in names or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                continue
            tracked = self.pods.get(uid)
            if tracked is None and not pod["metadata"].get("deletionTimestamp"):
                self._start_pod(pod)
            elif tracked is not None and pod["metadata"].get("deletionTimestamp") and not tracked.terminating:
                tracked.pod = pod
                tracked.terminating = True
                self.log(
                    f"{tracked.key}: deleting (grace {pod['metadata'].get('deletionGracePeriodSeconds')} s)"
                )
        for uid, tracked in list(self.pods.items()):
            node_gone = tracked.pod["spec"]["nodeName"] not in names
            if node_gone or uid not in listed:
                # The machine (or the pod object) is gone: nothing is left to drain to.
                if not tracked.gone.is_set():
                    self.log(f"{tracked.key}: {'node' if node_gone else 'pod'} gone; killing")
                tracked.kill_now.set()
                tracked.terminating = True
                tracked.gone.set()
                if tracked.process is not None:
                    kill_group(tracked.process)
                if node_gone and uid in listed and not tracked.node_lost:
                    # What the node lifecycle controller does once a machine stops answering:
                    # its pods are no longer Ready (the pod object stays until pod GC).
                    tracked.mark_node_lost()
            if tracked.gone.is_set() and (tracked.process is None or tracked.process.poll() is not None):
                del self.pods[uid]
        services = self.cluster.request("GET", "/api/v1/services")["items"]
        if self.dns.set_records(service_records(services, pods, self.domain)):
            self.log("dns: records changed")

    def _start_pod(self, pod: dict[str, Any]) -> None:
        ip = next(self._ips)
        metadata = pod["metadata"]
        pod_dir = self.work_dir / "pods" / f"{metadata['namespace']}_{metadata['name']}_{metadata['uid'][:8]}"
        process = PodProcess(self, pod, ip, pod_dir)
        self.pods[metadata["uid"]] = process
        self.log(f"{process.key}: starting on {pod['spec']['nodeName']} at {ip}")
        process.begin()

    def _heartbeat(self, node: str) -> None:
        now = _now()
        conditions = [
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "sandbox node agent is ready",
            },
            {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
            {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure"},
            {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID"},
            {"type": "NetworkUnavailable", "status": "False", "reason": "RouteCreated"},
        ]
        since = self._ready_since.setdefault(node, now)
        for condition in conditions:
            condition.update(lastHeartbeatTime=now, lastTransitionTime=since)
        body = {
            "status": {
                "conditions": conditions,
                "addresses": [
                    {"type": "InternalIP", "address": self.node_ip(node)},
                    {"type": "Hostname", "address": node},
                ],
                "nodeInfo": {
                    "kubeletVersion": "sandbox-process",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                    "containerRuntimeVersion": "process://",
                    "kernelVersion": "",
                    "osImage": "",
                    "kubeProxyVersion": "",
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                },
            }
        }
        self.cluster.request(
            "PATCH", f"/api/v1/nodes/{node}/status", body, content_type="application/merge-patch+json"
        )
