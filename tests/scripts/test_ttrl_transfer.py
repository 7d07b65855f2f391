"""scripts/experiments/ttrl_transfer.py end to end on a tiny random pipeline and a fake world of a few prompts."""

import json

import pytest

from tests.sampling.conftest import saved_pipe, text_encoder, tiny_pipe  # noqa: F401
from tests.scripts.loader import load_script

ROWS = [
    {"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "red"}], "prompt": "a photo of a red circle"},
    {"tag": "colors", "include": [{"class": "square", "count": 1, "color": "blue"}], "prompt": "a photo of a blue square"},
    {"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "green"}],
     "prompt": "a photo of a green circle"},
    {"tag": "single_object", "include": [{"class": "triangle", "count": 1}], "prompt": "a photo of a triangle"},
    {"tag": "single_object", "include": [{"class": "square", "count": 1}], "prompt": "a photo of a square"},
    {"tag": "counting", "include": [{"class": "circle", "count": 2}], "prompt": "a photo of two circles"},
]  # fmt: skip


def load():
    return load_script("experiments/ttrl_transfer.py")


@pytest.mark.parametrize("monitor", ["intrinsic", "rewards", "detector"])
def test_script_scores_base_and_adapted_on_the_same_prompts(saved_pipe, tmp_path, capsys, monitor):  # noqa: F811
    meta = tmp_path / "evaluation_metadata.jsonl"
    meta.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "out"
    report = load().main([
        "--pipeline", str(saved_pipe), "--metadata", str(meta), "--out", str(out), "--task", "colors",
        "--monitor", monitor, "--images", "2", "--other-limit", "1", "--group-size", "2", "--iterations", "2",
        "--prompts-per-iteration", "1", "--train-steps", "2", "--steps", "2", "--intrinsic-draws", "1",
    ])  # fmt: skip
    saved = json.loads((out / "ttrl_transfer.json").read_text())
    assert set(saved["splits"]) == {"unseen", "adapted_on", "single_object", "counting", "other_tasks_mean"}
    assert len(saved["prompts"]["adapted_on"]) == 1  # 3 colors prompts: 1 to adapt on, 2 unseen
    assert len(saved["prompts"]["unseen"]) == 2 and not set(saved["prompts"]["unseen"]) & set(
        saved["prompts"]["adapted_on"]
    )
    assert saved["prompts"]["single_object"] == ["a photo of a triangle"]
    for name, row in saved["splits"].items():
        for key in ("prompts", "images", "base", "adapted", "delta_points", "gained", "lost"):
            assert key in row, (name, key)
        if name != "other_tasks_mean":
            passed = saved["passed"][name]
            assert len(passed["base"]) == len(passed["adapted"]) == row["images"] == 2 * row["prompts"]
            assert row["delta_points"] == pytest.approx(100 * (row["adapted"] - row["base"]))
    assert saved["base_check_max_abs"] == 0  # the adapter disabled is the base model, bit for bit
    assert saved["adaptation"]["iterations"] == 2 and saved["adaptation"]["nfe"] > 0
    assert len(saved["ttrl_history"]) == 2
    for key in ("monitor_mean", "track_mean", "agreement"):
        assert set(saved["history"][key]) == {"first", "last", "first_quarter", "last_quarter"}
    assert (out / "adapt" / "adapter" / "lora.json").exists()
    assert report["config"]["monitor"] == monitor
    assert saved["per_prompt"]["monitor"]["prompts"] == 1  # the one cohort prompt, visited twice
    assert "| unseen | 2 | 4 |" in capsys.readouterr().out
    again = load().main(["--out", str(out), "--report-only"])
    assert again["splits"] == saved["splits"] and again["per_prompt"] == saved["per_prompt"]
    assert "first → last visit" in capsys.readouterr().out


def test_a_saved_adapter_evaluates_as_in_its_run_and_under_the_rollouts_sampler(saved_pipe, tmp_path, capsys):  # noqa: F811
    """``--adapter`` re-reads a run's adapter from disk: under the same settings it passes exactly the images the run
    passed; ``--eval-sampler sde`` samples as the rollouts do, paired (the adapter disabled gives the base images)."""
    meta = tmp_path / "evaluation_metadata.jsonl"
    meta.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    common = ["--pipeline", str(saved_pipe), "--metadata", str(meta), "--task", "colors", "--monitor", "intrinsic",
              "--intrinsic-draws", "1", "--images", "2", "--other-limit", "1", "--steps", "3", "--train-steps", "3"]  # fmt: skip
    run = load().main([*common, "--out", str(tmp_path / "run"), "--group-size", "2", "--iterations", "2",
                       "--prompts-per-iteration", "1", "--lr", "5e-2"])  # fmt: skip
    adapter = str(tmp_path / "run" / "adapt" / "adapter")
    again = load().main([*common, "--out", str(tmp_path / "ode"), "--adapter", adapter])
    assert again["passed"] == run["passed"] and again["splits"] == run["splits"]
    assert json.loads((tmp_path / "ode" / "ttrl_eval.json").read_text())["splits"] == run["splits"]
    sde = load().main([*common, "--out", str(tmp_path / "sde"), "--adapter", adapter, "--eval-sampler", "sde"])
    assert sde["base_check_max_abs"] == 0 and set(sde["splits"]) == set(run["splits"])
    assert again["pixel_change"] > 0 and sde["pixel_change"] > 0  # the adapter is loaded and active
    assert sde["config"]["eval_sampler"] == "sde"
    assert "| unseen | 2 | 4 |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no pytorch_lora_weights.safetensors"):
        load().main([*common, "--out", str(tmp_path / "none"), "--adapter", str(tmp_path / "run")])
    assert not (tmp_path / "none").exists()  # refused before any work


