"""Reading the annotation stage's outputs for training: ``reward_stats.json`` and ``*.buckets.parquet``.

Formats are in docs/contracts.md.  Training only needs, per shard, the key column and one int16 bucket
column per conditioned reward; the model is fed ``bucket / (num_bins - 1)`` and ``bucket == -1`` means
"unknown" (the reward's learned null).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

BUCKETS_SUFFIX = ".buckets.parquet"
STATS_NAME = "reward_stats.json"
META_KEY = b"miro"


class DataError(RuntimeError):
    """The dataset cannot be used for training as configured (missing or mismatched files)."""


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class RewardStats:
    path: Path
    sha256: str
    num_bins: int
    names: tuple[str, ...]


def read_reward_stats(path: str | Path) -> RewardStats:
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"reward statistics {path} not found: run the annotation stage (python -m annotate ...) "
            "or point data.stats at the file"
        )
    try:
        stats = json.loads(path.read_text())
        num_bins = int(stats["num_bins"])
        names = tuple(sorted(stats["rewards"]))
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a reward_stats.json ({type(err).__name__}: {err})") from None
    return RewardStats(path=path, sha256=file_sha256(path), num_bins=num_bins, names=names)


def buckets_metadata(path: str | Path) -> tuple[dict, list[str]]:
    """The ``miro`` metadata dict and the column names, without reading any rows."""
    schema = pq.read_schema(path)
    raw = (schema.metadata or {}).get(META_KEY)
    meta = json.loads(raw) if raw else {}
    return meta, list(schema.names)


def check_buckets_file(path: Path, stats: RewardStats, rewards: list[str]) -> None:
    """Raise ``DataError`` unless ``path`` exists, was binned with ``stats`` and holds every reward."""
    if not path.is_file():
        raise DataError(
            f"reward buckets {path} not found for shard {path.name[: -len(BUCKETS_SUFFIX)]}.tar: annotate "
            "that shard (python -m annotate ...) or set data.annotations to the annotation folder"
        )
    meta, columns = buckets_metadata(path)
    if meta.get("stats_sha256") != stats.sha256:
        raise DataError(
            f"{path} was binned with a different reward_stats.json (sha256 {meta.get('stats_sha256')}) "
            f"than {stats.path} (sha256 {stats.sha256}): re-run the bucketize step"
        )
    if int(meta.get("num_bins", -1)) != stats.num_bins:
        raise DataError(f"{path}: num_bins={meta.get('num_bins')} but {stats.path} has {stats.num_bins}")
    missing = [r for r in rewards if r not in columns]
    if missing or "key" not in columns:
        raise DataError(f"{path}: missing column(s) {missing or ['key']}; it has {columns}")


def read_buckets(path: Path, rewards: list[str]) -> tuple[list[str], np.ndarray]:
    """Keys and an int16 ``[N, R]`` bucket matrix in the order of ``rewards``."""
    table = pq.ParquetFile(path).read(columns=["key", *rewards])
    keys = table.column("key").to_pylist()
    if not rewards:
        return keys, np.zeros((len(keys), 0), np.int16)
    cols = [table.column(r).to_numpy(zero_copy_only=False).astype(np.int16) for r in rewards]
    return keys, np.stack(cols, axis=1)


def read_bucket_keys(path: Path) -> list[str]:
    return pq.ParquetFile(path).read(columns=["key"]).column("key").to_pylist()


def bucket_values(buckets: np.ndarray, num_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Reward values in [0, 1] (``bucket / (B - 1)``, 0 where unknown) and the known-mask (``bucket >= 0``)."""
    mask = buckets >= 0
    values = np.where(mask, buckets.astype(np.float32) / max(num_bins - 1, 1), 0.0).astype(np.float32)
    return values, mask
