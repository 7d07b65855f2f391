"""Typed configuration of the end-to-end demo (``python -m miro.demo``, yaml: ``miro/conf/demo.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from miro.contracts.rewards import our_keys, our_names
from miro.utils.config import CONFIG_DIR, require

WEIGHT_FREE = ["sharpness", "low_noise", "colorfulness", "contrast", "alignment"]
CLEAN_TARGETS = {"sharpness": 0.778, "low_noise": 1.0, "colorfulness": 0.571, "contrast": 0.603, "alignment": 1.0}


@dataclass
class DemoConfig:
    out: str = "runs/demo"  # everything goes here: data/, train/, samples/, geneval/, report.md
    seed: int = 0
    # the shapes world
    num_samples: int = 12000
    resolution: int = 32
    shard_size: int = 1000
    # annotation (weight-free rewards: nothing to download)
    rewards: list[str] = field(default_factory=lambda: list(WEIGHT_FREE))
    num_bins: int = 64
    # training: a model preset of miro/conf/model/ (tiny_unet: the tiny transformer inside a two-level conv
    # U-shape whose conv blocks see the pooled prompt; it follows its prompts' colours at this compute where the
    # plain `tiny` does not, and its loss falls ~1.8x faster per FLOP than tiny_conv's; text_conditioning.md)
    model_preset: str = "tiny_unet"  # not `model`: that name is the hydra config group of the presets
    train_steps: int = 1000
    batch_size: int = 32
    lr: float = 2.0e-3
    warmup_steps: int = 100
    train_threads: int = 2  # torch threads of the cache and training stages (each runs alone; the cache loader is light)
    # sampling and evaluation
    sample_steps: int = 25
    # decoupled guidance (docs/sampling.md): text direction v(c, s-) - v(null, s-), reward direction
    # v(c, s+) - v(c, s-).  The joint scale 3 (both at 3) saturates the images of a briefly trained model into
    # dark blobs and drops held-out GenEval to ~0; text 3 with reward 1 toward the clean-image targets gave
    # the best held-out GenEval of the measured settings (docs/text_conditioning.md).
    text_guidance_scale: float = 3.0
    reward_guidance_scale: float = 1.0
    # GenEval's "high" targets: per reward the median of the clean, correctly captioned training images of the
    # default world (scripts/experiments/text_conditioning.py: clean_targets).  Every reward at 1 asks for
    # maximal colourfulness and contrast as well, a corner no training image occupies (dark blobs).
    high_targets: dict[str, float] = field(default_factory=lambda: dict(CLEAN_TARGETS))
    reference: str = "models/shapes_reference"  # the shipped reference pipeline shown beside the demo's ("" = none)
    sweep_seeds: int = 4
    geneval_samples: int = 1  # images per held-out prompt (GenEval uses 4; the demo keeps within 20 minutes)
    # machine
    workers: int = 2  # processes for generation and annotation
    threads: int = 1  # torch threads per process (1 is fastest for the tiny model on 2 cores)
    fresh: bool = False  # redo every step even if its output exists

    def __post_init__(self):
        self.rewards = our_names(self.rewards)  # the MIRO authors' keys name our rewards
        self.high_targets = our_keys(self.high_targets, key="high_targets")
        require(self.num_samples >= 100, "num_samples", self.num_samples, "must be >= 100")
        require(self.resolution in (32, 64, 128, 256), "resolution", self.resolution, "must be 32, 64, 128 or 256")
        require(self.shard_size >= 1, "shard_size", self.shard_size, "must be >= 1")
        require(len(self.rewards) > 0 and len(set(self.rewards)) == len(self.rewards), "rewards", self.rewards,
                "must be a non-empty list of distinct reward names")
        require(self.num_bins >= 2, "num_bins", self.num_bins, "must be >= 2")
        require(self.train_steps >= 1, "train_steps", self.train_steps, "must be >= 1")
        require(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        presets = sorted(f.stem for f in (CONFIG_DIR / "model").glob("*.yaml"))
        require(self.model_preset in presets, "model_preset", self.model_preset, f"must be a preset of miro/conf/model: {presets}")
        require(self.lr > 0, "lr", self.lr, "must be > 0")
        require(self.train_threads >= 1, "train_threads", self.train_threads, "must be >= 1")
        require(0 <= self.warmup_steps, "warmup_steps", self.warmup_steps, "must be >= 0")
        require(self.sample_steps >= 1, "sample_steps", self.sample_steps, "must be >= 1")
        require(all(0 <= v <= 1 for v in self.high_targets.values()), "high_targets", dict(self.high_targets),
                "values in [0, 1] (rewards left out, or not trained on, use 1.0 / are ignored)")
        require(self.text_guidance_scale >= 0, "text_guidance_scale", self.text_guidance_scale, "must be >= 0")
        require(self.reward_guidance_scale >= 0, "reward_guidance_scale", self.reward_guidance_scale, "must be >= 0")
        require(self.sweep_seeds >= 2, "sweep_seeds", self.sweep_seeds, "must be >= 2 (the plot shows a spread)")
        require(self.geneval_samples >= 1, "geneval_samples", self.geneval_samples, "must be >= 1")
        require(self.workers >= 1 and self.threads >= 1, "workers/threads", (self.workers, self.threads), "must be >= 1")

    def guidance(self) -> dict:
        """The decoupled guidance arguments of every pipeline call of the demo."""
        return {"text_guidance_scale": self.text_guidance_scale, "reward_guidance_scale": self.reward_guidance_scale}
