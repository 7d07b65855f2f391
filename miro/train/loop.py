"""The training loop: flow matching on (latent, text, reward vector) with accelerate.

Reproducibility: every random draw of step s on rank r (time, noise, dropout masks, the model's own
dropout) is seeded from (seed, s, r), and the data stream restarts at each checkpoint step (see
``miro.data.pipeline``).  Resuming from ``checkpoint-k`` therefore continues exactly as the uninterrupted
run would — on the CPU bit for bit — without replaying batches.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import (
    DistributedDataParallelKwargs,
    ProjectConfiguration,
    broadcast_object_list,
    extract_model_from_parallel,
)
from omegaconf import OmegaConf
from torch import nn
from tqdm.auto import tqdm

from miro.data.annotations import DataError
from miro.data.cache import CacheError, cache_identity
from miro.data.pipeline import (
    DatasetInfo,
    MiroDataset,
    derive_seed,
    inspect_dataset,
    make_loader,
    model_inputs,
)
from miro.data.transforms import pad_text_to
from miro.flow import LinearPath, TimeSampler, velocity_loss
from miro.models import sample_condition_dropout
from miro.models.config import build_autoencoder, build_model, build_text_encoder
from miro.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_state,
    remove_stale_temps,
    resolve_resume,
    save_checkpoint,
)
from miro.train.config import TrainConfig
from miro.train.ema import EMA
from miro.train.grids import SampleGrid, save_grid
from miro.train.launch import check_launch, use_cpu
from miro.train.logging import (
    Meter,
    batch_training_flops,
    close_file_logging,
    peak_flops,
    setup_file_logging,
    status_line,
)
from miro.train.optim import build_optimizer, lr_at, set_lr
from miro.utils.atomic import atomic_path, atomic_write_text
from miro.utils.config import ConfigError
from miro.utils.precision import resolve_precision
from miro.utils.storage import STORAGE_ERRNOS, OutputError, check_writable

log = logging.getLogger("miro.train")


@dataclass
class Components:
    """What the loop trains and the frozen encoders it feeds it with (contracts in docs/contracts.md)."""

    model: nn.Module  # velocity = model(x, t, text, text_mask, rewards, reward_mask, drop_text)
    text_encoder: Any
    autoencoder: Any


def build_components(cfg: TrainConfig) -> Components:
    """The frozen text encoder and autoencoder from their configs, and a fresh transformer sized by them."""
    te, ae = build_text_encoder(cfg.text_encoder), build_autoencoder(cfg.autoencoder)
    tokens = cfg.model.spatial_stride
    step = ae.downsample * tokens
    if cfg.data.resolution % step:
        factors = cfg.model.stride_factors()
        raise ConfigError(f"data.resolution={cfg.data.resolution}: must be a multiple of autoencoder downsample x "
                          f"{factors} = {ae.downsample} x {tokens} = {step}")
    # the initial weights come from ``seed`` alone: the process's own torch seed is random (a library reseeds it
    # at import), so without this two runs with the same config trained different models
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model, reward_names=cfg.reward_names, text_dim=te.dim, in_channels=ae.latent_channels,
                            sample_size=cfg.data.resolution // ae.downsample)
    if cfg.init_from:
        load_initial_weights(model, cfg.init_from)
    return Components(model=model, text_encoder=te, autoencoder=ae)


def load_initial_weights(model: nn.Module, folder: str | Path) -> None:
    """``init_from``: copy the weights of a saved transformer (``<folder>/transformer`` of a pipeline, or the
    folder itself) into ``model``, which the config built; a different architecture is a ConfigError naming
    what differs, never a partial load.  Two additions are allowed, each starting as the identity so that the
    grown model computes what the saved one did: refiner blocks beyond the saved depth (``cond_refiner_depth``)
    and the frozen text path behind its zero gate (``frozen_text_path``)."""
    path = Path(folder)
    src = path / "transformer" if (path / "transformer" / "config.json").is_file() else path
    if not (src / "config.json").is_file():
        raise ConfigError(f"init_from={folder}: no transformer/config.json or config.json there (give a pipeline "
                          "folder such as models/shapes_reference, or its transformer/ folder)")
    try:
        saved = type(model).from_pretrained(src).state_dict()
    except (OSError, ValueError, TypeError, RuntimeError) as err:
        raise ConfigError(f"init_from={folder}: cannot load the transformer in {src} as {type(model).__name__}: {err}") from err
    own = model.state_dict()
    missing, extra = sorted(own.keys() - saved.keys()), sorted(saved.keys() - own.keys())
    grown = _new_refiner_blocks(model, saved.keys())
    added = [k for k in ("frozen_text_map", "frozen_text_gate") if k in missing]  # built with its gate at zero
    missing = [k for k in missing if not k.startswith(tuple(f"cond_blocks.{i}." for i in grown)) and k not in added]
    shapes = [f"{k} {tuple(saved[k].shape)} != {tuple(v.shape)}" for k, v in own.items() if k in saved and saved[k].shape != v.shape]
    if missing or extra or shapes:
        raise ConfigError(f"init_from={folder}: its transformer is not the configured model (missing {missing[:4]}, "
                          f"unexpected {extra[:4]}, shapes {shapes[:4]}); set model.* to the saved one's config.json")
    model.load_state_dict(saved, strict=not (grown or added))
    for i in grown:  # identity maps: the grown model computes what the saved one did, and training grows them
        block = model.cond_blocks[i]
        for layer in (block.attn.to_out, block.mlp.fc2):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
    log.info("init_from=%s: %d tensors loaded%s%s", folder, len(saved),
             f"; refiner deepened by blocks {grown}, which start as identity maps" if grown else "",
             "; a frozen text path added behind a zero gate" if added else "")


def freeze_parameters(model: nn.Module, prefixes: list[str]) -> None:
    """``freeze``: the parameters named by each prefix (a name, or a module path before a dot) stop taking
    gradient, so the optimizer never sees them; a prefix that names nothing is a ConfigError listing the model's
    top-level modules."""
    named = dict(model.named_parameters())
    for prefix in prefixes:
        hit = [n for n in named if n == prefix or n.startswith(prefix + ".")]
        if not hit:
            top = sorted({n.split(".")[0] for n in named})
            raise ConfigError(f"freeze={list(prefixes)}: {prefix!r} names no parameter of the model "
                              f"(its top-level modules and parameters: {top})")  # fmt: skip
        for n in hit:
            named[n].requires_grad_(False)
    frozen = sum(p.numel() for p in named.values() if not p.requires_grad)
    log.info("freeze=%s: %d parameters kept at their initial values", list(prefixes), frozen)


def _new_refiner_blocks(model: nn.Module, saved_keys) -> list[int]:
    """The condition refiner's blocks that ``model`` has beyond a saved model's (``init_from`` into a deeper
    ``cond_refiner_depth``): the one architecture change a warm start allows, since a pre-LN residual block whose
    output layers are zero is the identity.  Why: the text path can then be deepened on a trained model
    (docs/text_conditioning.md, section 37) instead of retraining it from scratch."""
    blocks = getattr(model, "cond_blocks", None)
    if blocks is None:
        return []
    saved_depth = len({k.split(".")[1] for k in saved_keys if k.startswith("cond_blocks.")})
    return list(range(saved_depth, len(blocks)))


def flow_matching_loss(model: nn.Module, inputs: dict, generator: torch.Generator, time_sampler: TimeSampler,
                       cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample velocity loss and the sampled t, with per-sample text and reward dropout."""
    x0 = inputs["x"]
    b, device = x0.shape[0], x0.device
    t = time_sampler(b, generator=generator, device=device)
    noise = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype)
    sample = LinearPath().sample(x0, t, noise)
    r = len(cfg.reward_names)
    keep, drop_text = sample_condition_dropout(b, r, cfg.reward_dropout, cfg.text_dropout, generator, device=device)
    kwargs = {"rewards": inputs["rewards"], "reward_mask": inputs["reward_mask"] & keep} if r else {}
    if getattr(extract_model_from_parallel(model), "self_conditioning", False):  # the network inside DDP
        kwargs["previous_latents"] = self_conditioning_latents(model, sample.x_t, t, inputs, drop_text, kwargs,
                                                               cfg.self_conditioning_rate, generator)
    v = model(sample.x_t, t, inputs["text"], inputs["text_mask"], drop_text=drop_text, **kwargs)
    return velocity_loss(v, sample.target), t


