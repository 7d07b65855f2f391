"""Training throughput benchmark, side by side in one run (results: docs/benchmarks/train_model.md).

Part ``model``: images/s and achieved FLOP/s of MiroTransformer against diffusers' DiTTransformer2DModel of
(nearly) equal parameter count, both in the same minimal loop (forward + flow loss + backward + AdamW step,
same batch, same resolution and tokens, fp32), and the fraction of this machine's measured square-matmul
FLOP/s that each achieves (MFU).  FLOPs of both models are counted the same way: FlopCounterMode over one
training step with attention run as explicit matmuls (the CPU SDPA kernel is invisible to the counter).

    python scripts/bench_train.py --part model                      # tiny preset, 32 px pixel space
    python scripts/bench_train.py --part model --preset small --image-size 16 --in-channels 4 --batch 16
    python scripts/bench_train.py --part model --device cuda --dtype bfloat16 --batch 256   # a GPU re-run

``--device cuda`` times both contenders on the GPU (synchronised before every clock read); ``--dtype
bfloat16`` runs both steps under bf16 autocast (fp32 master weights and loss, as ``mixed_precision=bf16``
trains) and takes the bf16 matmul rate as the peak of MFU.

Part ``data`` (results: docs/benchmarks/train_data.md): is the data pipeline ever the bottleneck?  The
training stream's samples/s with ONE DataLoader worker (decode + crop + reward join, and from the feature
cache; shapes-like 32 px PNGs and web-like 256 px JPEGs written to a temp folder) against the images/s of real
training steps with ONE thread (the tiny demo preset at 32 px, with cached text and with MiniLM in the loop;
the small preset on 4x32x32 latents), and the data-wait fraction of a real ``miro.train`` demo run.
Target: loader >= 3x consumption.

    python scripts/bench_train.py --part data                       # ~3-5 min on 2 cores
    python scripts/bench_train.py --part data --data-quick

Part ``precision`` (results: BENCHMARKS.md): bf16 autocast against fp32 for one training setup, side by
side in one run.  Images/s of the full step (interleaved rounds), then the loss curves of the same run
(same init, batches, times and noise) in both precisions next to a second fp32 run that only differs in
its noise seed, so "agree within noise" is measured against that seed-to-seed spread.  Also prints what
``mixed_precision=auto`` picks here.

    python scripts/bench_train.py --part precision                  # tiny preset, 32 px, batch 32
    python scripts/bench_train.py --part precision --preset small --image-size 16 --in-channels 4 --curve-steps 100
    python scripts/bench_train.py --part precision --device cuda --preset small --batch 128

Part ``compile``: our training step eager against ``torch.compile``'d (what ``miro.train compile=true
compile_mode=...`` runs), same init and batches, with the speed ratio and the losses' agreement.  On a GPU the
small models here are bound by kernel launches, which CUDA graphs (``reduce-overhead``, its default there) remove:

    python scripts/bench_train.py --part compile --device cuda --dtype bfloat16 --preset tiny_unet \
        --set conv_scale_shift=true --batch 32

Part ``backbones``: the model presets of ``--presets`` (each ``preset[:key=value...]``) in the same minimal loop,
side by side: the DiT (``tiny_unet`` with adaGN, the shipped shapes reference's network) against the U-Net
backbone (``tiny_sd_unet``, diffusers' UNet2DConditionModel on the same condition set, ``model.backbone: unet``),
with counted FLOPs and MFU; ``--dtype bfloat16`` times both under autocast as ``mixed_precision=bf16`` trains:

    python scripts/bench_train.py --part backbones --threads 1 --dtype bfloat16

Parts are functions registered in ``PARTS``; each returns markdown.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from miro.flow import LinearPath, TimeSampler, velocity_loss  # noqa: E402
from miro.models.flops import counted_flops, measure_matmul_flops, training_flops  # noqa: E402
from miro.train.config import COMPILE_MODES  # noqa: E402
from miro.utils.config import CONFIG_DIR  # noqa: E402

CONF = CONFIG_DIR  # the shipped hydra configs (miro/conf)


# ---------------------------------------------------------------------------------------------- helpers
@dataclass
class Contender:
    """A model plus a closure that runs one full training step on a fixed batch."""

    name: str
    model: torch.nn.Module
    step: Callable[[], float]
    batch: int
    device: torch.device = torch.device("cpu")

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


def make_step(model: torch.nn.Module, forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
              x0: torch.Tensor, lr: float = 1e-4, seed: int = 0,
              autocast: torch.dtype | None = None, fused: bool | None = None) -> Callable[[], float]:
    """forward(x_t, t) -> velocity; the step draws t and noise (on x0's device), applies the flow loss in fp32,
    backward, AdamW.  ``autocast``: run the forward under autocast to that dtype, as the training loop does;
    ``fused``: AdamW's fused kernel (the training loop's choice on CUDA)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, fused=fused)
    path, times = LinearPath(), TimeSampler("logit_normal")
    gen = torch.Generator(device=x0.device).manual_seed(seed)

    def step() -> float:
        t = times(x0.shape[0], generator=gen, device=x0.device)
        s = path.sample(x0, t, torch.randn(x0.shape, generator=gen, device=x0.device))
        with torch.autocast(x0.device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            v = forward(s.x_t, t)
        loss = velocity_loss(v.float(), s.target).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def time_contenders(
    contenders: list[Contender], steps: int, rounds: int, warmup: int
) -> dict[str, tuple[float, float]]:
    """Median (wall, process-CPU) seconds per step of each contender, measured in interleaved rounds.

    Interleaving spreads a shared machine's load over all contenders alike; the CPU-time figure is also
    insensitive to time spent descheduled (equal to wall time on a quiet machine with one thread)."""
    for c in contenders:
        for _ in range(warmup):
            c.step()
    wall: dict[str, list[float]] = {c.name: [] for c in contenders}
    cpu: dict[str, list[float]] = {c.name: [] for c in contenders}
    for _ in range(rounds):
        for c in contenders:
            _sync(c.device)
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                c.step()
            _sync(c.device)
            wall[c.name].append((time.perf_counter() - w0) / steps)
            cpu[c.name].append((time.process_time() - c0) / steps)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in wall}


