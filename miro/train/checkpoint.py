"""Checkpoint folders ``<run>/checkpoints/checkpoint-<step>/``: accelerate state (model, optimizer, grad
scaler, RNG, registered objects such as the EMA) plus ``train_state.json`` (step, samples seen, data
segment).  A checkpoint is written under a temporary name and renamed once every rank has finished, so
``resume=latest`` never picks a half-written one.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

from accelerate import Accelerator

from miro.utils.config import ConfigError

log = logging.getLogger("miro.train")
STATE_FILE = "train_state.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def resolve_resume(resume: str, folder: Path) -> Path | None:
    """``""`` -> None; ``latest`` -> the newest complete checkpoint or None (a fresh start); else a path."""
    if not resume:
        return None
    if resume == "latest":
        found = list_checkpoints(folder)
        if not found:
            log.info("resume=latest: no checkpoint in %s, starting from scratch", folder)
            return None
        return found[-1][1]
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise ConfigError(f"resume={resume!r}: not a complete checkpoint folder (no {STATE_FILE}); "
                          f"use resume=latest or one of {[str(p) for _, p in list_checkpoints(folder)]}")
    return path


def save_checkpoint(accelerator: Accelerator, folder: Path, step: int, state: dict, total_limit: int | None) -> Path:
    """Every rank calls this; the main process writes the shared files, renames and prunes."""
    final = folder / f"checkpoint-{step}"
    tmp = folder / f"checkpoint-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        if total_limit:
            for _, old in list_checkpoints(folder)[:-total_limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, path: Path) -> dict:
    accelerator.load_state(str(path))
    return json.loads((path / STATE_FILE).read_text())
