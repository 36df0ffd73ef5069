"""Fixtures for end-to-end tests against a real control plane (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler) with kwok fake nodes.

The binaries are built (or found up to date, in seconds) by ``scripts/build-testenv.sh``.
That runs once per session, from a hook after collection and only when e2e tests were
selected, so a cold build (tens of minutes) is not charged to any test's timeout; its
progress is echoed to the terminal. A failed build or a cluster that does not come up fails
the tests loudly: nothing is skipped.

The cluster's logs are kept (and their folder printed) when any test of the session failed.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Generator
from pathlib import Path

import pytest

from tritonscale.sandbox.cluster import Cluster

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-testenv.sh"
BUILD_TIMEOUT_S = 80 * 60

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
