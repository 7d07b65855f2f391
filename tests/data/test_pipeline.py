import json
import logging
from collections import Counter
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from miro.data.annotations import DataError
from miro.data.pipeline import (
    DataConfig,
    MiroDataset,
    inspect_dataset,
    make_loader,
    shard_order,
)
from miro.data.shards import _tar_keys_slow, tar_keys
from miro.data.transforms import center_crop_resize, image_to_uint8
from miro.utils.config import ConfigError, to_typed
from tests.data.make_dataset import (
    NUM_BINS,
    REWARDS,
    annotate,
    expected_buckets,
    make_dataset,
    rebucket_with_keys,
    write_shards,
)


def cfg_for(root: Path, **kw) -> DataConfig:
    base = {"shards": str(root), "resolution": 16, "num_workers": 0, "shuffle_buffer": 8, "shuffle_initial": 4}
    base.update(kw)
    base["shuffle_initial"] = min(base["shuffle_initial"], base["shuffle_buffer"])
    return DataConfig(**base)


def batches(cfg: DataConfig, rewards=REWARDS, n=5, batch_size=4, seed=0, rank=0, world=1, segment=0):
    info = inspect_dataset(cfg, rewards, world_size=world)
    ds = MiroDataset(cfg, info, batch_size=batch_size, seed=seed, rank=rank, world_size=world, segment=segment)
    return list(islice(iter(make_loader(ds)), n))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wds")
    make_dataset(root, n_shards=4, per_shard=10)
    return root


def keys_of(bs):
    return [k for b in bs for k in b["keys"]]


# ------------------------------------------------------------------------------------------ reading


