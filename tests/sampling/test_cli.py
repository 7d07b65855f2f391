import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from miro.sampling.cli import SampleConfig, run_images, run_sweep
from miro.utils.config import ConfigError, to_typed
from tests.sampling.test_sliders import MeanBrightness

ROOT = Path(__file__).absolute().parents[2]


def config(**kw) -> SampleConfig:
    return to_typed(OmegaConf.create(kw), SampleConfig)


def test_images_with_metadata_and_resume(tiny_pipe, saved_pipe, tmp_path):
    (tmp_path / "prompts.txt").write_text("two blue squares\n\n  a star  \n")
    cfg = config(pipeline=str(saved_pipe), prompts=["a red circle"], prompts_file=str(tmp_path / "prompts.txt"),
                 seeds=[3, 4], steps=3, batch_size=4, out_dir=str(tmp_path / "out"),
                 reward_targets={"aesthetic_score": 0.625, "pickscore": None}, text_guidance_scale=2.0)
    paths = run_images(cfg, pipe=tiny_pipe)
    assert [p.name for p in paths] == ["00000_s3.png", "00000_s4.png", "00001_s3.png", "00001_s4.png",
                                       "00002_s3.png", "00002_s4.png"]
    meta = json.loads(paths[3].with_suffix(".json").read_text())
    assert meta["prompt"] == "two blue squares" and meta["seed"] == 4 and meta["steps"] == 3
    assert meta["reward_targets"] == {"sharpness": 1.0, "aesthetic": 0.625, "pickscore": None}
    assert meta["negative_reward_targets"] == {"sharpness": 0.0, "aesthetic": 0.0, "pickscore": 0.0}
    assert meta["text_guidance_scale"] == 2.0 and meta["reward_guidance_scales"] == {r: 7.0 for r in meta["reward_targets"]}
    assert meta["nfe"] == 3 * 3 and meta["sampler"] == "euler" and meta["pipeline"] == str(saved_pipe)
    # the file is the image the pipeline gives for that prompt and seed
    direct = tiny_pipe("two blue squares", reward_targets={"aesthetic": 0.625, "pickscore": None}, num_inference_steps=3,
                       text_guidance_scale=2.0, generator=torch.Generator().manual_seed(4))[0]
    assert np.abs(np.asarray(Image.open(paths[3]), dtype=int) - np.asarray(direct, dtype=int)).max() <= 1

    # a killed job resumes: existing images are kept, missing ones are made
    paths[0].unlink()
    before = {p: p.stat().st_mtime_ns for p in paths[1:]}
    calls = []

    def counting(*a, **k):
        calls.append(len(a[0]))
        return tiny_pipe(*a, **k)

    counting.reward_names, counting.scheduler = tiny_pipe.reward_names, tiny_pipe.scheduler
    run_images(cfg, pipe=counting)
    assert calls == [1] and paths[0].is_file()
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_sweep_mode_writes_one_folder_per_prompt(tiny_pipe, saved_pipe, tmp_path):
    cfg = config(pipeline=str(saved_pipe), mode="sweep", prompts=["a red circle", "a star"], steps=2,
                 out_dir=str(tmp_path), sweep={"reward": "sharpness", "targets": [0.0, 1.0], "seeds": [0, 1]})
    folders = run_sweep(cfg, pipe=tiny_pipe, scorers={"brightness": MeanBrightness()})
    assert [f.name for f in folders] == ["sweep_000", "sweep_001"]
    data = json.loads((folders[1] / "sweep.json").read_text())
    assert data["prompt"] == "a star" and data["settings"]["pipeline"] == str(saved_pipe)
    assert len(data["scores"]["brightness"]) == 2 and (folders[1] / "grid.png").is_file()


def test_sweep_measures_with_the_annotate_scorers(tiny_pipe, saved_pipe, tmp_path):
    """By default the swept reward's own scorer (a real weight-free one here), else the listed ones."""
    from annotate.scorers import build_scorer

    base = dict(pipeline=str(saved_pipe), mode="sweep", prompts=["a red circle"], steps=2, device="cpu")
    sweep = {"reward": "sharpness", "targets": [0.0, 1.0], "seeds": [0, 1]}
    [own] = run_sweep(config(**base, out_dir=str(tmp_path / "own"), sweep=sweep), pipe=tiny_pipe)
    data = json.loads((own / "sweep.json").read_text())
    assert list(data["scores"]) == ["sharpness"]
    assert (own / "grid.png").is_file() and (own / "plot.png").is_file()
    image = tiny_pipe("a red circle", reward_targets={"sharpness": 1.0}, num_inference_steps=2,
                      generator=torch.Generator().manual_seed(1))[0]
    expected = build_scorer("sharpness").score([image], ["a red circle"])[0]
    assert data["scores"]["sharpness"][1][1] == pytest.approx(expected, rel=1e-3, abs=1e-6)
    [listed] = run_sweep(config(**base, out_dir=str(tmp_path / "listed"), sweep={**sweep, "scorers": ["contrast", "colorfulness"]}),
                         pipe=tiny_pipe)
    assert list(json.loads((listed / "sweep.json").read_text())["scores"]) == ["contrast", "colorfulness"]


@pytest.mark.parametrize(
    "kw,match",
    [
        ({}, "pipeline=''"),
        ({"pipeline": "p"}, "prompts"),
        ({"pipeline": "p", "prompts": ["a"], "sampler": "rk4"}, "sampler='rk4'"),
        ({"pipeline": "p", "prompts": ["a"], "steps": 0}, "steps=0"),
        ({"pipeline": "p", "prompts": ["a"], "mode": "sweep"}, "sweep.reward"),
        ({"pipeline": "p", "prompts": ["a"], "sweep": {"targets": [0.5, 1.5]}}, r"sweep.targets.*\[0, 1\]"),
        ({"pipeline": "p", "prompts": ["a"], "guidance_interval": [0.1]}, "guidance_interval"),
        ({"pipeline": "p", "prompts": ["a"], "dtype": "int8"}, "dtype='int8'"),
        ({"pipeline": "p", "prompts": ["a"], "stepz": 3}, "stepz"),
    ],
)
def test_config_errors_name_the_key(kw, match):
    with pytest.raises(ConfigError, match=match):
        config(**kw)


def test_command_line(saved_pipe, tmp_path):
    """`python -m miro.sampling` end to end through hydra, in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "miro.sampling", f"pipeline={saved_pipe}", "prompts=[a red circle]",
            "seeds=[0,1]", "steps=2", "device=cpu", f"out_dir={tmp_path}", "+reward_targets.sharpness=0.5"]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 images in" in proc.stdout
    assert json.loads((tmp_path / "00000_s1.json").read_text())["reward_targets"]["sharpness"] == 0.5
    assert (tmp_path / ".hydra" / "config.yaml").is_file()
