"""Fault injection, data stages: the shard reader, the training pipeline, the feature cache, the importer and
shapes-world generation.  Members without extension, corrupt and odd files, dot-files, disk full, read-only
folders, reruns and kills; counts add up (in = written + skipped, each with a reason), no traceback reaches
the user, nothing is written outside the output folder."""

from __future__ import annotations

import errno
import json
import logging
import tarfile
from itertools import islice
from pathlib import Path

import pytest

from miro.data.shards import NO_EXTENSION, iter_shard, tar_keys
from tests.data.make_dataset import REWARDS, annotate
from tests.faults.conftest import assert_one_line_error, run_module, shard_with_extra, snapshot

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
    from miro.utils.storage import OutputError
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
    from miro.utils.storage import OutputError

    ro = readonly(tmp_path / "ro")
    with pytest.raises(OutputError, match="out .*ro is not writable"):
        _shapes(ro)


# --- importer ----------------------------------------------------------------------------------------------------
def _png(seed: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((12, 16, 3)) * 255).astype("uint8")).save(buf, "PNG")
    return buf.getvalue()


def _src(tmp_path: Path, n: int = 7) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(n):
        (src / f"img{i}.png").write_bytes(_png(i))
        (src / f"img{i}.txt").write_text(f"picture {i}")
    (src / ".hidden.png").write_bytes(_png(99))
    (src / ".hidden.txt").write_text("a hidden picture")
    (src / "._img0.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")  # macOS resource fork: not an image
    (src / "orphan.txt").write_text("no image")
    (src / "notes.md").write_text("# notes")
    return src


def test_importer_accounts_for_every_file_and_counts_add_up(tmp_path):
    from miro.data.importer import ImportConfig, run_import

    src = _src(tmp_path)
    out = tmp_path / "out"
    before = snapshot(tmp_path, exclude=out)
    report = run_import(ImportConfig(src=str(src), out=str(out), shard_size=3), progress=False)
    assert snapshot(tmp_path, exclude=out) == before  # nothing written outside out
    assert report["candidates"] == report["imported"] + report["skipped"] == 9  # 7 + .hidden.png + ._img0.png
    assert report["imported"] == 8 and report["reasons"] == {"missing_caption": 1}  # ._img0.png (no ._img0.txt)
    assert [f["path"] for f in report["skipped_files"]] == ["._img0.png"]
    assert {f["path"]: f["reason"] for f in report["unused_files"]} == {"notes.md": "not_an_image_file", "orphan.txt": "caption_without_image"}
    sources = [json.loads(m["json"])["source"] for p in sorted(out.glob("*.tar")) for _, m in iter_shard(p)]
    assert sources[0] == ".hidden.png" and len(sources) == 8
    files_in_src = sum(1 for p in src.rglob("*") if p.is_file())
    images_and_captions = report["imported"] + report["skipped"]
    assert files_in_src == images_and_captions + report["unused"] + 8  # + the 8 captions of imported images


def _enospc_after(n: int) -> str:
    """Python code that makes the n-th ShardWriter.write fail with ENOSPC (a full disk)."""
    return (
        "import errno\nfrom miro.data import shards\nreal = shards.ShardWriter.write\ncalls = [0]\n"
        "def write(self, key, members):\n    calls[0] += 1\n"
        f"    if calls[0] == {n}:\n        raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "    return real(self, key, members)\nshards.ShardWriter.write = write\n"
    )


def test_importer_disk_full_cleans_up_writes_the_report_and_stops_with_one_line(tmp_path):
    import subprocess
    import sys

    from tests.faults.conftest import ROOT

    src = _src(tmp_path)
    out = tmp_path / "out"
    code = _enospc_after(6) + f"from miro.data.importer import main\nmain(['src={src}', 'out={out}', 'shard_size=2'])\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    last = assert_one_line_error(proc, "import stopped: disk full", "4 of 9 images imported into 2 complete shards")
    assert "rerun with overwrite=true" in last
    assert sorted(p.name for p in out.iterdir()) == ["import-000000.tar", "import-000001.tar", "import_report.json"]  # no temp
    report = json.loads((out / "import_report.json").read_text())
    assert report["stopped"].startswith("disk full") and report["imported"] == 4
    assert report["imported"] + report["skipped"] + report["not_reached"] == report["candidates"] == 9
    assert sum(1 for p in out.glob("*.tar") for _ in iter_shard(p)) == 4


def test_importer_disk_full_when_the_last_shard_is_closed(tmp_path, monkeypatch):
    from miro.data.importer import ImportConfig, ImportStopped, run_import

    src = _src(tmp_path)
    out = tmp_path / "out"
    real = tarfile.TarFile.close

    def close(self):
        if self.fileobj is not None and not self.closed and ".import-000002.tar" in str(getattr(self, "name", "")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self)

    monkeypatch.setattr(tarfile.TarFile, "close", close)
    with pytest.raises(ImportStopped, match="disk full"):
        run_import(ImportConfig(src=str(src), out=str(out), shard_size=3), progress=False)  # 3 + 3 + the last 2
    monkeypatch.setattr(tarfile.TarFile, "close", real)
    assert sorted(p.name for p in out.iterdir()) == ["import-000000.tar", "import-000001.tar", "import_report.json"]
    report = json.loads((out / "import_report.json").read_text())
    assert (report["imported"], report["skipped"], report["not_reached"]) == (6, 1, 2)


