"""The shapes-world GenEval, end to end through the command: held-out prompts, oracle images, the
programmatic detector with exact colours, GenEval's rules, the summary."""

import json

import pytest

from miro.data.shapes.config import ShapesConfig
from miro.data.shapes.heldout import write_heldout
from miro.eval.cli import main
from miro.eval.geneval.prompts import load_metadata
from miro.eval.geneval.shapes_oracle import oracle_generate_fn, scene_specs


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    cfg = ShapesConfig(out=str(root))
    cfg.heldout.prompts_per_task = 2
    write_heldout(cfg, root / "heldout")
    return root / "heldout" / "evaluation_metadata.jsonl"


def test_oracle_images_score_full_marks_in_one_command(heldout, tmp_path, capsys):
    items = load_metadata(heldout)
    run = tmp_path / "oracle"
    main(["geneval", f"image_dir={run}", f"prompts.metadata={heldout}", "detector=shapes",
          "generate.source=shapes_oracle", "generate.n_samples=2", "generate.batch_size=2"])  # fmt: skip
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * len(items)
    assert {r["tag"] for r in rows} == {"single_object", "two_object", "counting", "colors", "position", "color_attr"}
    assert all(r["correct"] for r in rows), [r["reason"] for r in rows if not r["correct"]]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["overall"] == 1.0 and summary["correct_prompts"] == 1.0
    assert "Overall score (avg. over tasks): 1.00000" in capsys.readouterr().out
    settings = json.loads((run / "results.settings.json").read_text())
    assert settings["detector"]["name"] == "shapes" and "colors" not in settings


def test_oracle_scenes_hold_what_the_prompt_asks():
    import numpy as np
    import torch

    meta = {"tag": "counting", "include": [{"class": "star", "count": 3}], "exclude": [{"class": "star", "count": 4}],
            "prompt": "a photo of three stars"}  # fmt: skip
    specs, rel = scene_specs(meta, np.random.default_rng(0), ("red", "blue"))
    assert [c for c, _ in specs] == ["star"] * 3 and rel is None
    pos = {"tag": "position", "include": [{"class": "circle", "count": 1},
           {"class": "star", "count": 1, "color": "red", "position": ["left of", 0]}], "prompt": "x"}  # fmt: skip
    specs, rel = scene_specs(pos, np.random.default_rng(0), ("blue",))
    assert specs == [("circle", "blue"), ("star", "red")] and rel == "left of"
    generate = oracle_generate_fn(resolution=48)
    a = generate("a photo of a red circle", 2, torch.Generator().manual_seed(1))
    b = generate("a photo of a red circle", 2, torch.Generator().manual_seed(1))
    assert [im.size for im in a] == [(48, 48)] * 2
    assert [np.asarray(im).tolist() for im in a] == [np.asarray(im).tolist() for im in b]
    with pytest.raises(ValueError, match="not a shapes-world GenEval prompt"):
        generate("a photo of a bench", 1, torch.Generator())
