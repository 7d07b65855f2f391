import json

import pytest

from miro.eval.geneval.summary import (
    ResultsError,
    load_results,
    summarize,
    to_markdown,
    to_text,
    write_summary,
)


def _rows():
    """Three tasks of unequal size, so the overall score (mean of tasks) differs from image accuracy."""
    rows = []

    def add(tag, prompt, corrects):
        meta = json.dumps({"tag": tag, "prompt": prompt, "include": []})
        for i, ok in enumerate(corrects):
            rows.append({"filename": f"{prompt}/{i}.png", "tag": tag, "prompt": prompt, "correct": ok,
                         "reason": "", "metadata": meta, "details": "{}"})  # fmt: skip

    add("single_object", "a photo of a cat", [True, True])
    add("single_object", "a photo of a dog", [True, False])
    add("two_object", "a photo of a cat and a dog", [False, True])
    add("counting", "a photo of two cats", [False, False])
    add("counting", "a photo of three cats", [False, False])
    add("counting", "a photo of four cats", [False, False])
    return rows


def test_summary_numbers_by_hand(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    s = summarize(load_results(path))
    assert s["total_images"] == 12 and s["total_prompts"] == 6
    assert s["correct_images"] == pytest.approx(4 / 12)
    assert s["correct_prompts"] == pytest.approx(3 / 6)  # cat, dog, cat-and-dog
    assert list(s["tasks"]) == ["single_object", "two_object", "counting"]  # first appearance
    assert s["tasks"]["single_object"] == {"accuracy": 0.75, "correct": 3, "total": 4}
    assert s["tasks"]["two_object"]["accuracy"] == 0.5
    assert s["tasks"]["counting"]["accuracy"] == 0.0
    assert s["overall"] == pytest.approx((0.75 + 0.5 + 0.0) / 3)


def test_text_is_genevals_printout():
    text = to_text(summarize(_rows()))
    assert text.splitlines() == [
        "Summary",
        "=======",
        "Total images: 12",
        "Total prompts: 6",
        "% correct images: 33.33%",
        "% correct prompts: 50.00%",
        "",
        "Task breakdown",
        "==============",
        "single_object    = 75.00% (3 / 4)",
        "two_object       = 50.00% (1 / 2)",
        "counting         = 0.00% (0 / 6)",
        "",
        "Overall score (avg. over tasks): 0.41667",
    ]


def test_markdown_and_json_outputs(tmp_path):
    s = summarize(_rows())
    js, md = write_summary(s, tmp_path)
    assert json.loads(js.read_text())["overall"] == pytest.approx(s["overall"])
    assert "| **overall** (mean of tasks) | **41.67%** | |" in md.read_text()
    assert to_markdown(s).startswith("| task | accuracy |")


def test_bad_results_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_results(tmp_path / "none.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"tag": "x", "correct": true, "metadata": "m"}\n{oops\n')
    with pytest.raises(ResultsError, match="bad.jsonl:2"):
        load_results(bad)
    bad.write_text('{"tag": "x"}\n')
    with pytest.raises(ResultsError, match="missing"):
        load_results(bad)
    with pytest.raises(ResultsError, match="no results"):
        summarize([])
