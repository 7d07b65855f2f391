"""Checkpoint folders ``<run>/checkpoints/checkpoint-<step>/``, written and read by the project itself
(not ``accelerator.save_state``), in formats that load without unpickling anything:

    model.safetensors           the transformer's weights
    optimizer.safetensors       AdamW's state tensors; param groups and other values as JSON in its metadata
    ema.safetensors             the EMA weights; decay, warmup, number of updates in its metadata
    rng-rank<r>.safetensors     each rank's torch (CPU, CUDA), numpy and python RNG states
    scaler.json                 the fp16 loss scaler's state (only with mixed_precision=fp16)
    train_state.json            step, samples seen, data segment, world size, ..., the run's config
    manifest.json               written last: every file above with its size and SHA-256

A checkpoint is written under ``checkpoint-<step>.tmp`` and renamed once every rank has finished; a
failed write (a full disk) removes the temporary folder and stops with one line.  Only a folder whose
manifest matches its files is *complete*: ``resume=latest`` takes the newest complete checkpoint and warns
about each newer one that is not (truncated, missing a file, written by an older version), so a requeued
job recovers.  A file that does not load (a crafted or foreign file under a listed name) stops resume
with an error naming it; pickles (accelerate's ``*.pkl`` / ``*.bin``) are never read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from safetensors import safe_open
from safetensors.torch import load_file, load_model, save_file, save_model

from miro.utils.atomic import atomic_path, atomic_write_json
from miro.utils.config import ConfigError
from miro.utils.storage import OutputError

log = logging.getLogger("miro.train")
FORMAT = 1
STATE_FILE = "train_state.json"
MANIFEST = "manifest.json"
MODEL_FILE, OPTIMIZER_FILE, EMA_FILE, SCALER_FILE = "model.safetensors", "optimizer.safetensors", "ema.safetensors", "scaler.json"
REQUIRED = (MODEL_FILE, OPTIMIZER_FILE, EMA_FILE, STATE_FILE)
_NAME = re.compile(r"^checkpoint-(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written, or the one to resume from cannot be used."""


def rng_file(rank: int) -> str:
    return f"rng-rank{rank}.safetensors"


