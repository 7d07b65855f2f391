"""Reward metrics of generated images: score a GenEval-layout folder, summarise, compare runs.

``score_folder`` scores every sample image (the layout of ``miro.eval.geneval.layout``) with any set of
scorers (``annotate.scorers`` API: ``scorer.name``, ``scorer.score(images, prompts) -> float64 array``, NaN
where a pair cannot be scored) and writes ``rewards.jsonl``, one row per image::

    {"folder": 0, "sample": 0, "filename": "00000/samples/0000.png", "prompt": ..., "tag": ...,
     "status": "ok" | reason, "<reward>": float or null, ...}

An image that cannot be read is excluded and reported (the policy of every evaluator, ``miro.eval.excluded``):
its row has ``status: "excluded: unreadable image (<reason>)"`` and null rewards, summaries leave it out and count
it under ``excluded`` (``nan_count`` counts only pairs a scorer could not score), the run prints one line listing
them, and a rerun tries them again.

Progress is appended to the file batch by batch, so a killed job resumes where it stopped; adding a scorer
later scores only that reward.  The finished file is rewritten in folder order.

Statistics.  The n samples of one prompt are not independent draws of the model's quality (they share the
prompt), so confidence intervals treat the prompt as the unit: the 95% interval is Student's t over the
per-prompt means (mean over a prompt's scored samples), ``mean ± t(0.975, P-1) · sd / √P``.  ``mean`` and
``std`` are over images (equal to the mean of prompt means when every prompt has the same number of scored
samples).  Comparing two runs on the same prompts uses a paired t-test on per-prompt means (and the t
interval of the mean paired difference); on different prompts, Welch's t-test.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from miro.eval.excluded import read_image, report_excluded
from miro.eval.geneval.layout import iter_prompt_folders
from miro.eval.jsonl import read_jsonl, write_jsonl

log = logging.getLogger(__name__)

REWARDS_FILE = "rewards.jsonl"
EXCLUDED = "excluded"  # the prefix of the status of an unreadable image
ROW_KEYS = ("folder", "sample", "filename", "prompt", "tag", "status")


class Scorer(Protocol):
    """``annotate.scorers`` API: ``name``, ``score(images, prompts)``; grouped scorers add ``outputs`` and
    ``score_dict(images, prompts) -> {reward: array}``."""

    name: str

    def score(self, images: list, prompts: list[str]) -> np.ndarray: ...


class RewardsError(ValueError):
    """A rewards file or a scorer's output is unusable."""


@dataclass(frozen=True)
class ImageRef:
    folder: int
    sample: int
    filename: str  # relative to the image folder, with "/" separators
    path: Path
    prompt: str
    tag: str | None


def list_images(image_dir: str | Path) -> list[ImageRef]:
    """Every sample image of the layout, in folder then sample order."""
    image_dir = Path(image_dir)
    refs = []
    for folder in iter_prompt_folders(image_dir):
        for sample in folder.samples:
            refs.append(
                ImageRef(
                    folder=folder.index,
                    sample=int(sample.name.split(".")[0]),
                    filename=sample.relative_to(image_dir).as_posix(),
                    path=sample,
                    prompt=folder.metadata["prompt"],
                    tag=folder.metadata.get("tag"),
                )
            )
    return refs


def load_rewards(path: str | Path) -> list[dict]:
    """Rows of a ``rewards.jsonl`` (partial rows of one image merged; JSON null read as NaN)."""
    merged: dict[str, dict] = {}
    for lineno, row in read_jsonl(path, RewardsError, allow_torn_tail=True):
        if not isinstance(row, dict) or "filename" not in row:
            raise RewardsError(f"{path}:{lineno}: expected an object with a 'filename'")
        merged.setdefault(row["filename"], {}).update(row)
    for row in merged.values():
        for key, value in row.items():
            if value is None and key not in ROW_KEYS:
                row[key] = math.nan
    return list(merged.values())


def reward_names(rows: Sequence[dict]) -> list[str]:
    """Reward columns present in ``rows``, in first-seen order."""
    names: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key not in ROW_KEYS:
                names.setdefault(key, None)
    return list(names)


def scorer_outputs(scorer: Scorer) -> tuple[str, ...]:
    """The reward columns a scorer fills: ``outputs`` of a grouped annotate scorer, else its ``name``."""
    return tuple(getattr(scorer, "outputs", ()) or (scorer.name,))


def _score(scorer: Scorer, images: list, prompts: list[str]) -> dict[str, np.ndarray]:
    if hasattr(scorer, "score_dict"):  # annotate's grouped scorers fill several rewards in one pass
        return scorer.score_dict(images, prompts)
    return {scorer.name: scorer.score(images, prompts)}


