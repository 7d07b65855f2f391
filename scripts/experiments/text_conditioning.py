"""Why the embedded model ignored its prompts: the measurements behind docs/text_conditioning.md.

Every command prints its numbers and writes JSON (``--out``).  Seeds are fixed; rerun to reproduce.

    # what share of the pixel variance the caption can explain at all (no model involved)
    python scripts/experiments/text_conditioning.py variance --data runs/demo/data

    # a trained pipeline: loss with its own vs another sample's vs no text, per noise level
    python scripts/experiments/text_conditioning.py gaps --data runs/demo/data --pipeline runs/demo/train/final

    # 600-step in-memory ablations of the recipe (one process per variant; two fit 2 cores)
    python scripts/experiments/text_conditioning.py ablate --data runs/demo/data --variant rewards
    python scripts/experiments/text_conditioning.py ablate --data runs/demo/data --variant no_rewards
    python scripts/experiments/text_conditioning.py ablate --data runs/demo/data --variant time_mean_1
    python scripts/experiments/text_conditioning.py ablate --data runs/demo/data --variant clean_data
    # the recipe at the demo's compute (docs/text_conditioning.md section 8), e.g. the conv stem and head:
    python scripts/experiments/text_conditioning.py ablate --data runs/demo/data --variant conv_stem \
        --batch 32 --lr 2e-3 --steps 1050 --scales 3,1 0,0 --targets clean

    # text -> shape: clean single-object training images noised to t and sampled back with their own caption
    # (kept) or with another class named (edited); the detector reads the class (a few minutes per pipeline)
    python scripts/experiments/text_conditioning.py shapes --data runs/demo/data --pipeline runs/demo/train/final \
        --scales 3,1 --targets clean      # the first --scales pair is the guidance used

    # the same question without sampling: the loss with the caption naming another class against its own, per t
    python scripts/experiments/text_conditioning.py classgap --data runs/demo/data --pipeline models/shapes_reference

    # where one-object prompts fail: object count, class and colour read by the detector, class confusion
    python scripts/experiments/text_conditioning.py failures --data runs/demo/data --pipeline models/shapes_reference \
        --scales 3,1 --targets clean --images 4

    # a latent-space model's ceiling: clean one-object images and their autoencoder reconstructions, read by the detector
    python scripts/experiments/text_conditioning.py autoencoder --data runs/demo/data --autoencoder models/shapes_autoencoder

    # each reward's slider (its target 0..1, the others at the clean medians) read by its own scorer and by GenEval
    python scripts/experiments/text_conditioning.py sliders --data runs/demo/data --pipeline models/shapes_reference \
        --scales 3,1 --targets clean --images 2 --slider-prompts 16

    # held-out shapes GenEval of every export of a run, over text / reward guidance scales (pixel or latent space)
    python scripts/experiments/text_conditioning.py curve --data runs/demo/data --run runs/shapes_reference \
        --scales 0,0 3,0 3,1 3,3 --targets clean

    # a model's paired draws (curve --seed 1, 0, 2 of one pipeline and setting): per-seed overall, per-task means,
    # and the difference to another model's draws on the same seeds
    python scripts/experiments/text_conditioning.py draws --draws A_s1.json A_s0.json A_s2.json \
        --against B_s1.json B_s0.json B_s2.json

The GenEval here is the project's (``miro.data.shapes.detector`` + ``miro.contracts.geneval_rules`` + the
summary's per-task mean), run in-process on the held-out ``evaluation_metadata.jsonl`` with ``--images``
images per prompt; ``python -m miro.eval geneval`` gives the same numbers through image folders.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from miro.data.annotations import bucket_values, read_buckets, read_reward_stats  # noqa: E402
from miro.data.cache import read_cache_metadata, read_shard_cache  # noqa: E402
from miro.data.shapes.vocab import CLASSES, COLORS  # noqa: E402
from miro.data.transforms import pad_text  # noqa: E402
from miro.flow import LinearPath, TimeSampler, velocity_loss  # noqa: E402
from miro.flow.solvers import DEFAULT_SDE_NOISE, METHODS  # noqa: E402
from miro.models import MiroTransformer, sample_condition_dropout  # noqa: E402

REWARDS = ["sharpness", "low_noise", "colorfulness", "contrast", "alignment"]
TINY = dict(in_channels=3, sample_size=32, patch_size=4, width=128, depth=4, num_heads=4, qk_norm=False,
            text_dim=384, reward_fourier_dim=64, cond_refiner_depth=1, pooled_text=True)  # miro/conf/model/tiny.yaml


# ------------------------------------------------------------------------------------------- data
class Cached:
    """The feature cache of a world's training shards in memory: pixels, text tokens, captions, rewards."""

    def __init__(self, data: Path):
        train = data / "train"
        caches = [p for p in sorted(train.glob("*.cache-*.safetensors"))
                  if read_cache_metadata(p)["identity"]["autoencoder"] == "identity"]
        if not caches:
            raise SystemExit(f"no pixel-space feature cache in {train}: run the demo (or python -m miro.train.cache) first")
        stats = read_reward_stats(train / "reward_stats.json")
        xs, self.text, self.captions, self.keys, vals, masks = [], [], [], [], [], []
        for path in caches:
            cache = read_shard_cache(path)
            keys, buckets = read_buckets(path.with_name(path.name.split(".")[0] + ".buckets.parquet"), REWARDS)
            values, mask = bucket_values(buckets, stats.num_bins)
            row = {k: i for i, k in enumerate(keys)}
            for i, key in enumerate(cache.keys):
                self.keys.append(key)
                xs.append(cache.latents[i])
                self.text.append(cache.text_of(i))
                self.captions.append(cache.captions[i])
                vals.append(values[row[key]])
                masks.append(mask[row[key]])
        self.x = torch.stack(xs).float()
        self.rewards, self.reward_mask = torch.from_numpy(np.stack(vals)), torch.from_numpy(np.stack(masks))

    def __len__(self) -> int:
        return len(self.keys)

    def batch(self, idx: torch.Tensor) -> dict:
        text, mask = pad_text([self.text[i] for i in idx.tolist()])
        return {"x": self.x[idx], "text": text.float(), "text_mask": mask, "rewards": self.rewards[idx],
                "reward_mask": self.reward_mask[idx]}


def sample_metadata(data: Path):
    """The per-sample json of a world's training shards, in shard order."""
    for shard in sorted((data / "train").glob("*.tar")):
        with tarfile.open(shard) as tf:
            for member in tf:
                if member.name.endswith(".json"):
                    yield json.loads(tf.extractfile(member).read())


def clean_keys(data: Path) -> set[str]:
    """Keys of the samples with no degradation and a correct caption (from the shards' json)."""
    return {m["key"] for m in sample_metadata(data) if not m["degradations"] and m["caption_kind"] == "correct"}


# ------------------------------------------------------------------------------------------- variance
def explained_fraction(x: torch.Tensor, groups: list) -> float:
    """Between-group share of the total per-pixel variance: what E[x | group] can remove from an MSE.

    Adjusted for the number of groups G (as an adjusted R^2): with N samples, group means of pure noise
    already "explain" about (G - 1) / N of the variance, which is subtracted."""
    index: dict = {}
    for i, g in enumerate(groups):
        index.setdefault(g, []).append(i)
    mean = x.mean(0)
    between = sum(len(ix) * ((x[ix].mean(0) - mean) ** 2).sum().item() for ix in index.values()) / len(x)
    return between / (x.var(0, unbiased=False).sum().item()) - (len(index) - 1) / len(x)


