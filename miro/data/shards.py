"""WebDataset shard naming, writing and reading (the format is in docs/contracts.md).

Writers are deterministic (fixed tar headers, keys in order) and atomic (temp file + rename), so a shard
either exists complete or not at all, and the same seed gives byte-identical shards.
"""

from __future__ import annotations

import glob
import io
import os
import re
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from miro.utils.atomic import atomic_path

SHARD_RE = re.compile(r"^(?P<name>.+)-(?P<index>\d{6})\.tar$")


class ShardError(RuntimeError):
    """A shard cannot be read (corrupt or truncated tar, or bad member names)."""


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


def split_key(member: str) -> tuple[str, str]:
    """``dir/KEY.ext.more`` -> (``dir/KEY``, ``ext.more``): the key ends at the first dot of the basename."""
    d, base = os.path.split(member)
    if "." not in base:
        raise ShardError(f"member {member!r} has no extension")
    k, ext = base.split(".", 1)
    return (f"{d}/{k}" if d else k), ext.lower()


def iter_shard(path: str | Path, strict: bool = True) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield ``(key, {ext: bytes})`` for each sample, members grouped by key in tar order.

    A corrupt or truncated tar raises ``ShardError`` naming the shard after yielding the complete samples
    before the damage (``strict=False`` stops quietly instead).
    """
    current: str | None = None
    group: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r|*") as tf:
            for info in tf:
                if not info.isfile():
                    continue
                key, ext = split_key(info.name)
                if current is not None and key != current:  # the previous sample is complete: hand it out
                    yield current, group  # before reading (possibly damaged) data of the next one
                    group = {}
                current = key
                f = tf.extractfile(info)
                group[ext] = f.read() if f is not None else b""
    except (tarfile.TarError, OSError, EOFError) as err:
        if strict:
            raise ShardError(f"{path}: unreadable tar after key {current!r} ({type(err).__name__}: {err})") from None
        return
    if current is not None:
        yield current, group


class ShardWriter:
    """Writes samples into ``out_dir/NAME-NNNNNN.tar`` shards of at most ``maxcount`` samples each."""

    def __init__(self, out_dir: str | Path, name: str, maxcount: int = 1000, start_index: int = 0):
        if maxcount < 1:
            raise ValueError(f"maxcount={maxcount}: must be >= 1")
        self.out_dir, self.name, self.maxcount = Path(out_dir), name, maxcount
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.index = start_index
        self.count = 0
        self.written: list[Path] = []
        self._tar: tarfile.TarFile | None = None
        self._tmp: atomic_path | None = None

    def _open(self) -> None:
        final = self.out_dir / shard_name(self.name, self.index)
        self._tmp = atomic_path(final)
        self._tar = tarfile.open(self._tmp.tmp, "w", format=tarfile.USTAR_FORMAT)

    def _close(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        final = self._tmp.commit()
        self.written.append(final)
        self._tar, self._tmp = None, None
        self.index += 1
        self.count = 0

    def write(self, key: str, members: dict[str, bytes | str]) -> None:
        if "." in key or "/" in key or not key:
            raise ValueError(f"sample key {key!r} must be non-empty and contain no '.' or '/'")
        if self._tar is None:
            self._open()
        for ext in sorted(members):
            data = members[ext]
            if isinstance(data, str):
                data = data.encode("utf-8")
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o644, 0, 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
        self.count += 1
        if self.count >= self.maxcount:
            self._close()

    def close(self) -> list[Path]:
        self._close()
        return self.written

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self._tar is not None:  # never leave a half shard under the final name
            self._tar.close()
            self._tmp.discard()
            self._tar = None
            return
        self.close()
