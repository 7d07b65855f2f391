"""``low_noise``: minus the estimated noise standard deviation (0..255 scale), so higher is cleaner.

Donoho's robust estimator: on the finest diagonal detail band of an orthonormal Haar transform, image content
is sparse and white noise of std sigma gives coefficients of std sigma, so sigma = median(|HH|) / 0.6745.  It is
measured per channel at the native resolution (resampling would average the noise away) on a centre crop of
at most ``max_side`` pixels, and the channel estimates are averaged (as skimage's ``estimate_sigma``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from annotate.scorers.pixels import Measure, PixelScorer, PixelViews
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
    return (x[0::2, 0::2] - x[0::2, 1::2] - x[1::2, 0::2] + x[1::2, 1::2]) * 0.5


def noise_sigma(rgb: np.ndarray) -> float:
    """Mean over channels of the robust noise std of an H x W x C array; NaN if smaller than 2 x 2.

    For 8-bit input float32 is exact here (HH coefficients are halves of integers below 2**10)."""
    if rgb.shape[0] < 2 or rgb.shape[1] < 2:
        return float("nan")
    x = rgb.astype(np.float32 if rgb.dtype == np.uint8 else np.float64)
    hh = np.abs(haar_diagonal(x)).reshape(-1, x.shape[-1]).T.copy()  # channels contiguous for the median
    return float(np.mean(np.median(hh, axis=1), dtype=np.float64) / MAD_TO_SIGMA)


def measure(views: PixelViews, prompt: str | None, cfg: LowNoiseConfig) -> float:
    return -noise_sigma(centre_crop(views.native(), cfg.max_side)) + 0.0  # + 0.0 turns -0.0 into 0.0


SETTINGS = LowNoiseConfig  # the schema of miro/conf/rewards/low_noise.yaml


def build(**cfg) -> PixelScorer:
    return PixelScorer({"low_noise": Measure(measure, to_typed(cfg, LowNoiseConfig))})
