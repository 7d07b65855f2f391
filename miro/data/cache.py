"""The feature cache: per-shard text embeddings and autoencoder latents, stored beside the shards.

One file per shard and feature set, ``NAME-NNNNNN.cache-<tag>.safetensors`` (beside the shard, or under a
cache folder mirroring the shard names).  ``<tag>`` is a hash of the identity (text encoder, autoencoder,
resolution), so caches for different encoders coexist and a stale one is never read by mistake.

Tensors:
    latents       fp16 [N, C, h, w]   the autoencoder's normalised latents of the centre-cropped image, or,
                                      for autoencoders with a posterior (``has_posterior``; ``encode_moments``), its raw mean
    latent_std    fp16 [N, C, h, w]   the raw posterior std (posterior autoencoders only), so training can
                                      draw a fresh latent sample every time, as without the cache
    text          fp16 [T, D]         all samples' token embeddings, each trimmed to its mask length
    text_offsets  int64 [N + 1]       sample i's tokens are text[offsets[i]:offsets[i + 1]]
Metadata (safetensors header, JSON strings): ``format``, ``identity``, ``shard``, ``keys`` and ``captions``
(of the cached samples), ``skipped`` ({key: reason} for samples that could not be decoded; they are skipped
in training too), ``order`` (every key in tar order, so the cached stream is the same stream as the
uncached one), ``damaged`` (non-empty when the tar is cut; only its readable part is cached) and
``ignored_members`` ({member: reason} for tar members that belong to no sample, e.g. one without an
extension; absent in older files).

The source shard is never rewritten; files are written to a temp name and renamed, so a killed job leaves
either a complete cache file or none, and a rerun skips shards whose cache is complete.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from miro.contracts.shards import shard_stem, sidecar_path
from miro.data.images import BadCaption, BadImage, decode_sample
from miro.data.shards import ShardError, iter_shard
from miro.data.transforms import image_to_uint8, text_lengths, uint8_to_unit
from miro.utils.atomic import atomic_path
from miro.utils.storage import OutputError, check_writable_all, disk_full

FORMAT = "miro-feature-cache/1"


class CacheError(RuntimeError):
    """A cache file is missing, stale (built for other encoders) or does not match its shard."""


def cache_identity(text_encoder_id: str, autoencoder_id: str, resolution: int) -> dict:
    return {"text_encoder": str(text_encoder_id), "autoencoder": str(autoencoder_id), "resolution": int(resolution)}


def cache_tag(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def cache_path(shard: str | Path, identity: dict, cache_dir: str | Path | None = None, root: str | Path | None = None) -> Path:
    return sidecar_path(shard, f".cache-{cache_tag(identity)}.safetensors", cache_dir, root)


@dataclass
class ShardCache:
    keys: list[str]
    captions: list[str]
    latents: torch.Tensor
    text: torch.Tensor
    text_offsets: torch.Tensor
    identity: dict
    shard: str
    skipped: dict[str, str] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # all keys in tar order, skipped ones included
    damaged: str = ""
    latent_std: torch.Tensor | None = None  # set when ``latents`` holds raw posterior means
    ignored_members: dict[str, str] = field(default_factory=dict)  # tar members of no sample: {name: reason}

    def __len__(self) -> int:
        return len(self.keys)

    def text_of(self, i: int) -> torch.Tensor:
        return self.text[int(self.text_offsets[i]) : int(self.text_offsets[i + 1])]


def read_cache_metadata(path: str | Path) -> dict:
    """The header metadata only (no tensor data is read)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except FileNotFoundError:
        raise CacheError(f"feature cache {path} not found: run python -m miro.train.cache for these shards") from None
    except Exception as err:  # noqa: BLE001 - any unreadable header means a broken file
        raise CacheError(f"feature cache {path} is unreadable ({type(err).__name__}: {err}); delete it and re-run python -m miro.train.cache") from None
    if meta.get("format") != FORMAT:
        raise CacheError(f"{path}: not a {FORMAT} file (format={meta.get('format')!r})")
    return {k: (v if k == "format" else json.loads(v)) for k, v in meta.items()}


def check_identity(path: Path, meta: dict, identity: dict) -> None:
    if meta["identity"] != identity:
        raise CacheError(f"{path} was built for {meta['identity']}, training expects {identity}")


def read_shard_cache(path: str | Path, identity: dict | None = None) -> ShardCache:
    meta = read_cache_metadata(path)
    if identity is not None:
        check_identity(Path(path), meta, identity)
    tensors = load_file(str(path))
    return ShardCache(
        keys=meta["keys"], captions=meta["captions"], skipped=meta["skipped"], identity=meta["identity"],
        shard=meta["shard"], order=meta["order"], damaged=meta["damaged"], latents=tensors["latents"],
        latent_std=tensors.get("latent_std"), text=tensors["text"], text_offsets=tensors["text_offsets"],
        ignored_members=meta.get("ignored_members", {}),
    )


def write_shard_cache(path: str | Path, cache: ShardCache) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT}
    for k in ("identity", "shard", "keys", "captions", "skipped", "order", "damaged", "ignored_members"):
        meta[k] = json.dumps(getattr(cache, k))
    tensors = {"latents": cache.latents.contiguous(), "text": cache.text.contiguous(),
               "text_offsets": cache.text_offsets.contiguous()}
    if cache.latent_std is not None:
        tensors["latent_std"] = cache.latent_std.contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def is_complete(path: Path, identity: dict) -> bool:
    """True when ``path`` holds a readable cache for ``identity`` (a rerun then skips the shard)."""
    try:
        return read_cache_metadata(path)["identity"] == identity
    except CacheError:
        return False


