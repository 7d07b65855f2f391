"""``contrast``: RMS contrast, the standard deviation of the luma in [0, 1], measured at a fixed size.

0 for a flat image, 0.5 for a half-black half-white one (the maximum).  A washed-out or low-contrast image
scales it down by the contrast factor.
"""

from __future__ import annotations

from PIL import Image

from annotate.scorers.pixels import FixedSizeConfig, PixelScorer, fixed_size, grey
from miro.utils.config import to_typed


class Contrast(PixelScorer):
    def measure(self, image: Image.Image) -> float:
        return float((grey(fixed_size(image, self.config.size)) / 255.0).std())


def build(**cfg) -> Contrast:
    return Contrast("contrast", to_typed(cfg, FixedSizeConfig))