def test_tar_keys_header_walk_matches_tarfile_and_flags_damage(data, tmp_path):
    shard = sorted(data.glob("*.tar"))[1]
    fast, damaged = tar_keys(shard)
    assert fast == _tar_keys_slow(shard)[0] == [f"s001i{i:04d}" for i in range(10)] and not damaged
    cut = tmp_path / "cut-000000.tar"
    raw = shard.read_bytes()
    cut.write_bytes(raw[: len(raw) // 2 + 100])
    keys, damaged = tar_keys(cut)
    assert damaged and 0 < len(keys) < 10 and keys == fast[: len(keys)]
    assert _tar_keys_slow(cut) == (keys, True)


def test_center_crop_keeps_the_middle():
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, 10:30] = 255  # the centre 20 columns are white, the sides black
    assert np.asarray(center_crop_resize(Image.fromarray(arr), 20)).min() == 255  # exact crop, no resize
    img = center_crop_resize(Image.fromarray(arr), 10)
    assert img.size == (10, 10) and np.asarray(img)[:, 2:8].min() == 255 and np.asarray(img).mean() > 250
    t = image_to_uint8(Image.fromarray(arr), 10)
    assert t.shape == (3, 10, 10) and t.dtype == torch.uint8


def test_join_feeds_bucket_over_bins_minus_one_and_mask(data):
    cfg = cfg_for(data, sampling="epoch", shuffle_buffer=1)
    bs = batches(cfg, n=10)
    expected = {k: v for shard in sorted(data.glob("*.tar")) for k, v in expected_buckets(shard).items()}
    assert {b for v in expected.values() for b in v.values()} == set(range(-1, NUM_BINS))  # every case occurs
    seen = 0
    for b in bs:
        assert b["image"].shape == (4, 3, 16, 16) and b["image"].dtype == torch.uint8
        assert b["rewards"].shape == (4, 3) and b["reward_mask"].dtype == torch.bool
        for k, r, m in zip(b["keys"], b["rewards"], b["reward_mask"]):
            assert b["captions"][b["keys"].index(k)] == f"a photo of {k}"
            for j, name in enumerate(REWARDS):
                bucket = expected[k][name]
                assert bool(m[j]) == (bucket >= 0)
                assert float(r[j]) == pytest.approx(max(bucket, 0) / (NUM_BINS - 1))
                seen += 1
    assert seen == 10 * 4 * 3
    assert len(set(keys_of(bs))) == 40  # one whole pass in epoch mode: every sample exactly once


def test_baseline_needs_no_annotations(tmp_path):
    write_shards(tmp_path, n_shards=2, per_shard=4)
    b = batches(cfg_for(tmp_path), rewards=[], n=2)[0]
    assert "rewards" not in b and b["image"].shape[0] == 4


def test_annotations_in_a_mirrored_folder(tmp_path):
    shards_dir, ann = tmp_path / "shards" / "part", tmp_path / "ann"
    shards = write_shards(shards_dir, n_shards=2, per_shard=4)
    annotate(shards, out_dir=ann, root=tmp_path / "shards")
    assert not list(shards_dir.glob("*.parquet")) and len(list(ann.rglob("*.buckets.parquet"))) == 2
    cfg = cfg_for(tmp_path / "shards", annotations=str(ann))
    assert len(batches(cfg, n=2)) == 2


# --------------------------------------------------------------------------------------- determinism


def test_same_seed_same_stream_other_seed_or_segment_differs(data):
    cfg = cfg_for(data)
    a, b = keys_of(batches(cfg, seed=1)), keys_of(batches(cfg, seed=1))
    assert a == b
    assert keys_of(batches(cfg, seed=2)) != a
    assert keys_of(batches(cfg, seed=1, segment=100)) != a


@pytest.mark.parametrize("sampling", ["resampled", "epoch"])
def test_worker_processes_give_a_deterministic_stream(data, sampling):
    cfg = cfg_for(data, num_workers=2, sampling=sampling)
    a = keys_of(batches(cfg, n=6))
    assert a == keys_of(batches(cfg, n=6))
    assert len(a) == 24


def test_epoch_mode_splits_shards_by_rank_then_worker():
    shards = [Path(f"x-{i:06d}.tar") for i in range(12)]
    world, workers = 2, 3
    for epoch_draws in (4, 8):  # one and two passes per (rank, worker): 2 shards each per pass
        seen = {}
        for rank in range(world):
            for w in range(workers):
                seen[(rank, w)] = list(islice(shard_order(shards, 5, 0, rank, world, w, workers, False), epoch_draws // 2))
        first_pass = [s for v in seen.values() for s in v[:2]]
        assert sorted(first_pass) == shards  # a partition: disjoint, and together every shard once
    other = [list(islice(shard_order(shards, 5, 0, 0, world, 0, workers, False), 2)) for _ in range(2)]
    assert other[0] == other[1]
    with pytest.raises(DataError, match="cannot be split"):
        next(shard_order(shards[:5], 5, 0, 0, 2, 0, 3, False))


def test_resampled_shards_are_uniform_and_differ_by_rank_and_worker():
    shards = [Path(f"x-{i:06d}.tar") for i in range(5)]
    draws = list(islice(shard_order(shards, 0, 0, 0, 1, 0, 1, True), 20000))
    freq = Counter(draws)
    assert set(freq) == set(shards)
    for s in shards:
        assert freq[s] / len(draws) == pytest.approx(0.2, rel=0.05)
    streams = [list(islice(shard_order(shards, 0, 0, r, 2, w, 2, True), 50)) for r in (0, 1) for w in (0, 1)]
    assert len({tuple(s) for s in streams}) == 4


def test_ranks_read_disjoint_samples_in_epoch_mode(data):
    cfg = cfg_for(data, sampling="epoch", shuffle_buffer=1)  # 5 batches of 4 = exactly one pass per rank
    r0 = set(keys_of(batches(cfg, n=5, rank=0, world=2)))
    r1 = set(keys_of(batches(cfg, n=5, rank=1, world=2)))
    assert len(r0) == len(r1) == 20 and not r0 & r1


# -------------------------------------------------------------------------------------- bad input


def test_corrupt_samples_are_logged_counted_and_skipped(tmp_path, caplog):
    make_dataset(tmp_path, n_shards=2, per_shard=6, corrupt={"s000i0002": "image", "s001i0003": "caption"})
    cfg = cfg_for(tmp_path, sampling="epoch", shuffle_buffer=1)
    with caplog.at_level(logging.WARNING, logger="miro.data"):
        bs = batches(cfg, n=5, batch_size=2)  # 10 good samples = one pass
    keys = keys_of(bs)
    assert "s000i0002" not in keys and "s001i0003" not in keys and len(set(keys)) == 10
    assert sum(b["skipped"] for b in bs) == 2
    assert "not_an_image" in caplog.text and "empty_caption" in caplog.text


def test_damaged_tar_keeps_its_readable_samples(tmp_path, caplog):
    shards = make_dataset(tmp_path, n_shards=2, per_shard=10)
    data = shards[1].read_bytes()
    shards[1].write_bytes(data[: len(data) // 2])
    cfg = cfg_for(tmp_path, sampling="epoch", shuffle_buffer=1)
    with caplog.at_level(logging.WARNING, logger="miro.data"):
        bs = batches(cfg, n=6, batch_size=2)
    assert "damaged" in caplog.text
    assert any(k.startswith("s001") for k in keys_of(bs))


def test_all_bad_data_stops_instead_of_spinning(tmp_path):
    write_shards(tmp_path, n_shards=1, per_shard=5, corrupt={f"s000i{i:04d}": "image" for i in range(5)})
    cfg = cfg_for(tmp_path, max_bad_in_a_row=12)
    ds = MiroDataset(cfg, inspect_dataset(cfg, []), batch_size=2, seed=0)
    with pytest.raises(DataError, match="12 samples in a row"):
        next(iter(ds))


def test_missing_buckets_sidecar_names_the_shard(data, tmp_path):
    shards = make_dataset(tmp_path, n_shards=2, per_shard=3)
    shards[1].with_name(shards[1].name.replace(".tar", ".buckets.parquet")).unlink()
    with pytest.raises(DataError, match=r"toy-000001\.buckets\.parquet not found"):
        inspect_dataset(cfg_for(tmp_path), REWARDS)


def test_missing_stats_is_a_clear_error(tmp_path):
    make_dataset(tmp_path, n_shards=1, per_shard=3)
    (tmp_path / "reward_stats.json").unlink()
    with pytest.raises(DataError, match="reward_stats.json not found"):
        inspect_dataset(cfg_for(tmp_path), REWARDS)


def test_stats_fingerprint_mismatch(tmp_path):
    make_dataset(tmp_path, n_shards=1, per_shard=3)
    stats = tmp_path / "reward_stats.json"
    d = json.loads(stats.read_text())
    d["rewards"]["sharpness"]["mean"] = 0.7  # re-computed statistics, buckets not re-binned
    stats.write_text(json.dumps(d))
    with pytest.raises(DataError, match="different reward_stats.json"):
        inspect_dataset(cfg_for(tmp_path), REWARDS)


def test_reward_not_in_stats(tmp_path):
    make_dataset(tmp_path, n_shards=1, per_shard=3)
    with pytest.raises(DataError, match=r"\['pickscore'\] are not in"):
        inspect_dataset(cfg_for(tmp_path), ["sharpness", "pickscore"])


@pytest.mark.parametrize("change", ["drop", "extra"])
def test_shard_and_sidecar_keys_must_match(tmp_path, change):
    shards = make_dataset(tmp_path, n_shards=2, per_shard=4)
    keys = tar_keys(shards[1])[0]
    keys = keys[:2] + keys[3:] if change == "drop" else keys + ["zzz_other"]
    rebucket_with_keys(shards[1], keys)
    with pytest.raises(DataError, match="toy-000001.tar: keys of the tar and its buckets") as err:
        inspect_dataset(cfg_for(tmp_path), REWARDS)
    assert ("s001i0002" if change == "drop" else "zzz_other") in str(err.value)


def test_key_mismatch_is_caught_at_runtime_without_the_upfront_check(tmp_path):
    shards = make_dataset(tmp_path, n_shards=1, per_shard=4)
    rebucket_with_keys(shards[0], ["s000i0000"])
    cfg = cfg_for(tmp_path, verify_keys=False)
    info = inspect_dataset(cfg, REWARDS)
    with pytest.raises(DataError, match="s000i0001"):
        next(iter(MiroDataset(cfg, info, batch_size=2, seed=0)))


def test_out_of_range_bucket_is_rejected_when_loaded(tmp_path):
    """The reward values are checked on the CPU where the pipeline makes them (the model's forward does not
    sync an accelerator for it): a bucket >= num_bins would feed a value above 1."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shards = make_dataset(tmp_path, n_shards=1, per_shard=4)
    path = shards[0].with_name(shards[0].name.replace(".tar", ".buckets.parquet"))
    table = pq.read_table(path)
    col = table.column("contrast").to_numpy().copy()
    col[2] = NUM_BINS
    table = table.set_column(table.schema.get_field_index("contrast"), "contrast", pa.array(col))
    pq.write_table(table, path)
    cfg = cfg_for(tmp_path)
    info = inspect_dataset(cfg, REWARDS)
    with pytest.raises(DataError, match=rf"bucket {NUM_BINS} of reward 'contrast' at key 's000i0002' .* not in \[0, 1\]"):
        next(iter(MiroDataset(cfg, info, batch_size=2, seed=0)))


def test_too_few_shards_for_epoch_mode(data):
    with pytest.raises(DataError, match="at least one shard per rank and worker"):
        inspect_dataset(cfg_for(data, sampling="epoch", num_workers=3), REWARDS, world_size=2)


def test_config_values_are_validated():
    with pytest.raises(ConfigError, match="data.sampling='sometimes'"):
        to_typed({"shards": "x", "sampling": "sometimes"}, DataConfig)
    with pytest.raises(ConfigError, match="missing mandatory value: shards"):
        to_typed({}, DataConfig)
    with pytest.raises(ConfigError, match="data.hflip"):
        to_typed({"shards": "x", "hflip": True, "cache": True}, DataConfig)
