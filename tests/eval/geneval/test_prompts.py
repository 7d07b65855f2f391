import json
import os
import re
from pathlib import Path

import pytest

from miro.contracts.geneval_rules import COLORS
from miro.eval.geneval.prompts import (
    GENEVAL_CLASSES,
    TASKS,
    MetadataError,
    generate_suite,
    load_metadata,
    make_plural,
    validate_item,
    with_article,
    write_metadata,
)

# GenEval's official files are read from outside the repo when present (MIRO_GENEVAL_DATA overrides).
OFFICIAL = Path(os.environ.get("MIRO_GENEVAL_DATA", "/work/shared/data/geneval"))
needs_official = pytest.mark.skipif(
    not (OFFICIAL / "evaluation_metadata.jsonl").is_file(), reason="GenEval's official prompt file not present"
)


@needs_official
def test_seed_43_reproduces_the_official_file_line_for_line():
    official = (OFFICIAL / "evaluation_metadata.jsonl").read_text().splitlines()
    ours = [json.dumps(item) for item in generate_suite(seed=43, per_task=100)]
    assert len(ours) == 553
    assert ours == official


@needs_official
def test_class_names_are_genevals_object_names():
    names = (OFFICIAL / "object_names.txt").read_text().splitlines()
    assert tuple(n.strip() for n in names if n.strip()) == GENEVAL_CLASSES


@needs_official
def test_official_file_loads_and_validates():
    items = load_metadata(OFFICIAL / "evaluation_metadata.jsonl")
    counts = {tag: sum(i["tag"] == tag for i in items) for tag in TASKS}
    assert counts == {"single_object": 80, "two_object": 99, "counting": 80, "colors": 94, "position": 100, "color_attr": 100}


PATTERNS = {
    "single_object": r"a photo of an? (?P<a>[a-z ]+)",
    "two_object": r"a photo of an? (?P<a>[a-z ]+) and an? (?P<b>[a-z ]+)",
    "counting": r"a photo of (?P<n>two|three|four) (?P<a>[a-z ]+)",
    "colors": r"a photo of an? (?P<c>[a-z]+) (?P<a>[a-z ]+)",
    "position": r"a photo of an? (?P<a>[a-z ]+) (?P<rel>left of|right of|above|below) an? (?P<b>[a-z ]+)",
    "color_attr": r"a photo of an? (?P<c>[a-z]+) (?P<a>[a-z ]+) and an? (?P<d>[a-z]+) (?P<b>[a-z ]+)",
}


def test_new_seed_items_follow_the_official_schema_and_phrasing():
    items = generate_suite(seed=7, per_task=30)
    assert [i["tag"] for i in items[:80]] == ["single_object"] * 80
    assert {i["include"][0]["class"] for i in items[:80]} == set(GENEVAL_CLASSES)
    for item in items:
        validate_item(item)
        keys = ["tag", "include", "exclude", "prompt"] if item["tag"] == "counting" else ["tag", "include", "prompt"]
        assert list(item) == keys
        m = re.fullmatch(PATTERNS[item["tag"]], item["prompt"])
        assert m, item["prompt"]
        inc = item["include"]
        if item["tag"] == "counting":
            n = inc[0]["count"]
            assert 2 <= n <= 4 and item["exclude"] == [{"class": inc[0]["class"], "count": n + 1}]
            assert m["a"] == make_plural(inc[0]["class"])
        if item["tag"] == "position":
            assert inc[1]["position"] == [m["rel"], 0] and inc[1]["class"] == m["a"] and inc[0]["class"] == m["b"]
        if item["tag"] in ("colors", "color_attr"):
            assert all(r["color"] in COLORS and r["class"] != "person" for r in inc)
        if item["tag"] == "color_attr":
            assert inc[0]["color"] != inc[1]["color"] and inc[0]["class"] != inc[1]["class"]
    keys = [json.dumps(i, sort_keys=True) for i in items]
    assert len(keys) == len(set(keys))
    assert generate_suite(seed=7, per_task=30) == items
    assert generate_suite(seed=8, per_task=30) != items


def test_articles_and_plurals():
    assert with_article("apple") == "an apple" and with_article("umbrella") == "an umbrella"
    assert with_article("bench") == "a bench" and with_article("hot dog") == "a hot dog"
    assert make_plural("bus") == "buses" and make_plural("skis") == "skises" and make_plural("knife") == "knifes"


def test_other_vocabulary_without_person():
    items = generate_suite(seed=1, per_task=5, classnames=["circle", "square", "star", "triangle"])
    assert {i["include"][0]["class"] for i in items if i["tag"] == "single_object"} == {"circle", "square", "star", "triangle"}
    for item in items:  # the rotation skips index 0 when there is no "person"
        if item["tag"] in ("colors", "color_attr"):
            assert all(r["class"] != "circle" for r in item["include"])


def test_round_trip_and_bad_files(tmp_path):
    items = generate_suite(seed=3, per_task=4)
    path = tmp_path / "meta.jsonl"
    write_metadata(items, path)
    assert load_metadata(path) == items
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(items[0]) + "\n\n{not json\n")
    with pytest.raises(MetadataError, match=r"bad.jsonl:3"):
        load_metadata(bad)
    bad.write_text('{"tag": "x", "prompt": "p"}\n')
    with pytest.raises(MetadataError, match="missing key 'include'"):
        load_metadata(bad)
    bad.write_text('{"tag": "x", "prompt": "p", "include": [{"class": "cat", "count": 0}]}\n')
    with pytest.raises(MetadataError, match="count"):
        load_metadata(bad)
    bad_pos = {"tag": "position", "prompt": "p", "include": [{"class": "cat", "count": 1, "position": ["left of", 0]}]}
    with pytest.raises(MetadataError, match="earlier include clause"):
        validate_item(bad_pos)
    bad.write_text("")
    with pytest.raises(MetadataError, match="no prompts"):
        load_metadata(bad)
    with pytest.raises(FileNotFoundError, match="evaluation_metadata.jsonl"):
        load_metadata(tmp_path / "missing.jsonl")
