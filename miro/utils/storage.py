"""Storage faults as one clear line: a full disk, a quota, a read-only, missing or foreign output folder.

``check_writable(folder, what)`` is called before any work starts (the folder is created if needed and a
probe file is written and removed), so a read-only output folder is found in the first second, not after a
whole shard has been scored or an hour of training.  ``OutputError.from_os(err, what)`` turns the ``OSError``
of a write into the message the entry points print::

    try:
        write(...)
    except OSError as err:
        raise OutputError.from_os(err, f"checkpoint {path}") from err

``OutputError`` is a ``ConfigError`` (the output setting cannot be used as it is), so every entry point
(``miro.utils.config.run_typed``) reports it as one ``error:`` line with exit code 1.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from miro.utils.config import ConfigError

__all__ = ["STORAGE_ERRNOS", "OutputError", "check_writable", "check_writable_all", "disk_full"]

# what a write fails with when the storage (not the program) is at fault
STORAGE_ERRNOS = frozenset(getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EFBIG")
                           if hasattr(errno, n))
_ADVICE = {errno.ENOSPC: "free some space", errno.EROFS: "choose a writable folder",
           errno.EACCES: "choose a folder you may write to", errno.EPERM: "choose a folder you may write to"}
if hasattr(errno, "EDQUOT"):
    _ADVICE[errno.EDQUOT] = "free some space (disk quota exceeded)"


class OutputError(ConfigError):
    """An output could not be written: full disk, quota, read-only, missing or foreign folder."""

    @classmethod
    def from_os(cls, err: OSError, what: str, advice: str = "") -> OutputError:
        reason = err.strerror or str(err)
        where = f" ({err.filename})" if err.filename and str(err.filename) not in what else ""
        hint = advice or _ADVICE.get(err.errno or 0, "")
        return cls(f"{what}: could not be written{where}: {reason}" + (f"; {hint}" if hint else ""))


def disk_full(err: BaseException) -> bool:
    """True for an ``OSError`` that says the disk (or quota) is full."""
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def check_writable(folder: str | Path, what: str = "output folder", create: bool = True) -> Path:
    """Create ``folder`` (and parents) if missing and prove a file can be created in it; ``OutputError`` naming
    ``what`` (a config key or a description) if not.  Nothing is left behind.  ``create=False``: a missing
    folder is left alone (the command that reads it reports it)."""
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
        raise OutputError(f"{what} {folder} is not writable ({err.strerror or err}); "
                          "choose another folder or fix its permissions") from None
    os.close(fd)
    os.unlink(name)
    return folder


def check_writable_all(folders: Iterable[str | Path], what: str = "output folder", create: bool = True) -> None:
    """``check_writable`` for each distinct folder (in order)."""
    for f in dict.fromkeys(Path(x) for x in folders):
        check_writable(f, what, create)
