"""Fault injection, data stages: the shard reader, the training pipeline, the feature cache, the importer and
shapes-world generation.  Members without extension, corrupt and odd files, dot-files, disk full, read-only
folders, reruns and kills; counts add up (in = written + skipped, each with a reason), no traceback reaches
the user, nothing is written outside the output folder."""

from __future__ import annotations

import logging
from itertools import islice
from pathlib import Path

import pytest

from miro.data.shards import NO_EXTENSION, iter_shard, tar_keys
from tests.data.make_dataset import REWARDS, annotate
from tests.faults.conftest import assert_one_line_error, run_module, shard_with_extra

POSITIONS = [(5, 0), (5, 2), (5, 4), (5, 5), (5, "inside"), (10, 0), (10, 3), (10, 9), (10, 10), (10, "inside")]


@pytest.mark.parametrize("n, where", POSITIONS)
def test_reader_skips_a_member_without_extension_and_keeps_every_sample(tmp_path, n, where):
    shard, keys = shard_with_extra(tmp_path / "x-000000.tar", n, {where: ("noext", b"data")})
    skipped = []
    samples = list(iter_shard(shard, on_skip=lambda m, r: skipped.append((m, r))))
    assert [k for k, _ in samples] == keys  # before: 1 of 5 / 7 of 10 samples lost
    assert all(set(m) == {"png", "txt"} for _, m in samples)  # grouping goes on across the skipped member
    assert skipped == [("noext", NO_EXTENSION)]
    assert tar_keys(shard) == (keys, False)


def test_reader_logs_a_skipped_member_when_nobody_counts_it(tmp_path, caplog):
    shard, keys = shard_with_extra(tmp_path / "x-000000.tar", 3, {1: ("README", b"")})
    with caplog.at_level(logging.WARNING, logger="miro.data.shards"):
        assert [k for k, _ in iter_shard(shard)] == keys
    assert "'README' has no extension; skipped" in caplog.text


def test_training_pipeline_reads_a_shard_with_a_member_without_extension(tmp_path, caplog):
    """Before: training refused the shard (its keys did not match the buckets) with advice that did not help."""
    from miro.data.pipeline import DataConfig, MiroDataset, inspect_dataset, make_loader

    shards = [shard_with_extra(tmp_path / f"x-{i:06d}.tar", 10, {3: ("README", b"x")}, prefix=f"s{i}k")[0] for i in range(2)]
    annotate(shards)
    cfg = DataConfig(shards=str(tmp_path), resolution=16, num_workers=0, shuffle_buffer=1, shuffle_initial=1, sampling="epoch")
    ds = MiroDataset(cfg, inspect_dataset(cfg, REWARDS), batch_size=4, seed=0)
    with caplog.at_level(logging.WARNING, logger="miro.data"):
        bs = list(islice(iter(make_loader(ds)), 5))
    keys = {k for b in bs for k in b["keys"]}
    assert keys == {f"s{i}k{j:04d}" for i in range(2) for j in range(10)}
    assert NO_EXTENSION in caplog.text


def test_feature_cache_records_the_skipped_member(tmp_path):
    from miro.data.cache import cache_identity, cache_path, cache_shards, read_shard_cache
    from miro.models.autoencoders import IdentityAutoencoder
    from tests.train.tiny import TinyTextEncoder

    shard, keys = shard_with_extra(tmp_path / "d" / "x-000000.tar", 5, {2: ("noext", b"x")})
    te, ae = TinyTextEncoder(), IdentityAutoencoder()
    summary = cache_shards([shard], te, ae, 16)
    assert summary["samples"] == 5 and summary["ignored_members"] == 1 and summary["bad_samples"] == 0
    cache = read_shard_cache(cache_path(shard, cache_identity(te.identifier(), ae.identifier(), 16)))
    assert cache.keys == keys and cache.ignored_members == {"noext": NO_EXTENSION}


def test_feature_cache_read_only_folder_is_found_first(tmp_path, readonly):
    from miro.data.cache import cache_shards
    from miro.models.autoencoders import IdentityAutoencoder
    from miro.utils.fs import OutputError
    from tests.train.tiny import TinyTextEncoder

    shard, _ = shard_with_extra(tmp_path / "d" / "x-000000.tar", 3)
    ro = readonly(tmp_path / "cache")
    with pytest.raises(OutputError, match="feature cache folder .*cache is not writable"):
        cache_shards([shard], TinyTextEncoder(), IdentityAutoencoder(), 16, cache_dir=ro, root=tmp_path / "d")


# --- shapes world ----------------------------------------------------------------------------------------------
def _shapes(out: Path, **kw):
    from miro.data.shapes.config import HeldoutConfig, ShapesConfig
    from miro.data.shapes.generate import generate

    base = {"out": str(out), "num_samples": 12, "shard_size": 4, "resolution": 32, "heldout": HeldoutConfig(prompts_per_task=1)}
    return generate(ShapesConfig(**{**base, **kw}), progress=False)


def test_shapes_kill_then_rerun_is_identical_and_a_changed_rerun_is_refused(tmp_path):
    out = tmp_path / "w"
    _shapes(out)
    ref = {p.name: p.read_bytes() for p in (out / "train").glob("*.tar")}
    victim = sorted((out / "train").glob("*.tar"))[1]
    victim.unlink()
    (out / "train" / f".{victim.name}.123-abcd.tmp").write_bytes(b"half")  # what a killed writer leaves
    summary = _shapes(out)
    assert summary["shards_written"] == 1 and summary["shards_kept"] == 2
    assert {p.name: p.read_bytes() for p in (out / "train").glob("*.tar")} == ref
    assert not list((out / "train").glob(".*"))
    proc = run_module("miro.data.shapes", f"out={out}", "num_samples=12", "shard_size=4", "resolution=48", "heldout.prompts_per_task=1",
                      cwd=tmp_path)
    assert_one_line_error(proc, "another configuration")


def test_shapes_read_only_output_folder_is_one_line(tmp_path, readonly):
    from miro.utils.fs import OutputError

    ro = readonly(tmp_path / "ro")
    with pytest.raises(OutputError, match="out .*ro is not writable"):
        _shapes(ro)
