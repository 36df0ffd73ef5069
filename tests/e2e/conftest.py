"""Fixtures for end-to-end tests against a real control plane (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler) with kwok fake nodes.

The binaries are built (or found up to date, in seconds) by ``scripts/build-testenv.sh``.
That runs once per session, from a hook after collection and only when e2e tests were
selected, so a cold build (tens of minutes) is not charged to any test's timeout; its
progress is echoed to the terminal. A failed build or a cluster that does not come up fails
the tests loudly: nothing is skipped.

The operator under test is installed the way users install it: ``helm install`` of
``charts/tritonscale`` (CRD, ServiceAccount, ClusterRole and binding), then run in-process, in a
thread of the test process, with a kubeconfig carrying the chart's ServiceAccount token, so the
chart's RBAC is exactly what the operator gets. Its log is ``<cluster logs>/operator.log``.

The cluster's logs are kept (and their folder printed) when any test of the session failed.
"""

from __future__ import annotations

import logging
import re
import subprocess
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tritonscale.app import run_operator
from tritonscale.config import OperatorConfig
from tritonscale_sandbox.cluster import Cluster, ClusterError

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-testenv.sh"
BUILD_TIMEOUT_S = 80 * 60
CHART = REPO / "charts" / "tritonscale"
RELEASE = "tritonscale"
OPERATOR_NAMESPACE = "tritonscale-system"
# The chart names its ServiceAccount after the release's full name (release "tritonscale").
OPERATOR_SERVICE_ACCOUNT = "tritonscale"
OPERATOR_START_TIMEOUT_S = 60.0
OPERATOR_STOP_TIMEOUT_S = 60.0

_bin_dir_key = pytest.StashKey[Path]()
_build_error_key = pytest.StashKey[str]()
_failed_key = pytest.StashKey[bool]()


