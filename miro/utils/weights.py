"""Finding pretrained weights, fingerprinting them, and checking that a checkpoint really filled a model.

The one place that turns a weight location from config into files on this machine, for the model stages
(text encoders, autoencoders) and for the reward scorers (``annotate``).

**Location syntax** (one syntax, accepted by every loader):

- a **local path**: absolute (``/w/model``), relative with ``./`` or ``../``, under ``~``, or any path that
  exists.  A folder for ``from_pretrained``-style loaders, a file where a single file is expected.
- ``hf://ORG/REPO`` or ``hf://ORG/REPO/PATH``: a Hugging Face repository, or a file / subfolder of it,
  looked up in the Hugging Face cache (``HF_HOME``, ``HF_HUB_CACHE``).
- a bare **repo id** ``ORG/REPO`` (or a legacy one-word id such as ``gpt2``) that is not an existing path:
  the same as ``hf://ORG/REPO``.  Where a single *file* is expected a bare string is always a path (write
  ``hf://ORG/REPO/FILE`` for a file of a repository).

**Downloads and offline flags.**  ``hub_offline()`` is the one offline check: ``HF_HUB_OFFLINE`` or
``TRANSFORMERS_OFFLINE`` set to 1/ON/YES/TRUE (read when called, so a test or launcher can set it late), or
``huggingface_hub``'s own setting.  Files and folders resolved here (``resolve_file``, ``resolve_dir``) come
from the cache only, unless the caller passes ``download=True`` (a scorer's ``download: true``) and the hub is
not offline.  ``load_pretrained`` leaves the lookup to ``from_pretrained`` (which downloads unless offline) and
only turns its failures into a clear error.

**Errors.**  Weights that are not on this machine raise ``WeightsNotFoundError`` (a ``FileNotFoundError``)
whose message names the file or repo, where it comes from and the config key to set; a checkpoint whose keys
do not all load raises ``WeightsMismatch``.  Never a silent random initialisation.

**Hashes.**  ``sha256_file`` is the one file hash, cached per (path, size, mtime); files in the HF cache are
stored as ``blobs/<sha256>``, so their hash is read from the name.  ``weights_fingerprint`` (16 hex digits over a
folder's weight files) and ``file_record`` (provenance of one file) are built on it.  Pickled checkpoints are
read with ``read_checkpoint`` (``torch.load(weights_only=True)``; safetensors files too).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

HF_PREFIX = "hf://"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_REPO_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
_TRUE = ("1", "ON", "YES", "TRUE")


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights are not on this machine (and could not or may not be downloaded).

    The message names the file or repo, where it comes from and the config key that sets it."""


class WeightsMismatch(RuntimeError):
    """A checkpoint does not fit the model it is loaded into (missing or unexpected keys, wrong shapes)."""


# --- locations -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """A parsed weight location: a local ``path``, or a hub ``repo`` with an optional ``subpath`` in it."""

    spec: str
    path: Path | None = None
    repo: str | None = None
    subpath: str | None = None

    @property
    def is_local(self) -> bool:
        return self.path is not None


def is_local(source: str) -> bool:
    """A path (absolute, relative with ./ or ../, ~, or an existing path) rather than a hub location."""
    if source.startswith(HF_PREFIX):
        return False
    return source.startswith(("/", "./", "../", "~", ".\\")) or Path(source).expanduser().exists()


def parse_location(spec: str) -> Location:
    """``spec`` in the location syntax of this module's docstring; ``ValueError`` on a malformed ``hf://``."""
    if spec.startswith(HF_PREFIX):
        parts = spec[len(HF_PREFIX) :].strip("/").split("/", 2)
        if len(parts) < 2 or not all(parts[:2]):
            raise ValueError(f"{spec!r}: expected hf://<org>/<repo> or hf://<org>/<repo>/<file>")
        return Location(spec, repo=f"{parts[0]}/{parts[1]}", subpath=parts[2] if len(parts) == 3 else None)
    if not is_local(spec) and _REPO_ID.fullmatch(spec) and not spec.startswith("."):
        return Location(spec, repo=spec)
    return Location(spec, path=Path(spec).expanduser())


