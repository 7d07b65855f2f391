"""Runs the demo's steps in order and writes the report (see ``miro.demo``)."""

from __future__ import annotations

import time
from pathlib import Path

from miro.demo import figures
from miro.demo.config import DemoConfig
from miro.demo.report import write_report
from miro.demo.steps import Step, load_timings, run_step, save_timings, stage_steps


def make_figures(cfg: DemoConfig, timings: dict) -> tuple[dict, dict]:
    """The in-process part: one pipeline load for every figure."""
    import torch

    from miro.sampling.pipeline import MiroPipeline

    out = Path(cfg.out)
    samples = out / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    print("\n[figures] samples across reward targets, slider sweeps, loss curve, data extremes", flush=True)
    pipe = MiroPipeline.from_pretrained(str(out / "train" / "final"))
    pipe.set_progress_bar_config(disable=True)
    figs = {
        "targets": figures.targets_grid(pipe, cfg, samples / "targets_grid.png"),
        "loss": figures.loss_curve(out / "train", samples / "loss_curve.png"),
        "data": figures.data_extremes(cfg, samples / "data_extremes.png"),
        "reference": figures.reference_grid(cfg, samples / "reference_targets_grid.png"),
    }
    sweeps = figures.sweeps(pipe, cfg, samples / "sweeps")
    figures.write_json(samples / "sweeps.json", sweeps)
    seconds = time.perf_counter() - start
    timings["figures"] = {"seconds": round(seconds, 1), "command": "(in-process: miro.demo.figures)", "skipped": False}
    print(f"    done in {seconds:.0f} s", flush=True)
    return figs, sweeps


def run_demo(cfg: DemoConfig) -> Path:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    steps: list[Step] = stage_steps(cfg)
    before = [s for s in steps if not s.name.startswith(("geneval", "rewards", "compare"))]
    after = [s for s in steps if s not in before]
    total = len(steps) + 1
    timings = load_timings(out) if not cfg.fresh else {}  # a resumed demo keeps the times of finished steps
    start = time.perf_counter()
    for i, step in enumerate(before, 1):
        run_step(step, cfg, i, total, timings)
        save_timings(out, timings)
    figs, sweeps = make_figures(cfg, timings)
    save_timings(out, timings)
    for i, step in enumerate(after, len(before) + 2):
        run_step(step, cfg, i, total, timings)
        save_timings(out, timings)
    report = write_report(cfg, timings, figs, sweeps)
    print(f"\ndemo finished in {(time.perf_counter() - start) / 60:.1f} min; report: {report}", flush=True)
    return report
