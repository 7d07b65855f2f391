"""WebDataset shard writing and reading (names and paths: ``miro.contracts.shards``; docs/contracts.md).

Writers are deterministic (fixed tar headers, keys in order) and atomic (temp file + rename), so a shard
either exists complete or not at all, and the same seed gives byte-identical shards.
"""

from __future__ import annotations

import io
import logging
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

from miro.contracts.shards import shard_name
from miro.utils.atomic import atomic_path

log = logging.getLogger(__name__)

NO_EXTENSION = "member_without_extension"  # the reason recorded for a skipped tar member named ``README``, ``noext``


class ShardError(RuntimeError):
    """A shard cannot be read (corrupt or truncated tar, or bad member names)."""


def split_key(member: str) -> tuple[str, str]:
    """``dir/KEY.ext.more`` -> (``dir/KEY``, ``ext.more``): the key ends at the first dot of the basename."""
    d, base = os.path.split(member)
    if "." not in base:
        raise ShardError(f"member {member!r} has no extension")
    k, ext = base.split(".", 1)
    return (f"{d}/{k}" if d else k), ext.lower()


def iter_shard(path: str | Path, strict: bool = True,
               on_skip: Callable[[str, str], None] | None = None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield ``(key, {ext: bytes})`` for each sample, members grouped by key in tar order.

    A member whose name has no extension (``README``, ``noext``) belongs to no sample: it is skipped, the
    grouping goes on (no sample before or after it is lost) and ``on_skip(member, NO_EXTENSION)`` is called
    (default: a warning in the log), so every consumer can count and report it.
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
                if "." not in os.path.basename(info.name):
                    if on_skip is not None:
                        on_skip(info.name, NO_EXTENSION)
                    else:
                        log.warning("%s: member %r has no extension; skipped (it belongs to no sample)", path, info.name)
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


def tar_keys(path: Path) -> tuple[list[str], bool]:
    """Sample keys of a shard in order, from the tar headers only (no member data is read), and whether
    the tar is damaged (then the last key, whose members may be cut, is dropped).  Members without an
    extension are left out, as ``iter_shard`` skips them.  A plain header walk is
    ~10x faster than ``tarfile``; headers it does not handle (pax, GNU long names) fall back to tarfile."""
    keys: list[str] = []
    size = os.path.getsize(path)
    try:
        with open(path, "rb") as f:
            while True:
                h = f.read(512)
                if len(h) == 512 and h == b"\0" * 512:
                    return keys, False
                if len(h) < 512:
                    return keys[:-1], True
                kind = h[156:157]
                if kind not in (b"0", b"\0", b"5"):
                    return _tar_keys_slow(path)
                length = int(h[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
                if kind != b"5":
                    name = h[:100].split(b"\0", 1)[0].decode()
                    prefix = h[345:500].split(b"\0", 1)[0].decode() if h[257:262] == b"ustar" else ""
                    key = _key_of(f"{prefix}/{name}" if prefix else name)
                    if key is not None and (not keys or keys[-1] != key):
                        keys.append(key)
                if f.seek((length + 511) // 512 * 512, os.SEEK_CUR) > size:
                    return keys[:-1], True
    except (ValueError, UnicodeDecodeError):
        return _tar_keys_slow(path)


def _key_of(member: str) -> str | None:
    """The sample key of a member name; None for a member without extension (it belongs to no sample)."""
    d, base = os.path.split(member)
    if "." not in base:
        return None
    k = base.split(".", 1)[0]
    return f"{d}/{k}" if d else k


def _tar_keys_slow(path: Path) -> tuple[list[str], bool]:
    keys: list[str] = []
    size = os.path.getsize(path)
    try:
        with tarfile.open(path, "r:") as tf:
            for info in tf:
                if info.isfile():
                    key = _key_of(info.name)
                    if key is not None and (not keys or keys[-1] != key):
                        keys.append(key)
                    if info.offset_data + info.size > size:
                        return keys[:-1], True
            if tf.offset + 1024 > size:  # no end-of-archive blocks: cut inside a header
                return keys[:-1], True
    except (tarfile.TarError, OSError, EOFError):
        return keys[:-1], True
    return keys, False


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
            try:
                self._tar.close()  # may fail again (disk full): the temp file is removed all the same
            except OSError:
                pass
            finally:
                self._tmp.discard()
                self._tar, self._tmp = None, None
            return
        try:
            self.close()
        except BaseException:  # the last shard could not be finished (disk full): remove its temp file
            if self._tmp is not None:
                self._tmp.discard()
            self._tar, self._tmp = None, None
            raise
