"""Is the class word lost in the network or in the compute? The shipped recipe against a standard peer U-Net.

docs/text_conditioning.md sections 11-21: the project's model (``tiny_unet`` + adaptive GroupNorm) draws the
prompt's colour but reads as the prompt's class in only about a quarter of its images, even on the clean
one-object world (section 20), where the samples are irregular blobs. This script trains, side by side on the
same in-memory feature cache, with the same loss, time distribution, text tokens, text dropout, optimiser,
schedule and EMA, either that model or diffusers' ``UNet2DConditionModel`` (the SD-style U-Net: ResNet blocks
at 32, 16 and 8 px, self- and cross-attention to the MiniLM tokens at 16 and 8 px), then reads its held-out
one-object samples with the shapes detector (``failures`` of ``text_conditioning.py``). Neither model gets
reward tokens: the question is the text alone.

    python scripts/experiments/peer_unet.py --data runs/easy/data --arch unet --out runs/peer/unet    # ~90 min, 1 thread
    python scripts/experiments/peer_unet.py --data runs/easy/data --arch ours --out runs/peer/ours    # ~25 min, 1 thread

Rerunning a command resumes from ``<out>/checkpoint.pt`` (written every ``--checkpoint-every`` steps). Each
``--eval-at`` step writes ``<out>/eval-<step>.json``; the last one also ``<out>/result.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from text_conditioning import (  # noqa: E402
    REWARDS,
    TINY,
    Cached,
    clean_keys,
    failure_modes,
    geneval,
    recipe_optimizer,
    recipe_step,
    sample_heldout,
)

from miro.flow import TimeSampler  # noqa: E402
from miro.models import MiroTransformer  # noqa: E402

#: ``experiment=shapes_reference_adagn``'s network (miro/conf/model/tiny_unet.yaml + conv_scale_shift), no rewards.
OURS = {**TINY, "patch_size": 2, "conv_channels": 32, "conv_levels": 2, "conv_pooled_text": True,
        "conv_scale_shift": True, "reward_names": []}


class PeerUNet(nn.Module):
    """diffusers' ``UNet2DConditionModel`` behind the project's model call contract (docs/contracts.md).

    t in [0, 1] is passed as the timestep t * 1000 (the U-Net's sinusoidal embedding was made for that range);
    the output is the velocity. A dropped prompt (``drop_text``) becomes one all-zero token, the same null
    condition at training and at sampling (an all-masked key set would make the attention undefined)."""

    num_rewards = 0

    def __init__(self, channels=(32, 64, 128), layers_per_block: int = 1, head_dim: int = 8, text_dim: int = 384):
        super().__init__()
        from diffusers import UNet2DConditionModel

        levels = len(channels)
        self.unet = UNet2DConditionModel(
            sample_size=32, in_channels=3, out_channels=3, block_out_channels=tuple(channels),
            down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1),
            up_block_types=("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",),
            layers_per_block=layers_per_block, cross_attention_dim=text_dim, attention_head_dim=head_dim,
            norm_num_groups=8)  # fmt: skip
        self.config = SimpleNamespace(in_channels=3, sample_size=32)

    def forward(self, x, t, text, text_mask, rewards=None, reward_mask=None, drop_text=None):
        if drop_text is not None and bool(drop_text.any()):
            text = text.masked_fill(drop_text[:, None, None], 0.0)
            text_mask = text_mask & ~drop_text[:, None]
            text_mask[:, 0] |= drop_text
        t = t.expand(x.shape[0]) if t.dim() == 0 else t
        return self.unet(x, t * 1000, encoder_hidden_states=text, encoder_attention_mask=text_mask).sample


def caption_residual_rewards(data, ridge: float = 1.0) -> torch.Tensor:
    """Each reward made relative to what the caption predicts: a ridge regression of the reward's value on the
    caption's pooled text embedding (the mean of its tokens), then the rank quantile of the residual in [0, 1].

    In the shapes world the weight-free rewards are mostly content: the caption's colour word explains about 80%
    of the variance of sharpness, colourfulness and contrast on the clean one-object world (docs/
    text_conditioning.md section 22). A reward token then tells the network the object's colour, and a fixed
    target at sampling asks for a colour the prompt may contradict. The residual keeps only what the caption
    does not say: "sharper (more colourful...) than an image of this caption usually is"."""
    pooled = torch.stack([t.float().mean(0) for t in data.text]).double()
    design = torch.cat([pooled, torch.ones(len(pooled), 1, dtype=torch.float64)], dim=1)
    out = data.rewards.clone()
    for i in range(data.rewards.shape[1]):
        known = data.reward_mask[:, i]
        a, y = design[known], data.rewards[known, i].double()
        gram = a.T @ a + ridge * torch.eye(a.shape[1], dtype=torch.float64)
        residual = y - a @ torch.linalg.solve(gram, a.T @ y)
        ranks = residual.argsort().argsort().double()
        out[known, i] = ((ranks + 0.5) / len(ranks)).float()
    return out


def build(arch: str, rewards: bool = False) -> nn.Module:
    if arch == "ours":
        return MiroTransformer(**{**OURS, "reward_names": REWARDS if rewards else []})
    if arch == "unet":
        if rewards:
            raise SystemExit("--rewards: only --arch ours takes reward tokens")
        return PeerUNet()
    raise SystemExit(f"--arch {arch!r}: one of ours, unet")


def train(args) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    data = Cached(args.data)
    if args.rewards == "residual":
        data.rewards = caption_residual_rewards(data)
    model, ema = build(args.arch, args.rewards != "none"), build(args.arch, args.rewards != "none")
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = recipe_optimizer(model, args.lr)
    times = TimeSampler("logit_normal", mean=0.0, std=1.0)
    g = torch.Generator().manual_seed(args.seed)
    start_step, history, spent = 0, [], 0.0
    ckpt = args.out / "checkpoint.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        g.set_state(state["generator"])
        start_step, history, spent = state["step"], state["history"], state["seconds"]
        print(f"resumed at step {start_step}", flush=True)
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.arch}: {params / 1e6:.2f}M parameters", flush=True)
    begin = time.perf_counter() - spent
    for step in range(start_step, args.steps):
        b = data.batch(torch.randint(len(data), (args.batch,), generator=g))
        loss = recipe_step(model, ema, opt, b, step, args.steps, args.lr, args.warmup, times, g, autocast=args.bf16)
        done = step + 1
        if done % args.log_every == 0:
            history.append({"step": done, "seconds": round(time.perf_counter() - begin), "loss": round(loss.item(), 5)})
            print(json.dumps(history[-1]), flush=True)
        if done % args.checkpoint_every == 0 or done == args.steps or done in args.eval_at:
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                        "generator": g.get_state(), "step": done, "history": history,
                        "seconds": time.perf_counter() - begin}, tmp)  # fmt: skip
            tmp.replace(ckpt)
        if done in args.eval_at or done == args.steps:
            evaluate(args, ema, done, history, params, time.perf_counter() - begin, data)


def sampling_targets(args, data) -> float | list[float]:
    """Per reward the median of the clean, correctly captioned samples, of the values the run trained on (raw:
    ``text_conditioning.py``'s clean targets)."""
    clean = clean_keys(args.data)
    rows = torch.tensor([k in clean for k in data.keys])
    return [round(float(data.rewards[rows, i].median()), 3) for i in range(data.rewards.shape[1])]


def evaluate(args, ema: nn.Module, step: int, history: list, params: int, seconds: float, data) -> None:
    path = args.out / f"eval-{step}.json"
    if path.exists():
        return
    ema.eval()
    t0 = time.perf_counter()
    targets = sampling_targets(args, data) if ema.num_rewards else 1.0
    result = failure_modes(ema, args.data, args.text_scale, args.reward_scale, args.images, args.sample_steps, targets)
    if args.geneval:  # every held-out task, the same images per prompt and noise
        result["geneval"] = geneval(ema, args.data, args.text_scale, args.reward_scale, args.images,
                                    args.sample_steps, targets=targets)
    result = {"arch": args.arch, "parameters": params, "step": step, "images_seen": step * args.batch,
              "train_seconds": round(seconds), "eval_seconds": round(time.perf_counter() - t0),
              "text_scale": args.text_scale, "rewards": args.rewards, "targets": targets,
              "reward_scale": args.reward_scale if ema.num_rewards else None, "history": history, **result}
    path.write_text(json.dumps(result, indent=1))
    if "geneval" in result:
        print(json.dumps({"step": step, "geneval": result["geneval"]}), flush=True)
    print(json.dumps({"step": step, **{k: {m: v[m] for m in ("top_class_pct", "any_class_pct", "any_colour_pct")
                                           if m in v} for k, v in result["tasks"].items()}}), flush=True)  # fmt: skip
    if step == args.steps:
        (args.out / "result.json").write_text(json.dumps(result, indent=1))


def grid(args) -> None:
    """The run's EMA network (``<out>/checkpoint.pt``) on the first ``--grid-prompts`` held-out colour + class
    prompts, ``--images`` seeds each (columns: prompts; rows: seeds), the evaluation's settings and noise."""
    from PIL import Image

    state = torch.load(args.out / "checkpoint.pt", weights_only=False)
    data = Cached(args.data)
    if args.rewards == "residual":
        data.rewards = caption_residual_rewards(data)
    ema = build(args.arch, args.rewards != "none")
    ema.load_state_dict(state["ema"])
    meta = [json.loads(line) for line in (args.data / "heldout" / "evaluation_metadata.jsonl").read_text().splitlines()]
    meta = [m for m in meta if m["tag"] == "colors"][: args.grid_prompts]
    targets = sampling_targets(args, data) if ema.num_rewards else 1.0
    pixels = sample_heldout(ema, meta, args.text_scale, args.reward_scale, args.images, args.sample_steps, 0, targets)
    k, n, size = len(meta), args.images, pixels.shape[1]
    canvas = Image.new("RGB", (k * (size + 2), n * (size + 2)), "white")
    for i, img in enumerate(pixels):  # prompt-major: image i is prompt i // n, seed i % n
        canvas.paste(Image.fromarray(img), ((i // n) * (size + 2), (i % n) * (size + 2)))
    canvas = canvas.resize((canvas.width * 3, canvas.height * 3), Image.NEAREST)
    canvas.save(args.grid)
    print(json.dumps({"grid": str(args.grid), "step": state["step"], "prompts": [m["prompt"] for m in meta]}))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a built shapes world with its feature cache")
    p.add_argument("--arch", choices=("ours", "unet"), required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=None, help="default: 2e-3 for ours (the recipe), 1e-3 for the U-Net")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the training forward (fp32 weights)")
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--eval-at", type=int, nargs="*", default=[1500])
    p.add_argument("--rewards", choices=("none", "raw", "residual"), default="none",
                   help="ours with the world's five reward tokens (10%% dropout each), sampled toward the clean "
                        "samples' medians: raw = the annotated buckets, residual = relative to the caption "
                        "(caption_residual_rewards)")
    p.add_argument("--text-scale", type=float, default=3.0)
    p.add_argument("--reward-scale", type=float, default=1.0, help="with --rewards: the reward guidance scale")
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--geneval", action="store_true", help="also held-out GenEval on every task (a world with them all)")
    p.add_argument("--sample-steps", type=int, default=25)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--grid", type=Path, default=None,
                   help="no training: a PNG of the run's last checkpoint on held-out colour prompts")
    p.add_argument("--grid-prompts", type=int, default=8)
    args = p.parse_args(argv)
    if args.lr is None:
        args.lr = 2e-3 if args.arch == "ours" else 1e-3
    args.eval_at = set(args.eval_at)
    torch.set_num_threads(args.threads)
    if args.grid is not None:
        grid(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
