"""A real Prometheus (Debian's binary) scraping local processes, for tests and the sandbox."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from tritonscale_sandbox.net import free_port
from tritonscale_sandbox.process import LocalProcess, die_with_parent, spawn, wait_until
from tritonscale_sandbox.process import stop as stop_process


def launch_prometheus(
    binary: str, config: Path, data_dir: Path, host: str, port: int, log_path: Path, timeout_s: float
) -> subprocess.Popen[bytes]:
    """Start Prometheus with `config` (reloadable through /-/reload) and wait until /-/ready;
    on failure it is stopped and the error carries its log's tail."""
    if not Path(binary).exists():
        raise FileNotFoundError(f"{binary} not found: run scripts/install-system-deps.sh")
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address={host}:{port}",
        "--storage.tsdb.retention.time=1h",
        "--web.enable-lifecycle",
    ]
    process = spawn(command, log_path, banner=f"$ {' '.join(command)}", preexec_fn=die_with_parent)

    def ready() -> bool:
        with urllib.request.urlopen(f"http://{host}:{port}/-/ready", timeout=1) as response:
            return bool(response.status == 200)

    try:
        wait_until(
            ready, process=process, log_path=log_path, what="prometheus", timeout_s=timeout_s, interval_s=0.2
        )
    except BaseException:
        stop_process(process, 10.0)
        raise
    return process


@dataclass(frozen=True)
class ScrapeTarget:
    """One metrics endpoint (host:port) and the labels its series get (e.g. namespace, pod)."""

    address: str
    labels: dict[str, str]


def prometheus_binary() -> str:
    """The prometheus that scripts/install-system-deps.sh installs (Debian's)."""
    return shutil.which("prometheus") or "/usr/bin/prometheus"


class LocalPrometheus(LocalProcess):
    """Prometheus on a loopback port, scraping targets from a file that can change while it runs."""

    def __init__(
        self,
        targets: list[ScrapeTarget],
        *,
        scrape_interval_s: float = 2.0,
        work_dir: Path | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        binary: str | None = None,
        rule_files: Sequence[Path] = (),
        honor_labels: bool = False,
    ) -> None:
        """`rule_files` are evaluated every scrape interval; with `honor_labels` a scraped
        series keeps its own `namespace` (as the chart's ServiceMonitor has it for the operator,
        whose series name the InferenceService's namespace) rather than the target's."""
        self.host = host
        self.rule_files = tuple(rule_files)
        self.honor_labels = honor_labels
        self.port = port or free_port(host)
        self.scrape_interval_s = scrape_interval_s
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="tritonscale-prometheus-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.binary = binary or prometheus_binary()
        self.targets_file = self.work_dir / "targets.json"
        self.log_path = self.work_dir / "prometheus.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.set_targets(targets)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def set_targets(self, targets: list[ScrapeTarget]) -> None:
        """Rewrite the file_sd targets; Prometheus picks the change up within seconds."""
        groups = [{"targets": [t.address], "labels": t.labels} for t in targets]
        temporary = self.targets_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(groups))
        temporary.replace(self.targets_file)

    def _config(self) -> Path:
        interval = f"{self.scrape_interval_s:g}s"
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": [
                {
                    "job_name": "triton",
                    "scrape_interval": interval,
                    "scrape_timeout": interval,
                    "honor_labels": self.honor_labels,
                    "file_sd_configs": [{"files": [str(self.targets_file)], "refresh_interval": "1s"}],
                }
            ],
        }
        if self.rule_files:
            config["rule_files"] = [str(path) for path in self.rule_files]
        path = self.work_dir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        return path

    def start(self, timeout_s: float = 30.0) -> LocalPrometheus:
        self._process = launch_prometheus(
            self.binary,
            self._config(),
            self.work_dir / "data",
            self.host,
            self.port,
            self.log_path,
            timeout_s,
        )
        return self

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process, 10.0)

    def query(self, promql: str) -> list[dict[str, object]]:
        """An instant query's result vector (for tests and checks)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as response:
            payload = json.loads(response.read())
        result: list[dict[str, object]] = payload["data"]["result"]
        return result
