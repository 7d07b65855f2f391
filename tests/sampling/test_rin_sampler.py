"""The RIN sampler (``miro.sampling.rin``) beyond the authors' own calls (those are the parity tests): its
grid, the null-text padding, and the latents carried per branch under decoupled guidance and an interval,
checked against a plain loop that evaluates every branch in its own forward pass."""

from __future__ import annotations

import pytest
import torch

from miro.flow import flow_sigmas
from miro.models.rin import MiroRIN
from miro.sampling.guidance import Guidance
from miro.sampling.rin import RINGuidedVelocity, authors_gammas, pad_null_text, sample_rin
from miro.sampling.sampler import Conditions
from tests.models.helpers import randomize_

KEYS = ("clip_score", "aesthetic_score", "hpsv2_score")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = MiroRIN(
        data_size=4, data_dim=16, num_input_channels=4, num_latents=4, latents_dim=32, label_dim=8,
        num_processing_layers=1, num_blocks=1, num_cond_tokens=3, read_write_heads=2, compute_heads=2,
        latent_mlp_multiplier=1, data_mlp_multiplier=1, num_text_registers=2, coherence_keys=KEYS,
        logvar_channels=0,
    )  # fmt: skip
    return randomize_(net, std=0.1).eval()


def conditions(batch=2, length=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, 1:] = False
    k = len(KEYS)
    return Conditions(
        torch.randn(batch, length, 8, generator=g), mask,
        torch.rand(batch, k, generator=g), torch.ones(batch, k, dtype=torch.bool),
        torch.rand(batch, k, generator=g), torch.tensor([[True, False, True]] * batch),
    )  # fmt: skip


def test_grid_is_uniform_in_gamma_unlike_the_diffusers_sigmas():
    g = authors_gammas(8)
    assert g[0].item() == pytest.approx(1e-9) and g[-1].item() == 1.0 and bool((g[1:] > g[:-1]).all())
    assert (g - torch.linspace(0, 1, 9)).abs().max() < 1e-6
    assert (1 - g - flow_sigmas(8)).abs().max() > 0.1  # diffusers' grid: linspace(1, 1/1000, 8), then 0
    shifted = authors_gammas(8, shift=3.0)
    assert bool((shifted[1:-1] > g[1:-1]).all())  # shift > 1 moves every inner gamma toward the data end
    for bad in (4.0, 0, True):
        with pytest.raises(ValueError, match="num_steps="):
            authors_gammas(bad)


def test_null_text_is_padded_to_the_prompts_and_the_prompts_to_it():
    text, mask = torch.randn(2, 4, 8), torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    t, m, null, null_mask = pad_null_text(text, mask, torch.ones(1, 8))
    assert torch.equal(t, text) and null.shape == (2, 4, 8) and null[:, 1:].abs().sum() == 0
    assert null_mask.tolist() == [[True, False, False, False]] * 2
    t, m, null, null_mask = pad_null_text(text[:, :1], mask[:, :1], torch.ones(3, 8))
    assert t.shape == (2, 3, 8) and m.tolist() == [[True, False, False]] * 2 and null_mask.all()
    with pytest.raises(ValueError, match="does not fit"):
        pad_null_text(text, mask, torch.ones(1, 5))


def plain_loop(model, noise, conds, null, guidance, gammas):
    """Every branch in its own forward pass, its latents kept under its condition."""
    text, text_mask, null_t, null_m = pad_null_text(conds.text, conds.text_mask, null)
    latents, x = {}, noise.clone()
    counts = []
    for i in range(len(gammas) - 1):
        v = torch.zeros_like(x)
        branches = guidance.branches(guidance.active(1 - float(gammas[i])))
        counts.append(len(branches))
        new = {}
        for br in branches:
            sel = torch.tensor(br.positive)
            key = (br.text, br.positive)
            out, z = model.precondition(
                x, gammas[i], text if br.text else null_t, text_mask if br.text else null_m,
                torch.where(sel, conds.pos_rewards, conds.neg_rewards),
                torch.where(sel, conds.pos_mask, conds.neg_mask), latents.get(key),
            )  # fmt: skip
            new[key] = z
            v = v + br.coef * out
        latents = new
        x = x - v * (gammas[i + 1] - gammas[i])
    return x, counts


@pytest.mark.parametrize(
    "guidance",
    [
        Guidance(2.0, (1.0, 1.0, 3.0)),  # decoupled, two reward groups: 4 branches
        Guidance(3.0, (3.0, 3.0, 3.0), interval=(0.0, 0.5)),  # joint, guided only where t <= 0.5
    ],
    ids=["decoupled", "interval"],
)
def test_batched_branches_with_carried_latents_match_a_plain_loop(model, guidance):
    conds, null = conditions(), torch.randn(1, 8)
    noise = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    gammas = authors_gammas(5)
    seen = []
    with torch.no_grad():
        ours = sample_rin(model, noise, conds, null, guidance, gammas,
                          callback=lambda i, x, v, vel: seen.append(len(vel.branch_outputs)))  # fmt: skip
        ref, counts = plain_loop(model, noise, conds, null, guidance, gammas)
    assert seen == counts and len(set(counts)) >= 1
    if guidance.interval != (0.0, 1.0):
        assert counts[0] == 1 and counts[-1] == 2  # the switch happens inside the run
    else:
        assert counts == [4] * 5
    assert (ours - ref).abs().max() < 1e-5
    with torch.no_grad():  # the condition mixer run once per run (the default) or at every step: the same
        uncached = sample_rin(model, noise, conds, null, guidance, gammas, cache_condition=False)
    assert (uncached - ours).abs().max() < 1e-6
    with torch.no_grad():  # the carried latents matter: forgetting them each step changes the result
        forgetful = RINGuidedVelocity(model, conds, null, guidance)
        x = noise.clone()
        for i in range(len(gammas) - 1):
            forgetful.reset()
            x = x - forgetful(x, gammas[i]) * (gammas[i + 1] - gammas[i])
    assert (x - ours).abs().max() > 1e-4


def test_bad_inputs(model):
    conds = conditions()
    with pytest.raises(ValueError, match="noise has batch 3 but the conditions have 2"):
        sample_rin(
            model,
            torch.randn(3, 4, 4, 4),
            conds,
            torch.randn(1, 8),
            Guidance.joint(1.0, 3),
            authors_gammas(2),
        )
    with pytest.raises(ValueError, match="gammas must be a 1-d grid"):
        sample_rin(
            model, torch.randn(2, 4, 4, 4), conds, torch.randn(1, 8), Guidance.joint(1.0, 3), torch.ones(1)
        )
