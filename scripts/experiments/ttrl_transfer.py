"""Meta-TTRL's transfer claim on the shapes world (issue #15, measure 2): adapt one LoRA with ``ttrl_adapt`` on half
of one GenEval task's held-out prompts, then score one-sample GenEval on the other half (transfer), on the half it
adapted on, and on every other task (forgetting), with the base model and with the adapter, at the same seeds.

- Prompts: the shapes world's held-out GenEval file.  ``--task``'s prompts are split in two halves by ``--seed``
  (adaptation, unseen); the other tasks contribute their first ``--other-limit`` prompts (file order).
- Sampling: the pipeline's own settings (``--steps`` Euler steps, decoupled guidance text ``--text-guidance-scale``
  / reward ``--reward-guidance-scale``, reward targets = ``pipe.recommended_reward_targets``, negatives
  ``pipe.recommended_negative_reward_targets``).
- Monitor: ``intrinsic`` (the model as its own judge, M1) or ``rewards`` (M3: the weight-free quality rewards
  sharpness, low_noise, colorfulness, contrast, annotate's scorers); with these two the GenEval detector never
  enters the update, it only scores the evaluation images.  ``detector`` is the control that says what the RL
  update can do with a reward that reads the prompt: the detector's graded GenEval score (``GenEvalScorer(soft=
  True)``) of the adaptation prompts (Flow-GRPO's GenEval reward; an upper bound, since the judge is the same).
- Track (the history's monitor-fidelity agreement, never in the update): ``--track quality``, the quality rewards'
  z-sum, or ``--track geneval``, the detector's graded reading of the rollouts (the quality rewards still scored into
  the trace).  A monitor that reads the prompt (the rubric alone) is not meant to agree with image quality, so its
  fidelity is the detector's.  The quality rewards are z-normalised on the base model's images of the adaptation
  half.
- Evaluation: ``--images`` samples per prompt, seeds 0..N-1 (the pipeline's own noise of each seed), scored with
  the shapes detector and GenEval's rules (``GenEvalScorer``, as ``scripts/bench_testtime.py``).  The base model is
  scored before the adapter is added; afterwards one base image is re-rendered with the adapter disabled
  (``disable_adapters``) and must be identical (``base_check_max_abs``).

    python scripts/experiments/ttrl_transfer.py --pipeline models/shapes_reference \\
        --metadata runs/demo/data/heldout/evaluation_metadata.jsonl --task colors --monitor intrinsic \\
        --out runs/ttrl_transfer_intrinsic

Writes ``<out>/ttrl_transfer.json`` (and ``ttrl_adapt``'s adapter, history, trace and previews in ``<out>/adapt``)
and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_testtime import QUALITY, _finite, nan_mean, select_prompts  # noqa: E402

MONITORS = ("intrinsic", "rewards", "detector")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--pipeline", default="models/shapes_reference", help="a saved MiroPipeline folder")
    p.add_argument("--metadata", default="runs/demo/data/heldout/evaluation_metadata.jsonl",
                   help="the held-out GenEval prompts (evaluation_metadata.jsonl)")  # fmt: skip
    p.add_argument("--out", default="runs/ttrl_transfer")
    p.add_argument("--task", default="colors", help="the GenEval task (tag) whose prompts are split")
    p.add_argument("--seed", type=int, default=0, help="the split, the adapter's init, the rollouts' noise")
    p.add_argument("--monitor", default="intrinsic", choices=MONITORS)
    p.add_argument("--images", type=int, default=2, help="evaluation samples per prompt (seeds 0..N-1)")
    p.add_argument("--other-limit", type=int, default=8, help="prompts of every other task (file order)")
    p.add_argument("--group-size", type=int, default=6)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--prompts-per-iteration", type=int, default=3)
    p.add_argument("--train-steps", type=int, default=8, help="SDE steps of the rollouts")
    p.add_argument("--final-step", choices=["ode", "sde"], default="ode",
                   help="the rollouts' last step: ode (deterministic, not trained) or sde (Flow-GRPO as written; "
                        "the 2026-12-04 measurement of docs/ttrl.md)")
    p.add_argument("--sde-steps", type=int, default=None,
                   help="only the first N rollout steps draw noise (and are trained); the rest are ODE steps")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--rank", type=int, default=4, help="LoRA rank (alpha = rank)")
    p.add_argument("--kl-beta", type=float, default=0.02)
    p.add_argument("--sde-noise", type=float, default=0.7)
    p.add_argument("--intrinsic-draws", type=int, default=2, help="(t, eps) draws of the intrinsic monitor")
    p.add_argument("--intrinsic-rewards", nargs="+", default=None,
                   help="the likelihood ratios the intrinsic monitor reads (default: every reward of the model); "
                        "'none': no ratio, the rubric alone is the monitor")  # fmt: skip
    p.add_argument("--rubric-weight", type=float, default=1.0,
                   help="the rubric's weight in the intrinsic monitor, against 1 per likelihood ratio")  # fmt: skip
    p.add_argument("--max-kl", type=float, default=None,
                   help="ttrl_adapt's KL bound: undo the first iteration whose KL exceeds it, and stop")  # fmt: skip
    p.add_argument("--groups-per-step", type=int, default=1,
                   help="prompt groups per optimizer step (0: every group of the round, as Flow-GRPO accumulates)")
    p.add_argument("--advantage-std", choices=["group", "global"], default="group",
                   help="divide each group's centred scores by its own std (GRPO) or the round's (Flow-GRPO)")
    p.add_argument("--track", choices=["quality", "geneval"], default="quality",
                   help="what the history's track_mean and agreement read: the quality rewards' z-sum, or the "
                        "detector's graded GenEval score of the rollouts (held out: never in the update; the quality "
                        "rewards are still scored into the trace)")  # fmt: skip
    p.add_argument("--eval-at", type=int, nargs="*", default=[],
                   help="also evaluate the adapter after these iterations (1-based; the final one always is)")  # fmt: skip
    p.add_argument("--steps", type=int, default=25, help="sampling steps of the evaluation")
    p.add_argument("--eval-sampler", choices=["ode", "sde"], default="ode",
                   help="the evaluation's sampler: ode (the pipeline's Euler sampler) or sde (the training rollouts' "
                        "own: --sde-noise, the last step as --final-step; each image's fresh noise seeded by its seed)")
    p.add_argument("--adapter", default=None,
                   help="evaluate this saved adapter (a save_lora folder, e.g. <out>/adapt/adapter) against the base "
                        "model instead of adapting one: the same splits under other evaluation settings")
    p.add_argument("--text-guidance-scale", type=float, default=3.0)
    p.add_argument("--reward-guidance-scale", type=float, default=1.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    p.add_argument("--progress", action="store_true", help="ttrl_adapt's progress bar (stderr)")
    p.add_argument("--report-only", action="store_true",
                   help="re-read <out>/ttrl_transfer.json and <out>/adapt/trace.json, redo the summaries, reprint")  # fmt: skip
    args = p.parse_args(argv)
    least = {"images": 1, "other_limit": 0, "group_size": 2, "iterations": 1, "prompts_per_iteration": 1,
             "train_steps": 1, "rank": 1, "groups_per_step": 0}  # fmt: skip
    for name, low in least.items():
        if getattr(args, name) < low:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= {low}")
    bad = [k for k in args.eval_at if not 1 <= k < args.iterations]
    if bad:
        p.error(f"--eval-at {bad}: each must be in [1, --iterations) (the last iteration is always evaluated)")
    if args.intrinsic_rewards is not None and "none" in args.intrinsic_rewards:
        if args.intrinsic_rewards != ["none"]:
            p.error(f"--intrinsic-rewards {args.intrinsic_rewards}: 'none' stands alone")
        args.intrinsic_rewards = []
    return args


def split_task(rows: list[dict], task: str, seed: int) -> tuple[list[dict], list[dict]]:
    """``task``'s rows in two halves (adaptation, unseen) by a seeded permutation; each half in file order."""
    rows = [r for r in rows if r.get("tag") == task]
    if len(rows) < 2:
        raise SystemExit(f"--task {task!r}: {len(rows)} prompts; the split needs at least 2")
    order = np.random.default_rng(seed).permutation(len(rows))
    half = len(rows) // 2
    return [rows[i] for i in sorted(order[:half])], [rows[i] for i in sorted(order[half:])]


