import hashlib

import pytest
import torch

from miro.models.weights import (
    WeightsNotFoundError,
    is_local,
    load_pretrained,
    local_folder,
    parse_dtype,
    weights_fingerprint,
)


def test_fingerprint_follows_the_weight_bytes(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert weights_fingerprint(tmp_path) == "unknown"  # no weight file
    (tmp_path / "model.safetensors").write_bytes(b"weights-v1")
    first = weights_fingerprint(tmp_path)
    assert len(first) == 16 and first == weights_fingerprint(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"weights-v2")
    assert weights_fingerprint(tmp_path) != first
    (tmp_path / "notes.txt").write_text("ignored")
    assert weights_fingerprint(tmp_path) == weights_fingerprint(tmp_path)


def test_hf_cache_blob_names_are_used_without_rehashing(tmp_path):
    """In the HF cache a snapshot file links to blobs/<sha256>; the fingerprint equals hashing the bytes."""
    content = b"some weights"
    digest = hashlib.sha256(content).hexdigest()
    blobs, snap, plain = tmp_path / "blobs", tmp_path / "snap", tmp_path / "plain"
    for d in (blobs, snap, plain):
        d.mkdir()
    (blobs / digest).write_bytes(content)
    (snap / "model.safetensors").symlink_to(blobs / digest)
    (plain / "model.safetensors").write_bytes(content)
    assert weights_fingerprint(snap) == weights_fingerprint(plain)


def test_paths_versus_repo_ids(tmp_path):
    assert is_local(str(tmp_path)) and is_local("./x") and is_local("/nope")
    assert not is_local("google/flan-t5-xl")
    assert local_folder(str(tmp_path), "vae") == tmp_path / "vae"
    assert local_folder("miro-test/not-cached") is None
    assert parse_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ValueError, match="x.dtype='half'"):
        parse_dtype("half", "x.dtype")


def test_load_pretrained_wraps_errors(tmp_path):
    def fail(_):
        raise OSError("no config.json")

    with pytest.raises(WeightsNotFoundError, match=r"thing: no folder at .*missing.*\(from a\.key\)"):
        load_pretrained(fail, str(tmp_path / "missing"), "thing", "a.key")
    with pytest.raises(WeightsNotFoundError, match="does not hold a loadable checkpoint"):
        load_pretrained(fail, str(tmp_path), "thing", "a.key")
    assert load_pretrained(lambda src: src, str(tmp_path), "thing", "a.key") == str(tmp_path)
