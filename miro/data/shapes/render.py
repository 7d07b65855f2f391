"""Anti-aliased rendering: exact sub-pixel coverage of polygons composited over a mildly textured background.

Coverage is sampled on an ``ss x ss`` grid of sub-pixel centres inside each pixel, only within the polygon's
box, so the cost grows with object area and not with the image size.
"""

from __future__ import annotations

import numpy as np
from matplotlib.path import Path


def coverage(polygon: np.ndarray, resolution: int, ss: int = 4) -> tuple[int, int, np.ndarray]:
    """Fraction of each pixel covered by ``polygon`` (pixel coordinates), as ``(y0, x0, alpha[h, w])``.

    ``alpha`` is the crop of the coverage map whose top-left pixel is ``(y0, x0)``; empty when the polygon lies
    outside the image.
    """
    lo = np.clip(np.floor(polygon.min(0)).astype(int), 0, resolution)
    hi = np.clip(np.ceil(polygon.max(0)).astype(int), 0, resolution)
    (x0, y0), (x1, y1) = lo, hi
    w, h = x1 - x0, y1 - y0
    if w <= 0 or h <= 0:
        return int(y0), int(x0), np.zeros((0, 0))
    gx = x0 + (np.arange(w * ss) + 0.5) / ss
    gy = y0 + (np.arange(h * ss) + 0.5) / ss
    xx, yy = np.meshgrid(gx, gy)
    inside = Path(polygon).contains_points(np.stack([xx.ravel(), yy.ravel()], axis=1))
    alpha = inside.reshape(h, ss, w, ss).mean(axis=(1, 3))
    return int(y0), int(x0), alpha


def paint(image: np.ndarray, polygon: np.ndarray, rgb, ss: int = 4) -> np.ndarray:
    """Composite a flat-coloured polygon into ``image`` (float ``[H, W, 3]``, in place); returns its alpha crop."""
    y0, x0, alpha = coverage(polygon, image.shape[0], ss)
    if alpha.size:
        region = image[y0 : y0 + alpha.shape[0], x0 : x0 + alpha.shape[1]]
        a = alpha[..., None]
        region *= 1.0 - a
        region += a * np.asarray(rgb, dtype=image.dtype)
    return alpha


def background(rng: np.random.Generator, resolution: int, rgb, texture: float) -> np.ndarray:
    """``[R, R, 3]`` float image of the background colour with smooth low-amplitude brightness texture.

    ``texture`` is the largest deviation in 0..255 units; the field is a bilinear upsampling of a random 5 x 5
    grid, so it has no edges a detector could mistake for an object.
    """
    img = np.empty((resolution, resolution, 3), dtype=np.float64)
    img[:] = np.asarray(rgb, dtype=np.float64)
    if texture > 0:
        cells = 5
        grid = rng.uniform(-1.0, 1.0, size=(cells, cells))
        t = np.linspace(0, cells - 1, resolution)
        i = np.minimum(t.astype(int), cells - 2)
        f = t - i
        rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
        field = rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]
        img += texture * field[..., None]
    return img
