"""The scoring job: shards in, one ``NAME-NNNNNN.rewards.parquet`` per shard out.

Shards are split across processes by ``RANK``/``WORLD_SIZE`` (torchrun, accelerate launch; ``SLURM_PROCID`` /
``SLURM_NTASKS`` under srun) and across array jobs by ``shard_range`` or ``array_index``/``array_count``; no
process group is needed.  A shard whose sidecar already holds every requested reward is skipped, one that holds
some gets only the missing columns, so a killed job resumes and a reward can be added later.  Memory is bounded
by one shard's scores plus the DataLoader's prefetch: the dataset is streamed, never held.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from annotate.config import AnnotateConfig
from annotate.reader import PrepSpec, ShardBatches, worker_init
from annotate.scorers.base import Scorer
from annotate.scorers.registry import build_scorers, comparable_settings, reward_settings
from miro.contracts import sidecar
from miro.contracts.rewards import ScaleError, convert_scale, describe_scale, same_scale, scale_record
from miro.contracts.shards import find_shards
from miro.data.shards import tar_keys
from miro.utils.device import DTYPES, resolve_device
from miro.utils.storage import OutputError, check_writable_all, disk_full

log = logging.getLogger("annotate")

IMAGE_REASONS = ("missing_image", "empty", "not_an_image", "too_large", "truncated", "decode_error")


def process_rank() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun / accelerate, or srun, else (0, 1, 0)."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
    return 0, 1, 0


def select_shards(
    shards: list[Path],
    shard_range: str | None = None,
    array_index: int | None = None,
    array_count: int | None = None,
    rank: int = 0,
    world: int = 1,
) -> list[Path]:
    """This process's shards: the ``shard_range`` slice, then every ``array_count``-th, then every ``world``-th."""
    out = list(shards)
    if shard_range:
        a, b = (int(x) if x.strip() else None for x in shard_range.split(":"))
        out = out[a:b]
    if array_count:
        out = out[array_index::array_count]
    return out[rank::world]




@dataclass
class ShardPlan:
    shard: Path
    sidecar: Path
    missing: tuple[str, ...]
    keep_existing: bool  # merge the new columns into the existing sidecar


def plan_shard(shard: Path, path: Path, rewards: list[str], overwrite: bool, settings: dict[str, dict] | None = None,
               scale: str = "raw") -> ShardPlan | None:
    """What is left to compute for one shard (None: its sidecar is complete).  A reward present in the sidecar
    but scored with other settings than ``settings[reward]`` (e.g. another HPS version) is scored again.  A
    sidecar that does not cover its shard (``incomplete_reason``) is never trusted: the shard is scored again.
    A requested reward stored on another ``scale`` is a ``ScaleError``: skipping would leave the old scale where
    the user asked for another, and rescoring would spend a model forward on what an affine map converts exactly."""
    if overwrite or not path.exists():
        return ShardPlan(shard, path, tuple(rewards), False)
    try:
        meta = sidecar.read_meta(path)
        present = set(sidecar.reward_columns(path))
        why = incomplete_reason(shard, path, meta)
    except Exception as err:  # noqa: BLE001 - an unreadable sidecar is rewritten, never trusted
        log.warning("%s: unreadable sidecar (%s); rescoring", path, err)
        return ShardPlan(shard, path, tuple(rewards), False)
    if why:
        log.warning("%s: %s; rescoring %s", path, why, shard.name)
        return ShardPlan(shard, path, tuple(rewards), False)
    recorded = meta.get("rewards") or {}
    for r in rewards:
        if r in present and not same_scale((recorded.get(r) or {}).get("scale"), want := scale_record(r, scale)):
            raise ScaleError(
                f"{path}: reward {r!r} is stored on the scale {describe_scale((recorded.get(r) or {}).get('scale'))} "
                f"but this job writes {describe_scale(want)} (scale={scale}); one sidecar column never mixes scales. "
                f"Convert the sidecars with `python -m annotate stage=rescale scale={scale} data.shards=...` (exact, no "
                "rescoring), or run with the scale they have")
    changed = [r for r in rewards if r in present and settings and r in settings and comparable_settings(recorded.get(r, {}).get("config")) != settings[r]]
    if changed:
        log.warning("%s: %s scored with other settings; scoring again", path.name, changed)
    missing = tuple(r for r in rewards if r not in present or r in changed)
    return ShardPlan(shard, path, missing, True) if missing else None


