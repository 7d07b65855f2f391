"""Training throughput benchmark, side by side in one run (results: docs/benchmarks/train_model.md).

Part ``model``: images/s and achieved FLOP/s of MiroTransformer against diffusers' DiTTransformer2DModel of
(nearly) equal parameter count, both in the same minimal loop (forward + flow loss + backward + AdamW step,
same batch, same resolution and tokens, fp32), and the fraction of this machine's measured square-matmul
FLOP/s that each achieves (MFU).  FLOPs of both models are counted the same way: FlopCounterMode over one
training step with attention run as explicit matmuls (the CPU SDPA kernel is invisible to the counter).

    python scripts/bench_train.py --part model                      # tiny preset, 32 px pixel space
    python scripts/bench_train.py --part model --preset small --image-size 16 --in-channels 4 --batch 16

Parts are functions registered in ``PARTS``; each returns markdown, so more can be added beside ``model``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from miro.flow import LinearPath, TimeSampler, velocity_loss  # noqa: E402
from miro.models.flops import counted_flops, measure_matmul_flops, training_flops  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"


# ---------------------------------------------------------------------------------------------- helpers
@dataclass
class Contender:
    """A model plus a closure that runs one full training step on a fixed batch."""

    name: str
    model: torch.nn.Module
    step: Callable[[], float]
    batch: int

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


def make_step(model: torch.nn.Module, forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
              x0: torch.Tensor, lr: float = 1e-4) -> Callable[[], float]:
    """forward(x_t, t) -> velocity; the step draws t and noise, applies the flow loss, backward, AdamW."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    path, times = LinearPath(), TimeSampler("logit_normal")
    gen = torch.Generator().manual_seed(0)

    def step() -> float:
        t = times(x0.shape[0], generator=gen)
        s = path.sample(x0, t, torch.randn(x0.shape, generator=gen))
        loss = velocity_loss(forward(s.x_t, t), s.target).mean()
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
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                c.step()
            wall[c.name].append((time.perf_counter() - w0) / steps)
            cpu[c.name].append((time.process_time() - c0) / steps)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in wall}


# ---------------------------------------------------------------------------------------------- contenders
def build_miro(preset: str, in_channels: int, image_size: int, text_dim: int, text_len: int, batch: int,
               p_reward: float = 0.1, p_text: float = 0.1, overrides: list[str] | None = None) -> Contender:
    """Our model from conf/model/<preset>.yaml (plus ``key=value`` overrides) with a fixed random batch."""
    from omegaconf import OmegaConf

    from miro.models import sample_condition_dropout
    from miro.models.config import ModelConfig, build_model
    from miro.utils.config import to_typed

    overrides = overrides or []
    raw = OmegaConf.merge(OmegaConf.load(CONF / "model" / f"{preset}.yaml"), OmegaConf.from_dotlist(overrides))
    cfg = to_typed(raw, ModelConfig)
    torch.manual_seed(0)
    model = build_model(cfg, text_dim=text_dim, in_channels=in_channels, sample_size=image_size).train()
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(batch, in_channels, image_size, image_size, generator=gen)
    text = torch.randn(batch, text_len, text_dim, generator=gen)
    lengths = torch.randint(2, text_len + 1, (batch,), generator=gen)
    text_mask = torch.arange(text_len)[None] < lengths[:, None]
    rewards = torch.rand(batch, model.num_rewards, generator=gen)
    reward_mask, drop_text = sample_condition_dropout(batch, model.num_rewards, p_reward, p_text, generator=gen)

    def forward(x_t, t):
        return model(x_t, t, text, text_mask, rewards if model.num_rewards else None,
                     reward_mask if model.num_rewards else None, drop_text)

    name = f"MiroTransformer ({', '.join([preset, *overrides])})"
    return Contender(name, model, make_step(model, forward, x0), batch)


def dit_params(num_layers: int, heads: int, head_dim: int, in_channels: int, image_size: int, patch: int,
               num_classes: int) -> int:
    from diffusers import DiTTransformer2DModel

    with torch.device("meta"):
        m = DiTTransformer2DModel(num_attention_heads=heads, attention_head_dim=head_dim, in_channels=in_channels,
                                  out_channels=in_channels, num_layers=num_layers, sample_size=image_size,
                                  patch_size=patch, num_embeds_ada_norm=num_classes)
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def build_dit_peer(target_params: int, heads: int, head_dim: int, in_channels: int, image_size: int, patch: int,
                   batch: int, num_classes: int = 10) -> Contender:
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

    def forward(x_t, t):
        return model(x_t, timestep=t * 1000, class_labels=labels, return_dict=False)[0]

    name = f"diffusers DiTTransformer2DModel ({layers} layers x {heads * head_dim} wide)"
    return Contender(name, model, make_step(model, forward, x0), batch)


# ---------------------------------------------------------------------------------------------- parts
def part_model(args: argparse.Namespace) -> str:
    torch.set_num_threads(args.threads)
    ours = build_miro(args.preset, args.in_channels, args.image_size, args.text_dim, args.text_len, args.batch,
                      overrides=args.set)
    cfg = ours.model.config
    peer = build_dit_peer(ours.params, cfg.num_heads, cfg.width // cfg.num_heads, args.in_channels,
                          args.image_size, cfg.patch_size, args.batch)
    contenders = [ours, peer]
    flops = {c.name: counted_flops(c.step) for c in contenders}
    analytic = training_flops(cfg, args.image_size, args.image_size, args.text_len) * args.batch
    peak = measure_matmul_flops(size=args.matmul_size, seconds=args.matmul_seconds)
    seconds = time_contenders(contenders, args.steps, args.rounds, args.warmup)
    peak = max(peak, measure_matmul_flops(size=args.matmul_size, seconds=args.matmul_seconds))

    tokens = (args.image_size // cfg.patch_size) ** 2
    lines = [
        f"### Model training step: MiroTransformer vs diffusers DiT (equal parameters), fp32, {args.threads} threads",
        "",
        f"Batch {args.batch}, input {args.in_channels}x{args.image_size}x{args.image_size} "
        f"(patch {cfg.patch_size}, {tokens} image tokens); ours also reads {args.text_len} text tokens "
        f"({args.text_dim}-d) and {ours.model.num_rewards} reward tokens, DiT a class label.  "
        f"Median of {args.rounds} interleaved rounds of {args.steps} steps after {args.warmup} warm-up steps.  "
        f"Peak = best square {args.matmul_size}^3 fp32 matmul rate measured in the same run: "
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


PARTS: dict[str, Callable[[argparse.Namespace], str]] = {"model": part_model}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=sorted(PARTS), action="append", help="what to run (repeatable; default all)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    g = p.add_argument_group("model part")
    g.add_argument("--preset", default="tiny", help="conf/model/<preset>.yaml")
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
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sections = [PARTS[name](args) for name in (args.part or sorted(PARTS))]
    text = "\n\n".join(sections) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
