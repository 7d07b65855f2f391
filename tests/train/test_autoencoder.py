"""The autoencoder trainer: it learns, its folder loads as the project's KL autoencoder with unit-scale latents,
a killed run resumes to the same weights, and bad settings or data stop it with a clear message."""

from __future__ import annotations

import json

import pytest
import torch

import miro.train.autoencoder as ae_train
from miro.models.autoencoders import KLAutoencoder
from miro.train.autoencoder import (
    AutoencoderDataConfig,
    AutoencoderTrainConfig,
    load_images,
    train_autoencoder,
)
from miro.utils.config import ConfigError
from tests.data.make_dataset import make_dataset


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("ae_wds")
    make_dataset(root, n_shards=2, per_shard=16, corrupt={"s000i0003": "image"})
    return root


def dies_at(call: int, loss):
    """``loss`` that raises KeyboardInterrupt (a killed job) on its ``call``-th call."""
    calls = []

    def wrapped(rec, x):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return loss(rec, x)

    return wrapped


def tiny(out, shards, **kw) -> AutoencoderTrainConfig:
    base = {"out": str(out), "data": AutoencoderDataConfig(shards=str(shards), resolution=16),
            "block_out_channels": [8, 16], "norm_num_groups": 8, "latent_channels": 4, "steps": 6, "batch_size": 4,
            "lr": 5e-3, "warmup_steps": 2, "val_images": 6, "checkpoint_every": 3, "log_every": 3,
            "mixed_precision": "no"}
    return AutoencoderTrainConfig(**{**base, **kw})


def test_it_learns_and_writes_a_folder_the_kl_autoencoder_loads_with_unit_scale_latents(tmp_path, shards, one_torch_thread):
    report = train_autoencoder(tiny(tmp_path / "ae", shards, steps=60, log_every=10, checkpoint_every=100),
                               progress=False)
    first, last = report["history"][0], report["history"][-1]
    assert first["step"] == 0 and last["mse"] < 0.7 * first["mse"], report["history"]  # held-out reconstruction improves
    assert report["data"] == {"shards": 2, "images": 31, "skipped": 1, "damaged_shards": 0,
                              "train_images": 25, "val_images": 6}  # the corrupt image is counted, not fatal
    saved = json.loads((tmp_path / "ae" / "training.json").read_text())
    assert saved["val"] == report["val"] and not (tmp_path / "ae" / "checkpoint.pt").exists()

    ae = KLAutoencoder(str(tmp_path / "ae"), normalization="scale")
    assert (ae.latent_channels, ae.downsample) == (4, 2)
    images, _ = load_images(str(shards), 16)
    x = images[:25].float() / 127.5 - 1
    z = ae.encode(x)
    assert z.shape == (25, 4, 8, 8)
    assert z.std().item() == pytest.approx(1.0, rel=1e-3)  # scaling_factor = 1 / std of the training latents
    assert ae.decode(z).shape == (25, 3, 16, 16)


def test_a_killed_run_resumes_to_the_same_weights(tmp_path, shards, monkeypatch, one_torch_thread):
    train_autoencoder(tiny(tmp_path / "whole", shards), progress=False)

    real = ae_train.reconstruction_loss
    monkeypatch.setattr(ae_train, "reconstruction_loss", dies_at(5, real))
    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(tiny(tmp_path / "killed", shards), progress=False)
    assert (tmp_path / "killed" / "checkpoint.pt").exists() and not (tmp_path / "killed" / "training.json").exists()
    monkeypatch.setattr(ae_train, "reconstruction_loss", real)
    report = train_autoencoder(tiny(tmp_path / "killed", shards), progress=False)
    assert [r["step"] for r in report["history"]] == [0, 3, 6]

    from safetensors.torch import load_file

    a = load_file(tmp_path / "whole" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "killed" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_finished_folder_is_kept_and_a_checkpoint_of_another_shape_is_refused(tmp_path, shards, monkeypatch, one_torch_thread):
    train_autoencoder(tiny(tmp_path / "ae", shards, steps=2), progress=False)
    with pytest.raises(ConfigError, match="holds a finished autoencoder"):
        train_autoencoder(tiny(tmp_path / "ae", shards, steps=2), progress=False)
    train_autoencoder(tiny(tmp_path / "ae", shards, steps=2, overwrite=True), progress=False)  # replaces it

    monkeypatch.setattr(ae_train, "reconstruction_loss", dies_at(4, ae_train.reconstruction_loss))
    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(tiny(tmp_path / "other", shards), progress=False)
    with pytest.raises(ConfigError, match="its checkpoint was made with"):
        train_autoencoder(tiny(tmp_path / "other", shards, latent_channels=8), progress=False)


@pytest.mark.parametrize("kw,message", [
    ({"norm_num_groups": 3}, "norm_num_groups=3: must be positive and divide every block width"),
    ({"block_out_channels": []}, "block_out_channels=[]: must be a non-empty list"),
    ({"data": AutoencoderDataConfig(shards="x", resolution=17)}, "data.resolution=17: must be a multiple of the downsample factor 2"),
    ({"steps": 0}, "steps=0: must be a positive integer"),
    ({"kl_weight": -1.0}, "kl_weight=-1.0: must be >= 0"),
    ({"mixed_precision": "fp8"}, "mixed_precision='fp8': must be one of"),
])
def test_bad_settings_name_the_key(tmp_path, kw, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        tiny(tmp_path, "x", **kw)


def test_missing_shards_are_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        train_autoencoder(tiny(tmp_path / "ae", tmp_path / "nothing_here"), progress=False)
    assert not (tmp_path / "ae").exists()
