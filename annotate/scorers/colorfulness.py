"""``colorfulness``: Hasler and Suesstrunk (2003), M = sigma_rgyb + 0.3 mu_rgyb on the 0..255 scale.

rg = R - G and yb = (R + G) / 2 - B; sigma and mu are the root-sum-squares of the two opponent channels' stds
and means.  0 for any grey image; about 15 "slightly", 33 "moderately", 59 "quite", 82 "highly" colourful in
the paper's calibration.

Measured on an 8 x 8 area average by default: per-pixel noise has zero mean in each colour channel, so averaging
cells removes its spread while desaturation, colour casts and the scene's colours stay (on the shapes world the
full-resolution value rises with noise, Spearman +0.36 with the noise strength; at 8 x 8 it is +0.02).
"""

from __future__ import annotations

import numpy as np

from annotate.scorers.pixels import CoarseConfig, Measure, PixelScorer, PixelViews
from miro.utils.config import to_typed


def hasler_susstrunk(rgb: np.ndarray) -> float:
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def measure(views: PixelViews, prompt: str | None, cfg: CoarseConfig) -> float:
    return hasler_susstrunk(views.area(cfg.size))


SETTINGS = CoarseConfig  # the schema of miro/conf/rewards/colorfulness.yaml


def build(**cfg) -> PixelScorer:
    return PixelScorer({"colorfulness": Measure(measure, to_typed(cfg, CoarseConfig))})
