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
    assert cfg.reward_names == ["sharpness", "low_noise", "colorfulness", "contrast", "alignment"]
    assert (cfg.data.resolution, cfg.autoencoder.kind, cfg.text_encoder.kind) == (32, "identity", "minilm")
    assert cfg.optim.betas == (0.9, 0.999) or list(cfg.optim.betas) == [0.9, 0.999]


def test_baseline_differs_from_the_reward_run_only_by_rewards_and_name():
    miro, base = typed("experiment=shapes_miro"), typed("experiment=shapes_baseline")
    assert base.reward_names == [] and miro.reward_names
    for cfg in (miro, base):
        cfg.reward_names, cfg.name = [], "x"
    assert miro == base


def test_paper_recipe_composes():
    cfg = typed("experiment=miro_paper", "data.shards='/data/cc12m-{000000..000009}.tar'")
    assert (cfg.batch_size, cfg.max_steps, cfg.ema_decay, cfg.mixed_precision) == (1024, 500000, 0.9999, "bf16")
    assert (cfg.model.width, cfg.text_encoder.kind, cfg.autoencoder.normalization) == (1024, "t5", "per_channel")
    assert cfg.data.cache and cfg.optim.warmup_steps == 5000
    assert (cfg.sample.every, cfg.sample.settings.steps, cfg.sample.settings.guidance_scale) == (5000, 50, 0.0)


def test_sample_grids_use_the_sampling_settings_schema():
    from miro.sampling.settings import SamplingSettings

    cfg = typed()
    assert cfg.sample.settings == SamplingSettings(steps=20, guidance_scale=0.0)
    cfg = typed("experiment=shapes_reference", "sample.settings.sampler=heun", "sample.settings.text_guidance_scale=1.0")
    assert (cfg.sample.settings.guidance_scale, cfg.sample.settings.sampler, cfg.sample.settings.text_guidance_scale) == (3.0, "heun", 1.0)


@pytest.mark.parametrize("override, message", [
    ("mixed_precision=fp8", "mixed_precision='fp8': must be one of"),
    ("data.sampling=sometimes", "data.sampling='sometimes'"),
    ("optim.lr=-1", "optim.lr=-1"),
    ("time.kind=beta", "time.kind='beta'"),
    ("time.low=1.0", "time.low=1.0: must be in [0, 1)"),
    ("time.high=0.2|time.low=0.5", "time.high=0.2: must be in (time.low=0.5, 1]"),
    ("compile_mode=fast", "compile_mode='fast': must be one of"),
    ("text_dropout=2", "text_dropout=2"),
    ("cache_job.rank=3", "cache_job.rank=3"),
    ("reward_names=[sharpness,beauty]", "unknown reward(s) ['beauty']"),
    ("reward_names=[sharpness,sharpness]", "reward_names=['sharpness', 'sharpness']: lists a reward twice"),
    ("recommended_reward_targets={beauty: 0.5}", "names rewards the run is not conditioned on"),
    ("recommended_reward_targets={contrast: 1.5}", "every target must be in"),
    ("sample.settings.steps=0", "settings.steps=0: must be >= 1"),
    ("sample.settings.guidance_scale=-1", "sample.settings.guidance_scale=-1.0: must be >= 0"),
    ("sample.settings.sampler=rk4", "settings.sampler='rk4'"),
    ("sample.settings.height=64", "sample.settings.height/width=(64, None): must be null"),
    ("+sample.settings.reward_targets.sharpness=0.5", "sample.settings.reward_targets={'sharpness': 0.5}: must be empty"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        typed(*override.split("|"))  # "a|b": two overrides


def test_missing_data_path_of_the_web_preset():
    with pytest.raises(ConfigError, match="shards"):
        typed("experiment=miro_paper")


def test_token_mixer_reaches_the_model_config_and_is_checked():
    """``python -m miro.train model.token_mixer=...`` composes onto ModelConfig and builds that backbone; a bad
    value stops with the key's name."""
    from miro.models.config import build_model

    overrides = [
        "model.token_mixer=attention+ttt_mlp",
        "model.ttt_mini_batch=8",
        "model.ttt_scan_orders=raster+col",
    ]
    cfg = typed(*overrides)
    got = (cfg.model.token_mixer, cfg.model.ttt_mini_batch, cfg.model.ttt_scan_orders)
    assert got == ("attention+ttt_mlp", 8, "raster+col")
    assert typed().model.token_mixer == "attention"
    model = build_model(cfg.model, text_dim=8, in_channels=3, sample_size=8)
    assert model.config.token_mixer == "attention+ttt_mlp"
    assert model.blocks[0].ttt.scan_orders == ("raster", "col")
    for override, message in [
        ("model.token_mixer=ttt", "model.token_mixer='ttt': must be one of"),
        ("model.ttt_mini_batch=0", "model.ttt_mini_batch=0"),
        ("model.ttt_scan_orders=raster+spiral", "model.ttt_scan_orders='raster+spiral'"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            typed(override)


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_composes_onto_the_schema(name):
    cfg = typed(f"experiment={name}", "data.shards=/data/x.tar")
    assert cfg.name and cfg.max_steps >= 1


def test_ttt_experiment_takes_the_mixer_from_the_command_line():
    cfg = typed("experiment=shapes_ttt64", "model.token_mixer=attention+ttt_linear")
    assert (cfg.model.token_mixer, cfg.data.resolution, cfg.model.patch_size) == ("attention+ttt_linear", 64, 4)
