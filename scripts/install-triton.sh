#!/usr/bin/env bash
# Install a CPU-only Triton Inference Server 2.51.0 for local tests, benchmarks and the sandbox.
#
# The tritonserver binary comes from the PyPI wheel nvidia-pytriton==0.7.0, installed with
# `pip install --no-deps --target` into a versioned cache directory (never into a project
# environment: the wheel pins numpy<2). Layout of the result:
#
#   ${TRITONSCALE_CACHE:-$HOME/.cache/tritonscale}/triton-2.51.0-<layout>/
#     wheel/                                     the unpacked wheel (pip --target)
#       pytriton/tritonserver/bin/tritonserver   the server binary
#       nvidia_pytriton.libs/                    its shared libraries (LD_LIBRARY_PATH)
#     backends/python/                           --backend-directory=<root>/backends
#       libtriton_python.so                      Python backend (from the wheel)
#       triton_python_backend_utils.py
#       triton_python_backend_stub               the Python 3.11 stub (links Debian's libpython3.11)
#     COMPLETE                                   written last; its presence means "ready to use"
#
# Idempotent: a second run only checks COMPLETE and prints the path. The first run ends with a
# smoke test: a tritonserver with a one-line Python-backend model must become ready.
# The last line on stdout is the install directory. Env: TRITONSCALE_CACHE, PYTHON (a Python
# with pip; default: the repo's .venv, else python3), TRITONSCALE_TRITON_FORCE=1 to rebuild.
set -euo pipefail

TRITON_VERSION=2.51.0
PYTRITON_VERSION=0.7.0
LAYOUT=1                 # bump when the layout below changes; keep in sync with sandbox/tritonscale_sandbox/triton.py
STUB_PYTHON=3.11         # must match Debian's libpython (package libpython3.11)

cache_root="${TRITONSCALE_CACHE:-$HOME/.cache/tritonscale}"
dest="$cache_root/triton-$TRITON_VERSION-$LAYOUT"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { echo "install-triton: $*" >&2; }

if [[ -f "$dest/COMPLETE" && "${TRITONSCALE_TRITON_FORCE:-0}" != 1 ]]; then
  echo "$dest"
  exit 0
fi

mkdir -p "$cache_root"
# Serialise concurrent installs (parallel test sessions); re-check after taking the lock.
exec 9>"$cache_root/.triton-$TRITON_VERSION-$LAYOUT.lock"
flock 9
if [[ -f "$dest/COMPLETE" && "${TRITONSCALE_TRITON_FORCE:-0}" != 1 ]]; then
  echo "$dest"
  exit 0
fi

if [[ ! -e /usr/lib/x86_64-linux-gnu/libpython$STUB_PYTHON.so.1.0 ]] \
   && ! ldconfig -p | grep -q "libpython$STUB_PYTHON.so.1.0"; then
  log "libpython$STUB_PYTHON.so.1.0 not found: run scripts/install-system-deps.sh (Debian libpython$STUB_PYTHON)"
  exit 1
fi

python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$repo_root/.venv/bin/python" ]]; then python="$repo_root/.venv/bin/python"; else python=python3; fi
fi

staging="$(mktemp -d "$cache_root/.triton-staging.XXXXXX")"
cleanup() { rm -rf "$staging"; }
trap cleanup EXIT
chmod 755 "$staging"

log "pip install --no-deps --target nvidia-pytriton==$PYTRITON_VERSION (tritonserver $TRITON_VERSION)"
"$python" -m pip install --quiet --disable-pip-version-check --no-compile --no-deps \
  --target "$staging/wheel" "nvidia-pytriton==$PYTRITON_VERSION" >&2

ts="$staging/wheel/pytriton/tritonserver"
libs="$staging/wheel/nvidia_pytriton.libs"
stub="$ts/python_backend_stubs/$STUB_PYTHON/triton_python_backend_stub"
for f in "$ts/bin/tritonserver" "$ts/backends/python/libtriton_python.so" "$stub"; do
  [[ -f "$f" ]] || { log "unexpected wheel layout: $f is missing"; exit 1; }
done

mkdir -p "$staging/backends/python"
cp -p "$ts/backends/python/libtriton_python.so" "$ts/backends/python/triton_python_backend_utils.py" \
  "$stub" "$staging/backends/python/"
chmod +x "$staging/backends/python/triton_python_backend_stub" "$ts/bin/tritonserver"

# --- smoke test: a server with a trivial Python-backend model must become ready -------------
repo="$staging/smoke-models"
mkdir -p "$repo/smoke/1"
cat >"$repo/smoke/config.pbtxt" <<'EOF'
backend: "python"
max_batch_size: 0
input [ { name: "IN", data_type: TYPE_FP32, dims: [ 1 ] } ]
output [ { name: "OUT", data_type: TYPE_FP32, dims: [ 1 ] } ]
EOF
cat >"$repo/smoke/1/model.py" <<'EOF'
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "IN").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", (x + 1).astype(np.float32))]))
        return out
EOF
# An address and port unlikely to be in use; the python backend's shared-memory names get a
# unique prefix so this never collides with a server that is already running.
addr="127.$((RANDOM % 200 + 50)).$((RANDOM % 250 + 1)).$((RANDOM % 250 + 1))"
port=8000
log "smoke test: tritonserver on $addr:$port"
env -u PYTHONPATH -u PYTHONHOME -u VIRTUAL_ENV PYTHONNOUSERSITE=1 \
  LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
  "$ts/bin/tritonserver" --model-repository="$repo" --backend-directory="$staging/backends" \
  --http-address "$addr" --http-port "$port" --allow-grpc false --allow-metrics false \
  --backend-config "python,shm-region-prefix-name=tsinstall$$_" --log-verbose 0 \
  >"$staging/smoke.log" 2>&1 &
pid=$!
ready=0
for _ in $(seq 1 300); do
  if curl -fsS -o /dev/null "http://$addr:$port/v2/models/smoke/ready" 2>/dev/null; then ready=1; break; fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
answer=""
if ((ready)); then
  answer="$(curl -fsS -X POST "http://$addr:$port/v2/models/smoke/infer" \
    -d '{"inputs":[{"name":"IN","shape":[1],"datatype":"FP32","data":[41]}]}' || true)"
fi
kill -TERM "$pid" 2>/dev/null || true
for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -KILL "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
if [[ "$answer" != *'[42.0]'* ]]; then
  log "smoke test FAILED (ready=$ready, answer=$answer); server log:"
  tail -n 40 "$staging/smoke.log" >&2
  exit 1
fi
log "smoke test passed"
rm -rf "$repo" "$staging/smoke.log"

# --- publish atomically ----------------------------------------------------------------------
printf 'tritonserver %s from nvidia-pytriton %s, python stub %s\n' \
  "$TRITON_VERSION" "$PYTRITON_VERSION" "$STUB_PYTHON" >"$staging/COMPLETE"
rm -rf "$dest"
mv "$staging" "$dest"
trap - EXIT
echo "$dest"
