"""Entry for the 2-process test: ``accelerate launch --cpu --num_processes 2 tests/train/ddp_run.py OUT SHARDS``."""

import sys
from pathlib import Path

import torch

from tests.train.conftest import tiny_components, tiny_config

if __name__ == "__main__":
    torch.set_num_threads(1)
    from miro.train.loop import train

    out, shards = Path(sys.argv[1]), Path(sys.argv[2])
    cfg = tiny_config(out, shards, max_steps=4, checkpoint_every=2, batch_size=8, log_keys=True,
                      data={"sampling": "epoch", "shuffle_buffer": 4, "shuffle_initial": 2}, sample={"every": 4})
    train(cfg, tiny_components())
