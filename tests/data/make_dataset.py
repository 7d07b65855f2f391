"""Tiny on-the-fly datasets for the pipeline, cache and training tests.

Shards are written with ``ShardWriter``; the annotation files with the annotation stage's own functions
(``miro.contracts.sidecar.write_rewards``, ``annotate.stats.compute_stats`` / ``write_buckets``), from raw scores
that are a deterministic function of the key (about one in nine NaN, i.e. bucket -1).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from annotate.stats import compute_stats, write_buckets
from miro.contracts.buckets import STATS_FILE, load_reward_stats, read_buckets
from miro.contracts.sidecar import rewards_path, write_rewards
from miro.data.shards import ShardWriter, tar_keys

REWARDS = ["sharpness", "contrast", "alignment"]
NUM_BINS = 8


def key_name(shard: int, i: int) -> str:
    return f"s{shard:03d}i{i:04d}"


def _unit(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 2**32


def image_bytes(key: str, size: int = 24, fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(int(_unit(key) * 2**31))
    arr = (rng.random((size, size + 8, 3)) * 255).astype(np.uint8)  # not square: exercises the crop
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt)
    return buf.getvalue()


def raw_score(key: str, reward: str) -> float:
    u = _unit(f"{key}/{reward}")
    return float("nan") if u < 1 / 9 else u


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


def write_reward_sidecar(shard: Path, rewards: list[str] = REWARDS, keys: list[str] | None = None,
                         out_dir: Path | None = None, root: Path | None = None) -> Path:
    keys = tar_keys(shard)[0] if keys is None else keys
    scores = {r: np.array([raw_score(k, r) for k in keys]) for r in rewards}
    return write_rewards(rewards_path(shard, out_dir, root), keys, scores, ["ok"] * len(keys), {})


def annotate(shards: list[Path], rewards: list[str] = REWARDS, out_dir: Path | None = None, root: Path | None = None,
             num_bins: int = NUM_BINS) -> Path:
    """Rewards sidecars, ``reward_stats.json`` (at ``out_dir``, else beside the shards) and buckets."""
    sidecars = [write_reward_sidecar(s, rewards, None, out_dir, root) for s in shards]
    stats_path = Path(out_dir or shards[0].parent) / STATS_FILE
    stats_path.write_text(json.dumps(compute_stats(sidecars, rewards, num_bins, None), indent=1))
    stats = load_reward_stats(stats_path)
    for p in sidecars:
        write_buckets(p, stats, overwrite=True)
    return stats_path


def rebucket_with_keys(shard: Path, keys: list[str], rewards: list[str] = REWARDS) -> None:
    """Rewrite one shard's sidecar + buckets for other keys (a sidecar of another version of the shard)."""
    write_buckets(write_reward_sidecar(shard, rewards, keys), load_reward_stats(shard.parent / STATS_FILE),
                  overwrite=True)


def expected_buckets(shard: Path) -> dict[str, dict[str, int]]:
    """{key: {reward: bucket}} as the annotation stage wrote them."""
    keys, cols, _ = read_buckets(shard.with_name(shard.name.replace(".tar", ".buckets.parquet")))
    return {k: {r: int(v[i]) for r, v in cols.items()} for i, k in enumerate(keys)}


def make_dataset(root: Path, n_shards: int = 4, per_shard: int = 10, rewards: list[str] = REWARDS,
                 corrupt: dict[str, str] | None = None) -> list[Path]:
    """Shards + annotations beside them under ``root``."""
    shards = write_shards(root, n_shards, per_shard, corrupt)
    annotate(shards, rewards)
    return shards
