"""``python -m miro.testtime.adapt``: cohort test-time RL (``miro.testtime.ttrl.ttrl_adapt``) from the command line.

    python -m miro.testtime.adapt pipeline=models/shapes_reference \
        metadata=runs/demo/data/heldout/evaluation_metadata.jsonl limit=20 monitor=intrinsic \
        ttrl.iterations=10 ttrl.group_size=6 out_dir=runs/ttrl

Adapts one LoRA to the prompts (all of ``prompts`` then those of ``metadata``, cut to ``limit``) and writes into
``out_dir``: ``adapter/`` (``pipe.load_lora(out_dir/adapter, adapter_name)`` loads it on the same pipeline),
``history.json`` (one row per iteration: the monitor's mean, the tracked rewards' mean and their agreement with
the monitor, KL, clip fraction, NFE-eq), ``trace.json`` and images before / after.  ``monitor``: ``intrinsic``
(the model's own likelihood ratios and rubric, judged by the frozen model), ``consensus`` (agreement within the
group) or ``rewards`` (the external rewards of ``verifier.rewards``); ``track.rewards`` are scored on every group
for the history only.  Typed schema below; miro/conf/testtime_adapt.yaml has the defaults.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from miro.contracts.rewards import allowed_rewards, our_names
from miro.models.lora import LoraSpec
from miro.sampling.settings import SamplingSettings
from miro.testtime.config import ADVANTAGE_STDS, VERIFIER_REWARDS, IntrinsicConfig, VerifierConfig, _int, _num
from miro.utils.config import entry_point, require, require_choice
from miro.utils.device import DTYPES
from miro.utils.precision import PRECISIONS

MONITORS = ("intrinsic", "consensus", "rewards")


@dataclass
class TTRLOptions:
    """``ttrl_adapt``'s keyword options (its docstring says what each does)."""

    group_size: int = 8
    iterations: int = 20
    prompts_per_iteration: int | None = None  # null = every prompt every iteration
    train_steps: int = 10  # SDE steps of a training rollout (fewer than settings.steps)
    sde_noise: float = 0.7
    final_step: str = "ode"  # ode: the rollouts' last step is deterministic and not trained | sde
    sde_steps: int | None = None  # the leading rollout steps that draw noise (the rest are ODE steps); null = all
    lr: float = 1.0e-4
    kl_beta: float = 0.02
    clip: float = 0.2
    inner_epochs: int = 1
    groups_per_step: int | None = 1  # groups per optimizer step (null: the whole round, Flow-GRPO's accumulation)
    advantage_std: str = "group"  # group: each group by its own std | global: by the round's std (Flow-GRPO)
    max_grad_norm: float | None = 1.0
    max_kl: float | None = None  # undo the first iteration whose KL to the frozen model exceeds it, and stop
    seed: int = 0
    save_images: int = 4

    def __post_init__(self):
        for key in ("group_size", "iterations", "train_steps", "inner_epochs"):
            require(_int(getattr(self, key)), f"ttrl.{key}", getattr(self, key), "must be a positive integer")
        require(
            self.group_size >= 2,
            "ttrl.group_size",
            self.group_size,
            "must be >= 2 (advantages are group-relative)",
        )
        require(self.prompts_per_iteration is None or _int(self.prompts_per_iteration), "ttrl.prompts_per_iteration",
                self.prompts_per_iteration, "must be a positive integer or null")  # fmt: skip
        require(_num(self.sde_noise) and self.sde_noise > 0, "ttrl.sde_noise", self.sde_noise,
                "must be > 0 (a deterministic step has no log-probability)")  # fmt: skip
        for key in ("lr", "kl_beta"):
            require(
                _num(getattr(self, key)) and getattr(self, key) >= 0,
                f"ttrl.{key}",
                getattr(self, key),
                "must be >= 0",
            )
        require(_num(self.clip) and self.clip > 0, "ttrl.clip", self.clip, "must be > 0")
        require_choice("ttrl.final_step", self.final_step, ("ode", "sde"))
        trainable = self.train_steps - (self.final_step == "ode") if _int(self.train_steps) else None
        require(self.sde_steps is None or (_int(self.sde_steps) and trainable is not None and self.sde_steps <= trainable),
                "ttrl.sde_steps", self.sde_steps, f"must be null or an integer in [1, {trainable}] (the rollout steps "
                "that can draw noise: train_steps, less a deterministic final step)")  # fmt: skip
        require(self.groups_per_step is None or _int(self.groups_per_step), "ttrl.groups_per_step",
                self.groups_per_step, "must be a positive integer or null")  # fmt: skip
        require_choice("ttrl.advantage_std", self.advantage_std, ADVANTAGE_STDS)
        require(self.max_grad_norm is None or (_num(self.max_grad_norm) and self.max_grad_norm > 0),
                "ttrl.max_grad_norm", self.max_grad_norm, "must be > 0 or null")  # fmt: skip
        require(self.max_kl is None or (_num(self.max_kl) and self.max_kl > 0), "ttrl.max_kl", self.max_kl,
                "must be > 0 or null")  # fmt: skip


