#!/usr/bin/env bash
# Build the operator's container image without a container engine, from Debian packages:
#   base      mmdebstrap: Debian bookworm (minbase) + python3, python3-venv, ca-certificates, from
#             the host's Debian mirror; cached as a tarball under
#             ${TRITONSCALE_CACHE:-$HOME/.cache/tritonscale}/image-base-bookworm-<rev>-<hash>/
#   operator  the tritonscale wheel (no extras) and its dependencies, resolved on the host for the
#             image's Python (binary wheels only), installed offline into a venv at /opt/tritonscale
#   image     umoci: one layer plus the config (entrypoint, cmd, user 65532, labels) in an OCI
#             image layout
# This script is the one definition of the image. Progress lines start with [build-image]; the
# last three lines give the image's sizes.
#
# Usage: scripts/build-image.sh [--output DIR] [--tag TAG] [--archive FILE] [--rebuild-base]
#   --output DIR     the OCI image layout to (re)create (default: build/image)
#   --tag TAG        the image's tag in the layout (default: the version in
#                    operator/tritonscale/__init__.py)
#   --archive FILE   also write the layout as an oci-archive tarball (for Trivy, skopeo)
#   --rebuild-base   rebuild the cached base even if present (to take in Debian security updates)
# Environment: TRITONSCALE_CACHE (cache root), PYTHON (the interpreter whose pip builds the wheel;
# default .venv/bin/python, else python3), IMAGE_SOURCE (the org.opencontainers.image.source
# label), SOURCE_DATE_EPOCH (the image's creation time; default: the last commit's).
# Needs root: chroot, and files owned by root in the image. Idempotent: each run rebuilds the
# layout from the cached base (about 40 s when the base is cached).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SUITE=bookworm
BASE_PACKAGES=(python3 python3-venv ca-certificates)
# Keep out what a server image never reads (copyright files stay, for licence scanners).
DPKG_OPTS=(
  'path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/info/*'
  'path-exclude=/usr/share/locale/*' 'path-exclude=/usr/share/doc/*'
  'path-include=/usr/share/doc/*/copyright'
)
# Bump when the base recipe changes in a way the cache key below cannot see.
BASE_REV=1
VENV=/opt/tritonscale
IMAGE_UID=65532
IMAGE_PATH=$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

log() { printf '[build-image %3ds] %s\n' "$SECONDS" "$*"; }
die() { printf '[build-image] ERROR: %s\n' "$*" >&2; exit 1; }

OUTPUT=build/image
TAG=""
ARCHIVE=""
REBUILD_BASE=0
while (($#)); do
  case $1 in
    --output) OUTPUT=${2:?--output needs a directory}; shift 2 ;;
    --tag) TAG=${2:?--tag needs a value}; shift 2 ;;
    --archive) ARCHIVE=${2:?--archive needs a file}; shift 2 ;;
    --rebuild-base) REBUILD_BASE=1; shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' operator/tritonscale/__init__.py)
[[ -n $VERSION ]] || die "no __version__ in operator/tritonscale/__init__.py"
TAG=${TAG:-$VERSION}
OUTPUT=$(realpath -m "$OUTPUT")
[[ -z $ARCHIVE ]] || ARCHIVE=$(realpath -m "$ARCHIVE")
# chroot and root-owned files in the image need root; say so before installing anything.
[[ $(id -u) -eq 0 ]] || die "needs root (chroot, root-owned files in the image): sudo -E $0 $*"

# --- Debian tools -------------------------------------------------------------------------------
packages=(mmdebstrap umoci debian-archive-keyring)
missing=()
for p in "${packages[@]}"; do
  [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == *"ok installed" ]] || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  # No sudo here: the build itself runs as root (checked above).
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tritonscale-image.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOTFS=$WORK/rootfs

