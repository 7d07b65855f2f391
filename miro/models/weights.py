"""Finding pretrained weights (local folder or Hugging Face id), clear errors when absent, fingerprints."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from miro.utils.device import DTYPES, parse_dtype  # noqa: F401  (re-exported: the one table)

T = TypeVar("T")

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_DIGESTS: dict[tuple[str, int, int], str] = {}


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights could not be found locally (and could not or may not be downloaded)."""


def is_local(source: str) -> bool:
    """A path (absolute, relative with ./ or ../, ~, or an existing folder) rather than a hub repo id."""
    return source.startswith(("/", "./", "../", "~", ".\\")) or Path(source).expanduser().exists()


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").upper() in ("1", "ON", "YES", "TRUE")


def load_pretrained(load: Callable[[str], T], source: str, what: str, config_key: str) -> T:
    """Run ``load(source)`` and turn a missing folder / uncached repo into one clear ``WeightsNotFoundError``."""
    if is_local(source):
        path = Path(source).expanduser()
        if not path.is_dir():
            raise WeightsNotFoundError(
                f"{what}: no folder at {str(path)!r} (from {config_key}). Point {config_key} at a folder written by "
                f"save_pretrained (config.json + weights), or at a Hugging Face repo id."
            )
        source = str(path)
    try:
        return load(source)
    except (OSError, ValueError) as err:
        if is_local(source):
            hint = f"the folder {source!r} exists but does not hold a loadable checkpoint ({err})"
        elif hub_offline():
            hint = (f"{source!r} is not in the Hugging Face cache and HF_HUB_OFFLINE=1 forbids downloading it; "
                    f"run `huggingface-cli download {source}` on a machine with network access (same HF_HOME), "
                    f"or set {config_key} to a local folder")
        else:
            hint = f"{source!r} could not be loaded or downloaded ({err}); set {config_key} to a local folder"
        raise WeightsNotFoundError(f"{what}: {hint}") from err


def local_folder(source: str, subfolder: str | None = None) -> Path | None:
    """The folder holding ``source``'s files: itself if local, else its snapshot in the HF cache (or None)."""
    if is_local(source):
        folder = Path(source).expanduser()
    else:
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(source, local_files_only=True))
        except Exception:  # not cached (e.g. loaded from a mirror); no fingerprint then
            return None
    return folder / subfolder if subfolder else folder


def _file_digest(path: Path) -> str:
    # In the HF cache a weight file is a symlink to blobs/<sha256 of its content>: reuse that name for free.
    resolved = path.resolve()
    if path.is_symlink() and _HEX64.match(resolved.name):
        return resolved.name
    stat = resolved.stat()
    key = (str(resolved), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(resolved, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def weights_fingerprint(folder: Path | None) -> str:
    """sha256 (16 hex digits) over the weight files and config.json of ``folder``; "unknown" if none."""
    if folder is None or not folder.is_dir():
        return "unknown"
    files = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES or p.name == "config.json")
    if not any(p.suffix in WEIGHT_SUFFIXES for p in files):
        return "unknown"
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        h.update(_file_digest(p).encode())
    return h.hexdigest()[:16]
