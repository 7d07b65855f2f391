"""Typed configuration of ``python -m miro.eval`` (yaml: ``miro/conf/eval.yaml``, ``miro/conf/detector/*.yaml``).

One schema for every command; each command checks the keys it needs (``require_for``), so a value that
only one command uses is never demanded by another.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from miro.contracts.geneval_rules import DEFAULT_OPTIONS, RuleOptions
from miro.contracts.rewards import REWARD_NAMES, allowed_rewards, our_keys, our_names
from miro.sampling.settings import SamplingSettings
from miro.utils.config import ConfigError, require, require_choice
from miro.utils.device import DTYPES

COMMANDS = ("prompts", "generate", "evaluate", "summary", "geneval", "rewards", "compare", "fid", "sliders")
DETECTORS = ("mask2former", "shapes")
SOURCES = ("pipeline", "shapes_oracle")
WEIGHT_FREE_DEFAULT = ("sharpness", "low_noise", "colorfulness", "contrast")  # as annotate: they run offline


@dataclass
class PromptsConfig:
    metadata: str | None = None  # evaluation_metadata.jsonl; null = drawn from GenEval's templates
    seed: int = 43  # GenEval's create_prompts.py default: with per_task=100 it is the official file
    per_task: int = 100
    out: str | None = None  # `prompts` command: where to write the drawn set

    def __post_init__(self):
        require(self.per_task >= 1, "prompts.per_task", self.per_task, "must be >= 1")


@dataclass
class GenerateConfig:
    source: str = "pipeline"  # pipeline | shapes_oracle (clean scenes that satisfy each prompt: the ceiling)
    pipeline: str = ""  # a MiroPipeline folder (save_pretrained) or a repo id in the HF cache
    oracle_resolution: int = 64  # shapes_oracle image size
    n_samples: int = 4
    batch_size: int = 4
    seed: int = 42  # every prompt restarts from this seed (GenEval's convention)
    settings: SamplingSettings = field(default_factory=SamplingSettings)  # the pipeline call (targets, guidance, steps, ...)
    grid: bool = True
    device: str = "auto"
    dtype: str = "float32"
    shard_index: int = 0
    num_shards: int = 1

    def __post_init__(self):
        require_choice("generate.source", self.source, SOURCES)
        require(self.n_samples >= 1, "generate.n_samples", self.n_samples, "must be >= 1")
        require(self.batch_size >= 1, "generate.batch_size", self.batch_size, "must be >= 1")
        require_choice("generate.dtype", self.dtype, tuple(DTYPES))
        require(self.num_shards >= 1, "generate.num_shards", self.num_shards, "must be >= 1")
        require(0 <= self.shard_index < self.num_shards, "generate.shard_index", self.shard_index,
                f"must be in 0..num_shards-1 (num_shards={self.num_shards})")  # fmt: skip


@dataclass
class DetectorConfig:
    name: str = "mask2former"
    checkpoint: str = "facebook/mask2former-swin-small-coco-instance"  # folder, or repo id in the HF cache
    test_scale: list[int] = field(default_factory=lambda: [1333, 800])  # mmdet's keep-ratio resize limits
    batch_size: int = 1
    device: str = "auto"
    dtype: str = "float32"

    def __post_init__(self):
        require_choice("detector.name", self.name, DETECTORS)
        require(len(self.test_scale) == 2 and min(self.test_scale) >= 32, "detector.test_scale", self.test_scale,
                "must be [long edge, short edge], each >= 32")  # fmt: skip
        require(self.batch_size >= 1, "detector.batch_size", self.batch_size, "must be >= 1")
        require_choice("detector.dtype", self.dtype, tuple(DTYPES))


@dataclass
class ColorsConfig:
    model: str = "ViT-L-14-quickgelu"
    pretrained: str = "openai"  # an open_clip tag (read from the HF cache) or a weight file
    force_quick_gelu: bool = True  # OpenAI weights need QuickGELU; open_clip 3.x no longer forces it
    batch_size: int = 16
    background: str = "#999999"
    crop: bool = True
    amp: bool = True  # autocast on CUDA, as GenEval's clip_benchmark call
    device: str = "auto"

    def __post_init__(self):
        require(self.batch_size >= 1, "colors.batch_size", self.batch_size, "must be >= 1")


@dataclass
class RulesConfig:
    """GenEval's ``--options`` (defaults and checks: ``rules.RuleOptions``)."""

    threshold: float = DEFAULT_OPTIONS.threshold
    counting_threshold: float = DEFAULT_OPTIONS.counting_threshold
    max_objects: int = DEFAULT_OPTIONS.max_objects
    max_overlap: float = DEFAULT_OPTIONS.max_overlap  # 1.0: no per-class overlap filter
    position_threshold: float = DEFAULT_OPTIONS.position_threshold

    def __post_init__(self):
        try:
            self.options()
        except ValueError as err:  # RuleOptions names the key; say where it lives in this config
            raise ConfigError(f"evaluate.rules.{err}") from None

    def options(self) -> RuleOptions:
        return RuleOptions(**{f.name: getattr(self, f.name) for f in fields(RuleOptions)})


