import json

import numpy as np
import pytest
import torch
from PIL import Image

from miro.eval.sliders import ScoredSweep, save_scores, score_sweep, score_sweep_folder
from miro.sampling.sliders import SweepResult, reward_sweep, save_sweep


class MeanBrightness:
    """A trivial weight-free scorer: mean pixel value in [0, 1]."""

    name = "brightness"

    def score(self, images, prompts):
        assert len(images) == len(prompts)
        return np.array([np.asarray(im, dtype=np.float64).mean() / 255 for im in images])


def test_sweep_scores_are_those_of_the_pipeline_images(tiny_pipe, tmp_path):
    kw = dict(num_inference_steps=3, guidance_scale=2.0)
    result = reward_sweep(tiny_pipe, "a red circle", "aesthetic_score", targets=[0.0, 1.0], seeds=[7, 8],
                          fixed_targets={"pickscore": 0.5}, batch_size=3, **kw)
    scored = score_sweep(result, {"brightness": MeanBrightness()}, batch_size=3)
    for i, target in enumerate(result.targets):
        for j, seed in enumerate(result.seeds):
            direct = tiny_pipe("a red circle", reward_targets={"aesthetic": target, "pickscore": 0.5},
                               generator=torch.Generator().manual_seed(seed), **kw)[0]
            assert scored.scores["brightness"][i, j] == pytest.approx(MeanBrightness().score([direct], [""])[0], abs=2e-3)

    folder = tmp_path / "sweep"
    save_sweep(result, folder)
    from_folder = score_sweep_folder(folder, {"brightness": MeanBrightness()})
    np.testing.assert_array_equal(from_folder.scores["brightness"], scored.scores["brightness"])  # lossless PNGs
    assert Image.open(folder / "grid.png").size == (64 + 2 * 8, 20 + 2 * 8)
    assert Image.open(folder / "plot.png").size[0] > 100
    data = json.loads((folder / "sweep.json").read_text())
    assert data["targets"] == [0.0, 1.0] and data["seeds"] == [7, 8]
    assert data["scores"]["brightness"] == scored.scores["brightness"].tolist()
    assert data["settings"]["steps"] == 3 and data["settings"]["guidance_scale"] == 2.0
    assert data["summary"]["brightness"]["num_nan"] == 0


def _result(scores, targets=(0.0, 0.5, 1.0), seeds=(0, 1)):
    img = Image.new("RGB", (4, 4))
    sweep = SweepResult("p", "sharpness", list(targets), list(seeds), {}, [[img] * len(seeds)] * len(targets))
    return ScoredSweep(sweep, {"s": np.asarray(scores, dtype=np.float64)})


def test_summary_statistics(tmp_path):
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
    paths = save_scores(_result([[np.nan, np.nan]] * 3), tmp_path)
    json.loads(paths["json"].read_text())


def _sample_config(**kw):
    from omegaconf import OmegaConf

    from miro.sampling.cli import SampleConfig
    from miro.utils.config import to_typed

    return to_typed(OmegaConf.create(kw), SampleConfig)


def _eval_config(image_dir, **sliders):
    from miro.eval.config import EvalConfig
    from miro.utils.config import to_typed

    return to_typed({"command": "sliders", "image_dir": str(image_dir), "sliders": sliders}, EvalConfig)


def test_sweep_mode_then_sliders_command_one_folder_per_prompt(tiny_pipe, saved_pipe, tmp_path):
    from miro.eval.cli import run_sliders
    from miro.sampling.cli import run_sweep

    cfg = _sample_config(pipeline=str(saved_pipe), mode="sweep", prompts=["a red circle", "a star"], settings={"steps": 2},
                         out_dir=str(tmp_path), sweep={"reward": "sharpness", "targets": [0.0, 1.0], "seeds": [0, 1]})
    folders = run_sweep(cfg, pipe=tiny_pipe)
    assert [f.name for f in folders] == ["sweep_000", "sweep_001"]
    summaries = run_sliders(_eval_config(tmp_path), scorers={"brightness": MeanBrightness()})
    assert len(summaries) == 2
    data = json.loads((folders[1] / "sweep.json").read_text())
    assert data["prompt"] == "a star" and data["settings"]["pipeline"] == str(saved_pipe)
    assert len(data["scores"]["brightness"]) == 2 and (folders[1] / "grid.png").is_file()


def test_sliders_command_measures_with_the_annotate_scorers(tiny_pipe, saved_pipe, tmp_path):
    """By default the swept reward's own scorer (a real weight-free one here), else the listed ones."""
    from annotate.scorers import build_scorer
    from miro.eval.cli import run_sliders
    from miro.sampling.cli import run_sweep

    base = dict(pipeline=str(saved_pipe), mode="sweep", prompts=["a red circle"], settings={"steps": 2}, device="cpu")
    sweep = {"reward": "sharpness", "targets": [0.0, 1.0], "seeds": [0, 1]}
    [own] = run_sweep(_sample_config(**base, out_dir=str(tmp_path / "own"), sweep=sweep), pipe=tiny_pipe)
    run_sliders(_eval_config(tmp_path / "own", device="cpu"))
    data = json.loads((own / "sweep.json").read_text())
    assert list(data["scores"]) == ["sharpness"]
    assert (own / "grid.png").is_file() and (own / "plot.png").is_file()
    image = tiny_pipe("a red circle", reward_targets={"sharpness": 1.0}, num_inference_steps=2,
                      generator=torch.Generator().manual_seed(1))[0]
    expected = build_scorer("sharpness").score([image], ["a red circle"])[0]
    assert data["scores"]["sharpness"][1][1] == pytest.approx(expected, rel=1e-3, abs=1e-6)
    [listed] = run_sweep(_sample_config(**base, out_dir=str(tmp_path / "listed"), sweep=sweep), pipe=tiny_pipe)
    run_sliders(_eval_config(listed, scorers=["contrast", "colorfulness"], device="cpu"))  # one sweep folder itself
    assert list(json.loads((listed / "sweep.json").read_text())["scores"]) == ["contrast", "colorfulness"]


def test_sliders_command_without_sweeps(tmp_path):
    from miro.eval.cli import main

    with pytest.raises(SystemExit, match="no sweep.json"):
        main(["sliders", f"image_dir={tmp_path}"])
