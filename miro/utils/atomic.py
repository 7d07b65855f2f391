"""Atomic writes: write under a temporary name in the target's folder, then rename over the target.

Readers see either the old file (or none) or the complete new one, never a half-written file, whether the
writer fails, raises or is killed.  The one place where the project does this::

    with atomic_path(out) as tmp:          # tmp: a fresh name beside ``out``, not created yet
        table.save(tmp)                     # any writer that takes a path
    # renamed over ``out`` on success; on an exception tmp is removed, ``out`` is untouched

    atomic_write_text(path, text)           # the usual cases
    atomic_write_bytes(path, data)
    atomic_write_json(path, obj, indent=1)

``atomic_path`` is also an object with ``commit()`` / ``discard()`` for writers that span several calls
(a tar shard opened by one method and closed by another).

Temporary names are ``.<name>.<pid>-<random>.tmp`` in the target's folder (the same file system, so the
rename is atomic): hidden, never matching a data glob such as ``*.tar`` or ``*.parquet``, and distinct for
concurrent writers of the same target in one or many processes; the last rename wins.  ``stale_temps``
finds what a killed writer left behind.  The parent folder must exist (callers create it).

Durability: by default nothing is fsynced (the rename is atomic for other processes and for a crash of the
writer, which is what resumable jobs need; after a power loss a just-renamed file may be empty on some file
systems).  ``fsync=True`` flushes the file before the rename and the folder after it.

Folders (``directory=True``): the temporary folder is created on enter; an existing target folder is
removed just before the rename (two steps: a crash in between leaves no folder, never a partial one).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "stale_temps", "temp_path"]

TEMP_SUFFIX = ".tmp"


def temp_path(path: str | Path) -> Path:
    """A fresh temporary name beside ``path`` (not created): ``.<name>.<pid>-<random>.tmp``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")


def stale_temps(folder: str | Path, pattern: str = "*") -> list[Path]:
    """Temporary files or folders of ``temp_path`` in ``folder`` for targets matching ``pattern``
    (left by killed writers; only safe to delete when no writer of that folder is running)."""
    return sorted(Path(folder).glob(f".{pattern}.*{TEMP_SUFFIX}"))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class atomic_path:  # noqa: N801 - used like ``open``: ``with atomic_path(p) as tmp``
    """Context manager yielding a temporary path beside ``path``; renamed over ``path`` when the block
    succeeds, removed when it raises (the exception propagates).

    Args:
        path: the target file (or folder with ``directory=True``).
        directory: the target is a folder; the temporary folder is created on enter.
        fsync: flush the written file (not a folder's contents) and the parent folder to disk.
        tmp: a fixed temporary name instead of a unique one (whatever is there is removed first): for
            callers whose killed runs must leave one well-known leftover; not safe for concurrent writers.
    """

    def __init__(self, path: str | Path, *, directory: bool = False, fsync: bool = False, tmp: str | Path | None = None):
        self.path = Path(path)
        self.directory = directory
        self.fsync = fsync
        self.tmp = Path(tmp) if tmp is not None else temp_path(self.path)
        self.done = False
        if tmp is not None and (self.tmp.exists() or self.tmp.is_symlink()):
            _remove(self.tmp)
        if directory:
            self.tmp.mkdir()

    def commit(self) -> Path:
        """Rename the temporary path over the target; returns the target."""
        if self.done:
            raise RuntimeError(f"{self.path}: atomic write already finished")
        self.done = True
        try:
            if self.fsync and not self.directory:
                _fsync(self.tmp)
            if self.directory and self.path.is_dir() and not self.path.is_symlink():
                shutil.rmtree(self.path)
            os.replace(self.tmp, self.path)
        except BaseException:
            _remove(self.tmp)
            raise
        if self.fsync:
            _fsync(self.path.parent)
        return self.path

    def discard(self) -> None:
        """Remove the temporary path; the target is left as it was."""
        self.done = True
        _remove(self.tmp)

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.done:
            return False
        if exc_type is None:
            self.commit()
        else:
            self.discard()
        return False


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = False) -> Path:
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8", fsync: bool = False) -> Path:
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = None, sort_keys: bool = False,
                      default=None, fsync: bool = False) -> bytes:
    """``json.dumps(obj, ...) + "\\n"`` written atomically as UTF-8; returns the bytes written."""
    data = (json.dumps(obj, indent=indent, sort_keys=sort_keys, default=default) + "\n").encode()
    atomic_write_bytes(path, data, fsync=fsync)
    return data