def self_conditioning_latents(model: nn.Module, x_t: torch.Tensor, t: torch.Tensor, inputs: dict,
                              drop_text: torch.Tensor, kwargs: dict, rate: float,
                              generator: torch.Generator) -> torch.Tensor:
    """The MIRO authors' latent self-conditioning in training (their ``BaseLoss.latent_self_cond``): a first pass
    at the same x_t, t and condition, without gradient, whose final latents are kept for each sample with
    probability ``rate`` and zeroed otherwise, so the network learns both the first sampling step (zeros) and
    the later ones (the previous estimate's latents)."""
    with torch.no_grad():
        _, latents = model(x_t, t, inputs["text"], inputs["text_mask"], drop_text=drop_text, return_latents=True,
                           **kwargs)
    keep = torch.rand(x_t.shape[0], generator=generator, device=x_t.device) < rate
    return latents.detach() * keep.to(latents.dtype)[:, None, None]



def micro_batch_size(cfg: TrainConfig, world_size: int) -> int:
    per_step = cfg.batch_size // cfg.grad_accum
    if per_step % world_size:
        raise ConfigError(f"batch_size={cfg.batch_size}: must be divisible by grad_accum x processes = "
                          f"{cfg.grad_accum} x {world_size}")
    return per_step // world_size


