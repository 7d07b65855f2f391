"""The held-out evaluation set: GenEval metadata over the shapes vocabulary, led by the held-out compositions.

``heldout/evaluation_metadata.jsonl`` has GenEval's exact schema, key order and ``json.dumps`` formatting, and
its prompts are GenEval's phrasing, so GenEval's rules score it unchanged.  Tasks come in GenEval's order;
single_object has one prompt per class (GenEval: one per COCO class), the others ``prompts_per_task`` distinct
prompts each (fewer when the vocabulary has fewer: 8 classes x counts 2..4 give 24 counting prompts).
colors, position and color_attr start with every held-out composition (a relation triple in both directions)
and fill up with random ones; like GenEval, no prompt appears twice.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from miro.data.shapes.captions import clause, counting_metadata, geneval_prompt, metadata, position_metadata
from miro.data.shapes.config import TASKS, ShapesConfig
from miro.data.shapes.scene import Vocabulary
from miro.data.shapes.vocab import RELATIONS

HELDOUT_STREAM = 2**62  # the heldout rng is seeded [seed, HELDOUT_STREAM]; samples use [seed, index]


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _finish(meta: dict) -> dict:
    meta["prompt"] = geneval_prompt(meta)
    return meta


def _fill(rows: list[dict], n: int, draw) -> list[dict]:
    """``rows`` (the held-out ones) topped up with ``draw()`` until ``n`` distinct rows, or until draws keep
    repeating (a small vocabulary has fewer than ``n`` distinct prompts of a task)."""
    out, seen = [], set()
    for row in rows:
        if json.dumps(row) not in seen:
            seen.add(json.dumps(row))
            out.append(row)
    misses = 0
    while len(out) < n and misses < 50 * n:
        row = _finish(draw())
        text = json.dumps(row)
        if text in seen:
            misses += 1
            continue
        seen.add(text)
        out.append(row)
    return out


def evaluation_metadata(cfg: ShapesConfig) -> tuple[list[dict], list[int]]:
    """The rows, and the indices of rows that use a held-out composition."""
    vocab = Vocabulary.from_config(cfg)
    rng = np.random.default_rng([cfg.seed, HELDOUT_STREAM])
    classes, colors, n = list(vocab.classes), list(vocab.colors), cfg.heldout.prompts_per_task
    counts = [c for c in cfg.scene.counts if c >= 2] or [2, 3, 4]

    def two_classes() -> tuple[str, str]:
        a, b = rng.choice(classes, size=2, replace=False)
        return str(a), str(b)

    def attr_with(col: str, cls: str) -> dict:
        parts = [clause(cls, 1, col), clause(_pick(rng, [c for c in classes if c != cls]), 1, _pick(rng, [c for c in colors if c != col]))]
        return _finish(metadata("color_attr", parts if rng.random() < 0.5 else parts[::-1]))

    def position_random() -> dict:
        a, b = two_classes()
        return position_metadata(clause(a), _pick(rng, RELATIONS), clause(b))

    def attr_random() -> dict:
        (a, b), (ca, cb) = two_classes(), rng.choice(colors, size=2, replace=False)
        return metadata("color_attr", [clause(a, 1, str(ca)), clause(b, 1, str(cb))])

    rows: dict[str, list[dict]] = {
        "single_object": [_finish(metadata("single_object", [clause(c)])) for c in classes],
        "two_object": _fill([], n, lambda: metadata("two_object", [clause(c) for c in two_classes()])),
        "counting": _fill([], n, lambda: counting_metadata(_pick(rng, classes), int(_pick(rng, counts)))),
        "colors": _fill([_finish(metadata("colors", [clause(cls, 1, col)])) for col, cls in sorted(vocab.heldout_pairs)], n,
                        lambda: metadata("colors", [clause(_pick(rng, classes), 1, _pick(rng, colors))])),
        "position": _fill([_finish(position_metadata(clause(a), rel, clause(b))) for a, rel, b in sorted(vocab.heldout_triples)],
                          n, position_random),
        "color_attr": _fill([attr_with(col, cls) for col, cls in sorted(vocab.heldout_pairs)], n, attr_random),
    }
    out = [row for tag in TASKS for row in rows[tag]]
    held = [i for i, row in enumerate(out) if not vocab.caption_allowed(row)]
    return out, held


def write_heldout(cfg: ShapesConfig, out_dir: str | Path) -> list[dict]:
    """Write ``evaluation_metadata.jsonl``, ``generation_prompts.txt`` (GenEval's two prompt files) and
    ``compositions.json`` (the held-out pairs and triples and which rows use them) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, held = evaluation_metadata(cfg)
    (out_dir / "evaluation_metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out_dir / "generation_prompts.txt").write_text("".join(r["prompt"] + "\n" for r in rows))
    comps = {
        "color_class": list(cfg.heldout.color_class),
        "relations": list(cfg.heldout.relations),
        "heldout_rows": held,
        "rule": "colour-class pairs never appear in training images or captions; relation triples (either "
        "direction) are never captioned in training but may appear un-mentioned in training images",
    }
    (out_dir / "compositions.json").write_text(json.dumps(comps, indent=1) + "\n")
    return rows
