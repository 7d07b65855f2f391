"""``report.md``: what the demo ran, what it measured, and the pictures, in one page."""

from __future__ import annotations

import json
import re
from pathlib import Path

from miro.demo.config import DemoConfig

ORACLE_NOTE = (
    "Read these against the benchmark's own ceiling: clean renders that satisfy every prompt score about 90% "
    "overall at 32 px (counting suffers most: the detector needs a 0.9 score and small objects fall below it) "
    "and 99.8% at 64 px (docs/eval.md)."
)


def _fmt(v, digits=3) -> str:
    if v is None:
        return "n/a"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def _rel(path: Path, out: Path) -> str:
    return str(Path(path).resolve().relative_to(out.resolve()))


def sweep_table(sweeps: dict[str, dict]) -> str:
    lines = [
        "| reward | prompt | measured at target 0 | at 0.5 | at 1 | Spearman ρ (target, measured) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for reward, info in sweeps.items():
        s = info["summary"][reward]
        mean = s["mean"]
        mid = mean[len(mean) // 2]
        lines.append(
            f"| {reward} | {info['prompt']} | {_fmt(mean[0])} | {_fmt(mid)} | {_fmt(mean[-1])} | {_fmt(s['spearman'], 2)} |"
        )
    return "\n".join(lines)


def geneval_table(high: dict | None, low: dict | None) -> str:
    if not high or not low:
        return "(GenEval did not run)"
    lines = ["| task | all rewards at 0 | clean-image targets |", "|---|---:|---:|"]
    for tag in high["tasks"]:
        lo = low["tasks"].get(tag, {}).get("accuracy")
        lines.append(f"| {tag} | {lo:.1%} | {high['tasks'][tag]['accuracy']:.1%} |")
    lines.append(f"| **overall** (mean of tasks) | **{low['overall']:.1%}** | **{high['overall']:.1%}** |")
    lines.append(f"| correct prompts (any sample) | {low['correct_prompts']:.1%} | {high['correct_prompts']:.1%} |")
    return "\n".join(lines)


def last_status(train_dir: Path) -> str:
    log = train_dir / "logs" / "train.log"
    if not log.exists():
        return ""
    lines = [ln for ln in log.read_text().splitlines() if re.search(r"step \d+/\d+", ln)]
    return lines[-1].split("miro.train: ")[-1] if lines else ""


def _reference_section(figures: dict, out: Path, cfg: DemoConfig) -> list[str]:
    if not figures.get("reference"):
        return []
    readme = Path(cfg.reference) / "README.md"
    return [
        "### The same prompts and targets, from the shipped reference model",
        "",
        f"![reference model across reward targets]({_rel(figures['reference'], out)})",
        "",
        f"`{cfg.reference}`: a model trained longer with the project's own commands (its preset, recipe and "
        f"held-out GenEval: `{readme}`).",
        "",
    ]


def write_report(cfg: DemoConfig, timings: dict, figures: dict, sweeps: dict[str, dict]) -> Path:
    out = Path(cfg.out)
    geneval = out / "geneval"

    def load(path: Path):
        return json.loads(path.read_text()) if path.exists() else None

    high, low = load(geneval / "high" / "summary.json"), load(geneval / "low" / "summary.json")
    comparison = geneval / "comparison" / "comparison.md"
    total = sum(t["seconds"] for t in timings.values())
    parts = [
        "# MIRO demo: a reward-conditioned text-to-image model trained on this machine",
        "",
        f"The shapes world ({cfg.num_samples} images at {cfg.resolution} px with a web-like spread of quality and "
        f"wrong captions) was annotated with {len(cfg.rewards)} weight-free rewards ({', '.join(cfg.rewards)}), "
        f"binned into {cfg.num_bins} quantile buckets, and a tiny flow-matching transformer (preset `{cfg.model_preset}`) "
        f"conditioned on text and on one token per reward was trained for {cfg.train_steps} steps of "
        f"{cfg.batch_size} images at learning rate {cfg.lr:g}. "
        f"Sampling uses {cfg.sample_steps} Euler steps with decoupled guidance: text scale {cfg.text_guidance_scale:g}, "
        f"reward scale {cfg.reward_guidance_scale:g} (negative branch: null text, every reward at 0; with reward scale "
        f"0 the rewards act through their targets alone). Wall time of the steps below: {total / 60:.1f} min.",
        "",
        "## Asking for a higher reward",
        "",
        f"![samples across reward targets]({_rel(figures['targets'], out)})",
        "",
        "Each row but the last asks for every reward at the same target, the last for the clean-image targets "
        "(per reward the median of the clean, correctly captioned training images); each column keeps its prompt "
        "(two seeds each) and its "
        "initial noise. Low targets ask for what the low buckets of the data look like (noise, blur, washed-out "
        "colours, missing objects), high targets for the top buckets of every reward at once (clean, sharp, "
        "saturated, high-contrast). At the demo's compute (a 2M-parameter model, about ten minutes of CPU "
        "training) the model learns these reward axes long before it learns object shapes and follows prompts: "
        "the caption's words can explain only about 3% of the pixel variance of this world, against most of it for "
        "the degradations the rewards describe, so expect blobs of the right quality rather than the right objects, "
        "and a low GenEval below (docs/text_conditioning.md measures why and how it grows with training).",
        "",
        *_reference_section(figures, out, cfg),
        "## One slider at a time",
        "",
        "Each reward swept from 0 to 1 with the others at 1, "
        f"{cfg.sweep_seeds} seeds per target, measured with the reward's own scorer on the generated images:",
        "",
        sweep_table(sweeps),
        "",
    ]
    for reward, info in sweeps.items():
        parts.append(f"![{reward} sweep]({_rel(info['paths']['plot'], out)}) ")
    parts += [
        "",
        "Grids of each sweep (rows: target, columns: seed): "
        + ", ".join(f"[{r}]({_rel(i['paths']['grid'], out)})" for r, i in sweeps.items()),
        "",
        "## Held-out compositions: shapes-world GenEval",
        "",
        "GenEval's rules with the programmatic detector on the held-out prompts (colour-class pairs and relations "
        f"never captioned in training), {cfg.geneval_samples} images per prompt:",
        "",
        geneval_table(high, low),
        "",
        ORACLE_NOTE,
        "",
        "## The rewards of those images",
        "",
        comparison.read_text().strip() if comparison.exists() else "(not measured)",
        "",
    ]
    bars = geneval / "comparison" / "comparison_bars.png"
    if bars.exists():
        parts += [f"![rewards at targets 0 and 1]({_rel(bars, out)})", ""]
    parts += ["## Training", ""]
    if figures.get("loss"):
        parts += [f"![loss curve]({_rel(figures['loss'], out)})", ""]
    status = last_status(out / "train")
    if status:
        parts += [f"Last status line: `{status}`", ""]
    parts += [
        "The training data at its extremes (first shard, by mean reward bucket):",
        "",
        f"![training data extremes]({_rel(figures['data'], out)})",
        "",
        "## What ran",
        "",
        "| step | seconds | command |",
        "|---|---:|---|",
    ]
    for name, t in timings.items():
        secs = "skipped" if t.get("skipped") else f"{t['seconds']:.0f}"
        parts.append(f"| {name} | {secs} | `{t['command']}` |")
    parts.append("")
    path = out / "report.md"
    path.write_text("\n".join(parts))
    return path
