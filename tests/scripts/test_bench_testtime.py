"""scripts/bench_testtime.py end to end on a tiny random pipeline: one held-out prompt, budgets 1 and 2."""

import json

from tests.sampling.conftest import saved_pipe, text_encoder, tiny_pipe  # noqa: F401
from tests.scripts.loader import load_script


def load_bench():
    return load_script("bench_testtime.py")


def red_circle_world(tmp_path):
    """A shapes world folder whose held-out GenEval file holds one prompt, "a photo of a red circle"."""
    row = {"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "red"}], "prompt": "a photo of a red circle"}
    (tmp_path / "world" / "heldout").mkdir(parents=True)
    (tmp_path / "world" / "heldout" / "evaluation_metadata.jsonl").write_text(json.dumps(row) + "\n")


def test_bench_writes_its_report_and_plot(saved_pipe, tmp_path):  # noqa: F811
    red_circle_world(tmp_path)
    bench = load_bench()
    report = bench.main([
        "--data", str(tmp_path / "world"), "--pipeline", str(saved_pipe), "--out", str(tmp_path / "out"),
        "--budgets", "1", "2", "--seeds", "2", "--steps", "2", "--intrinsic-draws", "1",
        "--methods", "best_of_n", "condition_search", "reno", "--settings", "quality", "intrinsic",
        "--loo-budget", "2", "--loo-methods", "best_of_n",
    ])  # fmt: skip
    assert (tmp_path / "out" / "gain_vs_compute.png").stat().st_size > 0
    saved = json.loads((tmp_path / "out" / "bench_testtime.json").read_text())
    assert saved["prompts"] == 1 and saved["seeds"] == [0, 1]
    assert len(saved["results"]) == 2 * 3 * 2 and len(saved["leave_one_out"]) == 5
    best = [r for r in report["results"] if r["setting"] == "quality" and r["method"] == "best_of_n"]
    assert [r["budget"] for r in best] == [1.0, 2.0] and best[1]["nfe_per_image"] <= 2 * best[0][
        "nfe_per_image"
    ]
    assert best[1]["candidates_per_search"] == 2 and best[1]["verifier_delta"] >= 0
    assert set(saved["intrinsic_agreement"]["spearman"]) == {
        "sharpness"
    }  # the tiny model's weight-free reward


def test_select_prompts_takes_the_first_of_every_task_then_the_limit():
    bench = load_bench()
    rows = [
        {"tag": t, "prompt": f"{t}{i}"}
        for t, n in (("single", 3), ("two", 1), ("colors", 4))
        for i in range(n)
    ]
    assert [r["prompt"] for r in bench.select_prompts(rows, None, 2)] == ["single0", "single1", "two0", "colors0",
                                                                         "colors1"]  # fmt: skip
    assert [r["prompt"] for r in bench.select_prompts(rows, 3, 2)] == ["single0", "single1", "two0"]
    assert bench.select_prompts(rows, None, None) == rows


def test_parse_targets_reads_clean_and_pairs_and_rejects_garbage():
    import pytest

    from miro.demo.config import CLEAN_TARGETS

    bench = load_bench()
    assert bench.parse_targets(None) is None
    assert bench.parse_targets("clean") == CLEAN_TARGETS
    assert bench.parse_targets("sharpness=0.5, contrast=1") == {"sharpness": 0.5, "contrast": 1.0}
    with pytest.raises(SystemExit, match="name=value"):
        bench.parse_targets("sharpness:0.5")
    free = bench.parse_targets("sharpness=0.5,contrast=none")
    assert free == {"sharpness": 0.5, "contrast": None}
    from miro.sampling.targets import free_negatives

    assert free_negatives(free) == {"contrast": None} and free_negatives({"sharpness": 1.0}) is None

    from types import SimpleNamespace

    shipped = {"sharpness": 0.778, "colorfulness": None, "contrast": None}
    assert bench.parse_targets("recommended", SimpleNamespace(recommended_reward_targets=shipped)) == shipped
    with pytest.raises(SystemExit, match="recommends no targets"):
        bench.parse_targets("recommended", SimpleNamespace(recommended_reward_targets=None))


def test_summary_compares_both_condition_searches_with_best_of_n_at_equal_budget():
    bench = load_bench()
    assert bench.METHOD_RUNS["condition_search_targets"] == ("condition_search", {"search_w": False})
    assert bench.METHOD_RUNS["condition_search_targets_noise"] == (
        "condition_search", {"search_w": False, "share_noise": False})  # fmt: skip
    assert bench.METHOD_RUNS["condition_search_noise"] == ("condition_search", {"share_noise": False})

    def row(method, budget, own, held, gen):
        return {"setting": "quality", "method": method, "budget": budget, "verifier_delta": own,
                "held_out_delta_z": held, "geneval_gain_points": gen}  # fmt: skip

    results = [row("best_of_n", 8, 2.0, 0.1, 0.0), row("condition_search", 8, 1.5, 0.3, 1.0),
               row("condition_search_targets", 8, 2.5, -0.1, 2.0), row("condition_search", 1, 0, 0, 0),
               row("condition_search_targets_noise", 8, 3.0, 0.0, 0.0)]  # fmt: skip
    pairs = {c["method"]: c for c in bench.summarize(results)["condition_vs_best_of_n"]}
    assert set(pairs) == {"condition_search", "condition_search_targets", "condition_search_targets_noise"}
    assert (
        pairs["condition_search"]["verifier_delta"] == -0.5
        and pairs["condition_search_targets"]["geneval_points"] == 2.0
    )


def test_bench_runs_per_prompt_test_time_training_within_each_budget(saved_pipe, tmp_path):  # noqa: F811
    row = {
        "tag": "colors",
        "include": [{"class": "circle", "count": 1, "color": "red"}],
        "prompt": "a photo of a red circle",
    }
    (tmp_path / "world" / "heldout").mkdir(parents=True)
    (tmp_path / "world" / "heldout" / "evaluation_metadata.jsonl").write_text(json.dumps(row) + "\n")
    report = load_bench().main([
        "--data", str(tmp_path / "world"), "--pipeline", str(saved_pipe), "--out", str(tmp_path / "out"),
        "--budgets", "1", "2", "32", "--seeds", "1", "--first-seed", "3", "--steps", "2", "--methods", "ttt_per_prompt",
        "--settings", "quality", "--loo-budget", "0",
    ])  # fmt: skip
    assert json.loads((tmp_path / "out" / "bench_testtime.json").read_text())["seeds"] == [3]  # --first-seed
    rows = [r for r in report["results"] if r["method"] == "ttt_per_prompt"]
    assert [r["budget"] for r in rows] == [1.0, 32.0]  # budget 2 leaves nothing to train with: skipped
    assert 0 < rows[1]["nfe_per_image"] <= 32 * rows[0]["nfe_per_image"] + 1e-9
    assert 0 <= rows[1]["beats_best_demo"] <= 1 and "chosen_minus_best_demo" in rows[1]


def test_pooled_best_of_n_chooses_what_the_method_chooses_at_every_budget(saved_pipe, tmp_path):  # noqa: F811
    """``--pooled``: best-of-N's candidate j is the same noise at every budget, so one pool rendered and scored once
    gives every budget's, setting's and leave-one-out row; the choices, costs and rewards equal the method's own
    (up to the float noise of rendering candidates in other batch sizes)."""
    import math

    rows = [{"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "red"}], "prompt": "a photo of a red circle"},
            {"tag": "single_object", "include": [{"class": "star", "count": 1}], "prompt": "a photo of a star"}]  # fmt: skip
    (tmp_path / "world" / "heldout").mkdir(parents=True)
    (tmp_path / "world" / "heldout" / "evaluation_metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench = load_bench()
    common = ["--data", str(tmp_path / "world"), "--pipeline", str(saved_pipe), "--budgets", "1", "2", "3", "5",
              "--seeds", "2", "--steps", "2", "--methods", "best_of_n", "noise_random", "--settings", "quality", "all",
              "--intrinsic-draws", "1", "--batch-size", "2", "--loo-budget", "3", "--loo-methods", "best_of_n"]  # fmt: skip
    plain = bench.main([*common, "--out", str(tmp_path / "plain")])
    pooled = bench.main([*common, "--out", str(tmp_path / "pooled"), "--pooled"])
    assert len(plain["results"]) == len(pooled["results"]) == 2 * 2 * 4
    for a, b in zip(plain["results"] + plain["leave_one_out"], pooled["results"] + pooled["leave_one_out"]):
        for key in ("setting", "method", "budget", "nfe_per_image", "report_nfe_per_image", "candidates_per_search",
                    "geneval", "held_out"):  # fmt: skip
            assert a.get(key) == b.get(key), (key, a, b)
        for key in ("verifier_delta", "held_out_delta_z", "choosers_delta_z", "diversity"):
            if key in a and not (isinstance(a[key], float) and math.isnan(a[key])):
                assert math.isclose(a[key], b[key], rel_tol=1e-3, abs_tol=1e-3), (key, a, b)
    for r in pooled["results"]:  # GenEval's overall: the mean over tasks of the per-task means
        by = r["geneval_by_task"]
        assert set(by) == {"colors", "single_object", "overall"}
        assert math.isclose(by["overall"], (by["colors"] + by["single_object"]) / 2)
        assert math.isclose(r["geneval"], (by["colors"] + by["single_object"]) / 2)  # equal prompts per task
    chosen = [r for r in pooled["results"] if r["budget"] == 5 and r["setting"] == "all"]
    assert all(r["candidates_per_search"] < 5 for r in chosen)  # the judges' scoring cost buys fewer candidates
    assert pooled["pool"]["candidates_rendered"] >= 2 * 2 * 5 - 1


def test_the_rubric_alone_chooses_in_its_setting(saved_pipe, tmp_path):  # noqa: F811
    red_circle_world(tmp_path)
    report = load_bench().main([
        "--data", str(tmp_path / "world"), "--pipeline", str(saved_pipe), "--out", str(tmp_path / "out"),
        "--budgets", "1", "8", "--seeds", "2", "--steps", "2", "--intrinsic-draws", "1", "--methods", "best_of_n",
        "--settings", "rubric", "--rubric-aggregate", "min", "--loo-budget", "0", "--pooled",
    ])  # fmt: skip
    rows = report["results"]
    assert [r["setting"] for r in rows] == ["rubric", "rubric"]
    assert {"rubric", "sharpness"} <= set(rows[1]["delta_z"])  # scored: the rubric and the held-out rewards
    assert rows[1]["verifier_delta"] == rows[1]["delta_z"]["rubric"] >= 0  # the rubric alone chooses (weight 1)
    assert rows[1]["candidates_per_search"] > 1


def test_condition_search_moves_only_the_named_targets(saved_pipe, tmp_path):  # noqa: F811
    """``--search-rewards``: the rubric chooses with no model reward, so by default every target would be searched;
    named, only that reward's s+ and s- move, the others keep the settings' targets in every kept condition."""
    red_circle_world(tmp_path)
    bench = load_bench()
    report = bench.main([
        "--data", str(tmp_path / "world"), "--pipeline", str(saved_pipe), "--out", str(tmp_path / "out"),
        "--budgets", "1", "16", "--seeds", "2", "--steps", "2", "--intrinsic-draws", "1",
        "--methods", "condition_search_targets_noise", "--settings", "rubric", "--loo-budget", "0",
        "--search-rewards", "sharpness",
    ])  # fmt: skip
    rows = report["results"]
    assert [r["method"] for r in rows] == ["condition_search_targets_noise"] * 2
    assert rows[1]["candidates_per_search"] > 2  # the rubric's scoring is charged to the budget too
    conds = rows[1]["chosen_conditions"]
    assert conds and all(set(c["reward_targets"]) >= {"sharpness"} for c in conds)
    others = {k for c in conds for k, v in c["reward_targets"].items() if k != "sharpness" and v != 1.0}
    assert not others and any(c["reward_targets"]["sharpness"] != 1.0 for c in conds)


def test_rubric_and_quality_together_weigh_the_rubric_as_asked(saved_pipe, tmp_path):  # noqa: F811
    """(a+b') ``rubric_quality``: the verifier's own Δ is rubric_weight x Δz(rubric) + the four quality Δz; the
    alignment reward and GenEval stay held out."""
    import pytest

    red_circle_world(tmp_path)
    bench = load_bench()
    report = bench.main([
        "--data", str(tmp_path / "world"), "--pipeline", str(saved_pipe), "--out", str(tmp_path / "out"),
        "--budgets", "1", "16", "--seeds", "2", "--steps", "2", "--intrinsic-draws", "1", "--methods", "best_of_n",
        "--settings", "rubric_quality", "--rubric-weight", "3", "--loo-budget", "0", "--pooled",
    ])  # fmt: skip
    r = report["results"][1]
    d = r["delta_z"]
    quality = ("sharpness", "low_noise", "colorfulness", "contrast")
    assert r["candidates_per_search"] > 1 and d["rubric"] != 0  # a candidate other than the baseline was kept
    assert r["verifier_delta"] == pytest.approx(3 * d["rubric"] + sum(d[q] for q in quality))
    assert r["held_out_delta_z"] == pytest.approx(d["alignment"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--data", "x", "--pipeline", "y", "--rubric-weight", "-1"])


def test_intrinsic_t_ranges_parse_and_reach_the_verifier(saved_pipe, tmp_path):  # noqa: F811
    import pytest

    bench = load_bench()
    assert bench.parse_t_ranges(None) is None
    assert bench.parse_t_ranges("low_noise=0.005-0.1, sharpness=0.01-0.2") == {"low_noise": [0.005, 0.1],
                                                                              "sharpness": [0.01, 0.2]}  # fmt: skip
    for bad in ("low_noise:0.1-0.2", "low_noise=0.1", "=0.1-0.2", "low_noise=a-b"):
        with pytest.raises(SystemExit):
            bench.parse_args(["--data", "x", "--pipeline", "y", "--intrinsic-t-ranges", bad])
    red_circle_world(tmp_path)
    args = bench.parse_args(["--data", str(tmp_path / "world"), "--pipeline", str(saved_pipe),
                             "--intrinsic-t-ranges", "sharpness=0.02-0.05"])  # fmt: skip
    judge = bench.Bench(args).intrinsic
    assert judge.t_ranges[judge.rewards.index("sharpness")] == (0.02, 0.05)
    assert judge.t_ranges[judge.rewards.index("aesthetic")] == judge.t_range
