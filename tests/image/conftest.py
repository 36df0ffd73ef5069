"""Fixtures for the image tier: the operator image built by ``scripts/build-image.sh`` and unpacked.

The build runs once per session, from a hook after collection and only when image tests were
selected, so a cold build (a few minutes: Debian packages, the base root filesystem) is not
charged to any test's timeout; its progress is echoed to the terminal. It writes the OCI layout
and an oci-archive into a temporary folder, removed at the end of the session.

The tests never look at the build's working tree: the ``bundle`` fixture unpacks the image from
the OCI layout with ``umoci raw unpack`` into a fresh folder and asks umoci for the OCI runtime
configuration a container runtime would run (arguments, user, environment). Running it needs root
(chroot); a build or unpack that fails fails the tests loudly: nothing is skipped.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-image.sh"
BUILD_TIMEOUT_S = 30 * 60
UNPACK_TIMEOUT_S = 5 * 60


@dataclass(frozen=True)
class BuiltImage:
    """What one run of build-image.sh produced."""

    layout: Path
    archive: Path


@dataclass(frozen=True)
class Bundle:
    """The image unpacked: its root filesystem and the runtime configuration umoci derives."""

    rootfs: Path
    runtime_config: dict[str, Any]


# unshare's argv prefix for the commands run in the image (see test_image.run_in_image).
UNSHARE = ["unshare", "--mount", "--pid", "--fork", "--uts", "--"]


@functools.cache
def unshare_works() -> bool:
    """Whether this machine lets root make mount, PID and UTS namespaces (else: plain chroot)."""
    probe = subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=30, check=False)
    return probe.returncode == 0


_build_key = pytest.StashKey[BuiltImage]()
_build_error_key = pytest.StashKey[str]()
_workdir_key = pytest.StashKey[Path]()


def _say(config: pytest.Config, line: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    # Inside a fixture the output is captured; progress goes past the capture to the terminal.
    capture = config.pluginmanager.get_plugin("capturemanager")
    if capture is None:
        reporter.write_line(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)


def _build_image(config: pytest.Config) -> None:
    if os.geteuid() != 0:
        config.stash[_build_error_key] = "the image tier runs as root (mmdebstrap, chroot, umoci)"
        return
    workdir = Path(tempfile.mkdtemp(prefix="tritonscale-image-test-"))
    config.stash[_workdir_key] = workdir
    layout, archive = workdir / "layout", workdir / "image.oci.tar"
    _say(config, f"image: building the operator image ({BUILD_SCRIPT.relative_to(REPO)})")
    started = time.monotonic()
    lines: list[str] = []
    with subprocess.Popen(
        ["bash", str(BUILD_SCRIPT), "--output", str(layout), "--archive", str(archive)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            _say(config, f"  {line.rstrip()}")
            if time.monotonic() - started > BUILD_TIMEOUT_S:
                proc.kill()
                lines.append(f"(killed after {BUILD_TIMEOUT_S} s)")
                break
        returncode = proc.wait()
    if returncode != 0:
        tail = "\n".join(lines[-40:])
        config.stash[_build_error_key] = f"{BUILD_SCRIPT} exited {returncode}:\n{tail}"
        return
    _say(config, f"image: built in {time.monotonic() - started:.0f} s")
    config.stash[_build_key] = BuiltImage(layout, archive)


def pytest_collection_finish(session: pytest.Session) -> None:
    if any(item.get_closest_marker("image") for item in session.items):
        _build_image(session.config)


def pytest_sessionfinish(session: pytest.Session) -> None:
    workdir = session.config.stash.get(_workdir_key, None)
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def built_image(pytestconfig: pytest.Config) -> BuiltImage:
    """The OCI layout (and oci-archive) that build-image.sh wrote in this session."""
    if _build_key not in pytestconfig.stash and _build_error_key not in pytestconfig.stash:
        _build_image(pytestconfig)
    if _build_error_key in pytestconfig.stash:
        pytest.fail(f"building the operator image failed: {pytestconfig.stash[_build_error_key]}")
    return pytestconfig.stash[_build_key]


def image_ref(layout: Path) -> str:
    """``LAYOUT:TAG`` of the layout's one image."""
    index = json.loads((layout / "index.json").read_text())
    (manifest,) = index["manifests"]
    return f"{layout}:{manifest['annotations']['org.opencontainers.image.ref.name']}"


@pytest.fixture(scope="session")
def bundle(built_image: BuiltImage, pytestconfig: pytest.Config) -> Generator[Bundle, None, None]:
    """The image unpacked from its OCI layout into a fresh folder, with its runtime configuration."""
    workdir = Path(tempfile.mkdtemp(prefix="tritonscale-image-bundle-"))
    try:
        ref = image_ref(built_image.layout)
        rootfs, config_json = workdir / "rootfs", workdir / "config.json"
        started = time.monotonic()
        for argv in (
            ["umoci", "raw", "unpack", "--image", ref, str(rootfs)],
            ["umoci", "raw", "runtime-config", "--image", ref, "--rootfs", str(rootfs), str(config_json)],
        ):
            done = subprocess.run(argv, capture_output=True, text=True, timeout=UNPACK_TIMEOUT_S, check=False)
            if done.returncode != 0:
                pytest.fail(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr}")
        how = "unshare + chroot" if unshare_works() else "plain chroot (unshare refused)"
        _say(pytestconfig, f"image: unpacked {ref} in {time.monotonic() - started:.0f} s; runs under {how}")
        yield Bundle(rootfs, json.loads(config_json.read_text()))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
