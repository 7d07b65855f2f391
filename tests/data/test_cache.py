import os
from itertools import islice
from pathlib import Path

import pytest
import torch

from miro.data.annotations import DataError
from miro.data.cache import (
    CacheError,
    cache_identity,
    cache_path,
    cache_shards,
    encode_shard,
    read_shard_cache,
    write_shard_cache,
)
from miro.data.pipeline import DataConfig, MiroDataset, inspect_dataset, make_loader, model_inputs
from miro.data.transforms import uint8_to_unit
from miro.models.autoencoders import IdentityAutoencoder
from tests.data.make_dataset import REWARDS, make_dataset
from tests.train.tiny import TinyTextEncoder, tiny_kl_autoencoder

RES = 16


@pytest.fixture(scope="module")
def vae_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("vae")


@pytest.fixture()
def encoders(vae_folder):
    """A real latent autoencoder (tiny random-weight AutoencoderKL through KLAutoencoder)."""
    return TinyTextEncoder(), tiny_kl_autoencoder(vae_folder)


def identity_of(te, ae):
    return cache_identity(te.identifier(), ae.identifier(), RES)


def test_shard_cache_round_trip_and_skipped_samples(tmp_path, encoders):
    te, ae = encoders
    shard = make_dataset(tmp_path, n_shards=1, per_shard=7, corrupt={"s000i0003": "image"})[0]
    cache = encode_shard(shard, te, ae, RES, batch_size=3)
    assert cache.skipped == {"s000i0003": "not_an_image"} and len(cache) == 6
    assert cache.latents.shape == cache.latent_std.shape == (6, 4, RES // 2, RES // 2)  # raw posterior moments
    assert cache.latents.dtype == cache.latent_std.dtype == torch.float16
    # each caption "a photo of <key>" is 4 words -> 4 tokens, trimmed to the mask length
    assert cache.text_offsets.tolist() == [0, 4, 8, 12, 16, 20, 24]
    path = cache_path(shard, cache.identity)
    assert path.parent == shard.parent and path.name.startswith("toy-000000.cache-")
    write_shard_cache(path, cache)
    back = read_shard_cache(path, identity_of(te, ae))
    assert back.keys == cache.keys and back.captions == cache.captions and back.skipped == cache.skipped
    assert torch.equal(back.latents, cache.latents) and torch.equal(back.latent_std, cache.latent_std)
    assert torch.equal(back.text_of(5), cache.text_of(5))
    pixels = encode_shard(shard, te, IdentityAutoencoder(), RES)  # no posterior: normalised latents only
    assert pixels.latent_std is None and pixels.latents.shape == (6, 3, RES, RES)
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    with pytest.raises(CacheError, match="was built for"):
        read_shard_cache(path, cache_identity("other-encoder", ae.identifier(), RES))


def test_cache_command_splits_by_rank_skips_complete_and_repairs_broken(tmp_path, encoders):
    te, ae = encoders
    shards = make_dataset(tmp_path, n_shards=3, per_shard=4)
    out = tmp_path / "cache"
    r0 = cache_shards(shards, te, ae, RES, cache_dir=out, root=tmp_path, rank=0, world_size=2)
    r1 = cache_shards(shards, te, ae, RES, cache_dir=out, root=tmp_path, rank=1, world_size=2)
    assert (r0["written"], r1["written"]) == (2, 1) and r0["samples"] + r1["samples"] == 12
    files = sorted(out.glob("*.safetensors"))
    assert len(files) == 3 and not list(tmp_path.glob("*.safetensors"))  # nothing beside the source shards
    again = cache_shards(shards, te, ae, RES, cache_dir=out, root=tmp_path)
    assert again["skipped_complete"] == 3 and again["written"] == 0
    files[1].write_bytes(files[1].read_bytes()[:100])  # a killed copy / broken file is rebuilt
    assert cache_shards(shards, te, ae, RES, cache_dir=out, root=tmp_path)["written"] == 1
    assert os.path.getsize(files[1]) > 100


def test_cached_stream_equals_the_stream_computed_on_the_fly(tmp_path, encoders):
    te, ae = encoders
    make_dataset(tmp_path, n_shards=2, per_shard=6, corrupt={"s001i0002": "caption"})
    shards = sorted(tmp_path.glob("*.tar"))
    cache_shards(shards, te, ae, RES)
    identity = identity_of(te, ae)

    def per_key(cached: bool) -> dict:
        cfg = DataConfig(shards=str(tmp_path), resolution=RES, num_workers=0, cache=cached, shuffle_buffer=5,
                         shuffle_initial=3)
        info = inspect_dataset(cfg, REWARDS, cache_identity=identity if cached else None)
        ds = MiroDataset(cfg, info, batch_size=11, seed=3)
        batch = next(iter(make_loader(ds)))
        inputs = model_inputs(batch, torch.device("cpu"), te, ae, torch.Generator().manual_seed(0), sample_latents=True)
        out = {"order": batch["keys"], "skipped": batch["skipped"]}
        for i, k in enumerate(batch["keys"]):
            n = int(inputs["text_mask"][i].sum())
            out[k] = (inputs["x"][i], inputs["text"][i, :n], inputs["rewards"][i], inputs["reward_mask"][i],
                      inputs["text_mask"].shape[1])
        return out

    fly, cached = per_key(False), per_key(True)
    assert fly.pop("order") == cached.pop("order")  # the same samples in the same order
    assert fly.pop("skipped") == cached.pop("skipped")
    assert "s001i0002" not in fly
    for k in fly:
        x, t, r, m, length = fly[k]
        cx, ct, cr, cm, clength = cached[k]
        assert length == clength == 4  # both trimmed to the longest caption
        torch.testing.assert_close(cx, x, atol=2e-3, rtol=1e-3)  # fp16 storage
        torch.testing.assert_close(ct, t, atol=2e-3, rtol=1e-3)
        assert torch.equal(cr, r) and torch.equal(cm, m)


def test_training_refuses_a_missing_or_stale_cache(tmp_path, encoders):
    te, ae = encoders
    make_dataset(tmp_path, n_shards=2, per_shard=3)
    cfg = DataConfig(shards=str(tmp_path), resolution=RES, num_workers=0, cache=True)
    with pytest.raises(CacheError, match=r"toy-000000\.cache-.*not found: run python -m miro.train.cache"):
        inspect_dataset(cfg, REWARDS, cache_identity=identity_of(te, ae))
    cache_shards(sorted(tmp_path.glob("*.tar")), te, ae, RES)
    other = cache_identity(te.identifier(), ae.identifier(), RES * 2)
    with pytest.raises(CacheError, match="not found"):  # another resolution has its own tag
        inspect_dataset(cfg, REWARDS, cache_identity=other)
    with pytest.raises(DataError, match="no cache identity"):
        inspect_dataset(cfg, REWARDS)


def test_cache_keys_must_match_the_shard(tmp_path, encoders):
    te, ae = encoders
    shards = make_dataset(tmp_path, n_shards=1, per_shard=4)
    cache = encode_shard(shards[0], te, ae, RES)
    cache.keys[1] = cache.order[1] = "intruder"  # a cache of another version of the shard
    write_shard_cache(cache_path(shards[0], cache.identity), cache)
    cfg = DataConfig(shards=str(tmp_path), resolution=RES, num_workers=0, cache=True)
    with pytest.raises(DataError, match="intruder"):
        inspect_dataset(cfg, REWARDS, cache_identity=identity_of(te, ae))


def test_cached_stream_skips_what_the_cache_could_not_decode(tmp_path, encoders):
    te, ae = encoders
    make_dataset(tmp_path, n_shards=1, per_shard=5, corrupt={"s000i0001": "image"})
    cache_shards([Path(p) for p in sorted(tmp_path.glob("*.tar"))], te, ae, RES)
    cfg = DataConfig(shards=str(tmp_path), resolution=RES, num_workers=0, cache=True, shuffle_buffer=1,
                     shuffle_initial=0)
    ds = MiroDataset(cfg, inspect_dataset(cfg, REWARDS, cache_identity=identity_of(te, ae)), batch_size=2, seed=0)
    bs = list(islice(iter(make_loader(ds)), 2))
    assert [k for b in bs for k in b["keys"]] == ["s000i0000", "s000i0002", "s000i0003", "s000i0004"]
    assert bs[0]["skipped"] == 1


def test_every_sample_keeps_its_own_image_caption_and_rewards_through_cache_shuffle_and_workers(tmp_path):
    """Pairing by key, against ground truth recomputed from the key alone (the image and the caption are
    functions of the key): a mix-up anywhere in cache -> resampling -> shuffle buffer -> 2 workers -> collate
    would train the model on another sample's caption, which looks exactly like a model that ignores text."""
    import io as _io

    from PIL import Image

    from miro.data.annotations import bucket_values
    from miro.data.annotations import read_buckets as read_bucket_table
    from miro.data.transforms import image_to_uint8, uint8_to_unit
    from tests.data.make_dataset import NUM_BINS, image_bytes

    te, ae = TinyTextEncoder(), IdentityAutoencoder()
    make_dataset(tmp_path, n_shards=3, per_shard=8)
    shards = sorted(tmp_path.glob("*.tar"))
    cache_shards(shards, te, ae, RES)
    identity = cache_identity(te.identifier(), ae.identifier(), RES)
    truth_rewards = {}
    for shard in shards:
        keys, buckets = read_bucket_table(shard.with_name(shard.name.replace(".tar", ".buckets.parquet")), REWARDS)
        values, mask = bucket_values(buckets, NUM_BINS)
        truth_rewards.update({k: (torch.from_numpy(values[i]), torch.from_numpy(mask[i])) for i, k in enumerate(keys)})

    cfg = DataConfig(shards=str(tmp_path), resolution=RES, num_workers=2, cache=True, shuffle_buffer=7,
                     shuffle_initial=4, sampling="resampled")
    info = inspect_dataset(cfg, REWARDS, cache_identity=identity)
    seen = set()
    for batch in islice(iter(make_loader(MiroDataset(cfg, info, batch_size=5, seed=1))), 12):
        inputs = model_inputs(batch, torch.device("cpu"), te, ae)
        for i, key in enumerate(batch["keys"]):
            seen.add(key)
            caption = f"a photo of {key}"
            assert batch["captions"][i] == caption
            emb, mask = te.encode([caption])
            n = int(mask.sum())
            assert int(inputs["text_mask"][i].sum()) == n
            torch.testing.assert_close(inputs["text"][i, :n], emb[0, :n], atol=2e-3, rtol=1e-3)
            pixels = uint8_to_unit(image_to_uint8(Image.open(_io.BytesIO(image_bytes(key))).convert("RGB"), RES))
            torch.testing.assert_close(inputs["x"][i], pixels, atol=4e-3, rtol=0)
            values, known = truth_rewards[key]
            assert torch.equal(inputs["reward_mask"][i], known)
            assert torch.equal(inputs["rewards"][i][known], values[known])
    assert len(seen) >= 12  # the check saw many distinct samples, from several shards
    assert len({k[:4] for k in seen}) >= 2


@pytest.mark.parametrize("kind", ["identity", "kl"])
def test_model_inputs_works_through_the_autoencoder_interface(kind, vae_folder):
    """``model_inputs`` uses only what every ``Autoencoder`` has (``has_posterior``, ``from_moments``), so a cached
    batch, with or without moments, gives the latents ``encode`` gives, for each autoencoder class."""
    from miro.models.autoencoders import Autoencoder, KLAutoencoder

    ae = IdentityAutoencoder() if kind == "identity" else tiny_kl_autoencoder(vae_folder)
    assert isinstance(ae, Autoencoder) and ae.has_posterior == isinstance(ae, KLAutoencoder)
    te = TinyTextEncoder()
    images = torch.randint(0, 256, (2, 3, RES, RES), dtype=torch.uint8)
    raw = {"image": images, "captions": ["a red circle", "two blue stars"]}
    x = uint8_to_unit(images)
    emb, mask = te.encode(raw["captions"])
    cached = {"text": emb, "text_mask": mask.bool()}
    if ae.has_posterior:
        mean, std = ae.encode_moments(x)
        cached |= {"latent": mean, "latent_std": std}
    else:
        cached["latent"] = ae.encode(x)
    for sample in (False, True):
        a = model_inputs(raw, torch.device("cpu"), te, ae, torch.Generator().manual_seed(3), sample_latents=sample)
        b = model_inputs(cached, torch.device("cpu"), te, ae, torch.Generator().manual_seed(3), sample_latents=sample)
        torch.testing.assert_close(a["x"], b["x"])
        assert a["x"].shape == (2, ae.latent_channels, RES // ae.downsample, RES // ae.downsample)
    # the interface itself, on every autoencoder: moments -> normalised latents, a draw only with a std
    z = torch.randn(2, ae.latent_channels, 4, 4)
    torch.testing.assert_close(ae.from_moments(z), ae.normalize(z))
    torch.testing.assert_close(ae.denormalize(ae.normalize(z)), z, rtol=1e-6, atol=1e-5)
    drawn = ae.from_moments(z, torch.ones_like(z), sample=True, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(drawn, ae.normalize(z + noise))
