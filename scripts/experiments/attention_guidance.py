"""Attention-guided sampling against the two misses of the shipped model's colour attribution (issue #10): a class
left out, and colours on the wrong objects.  docs/text_conditioning.md, section 34.

Two published sampling-time fixes for exactly these failures of Stable Diffusion, both of which move the noisy image
x_t along the gradient of a loss on the U-Net's cross-attention maps during the first denoising steps:

- ``excite`` (Attend-and-Excite, Chefer et al. 2023, "catastrophic neglect"): each class word of the prompt should
  have a strong spot in its attention map.  The maps are the cross-attention probabilities at one resolution,
  averaged over heads and layers, restricted to the prompt's tokens without [CLS] and [SEP] and re-normalised over
  them with a softmax of 100 x the probabilities, each word's map Gaussian-smoothed (3x3, sigma 0.5); the loss is
  ``max over classes of (1 - max over pixels)``.
- ``bind`` (SynGen, Rassin et al. 2023, "linguistic binding"): each colour's map should overlap its own noun's
  (symmetric KL of the two maps as distributions over pixels) and differ from the other words' (minus half the mean
  symmetric KL to them).

The update is x_t <- x_t - scale sqrt(1 - step / 50) g / rms(g) at each of the first ``--guided-steps`` of the 25
Euler steps (g per image, normalised: raw gradients differ by 100x between the two losses and the resolutions), and
the step is then the pipeline's own (the same guided velocity, text 3 / reward 1, the alignment target alone, bf16
autocast where the CPU has it).  ``--mode none`` is the plain sampler through the same loop: it reproduces the
pipeline's images for the same seeds (image ``j`` of prompt ``i``: ``seed * 1_000_003 + i * 64 + j``, as
``binding_failures.py``), so the comparison is paired.

    python scripts/experiments/attention_guidance.py --mode excite --resolution 8 --scale 0.03 --out runs/ae.json

Each image is sorted with ``binding_failures.failure_kind`` (the detector with GenEval's rules).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from binding_failures import KINDS, failure_kind, heldout_rows, image_seed, report  # noqa: E402

MODES = ("none", "excite", "bind")
SCHEDULE_STEPS = 50  # the step-size decay sqrt(1 - step / 50): Attend-and-Excite's 1 -> 0.5 over its 25 guided steps


class CrossAttentionRecorder:
    """Records the cross-attention probabilities of every ``attn2`` of a diffusers U-Net while ``recording()``.

    The processor computes attention as diffusers' ``AttnProcessor`` does (scores, mask, softmax, values, output
    projection), so the velocity is the one the default processor gives, to rounding; outside ``recording()`` it
    keeps nothing."""

    def __init__(self, unet: torch.nn.Module):
        self.maps: list[torch.Tensor] = []
        self.active = False
        self.layers = [m for name, m in unet.named_modules() if name.endswith("attn2")]
        if not self.layers:
            raise ValueError("the network has no cross-attention layers (attn2) to record")
        for layer in self.layers:
            layer.set_processor(self)

    @contextmanager
    def recording(self):
        self.maps, self.active = [], True
        try:
            yield self
        finally:
            self.active = False

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        b, n, _ = hidden_states.shape
        mask = attn.prepare_attention_mask(attention_mask, encoder_hidden_states.shape[1], b)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        probs = attn.get_attention_scores(query, key, mask)
        if self.active:
            self.maps.append(probs.view(b, attn.heads, n, -1).float().mean(1))  # [B, pixels, keys]
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        return attn.to_out[1](attn.to_out[0](out))

    def mean_map(self, resolution: int) -> torch.Tensor:
        """[B, resolution^2, keys]: the recorded maps of that resolution, averaged over layers."""
        maps = [m for m in self.maps if m.shape[1] == resolution * resolution]
        if not maps:
            sizes = sorted({int(math.isqrt(m.shape[1])) for m in self.maps})
            raise ValueError(f"no cross-attention at {resolution}x{resolution}; recorded: {sizes}")
        return torch.stack(maps).mean(0)


def word_tokens(tokenizer, prompt: str, words) -> dict[str, list[int]]:
    """{word: its token positions} in the encoded prompt ([CLS] at 0, then the word pieces of each
    whitespace-separated word); raises when a word is not in the prompt or the pieces do not add up."""
    pieces, out = [], {}
    for word in prompt.split():
        sub = tokenizer.tokenize(word)
        if word in words:
            out.setdefault(word, list(range(1 + len(pieces), 1 + len(pieces) + len(sub))))
        pieces += sub
    if pieces != tokenizer.tokenize(prompt):
        raise ValueError(f"{prompt!r}: its word pieces do not split on whitespace")
    missing = sorted(set(words) - set(out))
    if missing:
        raise ValueError(f"{prompt!r} does not contain {missing}")
    return out


def prompt_maps(attention: torch.Tensor, text_offset: int, n_tokens: int, resolution: int) -> torch.Tensor:
    """[B, resolution, resolution, n_tokens - 2]: Attend-and-Excite's per-token maps (the prompt's tokens without
    [CLS] and [SEP], re-normalised per pixel by a softmax of 100 x the probabilities); token k is channel k - 1."""
    text = attention[:, :, text_offset + 1 : text_offset + n_tokens - 1]
    return (100 * text).softmax(-1).view(attention.shape[0], resolution, resolution, -1)


def word_map(maps: torch.Tensor, positions: list[int]) -> torch.Tensor:
    """[B, H, W]: the mean map of a word's pieces."""
    return maps[..., [k - 1 for k in positions]].mean(-1)