def incomplete_reason(shard: Path, path: Path, meta: dict) -> str | None:
    """Why the sidecar ``path`` does not cover ``shard`` (None: it does): the shard's size differs from the
    recorded one, the row count differs from the recorded sample count, or its keys are not the shard's keys
    in tar order (read from the tar headers; a shard whose tar error is recorded may cover only a prefix)."""
    if meta.get("shard_bytes") != shard.stat().st_size:
        return f"{shard.name} changed since the sidecar was written (size {meta.get('shard_bytes')} recorded, {shard.stat().st_size} now)"
    rows = sidecar.num_rows(path)
    report = meta.get("report") or {}
    if report.get("samples") != rows:
        return f"the sidecar holds {rows} rows but records {report.get('samples')} samples"
    keys = pq_keys(path)
    in_tar, damaged = tar_keys(shard)
    n = min(len(keys), len(in_tar))
    if keys == in_tar or ((report.get("tar_error") or damaged) and keys[:n] == in_tar[:n]):
        return None
    return f"its {len(keys)} keys are not the {len(in_tar)} keys of {shard.name}"


def pq_keys(path: Path) -> list[str]:
    return sidecar.read_rewards(path, [])[0].column("key").to_pylist()


@dataclass
class ShardState:
    index: list[np.ndarray] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    status: list[str] = field(default_factory=list)
    scores: dict[str, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=lambda: defaultdict(list))
    ends: int = 0
    count: int = 0
    error: str | None = None
    skipped_members: list = field(default_factory=list)


def _explained(status: str, reward: str, text_rewards: set[str]) -> bool:
    parts = status.split(";")
    if any(p in IMAGE_REASONS or p.startswith("preprocess_error") for p in parts):
        return True
    return reward in text_rewards and any(p in ("missing_caption", "caption_not_utf8", "empty_caption") for p in parts)


