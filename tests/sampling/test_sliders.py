import json

import numpy as np
import pytest
import torch
from PIL import Image

from miro.sampling.settings import SamplingSettings
from miro.sampling.sliders import load_sweep, reward_sweep, save_sweep


def test_sweep_images_are_the_pipeline_images_for_each_target_and_seed(tiny_pipe, tmp_path):
    kw = dict(num_inference_steps=3, guidance_scale=2.0)
    result = reward_sweep(tiny_pipe, "a red circle", "aesthetic_score", targets=[0.0, 1.0], seeds=[7, 8],
                          fixed_targets={"pickscore": 0.5}, batch_size=3, **kw)
    assert result.reward == "aesthetic" and result.fixed_targets == {"sharpness": 1.0, "pickscore": 0.5}
    for i, target in enumerate(result.targets):
        for j, seed in enumerate(result.seeds):
            direct = tiny_pipe("a red circle", reward_targets={"aesthetic": target, "pickscore": 0.5},
                               generator=torch.Generator().manual_seed(seed), **kw)[0]
            diff = np.abs(np.asarray(direct, dtype=int) - np.asarray(result.images[i][j], dtype=int)).max()
            assert diff <= 1  # the same image up to batch-size rounding

    paths = save_sweep(result, tmp_path / "sweep")
    grid = Image.open(paths["grid"])
    assert grid.size == (64 + 2 * 8, 20 + 2 * 8)
    data = json.loads(paths["json"].read_text())
    assert data["targets"] == [0.0, 1.0] and data["seeds"] == [7, 8]
    # the settings the pipeline resolved (the call's keyword arguments among them), not recomputed here
    assert data["settings"]["steps"] == kw["num_inference_steps"] and data["settings"]["guidance_scale"] == kw["guidance_scale"]
    assert data["settings"]["nfe"] == 3 * 2 and "reward_targets" not in data["settings"]
    # the images are saved losslessly, so a reader measures the pixels that were rendered
    loaded = load_sweep(paths["json"].parent)
    assert loaded.prompt == "a red circle" and loaded.targets == result.targets and loaded.settings == data["settings"]
    for row, saved in zip(result.images, loaded.images):
        for a, b in zip(row, saved):
            assert np.array_equal(np.asarray(a), np.asarray(b))


def test_sweep_takes_the_settings_schema(tiny_pipe):
    settings = SamplingSettings(steps=2, text_guidance_scale=1.5, reward_guidance_scale=0.5)
    by_settings = reward_sweep(tiny_pipe, "p", "sharpness", targets=[0.0, 1.0], seeds=[1], settings=settings)
    by_kwargs = reward_sweep(tiny_pipe, "p", "sharpness", targets=[0.0, 1.0], seeds=[1], num_inference_steps=2,
                             text_guidance_scale=1.5, reward_guidance_scale=0.5)
    assert by_settings.settings == by_kwargs.settings
    for a, b in zip(by_settings.images, by_kwargs.images):
        assert np.array_equal(np.asarray(a[0]), np.asarray(b[0]))


def test_sweep_errors(tiny_pipe):
    with pytest.raises(ValueError, match="allowed"):
        reward_sweep(tiny_pipe, "p", "hpsv2")
    with pytest.raises(ValueError, match="leave it out"):
        reward_sweep(tiny_pipe, "p", "sharpness", fixed_targets={"sharpness": 1.0})
    with pytest.raises(ValueError, match="non-empty"):
        reward_sweep(tiny_pipe, "p", "sharpness", seeds=[])
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        reward_sweep(tiny_pipe, "p", "sharpness", targets=[0.0, 2.0], num_inference_steps=1)
