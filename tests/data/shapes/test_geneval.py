"""GenEval scoring of shapes-world images: the detector plus GenEval's rules on generated samples."""

import io
import json

from PIL import Image

from miro.data.shapes.config import CaptionConfig, DegradationsConfig, DegradationSpec, ShapesConfig
from miro.data.shapes.geneval import evaluate_image
from miro.data.shapes.world import ShapesWorld

CLEAN = DegradationsConfig(**{k: DegradationSpec(prob=0.0) for k in ("clutter", "blur", "low_contrast", "color_cast", "noise", "jpeg")})


def test_correct_captions_pass_and_wrong_ones_fail():
    world = ShapesWorld(ShapesConfig(out="x", resolution=64, seed=21, degradations=CLEAN,
                                     captions=CaptionConfig(wrong=0.5, geneval_phrasing=1.0)))
    outcomes = {"correct": [], "wrong": []}
    for i in range(100):
        s = world.sample(i)
        meta = s.record["caption_metadata"]
        row = evaluate_image(Image.open(io.BytesIO(s.image)), meta, filename=f"{i:05d}.png")
        assert row["filename"] == f"{i:05d}.png" and row["prompt"] == s.caption
        assert json.loads(row["metadata"]) == meta and (row["reason"] == "") == row["correct"]
        outcomes["correct" if s.record["caption_kind"] == "correct" else "wrong"].append(row["correct"])
    assert sum(outcomes["correct"]) >= 0.97 * len(outcomes["correct"])
    assert sum(outcomes["wrong"]) <= 0.03 * len(outcomes["wrong"])
    assert len(outcomes["wrong"]) > 30
