"""Test-time search methods: best-of-N, noise search (random and zero-order) and reward-condition search.

Each method takes a pipeline (or a ``Renderer``), prompts, a ``Verifier`` and a ``Budget`` (per output image,
``miro.testtime.budget``), runs one search per (prompt, seed), and returns ``(images, trace)``: one PIL image
per prompt and the ``Trace`` (NFE-eq charged, wall time, every reward of every candidate, the kept condition
and noise).  Candidate 0 of every search is the plain sample of the seed with the settings' condition, what
``pipe(prompt, generator=torch.Generator().manual_seed(seed))`` gives, so a budget of one sample returns the
baseline and every gain is measured against it at the same seeds.  Candidates are rendered and scored
``batch_size`` at a time and dropped; only the incumbent is kept (memory flat in N).  Determinism: the noises
and the random draws of a search are functions of its seed.

- ``best_of_n``: N independent noises, keep the verifier's best (Ma et al. 2025's random search).
- ``noise_search``: ``algo="random"`` is best-of-N; ``algo="zero_order"`` keeps a pivot noise n and draws
  ``neighbors`` candidates ``sqrt(1 - step^2) n + step eps`` around it (still exactly N(0, I), so on the Gaussian
  shell, unlike n + step eps); the best neighbour becomes the pivot when it beats it.
- ``condition_search``: the reward condition is a continuous, cheap knob only a reward-conditioned model has:
  search the positive targets s+, the negative targets s- and the guidance scale w (the text scale when the
  settings decouple text and reward guidance, ``Renderer.scale_field``) per prompt, with the seed's
  noise shared by all candidates (common random numbers: score differences come from the condition).  Random
  draws in the box ([s_lo, s_hi] per target, [0, w_max] for w) first, then local refinement: Gaussian steps
  around the best condition, clipped to the box, the step shrinking after a round without improvement.
  Candidates with different w need separate forward passes (one guidance per batch), so it is slower in wall
  time than best-of-N at equal NFE-eq on a GPU; the NFE-eq are the same.
- ``reno`` (``miro.testtime.reno.reno_optimize``): gradient ascent on the initial noise (and optionally s+).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from miro.contracts.rewards import our_names
from miro.testtime.budget import Budget, Trace
from miro.testtime.render import Condition, derived_seed
from miro.testtime.search import Search, as_renderer, check_positive_int, new_trace, seed_list
from miro.testtime.verifier import Verifier
from miro.utils.config import ConfigError, require, require_choice

NOISE_ALGOS = ("random", "zero_order")


def _noise_info(seed: int, index: int, **extra) -> dict:
    return {"seed": int(seed), "index": int(index), **extra}


def best_of_n(pipe, prompts: Sequence[str], verifier: Verifier, budget: Budget, *, seeds: int | Sequence[int] = 0,
              n: int | None = None, settings=None, batch_size: int = 8, mixed_precision: str = "auto",
              _method: str = "best_of_n") -> tuple[list, Trace]:  # fmt: skip
    """The verifier's best of N noises per prompt (N: as many as the budget pays for, or ``n``)."""
    check_positive_int("batch_size", batch_size)
    if n is not None:
        check_positive_int("n", n)
    renderer = as_renderer(pipe, settings, mixed_precision)
    seeds = seed_list(prompts, seeds)
    trace = new_trace(_method, renderer, verifier, budget, {"n": n, "batch_size": batch_size})
    images = []
    cost = renderer.nfe(renderer.default)
    for prompt, seed in zip(prompts, seeds):
        s = Search(renderer, verifier, budget, prompt, seed)
        total = s.plan(cost, n)
        choose = total > 1
        for start in range(0, total, batch_size):
            idx = list(range(start, min(total, start + batch_size)))
            noise = torch.cat([renderer.noise(seed, j) for j in idx])
            s.ensure(cost * len(idx), len(idx), choose, "best-of-n candidates")
            out, spent = renderer.render(prompt, noise, renderer.default)
            s.evaluate(
                out, spent, choose, [renderer.default] * len(idx), [_noise_info(seed, j) for j in idx], noise
            )
        image, st = s.finish(candidates=total)
        images.append(image)
        trace.searches.append(st)
    return images, trace


