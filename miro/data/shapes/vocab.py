"""The shapes world's vocabulary: shape classes, GenEval's ten colours with their RGB values, number words.

One place for every word the generator writes and the caption parser reads, so the two cannot drift apart.
"""

from __future__ import annotations

import numpy as np

# GenEval's colour list, in GenEval's order (evaluation/evaluate_images.py ``COLORS``).
COLORS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")

# RGB values a person names with the colour word, chosen to stay far apart in CIELAB (min pairwise
# Delta-E above 30, see tests) and far from the background.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (215, 25, 32),
    "orange": (245, 130, 10),
    "yellow": (250, 215, 30),
    "green": (35, 150, 55),
    "blue": (30, 85, 215),
    "purple": (125, 45, 170),
    "pink": (245, 130, 195),
    "brown": (115, 65, 30),
    "black": (20, 20, 22),
    "white": (250, 250, 248),
}

# A light grey-beige that is none of the ten colours.
BACKGROUND: tuple[int, int, int] = (180, 172, 155)

# Shape classes the renderer and the detector support, in a fixed order (the detector's class index).
CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "diamond", "cross", "heart")

# Extra nouns the free phrasings may use for a class (singular, plural).
SYNONYMS: dict[str, tuple[tuple[str, str], ...]] = {
    "circle": (("disc", "discs"),),
    "diamond": (("rhombus", "rhombuses"),),
    "cross": (("plus sign", "plus signs"),),
    "square": (("box", "boxes"),),
}

RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")  # GenEval's spelling
OPPOSITE: dict[str, str] = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

# Free phrasings of each relation (GenEval's own spelling first).
RELATION_PHRASES: dict[str, tuple[str, ...]] = {
    "left of": ("left of", "to the left of", "on the left of"),
    "right of": ("right of", "to the right of", "on the right of"),
    "above": ("above", "over", "on top of"),
    "below": ("below", "under", "beneath", "underneath"),
}

NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def with_article(word: str) -> str:
    """GenEval's ``with_article``: "an" before a vowel letter, else "a"."""
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def make_plural(name: str) -> str:
    """GenEval's ``make_plural`` ("star" -> "stars", "cross" -> "crosses"), extended to "-x" nouns ("box")."""
    return f"{name}es" if name[-1] in "sx" else f"{name}s"


def palette_array(colors: tuple[str, ...] | list[str] = COLORS) -> np.ndarray:
    """``[len(colors), 3]`` float64 RGB values of the named colours."""
    return np.array([PALETTE[c] for c in colors], dtype=np.float64)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB values in 0..255, any leading shape ``[..., 3]``."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)
