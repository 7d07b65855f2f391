"""Per-shard parquet sidecars: raw reward scores (``.rewards.parquet``) and buckets (``.buckets.parquet``).

Format (docs/contracts.md): column ``key`` (string), one float64 column per reward (raw, higher is better, NaN
where not scored), ``status`` (``ok`` or the reasons joined by ``;``); parquet key-value metadata ``miro`` holds
JSON (per-reward provenance, the job config, the shard report).  Files are written to a temporary name in the
same folder and renamed, so a sidecar is either complete or absent.

The shard a rewards sidecar was made from is recorded in its metadata (``shard_identity``): ``shard`` (file
name), ``shard_bytes``, ``shard_mtime_ns`` and ``shard_samples`` (samples read from the tar), and the report's
``samples`` (rows written).  A sidecar counts as complete for its shard only when the shard's size matches, its
row count equals the recorded ``samples`` and its keys are the shard's keys in tar order (annotate/job.py).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from miro.contracts.shards import sidecar_path
from miro.utils.atomic import atomic_path

REWARDS_SUFFIX = ".rewards.parquet"
BUCKETS_SUFFIX = ".buckets.parquet"
META_KEY = b"miro"
FORMAT_VERSION = 1
RESERVED = ("key", "status")


def rewards_path(shard: str | Path, out_dir: str | Path | None = None, root: str | Path | None = None) -> Path:
    return sidecar_path(shard, REWARDS_SUFFIX, out_dir, root)


def buckets_path(rewards_file: str | Path) -> Path:
    """The buckets file lives beside its rewards sidecar."""
    p = Path(rewards_file)
    return p.with_name(p.name[: -len(REWARDS_SUFFIX)] + BUCKETS_SUFFIX)


def shard_identity(shard: str | Path) -> dict:
    """What a sidecar records of its shard: ``shard``, ``shard_bytes``, ``shard_mtime_ns``."""
    st = Path(shard).stat()
    return {"shard": Path(shard).name, "shard_bytes": st.st_size, "shard_mtime_ns": st.st_mtime_ns}


def num_rows(path: str | Path) -> int:
    """Rows of a parquet sidecar (reads only the footer)."""
    return pq.ParquetFile(path).metadata.num_rows


def write_parquet_atomic(path: str | Path, table: pa.Table, meta: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(meta, sort_keys=True, default=str).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return path


def write_rewards(path: str | Path, keys: list[str], scores: dict[str, np.ndarray], status: list[str], meta: dict) -> Path:
    n = len(keys)
    if len(status) != n or any(len(v) != n for v in scores.values()):
        raise ValueError(f"{path}: {n} keys but columns of lengths {[len(v) for v in scores.values()]} / {len(status)} statuses")
    if clash := set(scores) & set(RESERVED):
        raise ValueError(f"reward names {sorted(clash)} clash with reserved columns {RESERVED}")
    cols = {"key": pa.array(keys, pa.string())}
    cols.update({name: pa.array(np.asarray(scores[name], dtype=np.float64), pa.float64()) for name in sorted(scores)})
    cols["status"] = pa.array(status, pa.string())
    meta = {"format": FORMAT_VERSION, **meta, "rewards_in_file": sorted(scores)}
    return write_parquet_atomic(path, pa.table(cols), meta)


def read_meta(path: str | Path) -> dict:
    """The ``miro`` metadata of a sidecar (reads only the footer)."""
    md = pq.read_schema(path).metadata or {}
    return json.loads(md[META_KEY]) if META_KEY in md else {}


def reward_columns(path: str | Path) -> list[str]:
    """Reward column names in a rewards sidecar (reads only the footer)."""
    return [n for n in pq.read_schema(path).names if n not in RESERVED]


def read_rewards(path: str | Path, rewards: list[str] | None = None) -> tuple[pa.Table, dict]:
    cols = None if rewards is None else ["key", *rewards, "status"]
    return pq.read_table(path, columns=cols), read_meta(path)


def status_counts(status: list[str]) -> dict[str, int]:
    """Samples per reason (a status ``a;b`` counts once for ``a`` and once for ``b``), plus ``ok``."""
    c: Counter[str] = Counter()
    for s in status:
        for part in s.split(";"):
            c[part] += 1
    return dict(sorted(c.items()))
