"""The generator: determinism, shard and json schemas, held-out compositions, resume, the hydra command."""

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from miro.contracts.geneval_rules import relative_position
from miro.contracts.shards import list_shards
from miro.data.images import decode_image, decode_text
from miro.data.shapes.alignment import parse_caption
from miro.data.shapes.config import DEGRADATIONS, TASKS, WRONG_KINDS, ShapesConfig
from miro.data.shapes.generate import generate
from miro.data.shapes.scene import Vocabulary
from miro.data.shapes.world import ShapesWorld, sample_key
from miro.data.shards import iter_shard
from miro.utils.config import ConfigError, to_typed

ROOT = Path(__file__).resolve().parents[3]


def cfg(out, **kw):
    base = {"out": str(out), "num_samples": 60, "resolution": 32, "shard_size": 25, "seed": 4}
    base.update(kw)
    return to_typed(base, ShapesConfig)


def digests(out):
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(out).rglob("*")) if p.is_file()}


def test_same_config_gives_byte_identical_output_in_parallel_or_not(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    summary = generate(cfg(a), progress=False)
    assert summary == {"shards_written": 3, "shards_kept": 0, "samples_written": 60, "out": str(a)}
    generate(cfg(b, workers=2), progress=False)
    da, db = digests(a), digests(b)
    assert da == db
    assert sorted(da) == ["heldout/compositions.json", "heldout/evaluation_metadata.jsonl",
                          "heldout/generation_prompts.txt", "train/shapes-000000.tar", "train/shapes-000001.tar",
                          "train/shapes-000002.tar", "world.json"]
    c = tmp_path / "c"
    generate(cfg(c, seed=5), progress=False)
    assert digests(c)["train/shapes-000000.tar"] != da["train/shapes-000000.tar"]


def test_any_sample_regenerated_alone_equals_the_shard(tmp_path):
    c = cfg(tmp_path)
    generate(c, progress=False)
    shards = list_shards(tmp_path / "train")
    samples = [s for p in shards for s in iter_shard(p)]
    assert [k for k, _ in samples] == [sample_key(i) for i in range(60)]
    world = ShapesWorld(c)
    for index in (0, 26, 59):
        key, members = samples[index]
        fresh = world.sample(index).members()
        assert {ext: (v.encode() if isinstance(v, str) else v) for ext, v in fresh.items()} == members


def test_members_and_json_schema(tmp_path):
    c = cfg(tmp_path, num_samples=80, shard_size=80, resolution=48)
    generate(c, progress=False)
    (shard,) = list_shards(tmp_path / "train")
    assert shard.name == "shapes-000000.tar"
    seen_ext = set()
    for key, members in iter_shard(shard):
        exts = set(members)
        assert exts in ({"png", "txt", "json"}, {"jpg", "txt", "json"})
        img_ext = (exts - {"txt", "json"}).pop()
        seen_ext.add(img_ext)
        img = decode_image(members[img_ext])
        assert img.size == (48, 48)
        assert Image.open(io.BytesIO(members[img_ext])).format == {"png": "PNG", "jpg": "JPEG"}[img_ext]
        caption = decode_text(members["txt"])
        rec = json.loads(members["json"])
        assert list(rec) == ["key", "index", "seed", "task", "caption", "caption_kind", "phrasing", "caption_metadata",
                             "true_metadata", "scene", "degradations", "format", "generator"]
        assert rec["key"] == key and rec["caption"] == caption and rec["format"] == img_ext
        assert rec["task"] in TASKS and rec["caption_kind"] in ("correct", *WRONG_KINDS)
        assert rec["caption_metadata"] == parse_caption(caption)
        assert ("jpeg" in rec["degradations"]) == (img_ext == "jpg")
        for name, params in rec["degradations"].items():
            assert name in DEGRADATIONS and 0.0 <= params["strength"] <= 1.0
        assert list(rec["degradations"]) == [d for d in DEGRADATIONS if d in rec["degradations"]]
        scene = rec["scene"]
        assert scene["width"] == scene["height"] == 48 and len(scene["objects"]) >= 1
        boxes = [o["box"] for o in scene["objects"]]
        for o in scene["objects"]:
            x0, y0, x1, y1 = o["box"]
            assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 48
            assert {"class", "color", "box"} <= set(o)
        for i in range(len(boxes)):  # objects never overlap
            for j in range(i):
                a, b = boxes[i], boxes[j]
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
        if rec["caption_kind"] == "correct":
            assert rec["caption_metadata"] == {**rec["true_metadata"], "prompt": caption}
    assert seen_ext == {"png", "jpg"}
    world = json.loads((tmp_path / "world.json").read_text())
    assert world["config"]["resolution"] == 48 and world["shards"] == ["train/shapes-000000.tar"]
    assert "out" not in world["config"] and "workers" not in world["config"]


def test_scene_truth_matches_the_caption_intent():
    c = to_typed({"out": "x", "resolution": 64, "seed": 9}, ShapesConfig)
    world = ShapesWorld(c)
    for i in range(400):
        d = world.draft(i)
        objs = d.scene.objects
        meta = d.scene.meta
        for req in meta["include"]:
            have = [o for o in objs if o.cls == req["class"] and ("color" not in req or o.color == req["color"])]
            assert len(have) >= req["count"]
            if "position" in req:
                rel, target = req["position"]
                tgt = [o for o in objs if o.cls == meta["include"][target]["class"]]
                assert relative_position(have[0].box(), tgt[0].box()) == {rel}
        for req in meta.get("exclude", []):
            assert sum(o.cls == req["class"] for o in objs) < req["count"]


def test_a_world_without_class_weights_draws_what_it_always_drew():
    # pinned on the generator before scene.class_weights existed (commit db0bc1a): the shipped model's worlds are
    # rebuilt from their seeds, so the key must not move the draws of a world that does not set it
    world = ShapesWorld(to_typed({"out": "x", "resolution": 32, "seed": 4}, ShapesConfig))
    rows = []
    for i in range(120):
        d = world.draft(i)
        rows.append(d.meta["prompt"] + "|" + ";".join(f"{o.cls},{o.color}" for o in d.scene.objects))
    assert rows[1] == "a photo of a red diamond and a yellow square|diamond,red;square,yellow;cross,brown"
    assert hashlib.sha256("\n".join(rows).encode()).hexdigest() == \
        "d114bee64c0b7f6931f0e7fb077a4a86be85124e5f262c3b29eaf755b3cbd0e5"


def test_class_weights_set_how_often_a_caption_names_each_class():
    def named(weights, n=1500):
        c = to_typed({"out": "x", "resolution": 32, "seed": 3, "scene": {"class_weights": weights}}, ShapesConfig)
        world, counts = ShapesWorld(c), {}
        for i in range(n):
            for req in world.draft(i).scene.meta["include"]:
                counts[req["class"]] = counts.get(req["class"], 0) + 1
        return counts

    counts = named({"hexagon": 3.0})
    others = [v for k, v in counts.items() if k != "hexagon"]
    # one-class tasks name the hexagon 3 / 10 of the time, two-class ones (drawn without replacement) less often
    assert 2.0 < counts["hexagon"] / (sum(others) / len(others)) < 3.0
    assert min(others) > 0.7 * max(others)
    counts = named({"hexagon": 0.0, "star": 0.0}, n=600)
    assert "hexagon" not in counts and "star" not in counts and len(counts) == 6


def test_swapped_colors_names_every_object_and_colour_and_binds_them_wrong():
    only = {k: float(k == "swapped_colors") for k in WRONG_KINDS}
    c = to_typed({"out": "x", "resolution": 32, "seed": 6, "captions": {"wrong": 1.0, "color_mention": 1.0,
                  "wrong_kinds": only}}, ShapesConfig)  # fmt: skip
    world, seen, attr = ShapesWorld(c), set(), []
    for i in range(300):
        d = world.draft(i)
        if d.meta["tag"] == "color_attr":
            attr.append(d.kind)
        if d.kind != "swapped_colors":
            assert d.kind == "correct"  # no other kind is drawn; a swap onto a held-out pair is left correct
            continue
        seen.add(d.meta["tag"])
        (a, b), (ta, tb) = [r for r in d.meta["include"] if "color" in r], [r for r in d.scene.meta["include"] if "color" in r]
        assert (a["class"], b["class"]) == (ta["class"], tb["class"]) and (a["color"], b["color"]) == (tb["color"], ta["color"])
        for req in (a, b):  # the class is drawn, the colour is drawn, never together
            assert any(o.cls == req["class"] for o in d.scene.objects)
            assert any(o.color == req["color"] for o in d.scene.objects)
            assert not any(o.cls == req["class"] and o.color == req["color"] for o in d.scene.objects)
    assert seen == {"color_attr", "position"}
    assert attr.count("swapped_colors") > 0.8 * len(attr)


def test_swapped_colors_off_leaves_world_json_as_before():
    # worlds generated before the kind existed must still be continued by the same command
    cfg = to_typed({"out": "x", "resolution": 32, "seed": 0}, ShapesConfig)
    assert cfg.captions.wrong_kinds["swapped_colors"] == 0.0
    assert "swapped_colors" not in cfg.world_dict()["captions"]["wrong_kinds"]
    on = to_typed({"out": "x", "resolution": 32, "seed": 0, "captions": {"wrong_kinds": {"swapped_colors": 2.0}}}, ShapesConfig)
    assert on.world_dict()["captions"]["wrong_kinds"]["swapped_colors"] == 2.0


def test_heldout_compositions_never_in_training(tmp_path):
    c = to_typed({"out": "x", "resolution": 32, "seed": 1, "captions": {"wrong": 0.5, "color_mention": 0.8},
                  "heldout": {"color_class": ["red star", "blue circle"], "relations": ["star left of circle"]}},
                 ShapesConfig)
    world, vocab = ShapesWorld(c), Vocabulary.from_config(c)
    assert ("star", "right of", "circle") not in vocab.heldout_triples
    assert ("circle", "right of", "star") in vocab.heldout_triples
    positions = 0
    for i in range(2500):
        d = world.draft(i)
        meta = parse_caption(d.meta["prompt"])
        for req in meta["include"]:
            assert (req.get("color"), req["class"]) not in {("red", "star"), ("blue", "circle")}
            if "position" in req:
                positions += 1
                triple = (req["class"], req["position"][0], meta["include"][req["position"][1]]["class"])
                assert triple not in {("star", "left of", "circle"), ("circle", "right of", "star")}
        for o in d.scene.objects:
            assert (o.color, o.cls) not in {("red", "star"), ("blue", "circle")}
    assert positions > 200


def test_resume_and_overwrite(tmp_path):
    c = cfg(tmp_path)
    generate(c, progress=False)
    before = digests(tmp_path)
    (tmp_path / "train" / "shapes-000001.tar").unlink()
    (tmp_path / "train" / "shapes-000002.tar.tmp").write_bytes(b"half a shard")  # a killed run's leftover
    summary = generate(c, progress=False)
    assert (summary["shards_written"], summary["shards_kept"]) == (1, 2)
    assert digests(tmp_path) == before
    with pytest.raises(ConfigError, match="overwrite=true"):
        generate(cfg(tmp_path, resolution=40), progress=False)
    generate(cfg(tmp_path, resolution=40, overwrite=True), progress=False)
    assert json.loads((tmp_path / "world.json").read_text())["config"]["resolution"] == 40


@pytest.mark.parametrize(
    "override, key",
    [({"resolution": 300}, "resolution"), ({"shard_size": 0}, "shard_size"), ({"scene": {"classes": ["circle", "blob"]}}, "scene.classes"),
     ({"scene": {"tasks": {"counting": -1.0}}}, "scene.tasks"), ({"degradations": {"blur": {"prob": 2.0}}}, "degradations.blur.prob"),
     ({"captions": {"wrong": 1.5}}, "captions.wrong"), ({"heldout": {"color_class": ["red blob"]}}, "heldout.color_class"),
     ({"scene": {"class_weights": {"blob": 2.0}}}, "scene.class_weights"),
     ({"scene": {"class_weights": {"circle": -1.0}}}, "scene.class_weights"),
     ({"scene": {"classes": ["circle", "square"], "class_weights": {"circle": 0.0}}}, "scene.class_weights"),
     ({"name": "a-b"}, "name"), ({"out": "???"}, "out")],
)
def test_bad_config_values_name_the_key(override, key):
    base = {"out": "x"}
    base.update(override)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        to_typed(base, ShapesConfig)


def test_hydra_command(tmp_path):
    out = tmp_path / "w"
    run = subprocess.run([sys.executable, "-m", "miro.data.shapes", f"out={out}", "num_samples=12", "resolution=32",
                          "shard_size=5", "seed=2", "degradations.jpeg.prob=0.5", "+scene.class_weights.hexagon=3"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "12 samples written in 3 shards" in run.stdout
    assert len(list_shards(out / "train")) == 3
    assert not (ROOT / "outputs").exists() or not any((ROOT / "outputs").iterdir())
    bad = subprocess.run([sys.executable, "-m", "miro.data.shapes", f"out={out}", "resolution=16"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "resolution=16: must be in 32..256" in bad.stderr
