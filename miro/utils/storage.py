"""Storage faults as one clear line: a full disk, a quota, a read-only or foreign folder.

``check_writable(folder, key)`` is called before any work starts (the folder is created if needed and a
probe file is written and removed), so a read-only output folder is found in a second, not after an hour of
training or sampling.  ``OutputError.from_os(err, what)`` turns an ``OSError`` of a write into the message
the entry points print (``error: <message>``)::

    try:
        write(...)
    except OSError as err:
        raise OutputError.from_os(err, f"checkpoint {path}") from err
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path

__all__ = ["STORAGE_ERRNOS", "OutputError", "check_writable"]

# what a write fails with when the storage (not the program) is at fault
STORAGE_ERRNOS = frozenset(getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EFBIG")
                           if hasattr(errno, n))
_ADVICE = {errno.ENOSPC: "free some space", errno.EROFS: "choose a writable folder",
           errno.EACCES: "choose a folder you may write to", errno.EPERM: "choose a folder you may write to"}
if hasattr(errno, "EDQUOT"):
    _ADVICE[errno.EDQUOT] = "free some space (disk quota exceeded)"


class OutputError(RuntimeError):
    """An output could not be written (full disk, quota, read-only or foreign folder)."""

    @classmethod
    def from_os(cls, err: OSError, what: str, advice: str = "") -> OutputError:
        reason = err.strerror or str(err)
        where = f" ({err.filename})" if err.filename and str(err.filename) not in what else ""
        hint = advice or _ADVICE.get(err.errno or 0, "")
        return cls(f"{what}: could not be written{where}: {reason}" + (f"; {hint}" if hint else ""))


def check_writable(folder: str | Path, key: str) -> Path:
    """Create ``folder`` (and its parents) if needed and check that a file can be written in it; raise
    ``OutputError`` naming the config ``key`` otherwise.  Nothing is left behind."""
    folder = Path(folder)
    probe = folder / f".write-probe.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
        raise OutputError(f"{key}={str(folder)!r}: not writable ({err.strerror or err}); "
                          "choose another folder or fix its permissions") from None
    return folder
