#!/usr/bin/env bash
# The demo command of README.md: sets up ./.venv on first use, then runs the embedded default end to end
# (shapes world -> weight-free annotation -> statistics -> cache -> training -> samples, slider sweeps,
# shapes-world GenEval, reward metrics) and writes runs/demo/report.md.
#   bash scripts/demo.sh                       # about 15 minutes on 2 CPU cores (plus 2 for the first set-up)
#   bash scripts/demo.sh train_steps=3000      # any key of miro/conf/demo.yaml
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"   # sets ROOT, activates the venv
cd "$ROOT"
exec python -m miro.demo "$@"
