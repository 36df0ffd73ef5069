"""Local, real Triton Inference Servers for tests, benchmarks and the sandbox.

Nothing here is mocked: `tritonserver` 2.51.0 (CPU, Python backend) comes from the
nvidia-pytriton wheel, installed by `scripts/install-triton.sh` into a versioned cache
directory (see `install_triton`). Each server listens on its own loopback address with the
standard ports (HTTP 8000, gRPC 8001, metrics 8002), as a pod would on its own IP.

Typical use::

    repo = model_repository(tmp_path / "models")            # simulated, instant, iris
    with TritonPool(2, repo, log_dir=tmp_path / "logs") as pool:
        url = pool[0].http_endpoint                         # "127.x.y.1:8000" for tritonclient
        pool.servers[1].set_slow_factor(10)                 # replica 1 now 10x slower
        pool.kill(0); pool.restart(0)

Test models (package data in `sandbox/models/`, materialised by `model_repository`):

- `SimulatedModel` (default names `simulated` and `instant`): service time per batch
  `base_ms + per_item_ms * items`, real dynamic batching; echoes INPUT0 as OUTPUT0 and reports
  BATCH_SIZE and REPLICA (which server answered).
- `IrisModel` (`iris`): a numpy MLP classifier, FEATURES FP32 [4] -> PROBABILITIES FP32 [3],
  LABEL BYTES [1].

Making ONE replica slower than the others while all share a model name: every server has a
slow factor that the simulated model multiplies its service time by. Pass `slow_factor=` to
`TritonServer` (or `slow_factors={index: factor}` to `TritonPool`, or `pool.add(slow_factor=)`),
or change it while the server runs with `TritonServer.set_slow_factor`. Mechanism: the harness
writes `{"slow_factor": f}` to a per-server control file and points the model at it with the
environment variable `TRITONSCALE_SIM_CONTROL`; the model re-reads the file when it changes.
Outside this harness (e.g. a process-backed pod) set `TRITONSCALE_SLOW_FACTOR=<f>` in the
server's environment instead (`env=` here); a control file, when present, wins over it.
The same repository directory can be shared by all servers.

This module talks to Triton over plain HTTP (urllib) only; client libraries live in
`tritonscale.clients`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from tritonscale.ports import GRPC_PORT, HTTP_PORT, METRICS_PORT
from tritonscale_sandbox.net import wait_for_port
from tritonscale_sandbox.paths import cache_root
from tritonscale_sandbox.process import LocalProcess, spawn, wait_until

TRITON_VERSION = "2.51.0"
"""The tritonserver version inside nvidia-pytriton 0.7.0."""
INSTALL_LAYOUT = 1
"""Layout revision of the install directory; equals LAYOUT in scripts/install-triton.sh."""

SIMULATED_MODEL = "simulated"
INSTANT_MODEL = "instant"
IRIS_MODEL = "iris"


MODELS_DIR = Path(__file__).with_name("models")
"""Package data: model templates copied by `model_repository`."""

_SCRUBBED_ENV = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PYTHONUSERBASE")


# --------------------------------------------------------------------------------------------
# Installation


@dataclass(frozen=True)
class TritonInstall:
    """A usable tritonserver installation (see scripts/install-triton.sh for the layout)."""

    root: Path
    server_binary: Path
    """`tritonserver` executable."""
    backend_dir: Path
    """Value for `--backend-directory`; holds `python/` (backend + Python 3.11 stub)."""
    lib_dir: Path
    """The wheel's shared libraries; goes on LD_LIBRARY_PATH."""

    @classmethod
    def at(cls, root: Path) -> TritonInstall:
        """The installation in `root` (an install directory made by scripts/install-triton.sh)."""
        return cls(
            root=root,
            server_binary=root / "wheel" / "pytriton" / "tritonserver" / "bin" / "tritonserver",
            backend_dir=root / "backends",
            lib_dir=root / "wheel" / "nvidia_pytriton.libs",
        )

    def is_complete(self) -> bool:
        """True when the install script finished here (its COMPLETE marker exists)."""
        return (self.root / "COMPLETE").is_file() and self.server_binary.is_file()

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for a tritonserver process: `base` (default os.environ) with the wheel's
        libraries first on LD_LIBRARY_PATH and without variables that would make the Python
        stub (Debian's Python 3.11) import from a virtualenv or user site."""
        env = dict(os.environ if base is None else base)
        for name in _SCRUBBED_ENV:
            env.pop(name, None)
        env["PYTHONNOUSERSITE"] = "1"
        previous = env.get("LD_LIBRARY_PATH")
        env["LD_LIBRARY_PATH"] = str(self.lib_dir) + (f":{previous}" if previous else "")
        return env


def install_dir() -> Path:
    """Where scripts/install-triton.sh installs: `<cache_root>/triton-2.51.0-<layout>`."""
    return cache_root() / f"triton-{TRITON_VERSION}-{INSTALL_LAYOUT}"


def install_script() -> Path:
    """scripts/install-triton.sh of the source tree this package runs from.

    `TRITONSCALE_INSTALL_TRITON` overrides the location (for installed, non-editable packages).
    """
    configured = os.environ.get("TRITONSCALE_INSTALL_TRITON")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "scripts" / "install-triton.sh"


_install_lock = threading.Lock()


def install_triton(*, timeout_s: float = 600.0, show_progress: bool = False) -> TritonInstall:
    """Return the Triton installation, running scripts/install-triton.sh first if needed.

    Fast path (installed already): no subprocess. Otherwise the script downloads the wheel
    (about 55 MB, via pip), assembles the backend directory, smoke-tests a server and prints
    the install directory as its last stdout line. Raises RuntimeError with the script's output
    when it fails; `show_progress` lets its progress (stderr) through to the terminal instead.
    """
    with _install_lock:
        install = TritonInstall.at(install_dir())
        if install.is_complete():
            return install
        script = install_script()
        if not script.is_file():
            raise RuntimeError(f"Triton is not installed in {install.root} and {script} does not exist")
        result = subprocess.run(
            ["bash", str(script)],
            stdout=subprocess.PIPE,
            stderr=None if show_progress else subprocess.PIPE,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        lines = result.stdout.strip().splitlines()
        if result.returncode != 0 or not lines:
            raise RuntimeError(
                f"{script} failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr or ''}".rstrip()
            )
        install = TritonInstall.at(Path(lines[-1]))
        if not install.is_complete():
            raise RuntimeError(f"{script} reported {install.root}, which holds no complete install")
        return install


# --------------------------------------------------------------------------------------------
# Model repository


@dataclass(frozen=True)
class SimulatedModel:
    """A Python-backend model whose batch takes `base_ms + per_item_ms * items` milliseconds
    (times the server's slow factor). INPUT0 FP32 [-1] -> OUTPUT0 (echo), BATCH_SIZE INT32 [1],
    REPLICA BYTES [1]. With one instance, batches run one at a time, like on one accelerator."""

    name: str = SIMULATED_MODEL
    base_ms: float = 20.0
    per_item_ms: float = 1.0
    max_batch_size: int = 32
    max_queue_delay_us: int = 2000
    """Dynamic batcher: how long a request may wait for others to join its batch."""
    instance_count: int = 1
    jitter: float = 0.0
    """Sigma of a mean-one log-normal factor on each batch's service time (0: none)."""
    seed: int = 0
    load_s: float = 0.0
    """Seconds the model takes to load: how long a new replica takes to become ready."""

    template = "simulated"

    def substitutions(self) -> dict[str, str]:
        """Values for config.pbtxt.tmpl."""
        return {
            "name": self.name,
            "max_batch_size": str(self.max_batch_size),
            "max_queue_delay_us": str(self.max_queue_delay_us),
            "instance_count": str(self.instance_count),
            "base_ms": repr(float(self.base_ms)),
            "per_item_ms": repr(float(self.per_item_ms)),
            "jitter": repr(float(self.jitter)),
            "seed": str(self.seed),
            "load_s": repr(float(self.load_s)),
        }


def instant_model(name: str = INSTANT_MODEL) -> SimulatedModel:
    """The simulated model with no service time: measures a client's or router's own ceiling."""
    return SimulatedModel(name=name, base_ms=0.0, per_item_ms=0.0, max_queue_delay_us=0, instance_count=1)


@dataclass(frozen=True)
class IrisModel:
    """A numpy MLP classifier with fixed weights (see models/iris/train.py).
    FEATURES FP32 [4] (sepal length/width, petal length/width in cm) -> PROBABILITIES FP32 [3]
    (setosa, versicolor, virginica) and LABEL BYTES [1]."""

    name: str = IRIS_MODEL
    max_batch_size: int = 32
    max_queue_delay_us: int = 500
    instance_count: int = 1

    template = "iris"

    def substitutions(self) -> dict[str, str]:
        """Values for config.pbtxt.tmpl."""
        return {
            "name": self.name,
            "max_batch_size": str(self.max_batch_size),
            "max_queue_delay_us": str(self.max_queue_delay_us),
            "instance_count": str(self.instance_count),
        }


ModelSpec = SimulatedModel | IrisModel


def default_models() -> tuple[ModelSpec, ...]:
    """`simulated` (20 ms + 1 ms/item), `instant` (0 ms) and `iris`."""
    return (SimulatedModel(), instant_model(), IrisModel())


def model_repository(dest: Path, models: Iterable[ModelSpec] | None = None, *, clean: bool = True) -> Path:
    """Materialise a Triton model repository in `dest` and return `dest`.

    `models` defaults to `default_models()`; pass e.g. `[SimulatedModel(base_ms=50,
    per_item_ms=5)]` to configure service times. Each model becomes `dest/<name>/config.pbtxt`
    and `dest/<name>/1/` (model.py plus data files). `clean` removes existing model directories
    of the same names first. For a per-server configuration, make one repository per server;
    to slow one server down, prefer its slow factor (see the module docstring).
    """
    specs = list(default_models() if models is None else models)
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique, got {names}")
    dest.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        source = MODELS_DIR / spec.template
        target = dest / spec.name
        if clean and target.exists():
            shutil.rmtree(target)
        version = target / "1"
        version.mkdir(parents=True, exist_ok=True)
        template = string.Template((source / "config.pbtxt.tmpl").read_text(encoding="utf-8"))
        (target / "config.pbtxt").write_text(template.substitute(spec.substitutions()), encoding="utf-8")
        for item in sorted(source.iterdir()):
            if item.is_file() and item.name not in {"config.pbtxt.tmpl", "train.py"}:
                shutil.copy2(item, version / item.name)
    return dest


# --------------------------------------------------------------------------------------------
# HTTP helpers (urllib; no client library)


def http_get(url: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    """GET `url`; return (status, body). HTTP errors are returned, connection errors raise OSError."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())


def _ok(url: str, timeout_s: float = 1.0) -> bool:
    try:
        return http_get(url, timeout_s)[0] == 200
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# One server

_start_counter = 0
_counter_lock = threading.Lock()


def _next_start_id() -> int:
    global _start_counter  # noqa: PLW0603 - process-wide counter for unique shared-memory names
    with _counter_lock:
        _start_counter += 1
        return _start_counter


class TritonServerError(RuntimeError):
    """A server failed to start or become ready; the message carries the log's tail."""


class TritonServer(LocalProcess):
    """One tritonserver process on its own loopback address.

    Started with `--model-control-mode none` (all models in the repository load at start),
    `--strict-readiness true` (ready only when every model is), `--log-verbose 0`,
    `--metrics-config summary_latencies=true` (latency quantiles on the metrics endpoint), and a
    per-start python-backend shared-memory prefix (servers on one machine must not share one).
    `model_repository` may be one path or several (repeated `--model-repository`).
    `extra_args` are appended to the command line. `exit_timeout_s` is tritonserver's
    `--exit-timeout-secs`: how long SIGTERM waits for open connections and in-flight requests.

    The process runs in its own session, so `kill()` takes its Python-backend stub processes
    down with it, like a container dying. stdout/stderr go to `log_path` (appended; each start
    writes a header line).
    """

    def __init__(
        self,
        model_repository: Path | Sequence[Path],
        *,
        host: str = "127.0.0.1",
        http_port: int = HTTP_PORT,
        grpc_port: int = GRPC_PORT,
        metrics_port: int = METRICS_PORT,
        name: str | None = None,
        install: TritonInstall | None = None,
        log_dir: Path | None = None,
        models: Sequence[str] = (),
        slow_factor: float | None = None,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        exit_timeout_s: int = 3,
        summary_latencies: bool = True,
    ) -> None:
        self.model_repositories = (
            [model_repository] if isinstance(model_repository, Path) else list(model_repository)
        )
        self.host = host
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.metrics_port = metrics_port
        self.name = name or host
        self._install = install
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="tritonscale-triton-"))
        self.models = tuple(models)
        """Models `wait_ready` checks individually (strict readiness covers all loaded ones)."""
        self.env = dict(env or {})
        self.extra_args = list(extra_args)
        self.exit_timeout_s = exit_timeout_s
        # Latency quantiles on the metrics endpoint; off only to measure what they cost
        # (tritonserver keeps the first value of a repeated --metrics-config key).
        self.summary_latencies = summary_latencies
        self._slow_factor = slow_factor
        self._process: subprocess.Popen[bytes] | None = None
        self._shm_prefix = ""
        self.starts = 0
        safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in self.name)
        self.log_path = self.log_dir / f"tritonserver-{safe}.log"
        self.control_path = self.log_dir / f"tritonserver-{safe}.control.json"

    # ---- addresses

    @property
    def http_endpoint(self) -> str:
        """`host:8000`, the form tritonclient.http expects."""
        return f"{self.host}:{self.http_port}"

    @property
    def http_url(self) -> str:
        """`http://host:8000`."""
        return f"http://{self.http_endpoint}"

    @property
    def grpc_url(self) -> str:
        """`host:8001`, the form tritonclient.grpc expects."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        """`http://host:8002/metrics` (Prometheus text format)."""
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def install(self) -> TritonInstall:
        """The installation used (installed on first use when none was given)."""
        if self._install is None:
            self._install = install_triton()
        return self._install

    # ---- process state

    @property
    def slow_factor(self) -> float | None:
        """Multiplier on the simulated models' service time on this server, as set through the
        harness (None: not set; the model then uses `TRITONSCALE_SLOW_FACTOR` from `env`, else 1)."""
        return self._slow_factor

    def set_slow_factor(self, factor: float | None) -> None:
        """Change the slow factor (None: back to the environment's); a running server's
        simulated models pick the change up at their next batch."""
        if factor is not None and factor <= 0:
            raise ValueError(f"slow factor must be positive, got {factor}")
        self._slow_factor = factor
        self._write_control()

    def _write_control(self) -> None:
        if self._slow_factor is None:
            self.control_path.unlink(missing_ok=True)
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.control_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"slow_factor": self._slow_factor}) + "\n", encoding="utf-8")
        tmp.replace(self.control_path)

    def command(self) -> list[str]:
        """The tritonserver command line (shared-memory prefix of the current start)."""
        install = self.install
        args = [str(install.server_binary)]
        args += [f"--model-repository={repo}" for repo in self.model_repositories]
        args += [
            f"--backend-directory={install.backend_dir}",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
            "--model-control-mode=none",
            "--strict-readiness=true",
            "--log-verbose=0",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            f"--metrics-config=summary_latencies={str(self.summary_latencies).lower()}",
            "--allow-gpu-metrics=false",
        ]
        return args + self.extra_args

    def start(self) -> None:
        """Start the process (non-blocking; see `wait_ready`). Raises TritonServerError when the
        server is running already or one of its ports is taken on its address."""
        if self.is_running:
            raise TritonServerError(f"{self.name} is running already (pid {self.pid})")
        for port in (self.http_port, self.grpc_port, self.metrics_port):
            with contextlib.suppress(OSError), socket.create_connection((self.host, port), timeout=0.2):
                raise TritonServerError(f"{self.host}:{port} is in use by another process")
        self._cleanup_shm()
        self.starts += 1
        safe_host = self.host.replace(".", "_")
        self._shm_prefix = f"tritonscale_{os.getpid()}_{_next_start_id()}_{safe_host}_"
        self._write_control()
        env = self.install.environment()
        env.update(
            {
                "TRITONSCALE_REPLICA": self.name,
                "TRITONSCALE_SIM_CONTROL": str(self.control_path),
            }
        )
        env.update(self.env)
        command = self.command()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        self._process = spawn(
            command,
            self.log_path,
            env=env,
            banner=f"==== tritonscale: start #{self.starts} at {stamp}: {' '.join(command)}",
        )

    def is_ready(self) -> bool:
        """`GET /v2/health/ready` answers 200 (with strict readiness: every model is ready)."""
        return _ok(f"{self.http_url}/v2/health/ready")

    def is_model_ready(self, model: str) -> bool:
        """`GET /v2/models/<model>/ready` answers 200."""
        return _ok(f"{self.http_url}/v2/models/{model}/ready")

    def wait_ready(self, timeout_s: float = 60.0, models: Sequence[str] | None = None) -> float:
        """Block until the server, the given models (default: `self.models`) and the metrics
        port are ready; return the seconds waited. Raises TritonServerError (with the log's
        tail) when the process exits or `timeout_s` passes."""
        started = time.monotonic()
        deadline = started + timeout_s
        wanted = self.models if models is None else tuple(models)
        if self._process is None:
            raise TritonServerError(f"{self.name} was not started")
        wait_until(
            lambda: self.is_ready() and all(self.is_model_ready(m) for m in wanted),
            process=self._process,
            log_path=self.log_path,
            what=f"tritonserver {self.name}",
            timeout_s=timeout_s,
            error=TritonServerError,
        )
        # Metrics start after HTTP; gRPC before it.
        wait_for_port(self.host, self.metrics_port, max(1.0, deadline - time.monotonic()))
        return time.monotonic() - started

    def stop(self, timeout_s: float | None = None) -> int | None:
        """Graceful stop: SIGTERM (tritonserver waits up to `exit_timeout_s` for open connections
        and in-flight requests, then unloads its models: 2-4 s with Python-backend models), then
        SIGKILL to its whole process group after `timeout_s` (default exit_timeout_s + 10).
        Returns the exit code (None if it was never started)."""
        process = self._process
        if process is None:
            return None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            self._wait_exited(self.exit_timeout_s + 10 if timeout_s is None else timeout_s)
        self._killpg()  # after a timeout, or stub processes left behind
        process.wait()
        self._wait_group_gone()
        self._cleanup_shm()
        return process.returncode

    def kill(self) -> None:
        """Abrupt failure: SIGKILL the server and its stub processes at once (no draining);
        its address then refuses connections."""
        process = self._process
        if process is None:
            return
        self._killpg()
        process.wait()
        self._wait_group_gone()
        self._cleanup_shm()

    def restart(self, timeout_s: float = 60.0) -> float:
        """Stop (if running), start and wait until ready; return the seconds to ready."""
        self.stop()
        self.start()
        return self.wait_ready(timeout_s)

    def process_ids(self) -> list[int]:
        """Live processes of this server: tritonserver and its Python-backend stubs (they share
        the process group that `start` created)."""
        process = self._process
        if process is None:
            return []
        pids = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                except (OSError, IndexError):
                    continue
                if int(fields[2]) == process.pid and fields[0] != "Z":
                    pids.append(int(proc.name))
        return pids

    def _wait_exited(self, timeout_s: float) -> bool:
        """Wait for the server to exit WITHOUT reaping it, so its pid (= its process group id)
        cannot be reused before `_killpg` runs. True when it exited."""
        process = self._process
        assert process is not None
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                    return True
            except ChildProcessError:  # reaped already
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def _wait_group_gone(self, timeout_s: float = 5.0) -> None:
        """Wait until no process of the group is alive (SIGKILL is delivered asynchronously)."""
        deadline = time.monotonic() + timeout_s
        while self.process_ids() and time.monotonic() < deadline:
            time.sleep(0.02)

    def _killpg(self) -> None:
        """SIGKILL the server's process group (its pid), but only while the group provably is
        ours: the leader is not reaped yet (alive or zombie), or members are still alive."""
        process = self._process
        if process is None:
            return
        if process.returncode is None or self.process_ids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)

    def _cleanup_shm(self) -> None:
        if self._shm_prefix:
            for path in Path("/dev/shm").glob(f"{self._shm_prefix}*"):
                with contextlib.suppress(OSError):
                    path.unlink()

    # ---- observation (plain HTTP)

    def metrics_text(self) -> str:
        """The Prometheus text of the metrics endpoint."""
        status, body = http_get(self.metrics_url)
        if status != 200:
            raise TritonServerError(f"{self.metrics_url} answered {status}")
        return body.decode()

    def model_stats(self, model: str) -> dict[str, Any]:
        """`GET /v2/models/<model>/stats` (cumulative counts and nanoseconds, batch statistics)."""
        status, body = http_get(f"{self.http_url}/v2/models/{model}/stats")
        if status != 200:
            raise TritonServerError(f"stats of {model} on {self.name}: HTTP {status}: {body.decode()}")
        document: dict[str, Any] = json.loads(body)
        return document

    def rss_bytes(self) -> int:
        """Resident memory of the server and its stub processes, in bytes."""
        total = 0
        for pid in self.process_ids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except (OSError, ValueError, IndexError):
                continue
        return total

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.is_running else "stopped"
        return f"TritonServer({self.name!r}, {self.http_endpoint}, {state})"


# --------------------------------------------------------------------------------------------
# A pool of servers


def free_loopback_block(size: int, *, low: int = 200, high: int = 254) -> str:
    """A random base address `127.<a>.<b>.1` (a in [low, high]) such that nothing listens on
    the standard Triton ports of `size` consecutive addresses from it. For test sessions that
    run side by side."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(50):
        base = ipaddress.IPv4Address(f"127.{rng.randint(low, high)}.{rng.randint(0, 255)}.1")
        hosts = [str(base + i) for i in range(size)]
        if not any(_listening(h, p) for h in hosts for p in (HTTP_PORT, GRPC_PORT, METRICS_PORT)):
            return str(base)
    raise RuntimeError("found no free loopback block")


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class Companion:
    """A tritonserver every replica of a pool runs beside its own, on the same address and its
    own ports: a variant's process in the same pod (render.variants)."""

    name: str
    model_repository: Path
    http_port: int
    grpc_port: int
    metrics_port: int


class ReplicaServer(TritonServer):
    """A replica's tritonserver with its companions: they start, stop and die together, and
    share one accelerator (the simulated model's lock, `TRITONSCALE_ACCELERATOR_LOCK`)."""

    def __init__(self, *args: Any, companions: Sequence[Companion], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env["TRITONSCALE_ACCELERATOR_LOCK"] = str(self.log_dir / f"accelerator-{self.host}.lock")
        self.companions = [
            TritonServer(
                companion.model_repository,
                host=self.host,
                http_port=companion.http_port,
                grpc_port=companion.grpc_port,
                metrics_port=companion.metrics_port,
                name=f"{self.name}-{companion.name}",
                install=self._install,
                log_dir=self.log_dir,
                models=self.models,
                env=self.env,
                extra_args=self.extra_args,
                exit_timeout_s=self.exit_timeout_s,
            )
            for companion in companions
        ]

    def start(self) -> None:
        super().start()
        for companion in self.companions:
            companion.start()

    def is_ready(self) -> bool:
        return super().is_ready() and all(companion.is_ready() for companion in self.companions)

    def wait_ready(self, timeout_s: float = 60.0, models: Sequence[str] | None = None) -> float:
        deadline = time.monotonic() + timeout_s
        waited = super().wait_ready(timeout_s, models)
        for companion in self.companions:
            companion.wait_ready(max(1.0, deadline - time.monotonic()), models)
        return waited

    def stop(self, timeout_s: float | None = None) -> int | None:
        for companion in self.companions:
            companion.stop(timeout_s)
        return super().stop(timeout_s)

    def kill(self) -> None:
        for companion in self.companions:
            companion.kill()
        super().kill()


@dataclass
class _PoolDefaults:
    install: TritonInstall | None
    log_dir: Path
    models: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    extra_args: tuple[str, ...] = ()
    exit_timeout_s: int = 3
    companions: tuple[Companion, ...] = ()


class TritonPool:
    """N tritonservers on consecutive loopback addresses, started in parallel.

    Server `i` of the initial pool listens on `base_address + i` (default: a random free block,
    see `free_loopback_block`; pass e.g. "127.0.1.1" for fixed addresses). `add()` takes the
    next address never used by this pool (like a new pod IP); `restart(i)` keeps the address.
    Every server gets `model_repository` unless `add()` is given another; `slow_factors`
    maps initial indexes to slow factors. Logs: `log_dir/tritonserver-<address>.log`.

    Used as a context manager it starts and waits for all servers on entry and kills all on
    exit (also when the body raises): nothing is left to drain then, and SIGKILL is instant.
    """

    def __init__(
        self,
        size: int,
        model_repository: Path | Sequence[Path],
        *,
        base_address: str | None = None,
        install: TritonInstall | None = None,
        log_dir: Path | None = None,
        models: Sequence[str] = (),
        slow_factors: Mapping[int, float] | None = None,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        exit_timeout_s: int = 3,
        ready_timeout_s: float = 90.0,
        companions: Sequence[Companion] = (),
    ) -> None:
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        self.model_repository = model_repository
        base = ipaddress.IPv4Address(base_address or free_loopback_block(max(size, 1) + 8))
        if base not in ipaddress.IPv4Network("127.0.0.0/8"):
            raise ValueError(f"base_address must be a loopback address, got {base}")
        self.base_address = base
        self.ready_timeout_s = ready_timeout_s
        self._defaults = _PoolDefaults(
            install=install,
            log_dir=log_dir or Path(tempfile.mkdtemp(prefix="tritonscale-pool-")),
            models=tuple(models),
            env=dict(env or {}),
            extra_args=tuple(extra_args),
            exit_timeout_s=exit_timeout_s,
            companions=tuple(companions),
        )
        self._next_offset = 0
        self._size = size
        self._slow_factors = dict(slow_factors or {})
        self.servers: list[TritonServer] = []

    @property
    def log_dir(self) -> Path:
        """Directory of the servers' logs and control files."""
        return self._defaults.log_dir

    @property
    def addresses(self) -> list[str]:
        """Loopback addresses of the pool's servers, in index order."""
        return [s.host for s in self.servers]

    @property
    def http_endpoints(self) -> list[str]:
        """`host:8000` of every server."""
        return [s.http_endpoint for s in self.servers]

    def _new_server(
        self, model_repository: Path | Sequence[Path] | None, slow_factor: float | None
    ) -> TritonServer:
        host = self.base_address + self._next_offset
        if host not in ipaddress.IPv4Network("127.0.0.0/8"):
            raise RuntimeError(f"address {host} is outside 127.0.0.0/8")
        self._next_offset += 1
        defaults = self._defaults
        if defaults.install is None:
            defaults.install = install_triton()
        options: dict[str, Any] = {
            "host": str(host),
            "install": defaults.install,
            "log_dir": defaults.log_dir,
            "models": defaults.models,
            "slow_factor": slow_factor,
            "env": defaults.env,
            "extra_args": defaults.extra_args,
            "exit_timeout_s": defaults.exit_timeout_s,
        }
        repository = self.model_repository if model_repository is None else model_repository
        if defaults.companions:
            return ReplicaServer(repository, companions=defaults.companions, **options)
        return TritonServer(repository, **options)

    def start(self) -> float:
        """Start the initial servers in parallel and wait until all are ready; return seconds.
        On failure every server is stopped and TritonServerError raised."""
        started = time.monotonic()
        fresh = [self._new_server(None, self._slow_factors.get(i)) for i in range(self._size)]
        self.servers.extend(fresh)
        try:
            for server in fresh:
                server.start()
            for server in fresh:
                server.wait_ready(max(1.0, started + self.ready_timeout_s - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        return time.monotonic() - started

    def add(
        self,
        *,
        slow_factor: float | None = None,
        model_repository: Path | Sequence[Path] | None = None,
        wait: bool = True,
    ) -> TritonServer:
        """Start one more server on the next unused address (waits until ready by default)."""
        server = self._new_server(model_repository, slow_factor)
        self.servers.append(server)
        server.start()
        if wait:
            try:
                server.wait_ready(self.ready_timeout_s)
            except BaseException:
                server.stop()
                self.servers.remove(server)
                raise
        return server

    def remove(self, index: int, *, graceful: bool = True) -> TritonServer:
        """Stop server `index` (graceful: SIGTERM and drain, a few seconds; else SIGKILL) and
        drop it from the pool (later indexes shift)."""
        server = self.servers.pop(index)
        if graceful:
            server.stop()
        else:
            server.kill()
        return server

    def kill(self, index: int) -> None:
        """SIGKILL server `index` (it stays in the pool, stopped; see `restart`)."""
        self.servers[index].kill()

    def restart(self, index: int, *, wait: bool = True) -> float:
        """Stop server `index` if running and start it again on the same address; by default
        wait until ready. Returns the seconds to ready (0 when not waiting)."""
        server = self.servers[index]
        server.stop()
        server.start()
        return server.wait_ready(self.ready_timeout_s) if wait else 0.0

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Wait until every running server is ready."""
        deadline = time.monotonic() + (self.ready_timeout_s if timeout_s is None else timeout_s)
        for server in self.servers:
            if server.is_running:
                server.wait_ready(max(1.0, deadline - time.monotonic()))

    def stop(self, *, graceful: bool = True) -> None:
        """Stop every server, in parallel. Graceful (SIGTERM) takes 2-4 s: tritonserver drains
        and unloads Python-backend models, polling once a second; otherwise SIGKILL, at once."""
        threads = [threading.Thread(target=s.stop if graceful else s.kill, daemon=True) for s in self.servers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def __len__(self) -> int:
        return len(self.servers)

    def __getitem__(self, index: int) -> TritonServer:
        return self.servers[index]

    def __iter__(self) -> Iterator[TritonServer]:
        return iter(list(self.servers))

    def __enter__(self) -> TritonPool:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(graceful=False)
