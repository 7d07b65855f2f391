"""The training data pipeline: WebDataset shards + reward buckets (+ the optional feature cache) -> batches.

Per DataLoader worker (open_clip-style, see docs/train.md):

    shard order            resampled with replacement, or shuffled epochs split by rank then by worker
    -> samples + join      the shard's ``.buckets.parquet`` rows by key (and its feature cache, if used)
    -> shuffle buffer      on undecoded bytes
    -> decode              image -> centre crop -> uint8; caption; corrupt samples counted and skipped
    -> batch               collated inside the worker (``DataLoader(batch_size=None)``)

Every random choice is seeded from ``(seed, segment, rank, worker)``.  A *segment* is the stretch of
training between two checkpoints: the loop restarts the stream at each checkpoint step with
``segment = step``, so a resumed run reads exactly what an uninterrupted run reads, without replaying
batches.  Batches come from workers round-robin, so the stream is deterministic for a given worker count.

Distributed: the pipeline splits shards by rank itself, so the loader must not be ``accelerator.prepare``d
(that would shard a second time or dispatch batches from rank 0).
"""

from __future__ import annotations

import copy
import logging
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from miro.contracts.shards import list_shards, shards_root, sidecar_path
from miro.data.annotations import (
    BUCKETS_SUFFIX,
    STATS_FILE,
    DataError,
    RewardStats,
    bucket_values,
    check_buckets_file,
    read_bucket_keys,
    read_buckets,
    read_reward_stats,
)
from miro.data.cache import CacheError, cache_path, check_identity, read_cache_metadata, read_shard_cache
from miro.data.images import BadCaption, BadImage, decode_sample
from miro.data.shards import ShardError, iter_shard, tar_keys
from miro.data.transforms import image_to_uint8, pad_text, trim_text, uint8_to_unit
from miro.utils.config import require, require_choice

log = logging.getLogger("miro.data")
SAMPLING = ("resampled", "epoch")


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (seed, segment, rank, worker, ...)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0] >> 1)


@dataclass
class DataConfig:
    """The ``data`` group of the training config (docs/train.md lists every key)."""

    shards: str = "???"  # a directory, a glob or a brace range NAME-{000000..000099}.tar
    root: str | None = None  # shard root for mirrored sidecar folders; default: ``shards`` or their common parent
    annotations: str | None = None  # folder mirroring the shard names with .buckets.parquet; None = beside shards
    stats: str | None = None  # reward_stats.json; default: <annotations or root>/reward_stats.json
    cache: bool = False  # read text embeddings + latents from the feature cache (python -m miro.train.cache)
    cache_dir: str | None = None  # where the cache files are (mirrors the shard names); None = beside shards
    resolution: int = 32
    num_workers: int = 2
    sampling: str = "resampled"  # resampled: shards drawn with replacement; epoch: shuffled passes split by rank
    shuffle_buffer: int = 1000
    shuffle_initial: int = 100
    hflip: bool = False  # off by default: captions mention left and right
    verify_keys: bool = True  # compare every shard's keys with its sidecars before training starts
    prefetch_factor: int = 2
    max_bad_in_a_row: int = 1000  # this many unusable samples in a row stop the job (the data is broken)

    def __post_init__(self):
        # "???" is OmegaConf's missing marker: to_typed then reports "data.shards" as a missing value
        require(self.shards != "", "data.shards", self.shards, "must name the training shards (dir, glob or brace range)")
        require(self.resolution >= 8, "data.resolution", self.resolution, "must be >= 8")
        require(self.num_workers >= 0, "data.num_workers", self.num_workers, "must be >= 0")
        require_choice("data.sampling", self.sampling, SAMPLING)
        require(self.shuffle_buffer >= 1, "data.shuffle_buffer", self.shuffle_buffer, "must be >= 1 (1 = no shuffle)")
        require(0 <= self.shuffle_initial <= self.shuffle_buffer, "data.shuffle_initial", self.shuffle_initial,
                f"must be in [0, shuffle_buffer={self.shuffle_buffer}]")
        require(not (self.hflip and self.cache), "data.hflip", self.hflip,
                "cannot be used with data.cache=true (the cache holds unflipped latents)")
        require(self.max_bad_in_a_row >= 1, "data.max_bad_in_a_row", self.max_bad_in_a_row, "must be >= 1")
        require(self.prefetch_factor >= 1, "data.prefetch_factor", self.prefetch_factor, "must be >= 1")


