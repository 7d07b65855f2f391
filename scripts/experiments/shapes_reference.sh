#!/usr/bin/env bash
# The shipped reference model, end to end with the project's own commands (models/shapes_reference/README.md).
#   bash scripts/experiments/shapes_reference.sh            # data -> train (resumable) -> curve -> export
#   OUT=runs/ref bash scripts/experiments/shapes_reference.sh
#   EXPERIMENT=shapes_reference_conv OUT=runs/shapes_reference_conv bash scripts/experiments/shapes_reference.sh
#   EXPERIMENT=shapes_reference_sd_unet OUT=runs/sd_unet bash scripts/experiments/shapes_reference.sh
#   EXPERIMENT=shapes_reference_sd_unet_cont OUT=runs/sd_unet_cont SEED=1 bash scripts/experiments/shapes_reference.sh
#                                                   # the shipped model's first two stages (its README)
#   WORLD=clean DATA=runs/clean_world EXPERIMENT=shapes_reference_clean OUT=runs/shapes_reference_clean \
#       bash scripts/experiments/shapes_reference.sh      # on the cleaner world (shapes_world.sh: CLEAN_WORLD)
#   NUM_SAMPLES=24000 WORKERS=14 DATA=runs/world24k EXPERIMENT=shapes_reference_gpu OUT=runs/shapes_reference_gpu \
#       bash scripts/experiments/shapes_reference.sh      # the GPU recipe (a larger world, batch 256)
#   WORLD=compose WORLD_SEED=4 NUM_SAMPLES=24000 DATA=runs/world_compose EXPERIMENT=shapes_reference_sd_unet_compose \
#       OUT=runs/sd_unet_compose SEED=2 bash scripts/experiments/shapes_reference.sh
#                                                   # its third stage: the second stage's model fine-tuned on a
#                                                   # world of more two-object compositions (COMPOSE_WORLD)
#   WORLD=compose WORLD_SEED=7 NUM_SAMPLES=24000 DATA=runs/world_compose2 EXPERIMENT=shapes_reference_sd_unet_compose2 \
#       OUT=runs/sd_unet_compose2 SEED=3 bash scripts/experiments/shapes_reference.sh
#                                                   # its fourth stage: the same on a second, fresh composition world
#   WORLD=compose WORLD_SEED=9 NUM_SAMPLES=24000 DATA=runs/world_compose3 EXPERIMENT=shapes_reference_sd_unet_compose3 \
#       OUT=runs/sd_unet_compose3 SEED=4 bash scripts/experiments/shapes_reference.sh
#                                                   # a fifth stage from the shipped model on a third such world
#   WORLD=bind WORLD_SEED=10 NUM_SAMPLES=24000 DATA=runs/world_bind EXPERIMENT=shapes_reference_sd_unet_bind \
#       OUT=runs/sd_unet_bind SEED=5 bash scripts/experiments/shapes_reference.sh
#                                                   # a stage from the shipped model with binding hard negatives
# Rerunning continues where it stopped: finished data stages skip themselves and training resumes from
# the last checkpoint (resume=latest), so a run killed at a session's end is continued by the same command.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
OUT="${OUT:-runs/shapes_reference}"
DATA="${DATA:-runs/demo/data}"                  # the demo's world: 12,000 images at 32 px, seed 0
source "$ROOT/scripts/experiments/shapes_world.sh"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"

WORLD_ARGS=()   # WORLD=clean: the cleaner world of experiment=shapes_reference_clean (shapes_world.sh)
if [ "${WORLD:-default}" = clean ]; then read -r -a WORLD_ARGS <<< "$(echo $CLEAN_WORLD)"; fi
if [ "${WORLD:-default}" = compose ]; then read -r -a WORLD_ARGS <<< "$(echo $COMPOSE_WORLD)"; fi
if [ "${WORLD:-default}" = bind ]; then read -r -a WORLD_ARGS <<< "$(echo $BIND_WORLD)"; fi
build_world "$DATA" "${NUM_SAMPLES:-12000}" 32 "$OUT/logs" "${WORLD_ARGS[@]}"
python -m miro.train experiment="${EXPERIMENT:-shapes_reference}" data.shards="$DATA/train" seed="${SEED:-0}" resume=latest \
    progress_bar=false hydra.run.dir="$OUT"
python scripts/experiments/text_conditioning.py curve --data "$DATA" --run "$OUT" --scales 0,0 3,0 3,1 3,3 \
    --targets clean --out "$OUT/curve.json"
if [ -d "$OUT/final" ]; then
    python scripts/experiments/text_conditioning.py curve --data "$DATA" --run "$OUT" --scales 3,1 --targets clean \
        --images 4 --out "$OUT/geneval_4images.json"
fi
