"""``python -m miro.sampling``: images with their metadata, or a reward-slider sweep (hydra, typed schema).

    python -m miro.sampling pipeline=runs/tiny/pipeline prompts='["a red circle"]' seeds='[0,1,2]'
    python -m miro.sampling pipeline=... prompts_file=prompts.txt '+reward_targets.aesthetic=0.625' steps=30
    python -m miro.sampling pipeline=... mode=sweep prompts='["a red circle"]' sweep.reward=sharpness

Images mode writes ``NNNNN_sSEED.png`` and ``NNNNN_sSEED.json`` (prompt, resolved targets, negative targets,
seed, steps, scales, sampler, pipeline path, NFE) per image into ``out_dir``; images already written are
kept, so a killed job resumes.  Sweep mode writes one folder per prompt (``miro.sampling.sliders``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miro.utils.config import CONFIG_PATH, ConfigError, register_schema, require, require_choice, run_typed

MODES = ("images", "sweep")
SAMPLERS = ("euler", "heun")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class SweepConfig:
    reward: str | None = None  # the reward whose target varies (required in sweep mode)
    targets: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    scorers: list[str] | None = None  # annotate scorer names; null = the swept reward's own scorer
    fixed_targets: dict[str, float | None] = field(default_factory=dict)

    def __post_init__(self):
        require(len(self.targets) >= 2, "sweep.targets", self.targets, "must hold at least two targets")
        require(all(0.0 <= t <= 1.0 for t in self.targets), "sweep.targets", self.targets, "must lie in [0, 1]")
        require(len(self.seeds) >= 1, "sweep.seeds", self.seeds, "must hold at least one seed")


@dataclass
class SampleConfig:
    pipeline: str = ""  # a folder written by MiroPipeline.save_pretrained (or a repo id in the HF cache)
    mode: str = "images"
    prompts: list[str] = field(default_factory=list)
    prompts_file: str | None = None  # one prompt per line (blank lines skipped); added after `prompts`
    reward_targets: dict[str, float | None] = field(default_factory=dict)
    negative_reward_targets: dict[str, float | None] = field(default_factory=dict)
    guidance_scale: float = 7.0
    text_guidance_scale: float | None = None
    reward_guidance_scale: float | None = None
    reward_guidance_weights: dict[str, float] = field(default_factory=dict)
    guidance_interval: list[float] = field(default_factory=lambda: [0.0, 1.0])
    steps: int = 50
    sampler: str = "euler"
    seeds: list[int] = field(default_factory=lambda: [0])  # images mode: one image per prompt and seed
    height: int | None = None
    width: int | None = None
    batch_size: int = 8
    device: str = "auto"  # auto = cuda if available, else cpu
    dtype: str = "float32"  # the transformer's dtype
    out_dir: str = "samples"
    sweep: SweepConfig = field(default_factory=SweepConfig)

    def __post_init__(self):
        require(bool(self.pipeline), "pipeline", self.pipeline, "is required: a saved MiroPipeline folder")
        require_choice("mode", self.mode, MODES)
        require_choice("sampler", self.sampler, SAMPLERS)
        require_choice("dtype", self.dtype, DTYPES)
        require(self.steps >= 1, "steps", self.steps, "must be >= 1")
        require(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        require(len(self.seeds) >= 1, "seeds", self.seeds, "must hold at least one seed")
        require(len(self.guidance_interval) == 2, "guidance_interval", self.guidance_interval, "must be [t_lo, t_hi]")
        require(bool(self.prompts) or bool(self.prompts_file), "prompts", self.prompts,
                "give prompts (a list) or prompts_file")
        if self.mode == "sweep":
            require(bool(self.sweep.reward), "sweep.reward", self.sweep.reward, "is required in sweep mode")


def load_prompts(cfg: SampleConfig) -> list[str]:
    prompts = list(cfg.prompts)
    if cfg.prompts_file:
        path = Path(cfg.prompts_file)
        if not path.is_file():
            raise ConfigError(f"prompts_file={cfg.prompts_file!r}: no such file")
        prompts += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ConfigError(f"prompts_file={cfg.prompts_file!r}: holds no prompt")
    return prompts


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def load_pipeline(cfg: SampleConfig):
    import torch

    from miro.sampling.pipeline import MiroPipeline

    pipe = MiroPipeline.from_pretrained(cfg.pipeline, torch_dtype=getattr(torch, cfg.dtype), device=_device(cfg.device))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def guidance_kwargs(cfg: SampleConfig) -> dict[str, Any]:
    """The pipeline call's guidance and sampling arguments from the config."""
    return {
        "negative_reward_targets": dict(cfg.negative_reward_targets),
        "guidance_scale": cfg.guidance_scale,
        "text_guidance_scale": cfg.text_guidance_scale,
        "reward_guidance_scale": cfg.reward_guidance_scale,
        "reward_guidance_weights": dict(cfg.reward_guidance_weights),
        "guidance_interval": tuple(cfg.guidance_interval),
        "num_inference_steps": cfg.steps,
        "sampler": cfg.sampler,
        "height": cfg.height,
        "width": cfg.width,
    }


