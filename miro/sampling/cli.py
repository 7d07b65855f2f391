"""``python -m miro.sampling``: images with their metadata, or a reward-slider sweep (hydra, typed schema).

    python -m miro.sampling pipeline=runs/tiny/pipeline prompts='["a red circle"]' seeds='[0,1,2]'
    python -m miro.sampling pipeline=... prompts_file=prompts.txt '+settings.reward_targets.aesthetic=0.625' settings.steps=30
    python -m miro.sampling pipeline=... mode=sweep prompts='["a red circle"]' sweep.reward=sharpness

The pipeline-call settings are one schema, ``settings.*`` (``miro.sampling.settings.SamplingSettings``).
Images mode writes ``NNNNN_sSEED.png`` and ``NNNNN_sSEED.json`` (prompt, resolved targets, negative targets,
seed, steps, scales, sampler, pipeline path, NFE: what the pipeline returned it applied) per image into
``out_dir``; images already written are kept, so a killed job resumes.  Sweep mode writes one folder per
prompt (``miro.sampling.sliders``: grid, images, settings); ``python -m miro.eval sliders image_dir=OUT_DIR``
then measures them (reward scorers, Spearman, plot).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from miro.sampling.settings import SamplingSettings
from miro.utils.config import ConfigError, entry_point, require, require_choice
from miro.utils.device import DTYPES
from miro.utils.storage import check_writable

MODES = ("images", "sweep")


@dataclass
class SweepConfig:
    reward: str | None = None  # the reward whose target varies (required in sweep mode)
    targets: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
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
    settings: SamplingSettings = field(default_factory=SamplingSettings)  # the pipeline call (targets, guidance, steps, ...)
    seeds: list[int] = field(default_factory=lambda: [0])  # images mode: one image per prompt and seed
    batch_size: int = 8
    device: str = "auto"  # auto = cuda if available, else cpu
    dtype: str = "float32"  # the transformer's dtype
    out_dir: str = "samples"
    sweep: SweepConfig = field(default_factory=SweepConfig)

    def __post_init__(self):
        require(bool(self.pipeline), "pipeline", self.pipeline, "is required: a saved MiroPipeline folder")
        require_choice("mode", self.mode, MODES)
        require_choice("dtype", self.dtype, tuple(DTYPES))
        require(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        require(len(self.seeds) >= 1, "seeds", self.seeds, "must hold at least one seed")
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


def _write_atomic(path: Path, write) -> None:
    from miro.utils.atomic import atomic_path

    with atomic_path(path) as tmp:
        write(tmp)


def image_metadata(out, k: int, image, **run) -> dict:
    """The metadata of image ``k`` of a pipeline output (``return_dict=True``): what the call resolved."""
    settings, guidance, names = out.settings, out.guidance, list(out.reward_targets[k])
    return {
        **run,
        "reward_targets": out.reward_targets[k],
        "negative_reward_targets": out.negative_reward_targets[k],
        "guidance_scale": settings.guidance_scale,
        "text_guidance_scale": guidance.text_scale,
        "reward_guidance_scales": dict(zip(names, guidance.reward_scales)),
        "guidance_interval": list(guidance.interval),
        "nfe": out.nfe,
        "steps": settings.steps,
        "sampler": settings.sampler,
        **({"sde_noise": settings.sde_noise} if settings.sampler == "sde" else {}),
        "height": image.height,
        "width": image.width,
    }


def run_images(cfg: SampleConfig, pipe=None) -> list[Path]:
    """Generate one image per (prompt, seed); returns the image paths (existing ones are kept)."""
    import torch

    prompts = load_prompts(cfg)
    out_dir = check_writable(cfg.out_dir, "out_dir")  # before the pipeline is loaded or an image is made
    if pipe is None:
        from miro.sampling.pipeline import load_pipeline

        pipe = load_pipeline(cfg.pipeline, cfg.device, cfg.dtype)
    jobs = [(i, p, s) for i, p in enumerate(prompts) for s in cfg.seeds]
    paths = [out_dir / f"{i:05d}_s{s}.png" for i, _, s in jobs]
    todo = [(job, path) for job, path in zip(jobs, paths) if not (path.is_file() and path.with_suffix(".json").is_file())]
    for start in range(0, len(todo), cfg.batch_size):
        chunk = todo[start : start + cfg.batch_size]
        out = pipe(
            [p for (_, p, _), _ in chunk],
            settings=cfg.settings,
            generator=[torch.Generator().manual_seed(s) for (_, _, s), _ in chunk],
            return_dict=True,
        )
        for k, (((i, prompt, seed), path), image) in enumerate(zip(chunk, out.images)):
            meta = image_metadata(out, k, image, prompt=prompt, prompt_index=i, seed=seed)
            meta.update(pipeline=cfg.pipeline, dtype=cfg.dtype)
            _write_atomic(path, lambda tmp, im=image: im.save(tmp, format="PNG"))
            _write_atomic(path.with_suffix(".json"), lambda tmp, m=meta: tmp.write_text(json.dumps(m, indent=2)))
    return paths


def run_sweep(cfg: SampleConfig, pipe=None) -> list[Path]:
    """One slider sweep per prompt into ``out_dir/sweep_NNN`` (grid, images, sweep.json); returns the folders.
    Measuring them is evaluation: ``python -m miro.eval sliders image_dir=OUT_DIR``."""
    from miro.sampling.sliders import reward_sweep, save_sweep

    prompts = load_prompts(cfg)
    check_writable(cfg.out_dir, "out_dir")
    if pipe is None:
        from miro.sampling.pipeline import load_pipeline

        pipe = load_pipeline(cfg.pipeline, cfg.device, cfg.dtype)
    folders = []
    for i, prompt in enumerate(prompts):
        result = reward_sweep(
            pipe, prompt, cfg.sweep.reward, cfg.sweep.targets, cfg.sweep.seeds,
            fixed_targets=dict(cfg.sweep.fixed_targets), batch_size=cfg.batch_size, settings=cfg.settings,
        )  # fmt: skip
        result.settings["pipeline"] = cfg.pipeline
        folder = Path(cfg.out_dir) / f"sweep_{i:03d}"
        save_sweep(result, folder)
        folders.append(folder)
    return folders


def run(cfg: SampleConfig) -> list[Path]:
    return run_images(cfg) if cfg.mode == "images" else run_sweep(cfg)


def run_and_report(cfg: SampleConfig) -> list[Path]:
    written = run(cfg)
    if cfg.mode == "images":
        print(f"{len(written)} images in {cfg.out_dir}")
    else:
        print(f"{len(written)} sweeps in {cfg.out_dir}; measure them: python -m miro.eval sliders image_dir={cfg.out_dir}")
    return written


# ``python -m miro.sampling``: a bad value, a missing or damaged pipeline / weight file, an unwritable out_dir
# end in one ``error:`` line
def _errors() -> tuple:
    from miro.sampling.pipeline import PipelineFolderError
    from miro.utils.storage import OutputError

    return (FileNotFoundError, PipelineFolderError, OutputError)


main = entry_point("sample", SampleConfig, run_and_report, errors=_errors)
