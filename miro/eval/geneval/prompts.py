"""GenEval prompt sets: the official metadata file, or a new set drawn from GenEval's templates.

``generate_suite`` follows GenEval's ``prompts/create_prompts.py`` draw for draw (same numpy ``Generator``
calls in the same order, same phrasing, same de-duplication), so ``generate_suite(seed=43, per_task=100)``
reproduces the official 553-prompt ``evaluation_metadata.jsonl`` line for line.

A metadata item is one JSON object: ``tag``, ``prompt``, ``include`` (a list of ``{class, count[, color]
[, position: [relation, group_index]]}``) and, for counting, ``exclude`` (a list of ``{class, count}``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from miro.contracts.geneval_rules import COLORS, RELATIONS  # GenEval's colour and relation vocabularies
from miro.eval.jsonl import read_jsonl, write_jsonl

# The 80 COCO classes in detector label order, with GenEval's names (``evaluation/object_names.txt``):
# "computer mouse", "tv remote" and "computer keyboard" instead of COCO's "mouse", "remote", "keyboard".
GENEVAL_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock",
    "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

NUMBERS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
TASKS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")

OFFICIAL_SEED = 43  # create_prompts.py's default seed; with per_task=100 it gives the official file
OFFICIAL_PER_TASK = 100


class MetadataError(ValueError):
    """A prompt metadata item does not follow GenEval's schema."""


def with_article(name: str) -> str:
    """GenEval's article rule: "an" before a lowercase a, e, i, o or u, else "a"."""
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def make_plural(name: str) -> str:
    """GenEval's plural rule: "es" after a final "s", else "s" ("glasses", "knifes")."""
    return f"{name}es" if name[-1] == "s" else f"{name}s"


def generate_suite(
    seed: int = OFFICIAL_SEED,
    per_task: int = OFFICIAL_PER_TASK,
    classnames: Sequence[str] = GENEVAL_CLASSES,
    colors: Sequence[str] = COLORS,
    max_count: int = 4,
) -> list[dict]:
    """A GenEval prompt set drawn from the six task templates.

    Single-object covers every class once; each of the five other tasks draws ``per_task`` items; duplicates
    (same content) are dropped keeping the first.  "person" never gets a colour: as in GenEval, colour
    draws take one of the other n - 1 classes by rotating the index past "person" (past index 0 when the
    vocabulary has no "person", e.g. another world's classes).
    """
    if per_task < 0:
        raise ValueError(f"per_task={per_task}: must be >= 0")
    if not 2 <= max_count < len(NUMBERS):
        raise ValueError(f"max_count={max_count}: must be in 2..{len(NUMBERS) - 1}")
    names = list(classnames)
    n = len(names)
    if n < 3:
        raise ValueError(f"need at least 3 class names, got {n}")
    # create_prompts.py skips "person" for colour prompts by rotating indices 1..n-1 around its position.
    anchor = names.index("person") if "person" in names else 0
    rng = np.random.default_rng(seed)

    items: list[dict] = []
    for idx in rng.choice(n, size=n, replace=False):
        items.append(_item("single_object", [{"class": names[idx], "count": 1}], f"a photo of {with_article(names[idx])}"))
    for _ in range(per_task):
        a, b = rng.choice(n, size=2, replace=False)
        items.append(
            _item(
                "two_object",
                [{"class": names[a], "count": 1}, {"class": names[b], "count": 1}],
                f"a photo of {with_article(names[a])} and {with_article(names[b])}",
            )
        )
    for _ in range(per_task):
        idx = rng.choice(n)
        num = int(rng.integers(2, max_count, endpoint=True))
        items.append(
            _item(
                "counting",
                [{"class": names[idx], "count": num}],
                f"a photo of {NUMBERS[num]} {make_plural(names[idx])}",
                exclude=[{"class": names[idx], "count": num + 1}],
            )
        )
    for _ in range(per_task):
        idx = (rng.choice(n - 1) + 1 + anchor) % n
        color = colors[rng.choice(len(colors))]
        items.append(
            _item("colors", [{"class": names[idx], "count": 1, "color": color}], f"a photo of {with_article(color)} {names[idx]}")
        )
    for _ in range(per_task):
        a, b = rng.choice(n, size=2, replace=False)
        rel = RELATIONS[rng.choice(len(RELATIONS))]
        items.append(
            _item(
                "position",
                [{"class": names[b], "count": 1}, {"class": names[a], "count": 1, "position": [rel, 0]}],
                f"a photo of {with_article(names[a])} {rel} {with_article(names[b])}",
            )
        )
    for _ in range(per_task):
        a, b = (rng.choice(n - 1, size=2, replace=False) + 1 + anchor) % n
        ca, cb = rng.choice(len(colors), size=2, replace=False)
        items.append(
            _item(
                "color_attr",
                [
                    {"class": names[a], "count": 1, "color": colors[ca]},
                    {"class": names[b], "count": 1, "color": colors[cb]},
                ],
                f"a photo of {with_article(colors[ca])} {names[a]} and {with_article(colors[cb])} {names[b]}",
            )
        )
    return deduplicate(items)