@dataclass
class DatasetInfo:
    """What the up-front check found; passed to every worker so none re-reads the metadata."""

    shards: list[Path]
    root: Path
    rewards: list[str]
    stats: RewardStats | None
    cache_identity: dict | None
    num_samples: int | None  # known when keys were verified or sidecars read
    bucket_paths: dict[Path, Path] = field(default_factory=dict)
    cache_paths: dict[Path, Path] = field(default_factory=dict)

    @property
    def num_bins(self) -> int:
        return self.stats.num_bins if self.stats else 0


# --------------------------------------------------------------------------------------------- checks


def _compare_keys(shard: Path, name_a: str, keys_a: list[str], name_b: str, keys_b: list[str], a_may_be_partial: bool) -> None:
    """Raise ``DataError`` naming the shard and the first mismatched keys.  Keys of ``b`` missing from a
    damaged ``a`` are tolerated (only its readable part is used)."""
    set_a, set_b = set(keys_a), set(keys_b)
    only_a = [k for k in keys_a if k not in set_b]
    only_b = [] if a_may_be_partial else [k for k in keys_b if k not in set_a]
    if only_a or only_b:
        raise DataError(
            f"shard {shard}: keys of {name_a} and {name_b} do not match: "
            f"{len(only_a)} only in {name_a} (first: {only_a[:5]}), {len(only_b)} only in {name_b} (first: {only_b[:5]}). "
            "The sidecar belongs to another version of the shard: re-run the stage that wrote it"
        )


def inspect_dataset(cfg: DataConfig, rewards: list[str], cache_identity: dict | None = None,
                    world_size: int = 1) -> DatasetInfo:
    """Check everything that can be checked before training starts and say exactly what is wrong."""
    shards = [p.resolve() for p in list_shards(cfg.shards)]
    if not shards:
        raise DataError(f"data.shards={cfg.shards!r}: no NAME-NNNNNN.tar shard found")
    workers = max(1, cfg.num_workers)
    if cfg.sampling == "epoch" and len(shards) < world_size * workers:
        raise DataError(
            f"data.sampling=epoch needs at least one shard per rank and worker: {len(shards)} shard(s) for "
            f"{world_size} rank(s) x {workers} worker(s). Lower data.num_workers, use data.sampling=resampled, "
            "or write more, smaller shards"
        )
    root = shards_root(cfg.shards, shards, cfg.root).resolve()  # the annotation stage's rule
    stats = None
    bucket_paths: dict[Path, Path] = {}
    if rewards:
        stats_file = Path(cfg.stats) if cfg.stats else Path(cfg.annotations or root) / STATS_FILE
        stats = read_reward_stats(stats_file)
        unknown = [r for r in rewards if r not in stats.names]
        if unknown:
            raise DataError(f"reward(s) {unknown} are not in {stats_file} (it has {list(stats.names)})")
        for shard in shards:
            bucket_paths[shard] = sidecar_path(shard, BUCKETS_SUFFIX, cfg.annotations, root)
            check_buckets_file(bucket_paths[shard], stats, rewards)
    cache_paths: dict[Path, Path] = {}
    if cfg.cache:
        if cache_identity is None:
            raise DataError("data.cache=true but no cache identity was given (text encoder / autoencoder)")
        for shard in shards:
            cache_paths[shard] = cache_path(shard, cache_identity, cfg.cache_dir, root)
            check_identity(cache_paths[shard], read_cache_metadata(cache_paths[shard]), cache_identity)
    num_samples = None
    if cfg.verify_keys or rewards:
        num_samples = 0
        for shard in shards:
            num_samples += _verify_shard(shard, bucket_paths.get(shard), cache_paths.get(shard), cfg.verify_keys)
    return DatasetInfo(shards=shards, root=root, rewards=list(rewards), stats=stats, cache_identity=cache_identity,
                       num_samples=num_samples, bucket_paths=bucket_paths, cache_paths=cache_paths)