class ScoringPass:
    """Runs a set of scorers over shards that all miss the same rewards, writing each sidecar when complete."""

    def __init__(self, cfg: AnnotateConfig, scorers: list[Scorer], plans: list[ShardPlan], config_dict: dict, progress=None):
        self.cfg, self.plans, self.config_dict, self.progress = cfg, plans, config_dict, progress
        self.wanted = set(plans[0].missing)
        self.scorers = [s for s in scorers if self.wanted & set(s.outputs)]
        self.text_rewards = {o for s in self.scorers for o in s.text_outputs}
        self.provenance = {}
        self.scales = {o: scale_record(o, cfg.scale) for o in self.wanted}
        for s in self.scorers:
            for o in s.outputs:
                if o in self.wanted:
                    self.provenance[o] = {**s.output_provenance(o), "scale": self.scales[o]}
        self.states: dict[int, ShardState] = defaultdict(ShardState)
        self.written: list[Path] = []
        self.images = 0

    def run(self) -> list[Path]:
        specs = [PrepSpec(s.name, s.preprocessor(), bool(s.image_only_outputs)) for s in self.scorers]
        ds = ShardBatches([p.shard for p in self.plans], specs, self.cfg.batch_size, self.cfg.data.max_pixels, self.cfg.workers)
        loader = DataLoader(
            ds, batch_size=None, num_workers=self.cfg.workers, prefetch_factor=2 if self.cfg.workers else None, worker_init_fn=worker_init
        )
        by_name = {s.name: s for s in self.scorers}
        for item in loader:
            st = self.states[int(item["shard"])]
            if item["kind"] == "end":
                st.ends += 1
                st.count = max(st.count, int(item["count"]))
                st.error = st.error or item["error"]
                if not st.skipped_members:  # every worker reads the whole tar: one list suffices
                    st.skipped_members = list(item.get("skipped_members") or [])
                if st.ends == int(item["ends"]):
                    self._finish(int(item["shard"]))
                continue
            index = np.asarray(item["index"])
            st.index.append(index)
            st.keys += item["keys"]
            st.status += item["status"]
            for name, inp in item["inputs"].items():
                rows = inp["rows"].numpy()
                out = by_name[name].forward(inp["batch"])
                for o, vals in out.items():
                    if o in self.wanted:
                        st.scores[o].append((index[rows], vals))
            self.images += len(index)
            if self.progress is not None:
                self.progress.update(len(index))
        return self.written

    def _finish(self, si: int) -> None:
        plan, st = self.plans[si], self.states.pop(si)
        index = np.concatenate(st.index) if st.index else np.zeros(0, np.int64)
        order = np.argsort(index, kind="stable")
        n = len(index)
        if n != st.count or (n and not np.array_equal(index[order], np.arange(n))):
            raise RuntimeError(f"{plan.shard}: received {n} samples for {st.count} in the tar (internal error)")
        keys = [st.keys[i] for i in order]
        status = [st.status[i] for i in order]
        scores = {}
        for r in sorted(self.wanted):
            col = np.full(n, np.nan)
            for idx, vals in st.scores.get(r, []):
                col[idx] = vals
            scores[r] = col
        seen: set[str] = set()
        for i, k in enumerate(keys):  # a key twice in one tar: keep the first, report the rest
            if k in seen:
                status[i] = "duplicate_key" if status[i] == "ok" else status[i] + ";duplicate_key"
                for r in scores:
                    scores[r][i] = np.nan
            seen.add(k)
        for r, col in scores.items():
            for i in np.flatnonzero(np.isnan(col)):
                if not _explained(status[i], r, self.text_rewards) and "duplicate_key" not in status[i]:
                    status[i] = f"nan:{r}" if status[i] == "ok" else f"{status[i]};nan:{r}"
        scores = {r: convert_scale(col, None, self.scales[r]) for r, col in scores.items()}  # raw -> cfg.scale
        provenance = dict(self.provenance)
        if plan.keep_existing:
            keys, scores, status, provenance = self._merge(plan, keys, scores, status, provenance)
        counts = sidecar.status_counts(status)
        report = {"samples": len(keys), "status_counts": counts, "tar_error": st.error, "skipped_members": st.skipped_members}
        meta = {
            **sidecar.shard_identity(plan.shard),
            "shard_samples": st.count,
            "rewards": provenance,
            "config": self.config_dict,
            "report": report,
        }
        try:
            path = sidecar.write_rewards(plan.sidecar, keys, scores, status, meta)
        except OSError as err:  # disk full, quota, lost permission: nothing half-written is left (atomic)
            what = "disk full" if disk_full(err) else (err.strerror or type(err).__name__)
            raise OutputError(f"{plan.sidecar} could not be written ({what}); the {len(self.written)} sidecars written "
                              "before are complete, rerun the same command to resume") from None
        self.written.append(path)
        bad = {k: v for k, v in counts.items() if k != "ok"}
        rank, world, _ = process_rank()
        msg = f"rank {rank}/{world}: wrote {path} ({len(keys)} samples, {counts.get('ok', 0)} ok"
        msg += f", {bad})" if bad else ")"
        if st.skipped_members:
            msg += f"; {len(st.skipped_members)} tar member(s) without extension skipped: {[m for m, _ in st.skipped_members[:5]]}"
        if st.error:
            msg += f"; TAR ERROR after {st.count} samples: {st.error}"
        (log.warning if (bad or st.error or st.skipped_members) else log.info)(msg)
        if self.progress is not None:
            self.progress.set_postfix_str(f"shard {plan.shard.name} done", refresh=False)

    def _merge(self, plan: ShardPlan, keys, scores, status, provenance):
        old, meta = sidecar.read_rewards(plan.sidecar)
        old_keys = old.column("key").to_pylist()
        if old_keys != keys:
            log.warning("%s: keys differ from the existing sidecar; replacing it", plan.sidecar)
            return keys, scores, status, provenance
        merged = {c: old.column(c).to_numpy(zero_copy_only=False) for c in sidecar.reward_columns(plan.sidecar) if c not in scores}
        merged.update(scores)
        stale = {f"nan:{r}" for r in scores}  # reasons about the columns being replaced
        old_status = [";".join(p for p in a.split(";") if p not in stale) or "ok" for a in old.column("status").to_pylist()]
        status = [_union(a, b) for a, b in zip(old_status, status)]
        return keys, merged, status, {**meta.get("rewards", {}), **provenance}


