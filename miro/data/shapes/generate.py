"""Writing a shapes world to disk: ``DIR/train/NAME-NNNNNN.tar``, ``DIR/heldout/``, ``DIR/world.json``.

Shard ``i`` holds samples ``i * shard_size ...`` and depends on nothing else, so shards are written in
parallel processes and a killed run resumes: complete shards (written atomically) are kept when
``world.json`` says they came from the same configuration.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import shutil
from pathlib import Path

from tqdm import tqdm

from miro.contracts.shards import shard_name
from miro.data.shapes.config import ShapesConfig
from miro.data.shapes.heldout import write_heldout
from miro.data.shapes.vocab import PALETTE
from miro.data.shapes.world import WORLD_VERSION, ShapesWorld
from miro.data.shards import ShardWriter
from miro.utils.atomic import atomic_write_text, stale_temps
from miro.utils.config import ConfigError
from miro.utils.storage import check_writable

_WORLD: ShapesWorld | None = None  # per worker process


def world_description(cfg: ShapesConfig) -> dict:
    """``world.json``: what generated the data (no paths, no times: same config, same file)."""
    n_shards = math.ceil(cfg.num_samples / cfg.shard_size)
    return {
        "generator": "miro.data.shapes",
        "version": WORLD_VERSION,
        "config": cfg.world_dict(),
        "palette": {c: list(PALETTE[c]) for c in cfg.scene.colors},
        "key": "sample index, zero-padded to 9 digits",
        "num_samples": cfg.num_samples,
        "shards": [f"train/{shard_name(cfg.name, i)}" for i in range(n_shards)],
        "heldout": "heldout/evaluation_metadata.jsonl",
    }


def _write_atomic(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def _init_worker(cfg: ShapesConfig) -> None:
    global _WORLD
    _WORLD = ShapesWorld(cfg)


def write_shard(world: ShapesWorld, index: int, train_dir: Path, on_sample=None) -> int:
    """Write shard ``index`` (samples ``index * shard_size`` onward); returns its sample count."""
    cfg = world.cfg
    start = index * cfg.shard_size
    stop = min(cfg.num_samples, start + cfg.shard_size)
    with ShardWriter(train_dir, cfg.name, maxcount=cfg.shard_size, start_index=index) as writer:
        for i in range(start, stop):
            sample = world.sample(i)
            writer.write(sample.key, sample.members())
            if on_sample is not None:
                on_sample()
    return stop - start


def _worker(args: tuple[int, str]) -> int:
    index, train_dir = args
    assert _WORLD is not None
    return write_shard(_WORLD, index, Path(train_dir))


def generate(cfg: ShapesConfig, progress: bool = True) -> dict:
    """Generate (or finish) the world described by ``cfg``; returns counts of what was written and kept."""
    out = Path(cfg.out)
    train, heldout = out / "train", out / "heldout"
    desc = world_description(cfg)
    meta_path = out / "world.json"
    if meta_path.exists():
        try:
            old = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            old = None
        if old is None or old.get("config") != desc["config"] or old.get("version") != WORLD_VERSION:
            if not cfg.overwrite:
                raise ConfigError(f"out={str(out)!r}: holds a shapes world made with another configuration; "
                                  "choose another directory or set overwrite=true to replace it")
            for d in (train, heldout):
                shutil.rmtree(d, ignore_errors=True)
    check_writable(out, "out")  # a read-only or unusable folder: one line before any work
    check_writable(train, "out/train")
    for stale in [*train.glob("*.tar.tmp"), *stale_temps(train, "*.tar")]:  # left by a killed run
        stale.unlink()
    _write_atomic(meta_path, json.dumps(desc, indent=1) + "\n")
    write_heldout(cfg, heldout)

    n_shards = len(desc["shards"])
    todo = [i for i in range(n_shards) if not (train / shard_name(cfg.name, i)).exists()]
    kept = n_shards - len(todo)
    total = sum(min(cfg.num_samples, (i + 1) * cfg.shard_size) - i * cfg.shard_size for i in todo)
    workers = cfg.workers or os.cpu_count() or 1
    workers = max(1, min(workers, len(todo)))
    with tqdm(total=total, unit="img", desc=f"shapes {cfg.resolution}px", disable=not progress) as bar:
        if workers == 1:
            world = ShapesWorld(cfg)
            for i in todo:
                write_shard(world, i, train, on_sample=lambda: bar.update(1))
        else:
            with mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn").Pool(
                workers, initializer=_init_worker, initargs=(cfg,)
            ) as pool:
                for n in pool.imap_unordered(_worker, [(i, str(train)) for i in todo]):
                    bar.update(n)
    return {"shards_written": len(todo), "shards_kept": kept, "samples_written": total, "out": str(out)}
