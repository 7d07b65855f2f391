"""``python -m miro.train.cache [the training overrides]``: precompute the feature cache for ``data.shards``.

It reads the training config (miro/conf/train.yaml), so the text encoder, the autoencoder and the resolution
are exactly those training will ask for; then train with the same overrides plus ``data.cache=true``.
Split over processes like training (``torchrun`` / ``accelerate launch``), or over a SLURM array with
``cache_job.rank=$SLURM_ARRAY_TASK_ID cache_job.world_size=$SLURM_ARRAY_TASK_COUNT``.  Re-running skips
shards whose cache is complete, so a killed job resumes.

    python -m miro.train.cache                            # the shapes-world demo
    python -m miro.train.cache experiment=miro_paper data.shards=/data/cc12m-{000000..002175}.tar
"""

from __future__ import annotations

import logging

from miro.contracts.shards import find_shards
from miro.data.cache import cache_shards
from miro.train.config import TrainConfig
from miro.train.launch import user_errors
from miro.utils.config import entry_point

log = logging.getLogger("miro.train.cache")


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
    te.truncation_warnings = "once"  # long captions: one warning for the job, not one per batch
    ae = build_autoencoder(cfg.autoencoder).to(state.device)
    summary = cache_shards(shards, te, ae, cfg.data.resolution, cfg.data.cache_dir, root, job.batch_size, state.device,
                           rank, world, job.overwrite, progress=state.is_local_main_process)
    log.info("rank %d/%d: %d shard(s) written (%d samples, %d undecodable), %d already complete", rank, world,
             summary["written"], summary["samples"], summary["bad_samples"], summary["skipped_complete"])
    return summary


def run_and_report(cfg: TrainConfig) -> dict:
    summary = run(cfg)
    print(f"cache: {summary['written']} shard(s) written, {summary['skipped_complete']} already complete")
    return summary


main = entry_point("train", TrainConfig, run_and_report, errors=user_errors)


if __name__ == "__main__":
    main()
