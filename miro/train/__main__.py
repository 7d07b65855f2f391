"""``python -m miro.train [overrides]`` (hydra + accelerate); see miro/conf/train.yaml and docs/train.md.

    python -m miro.train                                  # the shapes-world demo
    python -m miro.train experiment=shapes_baseline       # the no-reward baseline
    python -m miro.train resume=latest                    # continue runs/<name>
    accelerate launch --multi_gpu --num_processes 8 -m miro.train experiment=miro_paper data.shards=...
"""

from __future__ import annotations

from miro.train.config import TrainConfig
from miro.utils.config import CONFIG_PATH, register_schema, to_typed

register_schema("train_schema", TrainConfig)


def main() -> None:
    import hydra

    @hydra.main(config_path=CONFIG_PATH, config_name="train", version_base="1.3")
    def _app(hcfg) -> None:
        from miro.train.launch import export_slurm_env
        from miro.train.loop import train

        export_slurm_env()
        cfg = to_typed(hcfg, TrainConfig)
        out = train(cfg)
        print(f"run folder: {out}")

    _app()


if __name__ == "__main__":
    main()
