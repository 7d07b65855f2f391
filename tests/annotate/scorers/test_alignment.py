"""The ``alignment`` reward and the weight-free set on shapes-world shards, through the job."""

import io
import json
import math

import numpy as np
import pytest
from PIL import Image

from annotate.config import AnnotateConfig, DataConfig
from annotate.job import run_scoring
from annotate.scorers import build_scorer, build_scorers
from miro.contracts import sidecar
from miro.data.shapes.alignment import caption_alignment
from miro.data.shapes.config import CaptionConfig, ShapesConfig
from miro.data.shapes.world import ShapesWorld
from miro.data.shards import ShardWriter


@pytest.fixture(scope="module")
def world_shards(tmp_path_factory):
    """Two shards of a 64 px shapes world with its default degradations and half the captions wrong."""
    world = ShapesWorld(ShapesConfig(out="x", resolution=64, seed=11, captions=CaptionConfig(wrong=0.5)))
    folder = tmp_path_factory.mktemp("world")
    samples = [world.sample(i) for i in range(160)]
    with ShardWriter(folder, "shapes", maxcount=80) as w:
        for s in samples:
            w.write(s.key, s.members())
    return folder, samples


def test_scorer_is_caption_alignment(world_shards):
    _, samples = world_shards
    imgs = [Image.open(io.BytesIO(s.image)).convert("RGB") for s in samples[:6]]
    caps = [s.caption for s in samples[:6]]
    ours = build_scorer("alignment").score(imgs, caps)
    np.testing.assert_array_equal(ours, [caption_alignment(im, c) for im, c in zip(imgs, caps)])
    out = build_scorer("alignment").score([imgs[0], imgs[0]], [None, "a photo of a dog"])
    assert math.isnan(out[0]) and math.isnan(out[1])  # no caption / not a shapes-world caption
    (group,) = build_scorers(["contrast", "alignment"])
    assert group.outputs == ("contrast", "alignment") and group.text_outputs == {"alignment"}


def test_job_on_the_shapes_world_separates_what_it_should(world_shards, tmp_path):
    folder, samples = world_shards
    names = ["sharpness", "low_noise", "colorfulness", "contrast", "alignment"]
    run_scoring(AnnotateConfig(data=DataConfig(shards=str(folder)), out_dir=str(tmp_path), rewards=names, workers=2, progress=False))
    cols = {n: [] for n in names}
    for p in sorted(tmp_path.glob("*.rewards.parquet")):
        t, meta = sidecar.read_rewards(p)
        for n in names:
            cols[n] += t.column(n).to_pylist()
        assert meta["rewards"]["alignment"]["model"] == "weight-free:alignment"
    cols = {n: np.array(v) for n, v in cols.items()}
    records = [s.record for s in samples]
    kinds = np.array([r["caption_kind"] for r in records])
    clean = np.array([not r.get("degradations") for r in records])
    assert clean.sum() >= 10
    good, wrong = cols["alignment"][kinds == "correct"], cols["alignment"][kinds != "correct"]
    assert cols["alignment"][(kinds == "correct") & clean].mean() > 0.95  # clean images, true captions
    assert good.mean() > wrong.mean() + 0.3 and wrong.mean() < 0.6, (good.mean(), wrong.mean())

    def applied(name):
        return np.array([name in (r.get("degradations") or {}) for r in records])

    # each degradation lowers the reward meant to see it (means over this world's samples)
    for reward, degradation in [("sharpness", "blur"), ("low_noise", "noise"), ("contrast", "low_contrast")]:
        hit = applied(degradation)
        assert hit.sum() >= 10
        assert cols[reward][hit].mean() < cols[reward][clean].mean(), (reward, degradation)
    assert json.dumps(records[0])  # records are the KEY.json the generator wrote
