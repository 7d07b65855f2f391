"""The programmatic shapes detector: image in, detections out (class, colour, box, mask, score).

1. **Background and noise.**  The background colour is the median of the image border; the noise level is a
   robust estimate from neighbour differences, and a noisy image is smoothed before segmentation.
2. **Segmentation.**  Pixels further than an adaptive threshold (CIELAB Delta-E) from the background are
   foreground; 8-connected components larger than a minimum area are object candidates.
3. **Coverage.**  Each candidate's colour is the median of its most saturated pixels; the fraction ``alpha`` of
   each nearby pixel covered by the object is the projection of (pixel - background) onto (colour -
   background), the inverse of the renderer's compositing.
4. **Shape.**  Rotation- and scale-invariant moments of ``alpha``: the magnitudes of the complex moments
   ``sum(alpha z^k)`` for k = 2..6 and ``sum(alpha z^2 conj(z))``, normalised by the area.  Centred complex
   moments do not change under an isotropic blur, so the features survive blurring.  A Gaussian classifier
   fitted on freshly rendered single objects (deterministic, about a second, once per process) gives class
   posteriors; the score is the posterior times a typicality factor, so fragments and blobs score low.
5. **Colour.**  Nearest palette colour in CIELAB after explaining the background by a global contrast
   factor and colour cast: the factor that best explains all candidates' colours at once is chosen.

Output: the contract of docs/contracts.md, ``{"class", "score", "box": [x0, y0, x1, y1], "mask", "color"}``,
sorted by decreasing score.  Boxes are in pixels with exclusive ends (a one-pixel object at (3, 5) has box
[3, 5, 4, 6]).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image
from scipy import ndimage

from miro.data.shapes.geometry import MAX_ROTATION, Placed
from miro.data.shapes.render import coverage
from miro.data.shapes.vocab import BACKGROUND, CLASSES, COLORS, palette_array, srgb_to_lab

_EIGHT = np.ones((3, 3), dtype=bool)
CONTRASTS = (1.0, 0.85, 0.7, 0.55, 0.4, 0.25)  # contrast factors tried when naming colours
MIX_STEPS = np.array([1.0, 1.15, 1.3, 1.5, 1.75, 2.0, 2.5, 3.0])  # how far a colour may be diluted by background


def as_array(image) -> np.ndarray:
    """``[H, W, 3]`` float64 RGB in 0..255 from a PIL image or a uint8 / float array."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {arr.shape}")
    return arr[..., :3].astype(np.float64)


def shape_features(alpha: np.ndarray) -> np.ndarray | None:
    """Six rotation-, scale- and blur-invariant features of a coverage map (see the module docstring); None
    for a map without positive mass."""
    h, w = alpha.shape
    ys, xs = np.mgrid[0:h, 0:w]
    wgt = alpha.ravel()
    area = wgt.sum()
    if area <= 1e-6:
        return None
    z = xs.ravel() + 1j * ys.ravel()
    z = z - (wgt * z).sum() / area
    zk = np.ones_like(z)
    out = []
    for k in range(1, 7):
        zk = zk * z
        if k >= 2:
            out.append(abs((wgt * zk).sum()) / area ** (1 + k / 2))
    out.append(abs((wgt * z * z * np.conj(z)).sum()) / area**2.5)
    return np.log(np.array(out) + 1e-4)


class ShapeClassifier:
    """Gaussian class-conditional model (one full covariance per class, ridge-regularised) over
    ``shape_features``; ``predict`` gives posteriors under equal priors and each row's Mahalanobis distance
    to the winning class."""

    def __init__(self, classes: tuple[str, ...], means: np.ndarray, covs: np.ndarray):
        self.classes = classes
        self.means = means
        self.prec = np.linalg.inv(covs)
        self.logdet = np.linalg.slogdet(covs)[1]

    @classmethod
    def fit(cls, classes: tuple[str, ...], x: np.ndarray, y: np.ndarray, ridge: float = 1e-3) -> ShapeClassifier:
        means, covs = [], []
        for i in range(len(classes)):
            xi = x[y == i]
            means.append(xi.mean(0))
            covs.append(np.cov(xi.T) + ridge * np.eye(x.shape[1]))
        return cls(classes, np.array(means), np.array(covs))

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = x[:, None, :] - self.means[None]
        m2 = np.einsum("nki,kij,nkj->nk", d, self.prec, d)
        logp = -0.5 * (m2 + self.logdet[None])
        logp -= logp.max(1, keepdims=True)
        post = np.exp(logp)
        post /= post.sum(1, keepdims=True)
        return post, m2[np.arange(len(x)), post.argmax(1)]


