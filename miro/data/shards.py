"""WebDataset shard writing and reading (names and paths: ``miro.contracts.shards``; docs/contracts.md).

Writers are deterministic (fixed tar headers, keys in order) and atomic (temp file + rename), so a shard
either exists complete or not at all, and the same seed gives byte-identical shards.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

from miro.contracts.shards import shard_name
from miro.utils.atomic import atomic_path


class ShardError(RuntimeError):
    """A shard cannot be read (corrupt or truncated tar, or bad member names)."""


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