def _resolved(targets: dict, names: list[str], default: float, arg: str) -> dict[str, float | None]:
    """Every reward's target as the pipeline applies it (defaults filled in, aliases resolved)."""
    from miro.sampling.targets import reward_tensors

    values, mask = reward_tensors(targets, names, 1, default, arg)
    return {n: (float(values[0, k]) if mask[0, k] else None) for k, n in enumerate(names)}


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def run_images(cfg: SampleConfig, pipe=None) -> list[Path]:
    """Generate one image per (prompt, seed); returns the image paths (existing ones are kept)."""
    import torch

    from miro.sampling.guidance import Guidance
    from miro.sampling.sampler import total_nfe
    from miro.sampling.targets import canonical_keys

    prompts = load_prompts(cfg)
    pipe = pipe or load_pipeline(cfg)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = pipe.reward_names
    kwargs = guidance_kwargs(cfg)
    pos = _resolved(dict(cfg.reward_targets), names, 1.0, "reward_targets")
    neg = _resolved(kwargs["negative_reward_targets"], names, 0.0, "negative_reward_targets")
    guidance = Guidance.resolve(
        names, cfg.guidance_scale, cfg.text_guidance_scale, cfg.reward_guidance_scale,
        canonical_keys(kwargs["reward_guidance_weights"], names, "reward_guidance_weights"), cfg.guidance_interval,
    )
    pipe.scheduler.set_timesteps(cfg.steps)
    nfe = total_nfe(guidance, pipe.scheduler.sigmas, cfg.sampler)
    jobs = [(i, p, s) for i, p in enumerate(prompts) for s in cfg.seeds]
    paths = [out / f"{i:05d}_s{s}.png" for i, _, s in jobs]
    todo = [(job, path) for job, path in zip(jobs, paths) if not (path.is_file() and path.with_suffix(".json").is_file())]
    for start in range(0, len(todo), cfg.batch_size):
        chunk = todo[start : start + cfg.batch_size]
        images = pipe(
            [p for (_, p, _), _ in chunk],
            reward_targets=dict(cfg.reward_targets),
            generator=[torch.Generator().manual_seed(s) for (_, _, s), _ in chunk],
            **kwargs,
        )
        for ((i, prompt, seed), path), image in zip(chunk, images):
            meta = {
                "prompt": prompt,
                "prompt_index": i,
                "seed": seed,
                "reward_targets": pos,
                "negative_reward_targets": neg,
                "guidance_scale": cfg.guidance_scale,
                "text_guidance_scale": guidance.text_scale,
                "reward_guidance_scales": dict(zip(names, guidance.reward_scales)),
                "guidance_interval": list(guidance.interval),
                "nfe": nfe,
                "steps": cfg.steps,
                "sampler": cfg.sampler,
                "height": image.height,
                "width": image.width,
                "pipeline": cfg.pipeline,
                "dtype": cfg.dtype,
            }
            _write_atomic(path, lambda tmp, im=image: im.save(tmp, format="PNG"))
            _write_atomic(path.with_suffix(".json"), lambda tmp, m=meta: tmp.write_text(json.dumps(m, indent=2)))
    return paths


def build_scorers(names: list[str], device: str | None = None) -> dict[str, Any]:
    """Reward scorers by name through the annotate registry."""
    try:
        from annotate.scorers import build_scorer
    except ImportError as err:
        raise ConfigError(f"sweep.scorers={names}: the annotate package (reward scorers) is not importable: {err}") from err
    return {name: build_scorer(name, device=device) for name in names}


def run_sweep(cfg: SampleConfig, pipe=None, scorers: dict[str, Any] | None = None) -> list[Path]:
    """One slider sweep per prompt into ``out_dir/sweep_NNN``; returns the folders."""
    from miro.sampling.sliders import reward_sweep, save_sweep
    from miro.sampling.targets import canonical_reward

    prompts = load_prompts(cfg)
    pipe = pipe or load_pipeline(cfg)
    if scorers is None:
        own = canonical_reward(cfg.sweep.reward, pipe.reward_names, "sweep.reward")
        names = list(cfg.sweep.scorers) if cfg.sweep.scorers is not None else [own]
        scorers = build_scorers(names, _device(cfg.device))
    kwargs = guidance_kwargs(cfg)
    folders = []
    for i, prompt in enumerate(prompts):
        result = reward_sweep(
            pipe, prompt, cfg.sweep.reward, cfg.sweep.targets, cfg.sweep.seeds, scorers,
            fixed_targets=dict(cfg.sweep.fixed_targets), batch_size=cfg.batch_size, **kwargs,
        )
        result.settings["pipeline"] = cfg.pipeline
        folder = Path(cfg.out_dir) / f"sweep_{i:03d}"
        save_sweep(result, folder)
        folders.append(folder)
    return folders


def run(cfg: SampleConfig) -> list[Path]:
    return run_images(cfg) if cfg.mode == "images" else run_sweep(cfg)


register_schema("sample_schema", SampleConfig)


def run_and_report(cfg: SampleConfig) -> list[Path]:
    written = run(cfg)
    what = "images" if cfg.mode == "images" else "sweeps"
    print(f"{len(written)} {what} in {cfg.out_dir}")
    return written


def main() -> None:
    """``python -m miro.sampling``: a bad value or a missing pipeline / weight file ends in one ``error:`` line."""
    import hydra

    @hydra.main(config_path=CONFIG_PATH, config_name="sample", version_base="1.3")
    def _app(hcfg) -> None:
        run_typed(hcfg, SampleConfig, run_and_report, errors=(FileNotFoundError,))

    _app()
