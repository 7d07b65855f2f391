"""``python -m miro.train.autoencoder data.shards=DIR out=DIR``: train a small KL autoencoder on a set of shards.

Why a project-trained autoencoder: in the shapes world at 32 px most of the pixel variance is degradation
(noise, JPEG blocks, clutter) that no caption explains, and a pixel-space flow model spends its loss on it
(docs/text_conditioning.md, sections 3 and 19).  A diffusers ``AutoencoderKL`` compresses each 4 x 4 pixel cell
into a few channels: the outlines and colours survive, per-pixel noise does not, and the flow model then works on
64 latent tokens instead of 1,024 pixels.  The result is an ordinary ``save_pretrained`` folder, loaded for
training and sampling by ``autoencoder.kind=kl autoencoder.path=OUT`` (``miro.models.autoencoders.KLAutoencoder``),
with ``scaling_factor`` set so that the normalised training latents have unit standard deviation (the
``scale`` normalisation, as SD's 0.18215 was chosen).

The images are decoded once into memory (uint8, 3 KB per image at 32 px: fine for the small worlds this is for);
the last ``val_images`` are held out and reported.  Checkpoints every ``checkpoint_every`` steps make a killed run
resumable (``resume=true``, the default): the weights, the optimiser, the step and the random state.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from miro.contracts.shards import find_shards
from miro.data.cache import decoded_samples
from miro.data.transforms import uint8_to_unit
from miro.utils.config import ConfigError, entry_point, require, require_choice
from miro.utils.precision import PRECISIONS, resolve_precision

log = logging.getLogger("miro.train.autoencoder")

CHECKPOINT = "checkpoint.pt"
REPORT = "training.json"


@dataclass
class AutoencoderDataConfig:
    shards: str = "???"       # a directory, a glob or a brace range of NAME-NNNNNN.tar
    resolution: int = 32

    def __post_init__(self):
        require(self.resolution >= 8, "data.resolution", self.resolution, "must be >= 8")


@dataclass
class AutoencoderTrainConfig:
    out: str = "???"
    data: AutoencoderDataConfig = field(default_factory=AutoencoderDataConfig)
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64])  # one level per entry; downsample 2^(n-1)
    layers_per_block: int = 1
    latent_channels: int = 8
    norm_num_groups: int = 32
    steps: int = 2500
    batch_size: int = 64
    lr: float = 1.0e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1    # cosine from lr down to lr x this
    kl_weight: float = 1.0e-6    # small: a near-deterministic encoder whose latents the flow model can still sample around
    grad_clip: float = 1.0
    val_images: int = 512
    checkpoint_every: int = 500
    log_every: int = 100
    seed: int = 0
    mixed_precision: str = "auto"
    threads: int = 0             # torch threads (0: torch's default)
    resume: bool = True          # continue from out/checkpoint.pt when it is there
    overwrite: bool = False      # replace a finished autoencoder in out

    def __post_init__(self):
        require(bool(self.block_out_channels) and all(c > 0 for c in self.block_out_channels),
                "block_out_channels", self.block_out_channels, "must be a non-empty list of positive widths")
        require(all(c % self.norm_num_groups == 0 for c in self.block_out_channels) if self.norm_num_groups > 0
                else False, "norm_num_groups", self.norm_num_groups,
                f"must be positive and divide every block width {self.block_out_channels}")
        down = 2 ** (len(self.block_out_channels) - 1)
        require(self.data.resolution % down == 0, "data.resolution", self.data.resolution,
                f"must be a multiple of the downsample factor {down} (from {len(self.block_out_channels)} levels)")
        for key in ("layers_per_block", "latent_channels", "steps", "batch_size", "checkpoint_every", "log_every"):
            require(getattr(self, key) > 0, key, getattr(self, key), "must be a positive integer")
        for key in ("warmup_steps", "val_images", "threads"):
            require(getattr(self, key) >= 0, key, getattr(self, key), "must be >= 0")
        require(self.lr > 0, "lr", self.lr, "must be > 0")
        require(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", self.min_lr_ratio, "must be in [0, 1]")
        require(self.kl_weight >= 0, "kl_weight", self.kl_weight, "must be >= 0")
        require(self.grad_clip > 0, "grad_clip", self.grad_clip, "must be > 0")
        require_choice("mixed_precision", self.mixed_precision, PRECISIONS)

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


def build_autoencoder_kl(cfg: AutoencoderTrainConfig):
    """A fresh diffusers ``AutoencoderKL`` of this config's shape (seeded by the caller)."""
    from diffusers import AutoencoderKL

    n = len(cfg.block_out_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block, latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.norm_num_groups, sample_size=cfg.data.resolution,
    )


