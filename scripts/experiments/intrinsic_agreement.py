"""Which noise levels carry which reward: the intrinsic verifier's agreement with the external rewards, per band of t
(issue #14: "the intrinsic verifier's Spearman correlation with each external weight-free reward ... target at least
0.5 on the rewards the model was trained with").

``IntrinsicVerifier`` judges reward k by ``E_t,eps[e(s_k = 0) - e(s_k = 1)]``, the flow-matching error under a low
target minus under a high one, with t stratified over one ``t_range`` (default [0.1, 0.9]) for every reward.  A
reward that lives in fine detail (pixel noise, sharpness) is only visible to the network at low t, where x_t is
still close to the image; a reward that lives in the layout (the caption's objects) at higher t.  This script keeps
every (t, eps) draw's difference apart (``IntrinsicVerifier.differences``), over a grid of t from near 0 to near 1,
and reports Spearman(intrinsic_k, reward_k) for the mean over the draws of each band, so one run compares the bands
on the same images and draws.

Two pools of images, one sample per (held-out prompt, seed), 25 Euler steps, text 3 / reward 1:
- ``baseline``: the pipeline's recommended targets (``--reward-targets``; the images ``scripts/bench_testtime.py`` measures agreement on;
  their rewards vary little, since the sampler asks for the same targets every time);
- ``spread``: every reward's target drawn uniformly in [0, 1] per image (seeded), so the rewards vary as far as
  the model can move them: a judge that reads a reward at all shows it here.

    python scripts/experiments/intrinsic_agreement.py --pipeline models/shapes_reference --data runs/demo/data \\
        --per-task 4 --seeds 4 --first-seed 4 --out runs/intrinsic_agreement

Resumable: images (PNG) and per-draw differences (one .pt per pool) are cached under ``--out``; the result is
``--out``/agreement.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/ (bench_testtime's helpers)

POOLS = ("baseline", "spread")
DEFAULT_BANDS = ("0.005-0.03", "0.03-0.1", "0.1-0.3", "0.3-0.5", "0.5-0.7", "0.7-0.99", "0.005-0.1", "0.1-0.9",
                 "0.005-0.99")  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", type=Path, default=Path("models/shapes_reference"))
    p.add_argument("--data", type=Path, default=Path("runs/demo/data"), help="a shapes world (its heldout/ prompts)")
    p.add_argument("--per-task", type=int, default=4, help="the first N held-out prompts of every GenEval task")
    p.add_argument("--seeds", type=int, default=4, help="images per prompt and pool (seeds F..F+N-1)")
    p.add_argument("--first-seed", type=int, default=4, help="F: another value draws independent images")
    p.add_argument("--pools", nargs="+", default=list(POOLS), choices=POOLS)
    p.add_argument("--low-draws", type=int, default=8, help="draws stratified over [0.005, 0.1]")
    p.add_argument("--high-draws", type=int, default=16, help="draws stratified over [0.1, 0.99]")
    p.add_argument("--bands", nargs="+", default=list(DEFAULT_BANDS), help="lo-hi bands of t to report")
    p.add_argument("--reward-targets", default="recommended",
                   help="the baseline pool's targets, as scripts/bench_testtime.py reads them (default: the pipeline's)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--text-guidance-scale", type=float, default=3.0)
    p.add_argument("--reward-guidance-scale", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    for band in args.bands:
        lo, _, hi = band.partition("-")
        try:
            ok = 0.0 <= float(lo) < float(hi) <= 1.0
        except ValueError:
            ok = False
        if not ok:
            p.error(f"--bands {band!r}: must be lo-hi with 0 <= lo < hi <= 1")
    if min(args.low_draws, args.high_draws, args.seeds, args.per_task) < 1:
        p.error("--low-draws, --high-draws, --seeds and --per-task must be >= 1")
    return args


def spread_targets(names: list[str], prompt_index: int, seed: int) -> dict[str, float]:
    """The ``spread`` pool's targets of one image: uniform in [0, 1] per reward, a function of (prompt, seed)."""
    g = np.random.default_rng([prompt_index, seed, 1234])
    return {n: float(v) for n, v in zip(names, g.uniform(0.0, 1.0, len(names)))}


def render_pool(args, pipe, renderer, rows, pool: str) -> tuple[list, list[str], list[dict]]:
    """The pool's images (PNG-cached), their prompts and their targets, in (prompt, seed) order."""
    from PIL import Image

    from miro.testtime.render import to_pil

    folder = args.out / "images" / pool
    folder.mkdir(parents=True, exist_ok=True)
    images, prompts, targets = [], [], []
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    for i, row in enumerate(rows):
        group = [spread_targets(list(pipe.reward_names), i, s) if pool == "spread" else {} for s in seeds]
        paths = [folder / f"p{i:03d}_s{s}.png" for s in seeds]
        if all(p.exists() for p in paths):
            rendered = [Image.open(p).convert("RGB") for p in paths]
        else:  # one batch per prompt: the seeds' noises (each the pipeline's own draw for its seed)
            conds = [renderer.condition(reward_targets=t) if t else renderer.default for t in group]
            out, _ = renderer.render(row["prompt"], torch.cat([renderer.noise(s) for s in seeds]), conds)
            rendered = to_pil(out)
            for image, path in zip(rendered, paths):
                image.save(path)
        images += rendered
        prompts += [row["prompt"]] * len(seeds)
        targets += group
    return images, prompts, targets


