"""Shard names, listing and the paths of per-shard files."""

import pytest

from miro.contracts.shards import find_shards, list_shards, shard_name, shard_stem, shards_root, sidecar_path
from tests.data.test_shards import _write


def test_listing_and_names(tmp_path):
    _write(tmp_path)
    assert len(list_shards(str(tmp_path / "toy-{000000..000002}.tar"))) == 3
    assert len(list_shards(str(tmp_path / "*.tar"))) == 3
    with pytest.raises(FileNotFoundError):
        list_shards(str(tmp_path / "toy-{000000..000009}.tar"))
    assert shard_stem(tmp_path / "toy-000001.tar") == "toy-000001"
    with pytest.raises(ValueError):
        shard_stem("toy.tar")
    s = tmp_path / "sub" / "toy-000001.tar"
    assert sidecar_path(s, ".rewards.parquet") == tmp_path / "sub" / "toy-000001.rewards.parquet"
    assert sidecar_path(s, ".rewards.parquet", out_dir=tmp_path / "ann", root=tmp_path) == tmp_path / "ann" / "sub" / "toy-000001.rewards.parquet"


def test_shard_name_range():
    assert shard_name("cc12m", 7) == "cc12m-000007.tar"
    for bad in (-1, 1_000_000):
        with pytest.raises(ValueError, match="outside 0..999999"):
            shard_name("cc12m", bad)


def test_shards_root_is_the_given_root_the_folder_or_the_common_parent(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shards = [tmp_path / "a" / "x-000000.tar", tmp_path / "b" / "x-000001.tar"]
    assert shards_root("ignored", shards, "/data/ann") == tmp_path.__class__("/data/ann")
    assert shards_root(str(tmp_path), shards, None) == tmp_path
    assert shards_root([str(s) for s in shards], shards, None) == tmp_path.resolve()
    assert shards_root(str(tmp_path / "a" / "x-{000000..000000}.tar"), shards[:1], None) == (tmp_path / "a").resolve()


def test_find_shards_gives_the_shards_and_their_root_or_a_clear_error(tmp_path):
    _write(tmp_path / "ds")
    shards, root = find_shards(str(tmp_path / "ds"))
    assert [p.name for p in shards] == ["toy-000000.tar", "toy-000001.tar", "toy-000002.tar"] and root == tmp_path / "ds"
    shards, root = find_shards(str(tmp_path / "ds" / "*.tar"), root="/ann", resolve=True)
    assert all(p.is_absolute() for p in shards) and root == tmp_path.__class__("/ann")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"data.shards='.*empty': no NAME-NNNNNN.tar shards found"):
        find_shards(str(tmp_path / "empty"))
