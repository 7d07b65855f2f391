"""heldout/evaluation_metadata.jsonl: GenEval's exact schema, formatting and phrasing, led by held-out compositions."""

import json
from pathlib import Path

import pytest

from miro.data.shapes.alignment import parse_caption
from miro.data.shapes.config import TASKS, ShapesConfig
from miro.data.shapes.heldout import evaluation_metadata, write_heldout
from miro.data.shapes.scene import Vocabulary
from miro.utils.config import to_typed

OFFICIAL = Path("/work/shared/data/geneval/evaluation_metadata.jsonl")


def shape_of(row):
    """Key order and value types of a row, recursively (what must match GenEval's file)."""
    def item(c):
        return tuple((k, type(v).__name__ if k != "position" else ("list", type(v[0]).__name__, type(v[1]).__name__)) for k, v in c.items())

    return (row["tag"], tuple(row), tuple(item(c) for c in row["include"]), tuple(item(c) for c in row.get("exclude", [])))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("heldout")
    cfg = to_typed({"out": "x", "heldout": {"prompts_per_task": 30}}, ShapesConfig)
    write_heldout(cfg, out)
    return cfg, out


def test_formatting_and_tasks(written):
    cfg, out = written
    lines = (out / "evaluation_metadata.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [json.dumps(r) for r in rows] == lines  # json.dumps defaults, one object per line, as GenEval writes
    assert (out / "generation_prompts.txt").read_text().splitlines() == [r["prompt"] for r in rows]
    tags = [r["tag"] for r in rows]
    assert tags == sorted(tags, key=TASKS.index)  # GenEval's task order
    counts = {t: tags.count(t) for t in TASKS}
    assert counts["single_object"] == len(cfg.scene.classes)
    assert counts["counting"] == 24  # every (class, count 2..4) once: fewer distinct prompts than asked
    assert all(counts[t] == 30 for t in ("two_object", "colors", "position", "color_attr"))
    assert len({json.dumps(r) for r in rows}) == len(rows)
    for r in rows:  # prompts are GenEval's own phrasing of exactly this metadata
        assert parse_caption(r["prompt"]) == r
        assert r["prompt"].startswith("a photo of ")
        if r["tag"] == "counting":
            assert r["exclude"] == [{"class": r["include"][0]["class"], "count": r["include"][0]["count"] + 1}]
            assert 2 <= r["include"][0]["count"] <= 4


def test_schema_matches_official_file(written):
    if not OFFICIAL.exists():
        pytest.skip("official GenEval metadata not available")
    official = {shape_of(json.loads(line)) for line in OFFICIAL.read_text().splitlines()}
    _, out = written
    ours = {shape_of(json.loads(line)) for line in (out / "evaluation_metadata.jsonl").read_text().splitlines()}
    assert ours == official


def test_heldout_compositions_lead_their_tasks(written):
    cfg, out = written
    rows = [json.loads(line) for line in (out / "evaluation_metadata.jsonl").read_text().splitlines()]
    comps = json.loads((out / "compositions.json").read_text())
    vocab = Vocabulary.from_config(cfg)
    held = [i for i, r in enumerate(rows) if not vocab.caption_allowed(r)]
    assert comps["heldout_rows"] == held
    pairs = {(c["color"], c["class"]) for i in held for c in rows[i]["include"] if "color" in c}
    assert vocab.heldout_pairs <= pairs
    triples = {(r["include"][1]["class"], r["include"][1]["position"][0], r["include"][0]["class"])
               for r in rows if r["tag"] == "position"}
    assert vocab.heldout_triples <= triples
    first_colors = next(i for i, r in enumerate(rows) if r["tag"] == "colors")
    assert all(not vocab.caption_allowed(rows[first_colors + k]) for k in range(len(vocab.heldout_pairs)))


def test_deterministic_and_seeded():
    a = evaluation_metadata(to_typed({"out": "x", "seed": 1}, ShapesConfig))
    b = evaluation_metadata(to_typed({"out": "y", "seed": 1}, ShapesConfig))
    c = evaluation_metadata(to_typed({"out": "x", "seed": 2}, ShapesConfig))
    assert a == b and a != c
