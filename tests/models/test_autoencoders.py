import json

import pytest
import torch

from miro.models.autoencoders import IdentityAutoencoder, KLAutoencoder
from miro.utils.weights import WeightsNotFoundError
from tests.models.helpers import save_tiny_vae


def test_identity_passes_through():
    ae = IdentityAutoencoder()
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    assert ae.latent_channels == 3 and ae.downsample == 1 and ae.latent_size(32) == 32
    assert torch.equal(ae.encode(x), x) and torch.equal(ae.decode(ae.encode(x)), x)
    assert torch.equal(ae.decode(torch.full((1, 3, 2, 2), 3.0)), torch.ones(1, 3, 2, 2))  # clamped
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        ae.encode(torch.rand(2, 4, 8, 8))
    assert ae.identifier() == "identity"


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("vae")
    save_tiny_vae(path)
    return path


def _images(seed=0):
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_kl_scale_normalisation_through_the_production_path(vae_dir):
    from diffusers import AutoencoderKL

    ae = KLAutoencoder(str(vae_dir), normalization="scale", scaling_factor=0.18215)
    assert ae.latent_channels == 4 and ae.downsample == 2 and ae.latent_size(16) == 8
    ref = AutoencoderKL.from_pretrained(vae_dir).eval()
    x = _images()
    with torch.no_grad():
        mean = ref.encode(x).latent_dist.mean
        decoded = ref.decode(mean).sample.clamp(-1, 1)
    z = ae.encode(x)
    torch.testing.assert_close(z, mean * 0.18215)
    torch.testing.assert_close(ae.decode(z), decoded, rtol=1e-4, atol=1e-5)


def test_auto_reads_scale_and_shift_from_the_vae_config(tmp_path, vae_dir):
    assert KLAutoencoder(str(vae_dir)).normalization == "scale"
    assert float(KLAutoencoder(str(vae_dir)).scale.flatten()[0]) == 0.5
    save_tiny_vae(tmp_path / "flux", shift_factor=0.1159, scaling_factor=0.3611)
    ae = KLAutoencoder(str(tmp_path / "flux"))
    assert ae.normalization == "shift_scale"
    z = torch.randn(1, 4, 2, 2)
    torch.testing.assert_close(ae.normalize(z), (z - 0.1159) * 0.3611)


def test_per_channel_normalisation_round_trip(vae_dir):
    mean, std = [-0.3480, 0.3754, 0.0419, 2.4331], [7.8518, 5.8465, 6.8716, 5.3140]
    ae = KLAutoencoder(str(vae_dir), normalization="per_channel", channel_mean=mean, channel_std=std)
    z = torch.randn(3, 4, 5, 5) * 6 + 1
    zn = ae.normalize(z)
    expected = (z - torch.tensor(mean).view(1, 4, 1, 1)) * 0.5 / torch.tensor(std).view(1, 4, 1, 1)
    torch.testing.assert_close(zn, expected)
    torch.testing.assert_close(ae.denormalize(zn), z, rtol=1e-6, atol=1e-5)
    with pytest.raises(ValueError, match="latent_channels=4"):
        KLAutoencoder(str(vae_dir), normalization="per_channel", channel_mean=mean[:3], channel_std=std[:3])


def test_sampling_from_moments(vae_dir):
    ae = KLAutoencoder(str(vae_dir), normalization="scale", scaling_factor=2.0)
    x = _images(1)
    mean, std = ae.encode_moments(x)
    assert (std > 0).all()
    z1 = ae.encode(x, sample=True, generator=torch.Generator().manual_seed(5))
    z2 = ae.sample_moments(mean, std, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(z1, z2)
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(z1, (mean + std * noise) * 2.0)
    assert not torch.equal(z1, ae.encode(x))


def test_frozen_identifier_and_bad_input(vae_dir):
    ae = KLAutoencoder(str(vae_dir))
    assert not any(p.requires_grad for p in ae.parameters())
    ae.train()
    assert not ae.vae.training
    ident = ae.identifier()
    assert ident.startswith(f"kl:{vae_dir}:") and "unknown" not in ident
    assert ident != KLAutoencoder(str(vae_dir), scaling_factor=0.3).identifier()
    with pytest.raises(ValueError, match="multiple of the autoencoder's downsample=2"):
        ae.encode(torch.rand(1, 3, 15, 16))
    with pytest.raises(ValueError, match=r"latents must be \[B, 4"):
        ae.decode(torch.rand(1, 3, 8, 8))


def test_missing_vae_errors_clearly(tmp_path, monkeypatch):
    with pytest.raises(WeightsNotFoundError, match="autoencoder.path"):
        KLAutoencoder(str(tmp_path / "missing"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match="not in the Hugging Face cache"):
        KLAutoencoder("miro-test/no-such-vae", subfolder="vae")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(WeightsNotFoundError, match="does not hold a loadable checkpoint"):
        KLAutoencoder(str(tmp_path / "broken"))
