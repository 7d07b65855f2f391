"""``python -m miro.cache [the training overrides]``: precompute the feature cache for ``data.shards``.

It reads the training config (conf/train.yaml), so the text encoder, the autoencoder and the resolution
are exactly those training will ask for; then train with the same overrides plus ``data.cache=true``.
Split over processes like training (``torchrun`` / ``accelerate launch``), or over a SLURM array with
``cache_job.rank=$SLURM_ARRAY_TASK_ID cache_job.world_size=$SLURM_ARRAY_TASK_COUNT``.  Re-running skips
shards whose cache is complete, so a killed job resumes.

    python -m miro.cache                                  # the shapes-world demo
    python -m miro.cache experiment=miro_paper data.shards=/data/cc12m-{000000..002175}.tar
"""

from __future__ import annotations

import logging
from pathlib import Path

from miro.contracts.shards import find_shards
from miro.data.cache import cache_shards
from miro.train.config import TrainConfig
from miro.utils.config import register_schema, to_typed

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")
register_schema("train_schema", TrainConfig)
log = logging.getLogger("miro.cache")


def run(cfg: TrainConfig) -> dict:
    from accelerate import PartialState

    from miro.models.config import build_autoencoder, build_text_encoder
    from miro.train.launch import export_slurm_env, use_cpu

    job = cfg.cache_job
    export_slurm_env()
    state = PartialState(cpu=use_cpu(cfg.cpu))
    rank, world = (job.rank, job.world_size) if job.world_size is not None else (state.process_index, state.num_processes)
    shards, root = find_shards(cfg.data.shards, cfg.data.root, resolve=True)
    te = build_text_encoder(cfg.text_encoder).to(state.device)
    ae = build_autoencoder(cfg.autoencoder).to(state.device)
    summary = cache_shards(shards, te, ae, cfg.data.resolution, cfg.data.cache_dir, root, job.batch_size, state.device,
                           rank, world, job.overwrite, progress=state.is_local_main_process)
    log.info("rank %d/%d: %d shard(s) written (%d samples, %d undecodable), %d already complete", rank, world,
             summary["written"], summary["samples"], summary["bad_samples"], summary["skipped_complete"])
    return summary


def main() -> None:
    import hydra

    @hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
    def _app(hcfg) -> None:
        summary = run(to_typed(hcfg, TrainConfig))
        print(f"cache: {summary['written']} shard(s) written, {summary['skipped_complete']} already complete")

    _app()


if __name__ == "__main__":
    main()
