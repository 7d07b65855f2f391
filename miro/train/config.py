"""The typed schema of ``miro/conf/train.yaml`` (every key is documented in docs/train.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from miro.contracts.rewards import allowed_rewards, our_keys, our_names, unknown_rewards
from miro.data.pipeline import DataConfig
from miro.flow.timesteps import KINDS as TIME_KINDS
from miro.models.config import AutoencoderConfig, ModelConfig, TextEncoderConfig
from miro.train.grids import GridConfig
from miro.train.optim import OptimConfig
from miro.utils.config import require, require_choice
from miro.utils.precision import PRECISIONS

TRACKERS = ("tensorboard", "wandb", "none")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class TimeConfig:
    """The training distribution of the noise level t (``miro.flow.TimeSampler``)."""

    kind: str = "logit_normal"
    mean: float = 0.0
    std: float = 1.0
    mode_scale: float = 1.29
    shift: float = 1.0
    low: float = 0.0  # train on the band [low, high] of noise levels only (an eDiff-I expert; 0, 1 = all)
    high: float = 1.0

    def __post_init__(self):
        require_choice("time.kind", self.kind, TIME_KINDS)
        require(self.std > 0, "time.std", self.std, "must be > 0")
        require(self.shift > 0, "time.shift", self.shift, "must be > 0")
        require(0.0 <= self.low < 1.0, "time.low", self.low, "must be in [0, 1)")
        require(self.low < self.high <= 1.0, "time.high", self.high, f"must be in (time.low={self.low}, 1]")


@dataclass
class CacheJobConfig:
    """``python -m miro.train.cache`` reads the training config, so caches always match what training expects."""

    batch_size: int = 64
    overwrite: bool = False
    rank: int | None = None  # None: from the launcher (torchrun / accelerate / SLURM_PROCID)
    world_size: int | None = None

    def __post_init__(self):
        require(self.batch_size >= 1, "cache_job.batch_size", self.batch_size, "must be >= 1")
        require((self.rank is None) == (self.world_size is None), "cache_job.rank", self.rank,
                "set cache_job.rank and cache_job.world_size together (or neither)")
        if self.world_size is not None:
            require(self.world_size >= 1 and 0 <= self.rank < self.world_size, "cache_job.rank", self.rank,
                    f"must be in [0, world_size={self.world_size})")


@dataclass
class TrainConfig:
    name: str = "miro"
    output_dir: str = ""  # default runs/<name>
    seed: int = 0
    max_steps: int = 1000
    batch_size: int = 64  # global: per-process micro batch x processes x grad_accum
    grad_accum: int = 1
    mixed_precision: str = "auto"  # auto: bf16 where the device has fast bf16 kernels (miro.utils.precision)
    cpu: bool = False  # train on the CPU even when a GPU is present
    reward_dropout: float = 0.1  # each reward of each sample -> its learned null (at least one kept, as MIRO)
    text_dropout: float = 0.1  # the sample's text -> the learned null text (guidance's negative branch)
    # a backbone with latent self-conditioning (model.backbone=rin): the share of samples whose loss pass is fed
    # the latents of a first pass at the same x_t and t (the others get zeros); the MIRO authors' 0.9
    self_conditioning_rate: float = 0.9
    latent_sampling: bool = True  # KL autoencoders: train on posterior samples (False: the posterior mean)
    ema_decay: float = 0.999
    ema_warmup: bool = True
    checkpoint_every: int = 500
    checkpoints_total_limit: int = 3  # 0 keeps all
    resume: str = ""  # "", "latest" or a checkpoint folder
    # a pipeline folder (or its transformer/ folder) whose transformer weights start the run (same architecture):
    # fine-tuning, e.g. an eDiff-I noise-band expert from the shared model; a resumed run loads its checkpoint
    init_from: str = ""
    # parameter names (or module prefixes, e.g. text_proj) kept at their initial values: not in the optimizer.
    # Why: a part the loss would otherwise reshape, e.g. the text projection frozen at its random full-rank init
    # so that it keeps what the encoder says about binding (docs/text_conditioning.md, section 37)
    freeze: list[str] = field(default_factory=list)
    stop_after: int = 0  # end this job after so many steps (a multiple of checkpoint_every); 0 = run to max_steps
    export_every: int = 0  # also write the EMA pipeline to pipelines/step-<N>/ every N steps (0 = only final/)
    log_every: int = 50
    log_with: str = "tensorboard"
    log_keys: bool = False  # write the keys each rank consumed to logs/keys-rank<r>.txt (data audits)
    find_unused_parameters: bool = False
    max_nonfinite_steps: int = 5  # steps in a row with a NaN/inf gradient (skipped) before the run stops
    compile: bool = False  # torch.compile the transformer's forward (in place: checkpoints keep their keys)
    # torch.compile's mode: "default" fuses kernels; "reduce-overhead" also replays CUDA graphs, which is what a
    # launch-bound small model on a GPU needs (docs/train.md); the max-autotune modes search kernel configs
    compile_mode: str = "default"
    allow_tf32: bool = True
    peak_tflops: float | None = None  # per device, for the MFU estimate; None = known GPUs only
    progress_bar: bool = True
    reward_names: list[str] = field(default_factory=list)  # the conditioned rewards, in token order; [] = the baseline
    # written into the exported pipelines as their recommended starting targets (MiroPipeline's
    # recommended_reward_targets: where the slider app starts; a reward at null is left free); null = none recorded
    # (typed Any because an omegaconf Optional[Dict] node holding None cannot take a dict override)
    recommended_reward_targets: Any = None  # dict[str, float | None]
    model: ModelConfig = field(default_factory=ModelConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    time: TimeConfig = field(default_factory=TimeConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sample: GridConfig = field(default_factory=GridConfig)
    cache_job: CacheJobConfig = field(default_factory=CacheJobConfig)

    def __post_init__(self):
        require(bool(self.name) and "/" not in self.name, "name", self.name, "must be a non-empty folder name")
        # the MIRO authors' keys (image_reward_score, pick_a_score_score, ...) name our rewards
        self.reward_names = our_names(self.reward_names)
        unknown = unknown_rewards(self.reward_names)
        require(not unknown, "reward_names", list(self.reward_names),
                f"unknown reward(s) {unknown}: each must be {allowed_rewards()}")
        require(len(set(self.reward_names)) == len(self.reward_names), "reward_names", list(self.reward_names), "lists a reward twice")
        if self.recommended_reward_targets is not None:
            rec = self.recommended_reward_targets
            require(isinstance(rec, Mapping), "recommended_reward_targets", rec, "must be a mapping {reward: target}")
            rec = our_keys(rec, self.reward_names, key="recommended_reward_targets")  # the authors' keys too
            require(set(rec) <= set(self.reward_names), "recommended_reward_targets", rec,
                    f"names rewards the run is not conditioned on; its rewards are {list(self.reward_names)}")  # fmt: skip
            require(all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0)
                        for v in rec.values()), "recommended_reward_targets", rec,
                    "every target must be in [0, 1], or null to leave that reward free")  # fmt: skip
            self.recommended_reward_targets = {k: (None if v is None else float(v)) for k, v in rec.items()}
        require(self.max_steps >= 1, "max_steps", self.max_steps, "must be >= 1")
        require(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        require(self.grad_accum >= 1, "grad_accum", self.grad_accum, "must be >= 1")
        require(self.batch_size % self.grad_accum == 0, "batch_size", self.batch_size,
                f"must be divisible by grad_accum={self.grad_accum}")
        require_choice("mixed_precision", self.mixed_precision, PRECISIONS)
        for key in ("reward_dropout", "text_dropout", "self_conditioning_rate"):
            require(0.0 <= getattr(self, key) <= 1.0, key, getattr(self, key), "must be a probability in [0, 1]")
        require(0.0 <= self.ema_decay <= 1.0, "ema_decay", self.ema_decay, "must be in [0, 1]")
        require(self.checkpoint_every >= 1, "checkpoint_every", self.checkpoint_every, "must be >= 1")
        require(self.export_every >= 0, "export_every", self.export_every, "must be >= 0 (0 = only the final pipeline)")
        require(self.checkpoints_total_limit >= 0, "checkpoints_total_limit", self.checkpoints_total_limit,
                "must be >= 0 (0 keeps every checkpoint)")
        require(self.stop_after >= 0 and self.stop_after % self.checkpoint_every == 0, "stop_after", self.stop_after,
                f"must be 0 or a multiple of checkpoint_every={self.checkpoint_every} (a resumable point)")
        require(self.max_nonfinite_steps >= 1, "max_nonfinite_steps", self.max_nonfinite_steps, "must be >= 1")
        require(self.log_every >= 1, "log_every", self.log_every, "must be >= 1")
        require_choice("log_with", self.log_with, TRACKERS)
        require_choice("compile_mode", self.compile_mode, COMPILE_MODES)
        require(self.peak_tflops is None or self.peak_tflops > 0, "peak_tflops", self.peak_tflops, "must be > 0")