def smooth(m: torch.Tensor) -> torch.Tensor:
    """3x3 Gaussian (sigma 0.5) of [B, H, W] maps, reflect-padded (Attend-and-Excite's smoothing)."""
    x = torch.arange(-1.0, 2.0, dtype=m.dtype, device=m.device)
    k = torch.exp(-(x**2) / 0.5)
    k = k / k.sum()
    kernel = (k[:, None] * k[None, :])[None, None]
    return F.conv2d(F.pad(m[:, None], (1, 1, 1, 1), mode="reflect"), kernel)[:, 0]


def excite_loss(maps: torch.Tensor, nouns: list[list[int]]) -> torch.Tensor:
    """[B]: max over the nouns of 1 - the peak of its smoothed map (0 when every noun has a spot of weight 1)."""
    peaks = torch.stack([smooth(word_map(maps, p)).flatten(1).max(1).values for p in nouns], 1)
    return (1 - peaks).max(1).values


def _sym_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    p = p.flatten(1) / p.flatten(1).sum(1, keepdim=True)
    q = q.flatten(1) / q.flatten(1).sum(1, keepdim=True)
    return 0.5 * ((p * (p / q).log()).sum(1) + (q * (q / p).log()).sum(1))


def bind_loss(maps: torch.Tensor, pairs: list[tuple[list[int], list[int]]]) -> torch.Tensor:
    """[B]: SynGen's loss over (colour, noun) pairs: each pair's maps close (symmetric KL), each noun's map far from
    the other pairs' words (minus half their mean symmetric KL)."""
    loss = torch.zeros(maps.shape[0], device=maps.device)
    for i, (adj, noun) in enumerate(pairs):
        loss = loss + _sym_kl(word_map(maps, adj), word_map(maps, noun))
        others = [w for j, pair in enumerate(pairs) if j != i for w in pair]
        if others:
            far = torch.stack([_sym_kl(word_map(maps, noun), word_map(maps, w)) for w in others]).mean(0)
            loss = loss - 0.5 * far
    return loss