def _sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that a clock read measures the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------- contenders
def build_miro(preset: str, in_channels: int, image_size: int, text_dim: int, text_len: int, batch: int,
               p_reward: float = 0.1, p_text: float = 0.1, overrides: list[str] | None = None,
               noise_seed: int = 0, device: str = "cpu", autocast: torch.dtype | None = None,
               compile_mode: str | None = None, fused: bool | None = None) -> Contender:
    """Our model from miro/conf/model/<preset>.yaml (plus ``key=value`` overrides) with a fixed random batch,
    conditioned on five rewards (as every run of the project: the demo's and the paper's).  The batch is drawn
    on the CPU (the same numbers on every device), then moved.  ``compile_mode``: torch.compile the model in
    place with that mode, as ``miro.train`` does with ``compile=true``; ``fused``: AdamW's fused kernel."""
    from miro.models import sample_condition_dropout
    from miro.models.config import build_model, load_preset

    cfg = load_preset(preset, overrides or [])
    torch.manual_seed(0)
    model = build_model(cfg, reward_names=[f"reward{i}" for i in range(5)], text_dim=text_dim, in_channels=in_channels, sample_size=image_size).train()
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(batch, in_channels, image_size, image_size, generator=gen)
    text = torch.randn(batch, text_len, text_dim, generator=gen)
    lengths = torch.randint(2, text_len + 1, (batch,), generator=gen)
    text_mask = torch.arange(text_len)[None] < lengths[:, None]
    rewards = torch.rand(batch, model.num_rewards, generator=gen)
    reward_mask, drop_text = sample_condition_dropout(batch, model.num_rewards, p_reward, p_text, generator=gen)
    dev = torch.device(device)
    model, x0, text, text_mask, rewards, reward_mask, drop_text = (
        v.to(dev) for v in (model, x0, text, text_mask, rewards, reward_mask, drop_text))

    def forward(x_t, t):
        return model(x_t, t, text, text_mask, rewards if model.num_rewards else None,
                     reward_mask if model.num_rewards else None, drop_text)

    name = f"{type(model).__name__} ({', '.join([preset, *(overrides or [])])})"
    if compile_mode is not None:
        model.compile(mode=compile_mode)
        name = f"{name}, compiled ({compile_mode})"
    step = make_step(model, forward, x0, seed=noise_seed, autocast=autocast, fused=fused)
    return Contender(name, model, step, batch, dev)