def _union(a: str, b: str) -> str:
    parts = [p for p in dict.fromkeys(a.split(";") + b.split(";")) if p != "ok"]
    return ";".join(parts) if parts else "ok"


def run_scoring(cfg: AnnotateConfig, scorers: list[Scorer] | None = None, config_dict: dict | None = None) -> dict:
    """Score this process's shards; returns a summary (shards written / skipped, images, seconds)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenizers are used in forked workers
    rank, world, local_rank = process_rank()
    all_shards, root = find_shards(cfg.data.shards, cfg.data.root)
    mine = select_shards(all_shards, cfg.shard_range, cfg.array_index, cfg.array_count, rank, world)
    settings = {r: reward_settings(r, c) for r, c in cfg.rewards.items()}
    plans = [p for s in mine if (p := plan_shard(s, sidecar.rewards_path(s, cfg.out_dir, root), cfg.reward_names, cfg.overwrite, settings, cfg.scale))]
    summary = {"rank": rank, "world_size": world, "shards": len(mine), "skipped": len(mine) - len(plans), "written": [], "images": 0}
    where = f" (array {cfg.array_index}/{cfg.array_count})" if cfg.array_count else ""
    where += f" (shard_range {cfg.shard_range})" if cfg.shard_range else ""
    log.info("rank %d/%d%s: %d of %d shards, %d already complete", rank, world, where, len(mine), len(all_shards), summary["skipped"])
    if cfg.scale != "raw":
        kept = [r for r in cfg.reward_names if scale_record(r, cfg.scale)["name"] == "raw"]
        if kept:
            log.warning("scale=%s: %s have no such scale (not among the MIRO authors' rewards; their clip_score is our "
                        "jina_clip) and are written raw, as recorded in the sidecar", cfg.scale, kept)
    if not plans:
        return summary
    check_writable_all((p.sidecar.parent for p in plans), "sidecar folder")  # before any image is scored
    if scorers is None:
        needed = [r for r in cfg.reward_names if any(r in p.missing for p in plans)]
        device = torch.device(resolve_device(cfg.device, local_rank))
        scorers = build_scorers(needed, cfg.rewards, device, DTYPES[cfg.dtype])
    config_dict = config_dict if config_dict is not None else asdict(cfg)
    groups: dict[tuple[str, ...], list[ShardPlan]] = defaultdict(list)
    for p in plans:
        groups[p.missing].append(p)
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    with tqdm(unit="img", disable=not cfg.progress, desc=f"annotate r{rank}" if world > 1 else "annotate", dynamic_ncols=True) as bar:
        for group in groups.values():
            scoring = ScoringPass(cfg, scorers, group, config_dict, bar)
            summary["written"] += [str(p) for p in scoring.run()]
            summary["images"] += scoring.images
    summary["seconds"] = time.perf_counter() - t0
    log.info("rank %d/%d: %d images in %.1f s (%.1f img/s)", rank, world, summary["images"], summary["seconds"], summary["images"] / max(summary["seconds"], 1e-9))
    return summary
