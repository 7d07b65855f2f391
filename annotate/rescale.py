"""``python -m annotate stage=rescale scale=authors|raw``: convert existing rewards sidecars to another scale.

Why a stage of its own: the scales (``miro.contracts.rewards.SCALES``) differ by an affine map per reward, so a
sidecar written on one scale is converted exactly without opening a tar or running a model.  The score stage
refuses to add a column on another scale than the one a sidecar holds and the stats stage refuses a dataset whose
sidecars disagree; both name this stage as the fix.  Every file is rewritten atomically with its per-column scale
record updated, so a killed run leaves each sidecar on one scale or the other, and running it again finishes the
job (converted columns are left alone).
"""

from __future__ import annotations

import logging
from pathlib import Path

from miro.contracts import sidecar
from miro.contracts.buckets import STATS_FILE
from miro.contracts.rewards import REWARDS, ScaleError, convert_scale, same_scale, scale_record

log = logging.getLogger("annotate.rescale")


def rescale_sidecar(path: str | Path, scale: str) -> list[str]:
    """Rewrite the rewards sidecar ``path`` with every reward column on ``scale``; returns the columns whose
    values changed (a column whose scale only changes name, such as ``hpsv2`` raw -> authors, is relabelled)."""
    path = Path(path)
    table, meta = sidecar.read_rewards(path)
    records = dict(meta.get("rewards") or {})
    columns = sidecar.reward_columns(path)
    unknown = [c for c in columns if c not in REWARDS]
    if unknown:
        raise ScaleError(f"{path}: columns {unknown} are not rewards of this version, so their scale is unknown")
    scores, changed, relabelled = {}, [], False
    for c in columns:
        old = (records.get(c) or {}).get("scale")
        new = scale_record(c, scale)
        values = table.column(c).to_numpy(zero_copy_only=False)
        if not same_scale(old, new):
            values = convert_scale(values, old, new)
            changed.append(c)
        relabelled |= old != new
        scores[c] = values
        records[c] = {**(records.get(c) or {}), "scale": new}
    if changed or relabelled:
        rest = {k: v for k, v in meta.items() if k not in ("format", "rewards_in_file", "rewards")}
        sidecar.write_rewards(path, table.column("key").to_pylist(), scores, table.column("status").to_pylist(),
                              {**rest, "rewards": records})
    return changed


def run_rescale(cfg) -> dict:
    """The rescale stage (``cfg`` an ``AnnotateConfig``): every existing sidecar of ``data.shards`` to ``cfg.scale``."""
    from annotate.stats import dataset_sidecars

    found = dataset_sidecars(cfg, "rescale")
    if found is None:
        return {}
    shards, root, paths = found
    present = [p for p in paths if p.exists()]
    if not present:
        raise FileNotFoundError(f"no rewards sidecar for the {len(shards)} shards of {cfg.data.shards}: nothing to rescale")
    converted = {}
    for p in present:
        if changed := rescale_sidecar(p, cfg.scale):
            converted[str(p)] = changed
    log.info("scale=%s: %d of %d sidecars converted (%d shards without a sidecar)", cfg.scale, len(converted),
             len(present), len(paths) - len(present))
    stats_path = Path(cfg.out_dir if cfg.out_dir is not None else root) / STATS_FILE
    if converted and stats_path.exists():
        log.warning("%s describes the old scale (its edges, mean, std): run stage=stats again; the buckets do not "
                    "change, an increasing affine map keeps every quantile", stats_path)
    return {"converted": converted, "sidecars": len(present)}
