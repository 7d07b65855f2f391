"""Geometry, anti-aliased coverage, background and degradations: closed forms and measured effects."""

import io

import numpy as np
import pytest
from PIL import Image

from miro.data.shapes import degrade
from miro.data.shapes.config import DegradationsConfig, DegradationSpec, ShapesConfig
from miro.data.shapes.geometry import Placed, half_extent, unit_polygon
from miro.data.shapes.render import background, coverage, paint
from miro.data.shapes.vocab import (
    BACKGROUND,
    CLASSES,
    COLORS,
    PALETTE,
    make_plural,
    srgb_to_lab,
    with_article,
)
from miro.data.shapes.world import ShapesWorld


@pytest.mark.parametrize("cls", CLASSES)
def test_unit_polygons_fill_the_unit_box(cls):
    p = unit_polygon(cls)
    lo, hi = p.min(0), p.max(0)
    assert np.all(lo >= -1 - 1e-9) and np.all(hi <= 1 + 1e-9)
    assert max(hi - lo) > 1.7  # the larger side spans (almost) the whole box
    with pytest.raises(ValueError):
        p[0, 0] = 0.0


def test_unknown_class():
    with pytest.raises(ValueError, match="unknown shape class"):
        unit_polygon("blob")


def test_coverage_area_is_exact_for_a_square():
    # an axis-aligned 10.5 x 10.5 square at a quarter-pixel offset: sampled coverage sums to the exact area
    poly = np.array([[3.25, 4.25], [13.75, 4.25], [13.75, 14.75], [3.25, 14.75]])
    y0, x0, a = coverage(poly, 32, ss=4)
    assert (y0, x0) == (4, 3)
    assert a.sum() == pytest.approx(10.5 * 10.5)
    assert a.max() == 1.0 and 0 < a.min() < 1  # anti-aliased edges
    assert coverage(poly + 100, 32)[2].size == 0  # outside the image


def test_circle_area_and_box():
    obj = Placed("circle", "red", (20.0, 20.0), 16.0, 0.0)
    assert obj.box() == pytest.approx([12, 12, 28, 28], abs=1e-9)
    a = coverage(obj.polygon(), 40, ss=8)[2]
    assert a.sum() == pytest.approx(np.pi * 64, rel=0.01)
    hx, hy = half_extent("square", 10.0, 45.0)
    assert hx == pytest.approx(0.86 * 10 / 2 * np.sqrt(2))


def test_paint_composites_the_colour():
    img = np.zeros((16, 16, 3)) + 100.0
    paint(img, np.array([[4.0, 4.0], [8.0, 4.0], [8.0, 8.0], [4.0, 8.0]]), (200, 0, 50))
    assert img[5, 5].tolist() == [200, 0, 50] and img[0, 0].tolist() == [100, 100, 100]


def test_background_texture_amplitude():
    bg = background(np.random.default_rng(0), 64, BACKGROUND, 6.0)
    dev = bg - np.array(BACKGROUND)
    assert np.abs(dev).max() <= 6.0 and dev.std() > 0.5
    assert np.all(dev[..., 0] == dev[..., 1])  # brightness only
    assert np.all(background(np.random.default_rng(0), 8, BACKGROUND, 0.0) == np.array(BACKGROUND, float))


def test_palette_is_separable_and_not_the_background():
    lab = srgb_to_lab(np.array([PALETTE[c] for c in COLORS] + [BACKGROUND], float))
    d = np.linalg.norm(lab[:, None] - lab[None], axis=-1) + np.eye(len(lab)) * 1e9
    assert d.min() > 25
    assert srgb_to_lab(np.array([255.0, 255, 255]))[0] == pytest.approx(100, abs=0.01)


def test_grammar_helpers():
    assert with_article("orange") == "an orange" and with_article("star") == "a star"
    assert make_plural("cross") == "crosses" and make_plural("box") == "boxes" and make_plural("heart") == "hearts"


def flat_image(res=64):
    img = np.zeros((res, res, 3)) + np.array(BACKGROUND, float)
    paint(img, Placed("square", "blue", (32, 32), 24, 0).polygon(), PALETTE["blue"])
    return img


def test_blur_noise_contrast_cast_do_what_they_say():
    img = flat_image()
    hf = (np.diff(img, axis=1) ** 2).sum()  # edge energy (total variation would be kept by a blur)
    params = degrade.apply_blur(img, 0.5)
    assert params["sigma_px"] == pytest.approx(0.4 + 0.5 * 0.03 * 64)
    assert (np.diff(img, axis=1) ** 2).sum() < 0.6 * hf

    img = flat_image()
    ref = img.copy()
    params = degrade.apply_noise(img, 1.0, np.random.default_rng(0))
    assert params["sigma"] == 40.0 and (img - ref).std() == pytest.approx(40.0, rel=0.05)

    img = flat_image()
    std = img.std()
    assert degrade.apply_low_contrast(img, 0.8)["factor"] == pytest.approx(0.4)
    assert img.std() == pytest.approx(0.4 * std)

    img = flat_image()
    ref = img.copy()
    gains = degrade.apply_color_cast(img, 1.0, np.random.default_rng(1))["gains"]
    assert np.prod(gains) == pytest.approx(1.0, abs=1e-3)  # a cast, not a brightness change
    assert np.allclose(img[0, 0], np.clip(ref[0, 0] * gains, 0, 255), atol=0.01)  # gains are recorded rounded
    assert degrade.jpeg_quality(0.0) == 90 and degrade.jpeg_quality(1.0) == 10


def test_clutter_marks_avoid_objects():
    img = flat_image()
    ref = img.copy()
    box = Placed("square", "blue", (32, 32), 24, 0).box()
    params = degrade.apply_clutter(img, 1.0, np.random.default_rng(3), [box], np.array([PALETTE["red"]], float), (0, 0, 0), 4)
    assert params["marks"] >= 5
    changed = np.abs(img - ref).sum(-1) > 1
    if params["lines"] == 0:
        x0, y0, x1, y1 = (int(v) for v in box)
        assert not changed[y0:y1, x0:x1].any()
    assert changed.sum() > 5


def test_degradations_separate_simple_quality_measures():
    """Strong degradations move the weight-free measures the annotation stage uses (sharpness, noise)."""
    specs = {k: DegradationSpec(prob=0.0) for k in ("clutter", "blur", "low_contrast", "color_cast", "noise", "jpeg")}

    def images(**deg):
        s = dict(specs)
        for k, v in deg.items():
            s[k] = DegradationSpec(prob=1.0, min_strength=v, max_strength=v)
        w = ShapesWorld(ShapesConfig(out="x", resolution=64, seed=0, degradations=DegradationsConfig(**s)))
        return [np.asarray(Image.open(io.BytesIO(w.sample(i).image)).convert("L"), float) for i in range(20)]

    def lap(x):
        return np.abs(4 * x[1:-1, 1:-1] - x[:-2, 1:-1] - x[2:, 1:-1] - x[1:-1, :-2] - x[1:-1, 2:]).mean()

    clean, blurred, noisy, flat = images(), images(blur=0.8), images(noise=0.8), images(low_contrast=0.8)
    assert np.mean([lap(x) for x in blurred]) < 0.6 * np.mean([lap(x) for x in clean])
    assert np.mean([lap(x) for x in noisy]) > 5 * np.mean([lap(x) for x in clean])
    assert np.mean([x.std() for x in flat]) < 0.5 * np.mean([x.std() for x in clean])
