"""The operator image, as built by ``scripts/build-image.sh``, unpacked from its OCI layout and run.

Each command runs in the unpacked root filesystem the way a container runtime would start it: the
runtime configuration's environment, working directory and user, in new mount, PID and UTS
namespaces, with the root file system read-only (as the chart's ``readOnlyRootFilesystem``), a
tmpfs on /tmp (the chart's emptyDir) and a minimal /dev. Where ``unshare`` is refused the command
runs under a plain ``chroot``.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.image.conftest import UNSHARE, BuiltImage, Bundle, unshare_works
from tritonscale import __version__

pytestmark = pytest.mark.image

VENV = "/opt/tritonscale"
ENTRYPOINT = [f"{VENV}/bin/tritonscale"]
IMAGE_UID = 65532
RUN_TIMEOUT_S = 120

# $1 is the root file system, the rest is chroot's command line.
_SANDBOX = """
set -e
root=$1; shift
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
mount -t proc proc "$root/proc"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
mount -t tmpfs -o mode=755 tmpfs "$root/dev"
for node in null zero full random urandom tty; do
  touch "$root/dev/$node"
  mount --bind "/dev/$node" "$root/dev/$node"
done
hostname tritonscale
exec chroot "$@"
"""


def run_in_image(bundle: Bundle, args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``args`` in the image with the runtime configuration's environment and user."""
    process = bundle.runtime_config["process"]
    chroot_args = [
        f"--userspec={process['user']['uid']}:{process['user']['gid']}",
        str(bundle.rootfs),
        "/usr/bin/env",
        "-i",
        f"--chdir={process.get('cwd', '/')}",
        *process["env"],
        *args,
    ]
    if unshare_works():
        argv = [*UNSHARE, "sh", "-c", _SANDBOX, "sh", str(bundle.rootfs), *chroot_args]
    else:
        argv = ["chroot", *chroot_args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)


def _blob(layout: Path, digest: str) -> dict[str, Any]:
    algorithm, hex_digest = digest.split(":")
    loaded: dict[str, Any] = json.loads((layout / "blobs" / algorithm / hex_digest).read_text())
    return loaded


def _image_config(layout: Path) -> tuple[str, dict[str, Any]]:
    """The tag and the image configuration of the layout's one image."""
    (manifest_ref,) = json.loads((layout / "index.json").read_text())["manifests"]
    manifest = _blob(layout, manifest_ref["digest"])
    tag = manifest_ref["annotations"]["org.opencontainers.image.ref.name"]
    return tag, _blob(layout, manifest["config"]["digest"])


def test_image_config_starts_the_operator_as_65532(built_image: BuiltImage) -> None:
    tag, image = _image_config(built_image.layout)
    assert tag == __version__, "the default tag is the operator's version"
    config = image["config"]
    assert config["Entrypoint"] == ENTRYPOINT
    assert config["Cmd"] == ["run"]
    assert config["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert f"{VENV}/bin" in env["PATH"].split(":")
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "tritonscale"
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert image["os"] == "linux"


def test_runtime_config_runs_the_entrypoint_as_65532(bundle: Bundle) -> None:
    process = bundle.runtime_config["process"]
    assert process["args"] == [*ENTRYPOINT, "run"]
    assert (process["user"]["uid"], process["user"]["gid"]) == (IMAGE_UID, IMAGE_UID)


def test_entrypoint_runs_as_the_image_user(bundle: Bundle) -> None:
    done = run_in_image(bundle, [*bundle.runtime_config["process"]["args"], "--help"])
    assert done.returncode == 0, done.stderr
    assert "Run the operator" in done.stdout


def test_image_holds_this_checkouts_operator(bundle: Bundle) -> None:
    done = run_in_image(bundle, [*ENTRYPOINT, "version"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"tritonscale {__version__}"


def test_processes_run_as_the_unprivileged_user(bundle: Bundle) -> None:
    done = run_in_image(
        bundle,
        [
            f"{VENV}/bin/python",
            "-c",
            "import os, pwd; u = pwd.getpwuid(os.getuid()); print(os.getuid(), os.getgid(), u.pw_shell)",
        ],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(IMAGE_UID), str(IMAGE_UID), "/usr/sbin/nologin"]


def test_operator_modules_import(bundle: Bundle) -> None:
    done = run_in_image(bundle, [f"{VENV}/bin/python", "-c", "import tritonscale, tritonscale.app"])
    assert done.returncode == 0, done.stderr


# The sandbox is its own distribution and the tools extra stays out; pip and setuptools only
# served the build.
@pytest.mark.parametrize(
    "module", ["tritonscale_sandbox", "numpy", "rich", "matplotlib", "pip", "setuptools"]
)
def test_image_leaves_out(bundle: Bundle, module: str) -> None:
    done = run_in_image(bundle, [f"{VENV}/bin/python", "-c", f"import {module}"])
    assert done.returncode != 0, f"{module} is importable in the image"
    assert f"No module named '{module}'" in done.stderr


def test_bench_asks_for_the_tools_extra(bundle: Bundle) -> None:
    done = run_in_image(bundle, [*ENTRYPOINT, "bench", "--help"])
    assert done.returncode != 0
    assert "pip install 'tritonscale[tools]'" in done.stdout + done.stderr


def test_image_carries_nothing_from_the_build_host(bundle: Bundle) -> None:
    root = bundle.rootfs
    assert not list((root / "dev").iterdir()), "device nodes belong to the runtime"
    assert not list((root / "tmp").iterdir()), "build files left in /tmp"
    assert not (root / "etc" / "resolv.conf").exists(), "the host's resolv.conf is in the image"
    assert not (root / "etc" / "hostname").exists(), "the host's hostname is in the image"
    assert not (root / "root" / ".cache").exists(), "a pip cache is in the image"


def test_archive_holds_the_layout(built_image: BuiltImage) -> None:
    with tarfile.open(built_image.archive) as archive:
        members = {
            Path(member.name).as_posix().removeprefix("./")
            for member in archive.getmembers()
            if member.isfile()
        }
        index = archive.extractfile("./index.json")
        assert index is not None
        archived_index = json.loads(index.read())
    layout = built_image.layout
    files = {path.relative_to(layout).as_posix() for path in layout.rglob("*") if path.is_file()}
    assert members == files
    assert archived_index == json.loads((layout / "index.json").read_text())
