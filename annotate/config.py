"""Typed configuration of ``python -m annotate`` (yaml in ``miro/conf/annotate.yaml``, reward groups in ``miro/conf/rewards``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from miro.contracts.rewards import REWARD_NAMES, SCALES, allowed_rewards, our_keys, our_names
from miro.utils.config import require, require_choice
from miro.utils.device import DTYPES

STAGES = ("score", "stats", "rescale")
DEFAULT_REWARDS = ["sharpness", "low_noise", "colorfulness", "contrast"]


@dataclass
class DataConfig:
    shards: Any = MISSING  # a folder (searched recursively), a glob, a brace range a-{000000..000009}.tar, or a list
    root: str | None = None  # folder whose layout out_dir mirrors (default: data.shards if a folder, else the shards' common parent)
    max_pixels: int = 64_000_000  # larger images are reported as too_large (decompression-bomb guard)

    def __post_init__(self):
        require(self.max_pixels > 0, "data.max_pixels", self.max_pixels, "must be a positive integer")


@dataclass
class StatsConfig:
    num_bins: int = 64
    max_samples: int | None = 1_000_000  # quantiles over all samples if there are at most this many, else a uniform sample
    seed: int = 0
    rewards: list[str] | None = None  # null: every reward column present in all sidecars
    allow_missing: bool = False  # true: shards without a sidecar are left out (and listed in the stats file)
    buckets: bool = True  # write every shard's .buckets.parquet

    def __post_init__(self):
        require(2 <= self.num_bins <= 32767, "stats.num_bins", self.num_bins, "must be an integer in 2..32767")
        require(self.max_samples is None or self.max_samples >= 2, "stats.max_samples", self.max_samples, "must be null or >= 2")
        if self.rewards is not None:  # the MIRO authors' keys name our rewards
            self.rewards = our_names(self.rewards)
        for r in self.rewards or []:
            require(r in REWARD_NAMES, "stats.rewards", r, f"must be {allowed_rewards()}")


@dataclass
class AnnotateConfig:
    stage: str = "score"
    data: DataConfig = field(default_factory=DataConfig)
    out_dir: str | None = None  # null: sidecars beside the shards; else a folder mirroring the shard layout
    # {reward name: its settings} (hydra: the multi-select group miro/conf/rewards, ``rewards=[pickscore,hpsv2]``,
    # ``rewards.hpsv2.version=v2.0``); a list of names means default settings; null: the weight-free default set
    rewards: Any = None
    device: str = "auto"  # auto | cpu | cuda | cuda:N (auto: cuda:LOCAL_RANK if available, else cpu)
    dtype: str = "float32"
    batch_size: int = 32
    workers: int = 2  # DataLoader worker processes decoding and preprocessing (0: in the main process)
    shard_range: str | None = None  # "a:b" slice of the sorted shard list (for array jobs)
    array_index: int | None = None  # with array_count: this job takes shards array_index, array_index + array_count, ...
    array_count: int | None = None
    overwrite: bool = False  # rescore shards whose sidecar already has the requested rewards
    # the scale the score stage writes (and stage=rescale converts sidecars to): raw = our scorers' values;
    # authors = the MIRO authors' stored scale (/100, /10, (IR + 2) / 4) for their seven rewards, raw for the others.
    # Recorded per column; a sidecar or a dataset never mixes the two for one reward (miro.contracts.rewards)
    scale: str = "raw"
    progress: bool = True
    stats: StatsConfig = field(default_factory=StatsConfig)

    def __post_init__(self):
        require_choice("stage", self.stage, STAGES)
        if self.rewards is None:
            self.rewards = {r: {} for r in DEFAULT_REWARDS}
        elif isinstance(self.rewards, (list, tuple)):
            require(len(set(self.rewards)) == len(self.rewards), "rewards", self.rewards, "must not repeat a reward")
            self.rewards = {r: {} for r in self.rewards}
        require(isinstance(self.rewards, dict), "rewards", self.rewards, "must map reward names to their settings (or list names)")
        # the MIRO authors' keys (image_reward_score, pick_a_score_score, ...) name our rewards
        self.rewards = our_keys(self.rewards)
        require(len(self.rewards) > 0, "rewards", self.rewards, "must select at least one reward")
        for r, settings in self.rewards.items():
            require(r in REWARD_NAMES, "rewards", r, f"must be {allowed_rewards()}")
            require(isinstance(settings, dict), f"rewards.{r}", settings, "must be a mapping of that reward's settings")
        require_choice("dtype", self.dtype, list(DTYPES))
        require_choice("scale", self.scale, SCALES)
        require(
            re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device) is not None, "device", self.device, "must be auto, cpu, cuda, cuda:N or mps"
        )
        require(self.batch_size > 0, "batch_size", self.batch_size, "must be a positive integer")
        require(self.workers >= 0, "workers", self.workers, "must be >= 0")
        if self.shard_range is not None:
            require(
                re.fullmatch(r"\s*-?\d*\s*:\s*-?\d*\s*", self.shard_range) is not None,
                "shard_range",
                self.shard_range,
                "must be a python slice 'a:b' of the sorted shard list (either side may be empty)",
            )
        require(
            (self.array_index is None) == (self.array_count is None), "array_index", self.array_index, "array_index and array_count go together"
        )
        if self.array_count is not None:
            require(self.array_count > 0, "array_count", self.array_count, "must be a positive integer")
            require(0 <= self.array_index < self.array_count, "array_index", self.array_index, f"must be in 0..{self.array_count - 1}")

    @property
    def reward_names(self) -> list[str]:
        return list(self.rewards)
