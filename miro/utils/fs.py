"""Checks on output folders made before any work starts, so a read-only or missing-permission folder is found
in the first second, not after a whole shard has been scored.

    check_writable(out_dir, "annotate out_dir")   # creates the folder if needed; raises OutputError otherwise

``OutputError`` is a ``ConfigError``, so every entry point (``miro.utils.config.run_typed``) reports it as one
``error:`` line with exit code 1.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from miro.utils.config import ConfigError

__all__ = ["OutputError", "check_writable", "check_writable_all", "disk_full"]


class OutputError(ConfigError):
    """An output folder cannot be created or written, or the disk is full."""


def check_writable(folder: str | Path, what: str = "output folder", create: bool = True) -> Path:
    """Create ``folder`` (and parents) if missing and prove a file can be created in it; ``OutputError`` if not.
    ``create=False``: a missing folder is left alone (the command that reads it reports it)."""
    folder = Path(folder)
    if not create and not folder.exists():
        return folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{what} {folder} cannot be created ({err.strerror or err})") from None
    if not folder.is_dir():
        raise OutputError(f"{what} {folder} is not a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=".miro-write-check.", suffix=".tmp", dir=folder)
    except OSError as err:
        raise OutputError(f"{what} {folder} is not writable ({err.strerror or err}); choose another folder or fix its permissions") from None
    os.close(fd)
    os.unlink(name)
    return folder


def check_writable_all(folders: Iterable[str | Path], what: str = "output folder", create: bool = True) -> None:
    """``check_writable`` for each distinct folder (in order)."""
    for f in dict.fromkeys(Path(x) for x in folders):
        check_writable(f, what, create)


def disk_full(err: BaseException) -> bool:
    """True for an ``OSError`` that says the disk (or quota) is full."""
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
