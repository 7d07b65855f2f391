"""Training the U-Net backbone with this package's trainer (``model.backbone: unet``): a run end to end with
resume, bit-identical to the uninterrupted run, and its export sampled by the pipeline."""

from __future__ import annotations

import torch

from miro.models.config import ModelConfig, UNetConfig, build_model
from miro.train.loop import Components
from tests.data.make_dataset import REWARDS
from tests.train.backbones import check_run_resumes_and_exports
from tests.train.tiny import TinyTextEncoder

UNET = ModelConfig(backbone="unet", unet=UNetConfig(block_out_channels=[8, 16], attention_head_dim=4, norm_num_groups=4,
                                                    cond_width=16, cond_heads=2, reward_fourier_dim=8))


def unet_components(seed=0) -> Components:
    from miro.models.autoencoders import IdentityAutoencoder

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(UNET, reward_names=list(REWARDS), text_dim=8, in_channels=3, sample_size=16)
    return Components(model=model, text_encoder=TinyTextEncoder(), autoencoder=IdentityAutoencoder())


def test_a_unet_run_trains_resumes_bit_identically_and_exports_a_pipeline(tmp_path, shards_root):
    check_run_resumes_and_exports(tmp_path, shards_root, UNET, unet_components, "MiroUNet",
                                  "unet.down_blocks.1.attentions.")
