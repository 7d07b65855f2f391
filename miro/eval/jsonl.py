"""JSON-lines files of the evaluation stage: read with line-numbered errors, written atomically."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from miro.utils.atomic import atomic_path


def read_jsonl(
    path: str | Path, error: type[Exception] = ValueError, allow_torn_tail: bool = False
) -> list[tuple[int, object]]:
    """``(line number, parsed object)`` for every non-blank line; ``error`` names the file and line.

    ``allow_torn_tail`` drops an unparsable last line without a newline: what a killed appender leaves.
    """
    path = Path(path)
    out = []
    with path.open(encoding="utf-8") as fp:
        lines = fp.readlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append((lineno, json.loads(line)))
        except json.JSONDecodeError as err:
            if allow_torn_tail and lineno == len(lines) and not line.endswith("\n"):
                break
            raise error(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
    return out


def write_jsonl(rows: Iterable[object], path: str | Path) -> Path:
    """One ``json.dumps`` per line, via a temp file renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as fp:
        for row in rows:
            fp.write(json.dumps(row) + "\n")
    return path
