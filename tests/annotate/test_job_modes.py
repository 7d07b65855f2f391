"""The annotation job on the inputs of issue #12: images in every mode reach each scorer as opened, transparency is
recorded as the status ``alpha`` (scores kept), HPSv2's already-224 images are padded (alone and batched with a
square), and empty captions get the official score of ``""`` with the status ``empty_caption``."""

import numpy as np
import pytest

from annotate.config import AnnotateConfig, DataConfig
from annotate.job import run_scoring
from annotate.scorers import build_scorers
from miro.contracts import sidecar
from miro.data.images import decode_image
from miro.data.shards import ShardWriter, iter_shard
from tests.annotate.conftest import TINY_BLIP, encode, photo_like
from tests.annotate.scorers.test_modes import MODES, as_opened


def _settings(imagereward_files, hps_checkpoint, tiny_open_clip_arch, pickscore_dir):
    ckpt, med = imagereward_files
    return {
        "imagereward": {"checkpoint": str(ckpt), "med_config": str(med), "vision": TINY_BLIP},
        "hpsv2": {"checkpoint": str(hps_checkpoint), "arch": tiny_open_clip_arch},
        "pickscore": {"model": str(pickscore_dir), "processor": str(pickscore_dir)},
        "contrast": {},
    }


def _run(folder, settings, batch_size=4):
    data = DataConfig(shards=str(folder))
    run_scoring(AnnotateConfig(data=data, progress=False, rewards=settings, workers=1, batch_size=batch_size, device="cpu"))
    (shard,) = sorted(folder.glob("*.tar"))
    t, meta = sidecar.read_rewards(sidecar.rewards_path(shard))
    return shard, t.to_pydict(), meta


def _expected(shard, settings, rewards):
    """The scorer API on the images as opened, with "" for an empty caption (what the official scorers get)."""
    members = [m for _, m in iter_shard(shard)]
    imgs = [decode_image(m.get("png") or m.get("jpg"), keep_mode=True) for m in members]
    caps = [m["txt"].decode().strip() for m in members]
    out = {}
    for s in build_scorers(rewards, settings):
        out.update(s.score_dict(imgs, caps))
    return out


def test_every_mode_alpha_status_hps_224_and_empty_caption(tmp_path, imagereward_files, hps_checkpoint, tiny_open_clip_arch, pickscore_dir):
    settings = _settings(imagereward_files, hps_checkpoint, tiny_open_clip_arch, pickscore_dir)
    expect_status = {}
    with ShardWriter(tmp_path / "shards", "modes", maxcount=100) as w:
        for i, mode in enumerate(MODES):
            img = as_opened(mode, seed=i)
            fmt = "jpg" if mode == "CMYK" else "png"
            data = encode(img, "JPEG", quality=95) if fmt == "jpg" else encode(img, "PNG", **({"transparency": img.info["transparency"]} if "transparency" in img.info else {}))
            key = f"m{i:02d}"
            w.write(key, {fmt: data, "txt": f"a {mode} picture"})
            expect_status[key] = "alpha" if mode in ("P+transparency", "LA", "RGBA") else "ok"
        # the 224 x 160 image lands in a batch of 4 with square images (HPSv2's collate), one more with an empty caption
        w.write("x00wide224", {"png": encode(photo_like(20, 160, 224)), "txt": "a wide picture"})
        w.write("x01tall224", {"png": encode(photo_like(21, 224, 160)), "txt": "a tall picture"})
        w.write("x02empty", {"png": encode(photo_like(22, 64, 64)), "txt": " \n"})
        expect_status.update({"x00wide224": "ok", "x01tall224": "ok", "x02empty": "empty_caption"})
    shard, d, meta = _run(tmp_path / "shards", settings)
    assert dict(zip(d["key"], d["status"])) == expect_status
    assert meta["report"]["status_counts"]["alpha"] == 3
    expect = _expected(shard, settings, list(settings))
    for r in settings:
        col = np.array(d[r])
        assert np.all(np.isfinite(col)), (r, col)  # alpha and empty captions keep their scores
        np.testing.assert_allclose(col, expect[r], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("hw", [(160, 224), (224, 160)])
def test_hps_already_224_alone_in_a_batch(tmp_path, hps_checkpoint, tiny_open_clip_arch, hw):
    settings = {"hpsv2": {"checkpoint": str(hps_checkpoint), "arch": tiny_open_clip_arch}}
    with ShardWriter(tmp_path / "shards", "one", maxcount=10) as w:
        w.write("only", {"png": encode(photo_like(5, *hw)), "txt": "a picture"})
    shard, d, _ = _run(tmp_path / "shards", settings, batch_size=1)
    assert d["status"] == ["ok"] and np.isfinite(d["hpsv2"][0])
    np.testing.assert_allclose(d["hpsv2"], _expected(shard, settings, ["hpsv2"])["hpsv2"], atol=1e-6)