@dataclass
class EvaluateConfig:
    results: str | None = None  # default: <image_dir>/results.jsonl
    batch_size: int = 8  # images per detector call
    rules: RulesConfig = field(default_factory=RulesConfig)

    def __post_init__(self):
        require(self.batch_size >= 1, "evaluate.batch_size", self.batch_size, "must be >= 1")


@dataclass
class RewardMetricsConfig:
    batch_size: int = 16
    device: str = "auto"
    out: str | None = None  # default: <image_dir>/rewards.jsonl

    def __post_init__(self):
        require(self.batch_size >= 1, "reward_metrics.batch_size", self.batch_size, "must be >= 1")


@dataclass
class CompareConfig:
    runs: list[str] = field(default_factory=list)  # two scored folders (or rewards.jsonl files)
    labels: list[str] = field(default_factory=list)  # optional names for the table and plots
    out_dir: str = "comparison"

    def __post_init__(self):
        require(not self.labels or len(self.labels) == 2, "compare.labels", self.labels, "give two labels or none")


@dataclass
class SlidersConfig:
    """`sliders`: measure the reward-slider sweeps written by ``python -m miro.sampling mode=sweep``."""

    scorers: list[str] | None = None  # annotate scorer names; null = each sweep's swept reward's own scorer
    batch_size: int = 16
    device: str = "auto"

    def __post_init__(self):
        require(self.batch_size >= 1, "sliders.batch_size", self.batch_size, "must be >= 1")
        require(self.scorers is None or len(self.scorers) >= 1, "sliders.scorers", self.scorers,
                "name at least one scorer, or null (the swept reward's own)")  # fmt: skip
        if self.scorers is not None:  # the MIRO authors' keys name our rewards
            self.scorers = our_names(self.scorers)
            for name in self.scorers:
                require(name in REWARD_NAMES, "sliders.scorers", name, f"must be {allowed_rewards()}")


@dataclass
class FIDConfig:
    reference: str | None = None  # folder of reference images, or a saved .npz of statistics
    save_reference_stats: str | None = None  # write the reference statistics here (.npz)
    batch_size: int = 32
    device: str = "auto"

    def __post_init__(self):
        require(self.batch_size >= 1, "fid.batch_size", self.batch_size, "must be >= 1")


@dataclass
class EvalConfig:
    command: str = ""
    image_dir: str = ""  # the GenEval layout folder the commands write or read
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    colors: ColorsConfig = field(default_factory=ColorsConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    # annotate's reward group: {name: settings} (``rewards=[pickscore,hpsv2]``, ``rewards.hpsv2.version=v2.0``),
    # a list of names (default settings), or null: the weight-free set
    rewards: Any = None
    reward_metrics: RewardMetricsConfig = field(default_factory=RewardMetricsConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    fid: FIDConfig = field(default_factory=FIDConfig)
    sliders: SlidersConfig = field(default_factory=SlidersConfig)

    def __post_init__(self):
        require_choice("command", self.command, COMMANDS)
        if self.rewards is None:
            self.rewards = {r: {} for r in WEIGHT_FREE_DEFAULT}
        elif isinstance(self.rewards, list | tuple):
            self.rewards = {r: {} for r in self.rewards}
        require(isinstance(self.rewards, dict), "rewards", self.rewards, "must map reward names to settings (or list names)")
        self.rewards = our_keys(self.rewards)  # the MIRO authors' keys (pick_a_score_score, ...) name our rewards
        for name, settings in self.rewards.items():
            require(name in REWARD_NAMES, "rewards", name, f"must be {allowed_rewards()}")
            require(isinstance(settings, dict), f"rewards.{name}", settings, "must be a mapping of that reward's settings")

    def require_for(self, command: str) -> None:
        """The keys ``command`` cannot run without."""
        if command in ("generate", "evaluate", "summary", "geneval", "rewards", "fid", "sliders"):
            require(bool(self.image_dir), "image_dir", self.image_dir, f"is required by `{command}`: the image folder")
        if command in ("generate", "geneval") and self.generate.source == "pipeline":
            require(bool(self.generate.pipeline), "generate.pipeline", self.generate.pipeline,
                    f"is required by `{command}`: a saved MiroPipeline folder")  # fmt: skip
        if command == "rewards":
            require(bool(self.rewards), "rewards", self.rewards, "select at least one reward, e.g. rewards=[sharpness]")
        if command == "compare":
            require(len(self.compare.runs) == 2, "compare.runs", self.compare.runs, "must name two scored folders")
        if command == "fid":
            require(bool(self.fid.reference), "fid.reference", self.fid.reference,
                    "is required: a folder of reference images or a .npz of statistics")  # fmt: skip
        if command == "prompts":
            require(bool(self.prompts.out), "prompts.out", self.prompts.out, "is required: where to write the set")


__all__ = ["COMMANDS", "ConfigError", "EvalConfig"]