def _build_testenv(config: pytest.Config) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")

    def say(line: str) -> None:
        if reporter is not None:
            reporter.write_line(line)

    say(f"e2e: preparing the Kubernetes test environment ({BUILD_SCRIPT.relative_to(REPO)})")
    started = time.monotonic()
    with subprocess.Popen(
        ["bash", str(BUILD_SCRIPT)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stderr is not None
        assert proc.stdout is not None
        stderr_lines: list[str] = []
        for line in proc.stderr:
            stderr_lines.append(line.rstrip())
            say(f"  {line.rstrip()}")
            if time.monotonic() - started > BUILD_TIMEOUT_S:
                proc.kill()
                break
        stdout = proc.stdout.read()
        returncode = proc.wait()
    lines = stdout.strip().splitlines()
    if returncode != 0 or not lines:
        tail = "\n".join(stderr_lines[-40:])
        config.stash[_build_error_key] = f"{BUILD_SCRIPT} exited {returncode}:\n{tail}"
        return
    config.stash[_bin_dir_key] = Path(lines[-1])


def pytest_collection_finish(session: pytest.Session) -> None:
    if any(item.get_closest_marker("e2e") for item in session.items):
        _build_testenv(session.config)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        item.config.stash[_failed_key] = True
    return report


@pytest.fixture(scope="session")
def testenv_bin(pytestconfig: pytest.Config) -> Path:
    """The folder with kube-apiserver, kubectl, etcd, kwok, helm, ... (see build-testenv.sh)."""
    if _build_error_key in pytestconfig.stash:
        pytest.fail(
            f"building the Kubernetes test environment failed: {pytestconfig.stash[_build_error_key]}"
        )
    if _bin_dir_key not in pytestconfig.stash:
        _build_testenv(pytestconfig)
        if _build_error_key in pytestconfig.stash:
            pytest.fail(
                f"building the Kubernetes test environment failed: {pytestconfig.stash[_build_error_key]}"
            )
    return pytestconfig.stash[_bin_dir_key]


@pytest.fixture(scope="session")
def cluster(
    testenv_bin: Path, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Generator[Cluster, None, None]:
    """One control plane with the default node pools, shared by the whole session."""
    workdir = tmp_path_factory.mktemp("cluster")
    started = time.monotonic()
    c = Cluster.start(workdir, testenv_bin)
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"e2e: cluster at {c.server} ready in {time.monotonic() - started:.1f}s (workdir {workdir})"
        )
    try:
        yield c
    finally:
        c.stop(keep_logs=pytestconfig.stash.get(_failed_key, False))


RESTRICTED = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}
"""Namespace labels: Pod Security `restricted`, enforced, warned and audited."""


@dataclass(frozen=True)
class ChartRelease:
    """The chart as installed by ``helm install``: where, and the identity it created."""

    name: str
    namespace: str
    service_account: str


@pytest.fixture(scope="session")
def chart_release(cluster: Cluster) -> ChartRelease:
    """``helm install`` of charts/tritonscale into tritonscale-system (CRD, RBAC, ServiceAccount).

    The chart's Deployment gets a kwok "pod" that runs nothing; what matters here is what the
    chart installs around it. The release namespace enforces Pod Security `restricted`, so the
    chart's own pod must pass it.
    """
    cluster.create_namespace(OPERATOR_NAMESPACE, labels=RESTRICTED)
    cluster.helm(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        OPERATOR_NAMESPACE,
        "--create-namespace",
        "--wait",
        "--timeout",
        "2m",
    )
    cluster.wait_for("crd/inferenceservices.tritonscale.io", "condition=Established", timeout_s=60)
    # Established comes before the storage answers lists (429 "storage is (re)initializing"),
    # which kopf would log as an error if the operator started in between.
    cluster.wait_until(
        lambda: cluster.kubectl("get", "inferenceservices", "-A", check=False).returncode == 0,
        "the InferenceService storage to answer lists",
    )
    return ChartRelease(RELEASE, OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT)


@pytest.fixture(scope="session")
def operator_kubeconfig(
    cluster: Cluster, chart_release: ChartRelease, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A kubeconfig with a token of the chart's ServiceAccount (the chart creates it)."""
    return cluster.service_account_kubeconfig(
        chart_release.namespace,
        chart_release.service_account,
        tmp_path_factory.mktemp("operator") / "operator.kubeconfig",
        create=False,
    )


class _RefFormatter(logging.Formatter):
    """Plain log lines, prefixed with the object kopf was handling (``[ns/name]``)."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, dict) and ref.get("name"):
            line = line.replace(" | ", f" | [{ref.get('namespace')}/{ref['name']}] ", 1)
        return line


class _Recorder(logging.Handler):
    """Keeps (namespace, name, message) of every log record about an object."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[str | None, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, dict) and ref.get("name"):
            self.records.append((ref.get("namespace"), ref["name"], record.getMessage()))


class OperatorThread:
    """The operator (``run_operator``, i.e. kopf with our handlers) in a thread of this process.

    ``start()`` returns once kopf reports ready and raises, quoting the log, when it does not
    come up; ``stop()`` asks kopf to stop and waits for the thread. Both may be called again
    (tests that interrupt the operator stop it and start it again).
    """

    def __init__(self, config: OperatorConfig, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self._thread: threading.Thread | None = None
        self._stop_flag = threading.Event()
        self._error: BaseException | None = None
        self._handler: logging.Handler | None = None
        self._recorder = _Recorder()
        self.starts = 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _attach_log(self) -> None:
        handler = logging.FileHandler(self.log_path)
        handler.setFormatter(_RefFormatter("%(asctime)s %(levelname)s %(name)s | %(message)s"))
        for name in ("kopf", "tritonscale"):
            logger = logging.getLogger(name)
            logger.setLevel(logging.INFO)
            logger.addHandler(handler)
            logger.addHandler(self._recorder)
        self._handler = handler

    def _detach_log(self) -> None:
        if self._handler is None:
            return
        for name in ("kopf", "tritonscale"):
            logging.getLogger(name).removeHandler(self._handler)
            logging.getLogger(name).removeHandler(self._recorder)
        self._handler.close()
        self._handler = None

    def count_messages(self, namespace: str, name: str, text: str) -> int:
        """How many log records about that object, over every run so far, contain `text`."""
        return sum(
            1
            for ns, n, message in list(self._recorder.records)
            if (ns, n) == (namespace, name) and text in message
        )

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as error:
            return f"(no operator log: {error})"

    def _run(self, ready_flag: threading.Event) -> None:
        try:
            run_operator(self.config, stop_flag=self._stop_flag, ready_flag=ready_flag)
        except BaseException as error:  # reported by start() and assert_healthy()
            self._error = error

    def start(self) -> None:
        if self.running:
            raise RuntimeError("the operator is already running")
        self._attach_log()
        self.starts += 1
        self._stop_flag = threading.Event()
        self._error = None
        ready_flag = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready_flag,), name=f"operator-{self.starts}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + OPERATOR_START_TIMEOUT_S
        while not ready_flag.wait(0.2):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ClusterError(
                    f"the operator did not become ready (error: {self._error!r}); "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop_flag.set()
        self._thread.join(OPERATOR_STOP_TIMEOUT_S)
        alive = self._thread.is_alive()
        self._thread = None
        self._detach_log()
        if alive:
            raise ClusterError(f"the operator did not stop within {OPERATOR_STOP_TIMEOUT_S:.0f}s")

    def assert_healthy(self) -> None:
        """Fail, quoting the log, if the operator thread died. (An AssertionError: a
        ClusterError raised inside Cluster.wait_until's predicate would be retried until the
        timeout, and a dead operator reported as a slow one.)"""
        if not self.running:
            raise AssertionError(
                f"the operator thread is not running (error: {self._error!r}); "
                f"last lines of {self.log_path}:\n{self.log_tail()}"
            )


@pytest.fixture(scope="session")
def operator(cluster: Cluster, operator_kubeconfig: Path) -> Generator[OperatorThread, None, None]:
    """The operator, cluster-wide as the chart runs it by default, with the chart's RBAC."""
    # kwok pods have made-up addresses: the autoscaler must not try to reach them.
    config = OperatorConfig(
        kubeconfig=str(operator_kubeconfig),
        metrics_port=0,
        health_port=0,
        read_triton_pods=False,
        read_routers=False,
    )
    runner = OperatorThread(config, cluster.logs_dir / "operator.log")
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()
    # After every test that used it, whatever the order they ran in.
    assert_log_clean(runner.log_path)


def assert_log_clean(log_path: Path) -> None:
    """Over an operator's whole log: the chart's RBAC never refused it (kopf's watches and
    patches included) and nothing was logged at ERROR or above."""
    lines = log_path.read_text(errors="replace").splitlines()
    assert lines, f"{log_path}: the operator logged nothing"
    # Only the message part: the timestamp's milliseconds may read 403 (CI failed on that once).
    # An RBAC refusal names the user ("... is forbidden: User ..."); kopf's own requests report
    # the status. Refusals by admission policies the tests set up on purpose are not RBAC's.
    messages = [line.split(" | ", 1)[-1] for line in lines]
    refused = [m for m in messages if re.search(r'forbidden: User "|\(403\)|403, message=', m)]
    assert not refused, f"{log_path}:\n" + "\n".join(refused[:20])
    errors = [line for line in lines if re.match(r"\S+ \S+ (ERROR|CRITICAL) ", line)]
    assert not errors, f"{log_path}:\n" + "\n".join(errors[:20])
