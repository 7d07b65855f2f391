"""GenEval's summary of a ``results.jsonl``: per-task image accuracy and the overall score.

Identical to GenEval's ``evaluation/summary_scores.py`` on the same file (without pandas):

- % correct images = mean of ``correct`` over all rows;
- % correct prompts = rows grouped by their ``metadata`` string, a prompt counts when any image is correct;
- per task (``tag``, in order of first appearance) the mean of ``correct``;
- overall = the unweighted mean of the task accuracies.

Rows marked ``excluded`` (unreadable images, ``miro.eval.excluded``) are left out of every number and counted
in ``excluded_images`` (with their file names in ``excluded``); without them the summary is GenEval's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from miro.eval.jsonl import read_jsonl


class ResultsError(ValueError):
    """A results file cannot be summarised."""


def load_results(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file not found: {path}")
    rows = []
    for lineno, row in read_jsonl(path, ResultsError):
        missing = {"tag", "correct", "metadata"} - set(row) if isinstance(row, dict) else {"(an object)"}
        if missing:
            raise ResultsError(f"{path}:{lineno}: missing {sorted(missing)}")
        rows.append(row)
    return rows


def summarize(rows: Iterable[dict]) -> dict:
    """The numbers GenEval prints, as a dict (fractions in 0..1)."""
    rows = list(rows)
    excluded = [r.get("filename", "?") for r in rows if r.get("excluded")]
    rows = [r for r in rows if not r.get("excluded")]
    if not rows:
        raise ResultsError("no results to summarise" + (f" ({len(excluded)} images excluded as unreadable)" if excluded else ""))
    prompts: dict[str, bool] = {}
    tasks: dict[str, list[int]] = {}
    for row in rows:
        ok = bool(row["correct"])
        prompts[row["metadata"]] = prompts.get(row["metadata"], False) or ok
        tasks.setdefault(row["tag"], []).append(int(ok))
    per_task = {
        tag: {"accuracy": sum(v) / len(v), "correct": sum(v), "total": len(v)} for tag, v in tasks.items()
    }
    return {
        "total_images": len(rows),
        "total_prompts": len(prompts),
        "correct_images": sum(int(bool(r["correct"])) for r in rows) / len(rows),
        "correct_prompts": sum(prompts.values()) / len(prompts),
        "tasks": per_task,
        "overall": sum(t["accuracy"] for t in per_task.values()) / len(per_task),
        "excluded_images": len(excluded),
        "excluded": excluded,
    }


def to_text(summary: dict) -> str:
    """GenEval's printout, line for line."""
    lines = [
        "Summary",
        "=======",
        f"Total images: {summary['total_images']}",
        f"Total prompts: {summary['total_prompts']}",
        f"% correct images: {summary['correct_images']:.2%}",
        f"% correct prompts: {summary['correct_prompts']:.2%}",
        "",
        "Task breakdown",
        "==============",
    ]
    for tag, t in summary["tasks"].items():
        lines.append(f"{tag:<16} = {t['accuracy']:.2%} ({t['correct']} / {t['total']})")
    lines += ["", f"Overall score (avg. over tasks): {summary['overall']:.5f}"]
    if summary.get("excluded_images"):
        lines.append(f"Excluded (unreadable) images, left out of every score: {summary['excluded_images']}")
    return "\n".join(lines)


def to_markdown(summary: dict) -> str:
    lines = ["| task | accuracy | correct / total |", "|---|---:|---:|"]
    for tag, t in summary["tasks"].items():
        lines.append(f"| {tag} | {t['accuracy']:.2%} | {t['correct']} / {t['total']} |")
    lines += [
        f"| **overall** (mean of tasks) | **{summary['overall']:.2%}** | |",
        "",
        f"{summary['total_images']} images, {summary['total_prompts']} prompts; "
        f"correct images {summary['correct_images']:.2%}, correct prompts (any sample) {summary['correct_prompts']:.2%}"
        + (f"; {summary['excluded_images']} unreadable images excluded." if summary.get("excluded_images") else "."),
    ]
    return "\n".join(lines)


def write_summary(summary: dict, out_dir: str | Path, stem: str = "summary") -> tuple[Path, Path]:
    """``<stem>.json`` and ``<stem>.md`` in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    js, md = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    js.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    md.write_text(to_markdown(summary) + "\n", encoding="utf-8")
    return js, md