# ---------------------------------------------------------------------------------------- finding, checking
def _named(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name)) and p.is_dir())


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """Checkpoints that were written to the end (they have a manifest), oldest first; ``verify`` checks
    that their files still match it."""
    return [(s, p) for s, p in _named(folder) if (p / MANIFEST).is_file()]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path) -> str | None:
    """Why the checkpoint folder ``path`` is not complete, or None when every file matches its manifest."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        return f"no {MANIFEST} (the save did not finish, or an older version of miro wrote it)"
    try:
        meta = json.loads(manifest.read_text())
        files = meta["files"]
        if meta.get("format") != FORMAT or not isinstance(files, dict):
            return f"{MANIFEST}: format {meta.get('format')!r}, this version reads {FORMAT}"
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        return f"{MANIFEST} is unreadable ({type(err).__name__})"
    for name in REQUIRED:
        if name not in files:
            return f"{MANIFEST} does not list {name}"
    for name, info in files.items():
        file = path / name
        if Path(name).name != name or not file.is_file():
            return f"{name} is missing"
        size = file.stat().st_size
        if size != info.get("size"):
            return f"{name} is {size} bytes, the manifest says {info.get('size')} (truncated or replaced)"
        if _sha256(file) != info.get("sha256"):
            return f"{name} does not match its SHA-256 in the manifest (damaged or replaced)"
    return None


def resolve_resume(resume: str, folder: Path) -> Path | None:
    """``""`` -> None; ``latest`` -> the newest complete checkpoint (a warning for each newer one that is
    not), None when there is none at all (a fresh start); else that folder, which must be complete."""
    if not resume:
        return None
    if resume == "latest":
        named = _named(folder)
        if not named:
            log.info("resume=latest: no checkpoint in %s, starting at step 0", folder)
            return None
        skipped = []
        for _, path in reversed(named):
            problem = verify(path)
            if problem is None:
                return path
            log.warning("resume=latest: skipping %s: %s", path, problem)
            skipped.append(f"{path.name}: {problem}")
        raise CheckpointError(f"resume=latest: no complete checkpoint in {folder} ({'; '.join(skipped)}); remove "
                              "these folders to start from scratch")
    path = Path(resume)
    problem = verify(path) if path.is_dir() else "no such folder"
    if problem is not None:
        raise ConfigError(f"resume={resume!r}: not a complete checkpoint folder ({problem}); use resume=latest "
                          f"or one of {[str(p) for _, p in list_checkpoints(folder)]}")
    return path


# ------------------------------------------------------------------------------------------------ writing
def remove_stale_temps(folder: Path) -> None:
    """Remove ``checkpoint-<step>.tmp`` folders left by a killed save (call before training starts; one
    training run per run folder at a time)."""
    for tmp in sorted(folder.glob("checkpoint-*.tmp")) if folder.is_dir() else []:
        log.info("removing %s, left by an interrupted save", tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    np_state = np.random.get_state()
    tensors = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np_state[1].astype(np.int64))}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    version, internal, gauss = random.getstate()
    meta = {"python": [version, list(internal), gauss], "numpy": [np_state[0], *map(_plain, np_state[2:])]}
    return tensors, meta


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _set_rng_state(file: Path) -> None:
    tensors, meta = load_file(file), _metadata(file)
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[f"cuda.{i}"] for i in range(len(tensors)) if f"cuda.{i}" in tensors]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, *rest = meta["numpy"]
    np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), *rest))


def _metadata(file: Path) -> dict[str, Any]:
    with safe_open(str(file), "pt") as f:
        return json.loads((f.metadata() or {}).get("miro", "{}"))


def _save_optimizer(optimizer: torch.optim.Optimizer, file: Path) -> None:
    sd = optimizer.state_dict()
    tensors, other = {}, {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{name}"] = value.detach().contiguous().cpu()
            else:
                other.setdefault(str(idx), {})[name] = value
    save_file(tensors, str(file), metadata={"miro": json.dumps({"param_groups": sd["param_groups"], "state": other})})


def _load_optimizer(optimizer: torch.optim.Optimizer, file: Path) -> None:
    tensors, meta = load_file(file), _metadata(file)
    state: dict[int, dict[str, Any]] = {int(i): dict(v) for i, v in meta["state"].items()}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
              for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _agree(accelerator: Accelerator, error: str | None) -> str | None:
    """Every rank learns whether any rank failed (so none waits forever for the others)."""
    if accelerator.num_processes == 1:
        return error
    errors = [e for e in gather_object([error]) if e]
    return errors[0] if errors else None


def save_checkpoint(accelerator: Accelerator, folder: Path, step: int, state: dict, total_limit: int | None, *,
                    model: torch.nn.Module, optimizer: torch.optim.Optimizer, ema: Any) -> Path:
    """Every rank calls this; the main process writes the shared files, the manifest, renames and prunes.
    A failed write (full disk, read-only folder) removes the temporary folder and raises ``OutputError``."""
    main, rank = accelerator.is_main_process, accelerator.process_index
    final, tmp = folder / f"checkpoint-{step}", folder / f"checkpoint-{step}.tmp"
    writer, error = None, None

    def attempt(fn) -> None:
        nonlocal error
        if error is None:
            try:
                fn()
            except OSError as err:
                error = str(OutputError.from_os(err, f"checkpoint {final}"))

    try:
        if main:
            def start():
                nonlocal writer
                folder.mkdir(parents=True, exist_ok=True)
                writer = atomic_path(final, directory=True, tmp=tmp)
            attempt(start)
        error = _agree(accelerator, error)
        if error is None:
            def write_rank():
                tensors, meta = _rng_state()
                save_file(tensors, str(tmp / rng_file(rank)), metadata={"miro": json.dumps(meta)})
            attempt(write_rank)
            if main:
                def write_shared():
                    save_model(accelerator.unwrap_model(model), str(tmp / MODEL_FILE))
                    _save_optimizer(optimizer, tmp / OPTIMIZER_FILE)
                    ema_meta = {"decay": ema.decay, "warmup": ema.warmup, "num_updates": ema.num_updates}
                    save_model(ema.model, str(tmp / EMA_FILE), metadata={"miro": json.dumps(ema_meta)})
                    if accelerator.scaler is not None:
                        atomic_write_json(tmp / SCALER_FILE, accelerator.scaler.state_dict())
                    atomic_write_json(tmp / STATE_FILE, {**state, "step": step}, indent=1)
                attempt(write_shared)
            error = _agree(accelerator, error)
    except BaseException:  # interrupted (Ctrl-C, a failing rank): no temporary folder is left behind
        if main and writer is not None:
            writer.discard()
        raise
    if main and error is None:
        def finish():
            files = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(tmp.iterdir()) if p.is_file()}
            atomic_write_json(tmp / MANIFEST, {"format": FORMAT, "step": step, "files": files}, indent=1)
            writer.commit()
        attempt(finish)
    if main and error is not None and writer is not None:
        writer.discard()
    error = _agree(accelerator, error)
    if error is not None:
        complete = list_checkpoints(folder)
        last = f"the last complete one is {complete[-1][1].name}" if complete else "no complete checkpoint yet"
        raise OutputError(f"{error} ({last}; resume=latest continues from it)")
    if main and total_limit:
        for _, old in list_checkpoints(folder)[:-total_limit]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


# ------------------------------------------------------------------------------------------------ reading
def read_state(path: Path) -> dict:
    """``train_state.json`` of a checkpoint (step, samples seen, ..., the config it was trained with)."""
    try:
        return json.loads((path / STATE_FILE).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path / STATE_FILE}: unreadable ({err})") from None


def load_checkpoint(accelerator: Accelerator, path: Path, *, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, ema: Any) -> dict:
    """Load a verified checkpoint (``resolve_resume``) into the prepared model, optimizer and EMA, and this
    rank's RNG states; returns ``train_state.json``.  Raises ``CheckpointError`` naming the file that
    does not load or does not fit the configured model."""
    device = str(accelerator.device)

    def step(name: str, fn) -> Any:
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - whatever a foreign file raises, name the file
            first = (str(err).strip().splitlines() or [""])[0][:300]
            raise CheckpointError(f"{path / name}: cannot be loaded into this run ({type(err).__name__}: {first}); "
                                  "resume with the settings it was written with, or use a new output_dir") from None

    state = read_state(path)
    step(MODEL_FILE, lambda: load_model(accelerator.unwrap_model(model), str(path / MODEL_FILE), device=device))
    step(OPTIMIZER_FILE, lambda: _load_optimizer(optimizer, path / OPTIMIZER_FILE))

    def load_ema():
        meta = _metadata(path / EMA_FILE)
        load_model(ema.model, str(path / EMA_FILE), device=device)
        ema.decay, ema.warmup, ema.num_updates = meta["decay"], meta["warmup"], meta["num_updates"]
    step(EMA_FILE, load_ema)
    if accelerator.scaler is not None and (path / SCALER_FILE).is_file():
        step(SCALER_FILE, lambda: accelerator.scaler.load_state_dict(json.loads((path / SCALER_FILE).read_text())))
    rng = rng_file(accelerator.process_index)
    if (path / rng).is_file():
        step(rng, lambda: _set_rng_state(path / rng))
    return state