def load_images(spec: str, resolution: int) -> tuple[torch.Tensor, dict]:
    """Every decodable image of the shards as uint8 ``[N, 3, R, R]``, decoded and resized exactly as the feature
    cache and training decode them; undecodable samples are counted, not fatal; a shard with none is an error."""
    shards, _ = find_shards(spec)
    images, skipped, damaged = [], {}, []
    for shard in shards:
        before = len(images)
        images.extend(img for _, _, img in decoded_samples(shard, resolution, skipped, [], damaged))
        if len(images) == before:
            raise ConfigError(f"data.shards: {shard} has no decodable image")
    return torch.stack(images), {"shards": len(shards), "images": len(images), "skipped": len(skipped),
                                 "damaged_shards": len(damaged)}


def lr_factor(step: int, cfg: AutoencoderTrainConfig) -> float:
    """Linear warm-up, then cosine from 1 to ``min_lr_ratio`` at ``steps``."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    progress = min(step, cfg.steps) / cfg.steps
    return warm * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def reconstruction_loss(rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 + MSE in [-1, 1]: L1 keeps edges sharp, MSE keeps the colours unbiased."""
    diff = rec.float() - x
    return diff.abs().mean() + diff.pow(2).mean()


@torch.no_grad()
def evaluate(ae, images: torch.Tensor, batch: int = 256) -> dict:
    """Reconstruction from the posterior mean: mean L1 and MSE in [-1, 1], and PSNR in dB on [0, 1]."""
    l1 = mse = 0.0
    for i in range(0, len(images), batch):
        x = uint8_to_unit(images[i:i + batch])
        rec = ae.decode(ae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        l1 += (rec - x).abs().mean().item() * len(x)
        mse += (rec - x).pow(2).mean().item() * len(x)
    n = max(len(images), 1)
    return {"l1": l1 / n, "mse": mse / n, "psnr_db": 10 * math.log10(4.0 / max(mse / n, 1e-12))}


@torch.no_grad()
def latent_scale(ae, images: torch.Tensor, batch: int = 256, limit: int = 4096) -> float:
    """1 / std of the posterior means of (up to ``limit``) training images: the ``scaling_factor``."""
    z = torch.cat([ae.encode(uint8_to_unit(images[i:i + batch])).latent_dist.mean
                   for i in range(0, min(len(images), limit), batch)])
    return float(1.0 / z.float().std().clamp(min=1e-6))


def train_autoencoder(cfg: AutoencoderTrainConfig, progress: bool = True) -> dict:
    """Train (or resume) and write ``out`` (``save_pretrained`` + ``training.json``); returns the report."""
    out = Path(cfg.out)
    report_path = out / REPORT
    if report_path.exists() and not cfg.overwrite:
        raise ConfigError(f"out={cfg.out!r}: holds a finished autoencoder ({REPORT}); pass overwrite=true to replace it")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    images, data_info = load_images(cfg.data.shards, cfg.data.resolution)
    n_val = min(cfg.val_images, len(images) // 2)
    train, val = images[: len(images) - n_val], images[len(images) - n_val:]
    precision = resolve_precision(cfg.mixed_precision, "cpu")
    if precision == "fp16":
        raise ConfigError("mixed_precision='fp16': needs CUDA; this trainer runs on the CPU (use bf16 or no)")

    torch.manual_seed(cfg.seed)
    ae = build_autoencoder_kl(cfg)
    opt = torch.optim.AdamW(ae.parameters(), lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    step, history = 0, []
    ckpt = out / CHECKPOINT
    if cfg.resume and ckpt.exists() and not cfg.overwrite:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        if state["config"] != _shape_keys(cfg):
            raise ConfigError(f"out={cfg.out!r}: its checkpoint was made with {state['config']}, not "
                              f"{_shape_keys(cfg)}; use another out or overwrite=true")
        ae.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        step, history = state["step"], state["history"]
        log.info("resumed from %s at step %d", ckpt, step)
    out.mkdir(parents=True, exist_ok=True)

    autocast = torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16")
    if step == 0:  # the untrained reconstruction, so the history shows what training bought
        ae.eval()
        history.append({"step": 0, **_rounded(evaluate(ae, val))})
    ae.train()
    start, seen = time.perf_counter(), 0
    bar = _progress(cfg.steps, step) if progress else None
    while step < cfg.steps:
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(step, cfg)
        x = uint8_to_unit(train[torch.randint(len(train), (cfg.batch_size,), generator=gen)])
        with autocast:
            post = ae.encode(x).latent_dist
            rec = ae.decode(post.sample()).sample
        loss = reconstruction_loss(rec, x) + cfg.kl_weight * post.kl().float().mean()
        if not torch.isfinite(loss):
            raise RuntimeError(f"step {step}: non-finite loss {loss.item()}; lower lr (now {cfg.lr})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ae.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        seen += cfg.batch_size
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % cfg.log_every == 0 or step == cfg.steps:
            ae.eval()
            row = {"step": step, "loss": round(loss.item(), 5), **_rounded(evaluate(ae, val)),
                   "images_per_s": round(seen / (time.perf_counter() - start), 1)}
            ae.train()
            history.append(row)
            log.info("%s", row)
        if step % cfg.checkpoint_every == 0 and step < cfg.steps:
            _save_checkpoint(ckpt, ae, opt, gen, step, history, cfg)
    if bar is not None:
        bar.close()

    ae.eval()
    ae.register_to_config(scaling_factor=latent_scale(ae, train))
    ae.save_pretrained(out)
    report = {"config": asdict(cfg), "data": {**data_info, "train_images": len(train), "val_images": len(val)},
              "precision": precision, "downsample": cfg.downsample, "parameters": sum(p.numel() for p in ae.parameters()),
              "scaling_factor": ae.config.scaling_factor, "val": _rounded(evaluate(ae, val)), "history": history}
    report_path.write_text(json.dumps(report, indent=1))
    ckpt.unlink(missing_ok=True)
    return report


def _shape_keys(cfg: AutoencoderTrainConfig) -> dict:
    """What a checkpoint must share with the config that resumes it."""
    return {"block_out_channels": list(cfg.block_out_channels), "layers_per_block": cfg.layers_per_block,
            "latent_channels": cfg.latent_channels, "norm_num_groups": cfg.norm_num_groups,
            "resolution": cfg.data.resolution, "steps": cfg.steps, "seed": cfg.seed}


def _save_checkpoint(path: Path, ae, opt, gen, step: int, history: list, cfg: AutoencoderTrainConfig) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": ae.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
                "torch_rng": torch.get_rng_state(), "step": step, "history": history, "config": _shape_keys(cfg)}, tmp)
    tmp.replace(path)  # a kill while writing leaves the previous checkpoint intact


def _rounded(d: dict) -> dict:
    return {k: round(v, 5) for k, v in d.items()}


def _progress(total: int, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="autoencoder", unit="step")


def run(cfg: AutoencoderTrainConfig) -> dict:
    report = train_autoencoder(cfg)
    v = report["val"]
    print(f"autoencoder: {cfg.out} (downsample {report['downsample']}, {cfg.latent_channels} channels, "
          f"{report['parameters'] / 1e6:.2f}M parameters); held-out PSNR {v['psnr_db']:.2f} dB, MSE {v['mse']:.5f}; "
          f"scaling_factor {report['scaling_factor']:.4f}")
    return report


main = entry_point("autoencoder_train", AutoencoderTrainConfig, run, errors=(FileNotFoundError, RuntimeError))


if __name__ == "__main__":
    main()
