"""Torch forms of the weight-free rewards, differentiable with respect to the image, for gradient-based test-time
methods (ReNO, ``miro.testtime.reno``).

Why: ReNO climbs a reward's gradient through the sampler, and the project's weight-free rewards
(``annotate/scorers``) are numpy/PIL code.  These are the same measures written with torch operations on
images [N, 3, H, W] in [0, 1] (pixel values scaled to 0..255 as annotate does), so the number optimised is the
number reported:

- ``colorfulness`` / ``contrast``: area average to ``size`` x ``size`` (``adaptive_avg_pool2d``, rounded to
  integers after each pass as PIL's 8-bit BOX resize, with a straight-through gradient; PIL's BOX resize exactly when the side
  is a multiple of ``size``), Hasler-Suesstrunk / RMS contrast of the luma;
- ``low_noise``: minus the robust noise std, median(|HH|) / 0.6745 of the finest Haar diagonal band per channel
  on the centre crop (``torch.quantile``, which interpolates like numpy's median);
- ``sharpness``: log(1 + variance of the Laplacian) of the ``median`` x ``median`` median-filtered luma
  resized to ``size`` x ``size`` with the antialiased bicubic kernel of PIL (torch's ``antialias=True``),
  symmetric ("reflect" in scipy) borders as in scipy.ndimage.

They agree with annotate's scorers to float32 precision on the same 8-bit image (tests), except where PIL's
fractional-coverage BOX resize differs from ``adaptive_avg_pool2d`` (sides that are not multiples of
``size``) and for images larger than ``max_side`` (annotate area-averages them first; here too, approximately).
Square roots carry a 1e-12 floor so a flat image has a finite gradient.  Each class also has the scorer API
(``name``, ``score(images, prompts)`` on PIL images), so it can stand in a ``Verifier`` itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

LUMA = (0.299, 0.587, 0.114)
MAD_TO_SIGMA = 0.6744897501960817
_FLOOR = 1e-12


def pil_to_tensor(images: Sequence) -> torch.Tensor:
    """PIL images of one size -> [N, 3, H, W] float32 in [0, 1]."""
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 255.0


def _luma(x255: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(LUMA, dtype=x255.dtype, device=x255.device).view(1, 3, 1, 1)
    return (x255 * w).sum(1, keepdim=True)


def _area(x255: torch.Tensor, size: int) -> torch.Tensor:
    """The ``size`` x ``size`` area average; rounded to integers like PIL's 8-bit resize (straight-through: the
    value is rounded, the gradient is the average's)."""
    if x255.shape[-2:] == (size, size):
        return x255

    def rounded(v):  # PIL rounds half up
        return v + (torch.floor(v + 0.5) - v).detach()

    h = x255.shape[-2]  # PIL resizes horizontally, then vertically, rounding to 8 bits after each pass
    x = rounded(F.adaptive_avg_pool2d(x255, (h, size)))
    return rounded(F.adaptive_avg_pool2d(x, (size, size)))


def _sym_pad(x: torch.Tensor, p: int) -> torch.Tensor:
    """scipy.ndimage's "reflect" border (d c b a | a b c d | d c b a) on the last two dims."""
    if p == 0:
        return x
    x = torch.cat([x[..., :p].flip(-1), x, x[..., -p:].flip(-1)], dim=-1)
    return torch.cat([x[..., :p, :].flip(-2), x, x[..., -p:, :].flip(-2)], dim=-2)


def _centre_crop(x: torch.Tensor, side: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    th, tw = min(h, side), min(w, side)
    y, z = (h - th) // 2, (w - tw) // 2
    return x[..., y : y + th, z : z + tw]


class TorchReward:
    """Base: ``score_tensor`` (differentiable) and the scorer API on PIL images."""

    name = ""

    def score_tensor(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        raise NotImplementedError

    def score(self, images: Sequence, prompts: Sequence[str] | None = None) -> np.ndarray:
        out = np.empty(len(images))
        sizes = {im.size for im in images}
        groups = [list(range(len(images)))] if len(sizes) <= 1 else [[i] for i in range(len(images))]
        with torch.no_grad():
            for idx in groups:
                x = pil_to_tensor([images[i] for i in idx]).double()
                out[idx] = self.score_tensor(x).cpu().numpy()
        return out


class TorchColorfulness(TorchReward):
    name = "colorfulness"

    def __init__(self, size: int = 8):
        self.size = size

    def score_tensor(self, images, prompts=None):
        x = _area(images * 255.0, self.size)
        r, g, b = x[:, 0], x[:, 1], x[:, 2]
        rg, yb = (r - g).flatten(1), (0.5 * (r + g) - b).flatten(1)
        sigma = torch.sqrt(rg.var(1, unbiased=False) + yb.var(1, unbiased=False) + _FLOOR)
        mu = torch.sqrt(rg.mean(1) ** 2 + yb.mean(1) ** 2 + _FLOOR)
        return sigma + 0.3 * mu


class TorchContrast(TorchReward):
    name = "contrast"

    def __init__(self, size: int = 8):
        self.size = size

    def score_tensor(self, images, prompts=None):
        luma = _luma(_area(images * 255.0, self.size)) / 255.0
        return torch.sqrt(luma.flatten(1).var(1, unbiased=False) + _FLOOR)


class TorchLowNoise(TorchReward):
    name = "low_noise"

    def __init__(self, max_side: int = 1024):
        self.max_side = max_side

    def score_tensor(self, images, prompts=None):
        x = _centre_crop(images * 255.0, self.max_side)
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        x = x[..., :h, :w]
        hh = (x[..., 0::2, 0::2] - x[..., 0::2, 1::2] - x[..., 1::2, 0::2] + x[..., 1::2, 1::2]) * 0.5
        med = torch.quantile(hh.abs().flatten(2), 0.5, dim=2)  # [N, C]
        return -(med.mean(1) / MAD_TO_SIGMA) + 0.0  # + 0.0: no -0.0


class TorchSharpness(TorchReward):
    name = "sharpness"

    def __init__(self, size: int = 256, median: int = 5, max_side: int = 1024):
        self.size, self.median, self.max_side = size, median, max_side

    def score_tensor(self, images, prompts=None):
        luma = _luma(images * 255.0)
        h, w = luma.shape[-2:]
        if max(h, w) > self.max_side:
            s = self.max_side / max(h, w)
            luma = F.adaptive_avg_pool2d(luma, (max(1, round(h * s)), max(1, round(w * s))))
        if self.median > 1:
            p = self.median // 2
            hh, ww = luma.shape[-2:]
            win = F.unfold(_sym_pad(luma, p), self.median)  # [N, m*m, H*W]
            luma = win.median(dim=1).values.view(-1, 1, hh, ww)
        if luma.shape[-2:] != (self.size, self.size):
            luma = F.interpolate(
                luma, size=(self.size, self.size), mode="bicubic", align_corners=False, antialias=True
            )
        p = _sym_pad(luma, 1)
        lap = p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:] - 4 * luma
        return torch.log1p(lap.flatten(1).var(1, unbiased=False))


DIFFERENTIABLE = {
    "colorfulness": TorchColorfulness,
    "contrast": TorchContrast,
    "low_noise": TorchLowNoise,
    "sharpness": TorchSharpness,
}


def differentiable_reward(name: str, **config) -> TorchReward | None:
    """The torch form of weight-free reward ``name`` with annotate's config keys, or None if it has none."""
    cls = DIFFERENTIABLE.get(name)
    return None if cls is None else cls(**config)