def cmd_variance(args) -> dict:
    data = Cached(args.data)
    words = [re.findall(r"[a-z]+", c.lower()) for c in data.captions]
    colour = [tuple(w for w in ws if w in COLORS) for ws in words]
    cls = [tuple(w for w in ws if w in CLASSES or w.rstrip("s") in CLASSES) for ws in words]
    out = {
        "samples": len(data),
        "pixel_variance_explained_by_colour_words": explained_fraction(data.x, colour),
        "pixel_variance_explained_by_class_words": explained_fraction(data.x, cls),
        "pixel_variance_explained_by_colour_and_class_words": explained_fraction(data.x, list(zip(colour, cls))),
        "image_mean_colour_variance_explained_by_colour_words": explained_fraction(data.x.mean((2, 3)), colour),
    }
    return out


# ------------------------------------------------------------------------------------------- gaps
@torch.no_grad()
def text_gaps(model: MiroTransformer, batch: dict, times=(0.1, 0.3, 0.5, 0.7, 0.9, 0.99), seed: int = 1) -> dict:
    """Loss with the sample's own text, relative change with a neighbour's text (shuffled) and with none."""
    model.eval()
    n = batch["x"].shape[0]
    noise = torch.randn(batch["x"].shape, generator=torch.Generator().manual_seed(seed))
    kw = {"rewards": batch["rewards"], "reward_mask": batch["reward_mask"]} if model.num_rewards else {}
    roll = torch.roll(torch.arange(n), 1)
    out = {}
    for tv in times:
        t = torch.full((n,), tv)
        s = LinearPath().sample(batch["x"], t, noise)

        def loss(text, mask, drop=None, s=s, t=t):
            return velocity_loss(model(s.x_t, t, text, mask, drop_text=drop, **kw), s.target).mean().item()

        own = loss(batch["text"], batch["text_mask"])
        shuffled = loss(batch["text"][roll], batch["text_mask"][roll])
        dropped = loss(batch["text"], batch["text_mask"], torch.ones(n, dtype=torch.bool))
        out[f"{tv:g}"] = {"loss": own, "shuffled_text_pct": 100 * (shuffled - own) / own,
                          "no_text_pct": 100 * (dropped - own) / own}
    return out


def cmd_gaps(args) -> dict:
    from miro.sampling.pipeline import MiroPipeline

    pixel_space_only(args.pipeline, "gaps")
    data = Cached(args.data)
    model = MiroPipeline.from_pretrained(args.pipeline).transformer.float()
    return text_gaps(model, data.batch(torch.arange(len(data) - 512, len(data))))


# ------------------------------------------------------------------------------------------- ablate
class RecipeVariant(MiroTransformer):
    """Exploratory output heads for ``ablate`` (not in the package: neither beat the plain head).

    ``xpred``: the network predicts the clean image x0 and the velocity is (x_t - x0) / max(t, 0.05) (JiT's
    x-prediction with the velocity loss).  ``conv_out``: a zero-initialised residual 3x3 convolution on the
    unpatchified output (U-ViT's extra conv against patch seams).  (Attribute names differ from the model's
    own ``conv_out`` module of ``conv_channels``.)"""

    def setup(self, xpred: bool = False, conv_out: bool = False) -> RecipeVariant:
        self.use_xpred = xpred
        self.residual_conv = torch.nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1) if conv_out else None
        if conv_out:
            torch.nn.init.zeros_(self.residual_conv.weight)
            torch.nn.init.zeros_(self.residual_conv.bias)
        return self

    def velocity(self, x, t, cond, cond_mask, pooled=None):
        out = super().velocity(x, t, cond, cond_mask, pooled)
        if getattr(self, "residual_conv", None) is not None:
            out = out + self.residual_conv(out)
        if getattr(self, "use_xpred", False):
            out = (x - out) / t.clamp(min=0.05).view(-1, 1, 1, 1)
        return out


VARIANTS = {
    "rewards": {},
    "no_rewards": {"rewards": False},
    "time_mean_1": {"time_mean": 1.0},
    "clean_data": {"clean": True},
    "no_pooled_text": {"model": {"pooled_text": False}},
    "xpred": {"xpred": True},
    "conv_out": {"conv_out": True},
    "patch2_w64": {"model": {"patch_size": 2, "width": 64}, "conv_out": True},
    "conv_stem": {"model": {"conv_channels": 32}},  # the tiny_conv preset
    "conv_levels2_time": {"model": {"conv_channels": 32, "conv_levels": 2, "patch_size": 2}},
    "conv_levels2": {"model": {"conv_channels": 32, "conv_levels": 2, "patch_size": 2, "conv_pooled_text": True}},  # tiny_unet
}


def recipe_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.AdamW:
    """AdamW with weight decay 0.01 on every parameter of two or more dimensions (the experiments' grouping since
    section 1, kept so their numbers reproduce; the package trainer's ``param_groups`` decays only linear and conv
    weights)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr)


def recipe_step(model, ema, opt, b: dict, step: int, steps: int, lr: float, warmup: int, times: TimeSampler,
                g: torch.Generator, autocast: bool = False) -> torch.Tensor:
    """One step of the recipe on batch ``b``: the learning rate at ``step`` (linear warm-up, cosine to a tenth),
    t and noise from ``g``, 10% text and reward dropout, the velocity loss (the forward under bf16 autocast
    with ``autocast``), clip 2, AdamW, EMA 0.999 with warm-up.  Returns the loss."""
    for group in opt.param_groups:
        group["lr"] = lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * step / steps)))
    n, r = len(b["x"]), model.num_rewards
    t = times(n, generator=g)
    s = LinearPath().sample(b["x"], t, torch.randn(b["x"].shape, generator=g))
    keep, drop = sample_condition_dropout(n, r, 0.1, 0.1, g)
    kw = {"rewards": b["rewards"], "reward_mask": b["reward_mask"] & keep} if r else {}
    model.train()
    with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
        out = model(s.x_t, t, b["text"], b["text_mask"], drop_text=drop, **kw)
    loss = velocity_loss(out.float(), s.target).mean()
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
    opt.step()
    d = min(0.999, (1 + step) / (10 + step))
    with torch.no_grad():
        for pe, p in zip(ema.parameters(), model.parameters()):
            pe.lerp_(p, 1 - d)
    return loss


def cmd_ablate(args) -> dict:
    """The demo's recipe (tiny preset, AdamW 1e-3, 100 warm-up steps, cosine to 0.1, clip 2, EMA 0.999 with
    warm-up, 10% text and reward dropout, logit-normal t) on in-memory cached data, one change per variant."""
    spec = VARIANTS[args.variant]
    torch.manual_seed(0)
    data = Cached(args.data)
    held = torch.arange(len(data) - 512, len(data))
    pool = torch.arange(len(data) - 512)
    if spec.get("clean"):
        clean = clean_keys(args.data)
        pool = pool[torch.tensor([data.keys[i] in clean for i in pool.tolist()])]
    cfg = {**TINY, "reward_names": REWARDS if spec.get("rewards", True) else [], **spec.get("model", {})}
    heads = {"xpred": spec.get("xpred", False), "conv_out": spec.get("conv_out", False) or args.conv_out}
    model = RecipeVariant(**cfg).setup(**heads)
    ema = RecipeVariant(**cfg).setup(**heads)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = recipe_optimizer(model, args.lr)
    times = TimeSampler("logit_normal", mean=spec.get("time_mean", 0.0), std=1.0)
    g = torch.Generator().manual_seed(0)
    r = model.num_rewards
    history = []
    start = time.perf_counter()
    for step in range(args.steps):
        b = data.batch(pool[torch.randint(len(pool), (args.batch,), generator=g)])
        loss = recipe_step(model, ema, opt, b, step, args.steps, args.lr, args.warmup, times, g)
        if (step + 1) % 100 == 0 or step + 1 == args.steps:
            gaps = text_gaps(ema, data.batch(held), times=(0.5, 0.9))
            history.append({"step": step + 1, "seconds": round(time.perf_counter() - start), "loss": loss.item(), **gaps})
            print(json.dumps(history[-1]), flush=True)
    if args.save_model:
        args.save_model.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, str(args.save_model))
    results = {"variant": args.variant, "history": history, "geneval": {}}
    targets = resolve_targets(args)
    for text_scale, reward_scale in args.scales:
        results["geneval"][f"text {text_scale:g} / reward {reward_scale:g}"] = geneval(
            ema, args.data, text_scale, reward_scale, args.images, targets=targets if r else 1.0)
        print(json.dumps(results["geneval"]), flush=True)
    return results


def reward_condition(n: int, r: int, targets: float | list | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The positive reward targets [n, r] and their mask: ``targets`` one value for every reward, or one per
    reward where None leaves that reward out (mask False), or None: no reward given at all (the condition reward
    dropout trains)."""
    if targets is None or not r:
        return torch.zeros(n, r), torch.zeros(n, r, dtype=torch.bool)
    values = targets if isinstance(targets, list) else [targets] * r
    given = torch.tensor([v is not None for v in values])
    pos = torch.tensor([0.0 if v is None else float(v) for v in values], dtype=torch.float32)
    return pos.expand(n, r).clone(), given.expand(n, r).clone()


