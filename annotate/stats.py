"""Dataset-wide reward statistics, quantile bin edges, and per-sample buckets.

Binning rule ("mid-rank quantile edges").  Over the sample's finite values with distinct values u_1 < ... < u_K
and counts c_k, each distinct value gets its mid-rank percentile F_k = (c_1 + ... + c_{k-1} + c_k / 2) / N,
rescaled so that u_1 -> 0 and u_K -> 1: p_k = (F_k - F_1) / (F_K - F_1), and its bucket is
b_k = min(floor(p_k * B), B - 1).  The B + 1 stored edges are e_0 = u_1, e_B = u_K and, for b = 1..B-1, the
midpoint between the last value below bucket b and the first value at or above it, so that
``bucketize(v) = searchsorted(edges[1:-1], v, side='right')`` (clipped to 0..B-1, -1 for NaN) reproduces b_k.

- Continuous scores (all distinct): p_k = (k - 1) / (N - 1), i.e. the usual B equal-count quantile bins.
- Ties are never split: all samples with one value share one bucket, placed at the centre of the value's mass.
- Discrete rewards keep the full range and stay balanced by mass: a binary reward maps to {0, B-1}; ten equally
  frequent values map to 10 evenly spaced buckets holding 10 % each; a value holding 80 % of the data sits at
  bucket 0 and the rest spread over the range by their percentiles.  MIRO's own code takes quantiles of the unique
  values (``torch.quantile(torch.unique(v))``), which ignores how many samples share a value; the two rules agree
  on continuous scores.
- A constant reward puts every sample in bucket B-1; values outside [e_0, e_B] (new data) go to 0 or B-1.

The network is fed ``bucket / (B - 1)`` in [0, 1]; bucket -1 (NaN score) means "unknown" (the reward's null
embedding).  Edges come from the whole set when it has at most ``max_samples`` rows, else from a uniform sample of
``max_samples`` rows drawn without replacement with ``numpy.random.default_rng(seed)`` over the rows of all
sidecars concatenated in shard order; count, mean, std (population), min and max are always over every row.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from annotate.scorers.registry import comparable_settings
from miro.contracts import sidecar
from miro.contracts.buckets import FORMAT_VERSION, STATS_FILE, RewardStats, load_reward_stats
from miro.contracts.rewards import ScaleError, describe_scale, scale_of
from miro.contracts.shards import find_shards
from miro.utils.atomic import atomic_write_json
from miro.utils.storage import OutputError, check_writable_all

log = logging.getLogger("annotate.stats")

BINNING_RULE = "mid-rank quantile edges, ties never split (annotate/stats.py, docs/annotate.md)"


class StatsError(ValueError):
    """The sidecars cannot give statistics (missing rewards, mixed settings, sidecars that do not cover their shards)."""


# --- the binning rule ------------------------------------------------------------------------------------------
def quantile_edges(values: np.ndarray, num_bins: int) -> np.ndarray:
    """B + 1 non-decreasing edges from the finite ``values`` by the mid-rank rule (module docstring)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError("no finite values to take quantiles of")
    u, counts = np.unique(v, return_counts=True)
    if u.size == 1:
        return np.full(num_bins + 1, u[0])
    cum = np.cumsum(counts)
    mid = (cum - counts / 2.0) / cum[-1]
    p = (mid - mid[0]) / (mid[-1] - mid[0])
    bucket = np.minimum(np.floor(p * num_bins).astype(np.int64), num_bins - 1)
    k = np.searchsorted(bucket, np.arange(1, num_bins), side="left")  # first value in bucket >= b; k >= 1
    lo, hi = u[k - 1], u[k]
    half = lo + (hi - lo) / 2.0
    edges = np.empty(num_bins + 1)
    edges[0], edges[-1] = u[0], u[-1]
    edges[1:-1] = np.where(half > lo, half, hi)  # adjacent floats: the midpoint may round down onto lo
    return edges


