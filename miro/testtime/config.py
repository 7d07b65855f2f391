"""The typed schema of ``python -m miro.testtime`` (miro/conf/testtime.yaml): every value is checked here, before a
pipeline is loaded, and a bad one stops the command with ``error: <key>=<value>: <what is allowed>``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from miro.contracts.rewards import REWARD_NAMES, allowed_rewards, our_keys, our_names
from miro.sampling.settings import SamplingSettings
from miro.testtime.intrinsic import RUBRIC_AGGREGATES
from miro.testtime.per_prompt import TTTSettings
from miro.utils.config import require, require_choice
from miro.utils.device import DTYPES
from miro.utils.precision import PRECISIONS

METHOD_NAMES = ("best_of_n", "noise_search", "condition_search", "reno", "ttt_per_prompt")
JUDGES = ("intrinsic", "rubric", "geneval")  # verifier rewards that are not annotate scorers
VERIFIER_REWARDS = (*REWARD_NAMES, *JUDGES)
REFERENCES = ("baseline", "none")
ADVANTAGE_STDS = ("group", "global")  # ttrl_adapt: what divides a group's centred scores (miro.testtime.ttrl)


def _int(value, low: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _num(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _range(key: str, value, low: float = 0.0, high: float = 1.0, strict_low: bool = False) -> None:
    ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(_num(v) for v in value)
    ok = ok and (low < value[0] if strict_low else low <= value[0]) and value[0] <= value[1] <= high
    require(ok, key, value, f"must be [lo, hi] with {low} {'<' if strict_low else '<='} lo <= hi <= {high}")


@dataclass
class BudgetConfig:
    samples: float | None = 4.0  # multiples of one sample's NFE-eq (the settings' condition), per image
    nfe: float | None = None  # or NFE-eq per image (then set samples to null)

    def __post_init__(self):
        require((self.samples is None) != (self.nfe is None), "budget", {"samples": self.samples, "nfe": self.nfe},
                "set exactly one of budget.samples and budget.nfe (the other null)")  # fmt: skip
        if self.samples is not None:
            require(_num(self.samples) and self.samples >= 1, "budget.samples", self.samples,
                    "must be >= 1: every method renders at least one sample")  # fmt: skip
        if self.nfe is not None:
            require(_num(self.nfe) and self.nfe > 0, "budget.nfe", self.nfe, "must be a number > 0")

    def budget(self):
        from miro.testtime.budget import Budget

        return Budget(samples=self.samples, nfe=self.nfe)


@dataclass
class IntrinsicConfig:
    rewards: list[str] | None = None  # the model's rewards to judge (null = all)
    draws: int = 4
    t_range: list[float] = field(default_factory=lambda: [0.1, 0.9])
    # {reward: [lo, hi]}: a reward's own noise band (the others keep t_range); typed Any, as verifier.weights
    t_ranges: Any = None
    others: float | None = None  # the other rewards' targets: null = their null embedding
    text: bool = True
    seed: int = 0

    def __post_init__(self):
        require(_int(self.draws), "verifier.intrinsic.draws", self.draws, "must be a positive integer")
        _range("verifier.intrinsic.t_range", self.t_range, strict_low=True)
        if self.t_ranges is not None:
            require(isinstance(self.t_ranges, Mapping), "verifier.intrinsic.t_ranges", self.t_ranges,
                    "must be a mapping {reward: [lo, hi]} or null")  # fmt: skip
            for k, v in self.t_ranges.items():
                _range(f"verifier.intrinsic.t_ranges.{k}", v, strict_low=True)
        require(self.others is None or (_num(self.others) and 0 <= self.others <= 1), "verifier.intrinsic.others",
                self.others, "must be null or a target in [0, 1]")  # fmt: skip


@dataclass
class RubricConfig:
    draws: int = 4
    t_range: list[float] = field(default_factory=lambda: [0.1, 0.9])
    max_counterfactuals: int = 3
    reward_targets: float | None = None
    seed: int = 0
    aggregate: str = "min"  # "min": the worst probe, or "mean" over kinds of the probes' margins (RubricVerifier)

    def __post_init__(self):
        require_choice("verifier.rubric.aggregate", self.aggregate, RUBRIC_AGGREGATES)
        require(_int(self.draws), "verifier.rubric.draws", self.draws, "must be a positive integer")
        _range("verifier.rubric.t_range", self.t_range, strict_low=True)
        require(_int(self.max_counterfactuals), "verifier.rubric.max_counterfactuals", self.max_counterfactuals,
                "must be a positive integer")  # fmt: skip


@dataclass
class VerifierConfig:
    # annotate reward names (miro.contracts.rewards), "intrinsic" (intrinsic_<reward> per model reward), "rubric",
    # "geneval" (the shapes world's GenEval judge)
    rewards: list[str] = field(default_factory=lambda: ["sharpness", "low_noise", "colorfulness", "contrast"])
    # {reward: weight}; null or {} = 1 unless held out (typed Any, as SamplingSettings' dicts: a typed dict node
    # would refuse the keys of a verifier.weights={...} override)
    weights: Any = None
    held_out: list[str] = field(default_factory=list)  # scored and reported, never used to choose
    stats: str | None = None  # reward_stats.json (file or folder): z-normalisation of the rewards it has
    reference: str = "baseline"  # baseline: rewards without stats are z-normalised on the one-sample images
    batch_size: int = 16
    configs: Any = None  # {annotate reward: {key: value}} (miro/conf/rewards/<name>.yaml keys)
    device: str = "auto"  # reward models' device
    geneval_soft: bool = False
    intrinsic: IntrinsicConfig = field(default_factory=IntrinsicConfig)
    rubric: RubricConfig = field(default_factory=RubricConfig)

    def __post_init__(self):
        # the MIRO authors' keys (pick_a_score_score, ...) name our rewards in every list and dict here
        self.rewards = our_names(self.rewards)
        require(self.weights is None or isinstance(self.weights, dict), "verifier.weights", self.weights,
                "must be a mapping {reward: weight}")  # fmt: skip
        self.weights = our_keys(self.weights or {}, key="verifier.weights")
        self.held_out = our_names(self.held_out)
        if isinstance(self.configs, dict):
            self.configs = our_keys(self.configs, key="verifier.configs")
        require(bool(self.rewards), "verifier.rewards", self.rewards, "must name at least one reward")
        for name in self.rewards:
            require(name in VERIFIER_REWARDS, "verifier.rewards", self.rewards,
                    f"{name!r} is not a reward; allowed: {allowed_rewards(VERIFIER_REWARDS)}")  # fmt: skip
        require(
            len(set(self.rewards)) == len(self.rewards),
            "verifier.rewards",
            self.rewards,
            "lists a reward twice",
        )
        for key, names in (
            ("verifier.weights", list(self.weights)),
            ("verifier.held_out", list(self.held_out)),
        ):
            for name in (
                names
            ):  # the intrinsic judge's outputs (intrinsic_<reward>) are checked against the model later
                ok = name in self.rewards or (name.startswith("intrinsic_") and "intrinsic" in self.rewards)
                require(
                    ok,
                    key,
                    names,
                    f"{name!r} is not among verifier.rewards {self.rewards} (or intrinsic_<reward>)",
                )
        both = sorted(set(self.held_out) & set(self.weights))
        require(not both, "verifier.held_out", self.held_out,
                f"{both} also in verifier.weights: a held-out reward is never used to choose")  # fmt: skip
        for k, v in self.weights.items():
            require(_num(v), f"verifier.weights.{k}", v, "must be a finite number")
        require_choice("verifier.reference", self.reference, REFERENCES)
        require(_int(self.batch_size), "verifier.batch_size", self.batch_size, "must be a positive integer")
        require(self.configs is None or isinstance(self.configs, dict), "verifier.configs", self.configs,
                "must be a mapping {reward: {key: value}}")  # fmt: skip


@dataclass
class BestOfNConfig:
    n: int | None = None  # null = as many as the budget pays for

    def __post_init__(self):
        require(self.n is None or _int(self.n), "best_of_n.n", self.n, "must be a positive integer or null")


@dataclass
class NoiseSearchConfig:
    algo: str = "zero_order"  # random | zero_order
    step: float = 0.3  # neighbour = sqrt(1 - step^2) pivot + step eps
    neighbors: int = 4

    def __post_init__(self):
        require_choice("noise_search.algo", self.algo, ("random", "zero_order"))
        require(_num(self.step) and 0 < self.step <= 1, "noise_search.step", self.step, "must be in (0, 1]")
        require(_int(self.neighbors), "noise_search.neighbors", self.neighbors, "must be a positive integer")


@dataclass
class ConditionSearchConfig:
    rewards: list[str] | None = None  # the targets searched (null = the model rewards the verifier chooses with, else all)
    search_s_plus: bool = True
    search_s_minus: bool = True
    search_w: bool = True
    s_plus_range: list[float] = field(default_factory=lambda: [0.0, 1.0])
    s_minus_range: list[float] = field(default_factory=lambda: [0.0, 1.0])
    w_max: float = 10.0
    random_fraction: float = 0.5
    step: float = 0.2
    shrink: float = 0.5
    share_noise: bool = True

    def __post_init__(self):
        _range("condition_search.s_plus_range", self.s_plus_range)
        _range("condition_search.s_minus_range", self.s_minus_range)
        require(
            _num(self.w_max) and self.w_max >= 0,
            "condition_search.w_max",
            self.w_max,
            "must be a number >= 0",
        )
        require(_num(self.random_fraction) and 0 <= self.random_fraction <= 1, "condition_search.random_fraction",
                self.random_fraction, "must be in [0, 1]")  # fmt: skip
        require(
            _num(self.step) and 0 < self.step <= 1, "condition_search.step", self.step, "must be in (0, 1]"
        )
        require(
            _num(self.shrink) and 0 < self.shrink <= 1,
            "condition_search.shrink",
            self.shrink,
            "must be in (0, 1]",
        )
        require(self.search_s_plus or self.search_s_minus or self.search_w, "condition_search.search_w", self.search_w,
                "nothing is searched: enable at least one of search_s_plus, search_s_minus, search_w")  # fmt: skip


@dataclass
class RenoConfig:
    steps: int = 4  # the few-step sampler the gradient goes through
    lr: float = 5.0
    momentum: float = 0.9
    grad_clip: float = 0.1
    reg_weight: float = 0.01  # the chi norm prior
    optimize_s_plus: bool = False
    s_plus_lr: float = 0.05
    max_iters: int | None = None  # null = what the budget pays for
    final_render: bool = True  # re-render the best noise with settings.steps

    def __post_init__(self):
        require(_int(self.steps), "reno.steps", self.steps, "must be a positive integer")
        for key in ("lr", "grad_clip", "s_plus_lr"):
            value = getattr(self, key)
            require(_num(value) and value > 0, f"reno.{key}", value, "must be a number > 0")
        require(
            _num(self.momentum) and 0 <= self.momentum < 1,
            "reno.momentum",
            self.momentum,
            "must be in [0, 1)",
        )
        require(
            _num(self.reg_weight) and self.reg_weight >= 0, "reno.reg_weight", self.reg_weight, "must be >= 0"
        )
        require(self.max_iters is None or _int(self.max_iters, 0), "reno.max_iters", self.max_iters,
                "must be an integer >= 0 or null")  # fmt: skip


@dataclass
class TestTimeConfig:
    pipeline: str = ""  # a folder written by MiroPipeline.save_pretrained
    prompts: list[str] = field(default_factory=list)
    metadata: str | None = None  # a GenEval evaluation_metadata.jsonl: its prompts are added
    limit: int | None = None  # only the first N prompts
    seeds: list[int] = field(default_factory=lambda: [0])  # one search per prompt and seed
    method: str = "best_of_n"
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    settings: SamplingSettings = field(default_factory=SamplingSettings)
    verifier: VerifierConfig = field(default_factory=VerifierConfig)
    best_of_n: BestOfNConfig = field(default_factory=BestOfNConfig)
    noise_search: NoiseSearchConfig = field(default_factory=NoiseSearchConfig)
    condition_search: ConditionSearchConfig = field(default_factory=ConditionSearchConfig)
    reno: RenoConfig = field(default_factory=RenoConfig)
    ttt: TTTSettings = field(default_factory=TTTSettings)  # method=ttt_per_prompt (miro.testtime.per_prompt)
    batch_size: int = 8  # candidates rendered and scored at a time
    device: str = "auto"
    dtype: str = "float32"
    mixed_precision: str = "auto"
    out_dir: str = "testtime"

    __test__ = False  # not a pytest class

    def __post_init__(self):
        require(bool(self.pipeline), "pipeline", self.pipeline, "is required: a saved MiroPipeline folder")
        require_choice("method", self.method, METHOD_NAMES)
        require(bool(self.prompts) or bool(self.metadata), "prompts", self.prompts,
                "give prompts (a list) or metadata (an evaluation_metadata.jsonl)")  # fmt: skip
        require(
            self.limit is None or _int(self.limit), "limit", self.limit, "must be a positive integer or null"
        )
        require(bool(self.seeds), "seeds", self.seeds, "must hold at least one seed")
        require(_int(self.batch_size), "batch_size", self.batch_size, "must be a positive integer")
        require_choice("dtype", self.dtype, tuple(DTYPES))
        require_choice("mixed_precision", self.mixed_precision, tuple(PRECISIONS))
        if self.method == "reno":
            require(any(r in ("sharpness", "low_noise", "colorfulness", "contrast", "intrinsic", "rubric")
                        for r in self.verifier.rewards if r not in self.verifier.held_out),
                    "verifier.rewards", self.verifier.rewards,
                    "method=reno needs a differentiable chooser: sharpness, low_noise, colorfulness, contrast, "
                    "intrinsic or rubric")  # fmt: skip

    def method_options(self) -> dict:
        """The keyword options of the chosen method (``miro.testtime.methods``)."""
        from dataclasses import asdict

        if self.method == "best_of_n":
            return {"n": self.best_of_n.n, "batch_size": self.batch_size}
        if self.method == "ttt_per_prompt":
            return {"config": self.ttt}
        opts = asdict(getattr(self, self.method))
        if self.method != "reno":
            opts["batch_size"] = self.batch_size
        return opts