def evaluation_splits(rows: list[dict], task: str, seed: int, other_limit: int) -> dict[str, list[dict]]:
    """{"unseen": ..., "adapted_on": ..., "<other task>": first ``other_limit`` rows, ...}."""
    adapt, unseen = split_task(rows, task, seed)
    splits = {"unseen": unseen, "adapted_on": adapt}
    others = [r for r in rows if r.get("tag") != task]
    for r in select_prompts(others, None, other_limit) if other_limit else []:
        splits.setdefault(r["tag"], []).append(r)
    return splits


def render_images(renderer, prompts: list[str], n: int, sde: dict | None = None) -> list:
    """``n`` samples per prompt, the pipeline's own noise of seeds 0..n-1 (PIL images, prompt-major).

    ``sde`` ({"sde_noise": a, "ode_last": bool}) samples as ``ttrl_adapt``'s rollouts do (``sde_rollout`` under the
    settings' guidance and steps) instead of the ODE; the fresh noise of seed s's steps comes from a generator
    seeded s, so the base model and the adapter are compared on the same draws."""
    from miro.sampling.sampler import guided_velocity
    from miro.testtime.render import to_pil
    from miro.testtime.sde import sde_rollout

    images = []
    for prompt in prompts:
        if sde is None:
            noise = torch.cat([renderer.noise(s) for s in range(n)])
            images += to_pil(renderer.render(prompt, noise, renderer.default)[0])
            continue
        model, guidance, sigmas = renderer.pipe.transformer, renderer.guidance(), renderer.sigmas()
        vel = guided_velocity(renderer.model, renderer.conditions(prompt, [renderer.default]), guidance,
                              dtype=model.dtype, autocast=renderer.autocast)  # fmt: skip
        for s in range(n):
            with torch.no_grad():
                final = sde_rollout(vel, renderer.noise(s).to(renderer.device), sigmas, sde["sde_noise"],
                                    torch.Generator().manual_seed(s), ode_last=sde["ode_last"],
                                    sde_steps=sde.get("sde_steps")).final  # fmt: skip
                images += to_pil(renderer.decode(final).cpu())
    return images


