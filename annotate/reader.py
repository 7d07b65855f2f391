"""Streaming shards into scorer-ready batches inside DataLoader workers.

Each worker reads tar members, decodes images and captions (``miro.data.images``), runs every scorer's
preprocessor and collates, so the main process only runs forwards.  A shard's samples are cut into consecutive
chunks of ``batch_size``; that cut depends on the shard alone (not on the number of workers, nor on which shards
were already done), so a resumed job computes bit-identical batches and sidecars.  Chunks go to workers either
shard by shard (many shards) or chunk by chunk within a shard (few shards: every worker reads the tar, each
decodes its own chunks).  After its last chunk of a shard a worker emits an end marker with the sample count and
any tar error; the main process knows a shard is complete when all expected end markers have arrived.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from annotate.scorers.base import Preprocessor, default_collate
from miro.data.images import BadCaption, BadImage, decode_image, decode_text, has_alpha, image_member
from miro.data.shards import ShardError, iter_shard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepSpec:
    """What a worker needs of one scorer: its picklable preprocessor and whether it scores caption-less samples."""

    name: str
    prep: Preprocessor
    image_only_outputs: bool


ALPHA = "alpha"  # a status reason that explains no NaN: the image had transparency, each scorer did its own rule


def decode_sample(members: dict[str, bytes], max_pixels: int):
    """(image as opened or None, caption or None, reasons).

    The image keeps its own mode (``decode_image(keep_mode=True)``): each scorer's preprocessor applies its
    official package's order of operations to it (docs/annotate.md).  An image with transparency adds the reason
    ``alpha``.  An empty caption is scored as ``""``, as the official scorers do, and keeps its reason
    ``empty_caption``; a missing or undecodable caption is ``None`` (no text score)."""
    reasons: list[str] = []
    image = None
    try:
        image = decode_image(image_member(members), max_pixels=max_pixels, keep_mode=True)
        if has_alpha(image):
            reasons.append(ALPHA)
    except BadImage as err:
        reasons.append(err.reason)
    try:
        caption = decode_text(members.get("txt"))
    except BadCaption as err:
        caption = "" if err.reason == "empty_caption" else None
        reasons.append(err.reason)
    return image, caption, reasons


def worker_init(_worker_id: int) -> None:
    """One thread per worker in every native pool: torch limits its own, but numpy's BLAS (used by the image
    statistics and the shapes detector) would start one thread per core in each worker and oversubscribe."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def missing_end_marker(shard: Path) -> str | None:
    """A tar cut at a member boundary reads as a shorter valid archive; its missing end-of-archive blocks tell."""
    size = shard.stat().st_size
    with open(shard, "rb") as f:
        f.seek(max(0, size - 1024))
        tail = f.read()
    if size < 1024 or tail.count(0) != len(tail):
        return f"{shard}: no end-of-archive blocks; the tar is truncated (the samples read before the end are kept)"
    return None


class ShardBatches(IterableDataset):
    """Yields ``{"kind": "batch", ...}`` chunks and ``{"kind": "end", ...}`` markers for ``shards`` in order."""

    def __init__(self, shards: Sequence[Path], specs: Sequence[PrepSpec], batch_size: int, max_pixels: int, num_workers: int):
        self.shards, self.specs = [Path(s) for s in shards], list(specs)
        self.batch_size, self.max_pixels = batch_size, max_pixels
        # few shards: split each shard's chunks across workers; many: one worker per shard (each tar read once)
        self.split_within = len(self.shards) < 2 * max(1, num_workers)

    def _worker(self) -> tuple[int, int]:
        info = get_worker_info()
        return (0, 1) if info is None else (info.id, info.num_workers)

    def __iter__(self) -> Iterator[dict]:
        w, nw = self._worker()
        for si, shard in enumerate(self.shards):
            if not self.split_within and si % nw != w:
                continue
            ends = nw if self.split_within else 1
            yield from self._shard(si, shard, w, nw, ends)

    def _shard(self, si: int, shard: Path, w: int, nw: int, ends: int) -> Iterator[dict]:
        chunk: list[tuple[int, str, dict]] = []
        count, error = 0, None
        skipped: list[list[str]] = []  # [member, reason]: tar members that belong to no sample
        try:
            for index, (key, members) in enumerate(iter_shard(shard, on_skip=lambda m, r: skipped.append([m, r]))):
                count = index + 1
                mine = not self.split_within or (index // self.batch_size) % nw == w
                if mine:
                    chunk.append((index, key, members))
                if (index + 1) % self.batch_size == 0:
                    if chunk:
                        yield self._batch(si, chunk)
                    chunk = []
        except ShardError as err:
            error = str(err)
        except Exception as err:  # noqa: BLE001 - a broken member name etc.: report the shard, keep going
            error = f"{type(err).__name__}: {err}"
        else:
            error = missing_end_marker(shard)
        if chunk:
            yield self._batch(si, chunk)
        yield {"kind": "end", "shard": si, "count": count, "error": error, "ends": ends, "skipped_members": skipped}

    def _batch(self, si: int, chunk: list[tuple[int, str, dict]]) -> dict:
        keys, index, status = [], [], []
        per_spec: dict[str, tuple[list[int], list]] = {s.name: ([], []) for s in self.specs}
        for row, (i, key, members) in enumerate(chunk):
            image, caption, reasons = decode_sample(members, self.max_pixels)
            if image is not None:
                for spec in self.specs:
                    if caption is None and not spec.image_only_outputs:
                        continue
                    try:
                        item = spec.prep(image, caption)
                    except Exception as err:  # noqa: BLE001 - one odd image must not stop the shard
                        log.warning("%s: preprocessing %s for %s failed: %s", self.shards[si].name, key, spec.name, err)
                        reasons.append(f"preprocess_error:{spec.name}")
                        continue
                    per_spec[spec.name][0].append(row)
                    per_spec[spec.name][1].append(item)
            keys.append(key)
            index.append(i)
            status.append(";".join(reasons) if reasons else "ok")
        inputs = {
            name: {"rows": torch.as_tensor(rows, dtype=torch.long), "batch": default_collate(items)}
            for name, (rows, items) in per_spec.items()
            if rows
        }
        return {"kind": "batch", "shard": si, "index": np.asarray(index, dtype=np.int64), "keys": keys, "status": status, "inputs": inputs}
