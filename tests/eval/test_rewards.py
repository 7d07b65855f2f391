import json
import math

import numpy as np
import pytest
from PIL import Image

from miro.eval.geneval.layout import write_prompt_folder
from miro.eval.rewards import (
    RewardsError,
    compare_folders,
    compare_runs,
    load_rewards,
    score_folder,
    summarize_rewards,
    write_reward_summary,
)

T_975_2 = 4.302652729911275  # Student t quantile 0.975 with 2 degrees of freedom


class Brightness:
    """Mean pixel value / 255; remembers how many images it scored."""

    name = "brightness"

    def __init__(self, fail_after: int | None = None):
        self.seen = 0
        self.fail_after = fail_after

    def score(self, images, prompts):
        if self.fail_after is not None and self.seen >= self.fail_after:
            raise KeyboardInterrupt("killed")
        self.seen += len(images)
        return np.array([np.asarray(im, dtype=np.float64).mean() / 255 for im in images])


class PromptLength:
    name = "prompt_len"

    def __init__(self):
        self.seen = 0

    def score(self, images, prompts):
        self.seen += len(images)
        return np.array([float(len(p)) for p in prompts])


PROMPTS = ["a photo of a cat", "a photo of two dogs", "a photo of a red car"]
LEVELS = [[10, 30], [100, 140], [200, 250]]  # grey level of each prompt's two samples


def make_run(root, levels=LEVELS, prompts=PROMPTS):
    for i, (prompt, lv) in enumerate(zip(prompts, levels)):
        meta = {"tag": "single_object", "prompt": prompt, "include": [{"class": "cat", "count": 1}]}
        write_prompt_folder(root, i, meta, [Image.new("RGB", (8, 8), (v, v, v)) for v in lv])
    return root