def hub_offline() -> bool:
    """The one offline check: ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` now, or huggingface_hub's setting."""
    if any(os.environ.get(k, "0").upper() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return False
    return bool(constants.HF_HUB_OFFLINE)


def hf_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _download_hint(repo: str, key: str, kind: str) -> str:
    where = f"set {key}=/path/to/{kind}" if key else f"point the config at a local {kind}"
    return (f"Run `huggingface-cli download {repo}` on a machine with network access (same HF_HOME), "
            f"or download it and {where}.")


def _not_in_cache(what: str, spec: str, repo: str, source: str, key: str, kind: str, download: bool) -> WeightsNotFoundError:
    why = "the hub is offline (HF_HUB_OFFLINE)" if hub_offline() else "download=true" if download else "download=false"
    msg = f"{what}: {spec!r} is neither a local path nor in the Hugging Face cache ({hf_cache_dir()}; {why})."
    if source:
        msg += f" It comes from {source}."
    return WeightsNotFoundError(f"{msg} {_download_hint(repo, key, kind)}")


def _missing_local(what: str, kind: str, path: Path, source: str, key: str, spec: str) -> WeightsNotFoundError:
    msg = f"{what}: {kind} {str(path)!r} does not exist."
    if source:
        msg += f" It comes from {source}."
    if key:
        msg += f" Download it and set {key}=/path/to/{kind}."
    if kind == "file" and _REPO_ID.fullmatch(spec) and "/" in spec and not spec.startswith("."):
        msg += f" (For a file of a Hugging Face repository write hf://{spec}/<file>.)"
    return WeightsNotFoundError(msg)


def resolve_file(spec: str, *, what: str, source: str = "", download: bool = False, key: str = "") -> Path:
    """The local file for ``spec`` (a path or ``hf://ORG/REPO/FILE`` in the cache); ``WeightsNotFoundError``
    naming the file, ``source`` (where it comes from) and the config ``key`` otherwise."""
    loc = parse_location(spec)
    if not spec.startswith(HF_PREFIX):  # a bare string names a file by its path
        path = Path(spec).expanduser()
        if path.is_file():
            return path
        raise _missing_local(what, "file", path, source, key, spec)
    if loc.subpath is None:
        raise ValueError(f"{spec!r}: a file is needed here, e.g. hf://{loc.repo}/<filename>")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(loc.repo, loc.subpath, local_files_only=not download or hub_offline()))
    except Exception as err:  # noqa: BLE001 - every hub failure means "not available here"
        raise _not_in_cache(what, spec, loc.repo, source, key, "file", download) from err


def resolve_dir(spec: str, *, what: str, source: str = "", download: bool = False, key: str = "") -> Path:
    """The local folder for ``spec`` (a path, ``hf://ORG/REPO[/SUBFOLDER]`` or a bare repo id, from the cache)."""
    loc = parse_location(spec)
    if loc.is_local:
        if loc.path.is_dir():
            return loc.path
        raise _missing_local(what, "folder", loc.path, source, key, spec)
    from huggingface_hub import snapshot_download

    try:
        root = Path(snapshot_download(loc.repo, local_files_only=not download or hub_offline()))
    except Exception as err:  # noqa: BLE001
        raise _not_in_cache(what, spec, loc.repo, source, key, "folder", download) from err
    out = root / loc.subpath if loc.subpath else root
    if not out.is_dir():
        raise _not_in_cache(what, spec, loc.repo, source, key, "folder", download)
    return out


def load_pretrained(load: Callable[[str], T], source: str, what: str, config_key: str) -> T:
    """Run ``load(folder or repo id)`` (a ``from_pretrained``) and turn a missing folder / uncached repo into one
    clear ``WeightsNotFoundError`` naming ``source`` and ``config_key``."""
    loc = parse_location(source)
    if loc.is_local:
        if not loc.path.is_dir():
            raise WeightsNotFoundError(
                f"{what}: no folder at {str(loc.path)!r} (from {config_key}). Point {config_key} at a folder written by "
                f"save_pretrained (config.json + weights), or at a Hugging Face repo id."
            )
        target = str(loc.path)
    else:
        if loc.subpath:
            raise ValueError(f"{config_key}={source!r}: name the repository (hf://{loc.repo}) and set the subfolder key "
                             f"for {loc.subpath!r}")
        target = loc.repo
    try:
        return load(target)
    except (OSError, ValueError) as err:
        if loc.is_local:
            hint = f"the folder {target!r} exists but does not hold a loadable checkpoint ({err})"
        elif hub_offline():
            hint = (f"{target!r} is not in the Hugging Face cache and HF_HUB_OFFLINE=1 forbids downloading it; "
                    f"run `huggingface-cli download {target}` on a machine with network access (same HF_HOME), "
                    f"or set {config_key} to a local folder")
        else:
            hint = f"{target!r} could not be loaded or downloaded ({err}); set {config_key} to a local folder"
        raise WeightsNotFoundError(f"{what}: {hint}") from err


