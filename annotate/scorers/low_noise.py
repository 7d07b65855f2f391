"""``low_noise``: minus the estimated noise standard deviation (0..255 scale), so higher is cleaner.

Donoho's robust estimator: on the finest diagonal detail band of an orthonormal Haar transform, image content
is sparse and white noise of std sigma gives coefficients of std sigma, so sigma = median(|HH|) / 0.6745.  It is
measured per channel at the native resolution (resampling would average the noise away) on a centre crop of
at most ``max_side`` pixels, and the channel estimates are averaged (as skimage's ``estimate_sigma``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from annotate.scorers.pixels import PixelScorer
from miro.utils.config import require, to_typed

MAD_TO_SIGMA = 0.6744897501960817  # median of |N(0, 1)|


@dataclass
class LowNoiseConfig:
    max_side: int = 1024

    def __post_init__(self):
        require(self.max_side >= 4, "max_side", self.max_side, "must be an integer >= 4")


def centre_crop(arr: np.ndarray, max_side: int) -> np.ndarray:
    h, w = arr.shape[:2]
    th, tw = min(h, max_side), min(w, max_side)
    y, x = (h - th) // 2, (w - tw) // 2
    return arr[y : y + th, x : x + tw]


def haar_diagonal(x: np.ndarray) -> np.ndarray:
    """Finest diagonal (HH) coefficients of the orthonormal 2-D Haar transform, per channel."""
    h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    x = x[:h, :w]
    return (x[0::2, 0::2] - x[0::2, 1::2] - x[1::2, 0::2] + x[1::2, 1::2]) / 2.0


def noise_sigma(rgb: np.ndarray) -> float:
    """Mean over channels of the robust noise std of an H x W x C array; NaN if smaller than 2 x 2."""
    if rgb.shape[0] < 2 or rgb.shape[1] < 2:
        return float("nan")
    hh = haar_diagonal(rgb.astype(np.float64))
    return float(np.mean(np.median(np.abs(hh).reshape(-1, hh.shape[-1]), axis=0)) / MAD_TO_SIGMA)


class LowNoise(PixelScorer):
    def measure(self, image: Image.Image) -> float:
        return -noise_sigma(centre_crop(np.asarray(image.convert("RGB")), self.config.max_side)) + 0.0  # + 0.0: no -0.0


def build(**cfg) -> LowNoise:
    return LowNoise("low_noise", to_typed(cfg, LowNoiseConfig))
