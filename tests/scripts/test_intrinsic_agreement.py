"""scripts/experiments/intrinsic_agreement.py end to end on a tiny random pipeline, and its band arithmetic."""

import json

import numpy as np
import pytest

from tests.sampling.conftest import saved_pipe, text_encoder, tiny_pipe  # noqa: F401
from tests.scripts.loader import load_script
from tests.scripts.test_bench_testtime import red_circle_world

ia = load_script("experiments/intrinsic_agreement.py")


def test_agreement_reads_each_band_off_its_own_draws():
    t = np.array([0.01, 0.05, 0.2, 0.6])
    # reward 0 agrees with the external reward only through its low-t draws, reward 1 only through its high-t ones
    x = np.arange(6, dtype=float)
    d = np.zeros((6, 4, 2))
    d[:, :2, 0] = x[:, None]
    d[:, 2:, 0] = -x[:, None]
    d[:, 2:, 1] = x[:, None] ** 2
    out = ia.agreement(d, t, {"a": x, "b": x}, ["a", "b"], ["0.005-0.1", "0.1-0.9", "0.9-1"])
    assert out["0.005-0.1"]["draws"] == 2 and out["0.005-0.1"]["a"] == pytest.approx(1.0)
    assert out["0.1-0.9"]["a"] == pytest.approx(-1.0) and out["0.1-0.9"]["b"] == pytest.approx(1.0)
    assert np.isnan(out["0.005-0.1"]["b"])  # constant over the images: undefined, not 0
    assert out["0.9-1"]["draws"] == 0 and np.isnan(out["0.9-1"]["a"])


def test_spread_targets_are_a_function_of_prompt_and_seed():
    a = ia.spread_targets(["sharpness", "contrast"], 3, 5)
    assert a == ia.spread_targets(["sharpness", "contrast"], 3, 5) != ia.spread_targets(["sharpness", "contrast"], 3, 6)
    assert all(0 <= v <= 1 for v in a.values())


def test_bad_bands_are_refused():
    with pytest.raises(SystemExit):
        ia.parse_args(["--out", "x", "--bands", "0.5-0.2"])
    with pytest.raises(SystemExit):
        ia.parse_args(["--out", "x", "--bands", "low"])


def test_the_experiment_runs_and_resumes(saved_pipe, tmp_path, capsys):  # noqa: F811
    red_circle_world(tmp_path)
    argv = ["--pipeline", str(saved_pipe), "--data", str(tmp_path / "world"), "--per-task", "1", "--seeds", "4",
            "--first-seed", "0", "--reward-targets", "sharpness=1", "--low-draws", "1", "--high-draws", "2", "--steps", "2", "--threads", "1",
            "--out", str(tmp_path / "out")]  # fmt: skip
    ia.main(argv)
    result = json.loads((tmp_path / "out" / "agreement.json").read_text())
    assert result["rewards"] == ["sharpness"]  # the tiny model's only weight-free reward
    for pool in ("baseline", "spread"):
        res = result["pools"][pool]
        assert res["images"] == 4 and len(res["t_draws"]) == 3
        assert res["spearman"]["0.005-0.99"]["draws"] == 3 and res["spearman"]["0.005-0.1"]["draws"] == 1
        assert -1 <= res["spearman"]["0.005-0.99"]["sharpness"] <= 1
    assert set(result["pools"]["spread"]["target_spearman"]) == {"sharpness"}
    assert len(list((tmp_path / "out" / "images" / "spread").iterdir())) == 4
    # a rerun reads the cached images and differences and writes the same numbers
    (tmp_path / "out" / "agreement.json").unlink()
    ia.main(argv)
    assert json.loads((tmp_path / "out" / "agreement.json").read_text())["pools"] == result["pools"]