def guided_sample(pipe, recorder, prompt: str, row: dict, seeds: list[int], mode: str, scale: float,
                  guided_steps: int, resolution: int, steps: int = 25, text_scale: float = 3.0,
                  reward_scale: float = 1.0, precision: str = "auto") -> tuple[list, list[float]]:  # fmt: skip
    """Images of ``prompt`` for ``seeds`` (PIL) with the attention loss of ``mode`` applied at the first
    ``guided_steps`` steps, and the loss (batch mean) at each of them.  ``precision`` is the pipeline's
    ``mixed_precision``."""
    from miro.sampling.sampler import Conditions, guided_velocity
    from miro.sampling.settings import SamplingSettings
    from miro.sampling.targets import reward_tensors
    from miro.utils.precision import precision_dtype, resolve_precision

    model, names, n = pipe.transformer, pipe.reward_names, len(seeds)
    free = {name: None for name in names if name != "alignment"}
    settings = SamplingSettings().updated(
        reward_targets={"alignment": 1.0, **free}, negative_reward_targets=free, guidance_scale=0.0,
        text_guidance_scale=text_scale, reward_guidance_scale=reward_scale, steps=steps)  # fmt: skip
    text, mask = pipe.encode_prompts([prompt] * n)
    pos, pos_mask = reward_tensors(settings.reward_targets, names, n, 1.0, "reward_targets")
    neg, neg_mask = reward_tensors(settings.negative_reward_targets, names, n, 0.0, "negative_reward_targets")
    precision = resolve_precision(precision, model.device.type)
    autocast = None if precision == "no" else precision_dtype(precision)
    velocity = guided_velocity(model, Conditions(text, mask, pos, pos_mask, neg, neg_mask),
                               settings.guidance(names), model.dtype, autocast=autocast)  # fmt: skip
    losses = []
    if mode != "none":
        colours = [o.get("color") for o in row["include"]]
        positions = word_tokens(pipe.tokenizer, prompt, {o["class"] for o in row["include"]} | set(filter(None, colours)))
        nouns = [positions[o["class"]] for o in row["include"]]
        pairs = [(positions[c], nn) for c, nn in zip(colours, nouns) if c]
        condition = model.encode_condition(text, mask, pos, pos_mask)
        offset = condition["cond"].shape[1] - text.shape[1]  # the rewards and the null slot come first
        n_tokens = int(mask[0].sum())
    pipe.scheduler.set_timesteps(steps)
    sigmas = [float(s) for s in pipe.scheduler.sigmas]
    shape = (1, model.config.in_channels, model.config.sample_size, model.config.sample_size)
    x = torch.cat([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]).to(model.device)
    for step in range(steps):
        t, t_next = sigmas[step], sigmas[step + 1]
        tvec = torch.full((n,), t, device=x.device)
        if mode != "none" and step < guided_steps:
            x = x.detach().requires_grad_(True)
            mixed = torch.autocast(x.device.type, autocast) if autocast is not None else nullcontext()
            with torch.enable_grad(), recorder.recording():
                with mixed:  # the network as the sampler runs it; the maps, the loss and its gradient in fp32
                    model.velocity(x, tvec, **condition)
                maps = prompt_maps(recorder.mean_map(resolution), offset, n_tokens, resolution)
                loss = excite_loss(maps, nouns) if mode == "excite" else bind_loss(maps, pairs)
                (grad,) = torch.autograd.grad(loss.sum(), x)
            rms = grad.flatten(1).pow(2).mean(1).sqrt().clamp(min=1e-12)[:, None, None, None]
            x = (x - scale * math.sqrt(1 - step / SCHEDULE_STEPS) * grad / rms).detach()
            losses.append(float(loss.detach().mean()))
        with torch.no_grad():
            x = x + (t_next - t) * velocity(x, tvec)
    return pipe._postprocess(x, "pil"), losses


