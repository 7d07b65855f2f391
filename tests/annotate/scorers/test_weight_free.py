"""Weight-free rewards: closed forms, and each one separating clean from degraded images by a wide margin."""

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from annotate.scorers import build_scorer
from annotate.scorers.colorfulness import hasler_susstrunk
from annotate.scorers.low_noise import noise_sigma
from miro.utils.config import ConfigError
from tests.annotate.conftest import photo_like

NAMES = ("sharpness", "low_noise", "colorfulness", "contrast")


def add_noise(img: Image.Image, sigma: float, seed: int) -> Image.Image:
    arr = np.asarray(img, dtype=np.float64) + np.random.default_rng(seed).normal(0, sigma, (img.height, img.width, 3))
    return Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8))


DEGRADE = {
    "blur": lambda im, s: im.filter(ImageFilter.GaussianBlur(2.5)),
    "noise": lambda im, s: add_noise(im, 12.0, s),
    "low_contrast": lambda im, s: ImageEnhance.Contrast(im).enhance(0.3),
    "desaturate": lambda im, s: ImageEnhance.Color(im).enhance(0.15),
}


@pytest.fixture(scope="module")
def table():
    """scores[reward][condition] over 8 clean images and their degraded copies."""
    clean = [photo_like(100 + s, 256, 256) for s in range(8)]
    conds = {"clean": clean, **{k: [f(im, i) for i, im in enumerate(clean)] for k, f in DEGRADE.items()}}
    return {n: {c: build_scorer(n).score(ims) for c, ims in conds.items()} for n in NAMES}


def test_sharpness_sees_blur(table):
    t = table["sharpness"]
    assert np.all(t["clean"] - t["blur"] > 2.0)  # log-variance drops by > 2 (variance by > 7x) on every image
    assert np.all(t["clean"] - t["low_contrast"] > 2.0)  # 0.3 contrast: variance x 0.09, log drops by ~2.4


def test_low_noise_sees_noise_only(table):
    t = table["low_noise"]
    assert np.all(t["clean"] > -1.0)  # flat shapes and linear gradients: no noise
    np.testing.assert_allclose(t["noise"], -12.0, atol=1.0)  # the added sigma is recovered
    assert np.all(t["blur"] >= t["clean"] - 0.5)  # blur does not look like noise


def test_contrast_scales_with_the_contrast_factor(table):
    t = table["contrast"]
    np.testing.assert_allclose(t["low_contrast"] / t["clean"], 0.3, atol=0.02)
    assert np.all(t["clean"] > 0.1)


def test_colorfulness_sees_desaturation(table):
    t = table["colorfulness"]
    assert np.all(t["desaturate"] < 0.2 * t["clean"]) and np.all(t["clean"] > 40)


def test_closed_forms():
    half = np.zeros((256, 256, 3), np.uint8)
    half[:, 128:] = 255
    assert build_scorer("contrast").score([Image.fromarray(half)])[0] == pytest.approx(0.5, abs=1e-12)
    flat = Image.new("RGB", (64, 48), (90, 90, 90))
    assert build_scorer("contrast").score([flat])[0] == pytest.approx(0.0, abs=1e-12)
    assert build_scorer("sharpness").score([flat])[0] == 0.0
    assert build_scorer("low_noise").score([flat])[0] == 0.0
    assert build_scorer("colorfulness").score([flat])[0] == pytest.approx(0.0, abs=1e-12)
    # pure red: rg = 255, yb = 127.5, no spread -> 0.3 * hypot(255, 127.5)
    red = Image.new("RGB", (256, 256), (255, 0, 0))
    assert build_scorer("colorfulness").score([red])[0] == pytest.approx(0.3 * np.hypot(255, 127.5))
    # two colours, half each: rg in {255, 0}, yb in {127.5, -255}: std = half the difference
    rb = np.zeros((256, 256, 3), np.uint8)
    rb[:, :128] = (255, 0, 0)
    rb[:, 128:] = (0, 0, 255)
    std = np.hypot(255 / 2, (127.5 + 255) / 2)
    mean = np.hypot(255 / 2, (127.5 - 255) / 2)
    assert hasler_susstrunk(rb) == pytest.approx(std + 0.3 * mean)