RIM_PX = 2  # coverage is read this far around a candidate's pixels: the anti-aliased (or blurred) rim
RING_PX = (3, 6)  # the local background is fitted on pixels this far out


def zone_alpha(alpha: np.ndarray, comp: np.ndarray, owned: np.ndarray | None = None) -> np.ndarray:
    """The coverage map kept for the features: the candidate's pixels grown by ``RIM_PX``, within the pixels
    it owns; everything else 0.  The same rule serves training and detection."""
    zone = ndimage.binary_dilation(comp, _EIGHT, iterations=RIM_PX)
    if owned is not None:
        zone &= owned
    return np.where(zone, np.clip(alpha, -0.5, 1.5), 0.0)


def _training_features(rng: np.random.Generator, cls: str, n: int) -> list[np.ndarray]:
    """Features of ``n`` single objects, 8..64 px, random rotation and sub-pixel offset, half of them blurred
    and a third with pixel noise, read through ``zone_alpha`` as the detector reads them."""
    out = []
    for j in range(n):
        size = float(np.exp(rng.uniform(np.log(8), np.log(64))))
        res = int(size + 24)
        p = Placed(cls, "", (res / 2 + rng.uniform(-0.5, 0.5), res / 2 + rng.uniform(-0.5, 0.5)), size,
                   rng.uniform(-MAX_ROTATION[cls], MAX_ROTATION[cls]))
        y0, x0, a = coverage(p.polygon(), res, 4)
        full = np.zeros((res, res))
        full[y0 : y0 + a.shape[0], x0 : x0 + a.shape[1]] = a
        if j % 2 == 1:
            full = ndimage.gaussian_filter(full, rng.uniform(0.3, 0.05 * size + 0.5))
        if j % 3 == 2:
            full = full + rng.normal(0, rng.uniform(0.01, 0.05), size=full.shape)
        lab, _ = ndimage.label(ndimage.gaussian_filter(full, 0.5) > 0.15, structure=_EIGHT)
        comp = lab == np.bincount(lab.ravel())[1:].argmax() + 1
        out.append(shape_features(zone_alpha(full, comp)))
    return out


