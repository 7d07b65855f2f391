#!/usr/bin/env bash
# Sourced by the experiment scripts: build_world DATA NUM_SAMPLES RESOLUTION LOGS builds a shapes world with
# the demo's stage commands (generate, annotate with the five weight-free rewards, statistics, feature cache).
# Every stage skips finished work, so calling it on a built world is cheap.  Any further arguments are
# overrides of the world generator (miro/conf/shapes.yaml), e.g. build_world DATA N RES LOGS $CLEAN_WORLD.
# WORKERS (default 2) sets the processes of the generation and annotation stages; WORLD_SEED (default 0, the
# demo's) the generator's seed.
REWARDS="[sharpness,low_noise,colorfulness,contrast,alignment]"
# The cleaner world of experiment=shapes_reference_clean: every degradation half as likely, no un-mentioned
# extra objects (49% of the images clean instead of 22%; docs/text_conditioning.md, section 12).
CLEAN_WORLD="scene.extra_objects=0.0 degradations.clutter.prob=0.1 degradations.blur.prob=0.12
degradations.low_contrast.prob=0.1 degradations.color_cast.prob=0.1 degradations.noise.prob=0.12
degradations.jpeg.prob=0.12"
# A diagnostic world (docs/text_conditioning.md, section 20): only the one-object tasks (single object, colours),
# every image clean, every caption correct, no un-mentioned objects: what is left to learn is the object's class,
# colour, size and place.
EASY_WORLD="scene.tasks.two_object=0 scene.tasks.counting=0 scene.tasks.position=0 scene.tasks.color_attr=0
scene.extra_objects=0.0 captions.wrong=0.0 degradations.clutter.prob=0 degradations.blur.prob=0
degradations.low_contrast.prob=0 degradations.color_cast.prob=0 degradations.noise.prob=0 degradations.jpeg.prob=0"

# A world whose captions hold more two-object compositions (docs/text_conditioning.md, section 31): colour
# attribution three times, position twice and two objects 1.5 times as likely as each one-object task or counting
# (32% of the images colour attribution instead of 17%).
COMPOSE_WORLD="scene.tasks.two_object=1.5 scene.tasks.position=2 scene.tasks.color_attr=3"
# The composition mix with binding hard negatives (docs/text_conditioning.md, section 36): a fifth of the captions
# wrong instead of 0.15, and most wrong colour-attribution captions with the two colours exchanged
# (captions.wrong_kinds.swapped_colors): 16% of the colour-attribution captions name every object and colour in the
# image and bind them the wrong way round, and the alignment reward scores them low.
BIND_WORLD="$COMPOSE_WORLD captions.wrong=0.2 captions.wrong_kinds.swapped_colors=8"

build_world() {
    local data="$1" num="$2" res="$3" logs="$4"
    shift 4
    [ -f "$data/world.json" ] || python -m miro.data.shapes out="$data" num_samples="$num" resolution="$res" \
        shard_size=1000 seed="${WORLD_SEED:-0}" workers="${WORKERS:-2}" hydra.run.dir="$logs/world" "$@"
    python -m annotate data.shards="$data/train" rewards="$REWARDS" workers="${WORKERS:-2}" hydra.run.dir="$logs/annotate"
    python -m annotate stage=stats data.shards="$data/train" stats.num_bins=64 hydra.run.dir="$logs/stats"
    python -m miro.train.cache data.shards="$data/train" data.resolution="$res" reward_names="$REWARDS" \
        hydra.run.dir="$logs/cache"
}
