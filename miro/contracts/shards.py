"""Shard names and the paths of everything stored per shard (the contract in docs/contracts.md).

A shard is ``NAME-NNNNNN.tar``; every per-shard file (reward sidecars, buckets, feature caches) is named
``NAME-NNNNNN<suffix>`` and lives beside its shard, or in an output folder that mirrors the shards' layout
below a root.  Every stage finds shards and their files through these functions only.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable
from pathlib import Path

SHARD_RE = re.compile(r"^(?P<name>.+)-(?P<index>\d{6})\.tar$")


def shard_name(name: str, index: int) -> str:
    if index < 0 or index > 999_999:
        raise ValueError(f"shard index {index} outside 0..999999")
    return f"{name}-{index:06d}.tar"


def shard_stem(path: str | Path) -> str:
    """``NAME-NNNNNN`` of a shard path; raises ValueError for a name that breaks the convention."""
    base = Path(path).name
    if not SHARD_RE.match(base):
        raise ValueError(f"{base!r} is not a shard name of the form NAME-NNNNNN.tar")
    return base[: -len(".tar")]


def sidecar_path(shard: str | Path, suffix: str, out_dir: str | Path | None = None, root: str | Path | None = None) -> Path:
    """Path of a per-shard sidecar (``suffix`` like ``.rewards.parquet``).

    Beside the shard by default; with ``out_dir`` the shard's path relative to ``root`` is mirrored inside it.
    """
    shard = Path(shard)
    name = shard_stem(shard) + suffix
    if out_dir is None:
        return shard.with_name(name)
    rel = shard.parent.relative_to(root) if root is not None else Path()
    return Path(out_dir) / rel / name


def _expand_braces(pattern: str) -> list[str]:
    m = re.search(r"\{(\d+)\.\.(\d+)\}", pattern)
    if not m:
        return [pattern]
    a, b = m.group(1), m.group(2)
    width = len(a)
    out = []
    for i in range(int(a), int(b) + 1):
        out += _expand_braces(pattern[: m.start()] + str(i).zfill(width) + pattern[m.end() :])
    return out


def list_shards(spec: str | Path | Iterable[str | Path]) -> list[Path]:
    """Shards from a directory (recursively), a glob, a brace range ``a-{000000..000009}.tar``, or a list."""
    if isinstance(spec, (list, tuple)):
        out: list[Path] = []
        for s in spec:
            out += list_shards(s)
        return sorted(set(out))
    spec = str(spec)
    if os.path.isdir(spec):
        paths = [Path(p) for p in glob.glob(os.path.join(spec, "**", "*.tar"), recursive=True)]
    else:
        paths = []
        for pat in _expand_braces(spec):
            paths += [Path(p) for p in glob.glob(pat)] if any(c in pat for c in "*?[") else [Path(pat)]
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise FileNotFoundError(f"shard(s) not found: {', '.join(map(str, missing[:5]))}")
    paths = [p for p in paths if SHARD_RE.match(p.name)]
    return sorted(paths)



def shards_root(spec, shards: list[Path], root: str | Path | None) -> Path:
    """The folder that per-shard outputs mirror: ``root`` if given, the ``spec`` folder, else the shards'
    deepest common folder."""
    if root is not None:
        return Path(root)
    if isinstance(spec, str) and os.path.isdir(spec):
        return Path(spec)
    return Path(os.path.commonpath([str(p.parent.resolve()) for p in shards])) if shards else Path(".")


def find_shards(spec, root: str | Path | None = None, resolve: bool = False) -> tuple[list[Path], Path]:
    """The shards of a ``data.shards`` setting and the root their per-shard files mirror
    (``FileNotFoundError`` when there is none); ``resolve`` makes both absolute."""
    shards = list_shards(spec)
    if not shards:
        raise FileNotFoundError(f"data.shards={spec!r}: no NAME-NNNNNN.tar shards found")
    if resolve:
        shards = [p.resolve() for p in shards]
    found = shards_root(spec, shards, root)
    return shards, (found.resolve() if resolve else found)