@dataclass
class TrackConfig:
    rewards: list[str] = field(default_factory=lambda: ["sharpness", "low_noise", "colorfulness", "contrast"])
    held_out: bool = True  # refuse a tracked reward that the monitor also reads

    def __post_init__(self):
        self.rewards = our_names(self.rewards)  # the MIRO authors' keys name our rewards
        for name in self.rewards:
            require(name in VERIFIER_REWARDS, "track.rewards", self.rewards,
                    f"{name!r} is not a reward; allowed: {allowed_rewards(VERIFIER_REWARDS)}")  # fmt: skip


@dataclass
class AdaptConfig:
    pipeline: str = ""
    prompts: list[str] = field(default_factory=list)
    metadata: str | None = None
    limit: int | None = None
    monitor: str = "intrinsic"
    intrinsic: IntrinsicConfig = field(default_factory=IntrinsicConfig)
    rubric: bool = True  # the intrinsic monitor adds the rubric for prompts with rubric words
    rubric_weight: float = 1.0  # the rubric's weight in the intrinsic monitor, against 1 per likelihood ratio
    verifier: VerifierConfig = field(default_factory=VerifierConfig)  # monitor=rewards: the external rewards
    track: TrackConfig = field(default_factory=TrackConfig)
    ttrl: TTRLOptions = field(default_factory=TTRLOptions)
    lora: LoraSpec = field(default_factory=lambda: LoraSpec(rank=8, alpha=8.0, targets="attention_mlp"))
    settings: SamplingSettings = field(default_factory=SamplingSettings)
    adapter_name: str = "ttrl"
    device: str = "auto"
    dtype: str = "float32"
    mixed_precision: str = "auto"
    out_dir: str = "ttrl"

    def __post_init__(self):
        require(bool(self.pipeline), "pipeline", self.pipeline, "is required: a saved MiroPipeline folder")
        require(bool(self.prompts) or bool(self.metadata), "prompts", self.prompts,
                "give prompts (a list) or metadata (an evaluation_metadata.jsonl)")  # fmt: skip
        require(
            self.limit is None or _int(self.limit), "limit", self.limit, "must be a positive integer or null"
        )
        require_choice("monitor", self.monitor, MONITORS)
        require(_num(self.rubric_weight) and self.rubric_weight >= 0, "rubric_weight", self.rubric_weight,
                "must be a number >= 0")  # fmt: skip
        require_choice("dtype", self.dtype, tuple(DTYPES))
        require_choice("mixed_precision", self.mixed_precision, tuple(PRECISIONS))
        require(bool(self.adapter_name) and "/" not in self.adapter_name, "adapter_name", self.adapter_name,
                "must be a plain folder name")  # fmt: skip