def evaluate(renderer, geneval, splits: dict[str, list[dict]], n: int, sde: dict | None = None) -> dict[str, dict]:
    """One-sample GenEval per split: the prompts, each image's pass (prompt-major, seeds inner), the accuracy,
    the images (for calibration) and the wall time."""
    out = {}
    for name, rows in splits.items():
        prompts = [r["prompt"] for r in rows]
        t0 = time.perf_counter()
        images = render_images(renderer, prompts, n, sde)
        passed = geneval.score(images, [p for p in prompts for _ in range(n)])
        out[name] = {"prompts": prompts, "passed": [float(v) for v in passed], "geneval": nan_mean(passed),
                     "wall": time.perf_counter() - t0, "images": images}  # fmt: skip
    return out


def quality_verifier(images: list, prompts: list[str]):
    """The weight-free quality rewards (annotate's scorers), z-normalised on ``images``."""
    from annotate.scorers.registry import build_scorers
    from miro.testtime.verifier import Verifier

    return Verifier(build_scorers(QUALITY)).calibrate(images, prompts)


def history_summary(history: list[dict]) -> dict:
    """First / last iteration (and the means of the first and last quarter) of the monitor and the track."""
    q = max(1, len(history) // 4)
    out = {}
    for key in ("monitor_mean", "track_mean", "agreement", "kl", "clip_fraction"):
        v = [math.nan if h.get(key) is None else h[key] for h in history]
        out[key] = {"first": v[0], "last": v[-1], "first_quarter": nan_mean(v[:q]),
                    "last_quarter": nan_mean(v[-q:])}  # fmt: skip
    return out


def per_prompt_change(searches: list[dict]) -> dict:
    """Each cohort prompt's group mean of the monitor and of the tracked score at its first and its last visit,
    paired (an iteration's mean mixes different prompts): the mean change and on how many prompts it rose."""
    visits: dict[str, list[tuple]] = {}
    num = lambda v: math.nan if v is None else float(v)  # noqa: E731
    for s in searches:
        c = s["candidates"]
        visits.setdefault(s["prompt"], []).append((s["extra"]["iteration"], nan_mean(num(x["score"]) for x in c),
                                                   nan_mean(num(x["extra"].get("track_score")) for x in c)))  # fmt: skip
    pairs = [(min(v), max(v)) for v in visits.values() if len(v) > 1]
    out = {}
    for k, key in ((1, "monitor"), (2, "track")):
        d = [last[k] - first[k] for first, last in pairs]
        out[key] = {"mean_change": nan_mean(d), "rose": sum(x > 0 for x in d), "prompts": len(d)}
    return out


def compare(base: dict, adapted: dict) -> dict[str, dict]:
    """Per split: base and adapted accuracy, the difference in points, and the images that flipped."""
    rows = {}
    for name, b in base.items():
        a = adapted[name]
        assert a["prompts"] == b["prompts"], name
        pb, pa = np.asarray(b["passed"]), np.asarray(a["passed"])
        rows[name] = {"prompts": len(b["prompts"]), "images": len(pb), "base": b["geneval"], "adapted": a["geneval"],
                      "delta_points": 100 * (a["geneval"] - b["geneval"]), "gained": int(((pa > 0.5) & (pb <= 0.5)).sum()),
                      "lost": int(((pa <= 0.5) & (pb > 0.5)).sum())}  # fmt: skip
    others = [n for n in rows if n not in ("unseen", "adapted_on")]
    if others:  # GenEval's overall is the mean over tasks
        rows["other_tasks_mean"] = {
            "prompts": sum(rows[n]["prompts"] for n in others), "images": sum(rows[n]["images"] for n in others),
            **{k: nan_mean(rows[n][k] for n in others) for k in ("base", "adapted", "delta_points")},
            "gained": sum(rows[n]["gained"] for n in others), "lost": sum(rows[n]["lost"] for n in others),
        }  # fmt: skip
    return rows


def checkpoint_rows(report: dict) -> list[str]:
    """One markdown row per evaluated checkpoint: iteration, KL there, unseen / adapted-on / other tasks' Δ."""
    lines = []
    for it, c in sorted(report.get("checkpoints", {}).items(), key=lambda kv: int(kv[0])):
        sp = c["splits"]
        cells = [f"{100 * sp[n]['adapted']:.1f}% ({sp[n]['delta_points']:+.1f})"
                 for n in ("unseen", "adapted_on", "other_tasks_mean") if n in sp]  # fmt: skip
        kl = c.get("kl")
        lines.append(f"| {it} | {'n/a' if kl is None else f'{kl:.2g}'} | " + " | ".join(cells) + " |")
    if lines:
        lines = ["| after iteration | KL | unseen (Δ) | adapted_on (Δ) | other tasks (Δ) |",
                 "|---:|---:|---:|---:|---:|", *lines]  # fmt: skip
    return lines


def splits_table(splits: dict) -> list[str]:
    lines = ["| split | prompts | images | base GenEval | adapted GenEval | Δ points | gained / lost |",
             "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, r in splits.items():
        lines.append(f"| {name} | {r['prompts']} | {r['images']} | {100 * r['base']:.1f}% | {100 * r['adapted']:.1f}% "
                     f"| {r['delta_points']:+.1f} | {r['gained']} / {r['lost']} |")  # fmt: skip
    return lines


def markdown(report: dict) -> str:
    lines = splits_table(report["splits"])
    h, a = report["history"], report["adaptation"]

    def num(x):  # None: a NaN in the JSON (e.g. the agreement of a group whose scores are all equal)
        return "n/a" if x is None else f"{x:.3g}"

    def fmt(d):
        return f"{num(d['first'])} → {num(d['last'])} (quarters {num(d['first_quarter'])} → {num(d['last_quarter'])})"

    lines += ["", f"- monitor ({report['config']['monitor']}) mean: {fmt(h['monitor_mean'])}",
              f"- tracked {report['config'].get('track', 'quality')} score: {fmt(h['track_mean'])}; agreement "
              f"(Spearman): {fmt(h['agreement'])}",
              f"- KL: {fmt(h['kl'])}; clip fraction: {fmt(h['clip_fraction'])}",
              *[f"- per cohort prompt, first → last visit: {k} {v['mean_change']:+.3g} (rose on {v['rose']} of "
                f"{v['prompts']})" for k, v in report.get("per_prompt", {}).items()],
              f"- adaptation: {a['iterations']} iterations, {a['nfe']:.0f} NFE-eq (= {a['samples_equivalent']:.0f} "
              f"samples of {report['one_sample_nfe']} NFE-eq), {a['wall']:.0f} s; evaluation {report['eval_wall']:.0f} s "
              f"({report['eval_images']} images per model, base and adapted)"]  # fmt: skip
    stopped = report["ttrl_history"][-1].get("stopped") if report.get("ttrl_history") else None
    if stopped:
        lines.append(f"- stopped by {stopped} after iteration {len(report['ttrl_history'])}")
    checkpoints = checkpoint_rows(report)
    if checkpoints:
        lines += ["", *checkpoints]
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)


def disabled_check(renderer, splits: dict, base: dict, sde: dict | None) -> int:
    """The largest pixel difference between the first unseen image of the base model and the same image re-rendered
    with the adapter disabled (0: the adapter is all that changed)."""
    from miro.testtime.ttrl import adapters_disabled

    with adapters_disabled(renderer.pipe.transformer):
        again = render_images(renderer, [splits["unseen"][0]["prompt"]], 1, sde)[0]
    ref = np.asarray(base["unseen"]["images"][0], dtype=np.int16)
    return int(np.abs(np.asarray(again, dtype=np.int16) - ref).max())


def evaluate_saved(args, renderer, geneval, splits: dict, base: dict, sde: dict | None) -> dict:
    """``--adapter``: the saved adapter against the base model on the same splits, seeds and sampler; writes
    ``<out>/ttrl_eval.json``."""
    from miro.models.lora import load_lora

    load_lora(renderer.pipe.transformer, args.adapter)
    adapted = evaluate(renderer, geneval, splits, args.images, sde)
    report = {
        "config": vars(args), "settings": renderer.settings.to_dict(), "device": str(renderer.device),
        "torch": torch.__version__, "splits": compare(base, adapted),
        "prompts": {n: b["prompts"] for n, b in base.items()},
        "passed": {n: {"base": base[n]["passed"], "adapted": adapted[n]["passed"]} for n in base},
        "eval_wall": sum(b["wall"] for b in base.values()) + sum(a["wall"] for a in adapted.values()),
        "base_check_max_abs": disabled_check(renderer, splits, base, sde),
        # how far the adapter moves the pixels (0-255), mean over every evaluation image: 0 would be no adapter
        "pixel_change": float(np.mean([np.abs(np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)).mean()
                                       for n in base for x, y in zip(base[n]["images"], adapted[n]["images"])])),
    }  # fmt: skip
    path = Path(args.out) / "ttrl_eval.json"
    path.write_text(json.dumps(_finite(report), indent=1) + "\n")
    print("\n".join(splits_table(report["splits"])))
    print(f"mean pixel change from the base model: {report['pixel_change']:.2f} / 255; wrote {path}")
    return report


