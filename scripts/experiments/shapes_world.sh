#!/usr/bin/env bash
# Sourced by the experiment scripts: build_world DATA NUM_SAMPLES RESOLUTION LOGS builds a shapes world with
# the demo's stage commands (generate, annotate with the five weight-free rewards, statistics, feature cache).
# Every stage skips finished work, so calling it on a built world is cheap.
REWARDS="[sharpness,low_noise,colorfulness,contrast,alignment]"

build_world() {
    local data="$1" num="$2" res="$3" logs="$4"
    [ -f "$data/world.json" ] || python -m miro.data.shapes out="$data" num_samples="$num" resolution="$res" \
        shard_size=1000 seed=0 workers=2 hydra.run.dir="$logs/world"
    python -m annotate data.shards="$data/train" rewards="$REWARDS" workers=2 hydra.run.dir="$logs/annotate"
    python -m annotate stage=stats data.shards="$data/train" stats.num_bins=64 hydra.run.dir="$logs/stats"
    python -m miro.train.cache data.shards="$data/train" data.resolution="$res" reward_names="$REWARDS" \
        hydra.run.dir="$logs/cache"
}