def _verifier(cfg: AdaptConfig, pipe, metadata, rewards: list[str]):
    """A ``Verifier`` of annotate's scorers for ``rewards`` (built as ``python -m miro.testtime`` builds them)."""
    from types import SimpleNamespace

    from miro.testtime.cli import build_scorers
    from miro.testtime.verifier import Verifier, norms_from_reward_stats

    v = cfg.verifier
    spec = SimpleNamespace(verifier=VerifierConfig(**{**asdict(v), "rewards": list(rewards), "weights": {},
                                                      "held_out": []}), mixed_precision=cfg.mixed_precision)  # fmt: skip
    norms = norms_from_reward_stats(v.stats) if v.stats else {}
    weights = {k: w for k, w in v.weights.items() if k in rewards} or None
    return Verifier(build_scorers(spec, pipe, metadata), weights, [], norms, v.batch_size)


def run(cfg: AdaptConfig, pipe=None) -> dict:
    from pathlib import Path

    from miro.testtime.cli import load_prompts
    from miro.testtime.ttrl import ttrl_adapt
    from miro.utils.storage import check_writable

    prompts, metadata = load_prompts(cfg)
    if pipe is None and not Path(cfg.pipeline).is_dir():
        raise FileNotFoundError(
            f"pipeline={cfg.pipeline!r}: no such folder (a MiroPipeline.save_pretrained folder)"
        )
    out_dir = check_writable(cfg.out_dir, "out_dir")
    if pipe is None:
        from miro.sampling.pipeline import load_pipeline

        pipe = load_pipeline(cfg.pipeline, cfg.device, cfg.dtype)
    verifier = _verifier(cfg, pipe, metadata, cfg.verifier.rewards) if cfg.monitor == "rewards" else None
    track = _verifier(cfg, pipe, metadata, cfg.track.rewards) if cfg.track.rewards else None
    options = (
        {**asdict(cfg.intrinsic), "rubric": cfg.rubric, "rubric_weight": cfg.rubric_weight}
        if cfg.monitor == "intrinsic"
        else None
    )
    if options is not None:
        options.pop("text", None)
    t = cfg.ttrl
    result = ttrl_adapt(pipe, prompts, monitor=cfg.monitor, verifier=verifier, track=track, track_held_out=cfg.track.held_out,
                        monitor_options=options, group_size=t.group_size, iterations=t.iterations,
                        prompts_per_iteration=t.prompts_per_iteration, train_steps=t.train_steps, sde_noise=t.sde_noise,
                        final_step=t.final_step, sde_steps=t.sde_steps,
                        lora=cfg.lora, lr=t.lr, kl_beta=t.kl_beta, clip=t.clip, inner_epochs=t.inner_epochs,
                        groups_per_step=t.groups_per_step, advantage_std=t.advantage_std,
                        max_grad_norm=t.max_grad_norm, max_kl=t.max_kl, settings=cfg.settings, mixed_precision=cfg.mixed_precision,
                        seed=t.seed, adapter_name=cfg.adapter_name, out_dir=out_dir, save_images=t.save_images,
                        progress=True)  # fmt: skip
    summary = {"prompts": len(prompts), "monitor": cfg.monitor, "adapter": str(result.adapter_folder),
               "nfe": result.nfe, "first": result.history[0] if result.history else None,
               "last": result.history[-1] if result.history else None}  # fmt: skip
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return summary


def run_and_report(cfg: AdaptConfig) -> dict:
    s = run(cfg)
    first, last = s["first"] or {}, s["last"] or {}
    print(f"ttrl ({s['monitor']}): {s['prompts']} prompts, {s['nfe']:g} NFE-eq; monitor mean "
          f"{first.get('monitor_mean')} -> {last.get('monitor_mean')}; adapter in {s['adapter']}")  # fmt: skip
    return s


def _errors() -> tuple:
    from miro.testtime.cli import _errors as search_errors  # the same user errors as python -m miro.testtime

    return search_errors()


main = entry_point("testtime_adapt", AdaptConfig, run_and_report, errors=_errors)

if __name__ == "__main__":
    main()
