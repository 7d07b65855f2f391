"""What training needs from the annotation stage, and the checks that make a mismatch a clear error.

The formats and the one implementation of reading them are in the contract layer (``miro/contracts/buckets.py``,
``miro/contracts/sidecar.py``; docs/contracts.md): ``reward_stats.json`` and per shard a ``.buckets.parquet``
with ``key`` and one int16 bucket column per reward.  The model is fed ``bucket / (num_bins - 1)``;
``bucket == -1`` means "unknown" (the reward's learned null).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from miro.contracts.buckets import STATS_FILE, RewardStats, bucket_values, load_reward_stats
from miro.contracts.buckets import read_buckets as _read_buckets
from miro.contracts.sidecar import BUCKETS_SUFFIX, read_meta

__all__ = ["BUCKETS_SUFFIX", "STATS_FILE", "DataError", "RewardStats", "bucket_values", "check_buckets_file",
           "read_bucket_keys", "read_buckets", "read_reward_stats"]


class DataError(RuntimeError):
    """The dataset cannot be used for training as configured (missing or mismatched files)."""


def read_reward_stats(path: str | Path) -> RewardStats:
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"reward statistics {path} not found: run the annotation stage (python -m annotate ...) "
            "or point data.stats at the file"
        )
    try:
        return load_reward_stats(path)
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a usable reward_stats.json ({type(err).__name__}: {err})") from None


def check_buckets_file(path: Path, stats: RewardStats, rewards: list[str]) -> None:
    """Raise ``DataError`` unless ``path`` exists, was binned with ``stats`` and holds every reward."""
    if not path.is_file():
        raise DataError(
            f"reward buckets {path} not found for shard {path.name[: -len(BUCKETS_SUFFIX)]}.tar: annotate "
            "that shard (python -m annotate ...) or set data.annotations to the annotation folder"
        )
    meta, columns = read_meta(path), pq.read_schema(path).names
    if meta.get("stats_sha256") != stats.sha256:
        raise DataError(
            f"{path} was binned with a different reward_stats.json (sha256 {meta.get('stats_sha256')}) "
            f"than {stats.path} (sha256 {stats.sha256}): re-run the bucketize step (python -m annotate stage=stats)"
        )
    if int(meta.get("num_bins", -1)) != stats.num_bins:
        raise DataError(f"{path}: num_bins={meta.get('num_bins')} but {stats.path} has {stats.num_bins}")
    missing = [r for r in rewards if r not in columns]
    if missing or "key" not in columns:
        raise DataError(f"{path}: missing column(s) {missing or ['key']}; it has {columns}")


def read_buckets(path: Path, rewards: list[str]) -> tuple[list[str], np.ndarray]:
    """Keys and an int16 ``[N, R]`` bucket matrix in the order of ``rewards``."""
    keys, columns, _ = _read_buckets(path)
    if not rewards:
        return keys, np.zeros((len(keys), 0), np.int16)
    return keys, np.stack([columns[r].astype(np.int16) for r in rewards], axis=1)


def read_bucket_keys(path: Path) -> list[str]:
    return pq.ParquetFile(path).read(columns=["key"]).column("key").to_pylist()
