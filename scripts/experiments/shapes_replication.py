"""The MIRO claims measured on the shapes world: baseline (no reward tokens) versus reward-conditioned, equal compute.

    python scripts/experiments/shapes_replication.py all --out runs/replication        # data, both trainings, every measure
    python scripts/experiments/shapes_replication.py report --out runs/replication --docs docs

Phases (each skips what is already on disk, so a killed run resumes): ``data`` (the demo's world, weight-free
annotation, statistics and cache), ``train`` (both models in parallel, same data, seed, batch, schedule and
steps, an EMA pipeline exported every ``--export-every`` steps), ``curves`` (shapes-world GenEval on the held-out
compositions and the five rewards for every export of both runs), ``sliders`` (Spearman between each reward's
target and its measured value), ``tradeoff`` (one target swept, the others high, against GenEval), ``report``
(``results.json``, PNGs and ``docs/replication.md``).

Protocol choices are the demo's (``miro/conf/demo.yaml``) unless given here; the conditioned model is sampled with
every target at 1 and the joint guidance of the MIRO authors (negatives 0), the baseline with plain text
guidance at the same scale, the same noise per image and the same number of steps.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
RUNS = ("baseline", "miro")
DEFAULT_REWARDS = ("sharpness", "low_noise", "colorfulness", "contrast", "alignment")


# ----------------------------------------------------------------------------------------------- set-up
def demo_config(args):
    from miro.demo.config import DemoConfig

    return DemoConfig(out=str(args.out), num_samples=args.num_samples, rewards=list(DEFAULT_REWARDS),
                      train_steps=args.steps, threads=1)  # fmt: skip


def one_thread_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def phase_data(args) -> None:
    from miro.demo.steps import run_step, stage_steps

    cfg = demo_config(args)
    steps = [s for s in stage_steps(cfg) if s.name in ("world", "annotate", "stats", "cache")]
    timings: dict = {}
    for i, step in enumerate(steps, 1):
        run_step(step, cfg, i, len(steps), timings)


def train_command(args, run: str) -> list[str]:
    out = Path(args.out)
    rewards = "[" + ",".join(DEFAULT_REWARDS) + "]" if run == "miro" else "[]"
    return [
        sys.executable, "-m", "miro.train", f"data.shards={out / 'data' / 'train'}", "seed=0", "data.resolution=32",
        f"reward_names={rewards}", "data.cache=true", f"max_steps={args.steps}", "batch_size=64",
        "optim.warmup_steps=100", "data.num_workers=1", f"checkpoint_every={args.steps}", f"sample.every={args.steps}",
        "log_every=50", f"export_every={args.export_every}", f"name={run}", f"hydra.run.dir={out / 'train' / run}",
    ]  # fmt: skip


def phase_train(args) -> None:
    """Both trainings at once, one thread each (this machine has two cores)."""
    procs = {}
    for run in RUNS:
        if (Path(args.out) / "train" / run / "final" / "model_index.json").exists():
            print(f"[train] {run}: done, skipped")
            continue
        cmd = train_command(args, run)
        log = Path(args.out) / "logs" / f"train_{run}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"[train] {run}: {' '.join(cmd[1:])}  (log: {log})", flush=True)
        procs[run] = subprocess.Popen(cmd, env=one_thread_env(), stdout=log.open("w"), stderr=subprocess.STDOUT)
    for run, proc in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"[train] {run} failed (exit {proc.returncode}); see {Path(args.out) / 'logs'}")


# ------------------------------------------------------------------------------------------ measurement
def heldout_items(args) -> list[dict]:
    from miro.eval.geneval.prompts import load_metadata

    return load_metadata(Path(args.out) / "data" / "heldout" / "evaluation_metadata.jsonl")


def load_pipe(path: Path):
    import torch

    from miro.sampling.pipeline import MiroPipeline

    torch.set_num_threads(1)
    pipe = MiroPipeline.from_pretrained(str(path))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def render(pipe, prompts: list[str], seeds: list[int], targets: list[dict], args, guidance: float | None = None) -> list:
    """One image per (prompt, seed, targets), batched; each image's noise comes from its own seed, so the
    same (prompt, seed) starts from the same noise in every run and at every target."""
    import torch

    from miro.sampling.targets import free_negatives

    images = []
    for start in range(0, len(prompts), args.batch_size):
        sl = slice(start, start + args.batch_size)
        # a free reward (target None) is free in the negative branch too, so guidance does not push it
        negatives = [free_negatives(t) or {} for t in targets[sl]]
        images += pipe(
            prompts[sl], reward_targets=targets[sl], negative_reward_targets=negatives,
            generator=[torch.Generator().manual_seed(s) for s in seeds[sl]],
            guidance_scale=args.guidance_scale if guidance is None else guidance, num_inference_steps=args.sample_steps,
        )  # fmt: skip
    return images


def geneval_folder(pipe, items: list[dict], folder: Path, n_samples: int, targets: dict, args, scorers,
                   guidance: float | None = None) -> dict:
    """GenEval's layout for ``items`` x ``n_samples``, scored with the shapes detector and the rewards."""
    from miro.data.shapes.detector import default_detector
    from miro.eval.geneval.evaluate import PerImageDetector, evaluate_folder
    from miro.eval.geneval.layout import write_prompt_folder
    from miro.eval.geneval.summary import load_results, summarize
    from miro.eval.rewards import score_folder, summarize_rewards

    done = folder / "measures.json"
    if done.exists():
        return json.loads(done.read_text())
    jobs = [(i, k) for i in range(len(items)) for k in range(n_samples)]
    known = [r for r in targets if r in pipe.reward_names]
    images = render(pipe, [items[i]["prompt"] for i, _ in jobs], [10_000 * k + i for i, k in jobs],
                    [{r: targets[r] for r in known}] * len(jobs), args, guidance)  # fmt: skip
    for i in range(len(items)):
        write_prompt_folder(folder, i, items[i], images[i * n_samples : (i + 1) * n_samples])
    rows = evaluate_folder(folder, PerImageDetector(default_detector().detect), batch_size=64, progress=False)
    geneval = summarize(load_results(folder / "results.jsonl")) if rows else {}
    rewards = summarize_rewards(score_folder(folder, list(scorers.values()), batch_size=64, progress=False))
    measures = {"geneval": geneval, "rewards": {k: v["mean"] for k, v in rewards.items()},
                "rewards_ci95": {k: v["ci95"] for k, v in rewards.items()}, "targets": targets,
                "guidance_scale": args.guidance_scale if guidance is None else guidance}  # fmt: skip
    done.write_text(json.dumps(measures, indent=2))
    return measures