def test_importer_read_only_out_is_one_line_before_any_image_is_read(tmp_path, readonly, monkeypatch):
    from miro.data import importer
    from miro.utils.storage import OutputError

    src = _src(tmp_path)
    ro = readonly(tmp_path / "ro")
    monkeypatch.setattr(importer, "process", lambda *a: pytest.fail("an image was read"))
    with pytest.raises(OutputError, match="out .*ro is not writable"):
        importer.run_import(importer.ImportConfig(src=str(src), out=str(ro)), progress=False)


def test_importer_rerun_after_a_kill_gives_identical_shards(tmp_path):
    from miro.data.importer import ImportConfig, run_import

    src = _src(tmp_path)
    ref = tmp_path / "ref"
    run_import(ImportConfig(src=str(src), out=str(ref), shard_size=3), progress=False)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".import-000001.tar.999-dead.tmp").write_bytes(b"left by a kill")
    (out / "import-000000.tar").write_bytes((ref / "import-000000.tar").read_bytes())  # the shard finished before the kill
    proc = run_module("miro.data.importer", f"src={src}", f"out={out}", "shard_size=3", cwd=tmp_path)
    assert_one_line_error(proc, "overwrite=true")  # a rerun refuses to mix
    run_import(ImportConfig(src=str(src), out=str(out), shard_size=3, overwrite=True), progress=False)
    for p in ref.glob("*.tar"):
        assert (out / p.name).read_bytes() == p.read_bytes()


def test_animated_image_keeps_frame_one_and_says_so(tmp_path, caplog):
    import io

    from PIL import Image

    from miro.data import images
    from miro.data.importer import ImportConfig, run_import

    frames = [Image.new("RGB", (16, 12), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50)
    images._animated_seen[0] = 0
    with caplog.at_level(logging.WARNING, logger="miro.data.images"):
        img = images.decode_image(buf.getvalue())
    assert img.info["frames"] == 3 and img.getpixel((0, 0)) == (255, 0, 0)
    assert "animated image (3 frames): only the first frame is used" in caplog.text
    src = tmp_path / "src"
    src.mkdir()
    (src / "anim.gif").write_bytes(buf.getvalue())
    (src / "anim.txt").write_text("three colours")
    report = run_import(ImportConfig(src=str(src), out=str(tmp_path / "out")), progress=False)
    assert report["imported"] == 1 and report["animated_first_frame"] == ["anim.gif"]
    (_, members), = iter_shard(tmp_path / "out" / "import-000000.tar")
    assert json.loads(members["json"])["frames"] == 3


@pytest.mark.parametrize("module, args, needle", [
    ("miro.data.importer", ["src=.", "out=o", "shard_size=abc"], "shard_size: Value 'abc' of type 'str' could not be converted"),
    ("miro.data.importer", ["src=.", "out=o", "nokey=1"], "nokey: Key 'nokey' not in 'ImportConfig'"),
    ("miro.data.importer", ["src=./none", "out=o"], "src='./none': must be an existing directory"),
    ("annotate", ["data.shards=.", "batch_size=abc"], "batch_size: Value 'abc'"),
    ("annotate", ["rewards=nope"], "Could not find 'rewards/nope' (available: aesthetic,"),
    ("annotate", ["stage=stats", "data.shards=.", "stats.num_bins=eight"], "stats.num_bins: Value 'eight'"),
    ("miro.data.shapes", ["out=w", "resolution=big"], "resolution: Value 'big'"),
])
def test_config_errors_are_one_line_without_a_hydra_report(tmp_path, module, args, needle):
    proc = run_module(module, *args, cwd=tmp_path)
    assert_one_line_error(proc, needle)
    assert "HYDRA_FULL_ERROR" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_importer_follows_symlinked_folders_once(tmp_path):
    from miro.data.importer import ImportConfig, run_import

    src = _src(tmp_path)
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "far.png").write_bytes(_png(50))
    (other / "far.txt").write_text("far away")
    (src / "linked").symlink_to(other, target_is_directory=True)
    (other / "loop").symlink_to(src, target_is_directory=True)  # a cycle back to src: walked once
    report = run_import(ImportConfig(src=str(src), out=str(tmp_path / "out")), progress=False)
    assert report["imported"] == 9 and report["candidates"] == report["imported"] + report["skipped"]
    sources = [json.loads(m["json"])["source"] for p in sorted((tmp_path / "out").glob("*.tar")) for _, m in iter_shard(p)]
    assert "linked/far.png" in sources and len(sources) == len(set(sources))
