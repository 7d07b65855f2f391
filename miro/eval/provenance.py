"""Settings recorded beside an output, so that a resumed job never mixes two settings in one output."""

from __future__ import annotations

import json
from pathlib import Path


class SettingsMismatch(RuntimeError):
    """An output was started with other settings than this run's."""


def record_settings(path: str | Path, settings: dict, resuming: bool, hint: str) -> None:
    """Write ``settings`` (JSON) to ``path``; when ``resuming`` and ``path`` holds other settings, refuse.

    ``hint`` says how to start a separate output instead."""
    path = Path(path)
    current = json.loads(json.dumps(settings, default=str))
    if resuming and path.exists():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous != current:
            changed = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
            raise SettingsMismatch(
                f"{path.parent} was started with other settings (changed: {changed}; recorded in {path}); {hint}"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(current, indent=2) + "\n", encoding="utf-8")
