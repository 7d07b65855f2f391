"""The text path can learn: a prompt -> image mapping that only the text determines is learned in a few
dozen steps, through cross-attention alone and with the pooled path.

This is the guard of the text-conditioning investigation (docs/text_conditioning.md): the embedded model
once seemed to ignore its prompts, and the first thing to rule out is a broken text path (mask polarity,
dropped or zeroed tokens, a pooled vector that never reaches the blocks).  Here the prompts share every
token but one (like "a photo of a red circle" / "... blue circle"), the padding holds garbage that must
never be read, reward tokens are present with random values as distractors, and text dropout is on.
"""

import pytest
import torch

from miro.flow import LinearPath, TimeSampler, velocity_loss
from miro.models import sample_condition_dropout
from tests.models.helpers import REWARDS, tiny_model

PROMPTS, LENGTH, DIM = 6, 5, 12


def prompt_set(seed=0):
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(1, LENGTH + 2, DIM, generator=g).expand(PROMPTS, -1, -1).clone()
    shared[:, 3] = torch.randn(PROMPTS, DIM, generator=g)  # the one token that differs ("red" / "blue")
    mask = torch.ones(PROMPTS, LENGTH + 2, dtype=torch.bool)
    mask[:, LENGTH:] = False
    shared[:, LENGTH:] = 1e4 * torch.randn(1, 2, DIM, generator=g)  # padding garbage, the same in every prompt
    colors = torch.rand(PROMPTS, 3, generator=g) * 2 - 1
    return shared, mask, colors


def colour_error_after_training(steps=200, p_text=0.1, **model_overrides) -> tuple[float, float]:
    torch.manual_seed(0)
    model = tiny_model(**model_overrides)
    text, mask, colors = prompt_set()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    times, path = TimeSampler("logit_normal"), LinearPath()
    g = torch.Generator().manual_seed(1)
    b, r = 32, len(REWARDS)
    for _ in range(steps):
        idx = torch.randint(PROMPTS, (b,), generator=g)
        x0 = colors[idx][:, :, None, None].expand(b, 3, 8, 8)
        t = times(b, generator=g)
        s = path.sample(x0, t, torch.randn(x0.shape, generator=g))
        keep, drop = sample_condition_dropout(b, r, 0.1, p_text, g)
        v = model(s.x_t, t, text[idx], mask[idx], torch.rand(b, r, generator=g), keep, drop)
        loss = velocity_loss(v, s.target).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():  # the data estimate x_t - t v at almost pure noise is E[x0 | prompt]
        t = torch.full((PROMPTS,), 0.98)
        x_t = torch.randn(PROMPTS, 3, 8, 8, generator=g)
        v = model(x_t, t, text, mask, torch.rand(PROMPTS, r, generator=g))
        estimate = (x_t - t[:, None, None, None] * v).mean((2, 3))
    no_information = (colors - colors.mean(0)).abs().mean().item()
    return (estimate - colors).abs().mean().item(), no_information


@pytest.mark.parametrize("pooled_text", [False, True], ids=["cross_attention_only", "with_pooled_text"])
def test_a_text_determined_colour_is_learned(pooled_text):
    error, baseline = colour_error_after_training(pooled_text=pooled_text)
    assert error < 0.25 * baseline, (error, baseline)


def test_the_control_without_text_stays_at_the_mean_colour():
    """The same training with every prompt dropped cannot tell the prompts apart: what the tests above
    measure is the text conditioning, not a side door."""
    error, baseline = colour_error_after_training(p_text=1.0)
    assert error > 0.8 * baseline, (error, baseline)
