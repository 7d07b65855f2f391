"""``python -m annotate``: score shards (``stage=score``, the default) or compute statistics and buckets (``stage=stats``).

    python -m annotate data.shards=/data/shards rewards=[pickscore,hpsv2,clip_score,aesthetic] device=cuda
    torchrun --nproc_per_node 8 -m annotate data.shards=/data/shards ...        # shards split by rank
    python -m annotate -m hydra/launcher=slurm array_count=32 'array_index=range(0,32)' data.shards=...
    python -m annotate stage=stats data.shards=/data/shards stats.num_bins=64
"""

from __future__ import annotations

from omegaconf import OmegaConf

from annotate.config import AnnotateConfig
from miro.utils.config import entry_point


def run(typed: AnnotateConfig) -> None:
    if typed.stage == "score":
        from annotate.job import run_scoring

        run_scoring(typed, config_dict=OmegaConf.to_container(OmegaConf.structured(typed), resolve=True))
    else:
        from annotate.stats import run_stats

        run_stats(typed)


def _errors() -> tuple:
    """A missing shard folder, sidecar or weight file (the weight finder's WeightsNotFoundError is a
    FileNotFoundError), sidecars that cannot give statistics, an output folder that cannot be written."""
    from annotate.stats import StatsError
    from miro.utils.storage import OutputError

    return (FileNotFoundError, StatsError, OutputError)


main = entry_point("annotate", AnnotateConfig, run, errors=_errors)


if __name__ == "__main__":
    main()
