#!/usr/bin/env bash
# Build the real Kubernetes test environment from the Go module proxy:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd, helm
#     (wrapper module testenv/: k8s.io/kubernetes + etcd server + helm)
#   kwok
#     (wrapper module testenv/kwok/: kwok needs newer k8s.io libraries)
#
# Everything lands under one cache root, so CI can cache a single folder:
#   ${TRITONSCALE_CACHE:-$HOME/.cache/tritonscale}/
#     gomod/                             GOMODCACHE
#     gocache/                           GOCACHE
#     testenv-<k8s version>-<rev>/bin    the binaries
#
# Idempotent: when every binary exists and the stamp (hash of the go.mod/go.sum/tools.go
# files, this script and the Go version) matches, it only prints the bin path.
# Progress goes to stderr; the LAST (and only) line on stdout is the bin directory:
#   BIN=$(scripts/build-testenv.sh | tail -1)
#
# Options:
#   --force               rebuild even when the stamp matches
#   --regenerate-go-mod   rewrite testenv/go.mod from k8s.io/kubernetes's own go.mod
#                         (every k8s.io staging module replaced by the matching v0.x.y),
#                         then `go mod tidy`; use when changing the pinned versions below.
set -euo pipefail

# Pinned versions (change here, then run with --regenerate-go-mod).
K8S_VERSION=v1.34.4
ETCD_VERSION=v3.6.4
HELM_VERSION=v3.19.5
KWOK_VERSION=v0.8.0
# Bump when the build recipe changes in a way the stamp cannot see.
BUILD_REV=1

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MOD_DIR="$ROOT/testenv"
KWOK_MOD_DIR="$ROOT/testenv/kwok"
CACHE=${TRITONSCALE_CACHE:-$HOME/.cache/tritonscale}
OUT="$CACHE/testenv-$K8S_VERSION-$BUILD_REV"
BIN="$OUT/bin"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd helm kwok)

log() { printf '[build-testenv] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Go >= 1.26 from PATH or /usr/local/go; else the pinned toolchain from the Go module proxy
# (golang.org/toolchain, what `go` itself fetches for GOTOOLCHAIN), checked against its pinned
# SHA-256 and unpacked as `go` unpacks it (each _go.mod is the go.mod the zip cannot carry),
# under a lock, into the cache.
GO_FALLBACK=1.26.8
declare -A GO_FALLBACK_SHA256=(
  [amd64]=30c2b1bf7dcc88d3eb0a1364e47ddd9128edb3110a30e8a0ef61cd5856b31de7
  [arm64]=02b36b6787b3ac767668f630e2998df45a3b1f9ffee08d1bf3ef6487cd658d99
)
go_ok() { [[ -n "$1" ]] && "$1" env GOVERSION 2>/dev/null | grep -Eq '^go1\.(2[6-9]|[3-9][0-9])'; }
fetch_go() {
  local dest="$CACHE/go-$GO_FALLBACK" proxy=${GOPROXY:-https://proxy.golang.org} arch
  case $(uname -m) in
    x86_64) arch=amd64 ;;
    aarch64|arm64) arch=arm64 ;;
    *) die "no Go >= 1.26 here and none pinned for $(uname -m): install go >= 1.26 and put it on PATH" ;;
  esac
  proxy=${proxy%%[,|]*}
  [[ $proxy == direct || $proxy == off ]] && proxy=https://proxy.golang.org
  mkdir -p "$CACHE"
  (
    flock 8
    if [[ ! -x "$dest/bin/go" ]]; then
      log "no Go >= 1.26 here: fetching go$GO_FALLBACK ($arch) from $proxy into $dest"
      python3 - "$proxy/golang.org/toolchain/@v/v0.0.1-go$GO_FALLBACK.linux-$arch.zip" "$dest" \
        "${GO_FALLBACK_SHA256[$arch]}" <<'PY' || die "could not fetch Go; install go >= 1.26 and put it on PATH"
import hashlib, os, shutil, sys, tempfile, urllib.request, zipfile
url, dest, sha256 = sys.argv[1], sys.argv[2], sys.argv[3]
stage = tempfile.mkdtemp(dir=os.path.dirname(dest) or ".")
with tempfile.TemporaryFile() as data:
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=60) as response:
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            data.write(chunk)
    if digest.hexdigest() != sha256:
        sys.exit(f"{url}: sha256 {digest.hexdigest()}, expected {sha256}")
    with zipfile.ZipFile(data) as archive:
        for entry in archive.infolist():
            # golang.org/toolchain@v0.0.1-go1.26.8.linux-amd64/bin/go -> bin/go
            relative = entry.filename.partition("@")[2].partition("/")[2]
            if not relative or entry.is_dir():
                continue
            if os.path.basename(relative) == "_go.mod":
                relative = os.path.join(os.path.dirname(relative), "go.mod")
            target = os.path.join(stage, relative)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with archive.open(entry) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)
            os.chmod(target, (entry.external_attr >> 16) & 0o777 or 0o644)