def _word_boxes(row: dict, detections: list[dict], size: int, resolutions=(4, 8, 16, 32)) -> dict:
    """{resolution: {word: [pixels] 0/1 mask of the word's object box, "other:" + word: the other objects'}} for a
    drawn scene of ``row``: each object of the prompt is the detector's most confident box of its class; its colour
    word shares the box.  A cell belongs to a box when its centre does."""
    objects = []
    for obj in row["include"]:
        found = [d for d in detections if d["class"] == obj["class"]]
        if not found:
            raise ValueError(f"{row['prompt']!r}: the detector does not find the {obj['class']} in the drawn scene")
        objects.append(([w for w in (obj.get("color"), obj["class"]) if w], max(found, key=lambda d: d["score"])["box"]))
    out = {}
    for res in resolutions:
        centres = (torch.arange(res) + 0.5) * size / res
        cy, cx = torch.meshgrid(centres, centres, indexing="ij")
        masks = [((cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)).flatten().float()
                 for _, (x0, y0, x1, y1) in objects]  # fmt: skip
        out[res] = {}
        for i, (words, _) in enumerate(objects):
            others = torch.stack([m for j, m in enumerate(masks) if j != i]).amax(0) if len(masks) > 1 else masks[i] * 0
            for w in words:
                out[res][w], out[res]["other:" + w] = masks[i], others
    return out