def test_scores_every_image_with_every_scorer(tmp_path):
    run = make_run(tmp_path / "run")
    rows = score_folder(run, [Brightness(), PromptLength()], batch_size=4)
    assert [(r["folder"], r["sample"]) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    assert rows[3]["filename"] == "00001/samples/0001.png" and rows[3]["prompt"] == PROMPTS[1]
    assert [r["brightness"] for r in rows] == pytest.approx([v / 255 for lv in LEVELS for v in lv])
    assert [r["prompt_len"] for r in rows] == [float(len(p)) for p in PROMPTS for _ in range(2)]
    assert load_rewards(run / "rewards.jsonl") == rows


def test_resume_scores_only_what_is_missing(tmp_path):
    run = make_run(tmp_path / "run")
    score_folder(run, [Brightness()], batch_size=2)
    again, extra = Brightness(), PromptLength()
    rows = score_folder(run, [again, extra], batch_size=2)
    assert again.seen == 0 and extra.seen == 6
    assert all({"brightness", "prompt_len"} <= set(r) for r in rows)


def test_killed_job_resumes_from_appended_batches(tmp_path):
    run = make_run(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        score_folder(run, [Brightness(fail_after=4)], batch_size=2)
    with open(run / "rewards.jsonl", "a") as fp:
        fp.write('{"filename": "00002/sam')  # torn last line of a killed writer
    resumed = Brightness()
    rows = score_folder(run, [resumed], batch_size=2)
    assert resumed.seen == 2  # only the third prompt's two images
    assert [r["brightness"] for r in rows] == pytest.approx([v / 255 for lv in LEVELS for v in lv])


def test_unreadable_image_is_excluded_and_reported(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    (run / "00001" / "samples" / "0000.png").write_bytes(b"not a png")
    rows = score_folder(run, [Brightness()])
    bad = rows[2]
    assert math.isnan(bad["brightness"]) and bad["status"] == "excluded: unreadable image (not_an_image)"
    assert "rewards: 1 of 6 images excluded (unreadable)" in capsys.readouterr().out
    line = (run / "rewards.jsonl").read_text().splitlines()[2]
    assert json.loads(line)["brightness"] is None  # valid JSON: null, not NaN
    s = summarize_rewards(rows)["brightness"]
    assert (s["count"], s["nan_count"], s["excluded"]) == (5, 0, 1)  # not a NaN of the scorer
    (run / "00001" / "samples" / "0000.png").write_bytes((run / "00000" / "samples" / "0000.png").read_bytes())
    rows = score_folder(run, [Brightness()])  # a rerun tries the excluded image again
    assert rows[2]["status"] == "ok" and not math.isnan(rows[2]["brightness"])


def test_scorer_contract_violations(tmp_path):
    run = make_run(tmp_path / "run")

    class Wrong:
        name = "wrong"

        def score(self, images, prompts):
            return np.zeros(len(images) + 1)

    with pytest.raises(RewardsError, match="returned shape"):
        score_folder(run, [Wrong()])
    with pytest.raises(ValueError, match="unique across scorers"):
        score_folder(run, [Brightness(), Brightness()])
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(RewardsError, match="no sample images"):
        score_folder(tmp_path / "empty_run", [Brightness()])


def test_summary_numbers_by_hand():
    rows = [
        {"folder": f, "sample": s, "prompt": PROMPTS[f], "brightness": float(v)}
        for f, lv in enumerate(LEVELS)
        for s, v in enumerate(lv)
    ]
    s = summarize_rewards(rows)["brightness"]
    values = [10, 30, 100, 140, 200, 250]
    assert s["mean"] == pytest.approx(sum(values) / 6)
    assert s["std"] == pytest.approx(np.std(values, ddof=1))
    prompt_means = [20.0, 120.0, 225.0]
    m = sum(prompt_means) / 3
    sd = math.sqrt(sum((x - m) ** 2 for x in prompt_means) / 2)
    assert s["ci95"] == pytest.approx([m - T_975_2 * sd / math.sqrt(3), m + T_975_2 * sd / math.sqrt(3)])
    assert s["prompts"] == 3


def _rows(levels):
    return [
        {"folder": f, "sample": s, "prompt": PROMPTS[f], "r": float(v)}
        for f, lv in enumerate(levels)
        for s, v in enumerate(lv)
    ]


def test_paired_comparison_on_matching_prompts():
    a = _rows([[1, 3], [2, 2], [5, 7]])  # prompt means 2, 2, 6
    b = _rows([[3, 3], [5, 5], [7, 9]])  # prompt means 3, 5, 8 -> differences 1, 3, 2
    (c,) = compare_runs(a, b)
    d = np.array([1.0, 3.0, 2.0])
    t = d.mean() / (d.std(ddof=1) / math.sqrt(3))
    from scipy import stats

    assert c["test"].startswith("paired")
    assert c["diff"] == pytest.approx(d.mean())
    assert c["p_value"] == pytest.approx(2 * stats.t.sf(abs(t), 2))
    half = T_975_2 * d.std(ddof=1) / math.sqrt(3)
    assert c["diff_ci95"] == pytest.approx([2 - half, 2 + half])
    assert c["ci_overlap"] is True


def test_welch_comparison_on_different_prompts_and_separated_cis():
    a = _rows([[0, 0.1], [0.2, 0.1], [0.1, 0.2]])
    b = [dict(r, prompt=r["prompt"] + "!", r=r["r"] + 10) for r in a]
    (c,) = compare_runs(a, b)
    assert c["test"].startswith("Welch") and c["ci_overlap"] is False and c["p_value"] < 1e-4


def test_compare_folders_writes_table_and_plots(tmp_path):
    run_a = make_run(tmp_path / "base")
    run_b = make_run(tmp_path / "miro", levels=[[40, 60], [120, 160], [230, 250]])
    for run in (run_a, run_b):
        rows = score_folder(run, [Brightness(), PromptLength()])
        rows = [dict(r, third=r["brightness"] * 2) for r in rows]  # a third column for the radar
        (run / "rewards.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        write_reward_summary(rows, run)
    out = tmp_path / "cmp"
    comparison = compare_folders(run_a, run_b, out)
    table = (out / "comparison.md").read_text()
    assert "| reward | base mean [95% CI] | miro mean [95% CI] | miro − base [95% CI] |" in table
    assert [c["reward"] for c in comparison] == ["brightness", "prompt_len", "third"]
    for png in ("comparison_bars.png", "comparison_radar.png"):
        with Image.open(out / png) as im:
            assert im.format == "PNG" and im.width > 200
    assert json.loads((out / "comparison.json").read_text())["labels"] == ["base", "miro"]
    assert json.loads((run_a / "rewards_summary.json").read_text())["brightness"]["prompts"] == 3
    with pytest.raises(FileNotFoundError, match="score the folder first"):
        compare_folders(run_a, tmp_path / "nothing", out)
