"""One search's bookkeeping, shared by every method: its budget account, its trace, and the incumbent.

Why a shared piece: every method must charge compute the same way, score every candidate with every reward
and keep only the best image, so that methods compare at equal NFE-eq and memory does not grow with the
number of candidates (candidates are rendered and scored a chunk at a time and dropped; only the incumbent's
image and initial noise are kept).

Charging rules (``miro.testtime.budget``): rendering is charged the network rows it really ran; scoring with
the rewards that choose is charged their declared ``nfe`` when the search chooses among several candidates;
when the budget pays for a single candidate, nothing is chosen, so its scoring (like the scoring of held-out
and reported rewards, always) goes to ``report_nfe`` and is not charged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict

import torch

from miro.testtime.budget import Budget, BudgetExceeded, Candidate, SearchTrace, Stopwatch, Trace
from miro.testtime.render import Condition, Renderer, to_pil
from miro.testtime.verifier import Verifier
from miro.utils.config import ConfigError


def as_renderer(pipe, settings=None, mixed_precision: str = "auto") -> Renderer:
    """``pipe`` itself when it is a ``Renderer`` (then ``settings`` must be None), else a new one."""
    if isinstance(pipe, Renderer):
        if settings is not None:
            raise ValueError("pass the sampling settings to the Renderer, not with it")
        return pipe
    return Renderer(pipe, settings, mixed_precision)


def seed_list(prompts: Sequence[str], seeds: int | Sequence[int]) -> list[int]:
    """One seed per prompt: an int is every prompt's seed (as ``python -m miro.sampling`` seeds images)."""
    if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a non-empty list of strings")
    if isinstance(seeds, int):
        return [seeds] * len(prompts)
    seeds = [int(s) for s in seeds]
    if len(seeds) != len(prompts):
        raise ValueError(
            f"{len(seeds)} seeds for {len(prompts)} prompts; give one seed per prompt or one int"
        )
    return seeds


def check_positive_int(key: str, value, minimum: int = 1) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
        raise ConfigError(f"{key}={value!r}: must be an integer >= {minimum}")


class Search:
    """The account, trace and incumbent of one search (one prompt, one seed)."""

    def __init__(self, renderer: Renderer, verifier: Verifier, budget: Budget, prompt: str, seed: int):
        self.renderer, self.verifier, self.prompt, self.seed = renderer, verifier, prompt, int(seed)
        self.one_sample = renderer.one_sample_nfe()
        self.meter = budget.meter(self.one_sample)
        self.trace = SearchTrace(prompt=prompt, seed=self.seed, budget_nfe=self.meter.total)
        self.choose_nfe = verifier.nfe([prompt], "chooser")  # per image
        self.report_nfe = verifier.nfe([prompt], "report")
        self.clock = Stopwatch()
        self.best_score = -math.inf
        self.best_image = None
        self.best_noise: torch.Tensor | None = None

    # ------------------------------------------------------------------ planning
    def plan(self, render_nfe: float, n: int | None = None, what: str = "best-of-n") -> int:
        """How many candidates of ``render_nfe`` each the budget pays for, scored for choosing (at least 2), or 1
        (rendered, not chosen).  With ``n`` given: check that ``n`` fit (``BudgetExceeded`` if not)."""
        per = render_nfe + self.choose_nfe
        total = self.meter.total
        fit = int(math.floor((total + 1e-9) / per)) if per > 0 else 10**9
        most = fit if fit >= 2 else 1
        if n is None:
            return most
        need = render_nfe if n == 1 else n * per
        if n > most:
            raise BudgetExceeded(f"{what} with n={n} needs {need:g} NFE-eq per image ({render_nfe:g} per candidate "
                                 f"+ {self.choose_nfe:g} to score it) but the budget is {total:g}; at most n={most} fit")  # fmt: skip
        return n

    def ensure(self, render_nfe: float, rows: int, choose: bool, what: str) -> None:
        self.meter.ensure(render_nfe + (self.choose_nfe * rows if choose else 0.0), what)

    # ------------------------------------------------------------------ candidates
    def evaluate(self, images: torch.Tensor, spent: float, choose: bool, conditions: Sequence[Condition | dict | None],
                 noises: Sequence[dict], noise_tensors: torch.Tensor | None = None,
                 extras: Sequence[dict] | None = None, keep: str = "best") -> list[float]:  # fmt: skip
        """Charge ``spent`` rendering NFE-eq, score ``images`` [n, 3, H, W] with every reward, record one candidate
        each and keep the best (``keep="last"``: the last one, whatever its score); returns their scores."""
        n = images.shape[0]
        self.meter.charge(spent, "rendering")
        pil = to_pil(images)
        scores = self.verifier.score(pil, [self.prompt] * n)
        if choose:
            self.meter.charge(self.choose_nfe * n, "scoring")
        else:
            self.meter.charge_report(self.choose_nfe * n)
        self.meter.charge_report(self.report_nfe * n)
        for i in range(n):
            cond = conditions[i]
            cond = cond.to_dict() if isinstance(cond, Condition) else cond
            cand = Candidate(index=len(self.trace.candidates), rewards=scores.rewards(i), score=float(scores.score[i]),
                             condition=cond, noise=dict(noises[i]), nfe=self.meter.spent,
                             extra=dict(extras[i]) if extras else {})  # fmt: skip
            self.trace.candidates.append(cand)
            if self.best_image is None or cand.score > self.best_score or (keep == "last" and i == n - 1):
                self.take(cand, pil[i], None if noise_tensors is None else noise_tensors[i : i + 1])
        return [float(v) for v in scores.score]

    def take(self, cand: Candidate, image, noise: torch.Tensor | None) -> None:
        self.best_score, self.best_image = cand.score, image
        self.trace.chosen = cand.index
        self.trace.chosen_condition, self.trace.chosen_noise = cand.condition, cand.noise
        if noise is not None:
            self.best_noise = noise.detach().cpu().clone()

    def finish(self, **extra) -> tuple[object, SearchTrace]:
        t = self.trace
        t.nfe, t.report_nfe, t.wall_time = self.meter.spent, self.meter.report, self.clock()
        t.extra.update(extra)
        t.extra.setdefault("scored_for_choice", len(t.candidates) > 1)
        if self.best_noise is not None:
            t.noise_norm = float(self.best_noise.float().norm())
            t.noise_dim = int(self.best_noise.numel())
        return self.best_image, t


def new_trace(method: str, renderer: Renderer, verifier: Verifier, budget: Budget, options: dict) -> Trace:
    return Trace(method=method, options=dict(options), verifier=verifier.describe(), settings=renderer.settings.to_dict(),
                 one_sample_nfe=float(renderer.one_sample_nfe()), budget=asdict(budget))  # fmt: skip
