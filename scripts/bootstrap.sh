#!/usr/bin/env bash
# Everything a fresh Debian machine needs before the tests or the demo: Debian packages and the
# project's virtualenv (.venv) with the package and its test tools. Idempotent and quick when done.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-system-deps.sh
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
stamp=.venv/.tritonscale-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ sandbox/pyproject.toml -nt "$stamp" ]; then
  echo "installing tritonscale (with its user tools), the sandbox and the test tools into .venv"
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -e '.[tools,test]' -e ./sandbox
  touch "$stamp"
fi