# ------------------------------------------------------------------------------------------- geneval
def render_heldout(model: MiroTransformer, meta: list[dict], *args, **kwargs) -> list[list[dict]]:
    """The shapes detector's detections of each image of ``sample_heldout(model, meta, *args, **kwargs)``."""
    from PIL import Image

    from miro.data.shapes.detector import default_detector

    detector = default_detector()
    return [detector(Image.fromarray(p)) for p in sample_heldout(model, meta, *args, **kwargs)]


@torch.no_grad()
def sample_heldout(model: MiroTransformer, meta: list[dict], text_scale: float, reward_scale: float,
                   images: int = 1, steps: int = 25, seed: int = 0, targets: float | list[float] = 1.0,
                   interval: tuple[float, float] = (0.0, 1.0), method: str = "euler",
                   sde_noise: float = 0.7, class_contrast: tuple[float, float, float] | None = None,
                   decode=None) -> np.ndarray:  # fmt: skip
    """``images`` samples of a bare transformer (MiniLM text, pixel space) per metadata row (prompt-major), rewards
    at ``targets`` (one value, or one per reward in model order; None: no reward given, as in reward dropout),
    negative targets 0, decoupled guidance scales
    applied inside the noise-level ``interval``, ``steps`` steps of the ``method`` solver (``sde``: with noise scale
    ``sde_noise``, its fresh noise from a generator seeded ``seed + 1``), as uint8 [N, H, W, 3] pixels.
    ``class_contrast`` (lam, t_lo, t_hi), one-object prompts only: inside [t_lo, t_hi] the
    velocity gains lam (v(c, s+) - mean_j v(c_j, s+)), c_j the prompt with its class word replaced by each other
    class: a negative prompt per confusable class, guidance on the class word alone.  ``decode``: the
    pipeline's autoencoder decode for a latent-space model (``pipeline_decoder``); None for pixel space."""
    from miro.flow import flow_sigmas
    from miro.flow.solvers import integrate
    from miro.models.text_encoders import TextEncoder
    from miro.sampling import Conditions, Guidance, sample
    from miro.sampling.sampler import guided_velocity

    model.eval()
    emb, mask = TextEncoder().encode([m["prompt"] for m in meta])
    n, r = len(meta) * images, model.num_rewards
    emb, mask = emb.repeat_interleave(images, 0), mask.repeat_interleave(images, 0)
    pos, known = reward_condition(n, r, targets)
    conds = Conditions(text=emb, text_mask=mask, pos_rewards=pos, pos_mask=known,
                       neg_rewards=torch.zeros(n, r), neg_mask=known)
    guidance = Guidance(float(text_scale), (float(reward_scale),) * r, tuple(map(float, interval)))
    noise = torch.randn(n, model.config.in_channels, model.config.sample_size, model.config.sample_size,
                        generator=torch.Generator().manual_seed(seed))
    fresh = torch.Generator().manual_seed(seed + 1)
    solver = {"method": method, "sde_noise": sde_noise, "noise_fn": lambda: torch.randn(noise.shape, generator=fresh)}
    if class_contrast is None:
        out = sample(model, noise, conds, guidance, flow_sigmas(steps, 1.0), **solver)
    else:
        velocity = contrast_velocity(model, guided_velocity(model, conds, guidance), meta, images, conds,
                                     class_contrast)  # fmt: skip
        out = integrate(velocity, noise.float(), flow_sigmas(steps, 1.0), **solver)
    if decode is not None:
        with torch.no_grad():
            out = torch.cat([decode(out[i:i + 256]) for i in range(0, len(out), 256)])
    return ((out.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def contrast_velocity(model: MiroTransformer, base, meta: list[dict], images: int, conds,
                      class_contrast: tuple[float, float, float]):  # fmt: skip
    """``base`` (a guided velocity) plus lam (v(c, s+) - mean_j v(c_j, s+)) inside [t_lo, t_hi] (``render_heldout``)."""
    from miro.models.text_encoders import TextEncoder

    lam, lo, hi = class_contrast
    if any(len(m["include"]) != 1 for m in meta):
        raise SystemExit("--class-contrast: only for one-object prompts (the failures command)")
    others = len(CLASSES) - 1
    counterfactual = [m["prompt"].replace(m["include"][0]["class"], o) for m in meta for o in CLASSES
                      if o != m["include"][0]["class"]]  # fmt: skip
    emb, mask = TextEncoder().encode(counterfactual)
    emb = emb.view(len(meta), others, *emb.shape[1:]).repeat_interleave(images, 0).flatten(0, 1)
    mask = mask.view(len(meta), others, -1).repeat_interleave(images, 0).flatten(0, 1)
    rewards = {"rewards": conds.pos_rewards, "reward_mask": conds.pos_mask} if model.num_rewards else {}
    many = {k: v.repeat_interleave(others, 0) for k, v in rewards.items()}

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v = base(x, t)
        if lam and lo <= float(t[0]) <= hi:
            own = model(x, t, conds.text, conds.text_mask, **rewards)
            alt = model(x.repeat_interleave(others, 0), t.repeat_interleave(others, 0), emb, mask, **many)
            v = v + lam * (own - alt.view(x.shape[0], others, *x.shape[1:]).mean(1))
        return v

    return velocity


class AutoGuided(torch.nn.Module):
    """Autoguidance (Karras et al. 2024): v_good + lam (v_good - v_bad) at every condition, with ``bad`` a weaker
    model of the same kind (here an earlier export of the same run).  No ``encode_condition``: the sampler
    calls the plain forward of both."""

    def __init__(self, good: MiroTransformer, bad: MiroTransformer, scale: float):
        super().__init__()
        self.good, self.bad, self.scale = good, bad, float(scale)
        self.config, self.num_rewards = good.config, good.num_rewards

    def forward(self, x, t, *args, **kwargs):
        v = self.good(x, t, *args, **kwargs)
        return v + self.scale * (v - self.bad(x, t, *args, **kwargs))


class NoiseBandExperts(torch.nn.Module):
    """eDiff-I's expert denoisers: ``high`` predicts the velocity at noise levels t >= ``switch``, ``low`` below
    it (per sample; a batch shares its t in sampling, so one expert runs per step).  No ``encode_condition``."""

    def __init__(self, low: MiroTransformer, high: MiroTransformer, switch: float):
        super().__init__()
        self.low, self.high, self.switch = low, high, float(switch)
        self.config, self.num_rewards = low.config, low.num_rewards

    def forward(self, x, t, *args, **kwargs):
        up = (torch.as_tensor(t, device=x.device) >= self.switch).expand(x.shape[0])
        if bool(up.all()):
            return self.high(x, t, *args, **kwargs)
        if not bool(up.any()):
            return self.low(x, t, *args, **kwargs)
        shape = (-1,) + (1,) * (x.ndim - 1)
        return torch.where(up.view(shape), self.high(x, t, *args, **kwargs), self.low(x, t, *args, **kwargs))


def pipeline_decoder(folder: Path):
    """The pipeline's ``autoencoder.decode`` when it samples in a latent space, None in pixel space."""
    from miro.models.autoencoders import IdentityAutoencoder
    from miro.sampling.pipeline import MiroPipeline

    ae = MiroPipeline.from_pretrained(folder).autoencoder
    return None if isinstance(ae, IdentityAutoencoder) else ae.decode


def pixel_space_only(folder: Path, command: str) -> None:
    """The probes noise cached *pixels*: a latent-space pipeline stops them with a message."""
    if pipeline_decoder(folder) is not None:
        raise SystemExit(f"{command}: {folder} samples in an autoencoder's latent space; this probe is for pixel-space "
                         "models (curve and failures take either)")


def load_model(folder: Path, args) -> MiroTransformer:
    """A pipeline folder's transformer in fp32, autoguided by ``--autoguide`` when given."""
    from miro.sampling.pipeline import MiroPipeline

    model = MiroPipeline.from_pretrained(folder).transformer.float()
    if getattr(args, "expert_high", None) is not None:
        model = NoiseBandExperts(model, MiroPipeline.from_pretrained(args.expert_high).transformer.float(), args.switch)
    if getattr(args, "autoguide", None) is None:
        return model
    bad = MiroPipeline.from_pretrained(args.autoguide).transformer.float()
    return AutoGuided(model, bad, args.autoguide_scale)


def geneval(model: MiroTransformer, data: Path, text_scale: float, reward_scale: float, images: int = 1,
            steps: int = 25, seed: int = 0, targets: float | list[float] = 1.0, decode=None,
            rewards: Sequence[str] = (), **solver) -> dict:
    """Held-out shapes GenEval of a bare transformer (``sample_heldout``; ``solver``: its ``interval`` and
    ``method``).  Returns per-task accuracies and ``overall`` (in %); with ``rewards``, also each named reward's
    mean over the same images (``"rewards"``), read by its own scorer (so a model without reward tokens is read
    on the same scale as one with them: the paper's reward curves)."""
    from PIL import Image

    from annotate.scorers import build_scorer
    from miro.contracts.geneval_rules import result_row
    from miro.data.shapes.detector import default_detector
    from miro.eval.geneval.summary import summarize

    meta = [json.loads(line) for line in (data / "heldout" / "evaluation_metadata.jsonl").read_text().splitlines()]
    pixels = sample_heldout(model, meta, text_scale, reward_scale, images, steps, seed, targets, decode=decode, **solver)
    pictures = [Image.fromarray(p) for p in pixels]
    detector = default_detector()
    detections = [detector(img) for img in pictures]
    prompts = [meta[k // images]["prompt"] for k in range(len(pictures))]
    means = {name: round(float(np.nanmean(build_scorer(name).score(pictures, prompts))), 4) for name in rewards}
    rows = [result_row(str(i), meta[i // images], dets) for i, dets in enumerate(detections)]
    summary = summarize(rows)
    # colour alone: of the images whose prompt names colours, the share where the detector finds an object of
    # every named colour (any class, any count) - prompt following before the shapes are drawn well
    # (``colour_only_chance``: the same images scored against the colours of the next colour prompt, i.e.
    # how often an image holds some unrelated prompt's colours)
    coloured = [i for i in range(len(meta)) if any("color" in clause for clause in meta[i]["include"])]

    def colour_hits(shift: int) -> float:
        hits = []
        for i, dets in enumerate(detections):
            if i // images in coloured:
                target = coloured[(coloured.index(i // images) + shift) % len(coloured)]
                found = {d["color"] for d in dets}
                hits.append(all(c["color"] in found for c in meta[target]["include"] if "color" in c))
        return round(100 * sum(hits) / max(1, len(hits)), 1)

    return {**{k: round(100 * v["accuracy"], 1) for k, v in summary["tasks"].items()},
            "overall": round(100 * summary["overall"], 1),
            "colour_only": colour_hits(0), "colour_only_chance": colour_hits(1),
            **({"rewards": means} if rewards else {})}


def single_objects(data: Path, limit: int) -> list[dict]:
    """Up to ``limit`` clean (undegraded), correctly captioned training samples that show exactly one object
    (the single_object and colors tasks): ``{"key", "caption", "class", "color"}``, in shard order."""
    out = []
    for meta in sample_metadata(data):
        objects = meta["scene"]["objects"]
        if meta["degradations"] or meta["caption_kind"] != "correct" or len(objects) != 1:
            continue
        if meta["task"] in ("single_object", "colors"):
            out.append({"key": meta["key"], "caption": meta["caption"], "class": objects[0]["class"],
                        "color": objects[0]["color"]})
            if len(out) == limit:
                break
    return out


def probe_items(data: Path, limit: int) -> tuple[list[dict], dict, list[str]]:
    """The probes' samples (``single_objects``), their cached batch, and per sample the class that an edited
    caption names instead of its own (the next class of the vocabulary)."""
    items = single_objects(data, limit)
    if not items:
        raise SystemExit(f"no clean one-object training samples in {data / 'train'}")
    cached = Cached(data)
    row = {k: i for i, k in enumerate(cached.keys)}
    batch = cached.batch(torch.tensor([row[it["key"]] for it in items]))
    return items, batch, [CLASSES[(CLASSES.index(it["class"]) + 1) % len(CLASSES)] for it in items]


def shape_probe(model: MiroTransformer, data: Path, times=(0.5, 0.7, 0.85), limit: int = 96, steps: int = 25,
                text_scale: float = 3.0, reward_scale: float = 1.0, targets: float | list[float] = 1.0,
                seed: int = 0) -> dict:
    """Does the prompt decide the drawn shape?  Clean one-object training images are noised to each t in
    ``times`` (the object's place and colour survive the noise, its outline does not) and sampled back to
    t = 0 from there with the guidance given, (a) with their own caption and (b) with the caption "a photo
    of a <colour> <other class>" (the next class in the vocabulary).  Returns, per t, the % of images whose
    detected classes include the caption's class: ``kept`` (a) and ``edited`` (b), and ``edit_chance``: how
    often (b)'s images still show the original class.  A model that draws shapes from the text has high
    ``kept`` and ``edited`` at large t; one that only denoises what it sees has ``kept`` high at small t and
    ``edited`` near 0 (or 1/8, the chance of drawing any given class) everywhere."""
    from miro.data.shapes.detector import default_detector
    from miro.models.text_encoders import TextEncoder
    from miro.sampling import Conditions, Guidance, sample

    model.eval()
    items, batch, other = probe_items(data, limit)
    x0 = batch["x"]
    encoder = TextEncoder()
    prompts = {"kept": [it["caption"] for it in items],
               "edited": [f"a photo of a {it['color']} {o}" for it, o in zip(items, other)]}
    wanted = {"kept": [it["class"] for it in items], "edited": other}
    n, r = len(items), model.num_rewards
    pos, known = reward_condition(n, r, targets)
    guidance = Guidance(float(text_scale), (float(reward_scale),) * r)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    detector = default_detector()
    result = {"images": n}
    for t in times:
        sigmas = torch.linspace(float(t), 0.0, max(2, round(steps * t) + 1))
        x_t = (1 - t) * x0 + t * noise
        result[f"t={t:g}"] = res = {}
        for kind, texts in prompts.items():
            emb, mask = encoder.encode(texts)
            conds = Conditions(text=emb, text_mask=mask, pos_rewards=pos, pos_mask=known,
                               neg_rewards=torch.zeros(n, r), neg_mask=known)
            with torch.no_grad():
                out = sample(model, x_t, conds, guidance, sigmas)
            pixels = ((out.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            found = [{d["class"] for d in detector(p)} for p in pixels]
            res[kind] = round(100 * float(np.mean([w in f for w, f in zip(wanted[kind], found)])), 1)
            if kind == "edited":
                res["edit_chance"] = round(100 * float(np.mean([it["class"] in f for it, f in zip(items, found)])), 1)
        print(f"t={t:g}", json.dumps(res), flush=True)
    return result


def class_gap(model: MiroTransformer, data: Path, times=(0.3, 0.5, 0.6, 0.7, 0.8), limit: int = 192,
              seeds: int = 3) -> dict:
    """How much the class word moves the prediction: on clean one-object training images the velocity loss
    with the caption "a photo of a <colour> <class>" (own) against the same caption naming the next class of
    the vocabulary (other) and against no text, at the same x_t, t and rewards, averaged over ``seeds``
    noise draws.  ``other_class_pct`` = 100 (other - own) / own: zero for a model that ignores the class word.
    A continuous, sampling-free reading of what ``shapes`` measures with the detector, already visible
    after 1,000 training steps (docs/text_conditioning.md, section 12)."""
    from miro.models.text_encoders import TextEncoder

    model.eval()
    items, batch, other = probe_items(data, limit)
    encoder = TextEncoder()
    own = encoder.encode([f"a photo of a {it['color']} {it['class']}" for it in items])
    edited = encoder.encode([f"a photo of a {it['color']} {o}" for it, o in zip(items, other)])
    n = len(items)
    kw = {"rewards": batch["rewards"], "reward_mask": batch["reward_mask"]} if model.num_rewards else {}
    result = {"images": n, "seeds": seeds}
    for tv in times:
        t = torch.full((n,), float(tv))
        sums = np.zeros(3)
        for seed in range(seeds):
            noise = torch.randn(batch["x"].shape, generator=torch.Generator().manual_seed(seed))
            path = LinearPath().sample(batch["x"], t, noise)
            for j, ((emb, mask), drop) in enumerate([(own, None), (edited, None),
                                                      (own, torch.ones(n, dtype=torch.bool))]):
                with torch.no_grad():
                    v = model(path.x_t, t, emb, mask, drop_text=drop, **kw)
                sums[j] += velocity_loss(v, path.target).mean().item() / seeds
        result[f"t={tv:g}"] = res = {"loss": round(sums[0], 5),
                                     "other_class_pct": round(100 * (sums[1] - sums[0]) / sums[0], 2),
                                     "no_text_pct": round(100 * (sums[2] - sums[0]) / sums[0], 2)}
        print(f"t={tv:g}", json.dumps(res), flush=True)
    return result


def cmd_classgap(args) -> dict:
    from miro.sampling.pipeline import MiroPipeline

    if args.pipeline is None:
        raise SystemExit("classgap: --pipeline is required")
    pixel_space_only(args.pipeline, "classgap")
    model = MiroPipeline.from_pretrained(args.pipeline).transformer.float()
    return {"pipeline": str(args.pipeline), **class_gap(model, args.data, limit=2 * args.images_probe)}


def sampling_setup(args, command: str) -> tuple[MiroTransformer, float, float, float | list[float]]:
    """The pipeline's transformer, the first ``--scales`` pair and the targets of a command that samples."""
    if args.pipeline is None:
        raise SystemExit(f"{command}: --pipeline is required")
    model = load_model(args.pipeline, args)
    (text_scale, reward_scale), = args.scales[:1]
    return model, text_scale, reward_scale, (resolve_targets(args) if model.num_rewards else 1.0)


def cmd_shapes(args) -> dict:
    if args.pipeline is not None:
        pixel_space_only(args.pipeline, "shapes")
    model, text_scale, reward_scale, targets = sampling_setup(args, "shapes")
    return {"pipeline": str(args.pipeline), "text_scale": text_scale, "reward_scale": reward_scale,
            **shape_probe(model, args.data, tuple(args.times), args.images_probe, text_scale=text_scale,
                          reward_scale=reward_scale, targets=targets)}


def failure_modes(model: MiroTransformer, data: Path, text_scale: float, reward_scale: float, images: int = 4,
                  steps: int = 25, targets: float | list[float] = 1.0, decode=None, **solver) -> dict:  # fmt: skip
    """Where one-object prompts fail: on the held-out single_object and colors prompts, how many objects the
    detector finds, whether the most confident one has the prompt's class, whether any has it, whether any has
    the prompt's colour, and the confusion of the wanted class against the most confident detection's."""
    meta = [json.loads(line) for line in (data / "heldout" / "evaluation_metadata.jsonl").read_text().splitlines()]
    meta = [m for m in meta if m["tag"] in ("single_object", "colors")]
    detections = render_heldout(model, meta, text_scale, reward_scale, images, steps, 0, targets, decode=decode,
                                **solver)
    from miro.contracts.geneval_rules import RuleOptions

    floor = RuleOptions().threshold  # GenEval's score floor for every tag but counting
    detections = [[d for d in dets if d["score"] > floor] for dets in detections]
    out: dict = {}
    confusion: dict[str, dict[str, int]] = {}
    for i, dets in enumerate(detections):
        m = meta[i // images]
        want = m["include"][0]
        tag = out.setdefault(m["tag"], {"images": 0, "objects": {"0": 0, "1": 0, "2": 0, "3+": 0}, "top_class": 0,
                                        "any_class": 0, "any_colour": 0, "colour_prompts": 0})  # fmt: skip
        tag["images"] += 1
        tag["objects"][str(len(dets)) if len(dets) < 3 else "3+"] += 1
        if dets:
            top = max(dets, key=lambda d: d["score"])["class"]
            tag["top_class"] += top == want["class"]
            tag["any_class"] += any(d["class"] == want["class"] for d in dets)
            row = confusion.setdefault(want["class"], {})
            row[top] = row.get(top, 0) + 1
        if "color" in want:
            tag["colour_prompts"] += 1
            tag["any_colour"] += any(d["color"] == want["color"] for d in dets)
    for tag in out.values():
        for key in ("top_class", "any_class"):
            tag[key + "_pct"] = round(100 * tag[key] / tag["images"], 1)
        if tag["colour_prompts"]:
            tag["any_colour_pct"] = round(100 * tag["any_colour"] / tag["colour_prompts"], 1)
    return {"tasks": out, "confusion": confusion, "images_per_prompt": images, "steps": steps, **solver}


def cmd_failures(args) -> dict:
    model, text_scale, reward_scale, targets = sampling_setup(args, "failures")
    result = failure_modes(model, args.data, text_scale, reward_scale, args.images, args.sample_steps, targets,
                           decode=pipeline_decoder(args.pipeline), **solver_args(args))
    print(json.dumps(result["tasks"], indent=1))
    return {"pipeline": str(args.pipeline), "text_scale": text_scale, "reward_scale": reward_scale, **result}


def autoencoder_fidelity(folder: Path, data: Path, limit: int = 480) -> dict:
    """What a latent-space model can reach at best: clean one-object training images (``single_objects``) and their
    reconstructions through the autoencoder at ``folder`` (posterior mean, then decode), each read by the detector
    (the most confident object's class and colour) at GenEval's score floor; and the reconstruction MSE in [-1, 1]."""
    from PIL import Image

    from miro.contracts.geneval_rules import RuleOptions
    from miro.data.shapes.detector import default_detector
    from miro.models.autoencoders import KLAutoencoder

    items = single_objects(data, limit)
    if not items:
        raise SystemExit(f"no clean one-object training samples in {data / 'train'}")
    cached = Cached(data)
    row = {k: i for i, k in enumerate(cached.keys)}
    x = cached.x[torch.tensor([row[it["key"]] for it in items])]
    ae = KLAutoencoder(str(folder), normalization="scale")
    with torch.no_grad():
        rec = torch.cat([ae.decode(ae.encode(x[i:i + 256])) for i in range(0, len(x), 256)])
    detector, floor = default_detector(), RuleOptions().threshold

    def read(images: torch.Tensor) -> dict:
        pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        hits = {"class": 0, "colour": 0, "one_object": 0}
        for it, p in zip(items, pixels):
            dets = [d for d in detector(Image.fromarray(p)) if d["score"] > floor]
            top = max(dets, key=lambda d: d["score"]) if dets else {}
            hits["class"] += top.get("class") == it["class"]
            hits["colour"] += top.get("color") == it["color"]
            hits["one_object"] += len(dets) == 1
        return {k + "_pct": round(100 * v / len(items), 1) for k, v in hits.items()}

    return {"autoencoder": str(folder), "images": len(items), "original": read(x), "reconstruction": read(rec),
            "mse": round(float((rec - x).pow(2).mean()), 5)}


def cmd_autoencoder(args) -> dict:
    if args.autoencoder is None:
        raise SystemExit("autoencoder: --autoencoder FOLDER (a python -m miro.train.autoencoder output) is required")
    return autoencoder_fidelity(args.autoencoder, args.data, 5 * args.images_probe)


def clean_targets(data: Path) -> list[float]:
    """Per reward, the median value of the clean, correctly captioned training samples: the targets that ask
    for what a clean image of this world looks like (every reward at 1 is a corner no image occupies)."""
    cached = Cached(data)
    clean = clean_keys(data)
    rows = torch.tensor([k in clean for k in cached.keys])
    return [round(float(cached.rewards[rows, i].median()), 3) for i in range(len(REWARDS))]


def resolve_targets(args) -> float | list[float]:
    """``--targets`` (a value for every reward, or the clean medians), then each ``--set-target NAME=VALUE``
    (one reward's slider moved, the others kept)."""
    if args.targets == "none":
        if getattr(args, "set_target", None):
            raise SystemExit("--set-target needs --targets clean or a value, not none")
        return None
    targets = clean_targets(args.data) if args.targets == "clean" else float(args.targets)
    overrides = getattr(args, "set_target", None) or []
    if overrides:
        targets = list(targets) if isinstance(targets, list) else [targets] * len(REWARDS)
        for item in overrides:
            name, _, value = item.partition("=")
            if name not in REWARDS or not value:
                raise SystemExit(f"--set-target {item!r}: expected NAME=VALUE with NAME one of {REWARDS}")
            v = None if value == "none" else float(value)
            if v is not None and not 0.0 <= v <= 1.0:
                raise SystemExit(f"--set-target {item!r}: the target must be in [0, 1] or none (left out)")
            targets[REWARDS.index(name)] = v
    return targets


def export_step(folder: Path) -> int:
    """The training step of an export: ``pipelines/step-N`` is N, ``final`` its run's max_steps (-1 if unknown)."""
    if folder.name.startswith("step-"):
        return int(folder.name.split("-")[1])
    meta = folder / "miro_training.json"
    return json.loads(meta.read_text()).get("max_steps", -1) if meta.exists() else -1


def cmd_curve(args) -> dict:
    if (args.run is None) == (args.pipeline is None):
        raise SystemExit("curve: give a training run (--run) or one pipeline (--pipeline)")
    if args.pipeline is not None:
        folders = [Path(args.pipeline)]
    else:
        run = Path(args.run)
        folders = sorted((run / "pipelines").glob("step-*")) + ([run / "final"] if (run / "final").is_dir() else [])
    steps = {folder: export_step(folder) for folder in folders}  # -1 (unknown) stays -1, not offset
    steps = {folder: step + args.step_offset if step >= 0 else step for folder, step in steps.items()}
    if args.exports:  # only these steps' exports (a run still training keeps adding folders); final is its max_steps
        folders = [f for f in folders if steps[f] in args.exports]
        if not folders:
            where = args.pipeline or f"{args.run / 'pipelines'} or {args.run / 'final'}"
            raise SystemExit(f"no export of steps {args.exports} in {where}")
    targets = resolve_targets(args)
    results = {"targets": targets, "sample_steps": args.sample_steps, "seed": args.seed, **solver_args(args)}
    for folder in folders:
        step = steps[folder]
        model, decode = load_model(folder, args), pipeline_decoder(folder)
        results[str(step)] = {}
        for text_scale, reward_scale in args.scales:
            key = f"text {text_scale:g} / reward {reward_scale:g}"
            results[str(step)][key] = geneval(model, args.data, text_scale, reward_scale, args.images, args.sample_steps,
                                              seed=args.seed,
                                              targets=targets if model.num_rewards else 1.0, decode=decode,
                                              rewards=args.score_rewards or (), **solver_args(args))
            print(step, key, json.dumps(results[str(step)][key]), flush=True)
    return results


def curve_rows(result: dict) -> list[dict]:
    """A ``curve`` result (one guidance setting) as rows by step: GenEval overall and per task (in %) and the
    mean of every reward read with ``--score-rewards``."""
    rows = []
    for step in sorted((k for k in result if k.isdigit()), key=int):
        if len(result[step]) != 1:
            raise SystemExit(f"step {step}: {len(result[step])} guidance settings; speedup and draws read curves of "
                             "one guidance setting")
        (setting,) = result[step].values()
        rows.append({"step": int(step), **{k: v for k, v in setting.items() if isinstance(v, (int, float))},
                     **setting.get("rewards", {})})
    return rows


def merge_curves(spec: str) -> dict:
    """One run's ``curve`` result from one file or several joined by commas (the stages of a run trained in
    stages, each read with its ``--step-offset``): their steps joined, refused when the files were read with
    different protocols (targets, steps, seed, solver) or share a step."""
    merged: dict = {}
    for name in spec.split(","):
        part = json.loads(Path(name).read_text())
        for key, value in part.items():
            if key.isdigit() and key in merged:
                raise SystemExit(f"{name}: step {key} is in two of the files of {spec!r}")
            if not key.isdigit() and key in merged and merged[key] != value:
                raise SystemExit(f"{name}: {key} is {value!r}, another file of {spec!r} has {merged[key]!r}: "
                                 "the curves of one run must be read with one protocol")
            merged[key] = value
    return merged


def cmd_speedup(args) -> dict:
    """The paper's convergence speed-up between two ``curve`` results of runs with the same schedule (the
    baseline first): per metric the baseline's final (the mean of its last exports), the step from which the
    conditioned run holds it, and the ratio (``shapes_replication.speedups``)."""
    from shapes_replication import FINAL_WINDOW, plot_curves, speedups

    if not args.curves:
        raise SystemExit("speedup: give two curve results, --curves BASELINE.json MIRO.json")
    base, miro = (curve_rows(merge_curves(f)) for f in args.curves)
    if [r["step"] for r in base] != [r["step"] for r in miro] or len(base) < 2:
        raise SystemExit(f"speedup: the curves must share their steps (>= 2): {[r['step'] for r in base]} "
                         f"against {[r['step'] for r in miro]}")
    window = FINAL_WINDOW if args.final_window is None else args.final_window
    metrics = [k for k in base[-1] if k != "step" and k in miro[-1] and not k.startswith("colour_only")]
    try:
        result = speedups({"baseline": base, "miro": miro}, metrics, window=window)
    except ValueError as err:  # speedups owns the window's range
        raise SystemExit(f"--final-window: {err}") from None
    if args.plot:
        plot_curves({"baseline": base, "MIRO": miro}, result, args.plot)
    return result


def draw_setting(path: Path) -> tuple[dict, dict]:
    """One draw: a ``curve`` result of one pipeline at one guidance setting, as (its protocol, its scores)."""
    result = json.loads(Path(path).read_text())
    rows = curve_rows(result)  # refuses a step read at several settings
    if len(rows) != 1:
        raise SystemExit(f"{path}: a draw is a curve of one pipeline at one guidance setting; it has steps "
                         f"{[r['step'] for r in rows]}")
    protocol = {k: v for k, v in result.items() if not k.isdigit() and k != "seed"}
    return protocol, {"seed": result["seed"], **{k: v for k, v in rows[0].items() if k != "step"}}


def paired_draws(files: list[Path], against: list[Path] | None = None) -> dict:
    """Draws of one model (``curve --seed S``: the same held-out prompts, other noise) summed up as the pages report
    them: the overall per seed and every task's mean over the draws; with ``against`` (another model's draws),
    the difference paired on the same seeds, overall per seed and every task's mean.  Draws read with different
    protocols (targets, solver, steps) or the same seed twice are refused: their mean would mix two measurements."""
    def read(paths: list[Path], protocol: dict | None = None) -> tuple[dict, dict[int, dict]]:
        by_seed: dict[int, dict] = {}
        for path in paths:
            proto, scores = draw_setting(path)
            protocol = proto if protocol is None else protocol
            if proto != protocol:
                raise SystemExit(f"{path}: read with {proto}, the other draws with {protocol}")
            seed = scores.pop("seed")
            if seed in by_seed:
                raise SystemExit(f"{path}: seed {seed} is drawn twice")
            by_seed[seed] = scores
        return protocol, by_seed

    def mean(by_seed: dict[int, dict]) -> dict:
        keys = [k for k in next(iter(by_seed.values())) if all(k in s for s in by_seed.values())]
        return {k: round(sum(s[k] for s in by_seed.values()) / len(by_seed), 1) for k in keys}

    protocol, model = read(files)
    out = {"protocol": protocol, "seeds": list(model), "overall": {s: v["overall"] for s, v in model.items()},
           "mean": mean(model)}
    if against:
        _, other = read(against, protocol)  # one protocol for both: a paired difference needs one measurement
        if set(other) != set(model):
            raise SystemExit(f"--against: its seeds {sorted(other)} are not the draws' seeds {sorted(model)}")
        diff = {s: {k: round(model[s][k] - other[s][k], 1) for k in model[s] if k in other[s]} for s in model}
        out["against"] = {"overall": {s: v["overall"] for s, v in other.items()}, "mean": mean(other),
                          "difference": {"overall": {s: d["overall"] for s, d in diff.items()}, "mean": mean(diff)}}
    return out


def cmd_draws(args) -> dict:
    if not args.draws:
        raise SystemExit("draws: give a model's draws, --draws A_s1.json A_s0.json ... [--against B_s1.json ...]")
    return paired_draws(args.draws, args.against)


def spread_heldout(data: Path, limit: int) -> list[dict]:
    """``limit`` held-out metadata rows spread evenly over the file (so over its tasks, which it lists in turn)."""
    meta = [json.loads(line) for line in (data / "heldout" / "evaluation_metadata.jsonl").read_text().splitlines()]
    return meta[:: max(1, len(meta) // limit)][:limit]


def cmd_sliders(args) -> dict:
    """Each reward's slider on a pipeline: its target over ``--values`` with the others at ``--targets`` and
    ``--set-target``, on ``--slider-prompts`` held-out prompts x ``--images`` seeds (the same noise at every value),
    read by that reward's own scorer (Spearman between target and score, the mean per value) and by GenEval on the
    same images (so the alignment slider's effect on prompt following is read where it is moved)."""
    from PIL import Image
    from scipy.stats import spearmanr

    from annotate.scorers import build_scorer
    from miro.contracts.geneval_rules import result_row
    from miro.data.shapes.detector import default_detector
    from miro.eval.geneval.summary import summarize

    if args.pipeline is None:
        raise SystemExit("sliders: give a pipeline (--pipeline)")
    model, decode = load_model(args.pipeline, args), pipeline_decoder(args.pipeline)
    if list(model.reward_names) != REWARDS:
        raise SystemExit(f"sliders: the pipeline's rewards are {list(model.reward_names)}; this script sweeps {REWARDS}")
    sweep = args.sweep or REWARDS
    unknown = [name for name in sweep if name not in REWARDS]
    if unknown:
        raise SystemExit(f"--sweep {unknown}: expected names among {REWARDS}")
    base = resolve_targets(args)
    base = [None] * len(REWARDS) if base is None else list(base) if isinstance(base, list) else [base] * len(REWARDS)
    items = spread_heldout(args.data, args.slider_prompts)
    text_scale, reward_scale = args.scales[0]
    detector = default_detector()
    prompts = [items[k // args.images]["prompt"] for k in range(len(items) * args.images)]
    result = {"base_targets": base, "values": args.values, "prompts": [it["prompt"] for it in items],
              "images": args.images, "scales": [text_scale, reward_scale], "seed": args.seed, "rewards": {}}
    for name in sweep:
        scorer, column = build_scorer(name), REWARDS.index(name)
        xs, scores, per_value = [], [], {}
        for value in args.values:
            targets = list(base)
            targets[column] = value
            pixels = sample_heldout(model, items, text_scale, reward_scale, args.images, args.sample_steps, args.seed,
                                    targets, decode=decode, **solver_args(args))  # fmt: skip
            images = [Image.fromarray(p) for p in pixels]
            score = np.asarray(scorer.score(images, prompts), dtype=np.float64)
            rows = [result_row(str(k), items[k // args.images], detector(img)) for k, img in enumerate(images)]
            per_value[f"{value:g}"] = {"mean": round(float(np.nanmean(score)), 4),
                                       "geneval": round(100 * summarize(rows)["overall"], 1)}
            xs += [value] * len(score)
            scores += score.tolist()
        finite = np.isfinite(scores)
        if np.ptp(np.asarray(scores)[finite]) > 0:
            rho, pval = (round(float(v), 3 if i == 0 else 6) for i, v in enumerate(spearmanr(xs, scores, nan_policy="omit")))
        else:  # the reward does not move at all: no rank correlation is defined (null in the JSON, not NaN)
            rho = pval = None
        result["rewards"][name] = {"spearman": rho, "p": pval, "per_value": per_value}
        print(name, json.dumps(result["rewards"][name]), flush=True)
    return result


def solver_args(args) -> dict:
    """The sampling commands' solver options: the guidance interval in t, the solver and the SDE's noise scale."""
    out = {"interval": args.interval, "method": args.method, "sde_noise": args.sde_noise}
    if args.class_contrast:
        out["class_contrast"] = (args.class_contrast, *args.class_contrast_interval)
    return out


def scale_pair(text: str) -> tuple[float, float]:
    a, b = text.split(",")
    return float(a), float(b)


def parse_args(argv=None) -> argparse.Namespace:
    from miro.contracts.rewards import REWARD_NAMES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["variance", "gaps", "ablate", "curve", "shapes", "classgap", "failures",
                                        "autoencoder", "sliders", "speedup", "draws"])
    p.add_argument("--data", type=Path, default=Path("runs/demo/data"), help="a shapes world with its feature cache")
    p.add_argument("--pipeline", type=Path, help="gaps, shapes, classgap, failures, curve: a MiroPipeline folder")
    p.add_argument("--autoencoder", type=Path, help="autoencoder: a python -m miro.train.autoencoder output folder")
    p.add_argument("--run", type=Path, help="curve: a training run folder (pipelines/step-*, final), every export")
    p.add_argument("--exports", type=int, nargs="+", help="curve: evaluate only the exports of these steps (final counts as its max_steps; both after --step-offset)")
    p.add_argument("--variant", choices=sorted(VARIANTS), default="rewards")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100, help="ablate: linear warm-up steps")
    p.add_argument("--conv-out", action="store_true", help="ablate: add the conv_out head to any variant")
    p.add_argument("--scales", type=scale_pair, nargs="+", default=[(0.0, 0.0), (3.0, 0.0), (3.0, 3.0)],
                   help="text,reward guidance scale pairs (3,3 = the joint scale 3)")
    p.add_argument("--images", type=int, default=1, help="images per held-out prompt")
    p.add_argument("--set-target", action="append", metavar="NAME=VALUE",
                   help="one reward's target after --targets (repeatable), e.g. alignment=0; "
                   "NAME=none leaves that reward out of the condition")
    p.add_argument("--targets", default="1.0", help="reward targets for GenEval: a value for all, 'clean' "
                   "(per reward the median of the clean, correctly captioned training samples) or 'none' (no reward "
                   "given: the reward-dropped condition)")
    p.add_argument("--times", type=float, nargs="+", default=[0.5, 0.7, 0.85], help="shapes: noise levels")
    p.add_argument("--images-probe", type=int, default=96,
                   help="shapes: clean one-object images probed (classgap: twice as many)")
    p.add_argument("--sample-steps", type=int, default=25, help="curve, failures: solver steps")
    p.add_argument("--interval", type=scale_pair, default=(0.0, 1.0),
                   help="curve, failures: guidance only at noise levels t_lo,t_hi (default 0,1: everywhere)")
    p.add_argument("--method", choices=list(METHODS), default="euler", help="curve, failures: the solver")
    p.add_argument("--sde-noise", type=float, default=DEFAULT_SDE_NOISE,
                   help="curve, failures: the sde solver's noise scale a (g = a sqrt(t / (1 - t)))")
    p.add_argument("--autoguide", type=Path, help="curve, failures: autoguidance by this weaker pipeline (an early export)")
    p.add_argument("--autoguide-scale", type=float, default=1.0, help="curve, failures: autoguidance's lam")
    p.add_argument("--class-contrast", type=float, default=0.0,
                   help="failures: guidance lam on the class word against every other class (0: off)")
    p.add_argument("--class-contrast-interval", type=scale_pair, default=(0.3, 0.8),
                   help="failures: the noise levels t_lo,t_hi where --class-contrast applies")
    p.add_argument("--expert-high", type=Path, help="curve, failures: a pipeline whose transformer takes the noise "
                   "levels t >= --switch (eDiff-I's experts; --pipeline then takes those below)")
    p.add_argument("--switch", type=float, default=0.5, help="curve, failures: the noise level where experts switch")
    p.add_argument("--seed", type=int, default=0, help="curve: the seed of the held-out images' noise (0: every "
                   "earlier number; another seed is a second, independent draw of the same prompts)")
    p.add_argument("--values", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0],
                   help="sliders: the swept reward's targets")
    p.add_argument("--sweep", nargs="+", help=f"sliders: the rewards swept (default: all of {REWARDS})")
    p.add_argument("--slider-prompts", type=int, default=16, help="sliders: held-out prompts, spread over the tasks")
    p.add_argument("--curves", nargs=2, metavar=("BASELINE", "MIRO"),
                   help="speedup: two curve results (--out), the baseline's first; each may join a staged run's "
                   "files with commas (A.json,B.json)")
    p.add_argument("--draws", type=Path, nargs="+",
                   help="draws: one model's curve results of one setting, one per --seed (the paired draws)")
    p.add_argument("--against", type=Path, nargs="+",
                   help="draws: another model's draws at the same seeds, for the paired difference")
    p.add_argument("--step-offset", type=int, default=0,
                   help="curve: add this to every export's step (the second stage of a run: the first stage's steps)")
    p.add_argument("--final-window", type=int,
                   help="speedup: the baseline's final is the mean of its last N exports (default 3; 1: the final "
                   "alone, for a schedule that anneals at its end)")
    p.add_argument("--plot", type=Path, help="speedup: also draw both runs' curves here (PNG)")
    p.add_argument("--score-rewards", nargs="+", metavar="REWARD", choices=list(REWARD_NAMES),
                   help="curve: also read these rewards' mean on the same images (any model, with reward tokens or not)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, help="write the JSON result here")
    p.add_argument("--save-model", type=Path, help="ablate: save the EMA weights here (safetensors)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {"variance": cmd_variance, "gaps": cmd_gaps, "ablate": cmd_ablate, "curve": cmd_curve,
              "shapes": cmd_shapes, "classgap": cmd_classgap, "failures": cmd_failures,
              "autoencoder": cmd_autoencoder, "sliders": cmd_sliders, "speedup": cmd_speedup,
              "draws": cmd_draws}[args.command](args)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
