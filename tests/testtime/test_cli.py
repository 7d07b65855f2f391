import json

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from miro.testtime.cli import main
from miro.testtime.config import TestTimeConfig
from miro.utils.config import ConfigError, to_typed


def config(**kw) -> TestTimeConfig:
    return to_typed(OmegaConf.create({"pipeline": "p", "prompts": ["a"], **kw}), TestTimeConfig)


def test_the_entry_point_runs_end_to_end(saved_pipe, tmp_path):
    rows = [
        {
            "tag": "colors",
            "include": [{"class": "circle", "count": 1, "color": "red"}],
            "prompt": "a photo of a red circle",
        }
    ]
    (tmp_path / "meta.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    main([f"pipeline={saved_pipe}", "prompts=[two blue squares]", f"metadata={tmp_path / 'meta.jsonl'}", "seeds=[0,1]",
          "method=condition_search", "budget.samples=3", "settings.steps=2", "batch_size=2",
          "verifier.rewards=[sharpness,contrast,intrinsic,geneval]", "verifier.held_out=[contrast,geneval]",
          "verifier.intrinsic.draws=1", "verifier.intrinsic.rewards=[aesthetic]", "condition_search.w_max=5",
          "verifier.intrinsic.t_ranges={aesthetic:[0.02,0.1]}",
          f"out_dir={out}", f"hydra.run.dir={tmp_path / 'hydra'}"])  # fmt: skip
    names = sorted(p.name for p in (out / "images").iterdir())
    assert names == ["00000_s0.png", "00000_s1.png", "00001_s0.png", "00001_s1.png"]
    assert Image.open(out / "images" / names[0]).size == (8, 8)
    trace = json.loads((out / "trace.json").read_text())
    assert (
        trace["method"] == "condition_search" and len(trace["searches"]) == 4 and trace["one_sample_nfe"] == 4
    )
    assert (
        trace["verifier"]["geneval"]["role"] == "held_out"
        and trace["verifier"]["intrinsic_aesthetic"]["role"] == "chooser"
    )
    assert trace["verifier"]["sharpness"]["norm_source"] == "reference batch of 4 images"
    s = trace["searches"][2]
    assert s["prompt"] == "a photo of a red circle" and s["budget_nfe"] == 12 and s["nfe"] <= 12
    assert len(s["candidates"]) == 2  # (4 NFE + 2 for the intrinsic judge) per candidate
    assert set(s["candidates"][0]["rewards"]) == {"sharpness", "contrast", "intrinsic_aesthetic", "geneval"}
    assert s["candidates"][0]["rewards"]["geneval"] == 0.0  # an 8 x 8 random model draws no circle
    summary = json.loads((out / "summary.json").read_text())
    assert (
        summary["searches"] == 4 and summary["nfe"] == trace["nfe"] and summary["calibration"]["images"] == 4
    )
    assert set(summary["mean_kept_rewards"]) == set(s["candidates"][0]["rewards"])
    kept = Image.open(out / "images" / "00001_s1.png")
    assert np.asarray(kept).shape == (8, 8, 3)


@pytest.mark.parametrize("kw,match", [
    ({"method": "nope"}, r"method='nope': must be one of \['best_of_n'"),
    ({"budget": {"samples": 0.5}}, r"budget.samples=0.5: must be >= 1"),
    ({"budget": {"samples": 2, "nfe": 10}}, "set exactly one of budget.samples and budget.nfe"),
    ({"verifier": {"rewards": ["nope"]}}, r"'nope' is not a reward"),
    ({"verifier": {"held_out": ["alignment"]}}, r"verifier.held_out=\['alignment'\]: 'alignment' is not among"),
    ({"verifier": {"weights": {"intrinsic_aesthetic": 1}}}, "'intrinsic_aesthetic' is not among verifier.rewards"),
    ({"verifier": {"weights": {"sharpness": 1}, "held_out": ["sharpness"]}}, r"\['sharpness'\] also in verifier.weights"),
    ({"prompts": []}, "give prompts"),
    ({"method": "reno", "verifier": {"rewards": ["geneval", "alignment"]}}, "method=reno needs a differentiable chooser"),
    ({"noise_search": {"step": 0}}, "noise_search.step=0"),
    ({"condition_search": {"w_max": -1}}, "condition_search.w_max=-1"),
    ({"reno": {"momentum": 1.0}}, "reno.momentum=1.0"),
    ({"verifier": {"intrinsic": {"t_ranges": {"aesthetic": [0.5, 0.2]}}}}, r"verifier.intrinsic.t_ranges.aesthetic=\[0.5, 0.2\]"),
    ({"verifier": {"intrinsic": {"t_ranges": [0.1, 0.2]}}}, r"verifier.intrinsic.t_ranges=\[0.1, 0.2\]: must be a mapping"),
    ({"verifier": {"rubric": {"aggregate": "max"}}}, r"verifier.rubric.aggregate='max': must be one of \['mean', 'min'\]"),
])  # fmt: skip
def test_bad_values_name_the_key(kw, match):
    with pytest.raises(ConfigError, match=match):
        config(**kw)


def test_method_options_follow_the_config():
    assert config().method_options() == {"n": None, "batch_size": 8}
    opts = config(method="reno", reno={"steps": 2}).method_options()
    assert opts["steps"] == 2 and "batch_size" not in opts
    assert config(method="noise_search", batch_size=3).method_options() == {"algo": "zero_order", "step": 0.3,
                                                                           "neighbors": 4, "batch_size": 3}  # fmt: skip


def test_the_entry_point_runs_per_prompt_test_time_training(saved_pipe, tmp_path):
    out = tmp_path / "out"
    main([f"pipeline={saved_pipe}", "prompts=[a red circle]", "method=ttt_per_prompt", "budget.samples=20",
          "settings.steps=2", "verifier.rewards=[sharpness,contrast]", "ttt.n_pseudo=4", "ttt.top_k=2", "ttt.steps=4",
          "ttt.batch_size=2", "ttt.val_every=2", "ttt.val_draws=2", "ttt.final_samples=2", "ttt.lora.rank=2",
          f"out_dir={out}", f"hydra.run.dir={tmp_path / 'hydra'}"])  # fmt: skip
    trace = json.loads((out / "trace.json").read_text())
    s = trace["searches"][0]
    assert trace["method"] == "ttt_per_prompt" and len(s["candidates"]) == 6  # 4 demonstrations + 2 adapted
    assert s["extra"]["augmentations"] == ["hflip", "translate", "crop"] and s["nfe"] <= 20 * 4
    assert (out / "images" / "00000_s0.png").is_file()


def test_per_prompt_training_that_does_not_fit_the_budget_says_how_much_it_needs(saved_pipe, tmp_path):
    from miro.testtime.budget import BudgetExceeded
    from miro.testtime.cli import run

    cfg = config(pipeline=str(saved_pipe), method="ttt_per_prompt", budget={"samples": 2}, settings={"steps": 2},
                 verifier={"rewards": ["sharpness"]}, out_dir=str(tmp_path / "o"))  # fmt: skip
    with pytest.raises(BudgetExceeded, match=r"costs up to .* raise budget.samples to >="):
        run(cfg)


def test_bad_ttt_values_name_the_key():
    with pytest.raises(ConfigError, match="ttt.top_k"):
        config(method="ttt_per_prompt", ttt={"n_pseudo": 2, "top_k": 3})
    with pytest.raises(ConfigError, match="lora.rank"):
        config(method="ttt_per_prompt", ttt={"lora": {"rank": 0}})
