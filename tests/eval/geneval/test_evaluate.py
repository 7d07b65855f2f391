import json

import numpy as np
import pytest
from PIL import Image

from miro.contracts.geneval_rules import RuleOptions
from miro.eval.geneval.evaluate import EvaluationError, LazyColors, evaluate_folder, settings_path
from miro.eval.geneval.layout import write_prompt_folder
from miro.eval.provenance import SettingsMismatch

ITEMS = [
    {"tag": "counting", "include": [{"class": "cup", "count": 2}], "exclude": [{"class": "cup", "count": 3}],
     "prompt": "a photo of two cups"},
    {"tag": "colors", "include": [{"class": "cup", "count": 1, "color": "red"}], "prompt": "a photo of a red cup"},
    {"tag": "position", "include": [{"class": "cup", "count": 1}, {"class": "dog", "count": 1, "position": ["left of", 0]}],
     "prompt": "a photo of a dog left of a cup"},
]  # fmt: skip


def _det(cls, score, box, color=None):
    return {"class": cls, "score": score, "box": list(box), "mask": None, "color": color}


class ScriptedDetector:
    """Detections chosen by the image's grey level (the test writes one level per image)."""

    def __init__(self, by_level):
        self.by_level = by_level
        self.calls = []

    def detect(self, images, score_floor=None):
        self.calls.append((len(images), score_floor))
        return [list(self.by_level[int(np.asarray(im)[0, 0, 0])]) for im in images]


BY_LEVEL = {
    # counting: two confident cups (correct), then two plus a third above 0.9 (excluded), then 0.85 (too low)
    10: [_det("cup", 0.95, (0, 0, 4, 4)), _det("cup", 0.93, (5, 5, 9, 9))],
    11: [_det("cup", 0.95, (0, 0, 4, 4)), _det("cup", 0.93, (5, 5, 9, 9)), _det("cup", 0.91, (9, 0, 12, 3))],
    12: [_det("cup", 0.95, (0, 0, 4, 4)), _det("cup", 0.85, (5, 5, 9, 9))],
    # colours: the detection's colour decides (shapes-detector style)
    20: [_det("cup", 0.8, (0, 0, 4, 4), "red")],
    21: [_det("cup", 0.8, (0, 0, 4, 4), "blue")],
    # position: dog left of cup, then right of it
    30: [_det("cup", 0.8, (20, 0, 30, 10)), _det("dog", 0.7, (0, 0, 8, 10))],
    31: [_det("cup", 0.8, (0, 0, 8, 10)), _det("dog", 0.7, (20, 0, 30, 10))],
}
LEVELS = [[10, 11, 12], [20, 21], [30, 31]]
EXPECTED = [[True, False, False], [True, False], [True, False]]


def make_folder(root):
    for i, (item, levels) in enumerate(zip(ITEMS, LEVELS)):
        write_prompt_folder(root, i, item, [Image.new("RGB", (32, 16), (v, v, v)) for v in levels])
    return root


def test_rows_follow_genevals_rules_and_schema(tmp_path):
    root = make_folder(tmp_path / "run")
    det = ScriptedDetector(BY_LEVEL)
    rows = evaluate_folder(root, det, batch_size=3)
    assert [r["correct"] for r in rows] == [c for cs in EXPECTED for c in cs]
    assert det.calls[0] == (3, 0.3)  # the lowest threshold is the detector's floor
    first = rows[0]
    assert list(first) == ["filename", "tag", "prompt", "correct", "reason", "metadata", "details"]
    assert first["filename"] == f"{root}/00000/samples/0000.png"
    assert json.loads(first["metadata"]) == ITEMS[0]
    assert json.loads(first["details"]) == {"cup": [[0, 0, 4, 4, 0.95], [5, 5, 9, 9, 0.93]]}
    assert rows[1]["reason"] == "expected cup<3, found 3"
    assert rows[2]["reason"] == "expected cup>=2, found 1"
    assert rows[4]["reason"].startswith("expected red cup>=1, found 0 red")
    assert rows[6]["reason"] == "expected dog left of target, found right of target"
    written = [json.loads(line) for line in (root / "results.jsonl").read_text().splitlines()]
    assert written == rows


