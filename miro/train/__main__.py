"""``python -m miro.train [overrides]`` (hydra + accelerate); see miro/conf/train.yaml and docs/train.md.

    python -m miro.train                                  # the shapes-world demo
    python -m miro.train experiment=shapes_baseline       # the no-reward baseline
    python -m miro.train resume=latest                    # continue runs/<name>
    accelerate launch --multi_gpu --num_processes 8 -m miro.train experiment=miro_paper data.shards=...
"""

from __future__ import annotations

from miro.train.config import TrainConfig
from miro.train.launch import user_errors
from miro.utils.config import entry_point


def run(cfg: TrainConfig) -> None:
    from miro.train.launch import export_slurm_env
    from miro.train.loop import train

    export_slurm_env()
    out = train(cfg)
    print(f"run folder: {out}")


main = entry_point("train", TrainConfig, run, errors=user_errors)


if __name__ == "__main__":
    main()
