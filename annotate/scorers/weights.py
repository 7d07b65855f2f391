"""Finding reward weights on disk, hashing them, and checking that a state dict really filled a model.

A weight location in config is either a local path or ``hf://<org>/<repo>[/<file>]`` (a repository or one of its
files in the Hugging Face cache).  Nothing is downloaded unless the scorer config says ``download: true`` and the
hub is not switched off; a missing file is an error that names the file and where it comes from, never a random
initialisation.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

HF_PREFIX = "hf://"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class WeightsNotFound(FileNotFoundError):
    """A reward model's weights are not on this machine; the message says where they come from."""


class WeightsMismatch(RuntimeError):
    """A checkpoint does not fit the model it is loaded into (missing or unexpected keys, wrong shapes)."""


def _split_hf(spec: str) -> tuple[str, str | None]:
    parts = spec[len(HF_PREFIX) :].strip("/").split("/", 2)
    if len(parts) < 2:
        raise ValueError(f"{spec!r}: expected hf://<org>/<repo> or hf://<org>/<repo>/<file>")
    return f"{parts[0]}/{parts[1]}", (parts[2] if len(parts) == 3 else None)


def _hub_offline(download: bool) -> bool:
    from huggingface_hub import constants

    return not download or bool(constants.HF_HUB_OFFLINE)


def _not_found(what: str, spec: str, source: str, hint: str = "") -> WeightsNotFound:
    from huggingface_hub import constants

    msg = (
        f"{what}: {spec!r} is neither a local path nor in the Hugging Face cache ({constants.HF_HUB_CACHE}). "
        f"It comes from {source}."
    )
    if hint:
        msg += f" {hint}"
    return WeightsNotFound(msg)


def resolve_file(spec: str, *, what: str, source: str, download: bool = False, key: str = "") -> Path:
    """Local file for ``spec`` (a path or ``hf://org/repo/file``); ``WeightsNotFound`` otherwise."""
    hint = f"Download it and set {key}=/path/to/file." if key else ""
    if not spec.startswith(HF_PREFIX):
        path = Path(os.path.expanduser(spec))
        if path.is_file():
            return path
        raise WeightsNotFound(f"{what}: file {str(path)!r} does not exist. It comes from {source}. {hint}".strip())
    repo, filename = _split_hf(spec)
    if filename is None:
        raise ValueError(f"{spec!r}: a file is needed here, e.g. hf://{repo}/<filename>")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename, local_files_only=_hub_offline(download)))
    except Exception as err:  # noqa: BLE001 - every hub failure means "not available here"
        raise _not_found(what, spec, source, hint) from err


def resolve_dir(spec: str, *, what: str, source: str, download: bool = False, key: str = "") -> Path:
    """Local folder for ``spec`` (a path, ``hf://org/repo`` or a bare ``org/repo`` repo id)."""
    hint = f"Download it (huggingface-cli download <repo>) and set {key}=/path/to/folder." if key else ""
    path = Path(os.path.expanduser(spec))
    if not spec.startswith(HF_PREFIX) and path.is_dir():
        return path
    if spec.startswith(HF_PREFIX):
        repo, sub = _split_hf(spec)
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", spec) and not spec.startswith((".", "/")):
        repo, sub = spec, None
    else:
        raise WeightsNotFound(f"{what}: folder {str(path)!r} does not exist. It comes from {source}. {hint}".strip())
    from huggingface_hub import snapshot_download

    try:
        root = Path(snapshot_download(repo, local_files_only=_hub_offline(download)))
    except Exception as err:  # noqa: BLE001
        raise _not_found(what, spec, source, hint) from err
    out = root / sub if sub else root
    if not out.is_dir():
        raise _not_found(what, spec, source, hint)
    return out


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file.  Files in the HF cache are stored under their SHA-256, so those are free."""
    p = Path(path)
    real = p.resolve()
    if _SHA256_RE.match(real.name) and real.parent.name == "blobs":
        return real.name
    st = real.stat()
    return _sha256_cached(str(real), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def hf_weight_files(folder: Path) -> list[Path]:
    """The weight files ``from_pretrained`` reads from an HF model folder (safetensors first, as transformers)."""
    for single, index in (("model.safetensors", "model.safetensors.index.json"), ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (folder / single).is_file():
            return [folder / single]
        if (folder / index).is_file():
            import json

            shards = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
            return [folder / s for s in shards]
    raise WeightsNotFound(f"no model.safetensors / pytorch_model.bin (or sharded index) in {folder}")


def file_record(path: Path, role: str) -> dict:
    return {"role": role, "path": str(path), "sha256": sha256_file(path), "bytes": Path(path).stat().st_size}


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


def package_versions(*names: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for n in ("torch", *names):
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            out[n] = "not installed"
    return out
