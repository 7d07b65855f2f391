import os

import pytest

from miro.train.launch import check_launch, export_slurm_env
from miro.utils.config import ConfigError


def test_launches_that_would_not_run_data_parallel_are_refused(monkeypatch):
    for k in ("WORLD_SIZE", "MASTER_ADDR", "ACCELERATE_USE_CPU"):
        monkeypatch.setenv(k, "")
        monkeypatch.delenv(k)
    check_launch(1)  # a plain single-process run
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")  # what `accelerate launch --cpu --num_processes 2` sets
    with pytest.raises(ConfigError, match="starts ONE process"):
        check_launch(1)
    monkeypatch.delenv("MASTER_ADDR")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="launched as 2 processes but accelerate runs 1"):
        check_launch(1)
    check_launch(2)


def test_srun_tasks_become_torch_ranks(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE", "SUBMITIT_EXECUTOR"):
        monkeypatch.setenv(k, "")  # recorded, so what export_slurm_env writes is undone after the test
        monkeypatch.delenv(k)
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NUM_TASKS": "4", "SLURM_NTASKS": "4", "SLURM_JOB_NUM_NODES": "2",
             "SLURM_NODEID": "1", "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_PROCID": "3", "SLURM_LOCALID": "1"}
    for k, v in slurm.items():
        monkeypatch.setenv(k, v)
    export_slurm_env()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("3", "4", "1")
    assert os.environ["MASTER_ADDR"] == "gpu07" and int(os.environ["MASTER_PORT"]) > 1023
    monkeypatch.setenv("RANK", "0")  # torchrun / accelerate already set it: left alone
    monkeypatch.setenv("SLURM_PROCID", "1")
    export_slurm_env()
    assert os.environ["RANK"] == "0"

