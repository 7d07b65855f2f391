#!/usr/bin/env bash
# Issue 16's quality comparison: attention, TTT-Linear and the hybrid (attention, then TTT-Linear) as the token
# mixer of the plain tiny transformer on the 64 px shapes world (256 tokens), at equal steps, batch and seed
# (miro/conf/experiment/shapes_ttt64.yaml); then per run the fixed-noise loss by noise level and the text gap
# (text_conditioning.py gaps) and held-out shapes GenEval (text_conditioning.py curve).  Results:
# docs/benchmarks/ttt.md.
#   bash scripts/experiments/ttt_quality.sh                      # OUT=runs/ttt64, 400 steps of 16
#   MIXERS=ttt_linear OMP_NUM_THREADS=1 bash scripts/experiments/ttt_quality.sh   # one run (several in parallel)
# Rerunning continues: finished data stages skip themselves and each run resumes from its last checkpoint.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
OUT="${OUT:-runs/ttt64}"
DATA="${DATA:-$OUT/data}"
STEPS="${STEPS:-400}"
BATCH="${BATCH:-16}"
MIXERS="${MIXERS:-attention ttt_linear attention+ttt_linear}"
source "$ROOT/scripts/experiments/shapes_world.sh"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-2}"
# the TTT scan keeps many mid-sized tensors for its backward: keep freed memory in the process (docs/benchmarks/ttt.md)
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-4294967296}" MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-4294967296}"

build_world "$DATA" 6000 64 "$OUT/logs"
for mixer in $MIXERS; do
    run="$OUT/${mixer/+/_}"
    python -m miro.train experiment=shapes_ttt64 model.token_mixer="$mixer" max_steps="$STEPS" \
        batch_size="$BATCH" checkpoint_every=100 \
        data.shards="$DATA/train" seed=0 resume=latest progress_bar=false hydra.run.dir="$run"
    python scripts/experiments/text_conditioning.py gaps --data "$DATA" --pipeline "$run/final" \
        --out "$run/gaps.json"
    python scripts/experiments/text_conditioning.py curve --data "$DATA" --run "$run" --scales 3,1 \
        --targets clean --out "$run/geneval.json"
done
python scripts/experiments/ttt_quality_table.py "$OUT" $MIXERS
