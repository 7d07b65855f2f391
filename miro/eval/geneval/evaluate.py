"""Evaluate a GenEval image folder: detect, classify colours, apply GenEval's rules, write ``results.jsonl``.

The folder is walked as GenEval walks it (``layout.iter_prompt_folders``); each image's detections go through
``rules.result_row`` unchanged, so a row has GenEval's schema (``filename, tag, prompt, correct, reason,
metadata, details``) with ``filename`` joined as GenEval joins it.

Resumable: rows are appended batch by batch; a rerun evaluates only images without a row, after checking
that the settings recorded in ``<results>.settings.json`` (detector, colour model, rule options) are the
ones of this run, so two settings never mix in one file.  The finished file is rewritten in folder order.
An image that cannot be read is excluded and reported (the policy of every evaluator, ``miro.eval.excluded``):
its row has ``excluded: true``, ``correct: false`` and the reason (``excluded: unreadable image (truncated)``),
the summary leaves it out of every score and counts it, and the run prints one line listing them.  A rerun
tries excluded images again (a file fixed since is then evaluated).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

from PIL import Image
from tqdm.auto import tqdm

from miro.contracts.geneval_rules import RuleOptions, detection_colors, result_row
from miro.eval.excluded import read_image, report_excluded
from miro.eval.geneval.layout import iter_prompt_folders
from miro.eval.jsonl import read_jsonl, write_jsonl
from miro.eval.provenance import record_settings

log = logging.getLogger(__name__)


class Detector(Protocol):
    def detect(self, images: Sequence[Image.Image], score_floor: float | None = None) -> list[list[dict]]: ...


class PerImageDetector:
    """A one-image ``detect(image) -> detections`` function (the shapes detector) as a ``Detector``."""

    def __init__(self, detect_one: Callable[[Image.Image], list[dict]]):
        self.detect_one = detect_one

    def detect(self, images: Sequence[Image.Image], score_floor: float | None = None) -> list[list[dict]]:
        return [self.detect_one(image) for image in images]


class EvaluationError(RuntimeError):
    """Nothing to evaluate, or an unreadable results file."""


class LazyColors:
    """Builds the colour classifier on first use, so a prompt set without colour clauses never loads CLIP."""

    def __init__(self, factory: Callable[[], object]):
        self._factory = factory
        self._classifier = None

    def classify(self, image: Image.Image, detections, classname: str) -> list[str]:
        if self._classifier is None:
            self._classifier = self._factory()
        return self._classifier.classify(image, detections, classname)


def settings_path(results: Path) -> Path:
    return results.with_name(results.stem + ".settings.json")


def evaluate_folder(
    image_dir: str | Path,
    detector: Detector,
    colors=None,
    options: RuleOptions | None = None,
    results: str | Path | None = None,
    batch_size: int = 8,
    settings: dict | None = None,
    progress: bool = True,
) -> list[dict]:
    """Evaluate every sample image; returns the rows of ``results`` (default ``image_dir/results.jsonl``).

    ``colors`` has ``classify(image, detections, classname)`` (the CLIP classifier, possibly ``LazyColors``);
    ``None`` uses the detections' own ``color`` (the shapes detector).
    """
    options = options or RuleOptions()
    image_dir_str = str(image_dir)
    image_dir = Path(image_dir)
    results = Path(results) if results is not None else image_dir / "results.jsonl"
    jobs = [
        (os.path.join(image_dir_str, folder.path.name, "samples", sample.name), sample, folder.metadata)
        for folder in iter_prompt_folders(image_dir)
        for sample in folder.samples
    ]
    if not jobs:
        raise EvaluationError(f"no sample images under {image_dir} (expected NNNNN/samples/NNNN.png)")
    _check_settings(results, settings or {}, options)
    done = {}
    if results.exists():
        done = {row["filename"]: row for _, row in read_jsonl(results, EvaluationError, allow_torn_tail=True)}
    todo = [job for job in jobs if job[0] not in done or done[job[0]].get("excluded")]
    log.info("%d of %d images to evaluate", len(todo), len(jobs))
    floor = min(options.threshold, options.counting_threshold)  # no detection at or below it can count
    with results.open("a", encoding="utf-8") as fp, tqdm(total=len(todo), desc="geneval evaluate", unit="img", disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            for row in _evaluate_batch(todo[start : start + batch_size], detector, colors, options, floor):
                fp.write(json.dumps(row) + "\n")
                done[row["filename"]] = row
            fp.flush()
            bar.update(len(todo[start : start + batch_size]))
    rows = [done[filename] for filename, _, _ in jobs]
    write_jsonl(rows, results)
    excluded = [{"path": os.path.relpath(r["filename"], image_dir_str), "reason": r["reason"].removeprefix("excluded: ")}
                for r in rows if r.get("excluded")]
    report_excluded("geneval evaluate", excluded, len(rows))
    return rows


def _evaluate_batch(batch, detector: Detector, colors, options: RuleOptions, floor: float) -> list[dict]:
    images: list[Image.Image | None] = []
    errors: list[str | None] = []
    for _, path, _ in batch:
        image, reason = read_image(path)
        images.append(image)
        errors.append(None if reason is None else f"excluded: unreadable image ({reason})")
    good = [i for i, im in enumerate(images) if im is not None]
    detections = dict(zip(good, detector.detect([images[i] for i in good], score_floor=floor)))
    rows = []
    for i, (filename, _, metadata) in enumerate(batch):
        if errors[i] is not None:
            row = result_row(filename, metadata, [], detection_colors, options)
            row.update(correct=False, reason=errors[i], excluded=True)
        else:
            row = result_row(filename, metadata, detections[i], _color_fn(colors, images[i]), options)
        rows.append(row)
    return rows


def _color_fn(colors, image: Image.Image):
    if colors is None:
        return detection_colors
    return lambda detections, classname: colors.classify(image, detections, classname)


def _check_settings(results: Path, settings: dict, options: RuleOptions) -> None:
    """Record this run's settings beside the results; refuse to resume a file made with other settings."""
    record_settings(
        settings_path(results), {"rules": asdict(options), **settings}, resuming=results.exists(),
        hint="delete the results or write to another file (evaluate.results=...)",
    )  # fmt: skip
