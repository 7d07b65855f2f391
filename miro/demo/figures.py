"""The demo's pictures: samples across reward targets, per-reward slider sweeps, the loss curve, and the
training data at its lowest and highest rewards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from miro.demo.config import DemoConfig
from miro.train.grids import DEFAULT_PROMPTS

TARGETS = (0.0, 0.25, 0.5, 0.75, 1.0)
GRID_PROMPTS = (
    *DEFAULT_PROMPTS,  # the training grids' prompts, then two more
    "a photo of three pink hearts",
    "a photo of a white diamond",
)
SWEEP_PROMPTS = {
    "alignment": "a photo of a blue square left of a yellow circle",
    "colorfulness": "a photo of an orange star and a green hexagon",
}
DEFAULT_SWEEP_PROMPT = "a photo of a red circle and a blue triangle"


def upscale(img: Image.Image, size: int = 96) -> Image.Image:
    return img.resize((size, size), Image.Resampling.NEAREST)


def labelled_grid(rows: list[list[Image.Image]], row_labels: list[str], cell: int = 96, label_w: int = 110,
                  column_labels: list[str] | None = None) -> Image.Image:
    gap, head = 2, (30 if column_labels else 0)
    w = label_w + len(rows[0]) * (cell + gap)
    h = head + len(rows) * (cell + gap)
    canvas = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(canvas)
    for c, label in enumerate(column_labels or []):
        x = label_w + c * (cell + gap)
        for i, line in enumerate(_wrap(label, max(8, cell // 6))[:2]):
            draw.text((x + 2, 2 + 12 * i), line, fill="black")
    for r, (row, label) in enumerate(zip(rows, row_labels)):
        y = head + r * (cell + gap)
        draw.text((4, y + cell // 2 - 6), label, fill="black")
        for c, img in enumerate(row):
            canvas.paste(upscale(img, cell), (label_w + c * (cell + gap), y))
    return canvas


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.removeprefix("a photo of ").split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + [line] if line else lines


@torch.no_grad()
def targets_grid(pipe, cfg: DemoConfig, path: Path) -> Path:
    """Rows: every reward at the same target (0 .. 1); columns: prompts x 2 seeds, the same noise per column.
    The same call renders the shipped reference model's figure (``reference_grid``)."""
    jobs = [(p, s) for p in GRID_PROMPTS for s in (0, 1)]
    rows = []
    rows_targets = [{r: t for r in pipe.reward_names} for t in TARGETS]
    rows_targets.append({r: cfg.high_targets.get(r, 1.0) for r in pipe.reward_names})
    for targets in rows_targets:
        images = pipe(
            [p for p, _ in jobs],
            reward_targets=targets,
            generator=[torch.Generator().manual_seed(1000 + s) for _, s in jobs],
            num_inference_steps=cfg.sample_steps,
            **cfg.guidance(),
        )
        rows.append(images)
    labels = [f"rewards = {t:g}" for t in TARGETS] + ["clean targets"]
    labelled_grid(rows, labels, column_labels=[p for p, _ in jobs]).save(path)
    return path


def reference_grid(cfg: DemoConfig, path: Path) -> Path | None:
    """``targets_grid`` of the shipped reference model (``cfg.reference``), if it is there and has the demo's
    rewards; None otherwise."""
    from miro.sampling.pipeline import MiroPipeline

    folder = Path(cfg.reference) if cfg.reference else None
    if folder is None or not (folder / "model_index.json").is_file():
        return None
    pipe = MiroPipeline.from_pretrained(folder)
    if list(pipe.reward_names) != list(cfg.rewards):
        return None
    pipe.set_progress_bar_config(disable=True)
    return targets_grid(pipe, cfg, path)


def sweeps(pipe, cfg: DemoConfig, out_dir: Path) -> dict[str, dict]:
    """One slider sweep per reward (the others at 1.0), measured with that reward's own scorer."""
    from annotate.scorers import build_scorer
    from miro.eval.sliders import save_scores, score_sweep
    from miro.sampling.sliders import reward_sweep, save_sweep

    results = {}
    for reward in pipe.reward_names:
        prompt = SWEEP_PROMPTS.get(reward, DEFAULT_SWEEP_PROMPT)
        result = reward_sweep(
            pipe, prompt, reward, targets=TARGETS, seeds=tuple(range(cfg.sweep_seeds)), batch_size=32,
            num_inference_steps=cfg.sample_steps, **cfg.guidance(),
        )
        scored = score_sweep(result, {reward: build_scorer(reward)}, batch_size=32)
        paths = {**save_sweep(result, out_dir / reward), **save_scores(scored, out_dir / reward)}
        paths.pop("images")
        summary = scored.summary()
        results[reward] = {"prompt": prompt, "paths": {k: str(v) for k, v in paths.items()}, "summary": summary}
    return results


def loss_curve(train_dir: Path, path: Path) -> Path | None:
    """train/loss from the TensorBoard events of the run, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted((train_dir / "logs").rglob("events.out.tfevents.*"))
    if not events:
        return None
    acc = EventAccumulator(str(events[-1].parent))
    acc.Reload()
    if "train/loss" not in acc.Tags().get("scalars", []):
        return None
    pts = acc.Scalars("train/loss")
    fig, ax = plt.subplots(figsize=(5, 3), dpi=120)
    ax.plot([p.step for p in pts], [p.value for p in pts], lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def data_extremes(cfg: DemoConfig, path: Path, n: int = 10) -> Path:
    """Training images with the lowest and the highest mean reward bucket (what the rewards see)."""
    from miro.contracts import sidecar
    from miro.contracts.buckets import read_buckets
    from miro.contracts.shards import list_shards
    from miro.data.images import decode_image
    from miro.data.shards import iter_shard

    shard = list_shards(Path(cfg.out) / "data" / "train")[0]
    keys, columns, _ = read_buckets(sidecar.buckets_path(sidecar.rewards_path(shard)))
    buckets = np.stack([columns[c].astype(np.int64) for c in columns], axis=1)
    valid = buckets >= 0
    mean = np.where(valid, buckets, 0).sum(1) / np.maximum(valid.sum(1), 1)
    order = np.argsort(mean, kind="stable")
    pick = {"lowest": [keys[i] for i in order[:n]], "highest": [keys[i] for i in order[::-1][:n]]}
    wanted = set(pick["lowest"]) | set(pick["highest"])
    images = {}
    for key, sample in iter_shard(shard):
        if key in wanted:
            ext = next(e for e in ("png", "jpg", "jpeg", "webp") if e in sample)
            images[key] = decode_image(sample[ext])
    rows = [[images[k] for k in pick["lowest"]], [images[k] for k in pick["highest"]]]
    labelled_grid(rows, ["lowest rewards", "highest rewards"], cell=72).save(path)
    return path


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str))
