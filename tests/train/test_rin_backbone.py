"""Training the authors' RIN with this package's trainer (``model.backbone: rin``): the self-conditioning loss,
a run end to end with resume, and its export sampled by the pipeline."""

from __future__ import annotations

import pytest
import torch

from miro.flow import LinearPath, TimeSampler, velocity_loss
from miro.models import sample_condition_dropout
from miro.models.config import ModelConfig, RINConfig, build_model
from miro.train.loop import Components, flow_matching_loss, train
from miro.utils.config import ConfigError
from tests.data.make_dataset import REWARDS
from tests.train.backbones import check_run_resumes_and_exports
from tests.train.conftest import tiny_config
from tests.train.tiny import TinyTextEncoder

RIN = ModelConfig(backbone="rin", rin=RINConfig(patch_size=4, data_dim=16, num_latents=6, latents_dim=24, num_blocks=1,
                                                num_processing_layers=1, read_write_heads=2, compute_heads=2,
                                                mixer_heads=2, mixer_depth=1, num_text_registers=2))


def rin_components(rewards=REWARDS, seed=0) -> Components:
    from miro.models.autoencoders import IdentityAutoencoder

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(RIN, reward_names=list(rewards), text_dim=8, in_channels=3, sample_size=16)
    with torch.no_grad():  # give the zero-initialised self-conditioning path an effect, so the tests can see it
        model.rin.ln_previous_2.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed))
    return Components(model=model, text_encoder=TinyTextEncoder(), autoencoder=IdentityAutoencoder())


def batch_inputs(b=4):
    g = torch.Generator().manual_seed(0)
    text = torch.randn(b, 5, 8, generator=g)
    return {"x": torch.randn(b, 3, 16, 16, generator=g), "text": text, "text_mask": torch.ones(b, 5, dtype=torch.bool),
            "rewards": torch.rand(b, len(REWARDS), generator=g), "reward_mask": torch.ones(b, len(REWARDS), dtype=torch.bool)}


@pytest.mark.parametrize("rate", [0.0, 0.5, 1.0])
def test_loss_feeds_the_first_pass_latents_kept_with_the_rate(tmp_path, rate):
    model = rin_components().model.train()
    cfg = tiny_config(tmp_path, tmp_path, model=RIN, self_conditioning_rate=rate, reward_dropout=0.0, text_dropout=0.0)
    inputs = batch_inputs()
    got, t = flow_matching_loss(model, inputs, torch.Generator().manual_seed(7), TimeSampler(), cfg)
    # the same draws by hand: t, noise, dropout masks, then the keep draw after the first pass
    g = torch.Generator().manual_seed(7)
    t2 = TimeSampler()(4, generator=g)
    noise = torch.randn(inputs["x"].shape, generator=g)
    path = LinearPath().sample(inputs["x"], t2, noise)
    keep_r, drop = sample_condition_dropout(4, len(REWARDS), 0.0, 0.0, g)
    kw = dict(rewards=inputs["rewards"], reward_mask=inputs["reward_mask"] & keep_r, drop_text=drop)
    with torch.no_grad():
        _, z = model(path.x_t, t2, inputs["text"], inputs["text_mask"], return_latents=True, **kw)
    keep = torch.rand(4, generator=g) < rate
    v = model(path.x_t, t2, inputs["text"], inputs["text_mask"], previous_latents=z * keep[:, None, None], **kw)
    assert torch.equal(t, t2)
    torch.testing.assert_close(got, velocity_loss(v, path.target), atol=0, rtol=0)
    plain = velocity_loss(model(path.x_t, t2, inputs["text"], inputs["text_mask"], **kw), path.target)
    for i in range(4):  # zeroed latents are the plain call; kept ones change the loss
        assert (bool(got[i] == plain[i])) == (not keep[i]), i
    if rate == 0.5:
        assert 0 < int(keep.sum()) < 4  # this seed draws both cases


def test_a_rin_run_trains_resumes_bit_identically_and_exports_a_pipeline(tmp_path, shards_root):
    check_run_resumes_and_exports(tmp_path, shards_root, RIN, lambda seed: rin_components(seed=seed),
                                  "MiroRINTransformer", "rin.rin_blocks.")


def test_rin_config_errors_stop_before_training(tmp_path, shards_root):
    bad = ModelConfig(backbone="rin", rin=RINConfig(patch_size=5))
    with pytest.raises(ConfigError, match=r"data.resolution=16: must be a multiple of .*model.rin.patch_size"):
        train(tiny_config(tmp_path / "r", shards_root, model=bad))
    with pytest.raises(ConfigError, match="self_conditioning_rate=1.5: must be a probability"):
        tiny_config(tmp_path / "r", shards_root, self_conditioning_rate=1.5)
    with pytest.raises(ConfigError, match="model.gradient_checkpointing=True: is not supported by the rin backbone"):
        ModelConfig(backbone="rin", gradient_checkpointing=True)
