"""MiroRIN without the authors' package: their folder layout and its errors, inputs, dtypes.

Parity with their code is ``test_rin_parity.py``; here an authors'-layout folder is written from our own
model with ``rin_state_dict_to_authors`` (the parity test checks that function against their file).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from miro.models.rin import (
    AuthorsCheckpointError,
    MiroRIN,
    load_authors_checkpoint,
    rin_config_from_authors,
    rin_state_dict_to_authors,
    swiglu_hidden,
)

KEYS = ["clip_score", "aesthetic_score"]
NET = dict(
    data_size=4, data_dim=16, num_input_channels=2, num_latents=4, latents_dim=32, label_dim=8,
    num_processing_layers=1, num_blocks=1, patch_size=2, num_cond_tokens=3, read_write_heads=2,
    compute_heads=2, latent_mlp_multiplier=1, data_mlp_multiplier=1, use_cond_rin_block=True,
    concat_cond_token_to_latents=False, use_self_conditioning=True, num_text_registers=2, coherence_keys=KEYS,
)  # fmt: skip
PRE = dict(num_latents=4, latents_dim=32, do_normalization="noise_driven", sigma_data=0.5, logvar_channels=8)


def tiny(**overrides) -> MiroRIN:
    torch.manual_seed(0)
    return MiroRIN(
        **rin_config_from_authors({"network": dict(NET, **overrides), "preconditioning": PRE})
    ).eval()


def write_authors_folder(path, model: MiroRIN, config=None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config or {"network": NET, "preconditioning": PRE}))
    save_file(rin_state_dict_to_authors(model), str(path / "model.safetensors"))
    np.save(path / "uncond_embedding.npy", np.zeros((1, NET["label_dim"]), np.float32))


def inputs(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    text_mask = torch.ones(batch, 3, dtype=torch.bool)
    text_mask[0, 1:] = False
    return (
        torch.randn(batch, 2, 4, 4, generator=g), torch.rand(batch, generator=g),
        torch.randn(batch, 3, 8, generator=g), text_mask,
    )  # fmt: skip


def test_swiglu_width_is_rounded_up_to_256():
    assert swiglu_hidden(1024, 4) == 2816 and swiglu_hidden(512, 4) == 1536  # reference/miro.md section 3
    assert swiglu_hidden(16, 1) == 256


def test_authors_folder_loads_with_its_pipeline_state(tmp_path):
    model = tiny()
    write_authors_folder(tmp_path / "ckpt" / "no_clip", model)
    with pytest.raises(AuthorsCheckpointError, match=r"variant= one of \['no_clip'\]"):
        load_authors_checkpoint(tmp_path / "ckpt")
    ckpt = load_authors_checkpoint(tmp_path / "ckpt", variant="no_clip")
    assert ckpt.model.coherence_keys == tuple(KEYS) and ckpt.uncond_embedding.shape == (1, 8)
    x, t, text, mask = inputs()
    with torch.no_grad():
        a, b = (
            model.velocity(x, t, text, mask, {"clip_score": 0.5}),
            ckpt.model.velocity(x, t, text, mask, {"clip_score": 0.5}),
        )
    assert torch.equal(a.sample, b.sample)


def test_wrong_layouts_say_what_was_found_and_what_to_do(tmp_path):
    with pytest.raises(AuthorsCheckpointError, match="not a folder"):
        load_authors_checkpoint(tmp_path / "nowhere")
    model = tiny()
    model.save_pretrained(tmp_path / "ours")  # a diffusers model folder
    with pytest.raises(
        AuthorsCheckpointError,
        match=r"missing \['model.safetensors', 'uncond_embedding.npy'\].*MiroRIN.from_pretrained",
    ):
        load_authors_checkpoint(tmp_path / "ours")
    with pytest.raises(AuthorsCheckpointError, match="no variant 'x'"):
        load_authors_checkpoint(tmp_path / "ours", variant="x")
    write_authors_folder(tmp_path / "noconfig", model, config={"model": {}})
    with pytest.raises(AuthorsCheckpointError, match=r"no 'network' entry \(found keys \['model'\]\)"):
        load_authors_checkpoint(tmp_path / "noconfig")
    write_authors_folder(
        tmp_path / "other", model, config={"network": dict(NET, num_blocks=2), "preconditioning": PRE}
    )
    with pytest.raises(
        AuthorsCheckpointError, match=r"does not fit its config.json: missing \['rin_blocks.1"
    ):
        load_authors_checkpoint(tmp_path / "other")
    write_authors_folder(
        tmp_path / "wide", model, config={"network": dict(NET, label_dim=9), "preconditioning": PRE}
    )
    with pytest.raises(
        AuthorsCheckpointError, match=r"mis-shaped \['map_text_tokens.weight: \[32, 8\] \(expected \[32, 9\]"
    ):
        load_authors_checkpoint(tmp_path / "wide")
    with pytest.raises(AuthorsCheckpointError, match="does not know: \\['use_rope'\\]"):
        rin_config_from_authors({"network": dict(NET, use_rope=True)})


def test_rewards_as_matrix_mapping_or_authors_keys_agree_and_nan_is_dropped():
    model = tiny()
    x, t, text, mask = inputs()
    with torch.no_grad():
        by_matrix = model.velocity(
            x, t, text, mask, torch.tensor([[0.2, float("nan")], [0.7, float("nan")]])
        ).sample
        by_name = model.velocity(x, t, text, mask, {"clip_score": torch.tensor([0.2, 0.7])}).sample
        by_theirs = model.velocity(
            x, t, text, mask, {"clip_score_coherence": torch.tensor([0.2, 0.7])}
        ).sample
        by_mask = model.velocity(
            x,
            t,
            text,
            mask,
            torch.tensor([[0.2, 0.9], [0.7, 0.9]]),
            reward_mask=torch.tensor([[True, False]] * 2),
        ).sample
    assert (
        torch.equal(by_matrix, by_name) and torch.equal(by_name, by_theirs) and torch.equal(by_name, by_mask)
    )
    with pytest.raises(ValueError, match=r"unknown keys \['hpsv2'\]"):
        model.velocity(x, t, text, mask, {"hpsv2": 1.0})
    with pytest.raises(ValueError, match=r"expected shape \[2, 2\]"):
        model.velocity(x, t, text, mask, torch.ones(2, 3))


def test_bad_inputs_are_named():
    model = tiny()
    x, t, text, mask = inputs()
    with pytest.raises(TypeError, match="text_mask: a bool"):
        model.velocity(x, t, text, mask.float())
    with pytest.raises(ValueError, match=r"y: expected \[B, 2, 4, 4\]"):
        model.velocity(torch.zeros(2, 2, 8, 8), t, text, mask)
    with pytest.raises(ValueError, match=r"time: expected a scalar or shape \[2\]"):
        model.velocity(x, torch.rand(3), text, mask)
    assert torch.equal(model(x, 0.5, text, mask.long())[0], model(x, torch.full((2,), 0.5), text, mask)[0])


def test_bf16_weights_run_and_stay_close_to_fp32():
    model = tiny()
    x, t, text, mask = inputs()
    with torch.no_grad():
        ref = model.velocity(x, t, text, mask, {"clip_score": 1.0})
        low = model.to(torch.bfloat16).velocity(x, t, text, mask, {"clip_score": 1.0})
    assert low.sample.dtype == torch.bfloat16 and torch.isfinite(low.sample).all()
    assert (low.sample.float() - ref.sample).abs().max() < 0.1 * ref.sample.abs().max()


def test_defaults_are_the_released_model_size():
    """The defaults build the released configuration: 360.41M network parameters, the breakdown of
    ``reference/miro.md`` section 3 (built on the meta device: no memory, no time)."""
    with torch.device("meta"):
        model = MiroRIN()
    millions = {
        name: sum(p.numel() for p in getattr(model, name).parameters()) / 1e6
        for name in (
            "rin_blocks",
            "transformers_blocks",
            "coherence_embedder",
            "linear_previous",
            "map_text_tokens",
        )
    }
    total = sum(p.numel() for p in model.parameters()) - sum(
        p.numel() for p in model.logvar_proj.parameters()
    )
    assert round(total / 1e6, 2) == 360.41
    assert {k: round(v, 1) for k, v in millions.items()} == {
        "rin_blocks": 313.8, "transformers_blocks": 25.2, "coherence_embedder": 9.2, "linear_previous": 8.4,
        "map_text_tokens": 2.1,
    }  # fmt: skip
