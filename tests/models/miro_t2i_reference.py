"""The MIRO authors' package ``miro-t2i`` as a reference for parity tests, kept out of this process.

Their top-level package is also named ``miro``, so it is never installed into this environment: it goes into
a ``pip install --target`` folder (with ``einops``, the one dependency this project lacks; ``--no-deps``,
the rest is torch / safetensors / numpy from this environment) and runs only in a subprocess started with
``python -P`` (no script folder on ``sys.path``), ``PYTHONPATH=<that folder>`` and a working directory
outside the repository.  The subprocess script checks that the ``miro`` it imported is theirs.

The folder: ``$MIRO_T2I_DIR``, else ``/work/.cache/miro_t2i`` where ``/work/.cache`` exists (this machine),
else ``~/.cache/miro/miro_t2i``.  Install it by hand with ``python -m tests.models.miro_t2i_reference``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MIRO_T2I_VERSION = "0.1.4"
EINOPS_VERSION = "0.8.1"
SCRIPT = Path(__file__).with_name("miro_t2i_rin_script.py")


class ReferenceUnavailable(RuntimeError):
    """``miro-t2i`` is not installed and could not be installed (the message carries pip's error)."""


def default_dir() -> Path:
    if os.environ.get("MIRO_T2I_DIR"):
        return Path(os.environ["MIRO_T2I_DIR"]).expanduser()
    if Path("/work/.cache").is_dir():
        return Path("/work/.cache/miro_t2i")
    return Path("~/.cache/miro/miro_t2i").expanduser()


def is_installed(target: Path) -> bool:
    """True when ``target`` holds miro-t2i at the pinned version and einops."""
    return (
        (target / f"miro_t2i-{MIRO_T2I_VERSION}.dist-info").is_dir()
        and (target / "miro" / "models" / "networks" / "rin.py").is_file()
        and (target / "einops" / "__init__.py").is_file()
    )


def ensure_miro_t2i(target: str | Path | None = None, timeout: float = 300) -> Path:
    """Install ``miro-t2i==0.1.4`` and ``einops`` with ``pip install --target`` (idempotent; safe when several
    test workers call it at once: each installs into a temporary sibling folder, the first rename wins).

    Raises ``ReferenceUnavailable`` with pip's output when the install fails (no network, no pip).
    """
    target = Path(target) if target is not None else default_dir()
    if is_installed(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    cmd = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
        "--target", str(tmp), f"miro-t2i=={MIRO_T2I_VERSION}", f"einops=={EINOPS_VERSION}",
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ReferenceUnavailable(f"{' '.join(cmd)}: {err}") from err
    if proc.returncode != 0 or not is_installed(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
        tail = (proc.stderr or proc.stdout).strip()[-1500:]
        raise ReferenceUnavailable(f"{' '.join(cmd)} failed (exit {proc.returncode}): {tail}")
    if target.exists() and not is_installed(target):  # a partial or older install: move it out of the way
        stale = Path(tempfile.mkdtemp(prefix=f".{target.name}-stale-", dir=target.parent))
        try:
            target.rename(stale / target.name)
        except OSError:
            pass
        shutil.rmtree(stale, ignore_errors=True)
    try:
        tmp.rename(target)
    except OSError:  # another worker was first
        shutil.rmtree(tmp, ignore_errors=True)
    if not is_installed(target):
        raise ReferenceUnavailable(f"{target}: miro-t2i {MIRO_T2I_VERSION} still incomplete after installing")
    return target


def run_reference(out_dir: str | Path, package_dir: str | Path, timeout: float = 600) -> Path:
    """Run ``miro_t2i_rin_script.py`` with THEIR package only (see the module docstring); returns ``out_dir``
    holding ``<variant>/`` checkpoint folders in their layout and ``<variant>.npz`` inputs / outputs, and their
    pipeline's records (``pipeline/``, ``t5/``, ``hub/``, ``pipeline.npz``, ``pipeline_calls.json``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME")}
    env.update(PYTHONPATH=str(Path(package_dir).resolve()), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    # their from_pretrained fetches stabilityai/sdxl-vae: the script writes a tiny one into this cache
    env.update(HF_HOME=str(out_dir.resolve() / "hf_home"), HF_HUB_CACHE=str(out_dir.resolve() / "hub"),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")  # fmt: skip
    cmd = [sys.executable, "-P", str(SCRIPT), str(out_dir.resolve()), str(Path(package_dir).resolve())]
    proc = subprocess.run(cmd, cwd=out_dir, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(
            f"the miro-t2i reference script failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    return out_dir


_CACHED: dict[str, Path] = {}


def cached_reference() -> Path:
    """``run_reference`` once per process (in a temporary folder removed at exit), for every test module
    that compares against their package; ``ReferenceUnavailable`` when miro-t2i cannot be installed."""
    if "dir" not in _CACHED:
        import atexit

        package = ensure_miro_t2i()
        out = Path(tempfile.mkdtemp(prefix="miro_t2i_reference-"))
        atexit.register(shutil.rmtree, out, ignore_errors=True)
        _CACHED["dir"] = run_reference(out, package)
    return _CACHED["dir"]


def reference_or_skip() -> Path:
    """``cached_reference()``, or skip the calling test (with pip's error) when miro-t2i cannot be installed."""
    import pytest

    try:
        return cached_reference()
    except ReferenceUnavailable as err:
        pytest.skip(f"miro-t2i (the authors' package) is not installed and could not be installed: {err}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        description="Install miro-t2i (the MIRO authors' package) for the parity tests."
    )
    parser.add_argument("--target", default=None, help=f"folder (default: {default_dir()})")
    print(ensure_miro_t2i(parser.parse_args().target))
