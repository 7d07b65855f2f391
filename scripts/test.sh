#!/usr/bin/env bash
# The test command of README.md (and of .ci/run). Sets up ./.venv on first use.
#   bash scripts/test.sh            default suite (< 15 min on 2 CPU cores)
#   bash scripts/test.sh --slow     the slow tests only
#   bash scripts/test.sh tests/flow any pytest arguments are passed through
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"   # sets ROOT, activates the venv
cd "$ROOT"
ARGS=()
if [ "${1:-}" = "--slow" ]; then shift; ARGS+=(-m slow); fi
exec python -m pytest -n "${MIRO_TEST_WORKERS:-2}" --timeout 900 "${ARGS[@]}" "$@"