def _verify_shard(shard: Path, buckets: Path | None, cache: Path | None, verify_keys: bool) -> int:
    """Number of samples of a shard; with ``verify_keys`` its keys are compared with each sidecar's."""
    bucket_keys = read_bucket_keys(buckets) if buckets else None
    if not verify_keys:
        return len(bucket_keys)
    keys, damaged = tar_keys(shard)
    if damaged:
        log.warning("shard %s is damaged after key %r: only its %d readable samples are used", shard,
                    keys[-1] if keys else None, len(keys))
    if bucket_keys is not None:
        _compare_keys(shard, "the tar", keys, "its buckets " + buckets.name, bucket_keys, damaged)
    if cache is not None:
        meta = read_cache_metadata(cache)
        _compare_keys(shard, "its feature cache " + cache.name, meta["order"], "the tar", keys, bool(meta["damaged"]))
    return len(keys)


# --------------------------------------------------------------------------------------------- stream


def shard_order(shards: list[Path], seed: int, segment: int, rank: int, world: int, worker: int, workers: int,
                resampled: bool) -> Iterator[Path]:
    """Endless shard sequence of one (rank, worker).

    resampled: drawn with replacement from a stream seeded by (seed, segment, rank, worker), so no split is
    needed.  epoch: pass e shuffles all shards with (seed, segment, e) — the same order on every rank —
    then takes every world-th shard for this rank and every workers-th of those for this worker, so ranks
    and workers read disjoint shards.
    """
    if resampled:
        rng = random.Random(derive_seed(seed, segment, rank, worker, 0))
        while True:
            yield shards[rng.randrange(len(shards))]
    if len(shards) < world * workers:
        raise DataError(f"{len(shards)} shard(s) cannot be split over {world} rank(s) x {workers} worker(s)")
    epoch = 0
    while True:
        order = list(shards)
        random.Random(derive_seed(seed, segment, epoch, 1)).shuffle(order)
        yield from order[rank::world][worker::workers]
        epoch += 1


class _Skips:
    """Corrupt-sample counter with a rate-limited warning (first of each reason, then every ``every``).

    ``max_consecutive`` bad samples in a row stop the job: the data is unusable, not merely noisy."""

    def __init__(self, every: int = 1000, max_consecutive: int = 1000):
        self.every, self.max_consecutive = every, max_consecutive
        self.total = self.pending = self.consecutive = 0
        self.reasons: Counter[str] = Counter()

    def add(self, shard: Path | str, key: str, reason: str) -> None:
        self.total += 1
        self.pending += 1
        self.consecutive += 1
        self.reasons[reason] += 1
        if self.reasons[reason] == 1 or self.total % self.every == 0:
            log.warning("skipping sample %s of %s (%s); %d skipped so far in this worker: %s",
                        key, Path(shard).name, reason, self.total, dict(self.reasons))
        if self.consecutive >= self.max_consecutive:
            raise DataError(f"{self.consecutive} samples in a row could not be used (last: {key} of {shard}); "
                            f"reasons so far: {dict(self.reasons)}")

    def ok(self) -> None:
        self.consecutive = 0

    def take(self) -> int:
        n, self.pending = self.pending, 0
        return n


