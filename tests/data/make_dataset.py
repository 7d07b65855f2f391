"""Tiny on-the-fly datasets for the pipeline, cache and training tests (shards + buckets + stats).

The buckets and stats are written in the format of docs/contracts.md; values are a deterministic function
of the key, so a test can recompute what the join must return.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from miro.data.annotations import BUCKETS_SUFFIX, STATS_NAME, file_sha256
from miro.data.shards import ShardWriter, sidecar_path

REWARDS = ["sharpness", "contrast", "alignment"]
NUM_BINS = 8


def key_name(shard: int, i: int) -> str:
    return f"s{shard:03d}i{i:04d}"


def image_bytes(key: str, size: int = 24, fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))
    arr = (rng.random((size, size + 8, 3)) * 255).astype(np.uint8)  # not square: exercises the crop
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt)
    return buf.getvalue()


def bucket_of(key: str, reward: str) -> int:
    """Deterministic bucket in -1..NUM_BINS-1 (-1 = unknown for about one sample in nine)."""
    h = int(hashlib.sha256(f"{key}/{reward}".encode()).hexdigest()[:8], 16)
    return h % (NUM_BINS + 1) - 1


def write_shards(out: Path, n_shards: int = 4, per_shard: int = 10, corrupt: dict[str, str] | None = None,
                 name: str = "toy") -> list[Path]:
    """Shards ``name-00000k.tar``; ``corrupt`` maps keys to 'image' (garbage bytes) or 'caption' (empty)."""
    corrupt = corrupt or {}
    with ShardWriter(out, name, maxcount=per_shard) as w:
        for s in range(n_shards):
            for i in range(per_shard):
                key = key_name(s, i)
                img = b"not an image" if corrupt.get(key) == "image" else image_bytes(key)
                cap = "" if corrupt.get(key) == "caption" else f"a photo of {key}"
                w.write(key, {"png": img, "txt": cap, "json": json.dumps({"key": key})})
        return w.close()


def write_stats(root: Path, rewards: list[str] = REWARDS, num_bins: int = NUM_BINS) -> Path:
    stats = {"num_bins": num_bins,
             "rewards": {r: {"edges": list(np.linspace(0, 1, num_bins + 1)), "count": 1, "nan_count": 0,
                             "mean": 0.5, "std": 0.1, "min": 0.0, "max": 1.0} for r in rewards},
             "sample": {"kind": "all"}}
    path = root / STATS_NAME
    path.write_text(json.dumps(stats, indent=1))
    return path


def write_buckets(shard: Path, stats: Path, rewards: list[str] = REWARDS, keys: list[str] | None = None,
                  out_dir: Path | None = None, root: Path | None = None, num_bins: int = NUM_BINS) -> Path:
    if keys is None:
        from miro.data.pipeline import tar_keys

        keys = tar_keys(shard)[0]
    cols = {"key": pa.array(keys, pa.string())}
    for r in rewards:
        cols[r] = pa.array([bucket_of(k, r) for k in keys], pa.int16())
    meta = {"num_bins": num_bins, "stats_sha256": file_sha256(stats)}
    table = pa.table(cols).replace_schema_metadata({b"miro": json.dumps(meta).encode()})
    path = sidecar_path(shard, BUCKETS_SUFFIX, out_dir, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def make_dataset(root: Path, n_shards: int = 4, per_shard: int = 10, rewards: list[str] = REWARDS,
                 corrupt: dict[str, str] | None = None) -> list[Path]:
    """Shards + stats + buckets beside them under ``root``."""
    shards = write_shards(root, n_shards, per_shard, corrupt)
    stats = write_stats(root, rewards)
    for shard in shards:
        write_buckets(shard, stats, rewards)
    return shards
