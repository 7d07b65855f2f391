"""A resumed demo keeps the timings of the steps it skips (run_step without a subprocess for done steps)."""

from miro.demo.config import DemoConfig
from miro.demo.steps import Step, load_timings, run_step, save_timings


def test_skipped_steps_keep_the_timing_of_the_run_that_did_them(tmp_path):
    save_timings(tmp_path, {"train": {"seconds": 528.0, "command": "python -m miro.train", "skipped": False}})
    timings = load_timings(tmp_path)
    cfg = DemoConfig(out=str(tmp_path))
    run_step(Step("train", "Train", ["miro.train"], lambda: True), cfg, 1, 2, timings)
    run_step(Step("world", "World", ["miro.data.shapes"], lambda: True), cfg, 2, 2, timings)
    assert timings["train"] == {"seconds": 528.0, "command": "python -m miro.train", "skipped": False}
    assert timings["world"]["skipped"] and timings["world"]["seconds"] == 0.0
    assert load_timings(tmp_path / "nowhere") == {}
