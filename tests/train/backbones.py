"""The end-to-end check every backbone passes through the trainer: a run, the same run stopped and resumed (with
other initial weights, which the resume must overwrite), bit-identical checkpoints, logged losses and MFU, a
sample grid, and the export sampled by the pipeline."""

from __future__ import annotations

from unittest import mock

import numpy as np
import torch
from diffusers.pipelines import pipeline_utils
from safetensors.torch import load_file

from miro.models.config import ModelConfig
from miro.sampling.pipeline import MiroPipeline
from miro.train.loop import train
from tests.data.make_dataset import REWARDS
from tests.train.conftest import tiny_config
from tests.train.test_loop import scalars
from tests.train.tiny import TinyTextEncoder


def check_run_resumes_and_exports(tmp_path, shards_root, model: ModelConfig, components, class_name: str,
                                  layer_prefix: str) -> dict:  # fmt: skip
    """``components(seed)``: the run's Components.  Returns the uninterrupted run's last checkpoint."""

    def cfg(out, **kw):
        return tiny_config(out, shards_root, model=model, **kw)

    whole = train(cfg(tmp_path / "whole"), components(0))
    split = tmp_path / "split"
    train(cfg(split, stop_after=3), components(0))
    train(cfg(split, resume="latest"), components(5))
    a = load_file(whole / "checkpoints/checkpoint-6/model.safetensors")
    b = load_file(split / "checkpoints/checkpoint-6/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.startswith(layer_prefix) for k in a) and "null_text" in a
    logged = scalars(whole)
    assert all(np.isfinite(logged["train/loss"])) and all(v > 0 for v in logged["perf/mfu"])  # FLOPs counted
    assert logged["_images"]  # the sample grid rendered through the guided sampler
    with mock.patch.object(pipeline_utils.logger, "warning") as warned:
        pipe = MiroPipeline.from_pretrained(whole / "final", text_encoder=TinyTextEncoder())
    # MiroPipeline's annotation names every backbone (diffusers warns "Expected types for transformer" otherwise)
    assert not [c for c in warned.call_args_list if "Expected types for transformer" in str(c)], warned.call_args_list
    assert type(pipe.transformer).__name__ == class_name and pipe.reward_names == list(REWARDS)
    images = pipe(["a red circle"], num_inference_steps=3, guidance_scale=2.0, output_type="np")
    assert images.shape == (1, 16, 16, 3) and np.isfinite(images).all()
    return a
