"""Shape outlines as polygons, and how one object (class, centre, size, rotation) becomes pixels.

Every class is a polygon inside the unit box [-1, 1]^2 (y pointing down, as in images) touching at least two
of its sides, so ``size`` (the unrotated extent in pixels) means the same thing for every class.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from miro.data.shapes.vocab import CLASSES

# Largest rotation (degrees, either way) per class: enough variety, never so much that a square turns into a
# diamond for a human reader.  Circles and hexagons look alike under any rotation.
MAX_ROTATION: dict[str, float] = {
    "circle": 0.0,
    "square": 15.0,
    "triangle": 15.0,
    "star": 20.0,
    "hexagon": 30.0,
    "diamond": 10.0,
    "cross": 15.0,
    "heart": 15.0,
}


def _regular(n: int, radius: float = 1.0, phase: float = -np.pi / 2) -> np.ndarray:
    a = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(a), radius * np.sin(a)], axis=1)


def _fit_unit_box(p: np.ndarray) -> np.ndarray:
    """Centre the polygon's box on the origin and scale its larger side to 2."""
    lo, hi = p.min(0), p.max(0)
    return (p - (lo + hi) / 2) / ((hi - lo).max() / 2)


@cache
def unit_polygon(cls: str) -> np.ndarray:
    """``[N, 2]`` vertices of the class outline in the unit box (read-only, cached)."""
    if cls == "circle":
        p = _regular(96)
    elif cls == "square":
        p = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) * 0.86
    elif cls == "triangle":
        p = _fit_unit_box(_regular(3))
    elif cls == "star":
        outer, inner = _regular(5, 1.0), _regular(5, 0.42, -np.pi / 2 + np.pi / 5)
        p = _fit_unit_box(np.stack([outer, inner], axis=1).reshape(-1, 2))
    elif cls == "hexagon":
        p = _fit_unit_box(_regular(6, phase=0.0))
    elif cls == "diamond":
        p = np.array([[0, -1], [0.62, 0], [0, 1], [-0.62, 0]], dtype=np.float64)
    elif cls == "cross":
        a, w = 0.92, 0.31
        p = np.array([[-w, -a], [w, -a], [w, -w], [a, -w], [a, w], [w, w], [w, a], [-w, a], [-w, w], [-a, w], [-a, -w], [-w, -w]])
    elif cls == "heart":
        t = np.linspace(0, 2 * np.pi, 120, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        p = _fit_unit_box(np.stack([x, y], axis=1))
    else:
        raise ValueError(f"unknown shape class {cls!r}; known: {list(CLASSES)}")
    p = np.ascontiguousarray(p, dtype=np.float64)
    p.setflags(write=False)
    return p


@dataclass(frozen=True)
class Placed:
    """One object's outline in image pixels (pixel i covers [i, i + 1))."""

    cls: str
    color: str
    center: tuple[float, float]
    size: float  # unrotated extent in pixels
    rotation: float  # degrees, clockwise on screen

    def polygon(self) -> np.ndarray:
        th = np.deg2rad(self.rotation)
        rot = np.array([[np.cos(th), np.sin(th)], [-np.sin(th), np.cos(th)]])
        return unit_polygon(self.cls) @ rot * (self.size / 2) + np.asarray(self.center)

    def box(self) -> list[float]:
        p = self.polygon()
        return [float(v) for v in (*p.min(0), *p.max(0))]


def half_extent(cls: str, size: float, rotation: float) -> tuple[float, float]:
    """Half width and half height of the rotated outline's box, in pixels."""
    x0, y0, x1, y1 = Placed(cls, "", (0.0, 0.0), size, rotation).box()
    return max(-x0, x1), max(-y0, y1)
