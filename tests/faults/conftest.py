"""Helpers of the fault-injection suite: raw tars (member names ShardWriter refuses), read-only folders (real
permissions, plus a patched ``mkstemp`` because root ignores them), snapshots of what a run writes."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from tests.data.make_dataset import image_bytes

ROOT = Path(__file__).resolve().parents[2]


def sample_members(key: str) -> list[tuple[str, bytes]]:
    return [(f"{key}.png", image_bytes(key)), (f"{key}.txt", f"a photo of {key}".encode())]


def write_raw_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A tar with exactly these members in this order (fixed headers, so the bytes are reproducible)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tf.addfile(info, io.BytesIO(data))
    return path


def shard_with_extra(path: Path, n: int, extra: dict[int | str, tuple[str, bytes]] | None = None, prefix: str = "k") -> tuple[Path, list[str]]:
    """``n`` samples ``k0000..``; ``extra[i]`` is inserted before sample i (``i == n``: at the end; ``"inside"``:
    between the image and the caption of sample n // 2)."""
    extra = extra or {}
    keys = [f"{prefix}{i:04d}" for i in range(n)]
    members: list[tuple[str, bytes]] = []
    for i, key in enumerate(keys):
        if i in extra:
            members.append(extra[i])
        m = sample_members(key)
        if "inside" in extra and i == n // 2:
            m = [m[0], extra["inside"], m[1]]
        members += m
    if n in extra:
        members.append(extra[n])
    return write_raw_tar(path, members), keys


@pytest.fixture
def readonly(monkeypatch):
    """``readonly(folder)``: the folder refuses new files (chmod 0555, and for root, who ignores permissions,
    ``tempfile.mkstemp`` and ``os.open`` with O_CREAT there fail with EACCES)."""
    folders: list[Path] = []
    real_mkstemp = tempfile.mkstemp

    def inside(d) -> bool:
        d = Path(d).resolve()
        return any(d == f or f in d.parents for f in folders)

    def mkstemp(*args, dir=None, **kw):  # noqa: A002 - tempfile's own keyword
        if dir is not None and inside(dir):
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real_mkstemp(*args, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)

    def make(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        folders.append(folder.resolve())
        os.chmod(folder, 0o555)
        return folder

    yield make
    for f in folders:
        os.chmod(f, 0o755)


def snapshot(folder: Path, exclude: Path | None = None) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of every file under ``folder`` (outside ``exclude``)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if exclude is not None and (p == exclude or exclude in p.parents):
            continue
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return out


def run_module(module: str, *args: str, cwd: Path | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=cwd or ROOT,
                          env=env, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit code 1, no traceback anywhere, the last stderr line an ``error:`` line holding each needle."""
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert "Traceback" not in text, text
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), text
    for n in needles:
        assert n in last, last
    return last