def test_split_is_deterministic_disjoint_and_complete():
    mod = load()
    rows = [{"tag": "colors", "prompt": f"c{i}"} for i in range(7)] + [{"tag": "position", "prompt": "p"}]
    a, u = mod.split_task(rows, "colors", 3)
    assert (a, u) == mod.split_task(rows, "colors", 3)
    assert len(a) == 3 and len(u) == 4 and {r["prompt"] for r in a + u} == {f"c{i}" for i in range(7)}
    with pytest.raises(SystemExit, match="at least 2"):
        mod.split_task(rows, "position", 0)
    splits = mod.evaluation_splits(rows, "colors", 3, 0)
    assert set(splits) == {"unseen", "adapted_on"}


def test_rubric_alone_as_monitor_and_a_checkpoint_equal_to_a_shorter_run(saved_pipe, tmp_path, capsys):  # noqa: F811
    """``--intrinsic-rewards none``: the rubric is the whole monitor.  ``--eval-at 1`` evaluates the adapter after
    the first iteration inside a two-iteration run; that checkpoint reads exactly what a one-iteration run ends with
    (evaluating does not disturb the adaptation)."""
    meta = tmp_path / "evaluation_metadata.jsonl"
    meta.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    common = ["--pipeline", str(saved_pipe), "--metadata", str(meta), "--task", "colors", "--monitor", "intrinsic",
              "--intrinsic-rewards", "none", "--rubric-weight", "2", "--images", "1", "--other-limit", "1",
              "--group-size", "2", "--prompts-per-iteration", "1", "--train-steps", "2", "--steps", "2",
              "--intrinsic-draws", "1", "--lr", "5e-2", "--track", "geneval"]  # fmt: skip
    long = load().main([*common, "--iterations", "2", "--eval-at", "1", "--out", str(tmp_path / "long")])
    short = load().main([*common, "--iterations", "1", "--out", str(tmp_path / "short")])
    assert list(long["checkpoints"]) == [1]
    assert long["checkpoints"][1]["passed"] == {n: v["adapted"] for n, v in short["passed"].items()}
    assert long["checkpoints"][1]["splits"] == short["splits"]
    trace = json.loads((tmp_path / "long" / "adapt" / "trace.json").read_text())
    assert trace["verifier"]["rewards"] == ["rubric"]
    cand = trace["searches"][0]["candidates"][0]["extra"]  # the detector's reading tracked, the quality beside it
    assert {"geneval_soft", "sharpness", "contrast"} <= set(cand["track"])
    assert cand["track_score"] is not None and 0 <= cand["track"]["geneval_soft"] <= 1
    assert "| after iteration | KL |" in capsys.readouterr().out
    saved = json.loads((tmp_path / "long" / "ttrl_transfer.json").read_text())
    assert list(saved["checkpoints"]) == ["1"]


def test_bad_checkpoints_and_ratio_lists_are_refused():
    mod = load()
    with pytest.raises(SystemExit):
        mod.parse_args(["--iterations", "3", "--eval-at", "3"])
    with pytest.raises(SystemExit):
        mod.parse_args(["--intrinsic-rewards", "none", "sharpness"])
    assert mod.parse_args(["--intrinsic-rewards", "none"]).intrinsic_rewards == []