def _frozen(module: Any, device: torch.device) -> Any:
    if isinstance(module, nn.Module):
        module.to(device).eval().requires_grad_(False)
    if getattr(module, "truncation_warnings", None) == "call":
        module.truncation_warnings = "once"  # long captions: one warning per run, not one per step
    return module


def _inspect_on_main(accelerator: Accelerator, cfg: TrainConfig, identity: dict | None) -> DatasetInfo:
    """The main process checks the data (keys included) and shares the result, or the error, with all."""
    result: list = [None]
    if accelerator.is_main_process:
        try:
            result = [inspect_dataset(cfg.data, cfg.reward_names, identity, accelerator.num_processes)]
        except (DataError, CacheError, FileNotFoundError) as err:
            result = [str(err) if isinstance(err, DataError) else f"{type(err).__name__}: {err}"]
    if accelerator.num_processes > 1:
        broadcast_object_list(result)
    if isinstance(result[0], str):
        raise DataError(result[0])
    return result[0]


def train(cfg: TrainConfig, components: Components | None = None) -> Path:
    """Train, checkpoint, and export ``<output_dir>/final``; returns the output folder.  ``components``
    defaults to ``build_components(cfg)``."""
    out = Path(cfg.output_dir or Path("runs") / cfg.name)
    cpu = use_cpu(cfg.cpu)
    precision = resolve_precision(cfg.mixed_precision, "cpu" if cpu or not torch.cuda.is_available() else "cuda")
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=precision,
        log_with=None if cfg.log_with == "none" else cfg.log_with,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=cfg.find_unused_parameters)],
    )
    try:
        check_launch(accelerator.num_processes)
        _train(accelerator, replace(cfg, mixed_precision=precision), components, out)
    except OSError as err:  # a full disk or a folder that became read-only while training: one line
        if err.errno not in STORAGE_ERRNOS:
            raise
        raise OutputError.from_os(err, f"run folder {out}") from err
    finally:
        accelerator.end_training()
        AcceleratorState._reset_state()  # the next run in this process (tests, hydra multirun) starts clean
    return out


def _train(accelerator: Accelerator, cfg: TrainConfig, comps: Components | None, out: Path) -> None:
    device, world, main = accelerator.device, accelerator.num_processes, accelerator.is_main_process
    if cfg.mixed_precision == "fp16" and device.type != "cuda":
        raise ConfigError("mixed_precision='fp16': needs a CUDA device (loss scaling); use bf16 or no on the CPU")
    micro = micro_batch_size(cfg, world)
    check_writable(out, "output_dir")  # before any work: a read-only run folder stops here
    file_log = setup_file_logging(out / "logs", main)
    try:
        _run(accelerator, cfg, comps, out, micro)
    finally:
        close_file_logging(file_log)