def dit_params(num_layers: int, heads: int, head_dim: int, in_channels: int, image_size: int, patch: int,
               num_classes: int) -> int:
    from diffusers import DiTTransformer2DModel

    with torch.device("meta"):
        m = DiTTransformer2DModel(num_attention_heads=heads, attention_head_dim=head_dim, in_channels=in_channels,
                                  out_channels=in_channels, num_layers=num_layers, sample_size=image_size,
                                  patch_size=patch, num_embeds_ada_norm=num_classes)
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def build_dit_peer(target_params: int, heads: int, head_dim: int, in_channels: int, image_size: int, patch: int,
                   batch: int, num_classes: int = 10, device: str = "cpu",
                   autocast: torch.dtype | None = None) -> Contender:
    """diffusers' DiT (adaLN-Zero, class-conditional) with our head size and about our width (heads +- 1),
    and the depth that brings its trainable parameter count closest to ``target_params``."""
    from diffusers import DiTTransformer2DModel

    best = None
    for h in range(max(1, heads - 1), heads + 2):
        for layers in range(1, 97):
            n = dit_params(layers, h, head_dim, in_channels, image_size, patch, num_classes)
            if best is None or abs(n - target_params) < abs(best[0] - target_params):
                best = (n, layers, h)
            if n > target_params:
                break
    _, layers, heads = best
    torch.manual_seed(0)
    model = DiTTransformer2DModel(num_attention_heads=heads, attention_head_dim=head_dim, in_channels=in_channels,
                                  out_channels=in_channels, num_layers=layers, sample_size=image_size,
                                  patch_size=patch, num_embeds_ada_norm=num_classes).train()
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(batch, in_channels, image_size, image_size, generator=gen)
    labels = torch.randint(num_classes, (batch,), generator=gen)
    dev = torch.device(device)
    model, x0, labels = model.to(dev), x0.to(dev), labels.to(dev)

    def forward(x_t, t):
        return model(x_t, timestep=t * 1000, class_labels=labels, return_dict=False)[0]

    name = f"diffusers DiTTransformer2DModel ({layers} layers x {heads * head_dim} wide)"
    return Contender(name, model, make_step(model, forward, x0, autocast=autocast), batch, dev)


# ---------------------------------------------------------------------------------------------- parts
def _autocast(args: argparse.Namespace) -> torch.dtype | None:
    return None if args.dtype == "float32" else getattr(torch, args.dtype)


def _where(args: argparse.Namespace) -> str:
    if args.device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(torch.device(args.device))}, torch {torch.__version__}"
    return f"{args.threads} threads"