class MiroDataset(IterableDataset):
    """Endless stream of collated batches for one rank (see the module docstring)."""

    def __init__(self, cfg: DataConfig, info: DatasetInfo, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, segment: int = 0):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1")
        self.cfg, self.info, self.batch_size, self.seed = cfg, info, batch_size, seed
        self.rank, self.world_size, self.segment = rank, world_size, segment

    def with_segment(self, segment: int) -> MiroDataset:
        """The same stream restarted at a checkpoint step (see the module docstring)."""
        out = copy.copy(self)
        out.segment = segment
        return out

    def __iter__(self) -> Iterator[dict]:
        wi = get_worker_info()
        worker, workers = (wi.id, wi.num_workers) if wi is not None else (0, 1)
        base = (self.seed, self.segment, self.rank, worker)
        skips = _Skips(max_consecutive=self.cfg.max_bad_in_a_row)
        hflip_rng = random.Random(derive_seed(*base, 2)) if self.cfg.hflip else None
        stages = [
            lambda: shard_order(self.info.shards, self.seed, self.segment, self.rank, self.world_size, worker,
                                workers, self.cfg.sampling == "resampled"),
            lambda src: self._joined_samples(src, skips),
        ]
        if self.cfg.shuffle_buffer > 1:
            stages.append(wds.shuffle(self.cfg.shuffle_buffer, self.cfg.shuffle_initial, seed=derive_seed(*base, 1)))
        stages.append(lambda src: self._decoded(src, skips, hflip_rng))
        stages.append(wds.batched(self.batch_size, collation_fn=lambda s: collate(s, skips.take()), partial=False))
        return iter(wds.DataPipeline(*stages))

    # -- per shard: read + join (cheap, before the shuffle buffer)
    def _joined_samples(self, shards: Iterator[Path], skips: _Skips) -> Iterator[dict]:
        num_bins = self.info.num_bins
        for shard in shards:
            rows: dict[str, int] = {}
            values = mask = None
            if self.info.rewards:
                keys, buckets = read_buckets(self.info.bucket_paths[shard], self.info.rewards)
                _check_buckets(buckets, num_bins, keys, self.info.rewards, self.info.bucket_paths[shard])
                values, mask = bucket_values(buckets, num_bins)
                rows = {k: i for i, k in enumerate(keys)}
            samples = self._cached(shard) if self.cfg.cache else self._raw(shard, skips)
            for sample in samples:
                if values is not None:
                    i = rows.get(sample["key"])
                    if i is None:
                        raise DataError(f"shard {shard}: key {sample['key']!r} is not in {self.info.bucket_paths[shard]}")
                    sample["rewards"], sample["reward_mask"] = values[i], mask[i]
                yield sample

    def _raw(self, shard: Path, skips: _Skips) -> Iterator[dict]:
        try:
            for key, members in iter_shard(shard, on_skip=lambda member, reason: skips.add(shard, member, reason)):
                yield {"key": key, "shard": shard, "members": members}
        except ShardError as err:
            skips.add(shard, "<rest of shard>", "damaged_tar")
            log.warning("%s", err)

    def _cached(self, shard: Path) -> Iterator[dict]:
        """Cached features in tar order; undecodable samples pass as markers and are dropped after the
        shuffle, exactly where the uncached stream drops them, so both streams are the same."""
        try:
            cache = read_shard_cache(self.info.cache_paths[shard], self.info.cache_identity)
        except CacheError as err:
            raise DataError(str(err)) from None
        index = {k: i for i, k in enumerate(cache.keys)}
        for key in cache.order:
            i = index.get(key)
            if i is None:
                yield {"key": key, "shard": shard, "bad": cache.skipped[key]}
            else:
                sample = {"key": key, "shard": shard, "caption": cache.captions[i], "latent": cache.latents[i],
                          "text": cache.text_of(i)}
                if cache.latent_std is not None:
                    sample["latent_std"] = cache.latent_std[i]
                yield sample
        if cache.damaged:
            log.warning("%s", cache.damaged)

    # -- per sample: decode (after the shuffle buffer)
    def _decoded(self, samples: Iterator[dict], skips: _Skips, hflip_rng: random.Random | None) -> Iterator[dict]:
        for s in samples:
            if "bad" in s:  # cached stream: the cache could not decode this one either
                skips.add(s["shard"], s["key"], s["bad"])
                continue
            if "latent" in s:
                skips.ok()
                yield s
                continue
            members = s.pop("members")
            try:
                img, s["caption"] = decode_sample(members)
            except (BadImage, BadCaption) as err:
                skips.add(s["shard"], s["key"], err.reason)
                continue
            image = image_to_uint8(img, self.cfg.resolution)
            if hflip_rng is not None and hflip_rng.random() < 0.5:
                image = image.flip(-1)
            s["image"] = image
            skips.ok()
            yield s


