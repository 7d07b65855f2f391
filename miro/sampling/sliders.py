"""Reward sliders for people: vary one reward's target, measure what the images really score.

``reward_sweep`` renders a grid (targets along rows, seeds along columns, the other rewards fixed), scores
every image with the reward scorers (``annotate.scorers`` API: ``score(images, prompts) -> float64``) and
``save_sweep`` writes ``grid.png``, ``plot.png`` (measured reward against target, mean ± std over seeds)
and ``sweep.json`` (every number, with Spearman's rank correlation between target and measured value).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image, ImageDraw


class Scorer(Protocol):
    def score(self, images: list[Image.Image], prompts: list[str]) -> np.ndarray: ...


@dataclass
class SweepResult:
    prompt: str
    reward: str
    targets: list[float]
    seeds: list[int]
    fixed_targets: dict[str, float | None]
    images: list[list[Image.Image]]  # [target][seed]
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # scorer name -> [target, seed]
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Per scorer: mean and std over seeds per target, and Spearman's rho between target and score
        over all images (NaN scores left out; None when undefined, e.g. constant scores)."""
        from scipy.stats import spearmanr

        out = {}
        for name, s in self.scores.items():
            x = np.repeat(np.asarray(self.targets, dtype=np.float64), len(self.seeds))
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
            }
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "reward": self.reward,
            "targets": self.targets,
            "seeds": self.seeds,
            "fixed_targets": self.fixed_targets,
            "settings": self.settings,
            "scores": {k: [_json_floats(row) for row in v] for k, v in self.scores.items()},
            "summary": self.summary(),
        }


def _json_float(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _json_floats(values) -> list[float | None]:
    return [_json_float(float(v)) for v in values]


def reward_sweep(
    pipe,
    prompt: str,
    reward: str,
    targets: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    seeds: Sequence[int] = (0, 1, 2, 3),
    scorers: Mapping[str, Scorer] | None = None,
    fixed_targets: Mapping[str, float | None] | None = None,
    batch_size: int = 16,
    **pipe_kwargs,
) -> SweepResult:
    """Render ``prompt`` for every (target, seed) with ``reward`` set to the target and the other rewards
    at ``fixed_targets`` (default 1.0), then score every image.

    Each image has its own CPU generator seeded with its seed, so a column shares its initial noise and the
    images do not depend on ``batch_size``.  ``pipe_kwargs`` go to the pipeline call (guidance scales,
    steps, sampler, ...).
    """
    from miro.sampling.targets import canonical_keys, canonical_reward

    names = list(pipe.reward_names)
    reward = canonical_reward(reward, names, "reward")
    fixed = canonical_keys(fixed_targets, names, "fixed_targets")
    if reward in fixed:
        raise ValueError(f"fixed_targets sets {reward!r}, the reward being swept; leave it out")
    if not targets or not seeds:
        raise ValueError(f"targets={list(targets)} and seeds={list(seeds)}: both must be non-empty")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1")
    jobs = [(float(t), int(s)) for t in targets for s in seeds]
    flat: list[Image.Image] = []
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        flat += pipe(
            [prompt] * len(chunk),
            reward_targets=[{**fixed, reward: t} for t, _ in chunk],
            generator=[torch.Generator().manual_seed(s) for _, s in chunk],
            output_type="pil",
            **pipe_kwargs,
        )
    shape = (len(targets), len(seeds))
    scores = {}
    for name, scorer in (scorers or {}).items():
        measured = _score_all(scorer, flat, prompt, batch_size)
        if measured.shape != (len(flat),):
            raise ValueError(f"scorer {name!r} returned shape {measured.shape} for {len(flat)} images")
        scores[name] = measured.reshape(shape)
    return SweepResult(
        prompt=prompt,
        reward=reward,
        targets=[float(t) for t in targets],
        seeds=[int(s) for s in seeds],
        fixed_targets={n: fixed.get(n, 1.0) for n in names if n != reward},
        images=[flat[i * len(seeds) : (i + 1) * len(seeds)] for i in range(len(targets))],
        scores=scores,
        settings={k: v for k, v in pipe_kwargs.items() if isinstance(v, (int, float, str, bool, type(None), list, tuple))},
    )


def _score_all(scorer: Scorer, images: list[Image.Image], prompt: str, batch_size: int) -> np.ndarray:
    parts = []
    for i in range(0, len(images), batch_size):
        chunk = images[i : i + batch_size]
        parts.append(np.asarray(scorer.score(chunk, [prompt] * len(chunk)), dtype=np.float64).reshape(-1))
    return np.concatenate(parts)


def grid_image(result: SweepResult, label_width: int = 64, label_height: int = 20) -> Image.Image:
    """Targets along rows (labelled on the left), seeds along columns (labelled on top)."""
    w, h = result.images[0][0].size
    grid = Image.new("RGB", (label_width + w * len(result.seeds), label_height + h * len(result.targets)), "white")
    draw = ImageDraw.Draw(grid)
    for j, seed in enumerate(result.seeds):
        draw.text((label_width + j * w + 4, 4), f"seed {seed}", fill="black")
    for i, target in enumerate(result.targets):
        draw.text((4, label_height + i * h + h // 2 - 6), f"{result.reward}\n{target:.3g}", fill="black")
        for j, img in enumerate(result.images[i]):
            grid.paste(img.convert("RGB"), (label_width + j * w, label_height + i * h))
    return grid


def plot_sweep(result: SweepResult, path: str | Path) -> None:
    """Measured score against target (mean ± std over seeds), one panel per scorer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result.summary()
    names = list(result.scores)
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


def save_sweep(result: SweepResult, out_dir: str | Path) -> dict[str, Path]:
    """Write grid.png, plot.png and sweep.json into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"grid": out / "grid.png", "plot": out / "plot.png", "json": out / "sweep.json"}
    grid_image(result).save(paths["grid"])
    plot_sweep(result, paths["plot"])
    tmp = paths["json"].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result.to_json(), indent=2))
    tmp.replace(paths["json"])
    return paths
