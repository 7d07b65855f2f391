"""How the training and caching processes were launched: torchrun / accelerate, srun, or by hand.

accelerate sets up data parallelism from torch's variables (RANK, WORLD_SIZE, MASTER_ADDR, ...), and only
uses CPU processes (gloo) when told to use the CPU; these helpers make every supported launch end in the
right setup and refuse the ones that would silently train N independent copies (docs/train.md).
"""

from __future__ import annotations

import os

import torch

from miro.utils.config import ConfigError, config_file


def user_errors() -> tuple[type[BaseException], ...]:
    """What stops training and the feature cache on bad input (a missing shard, cache, statistics or weight
    file, an unusable checkpoint, a full disk or read-only run folder): ``python -m miro.train`` and ``python -m miro.train.cache`` show these as one ``error:`` line."""
    from miro.data.annotations import DataError
    from miro.data.cache import CacheError
    from miro.data.shards import ShardError
    from miro.train.checkpoint import CheckpointError
    from miro.utils.storage import OutputError

    return (DataError, CacheError, ShardError, CheckpointError, OutputError, FileNotFoundError)


_WORLD_ENV = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def export_slurm_env() -> None:
    """``srun python -m miro.train`` (or hydra's submitit launcher) starts one process per SLURM task
    without torch's variables: derive them from SLURM's (MASTER_ADDR = the first node of the job)."""
    if int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) <= 1 or "RANK" in os.environ:
        return
    try:
        from submitit.helpers import TorchDistributedEnvironment
    except ImportError:
        raise ConfigError("running as several SLURM tasks needs submitit to find the master node: "
                          "pip install 'miro-pretrain[slurm]' (or launch with torchrun / accelerate launch)") from None
    os.environ.setdefault("SUBMITIT_EXECUTOR", "slurm")  # how submitit recognises a SLURM job (plain srun too)
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def launched_world_size() -> int:
    return max(int(os.environ.get(k, 1)) for k in _WORLD_ENV)


def use_cpu(requested: bool) -> bool:
    """accelerate only runs CPU data parallelism when told to use the CPU."""
    return requested or (launched_world_size() > 1 and not torch.cuda.is_available())


def check_launch(num_processes: int) -> None:
    """Refuse launches that would silently train N independent copies, or one process instead of N."""
    requested = launched_world_size()
    if requested > 1 and num_processes != requested:
        raise ConfigError(f"launched as {requested} processes but accelerate runs {num_processes}: "
                          "every process would train its own copy")
    if num_processes == 1 and os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_ADDR" in os.environ:
        raise ConfigError(
            "`accelerate launch --cpu --num_processes N` starts ONE process unless mpirun is used "
            "(--mpirun_hostfile). For N CPU processes use `accelerate launch --config_file "
            f"{config_file('accelerate', 'cpu_ddp.yaml')} --num_processes N -m miro.train ...` or "
            "`torchrun --nproc_per_node N -m miro.train ...` (docs/train.md)")