def run(args) -> dict:
    if args.report_only:
        out = Path(args.out)
        report = json.loads((out / "ttrl_transfer.json").read_text())
        report["per_prompt"] = per_prompt_change(
            json.loads((out / "adapt" / "trace.json").read_text())["searches"]
        )
        (out / "ttrl_transfer.json").write_text(json.dumps(_finite(report), indent=1) + "\n")
        print(markdown(report))
        return report
    from miro.models.lora import LORA_WEIGHTS, LoraSpec
    from miro.sampling.pipeline import load_pipeline
    from miro.sampling.settings import SamplingSettings
    from miro.testtime.render import Renderer
    from miro.testtime.ttrl import ttrl_adapt
    from miro.testtime.verifier import GenEvalScorer, load_prompt_metadata

    out = Path(args.out)
    if args.adapter is not None and not (Path(args.adapter) / LORA_WEIGHTS).is_file():  # before minutes of base images
        raise SystemExit(f"--adapter {args.adapter}: no {LORA_WEIGHTS} there (a save_lora folder, e.g. <out>/adapt/adapter)")
    out.mkdir(parents=True, exist_ok=True)
    rows = load_prompt_metadata(args.metadata)
    splits = evaluation_splits(rows, args.task, args.seed, args.other_limit)
    pipe = load_pipeline(args.pipeline, args.device)
    settings = SamplingSettings(steps=args.steps, guidance_scale=args.text_guidance_scale,
                                text_guidance_scale=args.text_guidance_scale,
                                reward_guidance_scale=args.reward_guidance_scale,
                                reward_targets=pipe.recommended_reward_targets,
                                negative_reward_targets=pipe.recommended_negative_reward_targets)  # fmt: skip
    renderer = Renderer(pipe, settings)
    geneval = GenEvalScorer(rows)
    n_eval = sum(len(r) for r in splits.values()) * args.images
    print(f"{args.task}: {len(splits['adapted_on'])} prompts to adapt on, {len(splits['unseen'])} unseen; "
          f"{n_eval} evaluation images per model; one sample = {renderer.one_sample_nfe()} NFE-eq", flush=True)  # fmt: skip

    sde = None if args.eval_sampler == "ode" else {"sde_noise": args.sde_noise, "ode_last": args.final_step == "ode",
                                                  "sde_steps": args.sde_steps}
    # no adapter on the transformer yet: the base model
    base = evaluate(renderer, geneval, splits, args.images, sde)
    if args.adapter is not None:
        return evaluate_saved(args, renderer, geneval, splits, base, sde)
    cohort = [r["prompt"] for r in splits["adapted_on"]]
    calib = base["adapted_on"]
    calib_prompts = [p for p in calib["prompts"] for _ in range(args.images)]
    quality = quality_verifier(calib["images"], calib_prompts)
    track = quality
    if args.track == "geneval":  # the score is the detector's; the quality rewards are reported beside it
        from annotate.scorers.registry import build_scorers
        from miro.testtime.verifier import Verifier

        track = Verifier([*build_scorers(QUALITY), GenEvalScorer(rows, soft=True, name="geneval_soft")],
                         weights={"geneval_soft": 1.0}).calibrate(calib["images"], calib_prompts)  # fmt: skip
    if args.monitor == "intrinsic":
        options = {"draws": args.intrinsic_draws, "rubric_weight": args.rubric_weight}
        if args.intrinsic_rewards is not None:
            options["rewards"] = args.intrinsic_rewards
        monitor_kw = {"monitor": "intrinsic", "track": track, "monitor_options": options}
    else:
        judge = quality
        if args.monitor == "detector":
            from miro.testtime.verifier import Verifier

            judge = Verifier([GenEvalScorer(rows, soft=True)]).calibrate(calib["images"], calib_prompts)
        monitor_kw = {"monitor": "rewards", "verifier": judge, "track": track, "track_held_out": False}
    checkpoints, eval_wall = {}, [0.0]

    def checkpoint(row: dict) -> bool:  # the adapter after iteration row["iteration"] + 1, evaluated
        if row["iteration"] + 1 in args.eval_at and not row["stopped"]:
            t = time.perf_counter()
            at = evaluate(renderer, geneval, splits, args.images, sde)
            checkpoints[row["iteration"] + 1] = {"kl": row["kl"], "splits": compare(base, at),
                                                 "passed": {n: a["passed"] for n, a in at.items()}}  # fmt: skip
            eval_wall[0] += time.perf_counter() - t
            print(f"after iteration {row['iteration'] + 1}: " + ", ".join(
                f"{n} {100 * v['adapted']:.1f}% ({v['delta_points']:+.1f})"
                for n, v in checkpoints[row['iteration'] + 1]["splits"].items()), flush=True)  # fmt: skip
        return False

    t0 = time.perf_counter()
    result = ttrl_adapt(renderer, cohort, group_size=args.group_size, iterations=args.iterations,
                        prompts_per_iteration=args.prompts_per_iteration, train_steps=args.train_steps,
                        final_step=args.final_step, sde_steps=args.sde_steps,
                        sde_noise=args.sde_noise, lora=LoraSpec(rank=args.rank, alpha=float(args.rank)), lr=args.lr,
                        kl_beta=args.kl_beta, max_kl=args.max_kl, callback=checkpoint, seed=args.seed,
                        groups_per_step=args.groups_per_step or None, advantage_std=args.advantage_std,
                        out_dir=out / "adapt", progress=args.progress, **monitor_kw)  # fmt: skip
    adapt_wall = time.perf_counter() - t0 - eval_wall[0]
    adapted = evaluate(renderer, geneval, splits, args.images, sde)  # the adapter is active after ttrl_adapt
    base_check = disabled_check(renderer, splits, base, sde)

    report = {
        "config": vars(args), "settings": settings.to_dict(), "one_sample_nfe": renderer.one_sample_nfe(),
        "device": str(renderer.device), "torch": torch.__version__,
        "splits": compare(base, adapted),
        "prompts": {n: b["prompts"] for n, b in base.items()},
        "passed": {n: {"base": base[n]["passed"], "adapted": adapted[n]["passed"]} for n in base},
        "history": history_summary(result.history),
        "per_prompt": per_prompt_change(result.trace.to_dict()["searches"]),
        "adaptation": {"iterations": len(result.history), "nfe": result.nfe, "report_nfe": result.trace.report_nfe,
                       "samples_equivalent": result.nfe / renderer.one_sample_nfe(), "wall": adapt_wall,
                       "nfe_per_cohort_prompt": result.nfe / len(cohort), "folder": str(result.adapter_folder)},
        "eval_images": n_eval, "eval_wall": sum(b["wall"] for b in base.values()) + sum(a["wall"] for a in adapted.values()),
        "quality_norms": {n: {"mean": v.mean, "std": v.std} for n, v in quality.norms.items()},
        "base_check_max_abs": base_check,
        "checkpoints": checkpoints, "checkpoint_eval_wall": eval_wall[0],
        "ttrl_history": result.history,
    }  # fmt: skip
    (out / "ttrl_transfer.json").write_text(json.dumps(_finite(report), indent=1) + "\n")
    print(markdown(report))
    print(f"wrote {out / 'ttrl_transfer.json'}")
    return report


if __name__ == "__main__":
    main()