def _check_buckets(buckets: np.ndarray, num_bins: int, keys: list[str], rewards: list[str], path: Path) -> None:
    """The one check of the reward values training feeds the model (on the CPU, once per shard, so the model's
    forward needs no host sync for it): a bucket is -1 (unscored) or 0..num_bins-1, i.e. a value in [0, 1]."""
    bad = (buckets < -1) | (buckets >= num_bins)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise DataError(
            f"{path}: bucket {int(buckets[i, j])} of reward {rewards[j]!r} at key {keys[i]!r} is outside -1 (unscored) "
            f"and 0..{num_bins - 1} (num_bins={num_bins}), so its value bucket/(num_bins-1) is not in [0, 1]: "
            "re-run the bucketize step (python -m annotate stage=stats)"
        )


def collate(samples: list[dict], skipped: int = 0) -> dict:
    """One batch: ``keys``, ``captions``, ``image`` uint8 [B,3,H,W] or cached ``latent`` fp16 (+ ``latent_std``
    for posterior autoencoders) with ``text``/``text_mask``, ``rewards`` [B,R] float32, ``reward_mask`` [B,R]
    bool, ``skipped`` (corrupt samples since the last batch)."""
    batch: dict = {"keys": [s["key"] for s in samples], "captions": [s["caption"] for s in samples], "skipped": skipped}
    if "image" in samples[0]:
        batch["image"] = torch.stack([s["image"] for s in samples])
    else:
        batch["latent"] = torch.stack([s["latent"] for s in samples])
        if "latent_std" in samples[0]:
            batch["latent_std"] = torch.stack([s["latent_std"] for s in samples])
        batch["text"], batch["text_mask"] = pad_text([s["text"] for s in samples])
    if "rewards" in samples[0]:
        batch["rewards"] = torch.from_numpy(np.stack([s["rewards"] for s in samples]))
        batch["reward_mask"] = torch.from_numpy(np.stack([s["reward_mask"] for s in samples]))
    return batch


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def make_loader(dataset: MiroDataset, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over the pre-batched stream (do not ``accelerator.prepare`` it: ranks are already split)."""
    workers = dataset.cfg.num_workers
    return DataLoader(dataset, batch_size=None, num_workers=workers, pin_memory=pin_memory,
                      worker_init_fn=_worker_init if workers else None,
                      prefetch_factor=dataset.cfg.prefetch_factor if workers else None)


@torch.no_grad()
def model_inputs(batch: dict, device: torch.device, text_encoder=None, autoencoder=None,
                 generator: torch.Generator | None = None, sample_latents: bool = False) -> dict:
    """Turn a batch into the model call's tensors (``x``, ``text``, ``text_mask``, ``rewards``, ``reward_mask``),
    running the frozen encoders unless the batch is cached.  With ``sample_latents`` a posterior autoencoder
    gives a posterior sample drawn from ``generator`` — the same draw whether its moments come from the cache
    or are computed here."""
    if "latent" in batch:
        x = batch["latent"].to(device, torch.float32, non_blocking=True)
        if "latent_std" in batch:  # raw posterior moments (autoencoders with ``has_posterior``)
            std = batch["latent_std"].to(device, torch.float32, non_blocking=True)
            x = autoencoder.from_moments(x, std, sample_latents, generator)
        text = batch["text"].to(device, torch.float32, non_blocking=True)
        text_mask = batch["text_mask"].to(device, non_blocking=True)
    else:
        if text_encoder is None or autoencoder is None:
            raise ValueError("an uncached batch needs the text encoder and the autoencoder")
        x = autoencoder.encode(uint8_to_unit(batch["image"].to(device, non_blocking=True)),
                               sample=sample_latents, generator=generator).float()
        emb, mask = text_encoder.encode(batch["captions"])
        text, text_mask = trim_text(emb.to(device, torch.float32), mask.to(device).bool())
    out = {"x": x, "text": text, "text_mask": text_mask}
    if "rewards" in batch:
        out["rewards"] = batch["rewards"].to(device, non_blocking=True)
        out["reward_mask"] = batch["reward_mask"].to(device, non_blocking=True)
    return out