def noise_search(pipe, prompts: Sequence[str], verifier: Verifier, budget: Budget, *, seeds: int | Sequence[int] = 0,
                 algo: str = "zero_order", step: float = 0.3, neighbors: int = 4, settings=None, batch_size: int = 8,
                 mixed_precision: str = "auto") -> tuple[list, Trace]:  # fmt: skip
    """Search over initial noises: ``random`` (best-of-N) or ``zero_order`` around the incumbent (module docstring)."""
    require_choice("noise_search.algo", algo, NOISE_ALGOS)
    if algo == "random":
        return best_of_n(pipe, prompts, verifier, budget, seeds=seeds, settings=settings, batch_size=batch_size,
                         mixed_precision=mixed_precision, _method="noise_search/random")  # fmt: skip
    require(isinstance(step, (int, float)) and 0.0 < float(step) <= 1.0, "noise_search.step", step,
            "must be in (0, 1]: the neighbour is sqrt(1 - step^2) n + step eps")  # fmt: skip
    check_positive_int("noise_search.neighbors", neighbors)
    check_positive_int("batch_size", batch_size)
    renderer = as_renderer(pipe, settings, mixed_precision)
    seeds = seed_list(prompts, seeds)
    trace = new_trace("noise_search/zero_order", renderer, verifier, budget,
                      {"step": step, "neighbors": neighbors, "batch_size": batch_size})  # fmt: skip
    keep, lam = math.sqrt(1.0 - float(step) ** 2), float(step)
    cost = renderer.nfe(renderer.default)
    images = []
    for prompt, seed in zip(prompts, seeds):
        s = Search(renderer, verifier, budget, prompt, seed)
        total = s.plan(cost)
        choose = total > 1
        pivot = renderer.noise(seed, 0)
        s.ensure(cost, 1, choose, "zero-order pivot")
        out, spent = renderer.render(prompt, pivot, renderer.default)
        pivot_score = s.evaluate(
            out, spent, choose, [renderer.default], [_noise_info(seed, 0, pivot=None)], pivot
        )[0]
        pivot_index, drawn, iteration = 0, 0, 0
        while len(s.trace.candidates) < total:
            k = min(neighbors, total - len(s.trace.candidates))
            round_best, round_noise, round_index = -math.inf, None, None
            for start in range(0, k, batch_size):
                m = min(batch_size, k - start)
                eps = torch.cat([renderer.noise(seed, drawn + j, stream="neighbour") for j in range(m)])
                cand = keep * pivot + lam * eps
                infos = [_noise_info(seed, drawn + j, stream="neighbour", pivot=pivot_index, step=lam, iteration=iteration)
                         for j in range(m)]  # fmt: skip
                drawn += m
                s.ensure(cost * m, m, choose, "zero-order neighbours")
                out, spent = renderer.render(prompt, cand, renderer.default)
                first = len(s.trace.candidates)
                scores = s.evaluate(out, spent, choose, [renderer.default] * m, infos, cand)
                j = int(np.argmax(scores))
                if scores[j] > round_best:
                    round_best, round_noise, round_index = scores[j], cand[j : j + 1].clone(), first + j
            if round_best > pivot_score:  # move the pivot to the round's best neighbour
                pivot, pivot_score, pivot_index = round_noise, round_best, round_index
            iteration += 1
        image, st = s.finish(candidates=total, iterations=iteration, pivot=pivot_index)
        images.append(image)
        trace.searches.append(st)
    return images, trace


def _box(key: str, value) -> tuple[float, float]:
    require(isinstance(value, Sequence) and len(value) == 2 and 0.0 <= float(value[0]) <= float(value[1]) <= 1.0,
            key, value, "must be [lo, hi] with 0 <= lo <= hi <= 1")  # fmt: skip
    return float(value[0]), float(value[1])


