#!/usr/bin/env bash
# The test command of README.md (and of .ci/run). Sets up ./.venv on first use.
#   bash scripts/test.sh            default suite (< 15 min on 2 CPU cores)
#   bash scripts/test.sh --slow     the slow tests only
#   bash scripts/test.sh tests/flow any pytest arguments are passed through
set -euo pipefail
export MIRO_SETUP_APP=1   # the slider app's extra and gradio, for tests/app
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"   # sets ROOT, activates the venv
cd "$ROOT"
# The slider app's browser test drives Debian's chromium with chromium-driver (never a browser that a package
# downloads).  Installed with apt when missing and apt is usable (root); in CI the test then fails instead of
# skipping when they are still missing (MIRO_REQUIRE_BROWSER).
if ! command -v chromedriver >/dev/null 2>&1 || ! { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "[setup] installing chromium and chromium-driver (apt) for the browser test"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null 2>&1 \
            || { apt-get update -qq && apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null; } \
            || echo "[setup] could not install chromium: the browser test will skip (or fail in CI)"
    else
        echo "[setup] chromium / chromium-driver missing and apt-get unusable: the browser test will skip"
    fi
fi
if [ "${CI:-}" = true ]; then export MIRO_REQUIRE_BROWSER="${MIRO_REQUIRE_BROWSER:-1}"; fi
ARGS=()
if [ "${1:-}" = "--slow" ]; then shift; ARGS+=(-m slow); fi
exec python -m pytest -n "${MIRO_TEST_WORKERS:-2}" --timeout 900 "${ARGS[@]}" "$@"