def test_resume_evaluates_only_missing_images(tmp_path):
    root = make_folder(tmp_path / "run")
    evaluate_folder(root, ScriptedDetector(BY_LEVEL), batch_size=2)
    lines = (root / "results.jsonl").read_text().splitlines()
    (root / "results.jsonl").write_text("\n".join(lines[:4]) + "\n" + lines[4][:20])  # killed mid-write
    det = ScriptedDetector(BY_LEVEL)
    rows = evaluate_folder(root, det, batch_size=8)
    assert det.calls == [(3, 0.3)]
    assert [r["correct"] for r in rows] == [c for cs in EXPECTED for c in cs]


def test_other_settings_are_not_mixed_into_a_results_file(tmp_path):
    root = make_folder(tmp_path / "run")
    evaluate_folder(root, ScriptedDetector(BY_LEVEL), settings={"detector": "a"})
    assert json.loads(settings_path(root / "results.jsonl").read_text())["detector"] == "a"
    with pytest.raises(SettingsMismatch, match=r"other settings \(changed: \['rules'\]"):
        evaluate_folder(root, ScriptedDetector(BY_LEVEL), options=RuleOptions(threshold=0.5), settings={"detector": "a"})
    other = evaluate_folder(root, ScriptedDetector(BY_LEVEL), results=tmp_path / "strict.jsonl",
                            options=RuleOptions(counting_threshold=0.94))  # fmt: skip
    assert [r["correct"] for r in other[:3]] == [False, False, False]  # the 0.93 cup no longer counts


def test_unreadable_image_is_excluded_and_reported(tmp_path, capsys):
    from miro.eval.geneval.summary import summarize

    root = make_folder(tmp_path / "run")
    (root / "00001" / "samples" / "0001.png").write_bytes(b"\x89PNG broken")
    rows = evaluate_folder(root, ScriptedDetector(BY_LEVEL))
    assert rows[4]["excluded"] is True and rows[4]["reason"] == "excluded: unreadable image (not_an_image)"
    assert "0x" not in rows[4]["reason"]
    assert "geneval evaluate: 1 of" in capsys.readouterr().out
    s = summarize(rows)
    assert s["excluded_images"] == 1 and s["total_images"] == len(rows) - 1  # not a wrong answer of the model


class CountingColors:
    def __init__(self, answer):
        self.answer = answer
        self.calls = []

    def classify(self, image, detections, classname):
        self.calls.append((image.size, len(detections), classname))
        return [self.answer] * len(detections)


def test_colour_classifier_is_asked_only_for_colour_clauses_and_loaded_lazily(tmp_path):
    root = make_folder(tmp_path / "run")
    clf = CountingColors("red")
    built = []
    lazy = LazyColors(lambda: built.append(1) or clf)
    rows = evaluate_folder(root, ScriptedDetector(BY_LEVEL), colors=lazy)
    assert built == [1]
    assert clf.calls == [((32, 16), 1, "cup"), ((32, 16), 1, "cup")]
    assert rows[3]["correct"] and rows[4]["correct"]  # the classifier says red, whatever the detection says
    plain = tmp_path / "no_colours"
    write_prompt_folder(plain, 0, ITEMS[0], [Image.new("RGB", (32, 16), (10, 10, 10))])
    never = LazyColors(lambda: pytest.fail("no colour clause: CLIP must not load"))
    assert evaluate_folder(plain, ScriptedDetector(BY_LEVEL), colors=never)[0]["correct"]


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(EvaluationError, match="no sample images"):
        evaluate_folder(tmp_path / "run", ScriptedDetector(BY_LEVEL))
