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
export PATH="$VENV/bin:$PATH"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-1}"
