"""``python -m miro.testtime.adapt``: ttrl_adapt from the command line, on the tiny random pipeline."""

import json

import pytest
from omegaconf import OmegaConf

from miro.testtime.adapt import AdaptConfig, main
from miro.utils.config import ConfigError, to_typed
from tests.sampling.conftest import saved_pipe, text_encoder, tiny_pipe  # noqa: F401


def config(**kw) -> AdaptConfig:
    return to_typed(OmegaConf.create({"pipeline": "p", "prompts": ["a"], **kw}), AdaptConfig)


def test_the_entry_point_adapts_saves_a_loadable_adapter_and_the_history(saved_pipe, tmp_path):  # noqa: F811
    from miro.sampling.pipeline import MiroPipeline

    out = tmp_path / "out"
    main([f"pipeline={saved_pipe}", "prompts=[a red circle,two blue squares]", "monitor=rewards",
          "verifier.rewards=[sharpness]", "track.rewards=[contrast]", "ttrl.group_size=2", "ttrl.iterations=2",
          "ttrl.train_steps=3", "ttrl.sde_steps=1", "ttrl.lr=1e-2", "ttrl.max_kl=10.0",
          "ttrl.groups_per_step=null", "ttrl.advantage_std=global", "lora.rank=2", "settings.steps=2", "settings.guidance_scale=1.0",
          f"out_dir={out}", f"hydra.run.dir={tmp_path / 'hydra'}"])  # fmt: skip
    history = json.loads((out / "history.json").read_text())
    rows = history["history"] if isinstance(history, dict) else history
    assert len(rows) == 2 and {"monitor_mean", "track_mean", "agreement", "kl"} <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prompts"] == 2 and summary["monitor"] == "rewards" and summary["nfe"] > 0
    trace = json.loads((out / "trace.json").read_text())
    assert trace["options"]["groups_per_step"] is None and trace["options"]["advantage_std"] == "global"
    assert trace["options"]["sde_steps"] == 1
    pipe = MiroPipeline.from_pretrained(saved_pipe)
    pipe.load_lora(out / "adapter", "ttrl")
    assert "ttrl" in pipe.transformer.peft_config


@pytest.mark.parametrize("kw, message", [
    ({"monitor": "vibes"}, "monitor='vibes': must be one of"),
    ({"ttrl": {"group_size": 1}}, "ttrl.group_size=1"),
    ({"ttrl": {"sde_noise": 0.0}}, "ttrl.sde_noise=0.0"),
    ({"lora": {"rank": 0}}, "lora.rank=0"),
    ({"prompts": []}, "give prompts"),
    ({"adapter_name": "a/b"}, "adapter_name='a/b'"),
    ({"ttrl": {"max_kl": -1.0}}, "ttrl.max_kl=-1.0: must be > 0 or null"),
    ({"rubric_weight": -0.5}, "rubric_weight=-0.5: must be a number >= 0"),
    ({"ttrl": {"groups_per_step": 0}}, "ttrl.groups_per_step=0: must be a positive integer or null"),
    ({"ttrl": {"advantage_std": "batch"}}, "ttrl.advantage_std='batch'"),
    ({"ttrl": {"train_steps": 4, "sde_steps": 4}}, "ttrl.sde_steps=4: must be null or an integer in \\[1, 3\\]"),
])  # fmt: skip
def test_bad_values_name_the_key(kw, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        config(**kw)
