#!/usr/bin/env bash
# Build kube-score (the Kubernetes manifest linter) from the Go module proxy into a versioned
# cache folder; quick when done. The LAST line on stdout is the binary's path.
set -euo pipefail
KUBE_SCORE_VERSION=v1.20.0
CACHE=${TRITONSCALE_CACHE:-$HOME/.cache/tritonscale}
OUT="$CACHE/kube-score-$KUBE_SCORE_VERSION"
if [[ -x "$OUT/kube-score" ]]; then
  echo "$OUT/kube-score"
  exit 0
fi
GO=$(command -v go || true)
if [[ -z "$GO" && -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go; fi
[[ -n "$GO" ]] || { echo "build-kube-score: no Go toolchain found" >&2; exit 1; }
echo "build-kube-score: building kube-score $KUBE_SCORE_VERSION (about 2 minutes)" >&2
mkdir -p "$OUT.tmp"
GOMODCACHE="$CACHE/gomod" GOCACHE="$CACHE/gocache" GOFLAGS=-modcacherw CGO_ENABLED=0 GOWORK=off \
  GOBIN="$OUT.tmp" "$GO" install "github.com/zegl/kube-score/cmd/kube-score@$KUBE_SCORE_VERSION" >&2
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
echo "$OUT/kube-score"
