"""Measure reward sliders: score a sweep's images, Spearman's rank correlation between target and score,
and the plot (the sweep itself, images and settings, is rendered by ``miro.sampling.sliders``).

``score_sweep_folder`` reads a folder written by ``miro.sampling.sliders.save_sweep`` (``python -m
miro.sampling mode=sweep``), scores every image with the reward scorers (``Scorer``: ``score(images,
prompts) -> float64``) and adds ``scores`` and ``summary`` to its ``sweep.json`` and ``plot.png`` (measured
reward against target, mean ± std over seeds) beside it.  ``python -m miro.eval sliders image_dir=...``.
An image that cannot be read is excluded and reported (the policy of every evaluator, ``miro.eval.excluded``):
its scores are NaN (left out of the means and of Spearman's rho), it is listed under ``excluded`` in
``sweep.json`` and counted in each summary, and one line is printed.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from miro.eval.excluded import read_image, report_excluded
from miro.eval.rewards import Scorer
from miro.sampling.sliders import SWEEP_FILE, SweepResult, load_sweep
from miro.utils.atomic import atomic_write_json


@dataclass
class ScoredSweep:
    sweep: SweepResult
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # scorer name -> [target, seed]
    excluded: list[dict] = field(default_factory=list)  # unreadable images: {"path", "reason"}

    def summary(self) -> dict[str, Any]:
        """Per scorer: mean and std over seeds per target, and Spearman's rho between target and score
        over all images (NaN scores left out; None when undefined, e.g. constant scores)."""
        from scipy.stats import spearmanr

        out = {}
        for name, s in self.scores.items():
            x = np.repeat(np.asarray(self.sweep.targets, dtype=np.float64), len(self.sweep.seeds))
            y = s.reshape(-1)
            ok = np.isfinite(y)
            defined = ok.sum() >= 3 and np.ptp(x[ok]) > 0 and np.ptp(y[ok]) > 0
            rho, p = spearmanr(x[ok], y[ok]) if defined else (math.nan, math.nan)
            with warnings.catch_warnings():  # a target whose every score is NaN has mean and std NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, std = np.nanmean(s, axis=1), np.nanstd(s, axis=1)
            out[name] = {
                "mean": _json_floats(mean),
                "std": _json_floats(std),
                "spearman": _json_float(rho),
                "spearman_p": _json_float(p),
                "num_nan": int((~ok).sum()),
                "excluded": len(self.excluded),
            }
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            **self.sweep.to_json(),
            "scores": {k: [_json_floats(row) for row in v] for k, v in self.scores.items()},
            "summary": self.summary(),
            "excluded": list(self.excluded),
        }


def _json_float(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _json_floats(values) -> list[float | None]:
    return [_json_float(float(v)) for v in values]


def score_sweep(sweep: SweepResult, scorers: Mapping[str, Scorer], batch_size: int = 16) -> ScoredSweep:
    """Every image of the sweep scored by every scorer (with the sweep's prompt)."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1")
    flat = [image for row in sweep.images for image in row]
    readable = [i for i, image in enumerate(flat) if image is not None]  # None: excluded (unreadable)
    shape = (len(sweep.targets), len(sweep.seeds))
    scores = {}
    for name, scorer in scorers.items():
        measured = _score_all(scorer, [flat[i] for i in readable], sweep.prompt, batch_size)
        if measured.shape != (len(readable),):
            raise ValueError(f"scorer {name!r} returned shape {measured.shape} for {len(readable)} images")
        full = np.full(len(flat), np.nan)
        full[readable] = measured
        scores[name] = full.reshape(shape)
    return ScoredSweep(sweep, scores)


def _score_all(scorer: Scorer, images: list[Image.Image], prompt: str, batch_size: int) -> np.ndarray:
    parts = [np.zeros(0)]
    for i in range(0, len(images), batch_size):
        chunk = images[i : i + batch_size]
        parts.append(np.asarray(scorer.score(chunk, [prompt] * len(chunk)), dtype=np.float64).reshape(-1))
    return np.concatenate(parts)


def plot_sweep(scored: ScoredSweep, path: str | Path) -> None:
    """Measured score against target (mean ± std over seeds), one panel per scorer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = scored.sweep
    summary = scored.summary()
    names = list(scored.scores)
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(4 * max(1, len(names)), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        mean = np.array([np.nan if v is None else v for v in summary[name]["mean"]])
        std = np.array([np.nan if v is None else v for v in summary[name]["std"]])
        ax.errorbar(result.targets, mean, yerr=std, marker="o", capsize=3)
        rho = summary[name]["spearman"]
        ax.set_title(f"{name}  (Spearman {'n/a' if rho is None else f'{rho:.2f}'})", fontsize=9)
        ax.set_xlabel(f"target {result.reward}")
        ax.set_ylabel("measured")
        ax.grid(alpha=0.3)
    if not names:
        axes[0][0].set_axis_off()
    fig.suptitle(result.prompt[:80], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save_scores(scored: ScoredSweep, out_dir: str | Path) -> dict[str, Path]:
    """Write plot.png and sweep.json (the sweep with its scores and summary) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"plot": out / "plot.png", "json": out / SWEEP_FILE}
    plot_sweep(scored, paths["plot"])
    atomic_write_json(paths["json"], scored.to_json(), indent=2)
    return paths


def load_sweep_readable(folder: str | Path) -> tuple[SweepResult, list[dict]]:
    """``load_sweep`` with unreadable images replaced by None and listed (``{"path", "reason"}``)."""
    folder = Path(folder)
    if not (folder / SWEEP_FILE).is_file():
        return load_sweep(folder), []  # its clear "no sweep here" error
    data = json.loads((folder / SWEEP_FILE).read_text())
    excluded: list[dict] = []
    images = []
    for row in data["images"]:
        images.append([])
        for name in row:
            image, reason = read_image(folder / name)
            if image is None:
                excluded.append({"path": name, "reason": reason})
            images[-1].append(image)
    sweep = SweepResult(data["prompt"], data["reward"], data["targets"], data["seeds"], data["fixed_targets"], images,
                        data.get("settings", {}))  # fmt: skip
    return sweep, excluded


def score_sweep_folder(folder: str | Path, scorers: Mapping[str, Scorer], batch_size: int = 16) -> ScoredSweep:
    """Score the sweep saved in ``folder`` and write its scores, summary and plot beside it (unreadable images
    excluded and reported)."""
    sweep, excluded = load_sweep_readable(folder)
    scored = score_sweep(sweep, scorers, batch_size)
    scored.excluded = excluded
    report_excluded(f"sliders ({folder})", excluded, sum(len(row) for row in sweep.images))
    save_scores(scored, folder)
    return scored


def sweep_folders(image_dir: str | Path) -> list[Path]:
    """``image_dir`` itself when it holds a sweep, else its ``sweep_*`` folders (``python -m miro.sampling
    mode=sweep`` writes one per prompt)."""
    root = Path(image_dir)
    if (root / SWEEP_FILE).is_file():
        return [root]
    return sorted(p for p in root.glob("sweep_*") if (p / SWEEP_FILE).is_file())
