"""Compute accounting of test-time methods, in network-evaluation equivalents (NFE-eq), and the trace they return.

Why one unit: a test-time method trades compute for quality, so every method must be charged in the same
currency and compared at equal spend (testtime.md section 1).  The unit is one forward pass of the velocity
network for one image:

- one forward of one row = ``FORWARD`` = 1;
- a backward pass through those rows = ``BACKWARD`` = 2 per row (the usual estimate: about twice a forward);
- a guided sampling step costs its ``Guidance.nfe`` (2 for the joint classifier-free guidance, more for
  decoupled / per-reward guidance, 1 outside the guidance interval), so one sample of K steps costs
  ``total_nfe(guidance, sigmas, sampler)``, e.g. 2K with joint guidance;
- a verifier that runs the network (the model as its own judge, ``miro.testtime.intrinsic``) is charged its
  forwards; weight-free and external reward models cost 0 NFE-eq here (their wall time is in the trace).

``Budget`` is what a user asks for (a multiple of one sample, or an absolute NFE-eq per image); ``Meter`` is
the running account of one search (one prompt and seed): methods ask it before they spend
(``ensure``), then charge what the network really evaluated (``charge``), so a budget is never exceeded and
the trace's number is the real one.  ``Trace`` is the JSON record of a run: per search the NFE-eq spent, the
wall time, every reward of every candidate and which candidate (condition, noise) was kept.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from miro.utils.config import ConfigError, require

FORWARD = 1.0  # one forward of the velocity network, per row (image)
BACKWARD = 2.0  # one backward through a forward, per row

_EPS = 1e-9


class BudgetError(ConfigError):
    """A budget cannot pay for what is asked (below one sample), or a method would exceed it."""


class BudgetExceeded(BudgetError):
    """Spending this would exceed the budget (a method's bug or a too-small budget)."""


def _finite_positive(value: Any) -> bool:
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


@dataclass(frozen=True)
class Budget:
    """The compute a method may spend per output image: ``samples`` times one sample's NFE-eq, or ``nfe``
    NFE-eq; exactly one of the two.  ``Budget(samples=8)`` is "8x the compute of one sample"."""

    samples: float | None = None
    nfe: float | None = None

    def __post_init__(self):
        require((self.samples is None) != (self.nfe is None), "budget", self.describe(),
                "give exactly one of samples (a multiple of one sample) or nfe (NFE-eq per image)")  # fmt: skip
        if self.samples is not None:
            require(_finite_positive(self.samples), "budget.samples", self.samples, "must be a number > 0")
        if self.nfe is not None:
            require(_finite_positive(self.nfe), "budget.nfe", self.nfe, "must be a number > 0")

    def describe(self) -> str:
        return f"samples={self.samples}" if self.nfe is None else f"nfe={self.nfe}"

    def total(self, one_sample_nfe: float) -> float:
        """The NFE-eq per image, given the NFE-eq of one sample with the run's settings."""
        return float(self.nfe) if self.nfe is not None else float(self.samples) * float(one_sample_nfe)

    def meter(self, one_sample_nfe: float, what: str = "one sample") -> Meter:
        """A fresh account for one search; ``BudgetError`` when the budget cannot pay for one sample."""
        total = self.total(one_sample_nfe)
        if total + _EPS < one_sample_nfe:
            raise BudgetError(
                f"budget {self.describe()} = {total:g} NFE-eq per image is below {what} ({one_sample_nfe:g} NFE-eq "
                "with these sampling settings); every method renders at least one sample: raise the budget to "
                f"samples >= 1 or nfe >= {one_sample_nfe:g}"
            )
        return Meter(total=total, one_sample=float(one_sample_nfe))


@dataclass
class Meter:
    """The running account of one search: ``total`` NFE-eq, ``spent`` so far, and ``report`` (NFE-eq spent only
    to report rewards, e.g. held-out rewards that run the network; not charged against the budget)."""

    total: float
    one_sample: float
    spent: float = 0.0
    report: float = 0.0

    @property
    def left(self) -> float:
        return self.total - self.spent

    def can_afford(self, nfe: float) -> bool:
        return self.spent + nfe <= self.total + _EPS

    def ensure(self, nfe: float, what: str) -> None:
        """``BudgetExceeded`` unless ``nfe`` more NFE-eq fit (asked before spending)."""
        if not self.can_afford(nfe):
            raise BudgetExceeded(
                f"{what} needs {nfe:g} NFE-eq but only {self.left:g} of the budget's {self.total:g} are left "
                f"(spent {self.spent:g})"
            )

    def charge(self, nfe: float, what: str = "evaluation") -> None:
        """Book ``nfe`` NFE-eq actually spent; ``BudgetExceeded`` if that overdraws the budget."""
        self.ensure(nfe, what)
        self.spent += float(nfe)

    def charge_report(self, nfe: float) -> None:
        self.report += float(nfe)


@dataclass
class Candidate:
    """One candidate a search rendered and scored: its raw rewards (every reward of the verifier, held-out
    ones included), its verifier score (NaN when it was not scored for choosing), the condition and noise it
    was rendered with, and the NFE-eq spent when it was done."""

    index: int
    rewards: dict[str, float]
    score: float
    condition: dict | None = None
    noise: dict | None = None
    nfe: float = 0.0
    extra: dict = field(default_factory=dict)


@dataclass
class SearchTrace:
    """One search (one prompt, one seed)."""

    prompt: str
    seed: int
    budget_nfe: float
    nfe: float = 0.0  # charged against the budget
    report_nfe: float = 0.0  # spent only to report rewards (not charged)
    wall_time: float = 0.0
    candidates: list[Candidate] = field(default_factory=list)
    chosen: int = 0  # index into candidates
    chosen_condition: dict | None = None
    chosen_noise: dict | None = None
    noise_norm: float | None = None  # ||z|| of the kept initial noise (sqrt(D) is the Gaussian shell)
    noise_dim: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def chosen_rewards(self) -> dict[str, float]:
        return self.candidates[self.chosen].rewards if self.candidates else {}


@dataclass
class Trace:
    """What a method did: the method and its options, the verifier, one sample's NFE-eq and the budget, and one
    ``SearchTrace`` per (prompt, seed).  ``to_dict`` is plain JSON (NaN written as null)."""

    method: str
    options: dict = field(default_factory=dict)
    verifier: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    one_sample_nfe: float = 0.0
    budget: dict = field(default_factory=dict)
    searches: list[SearchTrace] = field(default_factory=list)

    @property
    def nfe(self) -> float:
        """NFE-eq charged against the budgets, summed over the searches."""
        return float(sum(s.nfe for s in self.searches))

    @property
    def report_nfe(self) -> float:
        return float(sum(s.report_nfe for s in self.searches))

    @property
    def wall_time(self) -> float:
        return float(sum(s.wall_time for s in self.searches))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["nfe"], out["report_nfe"], out["wall_time"] = self.nfe, self.report_nfe, self.wall_time
        return _jsonable(out)

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def save(self, path: str | Path) -> Path:
        from miro.utils.atomic import atomic_write_text

        return atomic_write_text(Path(path), self.to_json() + "\n")

    @classmethod
    def from_dict(cls, data: Mapping) -> Trace:
        data = dict(data)
        for key in ("nfe", "report_nfe", "wall_time"):
            data.pop(key, None)
        searches = []
        for s in data.pop("searches", []):
            s = dict(s)
            s["candidates"] = [Candidate(**{k: _nan(v) if k == "score" else v for k, v in c.items()})
                               for c in s.get("candidates", [])]  # fmt: skip
            searches.append(SearchTrace(**s))
        return cls(**data, searches=searches)


def _nan(v):
    return math.nan if v is None else v


def _jsonable(obj):
    """NaN / inf -> None, tuples -> lists, numpy scalars -> Python numbers (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:  # numpy / torch scalar
        return _jsonable(obj.item())
    return obj


class Stopwatch:
    """Wall time of a search (``time.perf_counter``)."""

    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start