@torch.no_grad()
def attention_mass(pipe, recorder, rows: list[dict], times=(0.9, 0.6, 0.3), images: int = 4, seed: int = 0) -> dict:
    """What the cross-attention reads, on the world's own scenes for ``rows``' prompts (drawn right, so where each
    object is is known), noised to each t with one fixed draw, read at every resolution; the alignment target alone.

    Per t and resolution, means over prompts, images, layers and heads: each kind of key's share of the attention
    (the reward tokens, the prompt's colour words, its class words, its other tokens) and, for the colour and the
    class words: the share of the word's attention inside its own object's box and inside the other object's, beside
    those boxes' share of the image (a word that reads its object puts well more than the box's area there; a colour
    bound to its noun falls in the noun's box, not in the other), and the peak of its smoothed Attend-and-Excite map
    (what ``excite_loss`` reads)."""
    from miro.data.shapes.detector import detect
    from miro.eval.geneval.shapes_oracle import oracle_generate_fn
    from miro.sampling.targets import reward_tensors

    model, names = pipe.transformer, pipe.reward_names
    size = pipe.default_image_size
    draw = oracle_generate_fn(resolution=size)
    targets = {"alignment": 1.0, **{n: None for n in names if n != "alignment"}}
    acc: dict = {}

    def add(key, value):
        acc.setdefault(key, []).append(float(value))

    for row in rows:
        prompt = row["prompt"]
        scenes = [draw(prompt, 1, torch.Generator().manual_seed(seed + k))[0] for k in range(images)]
        x0 = pipe.autoencoder.encode(pipe.image_processor.preprocess(scenes)).to(model.device)
        text, mask = pipe.encode_prompts([prompt] * images)
        pos, pos_mask = reward_tensors(targets, names, images, 1.0, "reward_targets")
        condition = model.encode_condition(text, mask, pos, pos_mask)
        offset = condition["cond"].shape[1] - text.shape[1]
        n_tokens = int(mask[0].sum())
        roles = {w: "colour" for o in row["include"] if o.get("color") for w in [o["color"]]}
        roles.update({o["class"]: "class" for o in row["include"]})
        positions = word_tokens(pipe.tokenizer, prompt, set(roles))
        boxes = [_word_boxes(row, detect(scene), size) for scene in scenes]
        eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(model.device)
        for t in times:
            with recorder.recording():
                model.velocity((1 - t) * x0 + t * eps, torch.full((images,), t, device=x0.device), **condition)
            for res in sorted({int(math.isqrt(m.shape[1])) for m in recorder.maps}, reverse=True):
                attention = recorder.mean_map(res)
                share = attention.mean((0, 1))
                word_keys = {role: [offset + k for w, r in roles.items() if r == role for k in positions[w]]
                             for role in ("colour", "class")}  # fmt: skip
                add((t, res, "share", "rewards"), share[: model.num_rewards].sum())
                for role, ks in word_keys.items():
                    add((t, res, "share", role + " words"), share[ks].sum())
                add((t, res, "share", "other prompt tokens"),
                    share[offset : offset + n_tokens].sum() - sum(share[ks].sum() for ks in word_keys.values()))
                maps = prompt_maps(attention, offset, n_tokens, res)
                for w, role in roles.items():
                    raw = attention[:, :, [offset + k for k in positions[w]]].mean(-1)  # [B, pixels]
                    for b in range(images):
                        own, other = boxes[b][res][w], boxes[b][res]["other:" + w]
                        add((t, res, role, "own_box_share"), (raw[b] * own).sum() / raw[b].sum())
                        add((t, res, role, "own_box_area"), own.mean())
                        add((t, res, role, "other_box_share"), (raw[b] * other).sum() / raw[b].sum())
                        add((t, res, role, "other_box_area"), other.mean())
                    peak = smooth(word_map(maps, positions[w])).flatten(1).max(1).values
                    for v in peak:
                        add((t, res, role, "excite_peak"), v)
    out: dict = {"prompts": [r["prompt"] for r in rows], "images_per_prompt": images, "by_t": {}}
    for (t, res, group, name), values in acc.items():
        node = out["by_t"].setdefault(str(t), {}).setdefault(str(res), {}).setdefault(group, {})
        node[name] = round(sum(values) / len(values), 3)
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", type=Path, default=Path("models/shapes_reference"))
    p.add_argument("--data", type=Path, default=Path("runs/demo/data"), help="a shapes world (its heldout/ prompts)")
    p.add_argument("--task", choices=("color_attr", "two_object"), default="color_attr")
    p.add_argument("--mode", choices=MODES, default="none")
    p.add_argument("--scale", type=float, default=0.03, help="the step, in units of the gradient's rms per image")
    p.add_argument("--guided-steps", type=int, default=10, help="guide the first N of the 25 steps")
    p.add_argument("--resolution", type=int, default=8, help="the maps' resolution (8 or 16 for the 32 px U-Net)")
    p.add_argument("--images", type=int, default=2, help="images per prompt")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--mass", action="store_true",
                   help="instead of sampling: what the attention reads, on the world's own scenes of the task's prompts")
    p.add_argument("--mass-prompts", type=int, default=10, help="--mass: the task's first N prompts")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.images < 1 or args.guided_steps < 0 or args.scale < 0:
        p.error("--images must be >= 1, --guided-steps and --scale >= 0")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    from miro.data.shapes.detector import detect
    from miro.sampling.pipeline import MiroPipeline

    torch.set_num_threads(args.threads)
    rows = heldout_rows(args.data, (args.task,))
    pipe = MiroPipeline.from_pretrained(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    recorder = CrossAttentionRecorder(pipe.transformer.unet)
    if args.mass:
        return report(attention_mass(pipe, recorder, rows[: args.mass_prompts], seed=args.seed), args.out)
    kinds, losses, start = Counter(), [], time.perf_counter()
    for i, row in enumerate(rows):
        seeds = [image_seed(args.seed, i, j) for j in range(args.images)]
        images, trace = guided_sample(pipe, recorder, row["prompt"], row, seeds, args.mode, args.scale,
                                      args.guided_steps, args.resolution)  # fmt: skip
        kinds.update(failure_kind(row, detect(image))[0] for image in images)
        losses.append(trace)
    total = sum(kinds.values())
    result = {"pipeline": str(args.pipeline), "task": args.task, "mode": args.mode, "scale": args.scale,
              "guided_steps": args.guided_steps, "resolution": args.resolution, "images": total, "seed": args.seed,
              "kinds_pct": {k: round(100 * kinds[k] / total, 1) for k in KINDS if k in kinds},
              "loss_by_step": [round(sum(v) / len(v), 4) for v in zip(*losses)] if losses and losses[0] else [],
              "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
    return report(result, args.out)


if __name__ == "__main__":
    main()
