"""Typed configuration of the slider app (``python -m miro.app``, yaml: ``miro/conf/app.yaml``).

The sampling controls start at ``settings`` (the one sampling settings schema, ``miro.sampling.settings``); the
guidance mode chooses which of its scales the page shows: ``joint`` (one scale w for text and rewards, the
authors' pipeline) or ``decoupled`` (a text scale and a reward scale; ``miro.sampling.guidance``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from miro.contracts.rewards import allowed_rewards, our_keys, unknown_rewards
from miro.sampling.settings import SamplingSettings
from miro.utils.config import require, require_choice
from miro.utils.device import DTYPES

# the page's guidance modes -> the SamplingSettings fields they set (the formulas: miro/sampling/guidance.py)
GUIDANCE_MODES = {
    "joint": ("guidance_scale",),  # (1 + w) v(c, s+) - w v(null, s-): text and rewards together, 2 NFE
    "decoupled": ("text_guidance_scale", "reward_guidance_scale"),  # a text and a reward direction, 3 NFE
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class AppSweepConfig:
    """The sweep tab's starting values: ``num_targets`` targets evenly spaced on [low, high], ``num_seeds`` seeds."""

    reward: str | None = None  # the reward selected first (null = the model's first)
    low: float = 0.0
    high: float = 1.0
    num_targets: int = 5
    num_seeds: int = 2

    def __post_init__(self):
        require(0.0 <= self.low < self.high <= 1.0, "sweep.low", self.low, f"must satisfy 0 <= low < high={self.high} <= 1")
        require(2 <= self.num_targets <= 11, "sweep.num_targets", self.num_targets, "must be in 2..11")
        require(1 <= self.num_seeds <= 8, "sweep.num_seeds", self.num_seeds, "must be in 1..8")


@dataclass
class AppConfig:
    pipeline: str | None = None  # a MiroPipeline folder; null = the shipped reference model (models/shapes_reference)
    host: str = "127.0.0.1"  # the interface the server listens on; 0.0.0.0 = every interface
    port: int = 7860
    open_browser: bool = False
    device: str = "auto"  # auto = cuda if available, else cpu
    dtype: str = "float32"  # the transformer's dtype
    threads: int | None = None  # torch threads (null = torch's default)
    # the rewards measured on every image: annotate's scorers by name, or {name: settings}; null = the weight-free ones
    scorers: Any = None
    settings: SamplingSettings = field(default_factory=SamplingSettings)  # the controls' starting values
    guidance_mode: str = "decoupled"
    seed: int = 0  # image k of a generation uses seed + k
    num_images: int = 4
    max_images: int = 16
    max_steps: int = 100
    display_size: int = 192  # images narrower than this are shown enlarged (nearest neighbour); downloads keep their size
    queue_size: int = 16  # requests waiting beyond this are refused
    sweep: AppSweepConfig = field(default_factory=AppSweepConfig)

    def __post_init__(self):
        require(self.pipeline is None or bool(str(self.pipeline).strip()), "pipeline", self.pipeline,
                "must be a MiroPipeline folder, or null (the shipped reference model)")  # fmt: skip
        require(bool(self.host.strip()), "host", self.host, "must be an interface address, e.g. 127.0.0.1 or 0.0.0.0")
        require(_is_int(self.port) and 1 <= self.port <= 65535, "port", self.port, "must be a TCP port in 1..65535")
        require_choice("dtype", self.dtype, tuple(DTYPES))
        require(self.threads is None or (_is_int(self.threads) and self.threads >= 1), "threads", self.threads,
                "must be >= 1, or null (torch's default)")  # fmt: skip
        require_choice("guidance_mode", self.guidance_mode, tuple(GUIDANCE_MODES))
        require(_is_int(self.seed) and self.seed >= 0, "seed", self.seed, "must be an integer >= 0")
        require(_is_int(self.max_images) and self.max_images >= 1, "max_images", self.max_images, "must be >= 1")
        require(_is_int(self.num_images) and 1 <= self.num_images <= self.max_images, "num_images", self.num_images,
                f"must be in 1..max_images={self.max_images}")  # fmt: skip
        require(_is_int(self.max_steps) and self.max_steps >= self.settings.steps, "max_steps", self.max_steps,
                f"must be >= settings.steps={self.settings.steps}")  # fmt: skip
        require(_is_int(self.display_size) and 16 <= self.display_size <= 2048, "display_size", self.display_size,
                "must be in 16..2048 pixels")  # fmt: skip
        require(_is_int(self.queue_size) and self.queue_size >= 1, "queue_size", self.queue_size, "must be >= 1")
        negatives = self.settings.negative_reward_targets
        require(all(v is not None for v in negatives.values()), "settings.negative_reward_targets", negatives,
                "the app frees a reward in both branches at once: set its settings.reward_targets entry to null "
                "instead")  # fmt: skip
        self.scorers = scorer_configs(self.scorers)
        require(bool(self.scorers), "scorers", self.scorers, "name at least one reward to measure, or null (the weight-free ones)")


def scorer_configs(scorers: Any) -> dict[str, dict]:
    """``scorers`` as {reward: its scorer's settings}: None = the weight-free rewards, a list = those names with
    their default settings (eval's ``rewards`` takes the same forms); the MIRO authors' keys become our names."""
    from miro.contracts.rewards import WEIGHT_FREE_REWARDS

    if scorers is None:
        return {name: {} for name in WEIGHT_FREE_REWARDS}
    if isinstance(scorers, (list, tuple)):
        scorers = {name: {} for name in scorers}
    require(isinstance(scorers, dict), "scorers", scorers, "must list reward names or map them to their settings")
    scorers = our_keys(scorers, key="scorers")  # the MIRO authors' keys (pick_a_score_score, ...) name our rewards
    unknown = unknown_rewards(scorers)
    require(not unknown, "scorers", list(scorers), f"has {unknown}, not rewards; allowed: {allowed_rewards()}")
    for name, settings in scorers.items():
        require(settings is None or isinstance(settings, dict), f"scorers.{name}", settings,
                "must be a mapping of that reward's settings (miro/conf/rewards/)")  # fmt: skip
    return {name: dict(settings or {}) for name, settings in scorers.items()}