def _run(accelerator: Accelerator, cfg: TrainConfig, comps: Components | None, out: Path, micro: int) -> None:
    device, rank, world, main = accelerator.device, accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    if device.type == "cuda" and cfg.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    comps = comps or build_components(cfg)
    model = comps.model
    if cfg.freeze:
        freeze_parameters(model, cfg.freeze)
    model_rewards = list(getattr(model.config, "reward_names", []))
    if model_rewards != cfg.reward_names:
        raise ConfigError(f"reward_names={cfg.reward_names}: the model conditions on {model_rewards} (same names, same order)")
    te, ae = _frozen(comps.text_encoder, device), _frozen(comps.autoencoder, device)
    identity = cache_identity(te.identifier(), ae.identifier(), cfg.data.resolution) if cfg.data.cache else None
    info = _inspect_on_main(accelerator, cfg, identity)
    dataset = MiroDataset(cfg.data, info, micro, cfg.seed, rank, world)

    model.to(device)
    optimizer = build_optimizer(model, cfg.optim)
    ema = EMA(model, cfg.ema_decay, cfg.ema_warmup)
    fixed_text = 0
    if cfg.compile:
        model.compile(mode=cfg.compile_mode)
        # One text length for every batch: a CUDA graph per caption length otherwise, and with dynamic shapes
        # inductor's CPU backward of the U-Net failed on the second length seen (a stride assertion, torch 2.x).
        fixed_text = cfg.text_encoder.max_length
    model, optimizer = accelerator.prepare(model, optimizer)  # the EMA is saved by save_checkpoint itself

    start, samples_seen = 0, 0
    resume_from = _resume_on_main(accelerator, cfg.resume, out / "checkpoints")
    if resume_from is not None:
        check_resume_config(read_state(resume_from).get("config"), cfg, resume_from)  # before loading anything
        state = load_checkpoint(accelerator, resume_from, model=model, optimizer=optimizer, ema=ema)
        start, samples_seen = state["step"], state["samples_seen"]
        if (state["world_size"], state["micro_batch"], state["checkpoint_every"]) != (world, micro, cfg.checkpoint_every):
            log.warning("resuming with a different world size, micro batch or checkpoint interval than %s: the data "
                        "stream will not match the original run's", resume_from)
        log.info("resumed from %s at step %d", resume_from, start)
    if main:
        atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    if cfg.log_with != "none":
        accelerator.init_trackers(cfg.name)

    latent_shape = (ae.latent_channels, cfg.data.resolution // ae.downsample, cfg.data.resolution // ae.downsample)
    grid = SampleGrid(cfg.sample, cfg.reward_names, te, latent_shape, device) if main and cfg.sample.every else None
    compute_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.mixed_precision, torch.float32)
    meter = Meter(device, peak_flops(device, cfg.peak_tflops, compute_dtype) if main else None)
    time_sampler = TimeSampler(**asdict(cfg.time))
    keys_log = (out / "logs" / f"keys-rank{rank}.txt").open("a") if cfg.log_keys else None
    progress = tqdm(total=cfg.max_steps, initial=start, disable=not (main and cfg.progress_bar), desc=cfg.name)
    data_iter, bad_steps = None, 0
    end = min(cfg.max_steps, start + cfg.stop_after) if cfg.stop_after else cfg.max_steps

    for step in range(start, end):
        if data_iter is None or step % cfg.checkpoint_every == 0:  # a new data segment (module docstring)
            data_iter = iter(make_loader(dataset.with_segment(step), pin_memory=device.type == "cuda"))
        generator = torch.Generator(device).manual_seed(derive_seed(cfg.seed, step, rank, 1))
        torch.manual_seed(derive_seed(cfg.seed, step, rank, 2))
        model.train()
        for i in range(cfg.grad_accum):
            tic = time.perf_counter()
            batch = next(data_iter)
            meter.data_wait += time.perf_counter() - tic
            inputs = model_inputs(batch, device, te, ae, generator, cfg.latent_sampling)
            if fixed_text:
                inputs["text"], inputs["text_mask"] = pad_text_to(inputs["text"], inputs["text_mask"], fixed_text)
            sync = i == cfg.grad_accum - 1
            with nullcontext() if sync else accelerator.no_sync(model):
                with accelerator.autocast():
                    per_sample, t = flow_matching_loss(model, inputs, generator, time_sampler, cfg)
                accelerator.backward(per_sample.mean() / cfg.grad_accum)
            meter.add_micro(per_sample, t, batch["skipped"], batch_training_flops(comps.model, inputs["x"], inputs["text"]))
            if keys_log is not None:
                keys_log.write("\n".join(batch["keys"]) + "\n")
        lr = lr_at(step, cfg.optim, cfg.max_steps)
        set_lr(optimizer, lr)
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip or float("inf"))
        # fp16's loss scaler skips overflowing steps itself; otherwise a NaN/inf gradient skips the step here
        finite = accelerator.scaler is not None or bool(torch.isfinite(grad_norm))
        if finite:
            optimizer.step()
            bad_steps = 0
        else:
            bad_steps += 1
            log.warning("step %d: non-finite gradient norm, update skipped (%d in a row)", step + 1, bad_steps)
            if bad_steps >= cfg.max_nonfinite_steps:
                raise FloatingPointError(f"{bad_steps} steps in a row with a non-finite gradient (last: step {step + 1}); "
                                         "lower optim.lr, raise optim.warmup_steps, or resume=latest from the last checkpoint")
        optimizer.zero_grad(set_to_none=True)
        if finite and not accelerator.optimizer_step_was_skipped:
            ema.update(accelerator.unwrap_model(model))
        meter.add_step(grad_norm)
        samples_seen += cfg.batch_size
        done = step + 1
        progress.update(1)

        if done % cfg.log_every == 0 or done == end:
            metrics = meter.flush(accelerator, lr)
            if info.num_samples:
                metrics["data/epoch"] = samples_seen / info.num_samples
            accelerator.log(metrics, step=done)
            if main:
                progress.set_postfix_str(f"loss {metrics['train/loss']:.4f}", refresh=False)
                log.info(status_line(done, cfg.max_steps, metrics))
        if done % cfg.checkpoint_every == 0 or done == end:
            tic = time.perf_counter()
            state = {"samples_seen": samples_seen, "seed": cfg.seed, "world_size": world, "micro_batch": micro,
                     "grad_accum": cfg.grad_accum, "checkpoint_every": cfg.checkpoint_every, "data_segment": done,
                     "config": OmegaConf.to_container(OmegaConf.structured(cfg))}
            save_checkpoint(accelerator, out / "checkpoints", done, state, cfg.checkpoints_total_limit,
                            model=model, optimizer=optimizer, ema=ema)
            meter.pause(time.perf_counter() - tic)
        if main and cfg.export_every and done % cfg.export_every == 0 and done != cfg.max_steps:
            tic = time.perf_counter()  # a pipeline per stage of training, for learning curves
            export_final(ema.model, out / "pipelines" / f"step-{done:07d}", cfg, te, ae, info)
            meter.pause(time.perf_counter() - tic)
        if grid is not None and done % cfg.sample.every == 0:
            tic = time.perf_counter()
            _log_grid(accelerator, grid, ema.model, ae, out / "samples", done)
            meter.pause(time.perf_counter() - tic)

    progress.close()
    if keys_log is not None:
        keys_log.close()
    if main and end == cfg.max_steps:
        export_final(ema.model, out / "final", cfg, te, ae, info)
    accelerator.wait_for_everyone()


