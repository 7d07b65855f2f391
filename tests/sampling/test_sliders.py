import json

import numpy as np
import pytest
import torch
from PIL import Image

from miro.sampling.sliders import SweepResult, reward_sweep, save_sweep


class MeanBrightness:
    """A trivial weight-free scorer: mean pixel value in [0, 1]."""

    name = "brightness"

    def score(self, images, prompts):
        assert len(images) == len(prompts)
        return np.array([np.asarray(im, dtype=np.float64).mean() / 255 for im in images])


def test_sweep_images_are_the_pipeline_images_for_each_target_and_seed(tiny_pipe, tmp_path):
    kw = dict(num_inference_steps=3, guidance_scale=2.0)
    result = reward_sweep(tiny_pipe, "a red circle", "aesthetic_score", targets=[0.0, 1.0], seeds=[7, 8],
                          scorers={"brightness": MeanBrightness()}, fixed_targets={"pickscore": 0.5},
                          batch_size=3, **kw)
    assert result.reward == "aesthetic" and result.fixed_targets == {"sharpness": 1.0, "pickscore": 0.5}
    for i, target in enumerate(result.targets):
        for j, seed in enumerate(result.seeds):
            direct = tiny_pipe("a red circle", reward_targets={"aesthetic": target, "pickscore": 0.5},
                               generator=torch.Generator().manual_seed(seed), **kw)[0]
            diff = np.abs(np.asarray(direct, dtype=int) - np.asarray(result.images[i][j], dtype=int)).max()
            assert diff <= 1  # the same image up to batch-size rounding
            assert result.scores["brightness"][i, j] == pytest.approx(MeanBrightness().score([direct], [""])[0], abs=2e-3)

    paths = save_sweep(result, tmp_path / "sweep")
    grid = Image.open(paths["grid"])
    assert grid.size == (64 + 2 * 8, 20 + 2 * 8)
    assert Image.open(paths["plot"]).size[0] > 100
    data = json.loads(paths["json"].read_text())
    assert data["targets"] == [0.0, 1.0] and data["seeds"] == [7, 8]
    assert data["scores"]["brightness"] == result.scores["brightness"].tolist()
    assert data["settings"] == kw


def _result(scores, targets=(0.0, 0.5, 1.0), seeds=(0, 1)):
    img = Image.new("RGB", (4, 4))
    return SweepResult("p", "sharpness", list(targets), list(seeds), {}, [[img] * len(seeds)] * len(targets),
                       {"s": np.asarray(scores, dtype=np.float64)})


def test_summary_statistics():
    s = _result([[0.1, 0.3], [0.4, 0.6], [0.9, 1.1]]).summary()["s"]
    assert s["mean"] == pytest.approx([0.2, 0.5, 1.0]) and s["std"] == pytest.approx([0.1, 0.1, 0.1])
    # Spearman = Pearson of the ranks; the tied targets share ranks
    ranks = np.corrcoef([1.5, 1.5, 3.5, 3.5, 5.5, 5.5], [1, 2, 3, 4, 5, 6])[0, 1]
    assert s["spearman"] == pytest.approx(ranks)
    # ties in the targets: rho of (0,0,.5,.5,1,1) against decreasing scores
    assert _result([[3, 3], [2, 2], [1, 1]]).summary()["s"]["spearman"] == pytest.approx(-1.0)
    nan = _result([[np.nan, 1], [2, np.nan], [3, 3]]).summary()["s"]
    assert nan["num_nan"] == 2 and nan["mean"] == pytest.approx([1, 2, 3]) and nan["spearman"] == pytest.approx(1.0)
    const = _result([[1, 1], [1, 1], [1, 1]]).summary()["s"]
    assert const["spearman"] is None  # undefined, written as null, not NaN
    json.dumps(_result([[np.nan, np.nan]] * 3).to_json(), allow_nan=False)


def test_sweep_errors(tiny_pipe):
    with pytest.raises(ValueError, match="allowed"):
        reward_sweep(tiny_pipe, "p", "hpsv2")
    with pytest.raises(ValueError, match="leave it out"):
        reward_sweep(tiny_pipe, "p", "sharpness", fixed_targets={"sharpness": 1.0})
    with pytest.raises(ValueError, match="non-empty"):
        reward_sweep(tiny_pipe, "p", "sharpness", seeds=[])
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        reward_sweep(tiny_pipe, "p", "sharpness", targets=[0.0, 2.0], num_inference_steps=1)