def _item(tag: str, include: list[dict], prompt: str, exclude: list[dict] | None = None) -> dict:
    # Key order as in GenEval's file: tag, include, [exclude,] prompt.
    item: dict = {"tag": tag, "include": include}
    if exclude is not None:
        item["exclude"] = exclude
    item["prompt"] = prompt
    return item


def deduplicate(items: Iterable[dict]) -> list[dict]:
    """Drop items whose content (key order ignored, as GenEval's yaml-dump key) was seen before."""
    seen: set[str] = set()
    out = []
    for item in items:
        key = json.dumps(item, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def validate_item(item: object, where: str = "item") -> dict:
    """Check one metadata item against GenEval's schema; raise ``MetadataError`` naming what is wrong."""
    if not isinstance(item, dict):
        raise MetadataError(f"{where}: expected a JSON object, got {type(item).__name__}")
    for key in ("tag", "prompt", "include"):
        if key not in item:
            raise MetadataError(f"{where}: missing key {key!r}")
    if not isinstance(item["tag"], str) or not isinstance(item["prompt"], str):
        raise MetadataError(f"{where}: 'tag' and 'prompt' must be strings")
    include = item["include"]
    if not isinstance(include, list):
        raise MetadataError(f"{where}: 'include' must be a list")
    for i, req in enumerate(include):
        _check_clause(req, f"{where}.include[{i}]")
        if "color" in req and not isinstance(req["color"], str):
            raise MetadataError(f"{where}.include[{i}]: 'color' must be a string")
        if "position" in req:
            pos = req["position"]
            if (
                not isinstance(pos, list | tuple)
                or len(pos) != 2
                or pos[0] not in RELATIONS
                or not isinstance(pos[1], int)
                or not 0 <= pos[1] < i
            ):
                raise MetadataError(
                    f"{where}.include[{i}]: 'position' must be [relation, group] with relation in {list(RELATIONS)} "
                    f"and group the index of an earlier include clause, got {pos!r}"
                )
    exclude = item.get("exclude", [])
    if not isinstance(exclude, list):
        raise MetadataError(f"{where}: 'exclude' must be a list")
    for i, req in enumerate(exclude):
        _check_clause(req, f"{where}.exclude[{i}]")
    return item


def _check_clause(req: object, where: str) -> None:
    if not isinstance(req, dict) or not isinstance(req.get("class"), str):
        raise MetadataError(f"{where}: expected an object with a string 'class'")
    count = req.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise MetadataError(f"{where}: 'count' must be a positive integer, got {count!r}")


def load_metadata(path: str | Path) -> list[dict]:
    """Read an ``evaluation_metadata.jsonl`` (one item per line, blank lines ignored) and validate each item."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"prompt metadata file not found: {path} (GenEval's official file is prompts/evaluation_metadata.jsonl "
            "in djghosh13/geneval; or leave the path unset to draw a set from the templates)"
        )
    items = [validate_item(obj, f"{path}:{lineno}") for lineno, obj in read_jsonl(path, MetadataError)]
    if not items:
        raise MetadataError(f"{path}: no prompts")
    return items


def write_metadata(items: Iterable[dict], path: str | Path) -> None:
    """Write items as GenEval's ``evaluation_metadata.jsonl`` (``json.dumps`` per line, key order kept)."""
    write_jsonl(items, path)
