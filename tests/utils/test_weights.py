import hashlib
from pathlib import Path

import pytest
import torch

from miro.utils.device import parse_dtype
from miro.utils.weights import (
    Location,
    WeightsNotFoundError,
    hub_offline,
    is_local,
    load_pretrained,
    local_folder,
    parse_location,
    read_checkpoint,
    resolve_dir,
    resolve_file,
    sha256_file,
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


def test_one_location_syntax(tmp_path):
    """Local paths, hf://ORG/REPO[/PATH] and bare repo ids, parsed the same way for every loader."""
    assert parse_location(str(tmp_path)) == Location(str(tmp_path), path=tmp_path)
    assert parse_location("~/w/head.pth").path == Path("~/w/head.pth").expanduser()
    assert parse_location("hf://THUDM/ImageReward/ImageReward.pt") == Location(
        "hf://THUDM/ImageReward/ImageReward.pt", repo="THUDM/ImageReward", subpath="ImageReward.pt")
    assert parse_location("hf://org/repo/sub/dir").subpath == "sub/dir"
    assert parse_location("google/flan-t5-xl") == Location("google/flan-t5-xl", repo="google/flan-t5-xl")
    assert parse_location("gpt2").repo == "gpt2"
    assert parse_location("a/b/c").is_local and parse_location("./x").is_local
    assert not is_local("hf://org/repo")
    with pytest.raises(ValueError, match="hf://<org>/<repo>"):
        parse_location("hf://only-org")


def test_resolve_file_and_dir(tmp_path, monkeypatch):
    (tmp_path / "w.pt").write_bytes(b"x")
    assert resolve_file(str(tmp_path / "w.pt"), what="w") == tmp_path / "w.pt"
    assert resolve_dir(str(tmp_path), what="d") == tmp_path
    with pytest.raises(WeightsNotFoundError, match=r"head: file .*nope\.pt' does not exist\. It comes from X\. .*k=/path/to/file"):
        resolve_file(str(tmp_path / "nope.pt"), what="head", source="X", key="k")
    with pytest.raises(WeightsNotFoundError, match=r"folder .*nope' does not exist"):
        resolve_dir(str(tmp_path / "nope"), what="d", source="X")
    with pytest.raises(WeightsNotFoundError, match=r"hf://org/w\.pt/<file>"):
        resolve_file("org/w.pt", what="w")  # a bare string is a path where a file is expected
    with pytest.raises(ValueError, match="a file is needed"):
        resolve_file("hf://org/repo", what="w")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_offline()
    for spec in ("hf://miro-test/not-cached", "miro-test/not-cached"):
        with pytest.raises(WeightsNotFoundError, match=r"neither a local path nor in the Hugging Face cache.*comes from Y.*"
                                                       r"huggingface-cli download miro-test/not-cached.*k=/path/to/folder"):
            resolve_dir(spec, what="d", source="Y", key="k", download=True)
    with pytest.raises(WeightsNotFoundError, match=r"'hf://miro-test/not-cached/w\.pt'.*offline \(HF_HUB_OFFLINE\)"):
        resolve_file("hf://miro-test/not-cached/w.pt", what="w", download=True)


def test_offline_flags_are_read_when_called(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    assert not hub_offline()
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "yes")
    assert hub_offline()
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "ON")
    assert hub_offline()


def test_sha256_is_cached_per_size_and_mtime(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"one")
    assert sha256_file(f) == hashlib.sha256(b"one").hexdigest() == sha256_file(str(f))
    f.write_bytes(b"three")
    assert sha256_file(f) == hashlib.sha256(b"three").hexdigest()


def test_read_checkpoint_pickle_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    sd = {"w": torch.arange(3.0)}
    torch.save(sd, tmp_path / "a.pth")
    save_file(sd, tmp_path / "a.safetensors")
    for name in ("a.pth", "a.safetensors"):
        assert torch.equal(read_checkpoint(tmp_path / name)["w"], sd["w"])
    torch.save({"w": sd["w"], "fn": print}, tmp_path / "unsafe.pth")  # not plain tensors: weights_only refuses it
    with pytest.raises(Exception, match="[Ww]eights only"):
        read_checkpoint(tmp_path / "unsafe.pth")


def test_hf_style_subpaths_and_legacy_exceptions(tmp_path):
    with pytest.raises(ValueError, match="subfolder"):
        load_pretrained(lambda src: src, "hf://org/repo/vae", "thing", "a.key")
    assert load_pretrained(lambda src: src, "hf://org/repo", "thing", "a.key") == "org/repo"
    assert issubclass(WeightsNotFoundError, FileNotFoundError)
    from miro.eval.geneval.colors import ColorModelUnavailable
    from miro.eval.geneval.detector import DetectorUnavailable

    assert issubclass(DetectorUnavailable, WeightsNotFoundError) and issubclass(ColorModelUnavailable, WeightsNotFoundError)
