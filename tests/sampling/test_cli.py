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
from miro.sampling.pipeline import MiroPipelineOutput
from miro.utils.config import ConfigError, to_typed

ROOT = Path(__file__).absolute().parents[2]


def config(**kw) -> SampleConfig:
    return to_typed(OmegaConf.create(kw), SampleConfig)


def test_images_with_metadata_and_resume(tiny_pipe, saved_pipe, tmp_path):
    (tmp_path / "prompts.txt").write_text("two blue squares\n\n  a star  \n")
    cfg = config(pipeline=str(saved_pipe), prompts=["a red circle"], prompts_file=str(tmp_path / "prompts.txt"),
                 seeds=[3, 4], batch_size=4, out_dir=str(tmp_path / "out"),
                 settings={"steps": 3, "reward_targets": {"aesthetic_score": 0.625, "pickscore": None},
                           "text_guidance_scale": 2.0})
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


def test_metadata_is_what_the_pipeline_returned(tiny_pipe, saved_pipe, tmp_path):
    """The metadata written per image is the pipeline's own resolution of the settings (not recomputed)."""
    cfg = config(pipeline=str(saved_pipe), prompts=["a red circle"], seeds=[5], out_dir=str(tmp_path),
                 settings={"steps": 2, "reward_targets": {"pick_a_score_score": 0.3}, "negative_reward_targets": {"sharpness": None},
                           "text_guidance_scale": 1.5, "reward_guidance_weights": {"aesthetic": 0.0},
                           "guidance_interval": [0.2, 0.9], "sampler": "heun"})
    [path] = run_images(cfg, pipe=tiny_pipe)
    meta = json.loads(path.with_suffix(".json").read_text())
    out = tiny_pipe("a red circle", settings=cfg.settings, generator=torch.Generator().manual_seed(5), return_dict=True)
    assert isinstance(out, MiroPipelineOutput)
    assert meta["reward_targets"] == out.reward_targets[0] and meta["negative_reward_targets"] == out.negative_reward_targets[0]
    assert meta["reward_targets"] == {"sharpness": 1.0, "aesthetic": 1.0, "pickscore": pytest.approx(0.3)}
    assert meta["negative_reward_targets"] == {"sharpness": None, "aesthetic": 0.0, "pickscore": 0.0}
    assert meta["text_guidance_scale"] == out.guidance.text_scale == 1.5
    assert meta["reward_guidance_scales"] == dict(zip(tiny_pipe.reward_names, out.guidance.reward_scales)) == {
        "sharpness": 7.0, "aesthetic": 0.0, "pickscore": 7.0}
    assert meta["guidance_interval"] == list(out.guidance.interval) == [0.2, 0.9]
    assert meta["nfe"] == out.nfe and meta["sampler"] == "heun" and meta["steps"] == 2
    assert np.array_equal(np.asarray(Image.open(path)), np.asarray(out.images[0]))


def test_sweep_mode_writes_one_folder_per_prompt(tiny_pipe, saved_pipe, tmp_path):
    """Sweeps are rendered here (grid, images, settings); measuring them is eval's (tests/eval/test_sliders.py)."""
    cfg = config(pipeline=str(saved_pipe), mode="sweep", prompts=["a red circle", "a star"], settings={"steps": 2},
                 out_dir=str(tmp_path), sweep={"reward": "sharpness", "targets": [0.0, 1.0], "seeds": [0, 1]})
    folders = run_sweep(cfg, pipe=tiny_pipe)
    assert [f.name for f in folders] == ["sweep_000", "sweep_001"]
    data = json.loads((folders[1] / "sweep.json").read_text())
    assert data["prompt"] == "a star" and data["settings"]["pipeline"] == str(saved_pipe)
    assert data["settings"]["steps"] == 2 and (folders[1] / "grid.png").is_file()
    assert len(list((folders[1] / "images").glob("*.png"))) == 4


@pytest.mark.parametrize(
    "kw,match",
    [
        ({}, "pipeline=''"),
        ({"pipeline": "p"}, "prompts"),
        ({"pipeline": "p", "prompts": ["a"], "settings": {"sampler": "rk4"}}, "settings.sampler='rk4'"),
        ({"pipeline": "p", "prompts": ["a"], "settings": {"steps": 0}}, "settings.steps=0"),
        ({"pipeline": "p", "prompts": ["a"], "mode": "sweep"}, "sweep.reward"),
        ({"pipeline": "p", "prompts": ["a"], "sweep": {"targets": [0.5, 1.5]}}, r"sweep.targets.*\[0, 1\]"),
        ({"pipeline": "p", "prompts": ["a"], "settings": {"guidance_interval": [0.1]}}, "settings.guidance_interval"),
        ({"pipeline": "p", "prompts": ["a"], "settings": {"reward_targets": {"aesthetic": 1.5}}},
         r"settings.reward_targets.aesthetic=1.5: must be in \[0, 1\]"),
        ({"pipeline": "p", "prompts": ["a"], "steps": 3}, "steps"),  # the old top-level key is gone
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
            "seeds=[0,1]", "settings.steps=2", "device=cpu", f"out_dir={tmp_path}", "+settings.reward_targets.sharpness=0.5"]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 images in" in proc.stdout
    assert json.loads((tmp_path / "00000_s1.json").read_text())["reward_targets"]["sharpness"] == 0.5
    assert (tmp_path / ".hydra" / "config.yaml").is_file()
