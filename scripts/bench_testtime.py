"""Test-time scaling benchmark: every method at budgets of 1, 2, 4, 8, 16 samples on the held-out shapes-world prompts.

For each verifier setting, method and budget it runs one search per (held-out prompt, seed) and reports, against the
one-sample baseline at the same seeds (every method's candidate 0, so budget 1 is the baseline itself):

- GenEval accuracy of the kept images (the shapes detector and GenEval's rules, ``miro.testtime.GenEvalScorer``);
- the mean change in z-score of every reward (z against the baseline images' mean and std, or ``--stats``), the
  verifier's own score, and of the rewards it did not choose with (held out);
- NFE-eq charged and wall time per image, and the chi-norm of the kept noise (||z|| / sqrt(D));
- diversity of the kept images: mean pairwise RMS pixel distance between the images kept for one prompt across
  seeds (a collapse toward one image per prompt is a reward-hacking signature), baseline alongside.

Verifier settings, reported separately: (a) ``quality``: sharpness, low_noise, colorfulness, contrast; (b)
``intrinsic``: the model as its own judge (intrinsic_<reward> for every reward of the model, and the rubric); (b')
``rubric``: its prompt-against-counterfactual rubric alone (``--rubric-aggregate``: mean or the worst probe); (a+b')
``rubric_quality``: the rubric with weight ``--rubric-weight`` and the four quality rewards with weight 1 each (the
rubric picks prompt-following candidates and costs image quality, the quality rewards the reverse); (c)
``all``: both, with the alignment reward and the soft GenEval judge (an upper bound: GenEval's judge is the same
detector).  GenEval and every reward a setting does not choose with are held out (scored, reported, never used to
choose).  Leave-one-reward-out: choose with four of the five weight-free rewards, report the fifth.  And the
intrinsic verifier's agreement with the external rewards on the baseline images: Spearman per reward the model was
trained with, and how often the rubric's sign agrees with GenEval's reading.

    python scripts/bench_testtime.py --data runs/shapes --pipeline runs/shapes_ref/final --out runs/bench_testtime
    python scripts/bench_testtime.py --data ... --pipeline ... --limit 8 --seeds 2 --budgets 1 2 --methods best_of_n

Writes ``<out>/bench_testtime.json`` and ``<out>/gain_vs_compute.png``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from miro.testtime.budget import Budget  # noqa: E402
from miro.testtime.intrinsic import RUBRIC_AGGREGATES, IntrinsicVerifier, RubricVerifier  # noqa: E402
from miro.testtime.methods import run_method  # noqa: E402
from miro.testtime.render import Renderer, to_pil  # noqa: E402
from miro.testtime.search import Search  # noqa: E402
from miro.testtime.verifier import (  # noqa: E402
    GenEvalScorer,
    Verifier,
    load_prompt_metadata,
    norms_from_reward_stats,
    score_with,
    scorer_outputs,
)

QUALITY = ["sharpness", "low_noise", "colorfulness", "contrast"]
WEIGHT_FREE = [*QUALITY, "alignment"]
SETTINGS = ("quality", "intrinsic", "rubric", "rubric_quality", "all")
LABELS = {"quality": "(a)", "intrinsic": "(b)", "rubric": "(b')", "rubric_quality": "(a+b')", "all": "(c)"}
METHOD_RUNS = {  # method name in the report -> (METHODS key, options)
    "best_of_n": ("best_of_n", {}),
    "noise_random": ("noise_search", {"algo": "random"}),
    "noise_zero_order": ("noise_search", {"algo": "zero_order"}),
    "condition_search": ("condition_search", {}),
    # s+ and s- only, at the settings' guidance scale: the candidates of a round share one scale and render as one
    # batch (each distinct w is its own sampling call, so the full search renders its random draws one by one)
    "condition_search_targets": ("condition_search", {"search_w": False}),
    # the same, each candidate from its own noise (as best-of-N's): the condition and the noise searched together
    "condition_search_targets_noise": ("condition_search", {"search_w": False, "share_noise": False}),
    # (s+, s-, w) with each candidate's own noise: the full condition and the noise searched together
    "condition_search_noise": ("condition_search", {"share_noise": False}),
    "reno": ("reno", {}),
    # per-prompt test-time training, its settings sized to each budget (miro.testtime.per_prompt.settings_for_budget)
    "ttt_per_prompt": ("ttt_per_prompt", {}),
}
POOLED = ("best_of_n", "noise_random")  # candidate j of a seed is the same noise at every budget


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data", required=True, help="a shapes world folder with heldout/evaluation_metadata.jsonl"
    )
    p.add_argument("--pipeline", required=True, help="a saved MiroPipeline folder")
    p.add_argument("--out", default="runs/bench_testtime")
    p.add_argument(
        "--budgets", type=float, nargs="+", default=[1, 2, 4, 8, 16], help="multiples of one sample"
    )
    p.add_argument("--methods", nargs="+", default=list(METHOD_RUNS), choices=list(METHOD_RUNS))
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--seeds", type=int, default=4, help="images per prompt (seeds F..F+N-1, F = --first-seed)")
    p.add_argument(
        "--first-seed", type=int, default=0, help="the first seed (another value: an independent draw of the same prompts)"
    )
    p.add_argument("--limit", type=int, default=None, help="only the first N held-out prompts")
    p.add_argument(
        "--per-task", type=int, default=None, help="only the first N prompts of every GenEval task"
    )
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default the settings' 50)")
    p.add_argument(
        "--guidance-scale",
        type=float,
        default=None,
        help="the joint scale w, which condition search varies (default the settings' 7)",
    )
    p.add_argument("--text-guidance-scale", type=float, default=None, help="decoupled text scale (default w)")
    p.add_argument(
        "--reward-guidance-scale", type=float, default=None, help="decoupled reward scale (default w)"
    )
    p.add_argument(
        "--reward-targets",
        default=None,
        help="'clean' (the shapes world's clean-image targets), 'recommended' (the pipeline's own, free rewards "
        "free in both branches) or name=value,... with value a number or 'none' (free) (default all 1)",
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--search-rewards", nargs="+", default=None,
                   help="the model's rewards whose targets condition search moves (default: those the verifier "
                        "chooses with, or every reward when it chooses with none of them, e.g. the rubric)")  # fmt: skip
    p.add_argument("--intrinsic-draws", type=int, default=4)
    p.add_argument("--intrinsic-t-ranges", default=None, metavar="REWARD=LO-HI,...",
                   help="the intrinsic verifier's own noise band per reward (the others on [0.1, 0.9]), e.g. "
                        "low_noise=0.005-0.1 (scripts/experiments/intrinsic_agreement.py measures the bands)")  # fmt: skip
    p.add_argument("--rubric-aggregate", choices=list(RUBRIC_AGGREGATES), default="min",
                   help="the rubric's image score: the worst probe, or the mean probe margin over kinds (the "
                        "default before session 24, which measured sessions 9-23)")
    p.add_argument("--rubric-weight", type=float, default=4.0,
                   help="the rubric's weight in the rubric_quality setting (each quality reward has 1)")  # fmt: skip
    p.add_argument("--reno-steps", type=int, default=4)
    p.add_argument("--reno-reg", type=float, default=0.01, help="ReNO's chi-norm prior weight")
    p.add_argument(
        "--loo-budget", type=float, default=8.0, help="budget of the leave-one-reward-out runs (0: skip)"
    )
    p.add_argument(
        "--loo-methods", nargs="+", default=["best_of_n", "condition_search"], choices=list(METHOD_RUNS)
    )
    p.add_argument(
        "--stats", default=None, help="reward_stats.json for the z-scores (default: the baseline images)"
    )
    p.add_argument(
        "--pooled", action="store_true",
        help="best_of_n / noise_random from one pool of candidates per (prompt, seed), rendered and scored once "
        "for every budget, setting and leave-one-out row (the choices equal the method's; wall times are the pool's)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32")
    args = p.parse_args(argv)
    if not (math.isfinite(args.rubric_weight) and args.rubric_weight >= 0):
        p.error(f"--rubric-weight {args.rubric_weight}: must be a finite number >= 0")
    try:
        args.intrinsic_t_ranges = parse_t_ranges(args.intrinsic_t_ranges)
    except ValueError as err:
        p.error(f"--intrinsic-t-ranges {args.intrinsic_t_ranges!r}: {err}")
    return args


def parse_t_ranges(text: str | None) -> dict[str, list[float]] | None:
    """``--intrinsic-t-ranges``: "reward=lo-hi,reward=lo-hi" -> {reward: [lo, hi]} (the verifier checks the values)."""
    if not text:
        return None
    out = {}
    for item in text.split(","):
        name, sep, band = item.partition("=")
        lo, dash, hi = band.partition("-")
        if not (sep and dash and name.strip()):
            raise ValueError(f"{item!r} is not reward=lo-hi")
        out[name.strip()] = [float(lo), float(hi)]
    return out


def spearman(x, y) -> float:
    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = ~(np.isnan(x) | np.isnan(y))
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return math.nan
    return float(stats.spearmanr(x[ok], y[ok]).statistic)


def diversity(images_by_prompt: dict[str, list]) -> float:
    """Mean over prompts of the mean pairwise RMS distance (pixels in [0, 1]) of the images kept across seeds."""
    per = []
    for images in images_by_prompt.values():
        arr = [np.asarray(im, dtype=np.float64) / 255 for im in images]
        pairs = [np.sqrt(((a - b) ** 2).mean()) for a, b in itertools.combinations(arr, 2)]
        if pairs:
            per.append(float(np.mean(pairs)))
    return float(np.mean(per)) if per else math.nan


def parse_targets(text: str | None, pipe=None) -> dict[str, float | None] | None:
    """``--reward-targets``: "clean" (the shapes world's clean-image targets, ``miro.demo.config.CLEAN_TARGETS``),
    "recommended" (``pipe.recommended_reward_targets``) or "name=value,name=value" with "none" for a free reward;
    None = the settings' default (every reward at 1)."""
    if text is None:
        return None
    if text == "clean":
        from miro.demo.config import CLEAN_TARGETS

        return dict(CLEAN_TARGETS)
    if text == "recommended":
        if pipe is None or pipe.recommended_reward_targets is None:
            raise SystemExit("--reward-targets recommended: the pipeline recommends no targets")
        return pipe.recommended_reward_targets
    try:
        return {
            k.strip(): None if v.strip().lower() == "none" else float(v)
            for k, v in (item.split("=", 1) for item in text.split(","))
        }
    except ValueError:
        raise SystemExit(
            f"--reward-targets {text!r}: must be 'clean', 'recommended' or name=value[,name=value...]"
        ) from None


def select_prompts(rows: list[dict], limit: int | None, per_task: int | None) -> list[dict]:
    """The held-out prompts to run: the first ``per_task`` of every GenEval task (in file order; GenEval's
    overall is the mean over tasks, so a subset must cover them all), then the first ``limit`` of those."""
    if per_task is not None:
        if per_task < 1:
            raise SystemExit(f"--per-task {per_task}: must be >= 1")
        seen: dict[str, int] = {}
        kept = []
        for r in rows:
            tag = r.get("tag", "")
            if seen.get(tag, 0) < per_task:
                seen[tag] = seen.get(tag, 0) + 1
                kept.append(r)
        rows = kept
    return rows[:limit]


def heldout_prompts(data, limit: int | None = None, per_task: int | None = None) -> list[dict]:
    """The held-out GenEval rows of the shapes world in folder ``data`` (``select_prompts`` of its
    ``heldout/evaluation_metadata.jsonl``)."""
    return select_prompts(load_prompt_metadata(Path(data) / "heldout" / "evaluation_metadata.jsonl"), limit, per_task)


def nan_mean(values) -> float:
    v = np.asarray(list(values), dtype=float)
    return float(np.nanmean(v)) if np.isfinite(v).any() else math.nan


def build_renderer(pipe, reward_targets: str | None, steps: int | None = None, guidance_scale: float | None = None,
                   text_guidance_scale: float | None = None, reward_guidance_scale: float | None = None) -> Renderer:
    """The benchmark's renderer: the sampling settings' defaults with these overrides (None keeps the default);
    ``reward_targets`` as ``--reward-targets`` reads it, a free reward free in both branches."""  # fmt: skip
    from miro.sampling.settings import SamplingSettings
    from miro.sampling.targets import free_negatives

    targets = parse_targets(reward_targets, pipe)
    overrides = {
        k: v
        for k, v in (
            ("steps", steps),
            ("guidance_scale", guidance_scale),
            ("text_guidance_scale", text_guidance_scale),
            ("reward_guidance_scale", reward_guidance_scale),
            ("reward_targets", targets),
            ("negative_reward_targets", free_negatives(targets)),
        )
        if v is not None
    }
    return Renderer(pipe, SamplingSettings(**overrides))


class Bench:
    def __init__(self, args):
        from annotate.scorers.registry import build_scorers
        from miro.sampling.pipeline import load_pipeline

        self.args = args
        self.rows = heldout_prompts(args.data, args.limit, args.per_task)
        self.prompts = [r["prompt"] for r in self.rows]
        self.seeds = list(range(args.first_seed, args.first_seed + args.seeds))
        self.jobs = [(p, s) for p in self.prompts for s in self.seeds]
        self.pipe = load_pipeline(args.pipeline, args.device, args.dtype)
        self.renderer = build_renderer(self.pipe, args.reward_targets, args.steps, args.guidance_scale,
                                       args.text_guidance_scale, args.reward_guidance_scale)  # fmt: skip
        self.pixels = build_scorers(WEIGHT_FREE)[0]  # one scorer, five outputs
        model_rewards = list(self.pipe.reward_names)
        self.intrinsic = (IntrinsicVerifier(self.pipe, draws=args.intrinsic_draws, t_ranges=args.intrinsic_t_ranges)
                          if model_rewards else None)  # fmt: skip
        self.rubric = RubricVerifier(self.pipe, draws=args.intrinsic_draws, aggregate=args.rubric_aggregate)
        self.geneval = GenEvalScorer(self.rows)
        self.geneval_soft = GenEvalScorer(self.rows, soft=True, name="geneval_soft")
        self.norms = {}
        self.pool: dict[tuple[str, int], list] = {}  # (prompt, seed) -> candidate images (``--pooled``)
        self.pool_raw: dict[tuple[int, str, int], np.ndarray] = {}  # (scorer id, prompt, seed) -> [n, outputs]
        self.pool_wall = [0.0, 0]  # seconds spent rendering the pool, candidates rendered

    # ------------------------------------------------------------------ verifiers
    def scorers(self, setting: str) -> list:
        judges = [s for s in (self.intrinsic, self.rubric) if s is not None]
        cheap = [self.pixels, self.geneval, self.geneval_soft]
        if setting in ("rubric", "rubric_quality"):
            return [*cheap, self.rubric]
        return cheap + (judges if setting in ("intrinsic", "all", "every") else [])

    def choosers(self, setting: str) -> list[str]:
        judges = [n for s in (self.intrinsic, self.rubric) if s is not None for n in scorer_outputs(s)]
        return {"quality": QUALITY, "intrinsic": judges, "rubric": ["rubric"], "rubric_quality": ["rubric", *QUALITY],
                "all": [*WEIGHT_FREE, *judges, "geneval_soft"]}[setting]  # fmt: skip

    def verifier(self, setting: str, choosers: list[str] | None = None) -> Verifier:
        scorers = self.scorers(setting)
        names = [n for s in scorers for n in scorer_outputs(s)]
        choosers = choosers or self.choosers(setting)
        weight = {"rubric": self.args.rubric_weight} if setting == "rubric_quality" else {}
        v = Verifier(scorers, weights={c: weight.get(c, 1.0) for c in choosers}, held_out=[n for n in names if n not in choosers],
                     norms=self.norms, batch_size=16)  # fmt: skip
        return v

    # ------------------------------------------------------------------ baseline
    def baseline(self) -> dict:
        """One sample per (prompt, seed), scored with every reward; calibrates the z-scores."""
        t0 = time.perf_counter()
        images = []
        for p, s in self.jobs:
            out, _ = self.renderer.render(p, self.renderer.noise(s), self.renderer.default)
            images += to_pil(out)
        wall = (time.perf_counter() - t0) / len(self.jobs)
        full = self.verifier("all")
        if self.args.stats:
            for name, norm in norms_from_reward_stats(self.args.stats).items():
                if name in full.norms:
                    full.norms[name] = norm
        raw = full.raw_scores(images, [p for p, _ in self.jobs])
        full.calibrate_raw(raw)
        self.norms = dict(full.norms)
        self.base_raw = {n: raw[:, k] for k, n in enumerate(full.names)}
        self.base_images = images
        by_prompt: dict[str, list] = {}
        for (p, _), im in zip(self.jobs, images):
            by_prompt.setdefault(p, []).append(im)
        return {
            "geneval": nan_mean(self.base_raw["geneval"]),
            "geneval_by_task": self.by_task(self.base_raw["geneval"]),
            "rewards": {n: nan_mean(v) for n, v in self.base_raw.items()},
            "diversity": diversity(by_prompt),
            "wall_per_image": wall,
            "nfe_per_image": float(self.renderer.one_sample_nfe()),
            "norms": {n: {"mean": v.mean, "std": v.std, "source": v.source} for n, v in self.norms.items()},
        }

    def by_task(self, values) -> dict[str, float]:
        """Per-image GenEval verdicts (job order) as GenEval reports them: the mean per task, and ``overall``, the
        mean over tasks (``geneval`` in a row is the mean over images, which weights a task by its prompts)."""
        per: dict[str, list] = {}
        for i, v in enumerate(values):
            per.setdefault(self.rows[i // len(self.seeds)].get("tag", ""), []).append(v)
        out = {tag: nan_mean(v) for tag, v in per.items()}
        return {**out, "overall": nan_mean(out.values())}

    def agreement(self) -> dict:
        """The intrinsic verifier against the external rewards on the baseline images."""
        out: dict = {"spearman": {}, "rubric": {}}
        for r in self.pipe.reward_names:
            if r in self.base_raw and f"intrinsic_{r}" in self.base_raw:
                out["spearman"][r] = spearman(self.base_raw[f"intrinsic_{r}"], self.base_raw[r])
        rub, gen = self.base_raw.get("rubric"), self.base_raw.get("geneval")
        if rub is not None:
            ok = ~np.isnan(rub) & ~np.isnan(gen)
            out["rubric"] = {
                "images": int(ok.sum()),
                "sign_agrees_with_geneval": float(np.mean((rub[ok] > 0) == (gen[ok] > 0.5)))
                if ok.any()
                else math.nan,
                "spearman_with_geneval_soft": spearman(rub, self.base_raw["geneval_soft"]),
                "mean_margin_pass": nan_mean(rub[ok & (gen > 0.5)]),
                "mean_margin_fail": nan_mean(rub[ok & (gen <= 0.5)]),
            }
        return out

    # ------------------------------------------------------------------ runs
    def method_options(self, method: str) -> tuple[str, dict]:
        key, opts = METHOD_RUNS[method]
        opts = dict(opts)
        if key == "reno":
            opts.update(steps=self.args.reno_steps, reg_weight=self.args.reno_reg)
        else:
            opts["batch_size"] = self.args.batch_size
        if key == "condition_search" and self.args.search_rewards:
            opts["rewards"] = list(self.args.search_rewards)
        return key, opts

    def run(self, setting: str, method: str, budget: float, verifier: Verifier | None = None) -> dict:
        verifier = verifier or self.verifier(setting)
        key, opts = self.method_options(method)
        if key == "ttt_per_prompt":
            from miro.testtime.per_prompt import settings_for_budget

            choose = verifier.nfe([self.jobs[0][0]], "chooser")
            opts = {"config": settings_for_budget(budget, self.renderer.one_sample_nfe(), choose)}
        t0 = time.perf_counter()
        images, trace = run_method(key, self.renderer, [p for p, _ in self.jobs], verifier, Budget(samples=budget),
                                   seeds=[s for _, s in self.jobs], **opts)  # fmt: skip
        wall = time.perf_counter() - t0
        kept = [s.chosen_rewards for s in trace.searches]
        dim = trace.searches[0].noise_dim
        norms = [s.noise_norm / math.sqrt(dim) for s in trace.searches if s.noise_norm is not None and dim]
        extra = ({"beats_best_demo": nan_mean(float(s.extra["beats_best_demo"]) for s in trace.searches),
                  "chosen_minus_best_demo": nan_mean(s.extra["chosen_score"] - s.extra["best_demo_score"]
                                                     for s in trace.searches),
                  "final_minus_demo_mean": nan_mean(s.extra["final_mean_score"] - s.extra["demo_mean_score"]
                                                    for s in trace.searches)}
                 if key == "ttt_per_prompt" else {})  # fmt: skip
        if key == "condition_search":  # what the search kept, per (prompt, seed)
            extra["chosen_conditions"] = [s.chosen_condition for s in trace.searches]
        return self.result_row(setting, method, budget, verifier, kept, images, trace.nfe, trace.report_nfe, wall,
                               float(np.mean([len(s.candidates) for s in trace.searches])), norms, extra)  # fmt: skip

    def result_row(self, setting: str, method: str, budget: float, verifier: Verifier, kept: list[dict], images: list,
                   nfe: float, report_nfe: float, wall: float, candidates: float, norms: list, extra: dict) -> dict:  # fmt: skip
        """One row of the report: the kept candidates' rewards against the baseline's, per image."""
        delta = {}
        for name in verifier.names:
            norm = self.norms[name]
            after = np.array([k.get(name, math.nan) for k in kept], dtype=float)
            delta[name] = nan_mean((after - self.base_raw[name]) / norm.std)
        chooser_w = {n: w for n, w in verifier.weights.items()}
        own = sum(w * (0.0 if math.isnan(delta[n]) else delta[n]) for n, w in chooser_w.items())
        held = [n for n in verifier.held_out if n not in ("geneval", "geneval_soft")]
        by_prompt: dict[str, list] = {}
        for (p, _), im in zip(self.jobs, images):
            by_prompt.setdefault(p, []).append(im)
        return {
            "setting": setting, "method": method, "budget": budget,
            "geneval": nan_mean(k.get("geneval", math.nan) for k in kept),
            "geneval_by_task": self.by_task([k.get("geneval", math.nan) for k in kept]),
            "geneval_gain_points": 100 * (nan_mean(k.get("geneval", math.nan) for k in kept)
                                          - nan_mean(self.base_raw["geneval"])),
            "delta_z": delta, "verifier_delta": own,
            "held_out_delta_z": nan_mean(delta[n] for n in held) if held else math.nan,
            "nfe_per_image": nfe / len(self.jobs), "report_nfe_per_image": report_nfe / len(self.jobs),
            "wall_per_image": wall / len(self.jobs), "diversity": diversity(by_prompt),
            "candidates_per_search": candidates, "noise_norm_ratio": nan_mean(norms),
            # test-time training's own question: does the adapted sample beat the best pseudo-demonstration?
            **extra,
        }  # fmt: skip

    # ------------------------------------------------------------------ pooled best-of-N
    def pool_images(self, prompt: str, seed: int, n: int) -> list:
        """The first ``n`` best-of-N candidates of (prompt, seed): rendered in the method's batches (candidates
        ``batch_size * k`` onwards together), kept, and extended when a larger budget asks for more."""
        have = self.pool.setdefault((prompt, seed), [])
        step = self.args.batch_size
        while len(have) < n:
            start = len(have)
            idx = list(range(start, (start // step + 1) * step))
            t0 = time.perf_counter()
            noise = torch.cat([self.renderer.noise(seed, j) for j in idx])
            out, _ = self.renderer.render(prompt, noise, self.renderer.default)
            have += to_pil(out)
            self.pool_wall[0] += time.perf_counter() - t0
            self.pool_wall[1] += len(idx)
        return have[:n]

    def pool_scores(self, verifier: Verifier, prompt: str, seed: int, n: int) -> np.ndarray:
        """[n, K] raw rewards (``verifier.names``) of the first ``n`` pool candidates, each scorer run once per image."""
        cols = []
        for scorer in verifier.scorers:
            key = (id(scorer), prompt, seed)
            have = self.pool_raw.get(key, np.zeros((0, len(scorer_outputs(scorer)))))
            if len(have) < n:
                images = self.pool_images(prompt, seed, n)[len(have):]
                new = score_with(scorer, images, [prompt] * len(images))
                have = np.concatenate([have, np.stack([new[o] for o in scorer_outputs(scorer)], axis=1)])
                self.pool_raw[key] = have
            cols.append(have[:n])
        return np.concatenate(cols, axis=1)

    def run_pooled(self, setting: str, method: str, budget: float, verifier: Verifier | None = None) -> dict:
        """``run`` for best-of-N from the pool: per search as many candidates as ``Search.plan`` pays for at this
        budget (the verifier's scoring cost included), the first of the best verifier score chosen, as
        ``best_of_n`` does, without rendering again."""
        verifier = verifier or self.verifier(setting)
        cost = self.renderer.nfe(self.renderer.default)
        kept, images, counts, nfe, report = [], [], [], 0.0, 0.0
        for p, s in self.jobs:
            search = Search(self.renderer, verifier, Budget(samples=budget), p, s)
            total = search.plan(cost)
            raw = self.pool_scores(verifier, p, s, total)
            score = verifier.combine(verifier.normalize(raw))
            best = int(np.argmax(score)) if total > 1 else 0
            kept.append(dict(zip(verifier.names, map(float, raw[best]))))
            images.append(self.pool_images(p, s, total)[best])
            counts.append(total)
            nfe += total * cost + (search.choose_nfe * total if total > 1 else 0.0)
            report += search.report_nfe * total + (0.0 if total > 1 else search.choose_nfe)
        return self.result_row(setting, method, budget, verifier, kept, images, nfe, report, math.nan,
                               float(np.mean(counts)), [], {"pooled": True})  # fmt: skip

    def runner(self, method: str):
        """``run_pooled`` for best-of-N's methods under ``--pooled``, ``run`` for every other."""
        return self.run_pooled if self.args.pooled and method in POOLED else self.run


def baseline_row(bench: Bench, setting: str, method: str, base: dict) -> dict:
    v = bench.verifier(setting)
    return {"setting": setting, "method": method, "budget": 1.0, "geneval": base["geneval"],
            "geneval_by_task": base["geneval_by_task"], "geneval_gain_points": 0.0,
            "delta_z": {n: 0.0 for n in v.names}, "verifier_delta": 0.0, "held_out_delta_z": 0.0,
            "nfe_per_image": base["nfe_per_image"], "report_nfe_per_image": 0.0,
            "wall_per_image": base["wall_per_image"], "diversity": base["diversity"], "candidates_per_search": 1.0,
            "noise_norm_ratio": math.nan, "note": "budget 1 is the baseline sample (every method's candidate 0)"}  # fmt: skip


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = sorted({r["setting"] for r in results}, key=SETTINGS.index)
    panels = [("geneval", "GenEval accuracy (held out in a, b)"), ("verifier_delta", "verifier's own score, Δ (z)"),
              ("held_out_delta_z", "held-out rewards, mean Δz")]  # fmt: skip
    fig, axes = plt.subplots(
        len(settings), len(panels), figsize=(4.2 * len(panels), 3.2 * len(settings)), squeeze=False
    )
    for i, setting in enumerate(settings):
        for j, (key, title) in enumerate(panels):
            ax = axes[i, j]
            for method in dict.fromkeys(r["method"] for r in results):
                rows = sorted((r for r in results if r["setting"] == setting and r["method"] == method),
                              key=lambda r: r["budget"])  # fmt: skip
                if rows:
                    ax.plot(
                        [math.log2(r["budget"]) for r in rows],
                        [r[key] for r in rows],
                        marker="o",
                        label=method,
                    )
            ax.set_title(f"{LABELS[setting]} {setting}: {title}", fontsize=9)
            ax.set_xlabel("log2(compute / one sample)")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summarize(results: list[dict]) -> dict:
    """The issue's targets, read off the results (reported whatever they are)."""
    out: dict = {"geneval_gain_at_8x_points": {}, "condition_vs_best_of_n": []}
    for r in results:
        if r["budget"] == 8 and r["setting"] != "all":  # the detector's not in them
            out["geneval_gain_at_8x_points"][f"{r['setting']}/{r['method']}"] = r["geneval_gain_points"]
    for a in results:
        if not a["method"].startswith("condition_search") or a["budget"] == 1:
            continue
        for b in results:
            if b["method"] == "best_of_n" and b["setting"] == a["setting"] and b["budget"] == a["budget"]:
                out["condition_vs_best_of_n"].append({
                    "setting": a["setting"], "method": a["method"], "budget": a["budget"],
                    "verifier_delta": a["verifier_delta"] - b["verifier_delta"],
                    "held_out_delta_z": a["held_out_delta_z"] - b["held_out_delta_z"],
                    "geneval_points": a["geneval_gain_points"] - b["geneval_gain_points"],
                })  # fmt: skip
    return out


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bench = Bench(args)
    print(f"{len(bench.prompts)} prompts x {len(bench.seeds)} seeds; one sample = "
          f"{bench.renderer.one_sample_nfe()} NFE-eq ({bench.renderer.settings.steps} steps)", flush=True)  # fmt: skip
    base = bench.baseline()
    print(f"baseline: GenEval {base['geneval']:.3f}, {base['wall_per_image']:.3f} s/image", flush=True)
    results = []
    for setting in args.settings:
        for method in args.methods:
            for budget in args.budgets:
                if budget == 1:
                    results.append(baseline_row(bench, setting, method, base))
                    continue
                if method == "ttt_per_prompt" and budget < 4:
                    print(
                        f"({setting}) {method} x{budget:g}: skipped (test-time training needs >= 4 samples)"
                    )
                    continue
                r = bench.runner(method)(setting, method, budget)
                results.append(r)
                print(f"({setting}) {method} x{budget:g}: GenEval {r['geneval']:.3f} ({r['geneval_gain_points']:+.1f} "
                      f"pts), verifier Δ {r['verifier_delta']:+.3f}, held-out Δz {r['held_out_delta_z']:+.3f}, "
                      f"{r['nfe_per_image']:.0f} NFE-eq/img, {r['wall_per_image']:.2f} s/img", flush=True)  # fmt: skip
    loo = []
    if args.loo_budget and args.loo_budget > 1:
        for held in WEIGHT_FREE:
            choosers = [n for n in WEIGHT_FREE if n != held]
            for method in args.loo_methods:
                v = bench.verifier("quality", choosers)
                r = bench.runner(method)(f"loo:{held}", method, args.loo_budget, verifier=v)
                loo.append({"held_out": held, "method": method, "budget": args.loo_budget,
                            "held_out_delta_z": r["delta_z"][held],
                            "choosers_delta_z": nan_mean(r["delta_z"][c] for c in choosers),
                            "geneval_gain_points": r["geneval_gain_points"]})  # fmt: skip
                print(f"leave-one-out {held} ({method} x{args.loo_budget:g}): held-out Δz {r['delta_z'][held]:+.3f}, "
                      f"choosers Δz {loo[-1]['choosers_delta_z']:+.3f}", flush=True)  # fmt: skip
    report = {
        "config": vars(args), "prompts": len(bench.prompts), "seeds": bench.seeds,
        "pipeline_rewards": list(bench.pipe.reward_names), "settings": bench.renderer.settings.to_dict(),
        "device": str(bench.renderer.device), "torch": torch.__version__,
        "baseline": base, "intrinsic_agreement": bench.agreement(), "results": results, "leave_one_out": loo,
        "pool": {"candidates_rendered": bench.pool_wall[1],
                 "wall_per_candidate": bench.pool_wall[0] / max(bench.pool_wall[1], 1)} if args.pooled else None,
        "targets": summarize(results),
    }  # fmt: skip
    (out / "bench_testtime.json").write_text(json.dumps(_finite(report), indent=1) + "\n")
    plot(results, out / "gain_vs_compute.png")
    print(f"wrote {out / 'bench_testtime.json'} and {out / 'gain_vs_compute.png'}")
    return report


if __name__ == "__main__":
    main()