# --- operator wheel -----------------------------------------------------------------------------
PYTHON=${PYTHON:-}
if [[ -z $PYTHON ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
log "building the tritonscale $VERSION wheel"
"$PYTHON" -m pip wheel --quiet --no-deps -w "$WORK/dist" . >&2
WHEEL=$(ls "$WORK"/dist/tritonscale-*.whl)

# --- base root filesystem (cached) --------------------------------------------------------------
# The mirror the host's apt uses for bookworm (deb822 .sources or one-line .list: apt reports
# both), so the build works wherever the host's apt does. A host without bookworm sources (an
# Ubuntu CI runner) leaves it to mmdebstrap's default Debian mirror with updates and security.
# shellcheck disable=SC2016  # $(…) are apt's format fields, not shell
fields='$(TARGET_OF) $(IDENTIFIER) $(REPO_URI) $(RELEASE)'
mirrors=()
while read -r uri suite; do
  mirrors+=("deb [signed-by=$KEYRING] $uri $suite main")
done < <(apt-get indextargets --format "$fields" 2>/dev/null \
  | awk -v s="$SUITE" '$1 == "deb" && $2 == "Packages" && $4 ~ "^" s "(-updates|-security)?$" { print $3, $4 }' \
  | sort -u)
[[ " ${mirrors[*]} " == *" $SUITE main "* ]] || mirrors=()
apt_opts=()
# A host pinned to a frozen snapshot mirror turns off the Release files' expiry check; follow it.
eval "$(apt-config shell valid_until Acquire::Check-Valid-Until)"
if [[ ${valid_until:-} == false ]]; then apt_opts+=('Acquire::Check-Valid-Until "false"'); fi
base_key=$(printf '%s\n' "$SUITE" "${BASE_PACKAGES[@]}" "${DPKG_OPTS[@]}" "${mirrors[@]}" "${apt_opts[@]}" \
  | sha256sum | cut -c1-10)
CACHE=${TRITONSCALE_CACHE:-$HOME/.cache/tritonscale}
BASE_DIR=$CACHE/image-base-$SUITE-$BASE_REV-$base_key
BASE_TAR=$BASE_DIR/rootfs.tar
mkdir -p "$BASE_DIR"
# One builder at a time per cache (parallel sessions may build concurrently).
exec 9>"$BASE_DIR/.lock"
flock 9
if ((REBUILD_BASE)) || [[ ! -f $BASE_TAR ]]; then
  log "building the base root filesystem: Debian $SUITE minbase + ${BASE_PACKAGES[*]} (about a minute)"
  # The runtime provides these two; the host's copies must not end up in the image.
  # shellcheck disable=SC2016  # "$1" is the hook's argument (the root), expanded by mmdebstrap
  drop_host_files='rm -f "$1/etc/resolv.conf" "$1/etc/hostname"'
  mm_args=(--variant=minbase "--include=$(IFS=,; echo "${BASE_PACKAGES[*]}")"
    # Merged /usr by symlinks, without the usrmerge package (which pulls in perl, 50 MB).
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
    "--customize-hook=$drop_host_files")
  for o in "${DPKG_OPTS[@]}"; do mm_args+=("--dpkgopt=$o"); done
  for o in "${apt_opts[@]}"; do mm_args+=("--aptopt=$o"); done
  # Only mmdebstrap's own status lines on the terminal; apt's and dpkg's go to the log.
  if ! SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(date +%s)} \
    mmdebstrap --format=tar "${mm_args[@]}" "$SUITE" "$BASE_TAR.tmp" "${mirrors[@]}" 2>&1 \
    | tee "$BASE_DIR/mmdebstrap.log" | grep --line-buffered '^[IWE]: ' | sed -u 's/^/  /'; then
    tail -n 30 "$BASE_DIR/mmdebstrap.log" >&2
    die "mmdebstrap failed (log: $BASE_DIR/mmdebstrap.log)"
  fi
  mv "$BASE_TAR.tmp" "$BASE_TAR"
  log "base cached in $BASE_TAR"
  # Older bases (another package list or revision) are 130 MB each; drop them.
  for old in "$CACHE"/image-base-"$SUITE"-*; do
    [[ $old == "$BASE_DIR" ]] || rm -rf "$old"
  done
else
  log "using the cached base $BASE_TAR"
fi
mkdir -p "$ROOTFS"
tar -xf "$BASE_TAR" -C "$ROOTFS" --numeric-owner
flock -u 9

# `chroot` with a clean environment, so the host's PIP_* settings do not leak into the image.
in_rootfs() { chroot "$ROOTFS" /usr/bin/env -i PATH="$IMAGE_PATH" HOME=/root LANG=C.UTF-8 "$@"; }

# --- the operator's venv ------------------------------------------------------------------------
# Dependencies are resolved on the host with the host's pip settings (index, certificates), for
# the image's interpreter: binary wheels for its Python version, architecture and glibc. The
# chroot then installs from those files alone, without network.
read -r py_ver arch glibc < <(in_rootfs python3 -c \
  'import platform, sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}", platform.machine(), platform.libc_ver()[1])')
platforms=()
for ((minor = ${glibc#2.}; minor >= 17; minor--)); do platforms+=(--platform "manylinux_2_${minor}_$arch"); done
platforms+=(--platform "manylinux2014_$arch" --platform "manylinux2010_$arch" --platform "manylinux1_$arch")
log "resolving the operator's dependencies for Python $py_ver on $arch (glibc $glibc)"
"$PYTHON" -m pip download --quiet --dest "$ROOTFS/tmp/wheels" --only-binary=:all: \
  --implementation cp --python-version "$py_ver" --abi "cp${py_ver/./}" "${platforms[@]}" "$WHEEL" >&2

log "installing tritonscale into $VENV inside the image"
in_rootfs python3 -m venv "$VENV"
in_rootfs "$VENV/bin/python" -m pip install --quiet --no-index --no-cache-dir \
  --find-links /tmp/wheels "/tmp/wheels/$(basename "$WHEEL")"
# pip and setuptools only served the install: the image never installs anything at run time.
in_rootfs "$VENV/bin/python" -m pip uninstall --quiet --yes pip setuptools
# The user of the chart's securityContext, with no login shell and no home.
in_rootfs groupadd --system --gid "$IMAGE_UID" --key SYS_GID_MAX="$IMAGE_UID" tritonscale
in_rootfs useradd --system --uid "$IMAGE_UID" --gid "$IMAGE_UID" --key SYS_UID_MAX="$IMAGE_UID" \
  --no-create-home --no-log-init --home-dir /nonexistent --shell /usr/sbin/nologin tritonscale
# What the build left: wheels, caches, and device nodes (a runtime mounts its own /dev).
rm -rf "$ROOTFS"/tmp/* "$ROOTFS"/root/.cache "$ROOTFS"/var/cache/debconf/*-old
find "$ROOTFS/dev" -mindepth 1 -delete

# --- OCI image ----------------------------------------------------------------------------------
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
source_url=${IMAGE_SOURCE:-https://github.com/tritonscale/tritonscale}
log "packing the OCI image layout $OUTPUT (tag $TAG)"
LAYOUT=$OUTPUT.tmp
rm -rf "$LAYOUT"
mkdir -p "$(dirname "$OUTPUT")"
umoci init --layout "$LAYOUT"
umoci new --image "$LAYOUT:$TAG"
umoci insert --image "$LAYOUT:$TAG" --history.created "$created" \
  --history.created_by "scripts/build-image.sh: Debian $SUITE + tritonscale $VERSION" "$ROOTFS" /
umoci config --image "$LAYOUT:$TAG" --created "$created" --history.created "$created" \
  --history.created_by "scripts/build-image.sh: config" \
  --config.entrypoint "$VENV/bin/tritonscale" --config.cmd run \
  --config.user "$IMAGE_UID:$IMAGE_UID" --config.workingdir / \
  --config.env "PATH=$IMAGE_PATH" --config.env LANG=C.UTF-8 \
  --config.env PYTHONDONTWRITEBYTECODE=1 --config.env PYTHONUNBUFFERED=1 \
  --config.label org.opencontainers.image.title=tritonscale \
  --config.label "org.opencontainers.image.version=$VERSION" \
  --config.label "org.opencontainers.image.source=$source_url" \
  --config.label "org.opencontainers.image.revision=$revision" \
  --config.label "org.opencontainers.image.created=$created" \
  --config.label org.opencontainers.image.licenses=Apache-2.0
umoci gc --layout "$LAYOUT"
# umoci writes blobs readable by root only; tools run later as another user (CI) read them.
chmod -R a+rX "$LAYOUT"
rm -rf "$OUTPUT"
mv "$LAYOUT" "$OUTPUT"
if [[ -n $ARCHIVE ]]; then
  # An oci-archive is the layout as a tar file.
  mkdir -p "$(dirname "$ARCHIVE")"
  tar --sort=name --numeric-owner -C "$OUTPUT" -cf "$ARCHIVE.tmp" .
  mv "$ARCHIVE.tmp" "$ARCHIVE"
  log "wrote the oci-archive $ARCHIVE"
fi

# --- sizes --------------------------------------------------------------------------------------
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }
unpacked=$(du -sb "$ROOTFS" | cut -f1)
venv_size=$(du -sb "$ROOTFS$VENV" | cut -f1)
# The compressed size is the sum of the layer blobs the manifest lists.
compressed=$("$PYTHON" - "$OUTPUT" <<'PY'
import json, sys
from pathlib import Path

layout = Path(sys.argv[1])
blob = lambda digest: json.loads((layout / "blobs" / "sha256" / digest.split(":")[1]).read_text())
manifest = blob(json.loads((layout / "index.json").read_text())["manifests"][0]["digest"])
print(sum(layer["size"] for layer in manifest["layers"]))
PY
)
log "built $OUTPUT:$TAG"
log "image unpacked: $(mb "$unpacked") (of which $VENV: $(mb "$venv_size"))"
log "image compressed (layers): $(mb "$compressed")"
log "wheel $(basename "$WHEEL"): $(awk -v b="$(stat -c %s "$WHEEL")" 'BEGIN { printf "%.1f kB", b / 1e3 }')"