def build_scorers() -> dict:
    from annotate.scorers import build_scorer

    return {r: build_scorer(r) for r in DEFAULT_REWARDS}


def exports(args, run: str) -> list[tuple[int, Path]]:
    """The EMA exports of a run by step: ``pipelines/step-N`` every ``export_every`` steps and ``final`` at the
    last step (training writes the last one only there)."""
    train = Path(args.out) / "train" / run
    found = sorted((int(p.name.split("-")[1]), p) for p in (train / "pipelines").glob("step-*") if (p / "model_index.json").exists())
    if (train / "final" / "model_index.json").exists():
        found.append((args.steps, train / "final"))
    if not found:
        raise SystemExit(f"[curves] {run}: no export under {train}; run the train phase")
    if found[-1][0] != args.steps:  # still training: measure what exists, run the phase again later
        print(f"[curves] {run}: exports up to step {found[-1][0]} of {args.steps} so far")
    return found


def phase_curves(args) -> None:
    """Every export of both runs: GenEval and the rewards on the held-out prompts (targets 1 for MIRO)."""
    items, scorers = heldout_items(args), build_scorers()
    high = dict.fromkeys(DEFAULT_REWARDS, 1.0)
    for run in RUNS:
        for step, path in exports(args, run):
            n = args.final_samples if step == args.steps else args.curve_samples
            start = time.perf_counter()
            m = geneval_folder(load_pipe(path), items, Path(args.out) / "eval" / run / f"step-{step:06d}", n, high, args, scorers)
            print(f"[curves] {run} step {step}: GenEval {m['geneval']['overall']:.3f} | "
                  + " ".join(f"{k} {v:.3f}" for k, v in m["rewards"].items()) + f" ({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip


def phase_sliders(args) -> None:
    """Per reward: targets 0..1 (the others at 1) over held-out prompts x seeds, measured by that reward."""
    from scipy.stats import spearmanr

    out = Path(args.out) / "sliders.json"
    if out.exists():
        return
    pipe, scorers = load_pipe(Path(args.out) / "train" / "miro" / "final"), build_scorers()
    heldout = heldout_items(args)
    items = heldout[:: max(1, len(heldout) // args.slider_prompts)][: args.slider_prompts]  # spread over the tasks
    targets = [0.0, 0.25, 0.5, 0.75, 1.0]
    result = {"targets": targets, "prompts": [it["prompt"] for it in items], "seeds": args.slider_seeds, "rewards": {}}
    for reward in DEFAULT_REWARDS:
        jobs = [(t, it["prompt"], s) for t in targets for it in items for s in range(args.slider_seeds)]
        tgts = [{**dict.fromkeys(DEFAULT_REWARDS, 1.0), reward: t} for t, _, _ in jobs]
        images = render(pipe, [p for _, p, _ in jobs], [s for _, _, s in jobs], tgts, args)
        scores = np.asarray(scorers[reward].score(images, [p for _, p, _ in jobs]), dtype=np.float64)
        x = np.array([t for t, _, _ in jobs])
        rho, p = spearmanr(x, scores)
        means = [float(np.nanmean(scores[x == t])) for t in targets]
        result["rewards"][reward] = {"spearman": float(rho), "p": float(p), "mean_per_target": means}
        print(f"[sliders] {reward}: Spearman {rho:.3f} (p={p:.1e}); means {np.round(means, 3).tolist()}", flush=True)
    out.write_text(json.dumps(result, indent=2))


def phase_tradeoff(args) -> None:
    """One reward's target at 0 / 0.5 / 1 with the others at 1, against shapes-world GenEval."""
    pipe, scorers, items = load_pipe(Path(args.out) / "train" / "miro" / "final"), build_scorers(), heldout_items(args)
    for reward in DEFAULT_REWARDS:
        for t in (0.0, 0.5, 1.0):
            targets = {**dict.fromkeys(DEFAULT_REWARDS, 1.0), reward: t}
            name = "all-high" if t == 1.0 else f"{reward}-{t:g}"
            m = geneval_folder(pipe, items, Path(args.out) / "tradeoff" / name, args.tradeoff_samples, targets, args, scorers)
            print(f"[tradeoff] {name}: GenEval {m['geneval']['overall']:.3f} {reward} {m['rewards'][reward]:.3f}", flush=True)


DIAGNOSES = {  # name -> (targets for the conditioned model; None = free, the reward's null token), guidance
    "all-0.75": (dict.fromkeys(DEFAULT_REWARDS, 0.75), None),
    "all-0.5": (dict.fromkeys(DEFAULT_REWARDS, 0.5), None),
    "all-free": (dict.fromkeys(DEFAULT_REWARDS, None), None),
    "quality-high-style-free": ({"sharpness": 1.0, "low_noise": 1.0, "alignment": 1.0, "colorfulness": None, "contrast": None}, None),
    "alignment-high-others-free": ({**dict.fromkeys(DEFAULT_REWARDS, None), "alignment": 1.0}, None),
    "all-high-w1": (dict.fromkeys(DEFAULT_REWARDS, 1.0), 1.0),
}


def phase_diagnose(args) -> None:
    """Where the conditioned model does not beat the baseline on GenEval: other targets and guidance scales for
    MIRO's final model, and the baseline without guidance, on the same held-out prompts and noise."""
    items, scorers = heldout_items(args), build_scorers()
    pipe = load_pipe(Path(args.out) / "train" / "miro" / "final")
    for name, (targets, guidance) in DIAGNOSES.items():
        m = geneval_folder(pipe, items, Path(args.out) / "diagnose" / name, args.tradeoff_samples, targets, args, scorers, guidance)
        print(f"[diagnose] miro {name}: GenEval {m['geneval']['overall']:.3f} alignment {m['rewards']['alignment']:.3f}", flush=True)
    base = load_pipe(Path(args.out) / "train" / "baseline" / "final")
    m = geneval_folder(base, items, Path(args.out) / "diagnose" / "baseline-w1", args.tradeoff_samples, {}, args, scorers, 1.0)
    print(f"[diagnose] baseline w=1: GenEval {m['geneval']['overall']:.3f} alignment {m['rewards']['alignment']:.3f}", flush=True)


# ------------------------------------------------------------------------------------------------ report
def load_curves(args) -> dict:
    curves = {}
    for run in RUNS:
        rows = []
        for folder in sorted((Path(args.out) / "eval" / run).glob("step-*")):
            if (folder / "measures.json").exists():
                m = json.loads((folder / "measures.json").read_text())
                rows.append({"step": int(folder.name.split("-")[1]), "geneval": m["geneval"]["overall"],
                             "tasks": {k: v["accuracy"] for k, v in m["geneval"]["tasks"].items()}, **m["rewards"]})  # fmt: skip
        curves[run] = rows
    return curves


FINAL_WINDOW = 3  # the baseline's final score: the mean of its last three exports (one export is noisy)


def steps_to_reach(steps: list[int], values: list[float], level: float) -> float | None:
    """The step from which the curve reaches ``level`` and stays at or above it to the end, linearly
    interpolated between exports; the first export's step if it is above all along; None if it ends below.
    (Staying matters: a noisy curve that touches the level once and falls back has not reached it.)"""
    if values[-1] < level:
        return None
    i = len(values) - 1
    while i > 0 and values[i - 1] >= level:
        i -= 1
    if i == 0:
        return float(steps[0])
    s0, v0, s1, v1 = steps[i - 1], values[i - 1], steps[i], values[i]
    return float(s0 + (s1 - s0) * (level - v0) / (v1 - v0))


def speedups(curves: dict, metrics: Sequence[str] = ("geneval", *DEFAULT_REWARDS), window: int = FINAL_WINDOW) -> dict:
    """Per metric, the paper's measure: the baseline's final score (mean of its last ``window`` exports), the
    steps from which the conditioned model holds that score, and the baseline's total steps over those steps.
    A ratio at the first export is a lower bound (the conditioned curve starts above).  ``window=1`` takes the
    final export alone: for a schedule that anneals at its end, the earlier exports of the window were read
    before the annealing and pull the level down.
    ``curves``: ``{"baseline": rows, "miro": rows}``, each row ``{"step": int, metric: value, ...}`` by step."""
    if not (isinstance(window, int) and 1 <= window <= len(curves["baseline"])):
        raise ValueError(f"window={window!r}: must be an integer from 1 to the baseline's {len(curves['baseline'])} exports")
    base, miro = curves["baseline"], curves["miro"]
    total = base[-1]["step"]
    out = {}
    for metric in metrics:
        tail = [r[metric] for r in base[-window:]]
        final = float(np.mean(tail))
        steps = [r["step"] for r in miro]
        reach = steps_to_reach(steps, [r[metric] for r in miro], final)
        out[metric] = {
            "baseline_final": final, "baseline_final_spread": float(np.ptp(tail)), "miro_final": miro[-1][metric],
            "baseline_steps": total, "miro_steps": reach, "speedup": (total / reach) if reach else None,
            "lower_bound": reach == steps[0] if reach else False, "final_window": window,
        }  # fmt: skip
    return out


def plot_curves(curves: dict[str, list[dict]], speedup: dict, path: Path) -> None:
    """One panel per metric of ``speedup`` (``speedups``' result): each run's curve over the steps (the baseline
    first, dashed) and the baseline's final, the level to reach."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(speedup)
    cols = min(6, len(metrics))
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for (name, run), style in zip(curves.items(), ("o--", "s-")):
            ax.plot([r["step"] for r in run], [r[metric] for r in run], style, ms=3, label=name)
        ax.axhline(speedup[metric]["baseline_final"], color="grey", lw=0.6)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def phase_report(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out, docs = Path(args.out), Path(args.docs)
    figs = docs / "replication"
    figs.mkdir(parents=True, exist_ok=True)
    curves = load_curves(args)
    results = {"curves": curves, "speedups": speedups(curves)}
    if (out / "sliders.json").exists():
        results["sliders"] = json.loads((out / "sliders.json").read_text())
    for phase in ("tradeoff", "diagnose"):
        results[phase] = {f.name: json.loads((f / "measures.json").read_text())
                          for f in sorted((out / phase).glob("*")) if (f / "measures.json").exists()}  # fmt: skip
    results["settings"] = vars(args) | {"out": str(args.out), "docs": str(args.docs)}
    (out / "results.json").write_text(json.dumps(results, indent=2))

    plot_curves(curves, results["speedups"], figs / "curves.png")
    if "sliders" in results:
        s = results["sliders"]
        fig, axes = plt.subplots(1, len(DEFAULT_REWARDS), figsize=(3.2 * len(DEFAULT_REWARDS), 3))
        for ax, reward in zip(axes, DEFAULT_REWARDS):
            r = s["rewards"][reward]
            ax.plot(s["targets"], r["mean_per_target"], "o-")
            ax.set_title(f"{reward} (rho {r['spearman']:.2f})")
            ax.set_xlabel("target")
        axes[0].set_ylabel("measured (mean)")
        fig.tight_layout()
        fig.savefig(figs / "sliders.png", dpi=80)
        plt.close(fig)
    samples_figure(args, figs / "samples.png")
    (figs / "tables.md").write_text(tables_markdown(results, args))
    print((figs / "tables.md").read_text())
    print(f"results: {out / 'results.json'}; figures and tables: {figs}")


def samples_figure(args, path: Path) -> None:
    """Final models side by side: the same prompts (two seeds each) and noise in every row."""
    from miro.demo.figures import GRID_PROMPTS, labelled_grid

    prompts = [p for p in GRID_PROMPTS for _ in (0, 1)]
    seeds = [1000 + s for _ in GRID_PROMPTS for s in (0, 1)]
    base, miro = (load_pipe(Path(args.out) / "train" / run / "final") for run in RUNS)
    rows, labels = [render(base, prompts, seeds, [{}] * len(prompts), args)], ["baseline"]
    for name, targets in (("MIRO, all 1", dict.fromkeys(DEFAULT_REWARDS, 1.0)), ("MIRO, all 0.5", dict.fromkeys(DEFAULT_REWARDS, 0.5)),
                          ("MIRO, quality 1", DIAGNOSES["quality-high-style-free"][0]), ("MIRO, all 0", dict.fromkeys(DEFAULT_REWARDS, 0.0))):  # fmt: skip
        rows.append(render(miro, prompts, seeds, [targets] * len(prompts), args))
        labels.append(name)
    labelled_grid(rows, labels, cell=64, label_w=100).save(path)


def _f(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def tables_markdown(results: dict, args) -> str:
    """The tables of docs/replication.md, generated from results.json."""
    lines = [f"<!-- generated by: python scripts/experiments/shapes_replication.py report --steps {args.steps} "
             f"--export-every {args.export_every} -->", "", "### Convergence", "",
             f"| metric | baseline final (mean of its last {FINAL_WINDOW} exports; their spread) | MIRO at the last step | "
             "baseline steps | steps from which MIRO holds the baseline's final | speed-up |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for metric, r in results["speedups"].items():
        speed = "never reached" if r["miro_steps"] is None else (">= " if r["lower_bound"] else "") + f"{r['speedup']:.2f}x"
        lines.append(f"| {metric} | {_f(r['baseline_final'])} ({_f(r['baseline_final_spread'], 2)}) | {_f(r['miro_final'])} | {_f(r['baseline_steps'], 4)} | "
                     f"{_f(r['miro_steps'], 4)} | {speed} |")  # fmt: skip
    base, miro = results["curves"]["baseline"][-1], results["curves"]["miro"][-1]
    lines += ["", f"### Held-out GenEval per task at step {base['step']}", "", "| task | baseline | MIRO (targets 1) |",
              "|---|---:|---:|"]  # fmt: skip
    for task in base["tasks"]:
        lines.append(f"| {task} | {100 * base['tasks'][task]:.1f}% | {100 * miro['tasks'].get(task, float('nan')):.1f}% |")
    lines.append(f"| **overall** | **{100 * base['geneval']:.1f}%** | **{100 * miro['geneval']:.1f}%** |")
    if "sliders" in results:
        s = results["sliders"]
        lines += ["", f"### Sliders ({len(s['prompts'])} held-out prompts x {s['seeds']} seeds per target, others at 1)", "",
                  "| reward | " + " | ".join(f"target {t:g}" for t in s["targets"]) + " | Spearman rho | p |",
                  "|---|" + "---:|" * (len(s["targets"]) + 2)]  # fmt: skip
        for reward, r in s["rewards"].items():
            lines.append(f"| {reward} | " + " | ".join(_f(v) for v in r["mean_per_target"]) + f" | {r['spearman']:.3f} | {r['p']:.1e} |")
    for phase, title in (("tradeoff", "Trade-off: one target lowered, the others at 1"),
                         ("diagnose", "Other targets and guidance scales (final models)")):  # fmt: skip
        if not results.get(phase):
            continue
        lines += ["", f"### {title}", "", "| setting | guidance | GenEval overall | " + " | ".join(DEFAULT_REWARDS) + " |",
                  "|---|---:|---:|" + "---:|" * len(DEFAULT_REWARDS)]  # fmt: skip
        for name, m in sorted(results[phase].items(), key=lambda kv: kv[0] != "all-high"):
            lines.append(f"| {name} | {_f(m.get('guidance_scale', args.guidance_scale))} | {100 * m['geneval']['overall']:.1f}% | "
                         + " | ".join(_f(m["rewards"][r]) for r in DEFAULT_REWARDS) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


PHASES = {"data": phase_data, "train": phase_train, "curves": phase_curves, "sliders": phase_sliders,
          "tradeoff": phase_tradeoff, "diagnose": phase_diagnose, "report": phase_report}  # fmt: skip


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", choices=["all", *PHASES])
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "replication")
    p.add_argument("--docs", type=Path, default=ROOT / "docs")
    p.add_argument("--num-samples", type=int, default=12000, help="shapes-world training images")
    p.add_argument("--steps", type=int, default=2400, help="training steps of each run (batch 64)")
    p.add_argument("--export-every", type=int, default=200)
    p.add_argument("--guidance-scale", type=float, default=3.0)
    p.add_argument("--sample-steps", type=int, default=25)
    p.add_argument("--batch-size", type=int, default=64, help="images per pipeline call")
    p.add_argument("--curve-samples", type=int, default=2, help="images per held-out prompt at each export")
    p.add_argument("--final-samples", type=int, default=4, help="images per held-out prompt at the last export")
    p.add_argument("--slider-prompts", type=int, default=16)
    p.add_argument("--slider-seeds", type=int, default=2)
    p.add_argument("--tradeoff-samples", type=int, default=2)
    args = p.parse_args(argv)
    if args.steps % args.export_every:
        p.error(f"--steps {args.steps} must be a multiple of --export-every {args.export_every}")
    for name in PHASES if args.phase == "all" else [args.phase]:
        PHASES[name](args)


if __name__ == "__main__":
    main()