def pool_differences(args, judges, images, prompts, pool: str) -> tuple[np.ndarray, np.ndarray]:
    """[N, draws, K] per-draw differences of every judge (concatenated over judges) and the draws' t [draws]."""
    path = args.out / f"differences_{pool}.pt"
    if path.exists():
        saved = torch.load(path)
        return saved["d"].numpy(), saved["t"].numpy()
    parts, ts = [], []
    t0, rows = time.perf_counter(), 0
    for judge in judges:
        per = []
        with torch.no_grad():
            for start in range(0, len(images), 16):
                latents = judge.pil_latents(images[start : start + 16])
                per.append(judge.differences(latents, prompts[start : start + 16]).float().cpu())
                rows += latents.shape[0] * judge.draws * 2 * len(judge.rewards)
        parts.append(torch.cat(per))
        ts.append(judge.t_draws(latents).cpu())
    d, t = torch.cat(parts, 1), torch.cat(ts)
    print(f"{pool}: {rows} network rows in {time.perf_counter() - t0:.0f} s", flush=True)
    torch.save({"d": d, "t": t}, path)
    return d.numpy(), t.numpy()


def band_mask(t: np.ndarray, band: str) -> np.ndarray:
    lo, _, hi = band.partition("-")
    return (t >= float(lo)) & (t <= float(hi))


def agreement(d: np.ndarray, t: np.ndarray, raw: dict[str, np.ndarray], names: list[str], bands) -> dict:
    """{band: {"draws": n, reward: Spearman(mean difference over the band's draws, external reward)}}."""
    from bench_testtime import spearman

    out = {}
    for band in bands:
        m = band_mask(t, band)
        row: dict = {"draws": int(m.sum())}
        for k, name in enumerate(names):
            row[name] = spearman(d[:, m, k].mean(1), raw[name]) if m.any() else float("nan")
        out[band] = row
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from bench_testtime import WEIGHT_FREE, build_renderer, heldout_prompts

    from annotate.scorers.registry import build_scorers
    from miro.sampling.pipeline import load_pipeline
    from miro.testtime.intrinsic import IntrinsicVerifier

    args.out.mkdir(parents=True, exist_ok=True)
    rows = heldout_prompts(args.data, per_task=args.per_task)
    pipe = load_pipeline(str(args.pipeline), "auto", "float32")
    names = [n for n in pipe.reward_names if n in WEIGHT_FREE]  # the rewards this script can score outside
    if not names:
        raise SystemExit(f"{args.pipeline}: none of the model's rewards {list(pipe.reward_names)} is a weight-free "
                         f"reward ({WEIGHT_FREE}); there is nothing to compare the intrinsic verifier with")  # fmt: skip
    renderer = build_renderer(pipe, args.reward_targets, args.steps, None, args.text_guidance_scale,
                              args.reward_guidance_scale)  # fmt: skip
    judges = [IntrinsicVerifier(pipe, names, draws=args.low_draws, t_range=(0.005, 0.1), seed=0),
              IntrinsicVerifier(pipe, names, draws=args.high_draws, t_range=(0.1, 0.99), seed=1)]  # fmt: skip
    pixels = build_scorers(WEIGHT_FREE)[0]
    result: dict = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                    "rewards": names, "pools": {}}  # fmt: skip
    for pool in args.pools:
        images, prompts, targets = render_pool(args, pipe, renderer, rows, pool)
        scores = pixels.score_dict(images, prompts)
        raw = {n: np.asarray(scores[n], dtype=float) for n in names if n in scores}
        d, t = pool_differences(args, judges, images, prompts, pool)
        result["pools"][pool] = {
            "images": len(images),
            "reward_std": {n: float(v.std()) for n, v in raw.items()},
            "spearman": agreement(d, t, raw, names, args.bands),
            "t_draws": [round(float(v), 4) for v in t],
        }
        if pool == "spread":  # does the image follow its target at all (the ceiling of any judge)?
            from bench_testtime import spearman

            result["pools"][pool]["target_spearman"] = {
                n: spearman([tg[n] for tg in targets], raw[n]) for n in names
            }
    (args.out / "agreement.json").write_text(json.dumps(result, indent=2))
    for pool, res in result["pools"].items():
        print(f"\n{pool} ({res['images']} images): Spearman(intrinsic_k over the band's draws, reward_k)")
        print(f"{'band':>12} {'draws':>5} " + " ".join(f"{n[:12]:>12}" for n in names))
        for band, row in res["spearman"].items():
            print(f"{band:>12} {row['draws']:>5} " + " ".join(f"{row[n]:>12.2f}" for n in names))
        if "target_spearman" in res:
            print(f"{'target':>18} " + " ".join(f"{res['target_spearman'][n]:>12.2f}" for n in names))
    print(f"wrote {args.out / 'agreement.json'}")


if __name__ == "__main__":
    main()
