"""``python -m annotate``: score shards (``stage=score``, the default), compute statistics and buckets
(``stage=stats``), or convert sidecars to another score scale (``stage=rescale``).

    python -m annotate data.shards=/data/shards rewards=[pickscore,hpsv2,clip_score,aesthetic] device=cuda
    torchrun --nproc_per_node 8 -m annotate data.shards=/data/shards ...        # shards split by rank
    python -m annotate -m hydra/launcher=slurm array_count=32 'array_index=range(0,32)' data.shards=...
    python -m annotate stage=stats data.shards=/data/shards stats.num_bins=64
    python -m annotate stage=rescale scale=authors data.shards=/data/shards   # sidecars to the MIRO authors' scale
"""

from __future__ import annotations

from omegaconf import OmegaConf

from annotate.config import AnnotateConfig
from miro.contracts.rewards import our_names
from miro.utils.config import entry_point, rename_group_options


def run(typed: AnnotateConfig) -> None:
    if typed.stage == "score":
        from annotate.job import run_scoring

        run_scoring(typed, config_dict=OmegaConf.to_container(OmegaConf.structured(typed), resolve=True))
    elif typed.stage == "rescale":
        from annotate.rescale import run_rescale

        run_rescale(typed)
    else:
        from annotate.stats import run_stats

        run_stats(typed)


def _errors() -> tuple:
    """A missing shard folder, sidecar or weight file (the weight finder's WeightsNotFoundError is a
    FileNotFoundError), sidecars that cannot give statistics or would mix score scales, an output folder that
    cannot be written."""
    from annotate.stats import StatsError
    from miro.contracts.rewards import ScaleError
    from miro.utils.storage import OutputError

    return (FileNotFoundError, StatsError, ScaleError, OutputError)


def _argv(args: list[str]) -> list[str]:
    """The MIRO authors' keys select our reward's group file: ``rewards=[image_reward_score]`` is ``[imagereward]``."""
    return rename_group_options(args, "rewards", our_names)


main = entry_point("annotate", AnnotateConfig, run, errors=_errors, argv=_argv)


if __name__ == "__main__":
    main()
