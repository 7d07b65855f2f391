"""The replication's arithmetic: steps to reach a level (interpolated) and the speed-up per metric."""

import pytest

from tests.scripts.loader import load_script

rep = load_script("experiments/shapes_replication.py")


def test_steps_to_reach_interpolates_and_requires_holding_the_level():
    steps = [100, 200, 300, 400]
    assert rep.steps_to_reach(steps, [0.1, 0.3, 0.5, 0.6], 0.4) == pytest.approx(250.0)
    assert rep.steps_to_reach(steps, [0.1, 0.3, 0.5, 0.6], 0.6) == 400.0
    assert rep.steps_to_reach(steps, [0.7, 0.8, 0.8, 0.9], 0.5) == 100.0  # above all along
    assert rep.steps_to_reach(steps, [0.1, 0.2, 0.2, 0.3], 0.5) is None
    assert rep.steps_to_reach(steps, [0.1, 0.6, 0.2, 0.3], 0.5) is None  # touched once, fell back
    assert rep.steps_to_reach(steps, [0.1, 0.6, 0.2, 0.6], 0.4) == pytest.approx(350.0)  # held from the last crossing


def test_speedups_against_the_baselines_final_score():
    def curve(values):
        return [{"step": 100 * (i + 1), "geneval": v, **dict.fromkeys(rep.DEFAULT_REWARDS, v)} for i, v in enumerate(values)]

    out = rep.speedups({"baseline": curve([0.1, 0.3, 0.4, 0.5]), "miro": curve([0.2, 0.4, 0.5, 0.6])})
    g = out["geneval"]  # baseline final = mean(0.3, 0.4, 0.5) = 0.4, held by MIRO from step 200
    assert g["baseline_final"] == pytest.approx(0.4) and g["baseline_final_spread"] == pytest.approx(0.2)
    assert g["baseline_steps"] == 400 and g["miro_steps"] == pytest.approx(200.0)
    assert g["speedup"] == pytest.approx(2.0) and not g["lower_bound"]
    never = rep.speedups({"baseline": curve([0.1, 0.2, 0.9, 0.9]), "miro": curve([0.2, 0.4, 0.5, 0.6])})["alignment"]
    assert never["miro_steps"] is None and never["speedup"] is None
    first = rep.speedups({"baseline": curve([0.1, 0.2, 0.3, 0.4]), "miro": curve([0.5, 0.5, 0.6, 0.6])})["contrast"]
    assert first["speedup"] == pytest.approx(4.0) and first["lower_bound"]
    # window=1: the baseline's last export alone (0.5 rather than 0.4), held by MIRO from step 300
    last = rep.speedups({"baseline": curve([0.1, 0.3, 0.4, 0.5]), "miro": curve([0.2, 0.4, 0.5, 0.6])}, window=1)["geneval"]
    assert last["baseline_final"] == pytest.approx(0.5) and last["miro_steps"] == pytest.approx(300.0)
    assert last["speedup"] == pytest.approx(4 / 3) and last["final_window"] == 1
    for bad in (0, 5, 1.5):
        with pytest.raises(ValueError, match="window"):
            rep.speedups({"baseline": curve([0.1, 0.3, 0.4, 0.5]), "miro": curve([0.2, 0.4, 0.5, 0.6])}, window=bad)


def test_steps_must_be_a_multiple_of_the_export_interval():
    with pytest.raises(SystemExit):
        rep.main(["report", "--steps", "1000", "--export-every", "300"])


def test_tables_markdown_from_results():
    def row(step, v):
        return {"step": step, "geneval": v, "tasks": {"single_object": v, "position": v / 2}, **dict.fromkeys(rep.DEFAULT_REWARDS, v)}

    curves = {"baseline": [row(100, 0.1), row(200, 0.2), row(300, 0.3)], "miro": [row(100, 0.3), row(200, 0.4), row(300, 0.5)]}
    results = {"curves": curves, "speedups": rep.speedups(curves), "tradeoff": {},
               "sliders": {"targets": [0.0, 1.0], "prompts": ["p"], "seeds": 2,
                           "rewards": {"contrast": {"mean_per_target": [0.1, 0.3], "spearman": 0.9, "p": 1e-3}}}}
    args = rep.argparse.Namespace(steps=200, export_every=100)
    md = rep.tables_markdown(results, args)
    assert "| geneval | 0.2 (0.2) | 0.5 | 300 | 100 | >= 3.00x |" in md
    assert "| position | 15.0% | 25.0% |" in md and "| **overall** | **30.0%** | **50.0%** |" in md
    assert "| contrast | 0.1 | 0.3 | 0.900 | 1.0e-03 |" in md
