
import pytest
import torch
from omegaconf import OmegaConf

from miro.models.autoencoders import IdentityAutoencoder
from miro.models.config import (
    AutoencoderConfig,
    ModelConfig,
    TextEncoderConfig,
    build_autoencoder,
    build_model,
    build_text_encoder,
    load_preset,
)
from miro.utils.config import CONFIG_DIR, ConfigError, to_typed

CONF = CONFIG_DIR


_preset = load_preset


def test_load_preset_merges_defaults_and_overrides_and_names_an_unknown_preset():
    unet = load_preset("tiny_unet", ["width=96"])
    tiny = load_preset("tiny")
    assert (unet.conv_levels, unet.patch_size, unet.width, unet.depth) == (2, 2, 96, tiny.depth)
    with pytest.raises(ConfigError, match="'tinyy'.*known presets.*tiny_unet"):
        load_preset("tinyy")


TINY_REWARDS = ["sharpness", "low_noise", "colorfulness", "contrast", "alignment"]  # miro/conf/train.yaml's reward_names
PAPER_REWARDS = ["pickscore", "imagereward", "hpsv2", "clip_score", "aesthetic"]  # experiment/miro_paper.yaml's


def _count_on_meta(cfg: ModelConfig, **derived) -> int:
    with torch.device("meta"):
        model = build_model(cfg, reward_names=PAPER_REWARDS, **derived)
    assert all(p.is_meta for p in model.parameters())
    return sum(p.numel() for p in model.parameters())


def test_miro_xl_preset_is_360m_parameters():
    """MIRO's released model has 360.4M parameters (flan-t5-xl text 2048-d, SDXL latents 4x32x32)."""
    n = _count_on_meta(_preset("miro_xl"), text_dim=2048, in_channels=4, sample_size=32)
    assert abs(n - 360e6) < 0.10 * 360e6, n


@pytest.mark.parametrize("name,derived,low,high", [
    ("tiny", dict(text_dim=384, in_channels=3, sample_size=32), 0.8e6, 3e6),
    ("tiny_conv", dict(text_dim=384, in_channels=3, sample_size=32), 2.1e6, 2.3e6),
    ("tiny_unet", dict(text_dim=384, in_channels=3, sample_size=32), 2.25e6, 2.45e6),
    ("small", dict(text_dim=384, in_channels=4, sample_size=32), 30e6, 60e6),
    ("base", dict(text_dim=768, in_channels=4, sample_size=32), 130e6, 200e6),
])
def test_presets_load_and_have_their_documented_size(name, derived, low, high):
    assert low < _count_on_meta(_preset(name), **derived) < high


def test_tiny_preset_builds_and_runs():
    model = build_model(_preset("tiny"), reward_names=TINY_REWARDS, text_dim=384, in_channels=3, sample_size=32)
    assert model.reward_names == ["sharpness", "low_noise", "colorfulness", "contrast", "alignment"]
    out = model(torch.zeros(1, 3, 32, 32), torch.ones(1), torch.zeros(1, 4, 384), torch.ones(1, 4, dtype=torch.bool))
    assert out.shape == (1, 3, 32, 32)


def test_build_model_derives_and_checks_dimensions():
    cfg = ModelConfig(width=32, num_heads=2, depth=1, patch_size=2)
    with pytest.raises(ConfigError, match="model.text_dim is null"):
        build_model(cfg, in_channels=3, sample_size=8)
    with pytest.raises(ConfigError, match="model.in_channels=4 contradicts"):
        build_model(ModelConfig(width=32, num_heads=2, in_channels=4), text_dim=8, in_channels=3, sample_size=8)
    model = build_model(ModelConfig(width=32, num_heads=2, gradient_checkpointing=True), text_dim=8,
                        in_channels=3, sample_size=8)
    assert model.is_gradient_checkpointing and model.config.text_dim == 8