def decoded_samples(shard: Path, resolution: int, skipped: dict[str, str], order: list[str],
                    damage: list[str], ignored: dict[str, str] | None = None) -> Iterator[tuple[str, str, torch.Tensor]]:
    """``(key, caption, uint8 image)`` of a shard's decodable samples, decoded as training decodes them (the cache
    and the autoencoder trainer read shards through this); undecodable keys go to ``skipped``, a broken tar to
    ``damage``."""
    ignored = {} if ignored is None else ignored
    try:
        yield from _decode_all(iter_shard(shard, on_skip=ignored.__setitem__), resolution, skipped, order)
    except ShardError as err:
        damage.append(str(err))


def _decode_all(samples, resolution: int, skipped: dict[str, str], order: list[str]) -> Iterator[tuple[str, str, torch.Tensor]]:
    for key, members in samples:
        order.append(key)
        try:
            img, caption = decode_sample(members)
        except (BadImage, BadCaption) as err:
            skipped[key] = err.reason
            continue
        yield key, caption, image_to_uint8(img, resolution)


@torch.no_grad()
def encode_shard(shard: str | Path, text_encoder, autoencoder, resolution: int, batch_size: int = 64,
                 device: torch.device | str = "cpu") -> ShardCache:
    """Decode one shard exactly as training does and run the frozen encoders over it."""
    shard = Path(shard)
    identity = cache_identity(text_encoder.identifier(), autoencoder.identifier(), resolution)
    keys: list[str] = []
    captions: list[str] = []
    latents: list[torch.Tensor] = []
    stds: list[torch.Tensor] = []
    moments = autoencoder.has_posterior
    texts: list[torch.Tensor] = []
    lengths: list[int] = []
    skipped: dict[str, str] = {}
    damage: list[str] = []
    order: list[str] = []
    ignored: dict[str, str] = {}

    def flush(batch):
        bkeys, bcaps, bimgs = zip(*batch)
        x = uint8_to_unit(torch.stack(bimgs).to(device))
        if moments:
            mean, std = autoencoder.encode_moments(x)
            latents.append(mean.to("cpu", torch.float16))
            stds.append(std.to("cpu", torch.float16))
        else:
            latents.append(autoencoder.encode(x).to("cpu", torch.float16))
        emb, mask = text_encoder.encode(list(bcaps))
        n = text_lengths(mask.bool()).tolist()
        emb = emb.to("cpu", torch.float16)
        texts.extend(emb[i, : n[i]] for i in range(len(n)))
        lengths.extend(n)
        keys.extend(bkeys)
        captions.extend(bcaps)

    batch: list = []
    for item in decoded_samples(shard, resolution, skipped, order, damage, ignored):
        batch.append(item)
        if len(batch) == batch_size:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    if not keys:
        raise CacheError(f"{shard}: no decodable sample (skipped: {dict(list(skipped.items())[:5])})")
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    offsets[1:] = torch.tensor(lengths, dtype=torch.int64).cumsum(0)
    return ShardCache(keys=keys, captions=captions, latents=torch.cat(latents), text=torch.cat(texts),
                      latent_std=torch.cat(stds) if moments else None,
                      text_offsets=offsets, identity=identity, shard=shard_stem(shard) + ".tar", skipped=skipped,
                      order=order, damaged=damage[0] if damage else "", ignored_members=ignored)


def cache_shards(shards: list[Path], text_encoder, autoencoder, resolution: int, cache_dir: str | Path | None = None,
                 root: str | Path | None = None, batch_size: int = 64, device: torch.device | str = "cpu",
                 rank: int = 0, world_size: int = 1, overwrite: bool = False, progress: bool = False) -> dict:
    """Cache this rank's shards (``shards[rank::world_size]``); complete caches are skipped unless ``overwrite``.

    Returns counts: ``written``, ``skipped_complete``, ``samples``, ``bad_samples``, ``ignored_members``.
    """
    identity = cache_identity(text_encoder.identifier(), autoencoder.identifier(), resolution)
    mine = list(shards)[rank::world_size]
    check_writable_all((cache_path(s, identity, cache_dir, root).parent for s in mine), "feature cache folder")
    summary = {"written": 0, "skipped_complete": 0, "samples": 0, "bad_samples": 0, "ignored_members": 0, "identity": identity}
    if progress:
        from tqdm.auto import tqdm

        mine = tqdm(mine, desc=f"cache rank {rank}", unit="shard")
    for shard in mine:
        out = cache_path(shard, identity, cache_dir, root)
        if not overwrite and is_complete(out, identity):
            summary["skipped_complete"] += 1
            continue
        cache = encode_shard(shard, text_encoder, autoencoder, resolution, batch_size, device)
        try:
            write_shard_cache(out, cache)
        except OSError as err:  # disk full etc.: the temp file is gone, earlier caches are complete
            what = "disk full" if disk_full(err) else (err.strerror or type(err).__name__)
            raise OutputError(f"feature cache {out} could not be written ({what}); {summary['written']} caches written "
                              "before are complete, rerun to resume") from None
        summary["written"] += 1
        summary["samples"] += len(cache)
        summary["bad_samples"] += len(cache.skipped)
        summary["ignored_members"] += len(cache.ignored_members)
    return summary