# --- streaming moments --------------------------------------------------------------------------------------------
@dataclass
class Moments:
    """Count, mean, M2 (Chan et al.'s parallel update), min, max and NaN count of a stream of chunks."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = float("inf")
    max: float = float("-inf")
    nan_count: int = 0

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        self.nan_count += int(np.isnan(x).sum())
        x = x[~np.isnan(x)]
        if x.size == 0:
            return
        n, mean = x.size, float(x.mean())
        m2 = float(((x - mean) ** 2).sum())
        delta, tot = mean - self.mean, self.count + n
        self.mean += delta * n / tot
        self.m2 += m2 + delta * delta * self.count * n / tot
        self.count = tot
        self.min, self.max = min(self.min, float(x.min())), max(self.max, float(x.max()))

    def summary(self) -> dict:
        ok = self.count > 0
        return {
            "count": self.count,
            "nan_count": self.nan_count,
            "mean": self.mean if ok else None,
            "std": float(np.sqrt(self.m2 / self.count)) if ok else None,
            "min": self.min if ok else None,
            "max": self.max if ok else None,
        }


# --- reading stats and buckets (what training imports) ---------------------------------------------------------
# --- the stats stage ----------------------------------------------------------------------------------------------
def _identity(prov: dict) -> str:
    """What must agree across shards for scores to be comparable: model, version, weight hashes, scoring config."""
    cfg = comparable_settings(prov.get("config"))
    ident = {"model": prov.get("model"), "version": prov.get("version"), "sha256": sorted(w.get("sha256", "") for w in prov.get("weights", [])), "config": cfg}
    return json.dumps(ident, sort_keys=True, default=str)


def _write_json_atomic(path: Path, obj: dict) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(path, obj, indent=1)


def compute_stats(
    sidecars: list[Path],
    rewards: list[str] | None = None,
    num_bins: int = 64,
    max_samples: int | None = 1_000_000,
    seed: int = 0,
) -> dict:
    """The ``reward_stats.json`` content for these rewards sidecars (read twice, column by column; nothing held)."""
    if not sidecars:
        raise ValueError("no sidecars to compute statistics from")
    columns = [set(sidecar.reward_columns(p)) for p in sidecars]
    common = set.intersection(*columns)
    if rewards is None:
        rewards = sorted(common)
    lacking = {r: [str(p) for p, c in zip(sidecars, columns) if r not in c] for r in rewards}
    lacking = {r: ps for r, ps in lacking.items() if ps}
    if lacking:
        detail = "; ".join(f"{r}: {len(ps)} sidecars, e.g. {ps[:3]}" for r, ps in lacking.items())
        raise StatsError(f"some sidecars lack requested rewards (run the score stage for them): {detail}")
    if not rewards:
        raise StatsError("the sidecars have no reward column in common")
    rows = [pq.ParquetFile(p).metadata.num_rows for p in sidecars]
    short = []
    for p, n in zip(sidecars, rows):
        recorded = (sidecar.read_meta(p).get("report") or {}).get("samples")
        if recorded is not None and recorded != n:
            short.append(f"{p} ({n} rows, {recorded} recorded)")
    if short:
        raise StatsError(f"{len(short)} sidecar(s) hold fewer or more rows than they record, e.g. {short[:3]}; "
                         "run the score stage again (it rescores sidecars that do not cover their shard)")
    total = int(sum(rows))
    if max_samples is None or total <= max_samples:
        pick, sample = None, {"method": "all", "size": total, "population": total}
    else:
        pick = np.sort(np.random.default_rng(seed).choice(total, size=max_samples, replace=False))
        sample = {"method": "uniform_without_replacement", "size": int(max_samples), "population": total, "seed": seed, "rng": "numpy.random.default_rng(seed).choice(population, size, replace=False) over rows in shard order"}
    moments = {r: Moments() for r in rewards}
    picked: dict[str, list[np.ndarray]] = {r: [] for r in rewards}
    variants: dict[str, dict[str, list[str]]] = {r: {} for r in rewards}
    scales: dict[str, dict[tuple[float, float], tuple[dict, list[str]]]] = {r: {} for r in rewards}
    provenance: dict[str, dict] = {}
    tar_errors = []
    offset = 0
    for path, n in zip(sidecars, rows):
        table, meta = sidecar.read_rewards(path, rewards)
        if (meta.get("report") or {}).get("tar_error"):
            tar_errors.append(str(path))
        sel = None if pick is None else pick[(pick >= offset) & (pick < offset + n)] - offset
        for r in rewards:
            col = table.column(r).to_numpy(zero_copy_only=False).astype(np.float64)
            moments[r].add(col)
            picked[r].append(col if sel is None else col[sel])
            prov = (meta.get("rewards") or {}).get(r, {})
            variants[r].setdefault(_identity(prov), []).append(str(path))
            rec = scale_of(prov.get("scale"))
            scales[r].setdefault((rec["offset"], rec["divisor"]), (rec, []))[1].append(str(path))
            provenance.setdefault(r, prov)
        offset += n
    out_rewards = {}
    for r in rewards:
        if len(scales[r]) > 1:  # checked first: a scale mix has an exact fix, other mixes need rescoring
            groups = [f"{describe_scale(rec)} in {len(ps)} sidecars, e.g. {ps[0]}" for rec, ps in scales[r].values()]
            raise ScaleError(f"reward {r!r} is stored on different scales across sidecars ({'; '.join(groups)}); its "
                             "quantiles would mix them. Convert them to one with `python -m annotate stage=rescale "
                             "scale=raw|authors data.shards=...` (exact, no rescoring)")
        if len(variants[r]) > 1:
            groups = [f"{len(ps)} sidecars like {ps[0]}" for ps in variants[r].values()]
            raise StatsError(f"reward {r!r} was scored with different models or settings across shards ({'; '.join(groups)}); rescore so they agree")
        values = np.concatenate(picked[r]) if picked[r] else np.zeros(0)
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            raise StatsError(f"reward {r!r}: no finite score in the sample; nothing to bin")
        edges = quantile_edges(finite, num_bins)
        out_rewards[r] = {"edges": edges.tolist(), **moments[r].summary(), "unique_in_sample": int(np.unique(finite).size), "sample_count": int(finite.size), "scale": next(iter(scales[r].values()))[0], "provenance": provenance[r]}
    return {
        "format": FORMAT_VERSION,
        "num_bins": num_bins,
        "binning": BINNING_RULE,
        "sample": sample,
        "shards": len(sidecars),
        "shards_with_tar_errors": tar_errors,
        "rewards": out_rewards,
    }


def write_buckets(rewards_file: Path, stats: RewardStats, overwrite: bool = False) -> Path | None:
    """``NAME-NNNNNN.buckets.parquet`` beside the rewards sidecar (skipped when already made from these stats)."""
    out = sidecar.buckets_path(rewards_file)
    if out.exists() and not overwrite:
        try:
            if sidecar.read_meta(out).get("stats_sha256") == stats.sha256:
                return None
        except Exception:  # noqa: BLE001 - unreadable: rewrite
            pass
    table, _ = sidecar.read_rewards(rewards_file, stats.names)
    cols = {"key": table.column("key")}
    for r in stats.names:
        cols[r] = pa.array(stats.bucketize(r, table.column(r).to_numpy(zero_copy_only=False)), pa.int16())
    meta = {"num_bins": stats.num_bins, "stats_sha256": stats.sha256, "stats_file": str(stats.path), "rewards": stats.names}
    return sidecar.write_parquet_atomic(out, pa.table(cols), meta)


def _not_covering(shards: list[Path], paths: list[Path]) -> list[str]:
    """Sidecars whose row count differs from their shard's sample count (read from the tar headers).  A shard
    whose tar cannot be read to its end (or whose sidecar records a tar error) is not judged here."""
    from miro.data.shards import tar_keys

    out = []
    for s, p in zip(shards, paths):
        if not p.exists():
            continue
        keys, damaged = tar_keys(s)
        rows = sidecar.num_rows(p)
        if not damaged and not (sidecar.read_meta(p).get("report") or {}).get("tar_error") and rows != len(keys):
            out.append(f"{p} has {rows} rows for the {len(keys)} samples of {s.name}")
    return out


def dataset_sidecars(cfg, stage: str) -> tuple[list[Path], Path, list[Path]] | None:
    """(shards, root, their rewards sidecar paths) of ``cfg.data.shards`` for a stage that reads only sidecars and
    runs in one process (rank 0); None on the other ranks of a multi-process launch."""
    from annotate.job import process_rank

    rank, world, _ = process_rank()
    if rank != 0:
        log.info("%s runs in one process; rank %d/%d has nothing to do", stage, rank, world)
        return None
    shards, root = find_shards(cfg.data.shards, cfg.data.root)
    return shards, root, [sidecar.rewards_path(s, cfg.out_dir, root) for s in shards]


def run_stats(cfg) -> dict:
    """The stats stage of ``python -m annotate stage=stats`` (``cfg`` an ``AnnotateConfig``)."""
    found = dataset_sidecars(cfg, "stats")
    if found is None:
        return {}
    shards, root, paths = found
    missing = [str(s) for s, p in zip(shards, paths) if not p.exists()]
    if missing and not cfg.stats.allow_missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(shards)} shards have no rewards sidecar (run the score stage, or stats.allow_missing=true): "
            + ", ".join(missing[:20])
            + (" ..." if len(missing) > 20 else "")
        )
    present = [p for p in paths if p.exists()]
    bad = _not_covering(shards, paths)
    if bad:
        raise StatsError(
            f"{len(bad)} sidecar(s) do not cover their shard, so statistics would leave data out: {'; '.join(bad[:5])}"
            + (" ..." if len(bad) > 5 else "") + "; run the score stage again (it rescores them)"
        )
    st = cfg.stats
    stats_path = Path(cfg.out_dir if cfg.out_dir is not None else root) / STATS_FILE
    check_writable_all([stats_path.parent, *((p.parent for p in present) if st.buckets else ())], "stats output folder")
    obj = compute_stats(present, st.rewards, st.num_bins, st.max_samples, st.seed)
    obj["missing_shards"] = missing
    try:
        _write_json_atomic(stats_path, obj)
    except OSError as err:
        raise OutputError(f"{stats_path} could not be written ({err.strerror or err}); nothing was changed") from None
    stats = load_reward_stats(stats_path)
    log.info("wrote %s: %d rewards, %d bins, sample %s", stats_path, len(stats.names), stats.num_bins, obj["sample"]["method"])
    for r, d in obj["rewards"].items():
        log.info("  %-13s count %d  NaN %d  mean %.4g  std %.4g  [%.4g, %.4g]", r, d["count"], d["nan_count"], d["mean"], d["std"], d["min"], d["max"])
    written = 0
    if st.buckets:
        for p in present:
            try:
                written += write_buckets(p, stats) is not None
            except OSError as err:
                raise OutputError(f"{sidecar.buckets_path(p)} could not be written ({err.strerror or err}); "
                                  f"{written} bucket files written, rerun to finish") from None
        log.info("bucket files written: %d (%d already up to date)", written, len(present) - written)
    return {"stats_file": str(stats_path), "buckets_written": written, "missing_shards": missing}