def _laplacian_log_var(luma):
    p = np.pad(luma, 1, mode="edge")  # scipy's 'reflect' repeats the edge pixel
    lap = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4 * luma
    return np.log1p(lap.var())


def test_sharpness_formula_matches_a_direct_computation():
    img = photo_like(7, 256, 256)
    luma = np.asarray(img, dtype=np.float64) @ np.array([0.299, 0.587, 0.114])
    assert build_scorer("sharpness", median=1).score([img])[0] == pytest.approx(_laplacian_log_var(luma), rel=1e-12)
    # median 3 by hand: the median of each 3 x 3 neighbourhood, edges reflected ("reflect" repeats the edge pixel)
    p = np.pad(luma, 1, mode="edge")
    win = np.stack([p[i : i + 256, j : j + 256] for i in range(3) for j in range(3)])
    assert build_scorer("sharpness", median=3).score([img])[0] == pytest.approx(_laplacian_log_var(np.median(win, 0)), rel=1e-9)


def test_noise_does_not_pass_for_sharpness_colour_or_contrast(table):
    """Pixel noise must not raise the non-noise rewards (it did with full-resolution measures)."""
    for name, tol in (("sharpness", 0.3), ("colorfulness", 0.1), ("contrast", 0.05)):
        t = table[name]
        rel = (t["noise"] - t["clean"]) / np.abs(t["clean"])
        assert np.all(rel < tol), (name, rel)


def test_noise_estimator_recovers_sigma():
    rng = np.random.default_rng(0)
    for sigma in (2.0, 5.0, 20.0):
        arr = 128 + rng.normal(0, sigma, (256, 256, 3))
        assert noise_sigma(arr) == pytest.approx(sigma, rel=0.03)
    assert np.isnan(noise_sigma(np.zeros((1, 5, 3))))


def test_resolution_independence_of_area_scores():
    small, big = photo_like(3, 128, 128), photo_like(3, 128, 128).resize((512, 512), Image.NEAREST)
    for n in ("colorfulness", "contrast"):
        a, b = build_scorer(n).score([small, big])
        assert a == pytest.approx(b, rel=0.05)


def test_config_validation_and_provenance():
    with pytest.raises(ConfigError, match="size=4"):
        build_scorer("sharpness", size=4)
    with pytest.raises(ConfigError, match="median=4"):
        build_scorer("sharpness", median=4)
    with pytest.raises(ConfigError, match="max_side"):
        build_scorer("low_noise", max_side=1)
    with pytest.raises(ConfigError, match="reward 'sharp'"):
        build_scorer("sharp")
    prov = build_scorer("low_noise", max_side=512).provenance()
    assert prov["config"] == {"max_side": 512} and prov["weights"] == [] and "scipy" in prov["packages"]


def test_modes_and_odd_sizes_do_not_crash():
    imgs = [Image.new("L", (3, 1), 7), Image.new("RGBA", (5, 9), (1, 2, 3, 4)), Image.new("CMYK", (17, 4)), Image.new("P", (2, 2))]
    for n in NAMES:
        out = build_scorer(n).score(imgs)
        assert out.shape == (4,) and out.dtype == np.float64
    assert np.isnan(build_scorer("low_noise").score([imgs[0]])[0])  # 1 pixel high: no 2 x 2 Haar block


def test_requested_together_they_share_one_scorer_and_agree():
    from annotate.scorers import build_scorers
    from annotate.scorers.pixels import PixelViews

    (group,) = build_scorers(list(NAMES), {"sharpness": {"size": 128}})
    assert group.outputs == NAMES and group.name == "+".join(NAMES)
    imgs = [photo_like(s, 90, 120) for s in range(3)]
    out = group.score_dict(imgs)
    np.testing.assert_array_equal(out["sharpness"], build_scorer("sharpness", size=128).score(imgs))
    for n in NAMES[1:]:
        np.testing.assert_array_equal(out[n], build_scorer(n).score(imgs))
    views = PixelViews(imgs[0])
    assert views.area(8) is views.area(8) and views.native_luma() is views.native_luma()  # made once, shared
    assert set(group.provenance()["outputs"]) == set(NAMES)