def part_model(args: argparse.Namespace) -> str:
    torch.set_num_threads(args.threads)
    low = _autocast(args)
    ours = build_miro(args.preset, args.in_channels, args.image_size, args.text_dim, args.text_len, args.batch,
                      overrides=args.set, device=args.device, autocast=low)
    cfg = ours.model.config
    peer = build_dit_peer(ours.params, cfg.num_heads, cfg.width // cfg.num_heads, args.in_channels,
                          args.image_size, cfg.patch_size, args.batch, device=args.device, autocast=low)
    contenders = [ours, peer]
    flops = {c.name: counted_flops(c.step) for c in contenders}
    analytic = training_flops(cfg, args.image_size, args.image_size, args.text_len) * args.batch
    peak_dtype = low or torch.float32

    def measure_peak() -> float:
        return measure_matmul_flops(size=args.matmul_size, dtype=peak_dtype, device=args.device,
                                    seconds=args.matmul_seconds)

    peak = measure_peak()
    seconds = time_contenders(contenders, args.steps, args.rounds, args.warmup)
    peak = max(peak, measure_peak())

    tokens = (args.image_size // cfg.patch_size) ** 2
    precision = "fp32" if low is None else f"{args.dtype} autocast"
    lines = [
        f"### Model training step: MiroTransformer vs diffusers DiT (equal parameters), {precision}, {_where(args)}",
        "",
        f"Batch {args.batch}, input {args.in_channels}x{args.image_size}x{args.image_size} "
        f"(patch {cfg.patch_size}, {tokens} image tokens); ours also reads {args.text_len} text tokens "
        f"({args.text_dim}-d) and {ours.model.num_rewards} reward tokens, DiT a class label.  "
        f"Median of {args.rounds} interleaved rounds of {args.steps} steps after {args.warmup} warm-up steps.  "
        f"Peak = best square {args.matmul_size}^3 {peak_dtype} matmul rate measured in the same run: "
        f"{peak / 1e9:.1f} GFLOP/s.",
        "",
        "| model | params | GFLOP / step | s / step | images/s | images / CPU-s | achieved GFLOP/s | MFU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in contenders:
        wall, cpu = seconds[c.name]
        achieved = flops[c.name] / wall
        lines.append(f"| {c.name} | {c.params / 1e6:.2f}M | {flops[c.name] / 1e9:.2f} | {wall:.4f} | "
                     f"{c.batch / wall:.1f} | {c.batch / cpu:.1f} | {achieved / 1e9:.1f} | {achieved / peak:.1%} |")
    (ours_wall, ours_cpu), (peer_wall, peer_cpu) = seconds[ours.name], seconds[peer.name]
    lines += [
        "",
        f"- images/s ratio (ours / DiT): **{peer_wall / ours_wall:.2f}x** wall-clock, {peer_cpu / ours_cpu:.2f}x per "
        f"CPU-second (target >= 1.0x); achieved FLOP/s ratio: "
        f"{(flops[ours.name] / ours_wall) / (flops[peer.name] / peer_wall):.2f}x.",
        f"- our analytic training FLOPs ({analytic / 1e9:.3f} G/step) vs counted "
        f"({flops[ours.name] / 1e9:.3f} G/step): {analytic / flops[ours.name]:.3f}.",
    ]
    return "\n".join(lines)


def part_backbones(args: argparse.Namespace) -> str:
    torch.set_num_threads(args.threads)
    low = _autocast(args)
    contenders = []
    for spec in args.presets.split(","):
        preset, *overrides = spec.split(":")
        contenders.append(build_miro(preset, args.in_channels, args.image_size, args.text_dim, args.text_len,
                                     args.batch, overrides=overrides, device=args.device, autocast=low))
    flops = {c.name: counted_flops(c.step) for c in contenders}
    peak_dtype = low or torch.float32
    peak = measure_matmul_flops(size=args.matmul_size, dtype=peak_dtype, device=args.device,
                                seconds=args.matmul_seconds)
    seconds = time_contenders(contenders, args.steps, args.rounds, args.warmup)
    peak = max(peak, measure_matmul_flops(size=args.matmul_size, dtype=peak_dtype, device=args.device,
                                          seconds=args.matmul_seconds))
    precision = "fp32" if low is None else f"{args.dtype} autocast"
    lines = [
        f"### Backbones' training step, {precision}, {_where(args)}",
        "",
        f"Batch {args.batch}, input {args.in_channels}x{args.image_size}x{args.image_size}, {args.text_len} text "
        f"tokens ({args.text_dim}-d), five reward tokens; forward + flow loss + backward + AdamW.  Median of "
        f"{args.rounds} interleaved rounds of {args.steps} steps after {args.warmup} warm-up steps.  Peak = best "
        f"square {args.matmul_size}^3 {peak_dtype} matmul rate in the same run: {peak / 1e9:.1f} GFLOP/s.",
        "",
        "| model | params | GFLOP / step | s / step | images/s | images / CPU-s | MFU | images/s vs first |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    first = seconds[contenders[0].name][0]
    for c in contenders:
        wall, cpu = seconds[c.name]
        lines.append(f"| {c.name} | {c.params / 1e6:.2f}M | {flops[c.name] / 1e9:.2f} | {wall:.4f} | "
                     f"{c.batch / wall:.1f} | {c.batch / cpu:.1f} | {flops[c.name] / wall / peak:.1%} | "
                     f"{first / wall:.2f}x |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- precision part
def _loss_curve(args: argparse.Namespace, autocast: bool, noise_seed: int) -> tuple[list[float], float]:
    """Per-step losses of a short training run from a fixed init on fixed data, and its seconds per step."""
    contender = build_miro(args.preset, args.in_channels, args.image_size, args.text_dim, args.text_len,
                           args.batch, overrides=args.set, noise_seed=noise_seed, device=args.device,
                           autocast=torch.bfloat16 if autocast else None)
    losses, start = [], time.perf_counter()
    for _ in range(args.curve_steps):
        losses.append(contender.step())
    return losses, (time.perf_counter() - start) / args.curve_steps


def part_precision(args: argparse.Namespace) -> str:
    from miro.utils.precision import cpu_bf16_speedup, resolve_precision

    torch.set_num_threads(args.threads)
    fp32 = build_miro(args.preset, args.in_channels, args.image_size, args.text_dim, args.text_len, args.batch,
                      overrides=args.set, device=args.device)
    bf16 = build_miro(args.preset, args.in_channels, args.image_size, args.text_dim, args.text_len, args.batch,
                      overrides=args.set, device=args.device, autocast=torch.bfloat16)
    bf16.name += " bf16 autocast"
    seconds = time_contenders([fp32, bf16], args.steps, args.rounds, args.warmup)
    (w32, _), (w16, _) = seconds[fp32.name], seconds[bf16.name]
    ref, _ = _loss_curve(args, False, 0)
    low, _ = _loss_curve(args, True, 0)
    other, _ = _loss_curve(args, False, 1)
    window = max(1, args.curve_steps // 5)

    def tail(c: list[float]) -> float:
        return statistics.fmean(c[-window:])

    drift = max(abs(a - b) for a, b in zip(ref, low))
    seed_spread = max(abs(a - b) for a, b in zip(ref, other))
    return "\n".join([
        f"### Training step: bf16 autocast vs fp32, {args.preset} preset, batch {args.batch}, "
        f"{args.in_channels}x{args.image_size}x{args.image_size}, {_where(args)}",
        "",
        f"`mixed_precision=auto` picks **{resolve_precision('auto', torch.device(args.device).type)}** here"
        + ("" if args.device.startswith("cuda") else
           f" (bf16/fp32 matmul probe: {cpu_bf16_speedup():.2f}x; 0 = no oneDNN bf16 kernels)") + ".",
        "",
        "| precision | s / step | images/s |",
        "|---|---:|---:|",
        f"| fp32 | {w32:.4f} | {args.batch / w32:.1f} |",
        f"| bf16 autocast (fp32 master weights, fp32 loss) | {w16:.4f} | {args.batch / w16:.1f} |",
        "",
        f"- images/s bf16 / fp32: **{w32 / w16:.2f}x** (median of {args.rounds} interleaved rounds of {args.steps} steps).",
        f"- loss curves over {args.curve_steps} steps from the same init and batches: mean of the last {window} "
        f"steps fp32 {tail(ref):.4f}, bf16 {tail(low):.4f}, fp32 with another noise seed {tail(other):.4f}; "
        f"largest per-step |bf16 - fp32| {drift:.2e} against {seed_spread:.2e} between the two fp32 seeds.",
    ])


# ---------------------------------------------------------------------------------------------- data part
REWARDS = ["sharpness", "low_noise", "colorfulness", "contrast", "alignment"]
COLORS = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white"]


def _scene(rng: random.Random, size: tuple[int, int], fmt: str) -> tuple[bytes, str]:
    """A few coloured shapes with pixel noise (hard to compress, like degraded web images) and a caption."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, (180, 172, 155))
    draw = ImageDraw.Draw(img)
    words = []
    for _ in range(rng.randint(1, 3)):
        c, w = rng.choice(COLORS), rng.randint(size[0] // 6, size[0] // 3)
        x, y = rng.randint(0, size[0] - w), rng.randint(0, size[1] - w)
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x, y, x + w, y + w], fill=c)
        words.append(c)
    noise = np.random.default_rng(rng.randint(0, 2**31)).integers(-12, 12, (size[1], size[0], 3))
    buf = io.BytesIO()
    Image.fromarray((np.asarray(img).astype(np.int16) + noise).clip(0, 255).astype(np.uint8)).save(
        buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue(), "a photo of a " + " and a ".join(f"{c} shape" for c in words)


def _write_dataset(folder: Path, n_shards: int, per_shard: int, size: tuple[int, int], fmt: str) -> None:
    """Shards plus annotations written by the annotation stage's own writers (random scores)."""
    from annotate.stats import compute_stats, write_buckets
    from miro.contracts.buckets import STATS_FILE, load_reward_stats
    from miro.contracts.sidecar import rewards_path, write_rewards
    from miro.data.shards import ShardWriter

    rng, ext = random.Random(0), ("jpg" if fmt == "JPEG" else "png")
    with ShardWriter(folder, "bench", maxcount=per_shard) as w:
        for i in range(n_shards * per_shard):
            img, cap = _scene(rng, size, fmt)
            w.write(f"k{i:07d}", {ext: img, "txt": cap, "json": "{}"})
        shards = w.close()
    scores = np.random.default_rng(0)
    sidecars = [write_rewards(rewards_path(shard), [f"k{s * per_shard + i:07d}" for i in range(per_shard)],
                              {r: scores.random(per_shard) for r in REWARDS}, ["ok"] * per_shard, {})
                for s, shard in enumerate(shards)]
    (folder / STATS_FILE).write_text(json.dumps(compute_stats(sidecars, REWARDS, 64, None)))
    for p in sidecars:
        write_buckets(p, load_reward_stats(folder / STATS_FILE))


def _loader_rate(folder: Path, resolution: int, identity: dict | None, batches: int) -> float:
    """Samples/s of the training stream (one worker process, batch 64), after start-up and buffer fill."""
    from miro.data.pipeline import DataConfig, MiroDataset, inspect_dataset, make_loader

    cfg = DataConfig(shards=str(folder), resolution=resolution, num_workers=1, cache=identity is not None,
                     verify_keys=False)
    it = iter(make_loader(MiroDataset(cfg, inspect_dataset(cfg, REWARDS, identity), batch_size=64, seed=0)))
    for _ in range(3):
        next(it)
    tic = time.perf_counter()
    n = sum(len(b["keys"]) for b in itertools.islice(it, batches))
    return n / (time.perf_counter() - tic)


def _tiny_sd_geometry_vae(folder: Path):
    """A random-weight AutoencoderKL with SD's geometry (4 latent channels, downsample 8) through the
    production loader: the cache's size and I/O do not depend on the weights."""
    from diffusers import AutoencoderKL

    from miro.models.autoencoders import KLAutoencoder

    torch.manual_seed(0)
    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 16, 16), latent_channels=4,
                  norm_num_groups=4, sample_size=256, scaling_factor=0.13025).save_pretrained(folder)
    return KLAutoencoder(str(folder))


def _demo_run(folder: Path, out: Path, steps: int) -> dict[str, float]:
    """A real ``miro.train`` run of the demo preset on the cached set: images/s and data-wait fraction."""
    from hydra import compose, initialize_config_dir
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import miro.train.__main__  # noqa: F401  (registers the schema)
    from miro.train.config import TrainConfig
    from miro.train.loop import train
    from miro.utils.config import to_typed

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        hcfg = compose("train", overrides=[
            f"output_dir={out}", f"data.shards={folder}", "data.cache=true", "data.num_workers=1",
            f"max_steps={steps}", f"log_every={steps // 2}", f"checkpoint_every={steps}", "sample.every=0",
            "progress_bar=false"])
    train(to_typed(hcfg, TrainConfig))
    acc = EventAccumulator(str(next(out.rglob("events.out.tfevents.*")).parent))
    acc.Reload()
    return {tag: acc.Scalars(tag)[-1].value for tag in ("perf/images_per_s", "perf/data_wait_fraction")}


def part_data(args: argparse.Namespace) -> str:
    """Loader samples/s (one worker) against training images/s (one thread), side by side; target >= 3x."""
    from miro.data.cache import cache_identity, cache_shards
    from miro.models.autoencoders import IdentityAutoencoder
    from miro.models.config import TextEncoderConfig, build_text_encoder

    torch.set_num_threads(1)
    n_shards, per_shard, batches = (4, 256, 8) if args.data_quick else (8, 512, 30)
    te = build_text_encoder(TextEncoderConfig())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small, web = tmp / "shapes32", tmp / "web256"
        _write_dataset(small, n_shards, per_shard, (64, 64), "PNG")
        _write_dataset(web, max(2, n_shards // 2), per_shard // 2, (320, 256), "JPEG")
        ident, vae = IdentityAutoencoder(), _tiny_sd_geometry_vae(tmp / "vae")
        tic = time.perf_counter()
        cache_shards(sorted(small.glob("*.tar")), te, ident, 32, batch_size=128)
        cache_rate = n_shards * per_shard / (time.perf_counter() - tic)
        cache_shards(sorted(web.glob("*.tar")), te, vae, 256, batch_size=32)
        id32 = cache_identity(te.identifier(), ident.identifier(), 32)
        id256 = cache_identity(te.identifier(), vae.identifier(), 256)
        load = {
            "32 px PNG: decode + crop + join": _loader_rate(small, 32, None, batches),
            "32 px, feature cache": _loader_rate(small, 32, id32, batches),
            "256 px JPEG: decode + crop + join": _loader_rate(web, 256, None, max(4, batches // 4)),
            "256 px, feature cache (4x32x32 moments)": _loader_rate(web, 256, id256, batches),
        }
        tiny = build_miro("tiny", 3, 32, 384, 12, 64)
        captions = ["a photo of a red shape and a blue shape"] * 64
        with_text = Contender("tiny + MiniLM", tiny.model, lambda: (te.encode(captions), tiny.step())[1], 64)
        small_ = build_miro("small", 4, 32, 384, 12, 8)
        steps = 2 if args.data_quick else 5
        sec = time_contenders([tiny, with_text, small_], steps, 3, 1)
        consume = {
            "tiny, 32 px pixels, cached text (batch 64)": 64 / sec[tiny.name][0],
            "tiny, 32 px pixels, MiniLM in the loop (batch 64)": 64 / sec[with_text.name][0],
            "small, 4x32x32 latents, cached (batch 8)": 8 / sec[small_.name][0],
        }
        demo = _demo_run(small, tmp / "run", 40 if args.data_quick else 120)
    pairs = [("32 px demo: cached loader / tiny step", "32 px, feature cache", "tiny, 32 px pixels, cached text (batch 64)"),
             ("32 px demo: uncached loader / tiny step with MiniLM", "32 px PNG: decode + crop + join",
              "tiny, 32 px pixels, MiniLM in the loop (batch 64)"),
             ("256 px: cached loader / small step", "256 px, feature cache (4x32x32 moments)",
              "small, 4x32x32 latents, cached (batch 8)")]
    lines = ["### Data pipeline: loader samples/s against training images/s (1 worker vs 1 thread)", "",
             f"Feature-cache build, 32 px set ({n_shards * per_shard} samples, MiniLM + identity): {cache_rate:.0f} samples/s.",
             "", "| loader (1 worker process) | samples/s |", "|---|---:|"]
    lines += [f"| {k} | {v:,.0f} |" for k, v in load.items()]
    lines += ["", "| training step (1 thread) | images/s |", "|---|---:|"]
    lines += [f"| {k} | {v:,.1f} |" for k, v in consume.items()]
    lines += ["", "| pair | loader / consumption (target >= 3x) |", "|---|---:|"]
    lines += [f"| {name} | {load[a] / consume[b]:,.1f}x |" for name, a, b in pairs]
    lines += ["", f"Real `miro.train` run of the demo preset (cached, 1 worker): {demo['perf/images_per_s']:.0f} "
              f"images/s, data wait {100 * demo['perf/data_wait_fraction']:.1f} % of the step time."]
    return "\n".join(lines)


def part_compile(args: argparse.Namespace) -> str:
    """Our training step eager against torch.compile'd (``miro.train compile=true compile_mode=...``), same
    init and batches, interleaved rounds; the warm-up rounds include the compilation (and, with
    reduce-overhead on CUDA, the CUDA-graph recording)."""
    torch.set_num_threads(args.threads)
    low = _autocast(args)
    mode = args.compile_mode or ("reduce-overhead" if args.device.startswith("cuda") else "default")
    build = partial(build_miro, args.preset, args.in_channels, args.image_size, args.text_dim, args.text_len,
                    args.batch, overrides=args.set, device=args.device, autocast=low,
                    fused=args.device.startswith("cuda") or None)  # both with the loop's optimizer  # fmt: skip
    eager, compiled = build(), build(compile_mode=mode)
    eager.name += ", eager"
    start = time.perf_counter()
    losses = [(eager.step(), compiled.step()) for _ in range(max(3, args.warmup))]
    warmup_s = time.perf_counter() - start
    seconds = time_contenders([eager, compiled], args.steps, args.rounds, 0)
    (we, _), (wc, _) = seconds[eager.name], seconds[compiled.name]
    drift = max(abs(a - b) / max(abs(a), 1e-12) for a, b in losses)
    return "\n".join([
        f"### Training step: eager vs torch.compile ({mode}), {args.preset} preset, batch {args.batch}, "
        f"{args.in_channels}x{args.image_size}x{args.image_size}, "
        f"{'fp32' if low is None else f'{args.dtype} autocast'}, {_where(args)}",
        "",
        "| step | s / step | images/s |",
        "|---|---:|---:|",
        f"| {eager.name} | {we:.4f} | {args.batch / we:.1f} |",
        f"| {compiled.name} | {wc:.4f} | {args.batch / wc:.1f} |",
        "",
        f"- images/s compiled / eager: **{we / wc:.2f}x** (median of {args.rounds} interleaved rounds of "
        f"{args.steps} steps, after {len(losses)} warm-up steps of each that took {warmup_s:.1f} s together).",
        f"- the first {len(losses)} losses from the same init and batches differ by at most {drift:.2e} (relative).",
    ])


PARTS: dict[str, Callable[[argparse.Namespace], str]] = {"model": part_model, "data": part_data,
                                                         "precision": part_precision, "compile": part_compile,
                                                         "backbones": part_backbones}
DEFAULT_PARTS = ["data", "model", "precision"]  # compile is asked for by name: compiling takes minutes on a CPU


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=sorted(PARTS), action="append", help="what to run (repeatable; default: data, model, precision)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--device", default="cpu", help="model and precision parts: cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="model part: autocast dtype of both training steps (float32 = none)")
    g = p.add_argument_group("model part")
    g.add_argument("--preset", default="tiny", help="miro/conf/model/<preset>.yaml")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the model preset, e.g. --set qk_norm=true (repeatable)")
    g.add_argument("--image-size", type=int, default=32, help="spatial size of the model input")
    g.add_argument("--in-channels", type=int, default=3)
    g.add_argument("--text-dim", type=int, default=384, help="384 = MiniLM")
    g.add_argument("--text-len", type=int, default=32)
    g.add_argument("--batch", type=int, default=32)
    g.add_argument("--steps", type=int, default=5, help="steps per timed round")
    g.add_argument("--rounds", type=int, default=5)
    g.add_argument("--warmup", type=int, default=3)
    g.add_argument("--matmul-size", type=int, default=1024)
    g.add_argument("--matmul-seconds", type=float, default=2.0, help="time spent on each peak measurement")
    g.add_argument("--out", type=Path, help="also write the markdown here")
    g.add_argument("--presets", default="tiny_unet:conv_scale_shift=true,tiny_sd_unet",
                   help="backbones part: comma-separated preset[:key=value...] to time side by side")
    g.add_argument("--curve-steps", type=int, default=40, help="precision part: steps of each loss curve")
    g.add_argument("--compile-mode", default=None,
                   choices=COMPILE_MODES,
                   help="compile part: torch.compile's mode (default: reduce-overhead on CUDA, default elsewhere)")
    g = p.add_argument_group("data part")
    g.add_argument("--data-quick", action="store_true", help="smaller data sets and shorter runs")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sections = [PARTS[name](args) for name in (args.part or DEFAULT_PARTS)]
    text = "\n\n".join(sections) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
