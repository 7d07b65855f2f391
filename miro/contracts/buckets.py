"""The reward statistics file, the bucket files and the bucket-to-value encoding (docs/contracts.md).

``reward_stats.json`` (at the annotation root) holds per reward the ``num_bins + 1`` bin edges with count,
mean, std and provenance; ``NAME-NNNNNN.buckets.parquet`` (beside each rewards sidecar) holds ``key`` and one
int16 bucket column per reward, -1 where the raw score is NaN.  How the edges are chosen is the annotation
stage's business (``annotate/stats.py``); how a raw score becomes a bucket and a bucket becomes the value the
network is fed is fixed here, once:

- ``bucketize(raw, edges) = searchsorted(edges[1:-1], raw, side="right")``, so buckets are 0..B-1 and a value
  outside the edges (new data) goes to 0 or B-1;
- the network is fed ``bucket / (B - 1)`` in [0, 1], and bucket -1 means "unknown": the reward's learned null
  embedding, never a magic number.  A reward target given at sampling time is on the same [0, 1] scale.

Re-binning (new ``num_bins``, new sample) rewrites only these files, never the raw scores.

Each reward's entry records the ``scale`` its edges, mean and std are on (``miro.contracts.rewards.scale_record``;
absent in files written before scales were recorded: raw).  The buckets do not depend on it (an increasing affine
map keeps every quantile), the edges and moments do: ``RewardStats.bucketize(name, values, scale=...)`` converts
values given on another scale, ``RewardStats.moments(name, scale)`` gives mean and std on the scale asked for.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from miro.contracts import sidecar
from miro.contracts.rewards import convert_scale, scale_of, scale_record

STATS_FILE = "reward_stats.json"
FORMAT_VERSION = 1


def bucketize(raw: np.ndarray, edges) -> np.ndarray:
    """int16 buckets 0..B-1 of raw scores (``B = len(edges) - 1``); -1 where the score is NaN."""
    edges = np.asarray(edges, dtype=np.float64)
    raw = np.asarray(raw, dtype=np.float64)
    b = np.searchsorted(edges[1:-1], raw, side="right")
    return np.where(np.isnan(raw), -1, b).astype(np.int16)


def bucket_values(buckets: np.ndarray, num_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """What the network is fed: (``bucket / (B - 1)`` as float32 with 0 where unknown, mask True where known)."""
    b = np.asarray(buckets)
    known = b >= 0
    return np.where(known, b / (num_bins - 1), 0.0).astype(np.float32), known


@dataclass
class RewardStats:
    num_bins: int
    rewards: dict[str, dict]
    path: Path | None = None
    sha256: str | None = None
    raw: dict = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.rewards)

    def edges(self, name: str) -> np.ndarray:
        return np.asarray(self.rewards[name]["edges"], dtype=np.float64)

    def scale(self, name: str) -> dict:
        """The recorded scale of reward ``name``'s edges and moments (raw when the file predates the record)."""
        return scale_of(self.rewards[name].get("scale"))

    def bucketize(self, name: str, raw: np.ndarray, scale: str | None = None) -> np.ndarray:
        """Buckets of ``raw``, given on the stats' own scale (None) or on ``scale`` ("raw" / "authors"),
        converted to the edges' scale first so that a score is never compared with edges on another scale."""
        if scale is not None:
            raw = convert_scale(raw, scale_record(name, scale), self.scale(name))
        return bucketize(raw, self.edges(name))

    def moments(self, name: str, scale: str = "raw") -> tuple[float, float]:
        """(mean, std) of reward ``name`` on ``scale``: what a z-score of a scorer's raw output needs whatever
        scale the sidecars were written on (std scales by the divisor, the offset cancels)."""
        entry, rec = self.rewards[name], self.scale(name)
        dst = scale_record(name, scale)
        mean = float(convert_scale(entry["mean"], rec, dst))
        return mean, float(entry["std"]) * rec["divisor"] / dst["divisor"]


class StatsFileError(ValueError):
    """``reward_stats.json`` is not valid: the message names the file and the key."""


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate_reward_stats(obj, p: Path) -> None:
    """Types and shapes of a parsed ``reward_stats.json``; ``StatsFileError`` naming the file and key."""
    def bad(key: str, value, want: str):
        shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
        raise StatsFileError(f"{p}: key {key!r} must be {want}, got {shown} ({type(value).__name__})")

    if not isinstance(obj, dict):
        bad("(top level)", obj, "a JSON object")
    if obj.get("format") != FORMAT_VERSION:
        raise StatsFileError(f"{p}: stats format {obj.get('format')!r}, expected {FORMAT_VERSION}")
    num_bins = obj.get("num_bins")
    if not isinstance(num_bins, int) or isinstance(num_bins, bool) or num_bins < 2:
        bad("num_bins", num_bins, "an integer >= 2")
    rewards = obj.get("rewards")
    if not isinstance(rewards, dict) or not rewards:
        bad("rewards", rewards, "an object with one entry per reward")
    for name, r in rewards.items():
        edges = r.get("edges") if isinstance(r, dict) else None
        if not isinstance(edges, list) or not all(_number(e) for e in edges):
            bad(f"rewards.{name}.edges", edges, "a list of numbers")
        if len(edges) != num_bins + 1:
            raise StatsFileError(f"{p}: key 'rewards.{name}.edges' has {len(edges)} edges for num_bins={num_bins} "
                                 f"(expected {num_bins + 1})")
        if any(b < a for a, b in zip(edges, edges[1:])) or not all(np.isfinite(edges)):
            raise StatsFileError(f"{p}: key 'rewards.{name}.edges' must be finite and non-decreasing")


def load_reward_stats(path: str | Path) -> RewardStats:
    """``reward_stats.json`` (a file, or the annotation folder holding it); ``StatsFileError`` (a ValueError)
    naming the file and the key when it is not valid JSON or a value has the wrong type or shape."""
    p = Path(path)
    if p.is_dir():
        p = p / STATS_FILE
    data = p.read_bytes()
    try:
        obj = json.loads(data)
    except ValueError as err:
        raise StatsFileError(f"{p}: not valid JSON ({err})") from None
    validate_reward_stats(obj, p)
    return RewardStats(int(obj["num_bins"]), obj["rewards"], p, hashlib.sha256(data).hexdigest(), obj)


def read_buckets(path: str | Path) -> tuple[list[str], dict[str, np.ndarray], dict]:
    """(keys, {reward: int16 buckets}, metadata) of a ``.buckets.parquet`` file."""
    t = pq.read_table(path)
    cols = {n: t.column(n).to_numpy() for n in t.column_names if n != "key"}
    return t.column("key").to_pylist(), cols, sidecar.read_meta(path)
