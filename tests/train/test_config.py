"""The yaml under miro/conf/ composes onto the typed schema, and bad values stop with the key's name."""

import re

import pytest
from hydra import compose, initialize_config_dir

import miro.train.__main__  # noqa: F401  (registers train_schema)
from miro.train.config import TrainConfig
from miro.utils.config import CONFIG_DIR, ConfigError, to_typed

CONF = str(CONFIG_DIR)


def typed(*overrides: str) -> TrainConfig:
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("train", overrides=["output_dir=/tmp/unused", *overrides])
    return to_typed(cfg, TrainConfig)


def test_default_is_the_shapes_demo():
    cfg = typed()
    assert cfg.rewards == ["sharpness", "low_noise", "colorfulness", "contrast", "alignment"]
    assert (cfg.data.resolution, cfg.autoencoder.kind, cfg.text_encoder.kind) == (32, "identity", "minilm")
    assert cfg.optim.betas == (0.9, 0.999) or list(cfg.optim.betas) == [0.9, 0.999]


def test_baseline_differs_from_the_reward_run_only_by_rewards_and_name():
    miro, base = typed("experiment=shapes_miro"), typed("experiment=shapes_baseline")
    assert base.rewards == [] and miro.rewards
    for cfg in (miro, base):
        cfg.model.reward_names, cfg.name = [], "x"
    assert miro == base


def test_paper_recipe_composes():
    cfg = typed("experiment=miro_paper", "data.shards='/data/cc12m-{000000..000009}.tar'")
    assert (cfg.batch_size, cfg.max_steps, cfg.ema_decay, cfg.mixed_precision) == (1024, 500000, 0.9999, "bf16")
    assert (cfg.model.width, cfg.text_encoder.kind, cfg.autoencoder.normalization) == (1024, "t5", "per_channel")
    assert cfg.data.cache and cfg.optim.warmup_steps == 5000


@pytest.mark.parametrize("override, message", [
    ("mixed_precision=fp8", "mixed_precision='fp8': must be one of"),
    ("data.sampling=sometimes", "data.sampling='sometimes'"),
    ("optim.lr=-1", "optim.lr=-1"),
    ("time.kind=beta", "time.kind='beta'"),
    ("text_dropout=2", "text_dropout=2"),
    ("cache_job.rank=3", "cache_job.rank=3"),
    ("model.reward_names=[sharpness,beauty]", "unknown reward(s) ['beauty']"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        typed(override)


def test_missing_data_path_of_the_web_preset():
    with pytest.raises(ConfigError, match="shards"):
        typed("experiment=miro_paper")
