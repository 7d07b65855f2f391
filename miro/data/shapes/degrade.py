"""Web-like quality degradations with a strength in [0, 1], recorded with the parameters they resolved to.

Each ``apply_*`` changes a float RGB image (0..255, ``[R, R, 3]``) in place and returns its parameters; sizes
scale with the resolution so a strength means the same visual damage at 32 and at 256 px.  JPEG is the
exception: it happens when the image is encoded (``jpeg_quality``), so its artefacts are the real ones.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from miro.data.shapes.geometry import unit_polygon
from miro.data.shapes.render import paint


def _r(x: float) -> float:
    return round(float(x), 4)


def blur_sigma(strength: float, resolution: int) -> float:
    return 0.4 + strength * 0.03 * resolution


def apply_blur(img: np.ndarray, strength: float) -> dict:
    sigma = blur_sigma(strength, img.shape[0])
    img[:] = gaussian_filter(img, sigma=(sigma, sigma, 0), mode="nearest")
    return {"sigma_px": _r(sigma)}


def apply_low_contrast(img: np.ndarray, strength: float) -> dict:
    """Pull every value toward the image's mean grey: ``mean + factor * (x - mean)``."""
    factor = 1.0 - 0.75 * strength
    mean = float(img.mean())
    img -= mean
    img *= factor
    img += mean
    return {"factor": _r(factor)}


def apply_color_cast(img: np.ndarray, strength: float, rng: np.random.Generator) -> dict:
    """Per-channel gains ``exp(0.4 * strength * v)`` along a random direction ``v`` orthogonal to grey, as a
    wrong white balance does."""
    v = rng.normal(size=3)
    v -= v.mean()
    v /= np.linalg.norm(v) + 1e-12
    gains = np.exp(0.4 * strength * v)
    img *= gains
    np.clip(img, 0, 255, out=img)
    return {"gains": [_r(g) for g in gains]}


def apply_noise(img: np.ndarray, strength: float, rng: np.random.Generator) -> dict:
    sigma = 4.0 + 36.0 * strength
    img += rng.normal(0.0, sigma, size=img.shape)
    return {"sigma": _r(sigma)}


def jpeg_quality(strength: float) -> int:
    return int(round(90 - 80 * strength))


def apply_clutter(img: np.ndarray, strength: float, rng: np.random.Generator, boxes: list[list[float]], colors: np.ndarray,
                  background, ss: int) -> dict:
    """Small distractor marks (dots and short strokes, far smaller than any object, never on an object) in
    palette colours, and thin background-coloured lines that cut across the image and may occlude objects."""
    res = img.shape[0]
    n_marks, n_lines = 1 + int(round(9 * strength)), int(rng.integers(0, 1 + int(round(3 * strength))))
    placed = 0
    for _ in range(n_marks):
        for _try in range(20):
            cx, cy = rng.uniform(1, res - 1, size=2)
            if rng.random() < 0.5:  # dot
                r = rng.uniform(0.5, max(0.8, 0.022 * res))
                poly = unit_polygon("circle")[::6] * r + (cx, cy)
            else:  # stroke
                length, width = rng.uniform(0.03, 0.08) * res, max(0.6, 0.012 * res)
                th = rng.uniform(0, np.pi)
                d, n = np.array([np.cos(th), np.sin(th)]), np.array([-np.sin(th), np.cos(th)])
                poly = np.array([d * length / 2 + n * width / 2, d * length / 2 - n * width / 2,
                                 -d * length / 2 - n * width / 2, -d * length / 2 + n * width / 2]) + (cx, cy)
            lo, hi = poly.min(0) - 1, poly.max(0) + 1
            if all(hi[0] < b[0] or lo[0] > b[2] or hi[1] < b[1] or lo[1] > b[3] for b in boxes):
                paint(img, poly, colors[int(rng.integers(len(colors)))], ss)
                placed += 1
                break
    tone = np.asarray(background, dtype=np.float64) * rng.uniform(0.85, 1.0)
    for _ in range(n_lines):
        px, py = rng.uniform(0, res, size=2)
        th = rng.uniform(0, np.pi)
        width = max(0.8, 0.02 * res) * rng.uniform(0.8, 1.2)
        d, n = np.array([np.cos(th), np.sin(th)]) * 2 * res, np.array([-np.sin(th), np.cos(th)]) * width / 2
        paint(img, np.array([d + n, d - n, -d - n, -d + n]) + (px, py), tone, ss)
    return {"marks": placed, "lines": n_lines}