def condition_search(pipe, prompts: Sequence[str], verifier: Verifier, budget: Budget, *,
                     seeds: int | Sequence[int] = 0, rewards: Sequence[str] | None = None,
                     search_s_plus: bool = True, search_s_minus: bool = True, search_w: bool = True,
                     s_plus_range: Sequence[float] = (0.0, 1.0), s_minus_range: Sequence[float] = (0.0, 1.0),
                     w_max: float = 10.0, random_fraction: float = 0.5, step: float = 0.2, shrink: float = 0.5,
                     share_noise: bool = True, settings=None, batch_size: int = 8,
                     mixed_precision: str = "auto") -> tuple[list, Trace]:  # fmt: skip
    """Search the reward condition (s+, s-, w) per prompt: random draws, then local refinement (module docstring).

    ``rewards``: the model's rewards whose targets are searched; the others keep the settings' targets.  Default:
    those the verifier chooses with (a target the verifier cannot see is a blind move: on the shapes world,
    searching the held-out alignment target with a quality verifier lowered alignment, docs/testtime.md), or
    every reward of the model when the verifier chooses with none of them by name (an intrinsic or a toy judge).  ``step``: the refinement's standard deviation as a fraction of each range; ``shrink`` multiplies
    it after a round (``batch_size`` candidates) without improvement.  ``share_noise``: every candidate starts
    from the seed's noise (False: candidate j from noise j)."""
    renderer = as_renderer(pipe, settings, mixed_precision)
    names = renderer.names
    if rewards is None:
        rewards = [n for n in names if n in verifier.choosers] or list(names)
    rewards = our_names(rewards, names)  # the authors' keys name the model's rewards
    unknown = [r for r in rewards if r not in names]
    require(not unknown, "condition_search.rewards", rewards, f"must be rewards of the model: {names}")
    require(len(set(rewards)) == len(rewards), "condition_search.rewards", rewards, "names a reward twice")
    sp_lo, sp_hi = _box("condition_search.s_plus_range", s_plus_range)
    sm_lo, sm_hi = _box("condition_search.s_minus_range", s_minus_range)
    require(isinstance(w_max, (int, float)) and math.isfinite(w_max) and w_max >= 0, "condition_search.w_max", w_max,
            "must be a finite number >= 0")  # fmt: skip
    require(
        0.0 <= random_fraction <= 1.0,
        "condition_search.random_fraction",
        random_fraction,
        "must be in [0, 1]",
    )
    require(0.0 < step <= 1.0, "condition_search.step", step, "must be in (0, 1] (a fraction of each range)")
    require(0.0 < shrink <= 1.0, "condition_search.shrink", shrink, "must be in (0, 1]")
    check_positive_int("batch_size", batch_size)
    seeds = seed_list(prompts, seeds)
    options = {"rewards": rewards, "search_s_plus": search_s_plus, "search_s_minus": search_s_minus,
               "search_w": search_w, "s_plus_range": [sp_lo, sp_hi], "s_minus_range": [sm_lo, sm_hi], "w_max": w_max,
               "random_fraction": random_fraction, "step": step, "shrink": shrink, "share_noise": share_noise,
               "batch_size": batch_size}  # fmt: skip
    trace = new_trace("condition_search", renderer, verifier, budget, options)
    default = renderer.default
    # coordinates of the search vector: ("s_plus", reward) / ("s_minus", reward) / ("w", None) with its range
    coords = ([("s_plus", r, sp_lo, sp_hi) for r in rewards] if search_s_plus else []) + \
             ([("s_minus", r, sm_lo, sm_hi) for r in rewards] if search_s_minus else []) + \
             ([("w", None, 0.0, float(w_max))] if search_w else [])  # fmt: skip
    require(bool(coords), "condition_search", {"search_s_plus": search_s_plus, "search_s_minus": search_s_minus,
            "search_w": search_w, "rewards": rewards}, "searches nothing: search w, or s+ / s- of at least one reward")  # fmt: skip
    lo = np.array([c[2] for c in coords])
    hi = np.array([c[3] for c in coords])

    def to_condition(v: np.ndarray) -> Condition:
        sp, sm, w = {}, {}, None
        for (kind, r, _, _), x in zip(coords, v.tolist()):
            if kind == "s_plus":
                sp[r] = x
            elif kind == "s_minus":
                sm[r] = x
            else:
                w = x
        return default.replace(s_plus=sp, s_minus=sm, w=w)

    def from_condition(c: Condition) -> np.ndarray:
        out = []
        for kind, r, a, b in coords:
            v = c.guidance_scale if kind == "w" else (c.s_plus if kind == "s_plus" else c.s_minus)[r]
            out.append(min(max(a if v is None else float(v), a), b))
        return np.array(out, dtype=np.float64)

    upper = max(renderer.nfe(default), renderer.nfe(default.replace(w=float(w_max))) if search_w else 0)
    images = []
    for prompt, seed in zip(prompts, seeds):
        s = Search(renderer, verifier, budget, prompt, seed)
        total = s.plan(upper)
        choose = total > 1
        rng = np.random.default_rng(derived_seed(seed, 2, 0))
        n_random = int(round(random_fraction * (total - 1)))
        best_v, best_score, sigma, rounds = from_condition(default), -math.inf, float(step), 0
        queue: list[tuple[np.ndarray | None, str]] = [(None, "default")]
        queue += [(lo + (hi - lo) * rng.random(len(coords)), "random") for _ in range(n_random)]
        done = 0
        while done < total:
            if not queue:  # a refinement round around the best condition so far
                m = min(batch_size, total - done)
                queue = [(np.clip(best_v + sigma * (hi - lo) * rng.standard_normal(len(coords)), lo, hi), "refine")
                         for _ in range(m)]  # fmt: skip
                rounds += 1
            batch, queue = queue[: min(batch_size, total - done)], queue[min(batch_size, total - done) :]
            conds = [default if v is None else to_condition(v) for v, _ in batch]
            idx = [done + j for j in range(len(batch))]
            noise = torch.cat([renderer.noise(seed, 0 if share_noise else j) for j in idx])
            need = sum(renderer.nfe(c) for c in conds)
            s.ensure(need, len(batch), choose, "condition-search candidates")
            out, spent = renderer.render(prompt, noise, conds)
            infos = [_noise_info(seed, 0 if share_noise else j) for j in idx]
            scores = s.evaluate(
                out, spent, choose, conds, infos, noise, extras=[{"phase": ph} for _, ph in batch]
            )
            j = int(np.argmax(scores))
            improved = scores[j] > best_score
            if improved:
                best_score, best_v = scores[j], from_condition(conds[j])
            elif batch[0][1] == "refine":
                sigma *= shrink
            done += len(batch)
        image, st = s.finish(candidates=total, random=n_random, refine_rounds=rounds, final_step=sigma)
        images.append(image)
        trace.searches.append(st)
    return images, trace


def _reno(*args, **kwargs):
    from miro.testtime.reno import reno_optimize

    return reno_optimize(*args, **kwargs)


def _ttt(*args, **kwargs):
    from miro.testtime.per_prompt import ttt_method

    return ttt_method(*args, **kwargs)


METHODS = {
    "best_of_n": best_of_n,
    "noise_search": noise_search,
    "condition_search": condition_search,
    "reno": _reno,
    "ttt_per_prompt": _ttt,
}


def run_method(
    name: str, pipe, prompts: Sequence[str], verifier: Verifier, budget: Budget, **options
) -> tuple[list, Trace]:
    """The method called ``name`` (``METHODS``) with its keyword options."""
    if name not in METHODS:
        raise ConfigError(f"method={name!r}: must be one of {list(METHODS)}")
    return METHODS[name](pipe, prompts, verifier, budget, **options)
