"""The sampler on a CUDA device (skipped without one): the same images as on the CPU in fp32, bf16 autocast
close to them with fp32 weights and state.  The real MiroTransformer at a tiny size, random text tokens (no
text encoder needed)."""

import pytest
import torch

from miro.flow import flow_sigmas
from miro.sampling import Conditions, Guidance, sample
from tests.sampling.conftest import REWARDS, tiny_transformer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
B, L, D = 4, 6, 16


def conditions(device) -> Conditions:
    g = torch.Generator().manual_seed(0)
    r = len(REWARDS)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[1, 4:] = False
    conds = Conditions(torch.randn(B, L, D, generator=g), mask, torch.rand(B, r, generator=g),
                       torch.ones(B, r, dtype=torch.bool), torch.zeros(B, r), torch.ones(B, r, dtype=torch.bool))
    return Conditions(*(getattr(conds, f).to(device) for f in
                        ("text", "text_mask", "pos_rewards", "pos_mask", "neg_rewards", "neg_mask")))


@torch.no_grad()
def test_cuda_sampling_matches_the_cpu_and_bf16_stays_close():
    model = tiny_transformer(text_dim=D)
    x1 = torch.randn(B, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    guidance, sigmas = Guidance(3.0, (1.0,) * len(REWARDS), (0.0, 1.0)), flow_sigmas(6)  # decoupled: text 3, rewards 1
    ref = sample(model, x1, conditions("cpu"), guidance, sigmas)
    model.to("cuda")
    prev = torch.backends.cuda.matmul.allow_tf32  # TF32 would round fp32 matmuls: compare true fp32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        gpu = sample(model, x1.cuda(), conditions("cuda"), guidance, sigmas.cuda())
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
    torch.testing.assert_close(gpu.cpu(), ref, atol=1e-4, rtol=1e-4)
    mixed = sample(model, x1.cuda(), conditions("cuda"), guidance, sigmas.cuda(), autocast=torch.bfloat16)
    assert mixed.dtype == torch.float32 and next(model.parameters()).dtype == torch.float32
    # bf16 rounds every matmul: close as a whole (on an H200 one element of 768 was 0.19 off, none more)
    err = (mixed.cpu() - ref).norm() / ref.norm()
    assert err < 0.05 and (mixed.cpu() - ref).abs().max() < 0.5