@lru_cache(maxsize=8)
def fitted_classifier(classes: tuple[str, ...] = CLASSES, per_class: int = 240, seed: int = 0) -> ShapeClassifier:
    """The classifier fitted on renders drawn with ``seed`` (deterministic; cached per process)."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i, c in enumerate(classes):
        xs += _training_features(rng, c, per_class)
        ys += [i] * per_class
    return ShapeClassifier.fit(classes, np.array(xs), np.array(ys))


@dataclass(frozen=True)
class DetectorOptions:
    min_area_frac: float = 0.003  # candidates smaller than this fraction of the image area are ignored ...
    min_area_px: float = 8.0  # ... and smaller than this many pixels
    fg_threshold: float = 12.0  # least Delta-E from the background for a foreground pixel (raised with noise)
    typical_m2: float = 30.0  # squared Mahalanobis distance beyond which the score decays (6 features)


class ShapesDetector:
    """Detects the shapes world's objects; ``detector(image)`` returns the detections list."""

    def __init__(self, classes: tuple[str, ...] = CLASSES, colors: tuple[str, ...] = COLORS,
                 background: tuple[int, int, int] = BACKGROUND, options: DetectorOptions = DetectorOptions()):
        self.classes, self.colors, self.options = tuple(classes), tuple(colors), options
        self.background = np.asarray(background, dtype=np.float64)
        self.palette = palette_array(self.colors)
        self.classifier = fitted_classifier(self.classes)

    def __call__(self, image, masks: bool = True) -> list[dict]:
        return self.detect(image, masks)

    @staticmethod
    def noise_level(arr: np.ndarray) -> float:
        """Per-channel noise standard deviation (0..255) from the median absolute neighbour difference."""
        d = np.concatenate([(arr[:, 1:] - arr[:, :-1]).ravel(), (arr[1:] - arr[:-1]).ravel()])
        return float(1.4826 * np.median(np.abs(d)) / np.sqrt(2))

    def detect(self, image, masks: bool = True) -> list[dict]:
        arr = as_array(image)
        h, w, _ = arr.shape
        opt = self.options
        noise = self.noise_level(arr)
        smooth_sigma = 0.0 if noise < 3.0 else float(np.clip(noise / 16.0, 0.6, 2.0))
        sm = ndimage.gaussian_filter(arr, (smooth_sigma, smooth_sigma, 0)) if smooth_sigma else arr
        bw = max(1, min(h, w) // 32)
        border = np.concatenate([sm[:bw].reshape(-1, 3), sm[-bw:].reshape(-1, 3), sm[:, :bw].reshape(-1, 3), sm[:, -bw:].reshape(-1, 3)])
        bg = np.median(border, axis=0)
        lab = srgb_to_lab(sm)
        dist = np.linalg.norm(lab - srgb_to_lab(bg), axis=-1)
        bdist = np.concatenate([dist[:bw].ravel(), dist[-bw:].ravel(), dist[:, :bw].ravel(), dist[:, -bw:].ravel()])
        thr = max(opt.fg_threshold, float(np.median(bdist) + 6 * 1.4826 * np.median(np.abs(bdist - np.median(bdist)))))
        labels, n = ndimage.label(dist > thr, structure=_EIGHT)
        if n == 0:
            return []
        min_area = max(opt.min_area_px, opt.min_area_frac * h * w)
        areas = np.bincount(labels.ravel(), minlength=n + 1)
        keep = areas >= min_area
        keep[0] = False
        if not keep.any():
            return []
        labels = np.where(keep[labels], labels, 0)
        # every background pixel belongs to its nearest candidate, so a blurred object's faint rim is counted
        # with it and not with its neighbour
        _, (iy, ix) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
        owner = labels[iy, ix]
        pad = RING_PX[1] + 1
        cands = []
        for idx, sl in enumerate(ndimage.find_objects(labels), start=1):
            if sl is None:
                continue
            y0, y1 = max(0, sl[0].start - pad), min(h, sl[0].stop + pad)
            x0, x1 = max(0, sl[1].start - pad), min(w, sl[1].stop + pad)
            comp = labels[y0:y1, x0:x1] == idx
            owned = owner[y0:y1, x0:x1] == idx
            patch = sm[y0:y1, x0:x1]
            d = dist[y0:y1, x0:x1][comp]
            core = d >= 0.8 * np.quantile(d, 0.9)
            color = np.median(patch[comp][core], axis=0)
            ring = (owned & ndimage.binary_dilation(comp, _EIGHT, iterations=RING_PX[1])
                    & ~ndimage.binary_dilation(comp, _EIGHT, iterations=RING_PX[0]) & (dist[y0:y1, x0:x1] <= thr))
            local_bg = _background_plane(patch, ring, bg)
            v = color - (local_bg[ring].mean(0) if ring.any() else bg)
            alpha = zone_alpha(((patch - local_bg) * v).sum(-1) / max(float(v @ v), 1e-6), comp, owned)
            inside = alpha >= 0.4
            if not inside.any():
                continue
            cands.append((idx, (y0, x0), alpha, inside, color))
        if not cands:
            return []
        feats = [shape_features(c[2]) for c in cands]
        cands = [c for c, f in zip(cands, feats) if f is not None]
        if not cands:
            return []
        feats = np.array([f for f in feats if f is not None])
        post, m2 = self.classifier.predict(feats)
        names, fits = self._name_colors(np.array([c[4] for c in cands]), bg)
        dets = []
        for (_idx, (y0, x0), _alpha, inside, _color), p, dm, cname, fit in zip(cands, post, m2, names, fits):
            ys, xs = np.nonzero(inside)
            box = [float(x0 + xs.min()), float(y0 + ys.min()), float(x0 + xs.max() + 1), float(y0 + ys.max() + 1)]
            k = int(p.argmax())
            typical = float(np.exp(-max(0.0, dm - opt.typical_m2) / opt.typical_m2))
            mask = None
            if masks:
                mask = np.zeros((h, w), dtype=bool)
                mask[y0 : y0 + inside.shape[0], x0 : x0 + inside.shape[1]] = inside
            dets.append({"class": self.classes[k], "score": float(p[k] * typical * fit), "box": box, "mask": mask, "color": cname})
        dets.sort(key=lambda d: -d["score"])
        return dets

    def _name_colors(self, colors: np.ndarray, bg: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Palette names of the candidates' colours, and how well each is explained (a factor in (0, 1]).

        A candidate's colour may be the palette colour mixed with the background (blur spreads a small object
        thinner than its own colour), so the colour is compared with the ray from the background through it,
        ``bg + t (colour - bg)`` for t in ``MIX_STEPS``, paying a little for each step beyond 1.  The palette
        itself is seen through a contrast factor c (toward the background's grey level m: the background
        would show ``m + c (ref - m)``) and the per-channel cast that turns that into the observed background.
        The factor with the smallest total cost over all candidates wins (with a small penalty for departing
        from 1).  The fit factor decays when the best match is still far (Delta-E beyond 12) or needs much
        mixing (t beyond 1.6), which is what halos and smudges look like."""
        m = self.background.mean()
        rays = np.clip(bg + MIX_STEPS[:, None, None] * (colors - bg)[None], 0, 255)  # [T, N, 3]
        rays_lab = srgb_to_lab(rays)
        best = None
        for c in CONTRASTS:
            cast = bg / np.maximum(m + c * (self.background - m), 1.0)
            pal = srgb_to_lab(np.clip((m + c * (self.palette - m)) * cast, 0, 255))
            d = np.linalg.norm(rays_lab[:, :, None] - pal[None, None], axis=-1)  # [T, N, P]
            cost = d + 8.0 * (MIX_STEPS[:, None, None] - 1.0)
            t_best = cost.argmin(0)  # [N, P]
            per = np.take_along_axis(cost, t_best[None], 0)[0]  # [N, P]
            total = per.min(1).sum() + 4.0 * (1.0 - c) * len(colors)
            if best is None or total < best[0]:
                k = per.argmin(1)
                n = np.arange(len(colors))
                t = MIX_STEPS[t_best[n, k]]
                best = (total, k, d[t_best[n, k], n, k], t)
        _, k, de, t = best
        fit = np.exp(-np.maximum(0.0, de - 12.0) / 12.0) * np.exp(-np.maximum(0.0, t - 1.6) / 0.6)
        return [self.colors[i] for i in k], fit


def _background_plane(patch: np.ndarray, ring: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Per-pixel background of ``patch`` ([h, w, 3]): a plane per channel fitted to the ``ring`` pixels, which
    follows the background's smooth texture; the global colour when the ring is too small to fit."""
    h, w, _ = patch.shape
    if ring.sum() < 12:
        return np.broadcast_to(fallback, patch.shape)
    ys, xs = np.nonzero(ring)
    design = np.stack([np.ones_like(xs), xs, ys], axis=1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(design, patch[ring], rcond=None)
    gy, gx = np.mgrid[0:h, 0:w]
    return coef[0] + gx[..., None] * coef[1] + gy[..., None] * coef[2]


@lru_cache(maxsize=1)
def default_detector() -> ShapesDetector:
    return ShapesDetector()


def detect(image, masks: bool = True) -> list[dict]:
    """Detections of the default detector (all classes and colours of the shapes world)."""
    return default_detector()(image, masks)
