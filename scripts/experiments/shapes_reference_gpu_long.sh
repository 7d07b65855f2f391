#!/usr/bin/env bash
# experiment=shapes_reference_gpu_long on a GPU, after a 600-step check that bf16 autocast trains there without
# skipped steps (docs/text_conditioning.md section 16).  Usage: shapes_reference_gpu_long.sh SHARDS OUT [overrides]
# SHARDS: a built shapes world's train folder (scripts/experiments/shapes_world.sh; the demo's seed, e.g. 24,000
# images: its held-out prompts are the demo world's).  Rerunning resumes the long run from its last checkpoint.
set -euo pipefail
shards="$1" out="$2"
shift 2
check="$out/bf16_check" steps="${CHECK_STEPS:-600}"
mkdir -p "$out"
if [ ! -f "$check/done" ]; then
    python -m miro.train experiment=shapes_reference_adagn data.shards="$shards" seed=0 max_steps="$steps" \
        checkpoint_every="$steps" sample.every=0 log_every=100 max_nonfinite_steps=1000 progress_bar=false \
        hydra.run.dir="$check" 2>&1 | tee "$check.log"
    skipped=$(grep -c "non-finite gradient" "$check.log" || true)
    echo "bf16 check: $skipped of $steps steps skipped for a non-finite gradient"
    if [ "$skipped" -gt $((steps / 100)) ]; then
        echo "bf16 autocast loses steps on this GPU: rerun with mixed_precision=no" >&2
        exit 1
    fi
    touch "$check/done"
fi
python -m miro.train experiment=shapes_reference_gpu_long data.shards="$shards" seed=0 resume=latest \
    progress_bar=false hydra.run.dir="$out/run" "$@"
