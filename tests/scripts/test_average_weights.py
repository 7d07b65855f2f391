"""scripts/experiments/average_weights.py: the soup of saved pipelines is the weighted mean of their tensors, loads
as a pipeline, and refuses pipelines that cannot be averaged."""

import json

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from miro.models.config import AutoencoderConfig, TextEncoderConfig
from miro.models.unet import MiroUNet
from miro.sampling.pipeline import MiroPipeline
from tests.scripts.loader import load_script

aw = load_script("experiments/average_weights.py")


class _Encoder:  # the pipeline only asks for the token width here (no prompt is encoded)
    dim, kind, max_length, layer = 8, "minilm", 16, "last"


def save(path, seed, channels=(8, 16)):
    torch.manual_seed(seed)
    unet = MiroUNet(in_channels=3, sample_size=16, text_dim=8, reward_names=["sharpness"], block_out_channels=channels,
                    attention_head_dim=4, norm_num_groups=4, cond_width=16, cond_heads=2, reward_fourier_dim=8)  # fmt: skip
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.1 * torch.randn_like(p))
    pipe = MiroPipeline(transformer=unet, scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0),
                        text_encoder_config=TextEncoderConfig(kind="minilm", max_length=16),
                        autoencoder_config=AutoencoderConfig(kind="identity"), num_bins=8, text_encoder=_Encoder())  # fmt: skip
    pipe.save_pretrained(path)
    return unet.state_dict()


def test_the_average_is_the_weighted_mean_and_loads_as_the_same_model(tmp_path):
    a, b = save(tmp_path / "a", 0), save(tmp_path / "b", 1)
    summary = aw.main(["--pipelines", str(tmp_path / "a"), str(tmp_path / "b"), "--weights", "3", "1",
                       "--out", str(tmp_path / "soup")])  # fmt: skip
    assert summary["weights"] == [0.75, 0.25]
    soup = MiroUNet.from_pretrained(tmp_path / "soup" / "transformer").state_dict()
    for key in a:
        assert torch.allclose(soup[key], 0.75 * a[key] + 0.25 * b[key], atol=1e-6), key
    d_a, d_b = summary["relative_distance_to_average"]
    assert d_b == pytest.approx(3 * d_a, rel=1e-4)  # the average sits a quarter of the way from a to b
    assert json.loads((tmp_path / "soup" / "average_weights.json").read_text())["out"] == str(tmp_path / "soup")
    assert (tmp_path / "soup" / "model_index.json").is_file()


def test_pipelines_that_cannot_be_averaged_are_refused_and_nothing_is_overwritten(tmp_path):
    save(tmp_path / "a", 0)
    save(tmp_path / "wide", 1, channels=(8, 32))
    with pytest.raises(ValueError, match="another architecture.*block_out_channels"):
        aw.average_pipelines([tmp_path / "a", tmp_path / "wide"], [1, 1], tmp_path / "x")
    with pytest.raises(ValueError, match="at least two"):
        aw.average_pipelines([tmp_path / "a"], [1], tmp_path / "x")
    with pytest.raises(ValueError, match="one non-negative weight per pipeline"):
        aw.average_pipelines([tmp_path / "a", tmp_path / "a"], [1, -1], tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="no transformer weights"):
        aw.average_pipelines([tmp_path / "a", tmp_path / "nothing"], [1, 1], tmp_path / "x")
    with pytest.raises(FileExistsError, match="nothing is overwritten"):
        aw.average_pipelines([tmp_path / "a", tmp_path / "a"], [1, 1], tmp_path / "wide")
    assert not (tmp_path / "x").exists()
