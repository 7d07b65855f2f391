"""Augmentations that keep a prompt true, for test-time training on a prompt's own samples.

Why rules per prompt: Akyurek et al.'s test-time training multiplies a task's few demonstrations with
invertible transforms that keep the answer right by construction.  For an image and its prompt a transform
is only safe if the prompt stays true of the transformed image, and which ones are depends on what the
prompt says (``../shared/reference/testtime.md`` section 5.1):

- ``hflip`` (mirror left-right): not when the prompt has a left/right relation;
- ``vflip`` (upside down): not when it has an above/below relation; off by default even then, since photos
  are rarely upside down (opt in by naming it);
- ``translate`` (a shift of up to 1/16 of the side, the border repeated): not when the prompt counts, since a
  shifted object can leave the frame;
- ``crop`` (a random crop of 85-100% of the side, resized back): not when the prompt counts, for the same
  reason;
- ``color`` (brightness and contrast jitter): not when the prompt names a colour, and only in pixel space
  (a latent's channels are not colours).

``prompt_facts`` parses what matters (the shapes world's vocabulary plus the usual English words for
relations and numbers); ``allowed_augmentations`` turns the facts into the safe set; ``resolve_augmentations``
checks a caller's explicit choice against it (asking for ``hflip`` on "a cat left of a dog" is an error, not
a silent drop); ``augment`` applies one random safe transform (or none) to each item of a batch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("hflip", "vflip", "translate", "crop", "color")
DEFAULT_OFF = ("vflip",)  # safe for some prompts but not natural for photos: only when asked for

_LEFT_RIGHT = r"\b(left|right|leftmost|rightmost)\b"
_ABOVE_BELOW = (
    r"\b(above|below|under|underneath|beneath|over|on top of|on the top|at the bottom|top|bottom)\b"
)
_NUMBERS = r"\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|single|pair of|couple of|several|many|few|exactly|\d+)\b"


def _colour_words() -> tuple[str, ...]:
    from miro.data.shapes.vocab import COLORS

    extra = (
        "gray",
        "grey",
        "gold",
        "silver",
        "beige",
        "cyan",
        "magenta",
        "violet",
        "turquoise",
        "navy",
        "teal",
    )
    return tuple(dict.fromkeys((*COLORS, *extra)))


@dataclass(frozen=True)
class PromptFacts:
    """What a prompt says that an augmentation could make false."""

    left_right: bool
    above_below: bool
    counts: bool
    colours: bool


def prompt_facts(prompt: str) -> PromptFacts:
    low = prompt.lower()
    colours = "|".join(re.escape(c) for c in _colour_words())
    return PromptFacts(
        left_right=bool(re.search(_LEFT_RIGHT, low)),
        above_below=bool(re.search(_ABOVE_BELOW, low)),
        counts=bool(re.search(_NUMBERS, low)),
        colours=bool(re.search(rf"\b({colours})\b", low)),
    )


def _why_not(name: str, facts: PromptFacts, pixel_space: bool) -> str | None:
    """Why ``name`` would make the prompt false (None: it is safe)."""
    if name == "hflip" and facts.left_right:
        return "the prompt has a left/right relation"
    if name == "vflip" and facts.above_below:
        return "the prompt has an above/below relation"
    if name in ("translate", "crop") and facts.counts:
        return "the prompt counts objects (a shifted or cropped object can leave the frame)"
    if name == "color" and facts.colours:
        return "the prompt names a colour"
    if name == "color" and not pixel_space:
        return "colour jitter needs pixel space (a latent's channels are not colours)"
    return None


def allowed_augmentations(prompt: str, pixel_space: bool = True) -> tuple[str, ...]:
    """The default safe set for ``prompt`` (``vflip`` never by default)."""
    facts = prompt_facts(prompt)
    return tuple(a for a in AUGMENTATIONS if a not in DEFAULT_OFF and _why_not(a, facts, pixel_space) is None)


def resolve_augmentations(
    augment: str | Sequence[str] | None, prompt: str, pixel_space: bool = True
) -> tuple[str, ...]:
    """``"auto"`` (or ``["auto"]``): the safe default set; ``"none"`` / None / []: no augmentation; a list:
    exactly those, each checked against the prompt (``ValueError`` naming the transform and why it would make the prompt false)."""
    names = [augment] if isinstance(augment, str) else list(augment or [])
    if names in ([], ["none"]):
        return ()
    if names == ["auto"]:
        return allowed_augmentations(prompt, pixel_space)
    facts = prompt_facts(prompt)
    for name in names:
        if name not in AUGMENTATIONS:
            raise ValueError(f"augment={name!r}: unknown; choose from {AUGMENTATIONS}, 'auto' or 'none'")
        why = _why_not(name, facts, pixel_space)
        if why:
            raise ValueError(f"augment={name!r} would make {prompt!r} false: {why}")
    return tuple(dict.fromkeys(names))


def _translate(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Shift [C, H, W] by (dy, dx) pixels, repeating the border (no wrap-around: rolling would carry an object
    across the frame)."""
    _, h, w = x.shape
    p = max(abs(dy), abs(dx))
    if p == 0:
        return x
    padded = F.pad(x[None], (p, p, p, p), mode="replicate")[0]
    return padded[:, p - dy : p - dy + h, p - dx : p - dx + w]


def _crop(x: torch.Tensor, scale: float, top: float, left: float) -> torch.Tensor:
    _, h, w = x.shape
    ch, cw = max(1, round(h * scale)), max(1, round(w * scale))
    y0, x0 = round(top * (h - ch)), round(left * (w - cw))
    patch = x[None, :, y0 : y0 + ch, x0 : x0 + cw]
    return F.interpolate(patch, size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]


def _color(x: torch.Tensor, brightness: float, contrast: float) -> torch.Tensor:
    """Model-space pixels in [-1, 1]: contrast about the image mean, then a brightness offset, clamped."""
    mean = x.mean()
    return ((x - mean) * contrast + mean + brightness).clamp(-1, 1)


def augment(x: torch.Tensor, names: Sequence[str], generator: torch.Generator | None = None) -> torch.Tensor:
    """Each item of ``x`` [B, C, H, W] (model space) gets one transform drawn uniformly from ``names`` plus the
    identity (so un-augmented items stay in every batch).  Deterministic for a seeded ``generator``."""
    if not names:
        return x
    out = []
    for item in x:
        choice = int(torch.randint(len(names) + 1, (1,), generator=generator))
        u = torch.rand(4, generator=generator).tolist()
        name = names[choice - 1] if choice else None
        _, h, _ = item.shape
        if name == "hflip":
            item = item.flip(-1)
        elif name == "vflip":
            item = item.flip(-2)
        elif name == "translate":
            m = max(1, round(h / 16))
            item = _translate(item, round((2 * u[0] - 1) * m), round((2 * u[1] - 1) * m))
        elif name == "crop":
            item = _crop(item, 0.85 + 0.15 * u[0], u[1], u[2])
        elif name == "color":
            item = _color(item, 0.2 * (u[0] - 0.5), 0.8 + 0.4 * u[1])
        out.append(item)
    return torch.stack(out)


__all__ = [
    "AUGMENTATIONS",
    "PromptFacts",
    "allowed_augmentations",
    "augment",
    "prompt_facts",
    "resolve_augmentations",
]
