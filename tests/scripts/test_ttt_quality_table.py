"""scripts/experiments/ttt_quality_table.py reads each run's tensorboard loss, gaps.json and geneval.json."""

import json

import pytest

from tests.scripts.loader import load_script


def test_table_reads_loss_speed_gaps_and_geneval(tmp_path, capsys):
    from torch.utils.tensorboard import SummaryWriter

    table = load_script("experiments/ttt_quality_table.py")
    run = tmp_path / "attention_ttt_linear"
    writer = SummaryWriter(str(run / "logs"))
    for step in range(25, 401, 25):
        writer.add_scalar("train/loss", 1.0 / step, step)
        writer.add_scalar("perf/images_per_s", 4.0 if step < 200 else 6.0, step)
    writer.close()
    (run / "gaps.json").write_text(json.dumps({"0.7": {"loss": 0.09, "shuffled_text_pct": 0.3, "no_text_pct": 1.0}}))
    (run / "geneval.json").write_text(json.dumps({"targets": [1.0], "sample_steps": 25, "interval": [0.0, 1.0], "method": "euler", "400": {"text 3 / reward 1": {
        "overall": 5.2, "colour_only": 30.0, "colour_only_chance": 9.0}}}))  # fmt: skip
    (row,) = table.main([str(tmp_path), "attention+ttt_linear"])
    assert row["steps"] == 400 and row["images_per_s"] == 6.0
    assert row["train_loss_last_100"] == pytest.approx(sum(1.0 / s for s in (325, 350, 375, 400)) / 4)
    assert row["loss_by_t"] == {"0.7": 0.09} and row["geneval"]["overall"] == 5.2
    out = capsys.readouterr().out
    assert "| attention+ttt_linear | 400 | 6.0 |" in out and "5.2%" in out and "30.0 / 9.0%" in out
    assert json.loads((tmp_path / "ttt_quality.json").read_text())[0]["mixer"] == "attention+ttt_linear"
