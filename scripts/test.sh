#!/usr/bin/env bash
# The project's test command (README, .ci/run): set-up, static checks, then every test tier.
#   scripts/test.sh            lint + unit + integration + e2e + image
#   TIERS="unit" scripts/test.sh   only the listed tiers
set -euo pipefail
cd "$(dirname "$0")/.."
tiers=${TIERS:-"unit integration e2e image"}
scripts/bootstrap.sh

echo "== static checks"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports --no-cache

for tier in $tiers; do
  echo "== $tier tests"
  case $tier in
    unit) .venv/bin/pytest -m "not integration and not e2e and not image" ;;
    integration|e2e)
      if [ -z "$(find tests/$tier -name 'test_*.py' 2>/dev/null)" ]; then
        echo "no $tier tests yet"
        continue
      fi
      .venv/bin/pytest -m "$tier" "tests/$tier" ;;
    image) .venv/bin/pytest -m image tests/image ;;
    *) echo "unknown tier $tier" >&2; exit 2 ;;
  esac
done
