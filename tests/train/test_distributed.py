"""The commands end to end: ``python -m miro.train.cache`` then ``accelerate launch ... -m miro.train`` on two CPU
processes, with the real MiniLM text encoder, the real tiny-preset transformer class and pixel space."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from miro.sampling.pipeline import MiroPipeline
from miro.train.checkpoint import list_checkpoints, verify
from miro.utils.config import config_file
from tests.data.make_dataset import make_dataset

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def overrides(shards: Path, out: Path) -> list[str]:
    return [f"data.shards={shards}", "data.resolution=16", "data.num_workers=0", "data.sampling=epoch",
            "data.shuffle_buffer=4", "data.shuffle_initial=2", "reward_names=[sharpness,contrast,alignment]",
            "model.width=32", "model.depth=2", "model.num_heads=2", "model.patch_size=4", "model.cond_refiner_depth=0",
            "max_steps=4", "batch_size=8", "checkpoint_every=2", "log_every=2", "optim.warmup_steps=2",
            "sample.every=4", "sample.settings.steps=2", "sample.prompts=[a red circle,two blue squares]",
            "log_keys=true", "progress_bar=false", f"hydra.run.dir={out}"]


@pytest.mark.distributed
def test_cache_then_two_process_training_from_the_command_line(tmp_path):
    shards, out = tmp_path / "shards", tmp_path / "run"
    make_dataset(shards, n_shards=4, per_shard=12)
    args = overrides(shards, out)
    run([sys.executable, "-m", "miro.train.cache", *args], tmp_path)
    assert len(list(shards.glob("*.cache-*.safetensors"))) == 4
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file("accelerate", "cpu_ddp.yaml")),
              "--num_processes", "2", "--main_process_port", str(free_port()), "-m", "miro.train"]
    run([*launch, *args, "data.cache=true"], tmp_path)

    keys = [(out / "logs" / f"keys-rank{r}.txt").read_text().split() for r in (0, 1)]
    assert len(keys[0]) == len(keys[1]) == 16  # 4 steps x micro batch 4
    assert not set(keys[0]) & set(keys[1])  # epoch mode: each rank reads its own shards
    ckpts = out / "checkpoints"
    assert [s for s, _ in list_checkpoints(ckpts)] == [2, 4] and len(list(ckpts.iterdir())) == 2  # one per save
    for _, path in list_checkpoints(ckpts):
        names = {p.name for p in path.iterdir()}
        assert {"model.safetensors", "rng-rank0.safetensors", "rng-rank1.safetensors", "train_state.json", "manifest.json"} <= names
        assert not [n for n in names if n.endswith((".pkl", ".bin"))]  # nothing pickled
        assert verify(path) is None
    assert len(list((out / "samples").glob("step-*.png"))) == 1  # grids on the main process only
    pipe = MiroPipeline.from_pretrained(out / "final")  # what the sampling stage loads (MiniLM rebuilt)
    assert pipe.reward_names == ["sharpness", "contrast", "alignment"]
    image = pipe("a red circle", num_inference_steps=2, guidance_scale=2.0, output_type="np")
    assert image.shape == (1, 16, 16, 3) and np.isfinite(image).all()
    meta = json.loads((out / "final" / "miro_training.json").read_text())
    assert meta["text_encoder"].startswith("minilm:") and meta["autoencoder"] == "identity"
    assert (out / "config.yaml").is_file()
    assert "MFU" in (out / "logs" / "train.log").read_text()  # the CPU peak is measured when not configured