def score_folder(
    image_dir: str | Path,
    scorers: Sequence[Scorer],
    out_file: str | Path | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> list[dict]:
    """Score every image of ``image_dir`` with every scorer; returns the rows written to ``out_file``."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1")
    names = [n for s in scorers for n in scorer_outputs(s)]
    if len(set(names)) != len(names):
        raise ValueError(f"reward names must be unique across scorers, got {names}")
    image_dir = Path(image_dir)
    out_file = Path(out_file) if out_file is not None else image_dir / REWARDS_FILE
    refs = list_images(image_dir)
    if not refs:
        raise RewardsError(f"no sample images under {image_dir} (expected NNNNN/samples/NNNN.png)")
    done = {row["filename"]: row for row in load_rewards(out_file)} if out_file.exists() else {}
    for ref in refs:  # excluded images are tried again (a file fixed since is then scored)
        if str(done.get(ref.filename, {}).get("status", "")).startswith(EXCLUDED):
            done.pop(ref.filename)
    todo = [r for r in refs if any(n not in done.get(r.filename, {}) for n in names)]
    log.info("%d of %d images need scoring", len(todo), len(refs))
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with out_file.open("a", encoding="utf-8") as fp, tqdm(total=len(todo), desc="rewards", unit="img", disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            for row in _score_batch(batch, scorers, done):
                fp.write(_dumps(row) + "\n")
                done.setdefault(row["filename"], {}).update(row)
            fp.flush()
            bar.update(len(batch))
    rows = []
    for ref in refs:
        got = done[ref.filename]
        row = {"folder": ref.folder, "sample": ref.sample, "filename": ref.filename, "prompt": ref.prompt,
               "tag": ref.tag, "status": got.get("status", "ok")}  # fmt: skip
        row.update({n: float(got[n]) for n in reward_names([got])})
        rows.append(row)
    write_jsonl([_nan_to_none(r) for r in rows], out_file)
    excluded = [{"path": r["filename"], "reason": r["status"].split("(", 1)[-1].rstrip(")")} for r in rows if is_excluded(r)]
    report_excluded("rewards", excluded, len(rows))
    return rows


def is_excluded(row: Mapping) -> bool:
    return str(row.get("status", "")).startswith(EXCLUDED)


def _score_batch(batch: Sequence[ImageRef], scorers: Sequence[Scorer], done: Mapping[str, dict]) -> list[dict]:
    rows = [{"filename": r.filename, "folder": r.folder, "sample": r.sample, "status": "ok"} for r in batch]
    images: list = []
    for ref, row in zip(batch, rows):
        image, reason = read_image(ref.path)
        images.append(image)
        if reason is not None:
            row["status"] = f"{EXCLUDED}: unreadable image ({reason})"
    for scorer in scorers:
        outputs = scorer_outputs(scorer)
        idx = [i for i, r in enumerate(batch) if any(o not in done.get(r.filename, {}) for o in outputs)]
        ok = [i for i in idx if images[i] is not None]
        for i in idx:
            rows[i].update({o: math.nan for o in outputs})
        if not ok:
            continue
        scores = _score(scorer, [images[i] for i in ok], [batch[i].prompt for i in ok])
        for o in outputs:
            values = np.asarray(scores[o], dtype=np.float64)
            if values.shape != (len(ok),):
                raise RewardsError(f"scorer {scorer.name!r} returned shape {values.shape} for {o!r} and {len(ok)} images")
            for i, v in zip(ok, values.tolist()):
                rows[i][o] = v
    return rows


def _dumps(row: Mapping) -> str:
    return json.dumps(_nan_to_none(dict(row)))


# ----------------------------------------------------------------------------------------------- statistics


def prompt_means(rows: Sequence[dict], name: str) -> dict[tuple[int, str], float]:
    """Per prompt (folder, prompt) the mean of its scored samples; prompts with none scored are left out."""
    groups: dict[tuple[int, str], list[float]] = {}
    for row in rows:
        v = float(row.get(name, math.nan))
        if not math.isnan(v):
            groups.setdefault((int(row["folder"]), row["prompt"]), []).append(v)
    return {k: float(np.mean(v)) for k, v in groups.items()}


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student's t interval of the mean; NaNs when fewer than two values."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    if len(x) < 2:
        return (math.nan, math.nan)
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return (float(x.mean() - half), float(x.mean() + half))


def summarize_rewards(rows: Sequence[dict], names: Sequence[str] | None = None) -> dict[str, dict]:
    """Per reward: count, nan_count, mean and std over images, prompts, and the 95% CI over prompt means.
    Excluded (unreadable) images are left out of everything and counted in ``excluded``."""
    names = list(names) if names is not None else reward_names(rows)
    excluded = sum(1 for r in rows if is_excluded(r))
    rows = [r for r in rows if not is_excluded(r)]
    out = {}
    for name in names:
        values = np.array([float(r.get(name, math.nan)) for r in rows], dtype=np.float64)
        scored = values[~np.isnan(values)]
        per_prompt = list(prompt_means(rows, name).values())
        lo, hi = t_interval(per_prompt)
        out[name] = {
            "count": int(len(scored)),
            "nan_count": int(len(values) - len(scored)),
            "mean": float(scored.mean()) if len(scored) else math.nan,
            "std": float(scored.std(ddof=1)) if len(scored) > 1 else math.nan,
            "prompts": len(per_prompt),
            "ci95": [lo, hi],
            "ci_method": "t interval over per-prompt means",
            "excluded": excluded,
        }
    return out


def compare_runs(rows_a: Sequence[dict], rows_b: Sequence[dict], names: Sequence[str] | None = None) -> list[dict]:
    """Per reward: both summaries, difference B - A, whether the CIs overlap, and a t-test.

    Paired (on per-prompt means) when both runs hold the same prompts, else Welch's unequal-variance test.
    """
    from scipy import stats

    if names is None:
        common = set(reward_names(rows_b))
        names = [n for n in reward_names(rows_a) if n in common]
    sa, sb = summarize_rewards(rows_a, names), summarize_rewards(rows_b, names)
    out = []
    for name in names:
        pa, pb = prompt_means(rows_a, name), prompt_means(rows_b, name)
        paired = set(pa) == set(pb) and len(pa) >= 2
        if paired:
            keys = sorted(pa)
            res = stats.ttest_rel([pb[k] for k in keys], [pa[k] for k in keys])
            test = "paired t (per-prompt means)"
        elif len(pa) >= 2 and len(pb) >= 2:
            res = stats.ttest_ind(list(pb.values()), list(pa.values()), equal_var=False)
            test = "Welch t (per-prompt means)"
        else:
            res, test = None, "none (fewer than 2 prompts)"
        diff_ci = [math.nan, math.nan]
        p_value = math.nan
        if res is not None:
            ci = res.confidence_interval(0.95)
            diff_ci, p_value = [float(ci.low), float(ci.high)], float(res.pvalue)
        (la, ha), (lb, hb) = sa[name]["ci95"], sb[name]["ci95"]
        out.append(
            {
                "reward": name,
                "a": sa[name],
                "b": sb[name],
                "diff": sb[name]["mean"] - sa[name]["mean"],
                "diff_ci95": diff_ci,
                "ci_overlap": bool(la <= hb and lb <= ha) if not math.isnan(la + lb) else None,
                "test": test,
                "p_value": p_value,
            }
        )
    return out


def comparison_markdown(comparison: Sequence[dict], labels: tuple[str, str] = ("A", "B")) -> str:
    a, b = labels
    lines = [
        f"| reward | {a} mean [95% CI] | {b} mean [95% CI] | {b} − {a} [95% CI] | CIs overlap | test | p |",
        "|---|---:|---:|---:|:---:|---|---:|",
    ]
    for c in comparison:
        overlap = {True: "yes", False: "no", None: "n/a"}[c["ci_overlap"]]
        lines.append(
            f"| {c['reward']} | {_fmt_ci(c['a']['mean'], c['a']['ci95'])} | {_fmt_ci(c['b']['mean'], c['b']['ci95'])} "
            f"| {_fmt_ci(c['diff'], c['diff_ci95'], signed=True)} | {overlap} | {c['test']} | {_fmt(c['p_value'])} |"
        )
    return "\n".join(lines)


def write_reward_summary(rows: Sequence[dict], out_dir: str | Path, stem: str = "rewards_summary") -> dict:
    """``<stem>.json`` and ``<stem>.md`` beside the rows; returns the summary."""
    summary = summarize_rewards(rows)
    out_dir = Path(out_dir)
    (out_dir / f"{stem}.json").write_text(json.dumps(_nan_to_none(summary), indent=2) + "\n", encoding="utf-8")
    (out_dir / f"{stem}.md").write_text(summary_markdown(summary) + "\n", encoding="utf-8")
    return summary


def compare_folders(
    run_a: str | Path, run_b: str | Path, out_dir: str | Path, labels: tuple[str, str] | None = None
) -> list[dict]:
    """Compare the ``rewards.jsonl`` of two scored folders: comparison.{md,json}, bar (and radar) PNGs."""
    run_a, run_b, out_dir = Path(run_a), Path(run_b), Path(out_dir)
    labels = labels or (run_a.name or str(run_a), run_b.name or str(run_b))
    if labels[0] == labels[1]:
        labels = (f"A: {labels[0]}", f"B: {labels[1]}")
    rows = []
    for run in (run_a, run_b):
        path = run / REWARDS_FILE if run.is_dir() else run
        if not path.is_file():
            raise FileNotFoundError(f"no {REWARDS_FILE} for {run}: score the folder first (python -m miro.eval rewards)")
        rows.append(load_rewards(path))
    comparison = compare_runs(rows[0], rows[1])
    if not comparison:
        raise RewardsError(f"{run_a} and {run_b} share no reward column")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "comparison.md").write_text(comparison_markdown(comparison, labels) + "\n", encoding="utf-8")
    (out_dir / "comparison.json").write_text(
        json.dumps({"labels": list(labels), "rewards": _nan_to_none(comparison)}, indent=2) + "\n", encoding="utf-8"
    )
    names = [c["reward"] for c in comparison]
    summaries = {labels[0]: {c["reward"]: c["a"] for c in comparison}, labels[1]: {c["reward"]: c["b"] for c in comparison}}
    plot_bars(summaries, names, out_dir / "comparison_bars.png")
    if len(names) >= 3:
        plot_radar(summaries, names, out_dir / "comparison_radar.png")
    return comparison


def _nan_to_none(obj):
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_nan_to_none(v) for v in obj]
    return obj


def summary_markdown(summary: Mapping[str, dict]) -> str:
    lines = ["| reward | mean | std | 95% CI (prompts) | images | NaN |", "|---|---:|---:|---|---:|---:|"]
    for name, s in summary.items():
        lo, hi = s["ci95"]
        lines.append(
            f"| {name} | {_fmt(s['mean'])} | {_fmt(s['std'])} | [{_fmt(lo)}, {_fmt(hi)}] ({s['prompts']}) "
            f"| {s['count']} | {s['nan_count']} |"
        )
    excluded = max((s.get("excluded", 0) for s in summary.values()), default=0)
    if excluded:
        lines += ["", f"{excluded} unreadable images excluded (left out of every number)."]
    return "\n".join(lines)


def _fmt(v: float, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:+.4g}" if signed else f"{v:.4g}"


def _fmt_ci(mean: float, ci: Sequence[float], signed: bool = False) -> str:
    return f"{_fmt(mean, signed)} [{_fmt(ci[0], signed)}, {_fmt(ci[1], signed)}]"


# ----------------------------------------------------------------------------------------------- plots


def _save(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_bars(summaries: Mapping[str, Mapping[str, dict]], names: Sequence[str], path: str | Path) -> Path:
    """One panel per reward (their scales differ), one bar per run with its 95% CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = list(summaries)
    cols = min(len(names), 4)
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, name in zip(axes.flat, names):
        stats_ = [summaries[r][name] for r in runs]
        means = np.array([s["mean"] for s in stats_])
        ci = np.array([s["ci95"] for s in stats_], dtype=np.float64)
        ci = np.where(np.isnan(ci), means[:, None], ci)  # no interval (one prompt): no error bar
        ax.bar(range(len(runs)), means, yerr=[means - ci[:, 0], ci[:, 1] - means], capsize=4, color=colors[: len(runs)])
        ax.set_xticks(range(len(runs)), runs, rotation=20, ha="right")
        ax.set_title(name)
        lo, hi = float(ci.min()), float(ci.max())
        pad = 0.15 * (hi - lo) if hi > lo else abs(hi) * 0.1 + 1e-6
        ax.set_ylim(lo - pad, hi + pad)  # zoomed on the differences, so bars do not start at zero
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle("mean reward per run (error bars: 95% CI over prompts)")
    return _save(fig, path)


def plot_radar(summaries: Mapping[str, Mapping[str, dict]], names: Sequence[str], path: str | Path) -> Path:
    """Radar of the runs' means, each axis min-max scaled over the runs to [0.2, 1] (MIRO's radar style)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(names) < 3:
        raise ValueError("a radar needs at least three rewards")
    runs = list(summaries)
    angles = np.linspace(0, 2 * np.pi, len(names), endpoint=False).tolist()
    fig = plt.figure(figsize=(5, 5))
    ax = fig.add_subplot(polar=True)
    for run in runs:
        values = []
        for name in names:
            means = [summaries[r][name]["mean"] for r in runs]
            lo, hi = min(means), max(means)
            m = summaries[run][name]["mean"]
            values.append(0.2 + 0.8 * (m - lo) / (hi - lo) if hi > lo else 1.0)
        ax.plot(angles + angles[:1], values + values[:1], label=run)
        ax.fill(angles + angles[:1], values + values[:1], alpha=0.15)
    ax.set_xticks(angles, names)
    ax.set_yticks([])
    ax.set_ylim(0, 1.05)
    ax.legend(loc="upper right", bbox_to_anchor=(1.3, 1.1))
    return _save(fig, path)