@pytest.mark.parametrize("schema,values,match", [
    (ModelConfig, {"width": 30}, "model.width=30"),
    (ModelConfig, {"mlp_type": "relu"}, "model.mlp_type='relu'"),
    (ModelConfig, {"patch_size": 4, "sample_size": 6}, "model.sample_size=6"),
    (ModelConfig, {"depth": "deep"}, "depth"),
    (TextEncoderConfig, {"kind": "bert"}, "text_encoder.kind='bert'"),
    (TextEncoderConfig, {"kind": "t5"}, "text_encoder.path=None"),
    (TextEncoderConfig, {"dtype": "float64"}, "text_encoder.dtype='float64'"),
    (TextEncoderConfig, {"layer": "first"}, "text_encoder.layer='first'"),
    (AutoencoderConfig, {"kind": "vq"}, "autoencoder.kind='vq'"),
    (AutoencoderConfig, {"kind": "kl"}, "autoencoder.path=None"),
    (AutoencoderConfig, {"kind": "kl", "path": "x", "normalization": "per_channel"}, "channel_mean"),
    (AutoencoderConfig, {"kind": "kl", "path": "x", "normalization": "minmax"}, "autoencoder.normalization"),
])
def test_bad_values_name_the_key(schema, values, match):
    with pytest.raises(ConfigError, match=match):
        to_typed(values, schema)


def test_schema_defaults_are_the_model_defaults():
    """One default per argument: the schema takes MiroTransformer's (patch_size 2, not a second value)."""
    import dataclasses
    import inspect

    from miro.models import MiroTransformer
    from miro.models.config import RINConfig
    from miro.models.rin_transformer import MiroRINTransformer

    params = inspect.signature(MiroTransformer.__init__).parameters
    cfg = ModelConfig()
    for f in dataclasses.fields(ModelConfig):
        if f.name in ("gradient_checkpointing", "in_channels", "sample_size", "text_dim", "backbone", "rin", "unet"):
            continue  # config-only, or null = derived when the model is built, or the RIN's / U-Net's (below)
        default = params[f.name].default
        assert getattr(cfg, f.name) == default, f.name
    assert cfg.patch_size == 2
    assert cfg.backbone == "dit"
    rin_params = inspect.signature(MiroRINTransformer.__init__).parameters
    for f in dataclasses.fields(RINConfig):
        assert getattr(cfg.rin, f.name) == rin_params[f.name].default, f.name
    from miro.models.unet import MiroUNet

    unet_params = inspect.signature(MiroUNet.__init__).parameters
    for f in dataclasses.fields(type(cfg.unet)):
        default = unet_params[f.name].default
        assert getattr(cfg.unet, f.name) == (list(default) if isinstance(default, tuple) else default), f.name


@pytest.mark.parametrize("values,message", [
    ({"width": 30}, "width=30: must be divisible by num_heads=4"),
    ({"width": 30, "num_heads": 3}, "width=30: must be a multiple of 4"),
    ({"reward_fourier_dim": 3}, "reward_fourier_dim=3: must be an even integer >= 2"),
    ({"reward_fourier_scale": 0.0}, "reward_fourier_scale=0.0: must be > 0"),
    ({"sample_size": 10, "patch_size": 4}, "sample_size=10: must be a multiple of patch_size=4"),
    ({"num_registers": -1}, "num_registers=-1: must be an integer >= 0"),
    ({"conv_channels": 8, "conv_levels": 2, "sample_size": 12, "patch_size": 4},
     "sample_size=12: must be a multiple of patch_size=4 x 2"),
    ({"conv_levels": 2}, "conv_levels=2: must be 1 without conv stem"),
])
def test_model_and_schema_share_one_check(values, message):
    """The model checks its own arguments; the schema runs the same check, naming the key ``model.<key>``."""
    from miro.models import MiroTransformer

    with pytest.raises(ConfigError, match="^" + message):
        MiroTransformer(**values)
    with pytest.raises(ConfigError, match="^model." + message):
        to_typed(values, ModelConfig)


def test_schema_leaves_derived_sizes_to_the_builder():
    cfg = to_typed({"patch_size": 4}, ModelConfig)  # sample_size null: no multiple-of check yet
    assert cfg.sample_size is None
    with pytest.raises(ConfigError, match="model.text_dim=0"):
        to_typed({"text_dim": 0}, ModelConfig)


@pytest.mark.parametrize("path", sorted((CONF / "text_encoder").glob("*.yaml")) + sorted((CONF / "autoencoder").glob("*.yaml")))
def test_every_shipped_yaml_validates(path):
    schema = TextEncoderConfig if path.parent.name == "text_encoder" else AutoencoderConfig
    to_typed(OmegaConf.load(path), schema)


def test_builders():
    assert isinstance(build_autoencoder(to_typed(OmegaConf.load(CONF / "autoencoder" / "identity.yaml"), AutoencoderConfig)), IdentityAutoencoder)
    enc = build_text_encoder(to_typed(OmegaConf.load(CONF / "text_encoder" / "minilm.yaml"), TextEncoderConfig))
    assert enc.dim == 384 and enc.max_length == 32
