"""The demo end to end at toy sizes: every stage command runs, the report names every figure and table."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_demo_end_to_end_at_toy_size(tmp_path):
    out = tmp_path / "demo"
    args = [
        f"out={out}", "num_samples=160", "shard_size=80", "train_steps=4", "batch_size=8", "warmup_steps=1",
        "sample_steps=2", "sweep_seeds=2", "geneval_samples=1", "workers=1", "num_bins=4",
    ]
    proc = subprocess.run([sys.executable, "-m", "miro.demo", *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = (out / "report.md").read_text()
    for fig in ("samples/targets_grid.png", "samples/loss_curve.png", "samples/data_extremes.png",
                "samples/sweeps/sharpness/plot.png", "geneval/comparison/comparison_bars.png"):
        assert (out / fig).exists(), fig
        assert fig in report, fig
    assert "| **overall** (mean of tasks) |" in report and "Spearman" in report
    if (ROOT / "models" / "shapes_reference" / "model_index.json").exists():  # the shipped model beside it
        assert (out / "samples/reference_targets_grid.png").exists() and "reference_targets_grid.png" in report
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings) >= {"world", "annotate", "stats", "cache", "train", "figures", "geneval_high", "compare"}
    # a second run resumes: the finished steps are skipped
    again = subprocess.run([sys.executable, "-m", "miro.demo", *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Build the shapes world: already done, skipped" in again.stdout
    assert "Train the reward-conditioned tiny model: already done, skipped" in again.stdout


def test_bad_value_stops_with_a_message(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "miro.demo", f"out={tmp_path}", "resolution=48"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "resolution=48: must be 32, 64, 128 or 256" in proc.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "train").exists()


def test_geneval_steps_ask_for_clean_targets_and_decoupled_guidance():
    from miro.demo.config import CLEAN_TARGETS, DemoConfig
    from miro.demo.steps import stage_steps

    commands = {s.name: s.command() for s in stage_steps(DemoConfig())}
    high, low = commands["geneval_high"], commands["geneval_low"]
    assert "generate.settings.reward_targets={" + ", ".join(f"{r}: {v}" for r, v in CLEAN_TARGETS.items()) + "}" in high
    assert "colorfulness: 0.0, contrast: 0.0" in low
    assert "generate.settings.text_guidance_scale=3.0 generate.settings.reward_guidance_scale=1.0" in high


def test_training_step_uses_the_demo_recipe_and_threads():
    from miro.demo.config import DemoConfig
    from miro.demo.steps import stage_steps

    steps = {s.name: s for s in stage_steps(DemoConfig(train_threads=2, threads=1))}
    train = steps["train"].command()
    for arg in ("model=tiny_unet", "batch_size=32", "optim.lr=0.002", "max_steps=1000"):
        assert f" {arg} " in train, train
    assert train.startswith("OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 ")  # runs alone: both cores
    assert steps["cache"].command().startswith("OMP_NUM_THREADS=2 ")
    assert steps["annotate"].command().startswith("OMP_NUM_THREADS=1 ")  # two workers share the cores


@pytest.mark.parametrize("override,message", [
    ("model_preset=nope", "model_preset='nope': must be a preset of miro/conf/model"),
    ("lr=0", "lr=0.0: must be > 0"),
    ("train_threads=0", "train_threads=0: must be >= 1"),
])
def test_bad_recipe_values_stop_before_any_work(tmp_path, override, message):
    proc = subprocess.run([sys.executable, "-m", "miro.demo", f"out={tmp_path}", override], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "data").exists()
