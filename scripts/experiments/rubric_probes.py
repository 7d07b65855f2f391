"""How well the model judges its own prompt following: the rubric's probes against the shapes detector's reading
(issue #14: "accuracy of rubric probes against the detector's reading").

``RubricVerifier`` scores an image by the model's likelihood ratio of its prompt against counterfactual prompts that
change one word ("a red circle" against "a blue circle"; ``miro.testtime.intrinsic``).  A probe is right when its
sign agrees with what the image shows.  The detector says what it shows: each probe's counterfactual prompt is
parsed into GenEval metadata (``parse_caption``) and both prompts are graded on the same detections
(``alignment_score``: the share of right counts, colours and relations).  A probe is *decidable* when the two
grades differ, and *right* when its margin has the sign of that difference.  Chance is 50%.

The images are best-of-N candidates as ``scripts/bench_testtime.py --pooled`` renders them (candidate j of seed s
from ``Renderer.noise(s, j)``, candidate 0 = the one-sample baseline; the pipeline's recommended targets, text 3 /
reward 1, 25 Euler steps), so the same run also answers what best-of-N needs: does the rubric rank a candidate that
passes GenEval above one that fails *of the same prompt* (pairwise AUC within groups), and how often does its top
candidate of N pass?  Every probe's margin is kept per (t, eps) draw, so one run compares noise bands (t < 0.5
against t >= 0.5, the same number of draws), the default counterfactual set (3 per word) against every
alternative the vocabulary has, and three image scores: the rubric's own mean, the worst probe (min), and the
share of probes won.

    python scripts/experiments/rubric_probes.py --pipeline models/shapes_reference --data runs/demo/data \\
        --per-task 4 --seeds 2 --candidates 8 --draws 8 --out runs/rubric_probes

Resumable: images (PNG) and margins (one .pt per prompt and seed) are cached under ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/ (bench_testtime's prompt selection)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", type=Path, default=Path("models/shapes_reference"))
    p.add_argument("--data", type=Path, default=Path("runs/demo/data"), help="a shapes world (its heldout/ prompts)")
    p.add_argument("--per-task", type=int, default=4, help="the first N held-out prompts of every GenEval task")
    p.add_argument("--seeds", type=int, default=2, help="groups per prompt (seeds F..F+N-1)")
    p.add_argument("--first-seed", type=int, default=0, help="F: another value draws independent groups")
    p.add_argument("--candidates", type=int, default=8, help="best-of-N candidates per (prompt, seed)")
    p.add_argument("--draws", type=int, default=8, help="(t, eps) draws per probe, stratified over --t-range")
    p.add_argument("--t-range", type=float, nargs=2, default=[0.05, 0.95])
    p.add_argument("--split", type=float, default=0.5, help="the noise level that splits the draws into two bands")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--text-guidance-scale", type=float, default=3.0)
    p.add_argument("--reward-guidance-scale", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------- measurement
def render_groups(args, pipe, rows) -> dict:
    """{(prompt index, seed): [PIL] * candidates}, rendered once and cached as PNG."""
    from bench_testtime import build_renderer
    from PIL import Image

    from miro.testtime.render import to_pil

    renderer = build_renderer(pipe, "recommended", args.steps, args.text_guidance_scale,
                              reward_guidance_scale=args.reward_guidance_scale)  # fmt: skip
    folder = args.out / "images"
    folder.mkdir(parents=True, exist_ok=True)
    groups = {}
    for i, row in enumerate(rows):
        for s in range(args.first_seed, args.first_seed + args.seeds):
            paths = [folder / f"p{i:03d}_s{s}_c{j}.png" for j in range(args.candidates)]
            if all(p.exists() for p in paths):
                groups[i, s] = [Image.open(p).convert("RGB") for p in paths]
                continue
            noise = torch.cat([renderer.noise(s, j) for j in range(args.candidates)])
            out, _ = renderer.render(row["prompt"], noise, renderer.default)
            images = to_pil(out)
            for im, path in zip(images, paths):
                im.save(path)
            groups[i, s] = images
    return groups


def group_margins(args, judge, rows, groups) -> dict:
    """{(prompt index, seed): [candidates, draws, probes] margins}, cached per group."""
    folder = args.out / "margins"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for (i, s), images in groups.items():
        path = folder / f"p{i:03d}_s{s}.pt"
        if path.exists():
            out[i, s] = torch.load(path)
            continue
        with torch.no_grad():
            latents = judge.pil_latents(images)
            per = judge.margins(latents, [rows[i]["prompt"]] * len(images), per_draw=True)
        out[i, s] = torch.stack(per).cpu()
        torch.save(out[i, s], path)
    return out


def probe_truths(rows, groups, judge) -> tuple[dict, dict]:
    """Per group: GenEval pass [N] of the prompt and the probes' truth [N, P] in {-1, 0, 1} (the sign of the
    prompt's grade minus the counterfactual's grade on the same detections)."""
    from miro.contracts.geneval_rules import detection_colors, result_row
    from miro.data.shapes.alignment import alignment_score, parse_caption
    from miro.data.shapes.detector import default_detector

    detect = default_detector()
    passes, truths = {}, {}
    for (i, s), images in groups.items():
        meta = rows[i]
        cf_meta = [parse_caption(p.prompt) for p in judge.probes(meta["prompt"])]
        if any(m is None for m in cf_meta):
            raise SystemExit(f"a counterfactual of {meta['prompt']!r} does not parse as a shapes-world caption")
        ok, truth = [], []
        for image in images:
            dets = detect(image, masks=False)
            ok.append(bool(result_row("", meta, dets, detection_colors)["correct"]))
            own = alignment_score(meta, dets)
            truth.append([np.sign(own - alignment_score(m, dets)) for m in cf_meta])
        passes[i, s] = np.array(ok, dtype=float)
        truths[i, s] = np.array(truth, dtype=float).reshape(len(images), len(cf_meta))
    return passes, truths


# ------------------------------------------------------------------------------------------------ analysis
def pairwise_auc(groups: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, int]:
    """P(score of a passing candidate > score of a failing one of the same group), ties 1/2; and the pair count."""
    wins, pairs = 0.0, 0
    for score, ok in groups:
        for a, b in itertools.product(np.flatnonzero(ok > 0.5), np.flatnonzero(ok <= 0.5)):
            wins += 1.0 if score[a] > score[b] else 0.5 if score[a] == score[b] else 0.0
            pairs += 1
    return (wins / pairs if pairs else math.nan), pairs


def image_score(margins: np.ndarray, kinds: list[str], how: str) -> np.ndarray:
    """[N, P] margins -> [N] scores.  mean: the rubric's own (mean over kinds of each kind's mean margin);
    min: the worst probe; wins: the share of probes the prompt wins."""
    if how == "min":
        return margins.min(1)
    if how == "wins":
        return (margins > 0).mean(1)
    per_kind = [margins[:, [j for j, k in enumerate(kinds) if k == kind]].mean(1) for kind in sorted(set(kinds))]
    return np.mean(per_kind, axis=0)


def analyse(rows, margins, passes, truths, probes, t_draws, split) -> dict:
    bands = {"all draws": np.ones(len(t_draws), bool), f"t < {split}": t_draws < split,
             f"t >= {split}": t_draws >= split}  # fmt: skip
    out = {"bands": {}, "baseline_pass": float(np.mean([passes[k][0] for k in passes])),
           "mean_pass": float(np.mean([passes[k].mean() for k in passes])),
           "oracle_pass": float(np.mean([passes[k].max() for k in passes]))}  # fmt: skip
    for band, sel in bands.items():
        entry = {"draws": int(sel.sum())}
        for probe_set in ("default (3 per word)", "every alternative"):
            per_kind: dict[str, list[float]] = {}
            scored = {"mean": [], "min": [], "wins": []}
            for key, m in margins.items():
                plist = probes[key[0]]
                keep = [j for j, p in enumerate(plist) if probe_set.startswith("every") or p["default"]]
                mg = m[:, sel][:, :, keep].mean(1).numpy()  # [N, P]
                tr = truths[key][:, keep]
                kinds = [plist[j]["kind"] for j in keep]
                for j, kind in enumerate(kinds):
                    dec = tr[:, j] != 0
                    right = (np.sign(mg[dec, j]) == tr[dec, j]).tolist()
                    per_kind.setdefault(kind, []).extend(zip(right, tr[dec, j].tolist()))
                for how in scored:
                    scored[how].append((image_score(mg, kinds, how), passes[key]))
            acc = {k: {"accuracy": float(np.mean([r for r, _ in v])), "decidable": len(v)}
                   for k, v in sorted(per_kind.items())}  # fmt: skip
            every = [x for v in per_kind.values() for x in v]
            acc["all"] = {"accuracy": float(np.mean([r for r, _ in every])), "decidable": len(every)}
            # most decidable probes are images that show the prompt's word (truth +1), so a rubric that always says
            # "prompt" scores high on accuracy; the probes where the counterfactual is what the image shows are the
            # test of discrimination, and the balanced accuracy weighs both sides alike
            for sign, name in ((1, "prompt_right"), (-1, "counterfactual_right")):
                side = [r for r, t in every if t == sign]
                acc[name] = {"accuracy": float(np.mean(side)) if side else math.nan, "decidable": len(side)}
            acc["balanced"] = {"accuracy": (acc["prompt_right"]["accuracy"] + acc["counterfactual_right"]["accuracy"]) / 2,
                               "decidable": len(every)}  # fmt: skip
            sel_stats = {}
            for how, groups in scored.items():
                auc, pairs = pairwise_auc(groups)
                best = float(np.mean([ok[int(np.argmax(sc))] for sc, ok in groups]))
                sel_stats[how] = {"pairwise_auc": auc, "pairs": pairs, "best_of_n_pass": best}
            entry[probe_set] = {"probes": acc, "selection": sel_stats}
        out["bands"][band] = entry
    return out


def report(result: dict) -> str:
    lines = [f"GenEval pass: one sample {100 * result['baseline_pass']:.1f}%, mean candidate "
             f"{100 * result['mean_pass']:.1f}%, any of N (oracle) {100 * result['oracle_pass']:.1f}%", "",
             "| draws | probe set | probe accuracy: all (decidable) | prompt right / counterfactual right | balanced | "
             "colour | class | count | relation | AUC mean / min / wins | best-of-N pass % mean / min / wins |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]  # fmt: skip
    for band, entry in result["bands"].items():
        for probe_set in ("default (3 per word)", "every alternative"):
            e = entry[probe_set]
            acc = e["probes"]
            def cell(k, acc=acc):
                return f"{100 * acc[k]['accuracy']:.1f} ({acc[k]['decidable']})" if k in acc else "-"

            sel = e["selection"]
            lines.append(
                f"| {band} ({entry['draws']}) | {probe_set} | {cell('all')} | {cell('prompt_right')} / "
                f"{cell('counterfactual_right')} | {100 * acc['balanced']['accuracy']:.1f} | {cell('color')} | {cell('class')} | "
                f"{cell('count')} | {cell('relation')} | "
                + " / ".join(f"{sel[h]['pairwise_auc']:.3f}" for h in ("mean", "min", "wins"))
                + f" ({sel['mean']['pairs']} pairs) | "
                + " / ".join(f"{100 * sel[h]['best_of_n_pass']:.1f}" for h in ("mean", "min", "wins")) + " |"
            )
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from bench_testtime import heldout_prompts

    from miro.sampling.pipeline import load_pipeline
    from miro.testtime.intrinsic import RubricVerifier, counterfactual_probes

    args.out.mkdir(parents=True, exist_ok=True)
    rows = heldout_prompts(args.data, per_task=args.per_task)
    pipe = load_pipeline(args.pipeline, "cpu")
    judge = RubricVerifier(pipe, draws=args.draws, t_range=tuple(args.t_range), max_counterfactuals=1000)
    probes = {}
    for i, row in enumerate(rows):
        default = {(p.kind, p.word, p.replacement) for p in counterfactual_probes(row["prompt"])}
        probes[i] = [{"kind": p.kind, "prompt": p.prompt, "default": (p.kind, p.word, p.replacement) in default}
                     for p in judge.probes(row["prompt"])]  # fmt: skip
    t0 = time.perf_counter()
    groups = render_groups(args, pipe, rows)
    t1 = time.perf_counter()
    margins = group_margins(args, judge, rows, groups)
    t2 = time.perf_counter()
    passes, truths = probe_truths(rows, groups, judge)
    t_draws = judge.t_draws(judge.pil_latents(next(iter(groups.values()))[:1])).cpu().numpy()
    result = analyse(rows, margins, passes, truths, probes, t_draws, args.split)
    result.update({"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                   "prompts": [r["prompt"] for r in rows], "t_draws": t_draws.tolist(),
                   "seconds": {"render": t1 - t0, "margins": t2 - t1},
                   "probes_per_prompt": float(np.mean([len(v) for v in probes.values()]))})  # fmt: skip
    (args.out / "rubric_probes.json").write_text(json.dumps(result, indent=1))
    print(report(result))


if __name__ == "__main__":
    main()
