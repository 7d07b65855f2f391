"""GenEval's image-folder layout: reading it exactly as GenEval does, writing it atomically.

::

    OUT/00000/metadata.jsonl      the prompt's metadata item (one JSON object, GenEval's file name)
    OUT/00000/grid.png            optional
    OUT/00000/samples/0000.png    n samples per prompt

GenEval's evaluator visits every subfolder whose name ``str.isdigit()`` and every image in ``samples/``
whose name matches ``re.match(r"\\d+\\.png")``; ``iter_prompt_folders`` keeps exactly those rules (and sorts
numerically, where GenEval takes ``os.listdir`` order).  A prompt folder is written under a hidden name and
renamed into place, so a folder with a numeric name is always complete; an interrupted write leaves only a
hidden ``.NNNNN.partial`` folder that the next run replaces.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from miro.eval.geneval.prompts import MetadataError, validate_item
from miro.utils.atomic import atomic_path

METADATA_FILE = "metadata.jsonl"
SAMPLES_DIR = "samples"
GRID_FILE = "grid.png"
_SAMPLE_RE = re.compile(r"\d+\.png")  # used with .match, as GenEval does


class LayoutError(RuntimeError):
    """The image folder does not follow GenEval's layout (missing or unreadable metadata, clashing prompts)."""


@dataclass(frozen=True)
class PromptFolder:
    """One prompt's folder: its index (the folder name), metadata item and sample images in numeric order."""

    index: int
    path: Path
    metadata: dict
    samples: tuple[Path, ...]


def prompt_dir(root: str | Path, index: int) -> Path:
    return Path(root) / f"{index:05d}"


def sample_name(i: int) -> str:
    return f"{i:04d}.png"


def read_folder_metadata(folder: str | Path) -> dict:
    """The metadata item of a prompt folder (GenEval reads the whole file as one JSON object)."""
    path = Path(folder) / METADATA_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LayoutError(f"{path} is missing: every prompt folder needs its metadata item") from None
    try:
        item = json.loads(text)
    except json.JSONDecodeError as err:
        raise LayoutError(f"{path}: not one JSON object ({err.msg})") from None
    try:
        return validate_item(item, str(path))
    except MetadataError as err:
        raise LayoutError(str(err)) from None


def list_samples(folder: str | Path) -> tuple[Path, ...]:
    """Sample images of a prompt folder that GenEval would evaluate, in numeric order."""
    samples = Path(folder) / SAMPLES_DIR
    if not samples.is_dir():
        return ()
    found = [p for p in samples.iterdir() if _SAMPLE_RE.match(p.name) and p.is_file()]
    return tuple(sorted(found, key=lambda p: (int(re.match(r"\d+", p.name).group()), p.name)))


def iter_prompt_folders(root: str | Path) -> Iterator[PromptFolder]:
    """Every prompt folder GenEval would visit, in numeric order."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"image folder not found: {root}")
    folders = [p for p in root.iterdir() if p.name.isdigit() and p.is_dir()]
    for path in sorted(folders, key=lambda p: (int(p.name), p.name)):
        yield PromptFolder(int(path.name), path, read_folder_metadata(path), list_samples(path))


def is_complete(root: str | Path, index: int, metadata: dict, n_samples: int) -> bool:
    """True when folder ``index`` holds this prompt and samples 0..n_samples-1.

    A folder that holds a different prompt raises ``LayoutError``: the output folder belongs to another
    prompt set, and overwriting it would silently mix two runs.
    """
    folder = prompt_dir(root, index)
    if not folder.is_dir():
        return False
    try:
        existing = read_folder_metadata(folder)
    except LayoutError:
        return False  # unreadable metadata: the folder is rewritten
    if existing != metadata:
        raise LayoutError(
            f"{folder} holds the prompt {existing.get('prompt')!r}, not {metadata.get('prompt')!r}: "
            "the output folder was written for another prompt set; use a new folder"
        )
    names = {p.name for p in list_samples(folder)}
    return all(sample_name(i) in names for i in range(n_samples))


def write_prompt_folder(
    root: str | Path,
    index: int,
    metadata: dict,
    images: Sequence[Image.Image],
    grid_columns: int | None = None,
) -> Path:
    """Write one prompt folder atomically; with ``grid_columns`` also ``grid.png`` (GenEval's grid)."""
    root = Path(root)
    final = prompt_dir(root, index)
    root.mkdir(parents=True, exist_ok=True)
    with atomic_path(final, directory=True, tmp=root / f".{final.name}.partial") as tmp:
        (tmp / SAMPLES_DIR).mkdir()
        (tmp / METADATA_FILE).write_text(json.dumps(metadata), encoding="utf-8")
        for i, image in enumerate(images):
            image.save(tmp / SAMPLES_DIR / sample_name(i))
        if grid_columns:
            make_grid(images, grid_columns).save(tmp / GRID_FILE)
    return final


def make_grid(images: Sequence[Image.Image], columns: int, padding: int = 2) -> Image.Image:
    """torchvision's ``make_grid`` look (black ``padding``-pixel gaps and border), as GenEval saves it."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    w = max(im.width for im in images)
    h = max(im.height for im in images)
    cols = min(columns, len(images))
    rows = -(-len(images) // cols)
    grid = Image.new("RGB", (cols * (w + padding) + padding, rows * (h + padding) + padding))
    for k, image in enumerate(images):
        r, c = divmod(k, cols)
        grid.paste(image.convert("RGB"), (padding + c * (w + padding), padding + r * (h + padding)))
    return grid
