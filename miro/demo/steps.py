"""The demo's stage commands: the same command lines the README documents, run one after another.

Each step is a subprocess of the current interpreter (so its progress bar shows and a failure names the
command), skipped when its output already exists: a killed demo resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from miro.demo.config import DemoConfig


class DemoError(RuntimeError):
    """A stage of the demo failed; the message names the command."""


@dataclass
class Step:
    name: str
    title: str
    args: list[str]  # after `python -m`
    done: Callable[[], bool]
    env: dict | None = None

    def command(self) -> str:
        env = " ".join(f"{k}={v}" for k, v in (self.env or {}).items())
        return (env + " " if env else "") + "python -m " + " ".join(shlex.quote(a) for a in self.args)


def rewards_arg(cfg: DemoConfig) -> str:
    return "rewards=[" + ",".join(cfg.rewards) + "]"


def targets_arg(key: str, cfg: DemoConfig, value: float | dict[str, float]) -> str:
    """``value`` for every reward, or per reward from a mapping (rewards it leaves out: 1.0)."""
    per = value if isinstance(value, dict) else {r: value for r in cfg.rewards}
    return f"{key}={{" + ", ".join(f"{r}: {per.get(r, 1.0)}" for r in cfg.rewards) + "}"


def stage_steps(cfg: DemoConfig) -> list[Step]:
    out = Path(cfg.out)
    data, train, geneval = out / "data", out / "train", out / "geneval"
    shards = str(data / "train")
    logs = out / "logs"
    one_thread = {"OMP_NUM_THREADS": str(cfg.threads), "MKL_NUM_THREADS": str(cfg.threads)}
    # the cache and training stages run alone, so they may use more threads than the parallel stages
    alone = {"OMP_NUM_THREADS": str(cfg.train_threads), "MKL_NUM_THREADS": str(cfg.train_threads)}
    train_common = [
        f"data.shards={shards}", f"seed={cfg.seed}", f"data.resolution={cfg.resolution}",
        f"reward_names=[{','.join(cfg.rewards)}]",
    ]
    steps = [
        Step("world", "Build the shapes world", [
            "miro.data.shapes", f"out={data}", f"num_samples={cfg.num_samples}", f"resolution={cfg.resolution}",
            f"shard_size={cfg.shard_size}", f"seed={cfg.seed}", f"workers={cfg.workers}", f"hydra.run.dir={logs}/world",
        ], lambda: (data / "world.json").exists() and any((data / "train").glob("*.tar"))),
        Step("annotate", "Score every image with the weight-free rewards", [
            "annotate", f"data.shards={shards}", rewards_arg(cfg), f"workers={cfg.workers}",
            f"hydra.run.dir={logs}/annotate",
        ], lambda: False, one_thread),  # the job itself skips complete shards
        Step("stats", "Dataset-wide quantile bins and per-sample buckets", [
            "annotate", "stage=stats", f"data.shards={shards}", f"stats.num_bins={cfg.num_bins}",
            f"hydra.run.dir={logs}/stats",
        ], lambda: False, one_thread),  # cheap, and rewrites only stale bucket files
        Step("cache", "Precompute text embeddings and pixels beside the shards", [
            "miro.train.cache", *train_common, f"hydra.run.dir={logs}/cache",
        ], lambda: False, alone),  # skips complete shards
        Step("train", "Train the reward-conditioned tiny model", [
            "miro.train", *train_common, f"model={cfg.model_preset}", "data.cache=true", f"max_steps={cfg.train_steps}",
            f"batch_size={cfg.batch_size}", f"optim.lr={cfg.lr}", f"optim.warmup_steps={cfg.warmup_steps}",
            "data.num_workers=1", targets_arg("recommended_reward_targets", cfg, dict(cfg.high_targets)),
            f"checkpoint_every={cfg.train_steps}", f"sample.every={cfg.train_steps}", "log_every=50",
            "name=demo", f"hydra.run.dir={train}",
        ], lambda: (train / "final" / "model_index.json").exists(), alone),
    ]
    for level, value in (("high", dict(cfg.high_targets)), ("low", 0.0)):
        folder = geneval / level
        what = "clean-image reward targets" if isinstance(value, dict) else f"all rewards at {value}"
        steps.append(Step(f"geneval_{level}", f"Shapes-world GenEval on the held-out prompts, {what}", [
            "miro.eval", "geneval", f"image_dir={folder}", f"generate.pipeline={train / 'final'}",
            f"prompts.metadata={data / 'heldout' / 'evaluation_metadata.jsonl'}", "detector=shapes",
            f"generate.n_samples={cfg.geneval_samples}", f"generate.settings.steps={cfg.sample_steps}",
            f"generate.settings.guidance_scale={cfg.text_guidance_scale}",
            f"generate.settings.text_guidance_scale={cfg.text_guidance_scale}",
            f"generate.settings.reward_guidance_scale={cfg.reward_guidance_scale}",
            targets_arg("generate.settings.reward_targets", cfg, value),
            "generate.grid=false",
        ], lambda folder=folder: (folder / "summary.json").exists(), one_thread))
        steps.append(Step(f"rewards_{level}", f"Reward metrics of those images ({what})", [
            "miro.eval", "rewards", f"image_dir={folder}", rewards_arg(cfg),
        ], lambda folder=folder: (folder / "rewards_summary.json").exists(), one_thread))
    steps.append(Step("compare", "Compare the rewards measured at low and high targets", [
        "miro.eval", "compare", f"compare.runs=[{geneval / 'low'},{geneval / 'high'}]",
        "compare.labels=[targets 0,clean targets]", f"compare.out_dir={geneval / 'comparison'}",
    ], lambda: (geneval / "comparison" / "comparison.md").exists(), one_thread))
    return steps


def run_step(step: Step, cfg: DemoConfig, index: int, total: int, timings: dict) -> None:
    header = f"[{index}/{total}] {step.title}"
    if not cfg.fresh and step.done():
        print(f"{header}: already done, skipped", flush=True)
        timings.setdefault(step.name, {"seconds": 0.0, "command": step.command(), "skipped": True})
        return
    print(f"\n{header}\n    $ {step.command()}", flush=True)
    env = {**os.environ, **(step.env or {})}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", *step.args], env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise DemoError(f"step '{step.name}' failed with exit code {proc.returncode}: {step.command()}")
    timings[step.name] = {"seconds": round(seconds, 1), "command": step.command(), "skipped": False}
    print(f"    done in {seconds:.0f} s", flush=True)


def load_timings(out: Path) -> dict:
    path = out / "timings.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_timings(out: Path, timings: dict) -> None:
    tmp = out / "timings.json.tmp"
    tmp.write_text(json.dumps(timings, indent=2))
    tmp.replace(out / "timings.json")
