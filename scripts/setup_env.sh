#!/usr/bin/env bash
# Creates ./.venv (or uses $MIRO_VENV) and installs the project into it; sourced by test.sh and demo.sh.
# torch: if the venv already has one (e.g. a CUDA build you installed yourself), it is kept; otherwise
# torch==2.14.1 torchvision==0.29.1 is installed (the pair open_clip needs; see DESIGN.md section 5).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MIRO_VENV:-$ROOT/.venv}"
PY_BOOT="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV"
    "$PY_BOOT" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
fi
PY="$VENV/bin/python"

if ! "$PY" -c "import torch, torchvision" >/dev/null 2>&1; then
    echo "[setup] installing torch==2.14.1 torchvision==0.29.1"
    "$PY" -m pip install -q torch==2.14.1 torchvision==0.29.1
fi

STAMP="$VENV/.miro-setup-stamp"
WANT="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    echo "[setup] installing the project and its dependencies"
    "$PY" -m pip install -q -e "$ROOT[dev]"
    echo "$WANT" > "$STAMP"
fi

# MIRO_SETUP_APP=1 (scripts/test.sh sets it): the slider app's `app` extra, then gradio without its dependency
# metadata (every gradio release caps pillow below the core's pillow; docs/app.md, pyproject.toml).
if [ "${MIRO_SETUP_APP:-0}" = 1 ]; then
    APP_STAMP="$VENV/.miro-app-stamp"
    GRADIO_PIN="$(cd "$ROOT" && "$PY" -c 'from miro.app import GRADIO_PIN; print(GRADIO_PIN)')"
    if [ ! -f "$APP_STAMP" ] || [ "$(cat "$APP_STAMP")" != "$WANT $GRADIO_PIN" ]; then
        echo "[setup] installing the slider app: the app extra and $GRADIO_PIN (--no-deps)"
        "$PY" -m pip install -q -e "$ROOT[dev,app]"
        "$PY" -m pip install -q --no-deps "$GRADIO_PIN"
        echo "$WANT $GRADIO_PIN" > "$APP_STAMP"
    fi
fi
export PATH="$VENV/bin:$PATH"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-1}"