shutil.rmtree(dest, ignore_errors=True)
os.rename(stage, dest)
PY
    fi
  ) 8>"$CACHE/go-$GO_FALLBACK.lock"
  GO="$dest/bin/go"
}
GO=$(command -v go || true)
if ! go_ok "$GO" && go_ok /usr/local/go/bin/go; then GO=/usr/local/go/bin/go; fi
if ! go_ok "$GO"; then fetch_go; fi
go_ok "$GO" || die "no usable Go toolchain (need go >= 1.26; $GO says $("$GO" env GOVERSION 2>&1))"

export GOMODCACHE="$CACHE/gomod"
export GOCACHE="$CACHE/gocache"
export GOWORK=off
# go.mod/go.sum are complete (tidy), so builds run -mod=readonly (the default) and never edit them.
export GOFLAGS="-modcacherw"
export CGO_ENABLED=0
unset GOOS GOARCH

FORCE=0
REGEN=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    --regenerate-go-mod) REGEN=1 ;;
    -h|--help) sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $arg" ;;
  esac
done

regenerate_go_mod() {
  local staging_minor k8s_mod
  staging_minor="v0.${K8S_VERSION#v1.}"
  log "reading k8s.io/kubernetes@$K8S_VERSION go.mod"
  k8s_mod=$(cd "$MOD_DIR" && "$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
    | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  [[ -f "$k8s_mod" ]] || die "could not download the go.mod of k8s.io/kubernetes@$K8S_VERSION"
  {
    echo "// Wrapper module that builds a pinned Kubernetes control plane, etcd and helm"
    echo "// from the Go module proxy. Generated by scripts/build-testenv.sh --regenerate-go-mod;"
    echo "// the replace list is taken from k8s.io/kubernetes@$K8S_VERSION's own go.mod."
    echo "module tritonscale.io/testenv"
    echo
    echo "go 1.24.0"
    echo
    echo "require ("
    echo "	go.etcd.io/etcd/server/v3 $ETCD_VERSION"
    echo "	helm.sh/helm/v3 $HELM_VERSION"
    echo "	k8s.io/kubernetes $K8S_VERSION"
    echo ")"
    echo
    echo "replace ("
    sed -n '/^replace (/,/^)/p' "$k8s_mod" \
      | grep -E '^[[:space:]]*k8s\.io/[A-Za-z0-9._-]+ => \./staging/' \
      | awk -v v="$staging_minor" '{ print "\t" $1 " => " $1 " " v }'
    echo ")"
  } >"$MOD_DIR/go.mod.new"
  mv "$MOD_DIR/go.mod.new" "$MOD_DIR/go.mod"
  (cd "$MOD_DIR" && "$GO" mod tidy)
  sed -i "s|^require sigs.k8s.io/kwok .*|require sigs.k8s.io/kwok $KWOK_VERSION|" "$KWOK_MOD_DIR/go.mod"
  (cd "$KWOK_MOD_DIR" && "$GO" mod tidy)
  log "regenerated $MOD_DIR/go.mod and $KWOK_MOD_DIR/go.mod"
}

stamp_value() {
  {
    cat "$MOD_DIR/go.mod" "$MOD_DIR/go.sum" "$MOD_DIR/tools.go" \
        "$KWOK_MOD_DIR/go.mod" "$KWOK_MOD_DIR/go.sum" "$KWOK_MOD_DIR/tools.go" \
        "${BASH_SOURCE[0]}"
    "$GO" env GOVERSION
  } | sha256sum | cut -d' ' -f1
}

all_present() {
  local b
  for b in "${BINARIES[@]}"; do [[ -x "$BIN/$b" ]] || return 1; done
}

# go names the binary of go.etcd.io/etcd/server/v3 "server"; it is renamed to etcd afterwards.
label() { if [[ $1 == server ]]; then echo etcd; else echo "$1"; fi; }

# Run one `go build` (in the background) and print a line, with the elapsed time, each time
# one of the expected binaries appears in the output directory; plus a heartbeat each minute.
build_watched() {
  local dir=$1 outdir=$2 start=$3; shift 3
  local -a expect=()
  while [[ $1 != -- ]]; do expect+=("$1"); shift; done
  shift
  (cd "$dir" && exec "$GO" build "$@") 9>&- &
  local pid=$! last_beat=$SECONDS b
  # Ctrl-C or a kill stops the build too (a background job would ignore SIGINT and hold the lock).
  trap 'kill "$pid" 2>/dev/null; exit 130' INT TERM
  local -A seen=()
  while kill -0 "$pid" 2>/dev/null; do
    for b in "${expect[@]}"; do
      if [[ -z ${seen[$b]:-} && -x "$outdir/$b" ]]; then
        seen[$b]=1
        log "built $(label "$b") ($((SECONDS - start))s)"
      fi
    done
    if (( SECONDS - last_beat >= 60 )); then
      last_beat=$SECONDS
      log "still compiling (${#seen[@]}/${#expect[@]} done, $((SECONDS - start))s elapsed)"
    fi
    sleep 1
  done
  trap - INT TERM
  wait "$pid" || return $?
  for b in "${expect[@]}"; do
    if [[ -z ${seen[$b]:-} && -x "$outdir/$b" ]]; then log "built $(label "$b") ($((SECONDS - start))s)"; fi
  done
}

if (( REGEN )); then
  regenerate_go_mod
fi

mkdir -p "$OUT"
# One builder at a time per cache (parallel test sessions may call this concurrently).
exec 9>"$OUT/.lock"
flock -n 9 || { log "another build of $OUT is running: waiting for it"; flock 9; }

STAMP=$(stamp_value)
if (( ! FORCE )) && all_present && [[ -f "$OUT/stamp" && "$(cat "$OUT/stamp")" == "$STAMP" ]]; then
  log "up to date: $BIN"
  echo "$BIN"
  exit 0
fi

log "building the test environment into $BIN"
log "k8s $K8S_VERSION, etcd $ETCD_VERSION, helm $HELM_VERSION, kwok $KWOK_VERSION; $("$GO" env GOVERSION)"
log "GOMODCACHE=$GOMODCACHE GOCACHE=$GOCACHE"
rm -f "$OUT/stamp"
STAGE="$OUT/bin.new"
rm -rf "$STAGE"
mkdir -p "$STAGE"
START=$SECONDS

log "downloading modules"
(cd "$MOD_DIR" && "$GO" mod download)
(cd "$KWOK_MOD_DIR" && "$GO" mod download)
log "modules ready ($((SECONDS - START))s)"

K8S_MINOR=${K8S_VERSION#v1.}
K8S_MINOR=${K8S_MINOR%%.*}
VERSION_PKG=k8s.io/component-base/version
K8S_LDFLAGS="-s -w"
K8S_LDFLAGS+=" -X $VERSION_PKG.gitVersion=$K8S_VERSION"
K8S_LDFLAGS+=" -X $VERSION_PKG.gitMajor=1 -X $VERSION_PKG.gitMinor=$K8S_MINOR"
K8S_LDFLAGS+=" -X $VERSION_PKG.gitTreeState=clean"
K8S_LDFLAGS+=" -X $VERSION_PKG/verflag.programName=kubernetes"
K8S_LDFLAGS+=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
K8S_LDFLAGS+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
# helm's offline default Kubernetes version (helm template, helm lint) follows the pinned release.
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  K8S_LDFLAGS+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$K8S_MINOR"
done

# One invocation for all main packages of the wrapper module, so that the shared packages are
# compiled once and linking overlaps with compiling. etcd's main package is
# go.etcd.io/etcd/server/v3, which go names "server".
log "compiling kube-apiserver kube-controller-manager kube-scheduler kubectl etcd helm"
build_watched "$MOD_DIR" "$STAGE" "$START" \
  kube-apiserver kube-controller-manager kube-scheduler kubectl server helm -- \
  -trimpath -ldflags "$K8S_LDFLAGS" -o "$STAGE/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl \
  go.etcd.io/etcd/server/v3 \
  helm.sh/helm/v3/cmd/helm \
  || die "go build of the control plane failed"
mv "$STAGE/server" "$STAGE/etcd"

log "compiling kwok"
build_watched "$KWOK_MOD_DIR" "$STAGE" "$START" kwok -- \
  -trimpath -ldflags "-s -w" -o "$STAGE/" sigs.k8s.io/kwok/cmd/kwok \
  || die "go build of kwok failed"

for b in "${BINARIES[@]}"; do [[ -x "$STAGE/$b" ]] || die "missing binary after build: $b"; done
"$STAGE/kubectl" version --client >&2 || die "the built kubectl does not run"
rm -rf "$BIN"
mv "$STAGE" "$BIN"
echo "$STAMP" >"$OUT/stamp"
log "done in $((SECONDS - START))s"
echo "$BIN"