def local_folder(source: str, subfolder: str | None = None) -> Path | None:
    """The folder holding ``source``'s files: itself if local, else its snapshot in the HF cache (or None)."""
    loc = parse_location(source)
    if loc.is_local:
        folder = loc.path
    else:
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(loc.repo, local_files_only=True))
        except Exception:  # noqa: BLE001 - not cached (e.g. loaded from a mirror); no fingerprint then
            return None
        if loc.subpath:
            folder = folder / loc.subpath
    return folder / subfolder if subfolder else folder


def hf_weight_files(folder: Path) -> list[Path]:
    """The weight files ``from_pretrained`` reads from an HF model folder (safetensors first, as transformers)."""
    for single, index in (("model.safetensors", "model.safetensors.index.json"), ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (folder / single).is_file():
            return [folder / single]
        if (folder / index).is_file():
            shards = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
            return [folder / s for s in shards]
    raise WeightsNotFoundError(f"no model.safetensors / pytorch_model.bin (or sharded index) in {folder}")


def read_checkpoint(path: str | Path) -> dict:
    """A state dict from a file on the CPU: safetensors, or a pickle read with ``torch.load(weights_only=True)``."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


# --- hashes and provenance ---------------------------------------------------------------------------------


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file (hex).  Files in the HF cache are stored as ``blobs/<sha256>``, so those are free;
    others are hashed once per (path, size, mtime)."""
    real = Path(path).resolve()
    if _HEX64.match(real.name) and real.parent.name == "blobs":
        return real.name
    st = real.stat()
    return _sha256_cached(str(real), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=256)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


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
        h.update(sha256_file(p).encode())
    return h.hexdigest()[:16]


def file_record(path: str | Path, role: str) -> dict:
    """Provenance of one weight file: its role, path, sha256 and size."""
    return {"role": role, "path": str(path), "sha256": sha256_file(path), "bytes": Path(path).stat().st_size}


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions of torch and ``names`` ("not installed" for a missing one), for provenance."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for n in ("torch", *names):
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            out[n] = "not installed"
    return out


# --- checking a load -----------------------------------------------------------------------------------------


def check_keys(
    what: str,
    missing: Iterable[str],
    unexpected: Iterable[str],
    harmless: Iterable[str] = (),
    mismatched: Iterable = (),
) -> None:
    """Raise ``WeightsMismatch`` listing every key that did not load, except the documented ``harmless`` regexes."""
    pats = [re.compile(p) for p in harmless]

    def bad(keys: Iterable[str]) -> list[str]:
        return sorted(k for k in keys if not any(p.search(k) for p in pats))

    m, u, mm = bad(missing), bad(unexpected), list(mismatched)
    if m or u or mm:
        parts = []
        if m:
            parts.append(f"{len(m)} missing keys: {m[:20]}")
        if u:
            parts.append(f"{len(u)} unexpected keys: {u[:20]}")
        if mm:
            parts.append(f"{len(mm)} shape mismatches: {mm[:20]}")
        raise WeightsMismatch(f"{what}: the checkpoint does not match the model; " + "; ".join(parts))


def load_checked(module, state_dict: dict, what: str, harmless: Iterable[str] = ()) -> None:
    """``module.load_state_dict`` that names the checkpoint on shape errors and fails on any unloaded key."""
    try:
        res = module.load_state_dict(state_dict, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise RuntimeError(f"{what}: {err}") from None
    check_keys(what, res.missing_keys, res.unexpected_keys, harmless)