def _resume_on_main(accelerator: Accelerator, resume: str, folder: Path) -> Path | None:
    """The main process picks (and verifies) the checkpoint and shares the choice, or the error, with all."""
    result: list = [None]
    if accelerator.is_main_process:
        remove_stale_temps(folder)
        try:
            result = [str(p) if (p := resolve_resume(resume, folder)) is not None else None]
        except (CheckpointError, ConfigError) as err:
            result = [err]
    if accelerator.num_processes > 1:
        broadcast_object_list(result)
    if isinstance(result[0], Exception):
        raise result[0]
    return Path(result[0]) if result[0] is not None else None


# settings a checkpoint cannot be resumed with when they changed (the network and what it is fed)
_MUST_MATCH = ("model", "reward_names", "text_encoder", "autoencoder", "data.resolution", "freeze")
_FREE = ("resume", "stop_after", "progress_bar", "output_dir", "name", "log_every", "log_with", "sample", "export_every",
         "max_steps", "checkpoints_total_limit", "cpu", "compile", "peak_tflops", "recommended_reward_targets", "compile_mode",
         "init_from")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        return {k: v for key, sub in d.items() for k, v in _flatten(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: d}


def check_resume_config(saved: dict | None, cfg: TrainConfig, checkpoint: Path) -> None:
    """Resuming into the same run folder with changed settings: a changed network (or what it is fed) stops
    with a ConfigError; other changes are listed in a warning."""
    if saved is None:
        return
    old, new = _flatten(saved), _flatten(OmegaConf.to_container(OmegaConf.structured(cfg)))
    # a key the checkpoint does not know was added to the schema after it was written: at the schema's default
    # it means the behaviour the run was trained with (e.g. model.token_mixer=attention), so it is no change
    defaults = _flatten(OmegaConf.to_container(OmegaConf.structured(type(cfg))))
    added_at_default = {k for k in new.keys() - old.keys() if k in defaults and new[k] == defaults[k]}
    changed = sorted(k for k in (old.keys() | new.keys()) - added_at_default
                     if old.get(k, "<unset>") != new.get(k, "<unset>"))
    under = lambda k, names: any(k == n or k.startswith(n + ".") for n in names)  # noqa: E731
    fatal = [k for k in changed if under(k, _MUST_MATCH)]
    if fatal:
        diff = ", ".join(f"{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}" for k in fatal[:6])
        raise ConfigError(f"resume from {checkpoint}: the checkpoint was trained with other settings ({diff}); resume "
                          "with the original settings, or train into a new output_dir")
    noted = [k for k in changed if not under(k, _FREE)]
    if noted:
        log.warning("resuming from %s with changed settings: %s", checkpoint,
                    ", ".join(f"{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}" for k in noted))


def _log_grid(accelerator: Accelerator, grid: SampleGrid, model: nn.Module, ae: Any, folder: Path, step: int) -> None:
    image = grid.render(model, ae)
    path = save_grid(image, folder, step, grid.describe())
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({"samples": image[None]}, step=step, dataformats="NHWC")
        elif hasattr(tracker, "log_images"):
            tracker.log_images({"samples": [image]}, step=step)
    log.info("sample grid: %s", path)


def export_final(model: nn.Module, folder: Path, cfg: TrainConfig, te: Any, ae: Any, info: DatasetInfo) -> None:
    """The sampling stage's pipeline folder (``MiroPipeline.save_pretrained``: the EMA transformer, the
    scheduler, the encoder configs, num_bins) plus ``miro_training.json`` describing how it was trained."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from miro.sampling.pipeline import MiroPipeline

    pipe = MiroPipeline(transformer=model, scheduler=FlowMatchEulerDiscreteScheduler(shift=cfg.sample.shift),
                        text_encoder_config=cfg.text_encoder, autoencoder_config=cfg.autoencoder,
                        num_bins=info.num_bins or None, text_encoder=te, autoencoder=ae,
                        recommended_reward_targets=cfg.recommended_reward_targets)
    meta = {"text_encoder": te.identifier(), "autoencoder": ae.identifier(), "reward_names": cfg.reward_names,
            "num_bins": info.num_bins, "resolution": cfg.data.resolution, "max_steps": cfg.max_steps,
            "ema_decay": cfg.ema_decay, "config": OmegaConf.to_container(OmegaConf.structured(cfg))}
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder, directory=True) as tmp:  # a sampler never sees a half-written pipeline
        pipe.save_pretrained(tmp)
        (tmp / "miro_training.json").write_text(json.dumps(meta, indent=1))
