"""miro/models/layers.py: the masked attention that keeps training off cuDNN's SDPA backward on CUDA."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from miro.models.layers import masked_attention


def _qkv(length: int, dim: int, device: str, dtype: torch.dtype, shift: float = 0.0):
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 2, length, dim, generator=gen) * 0.1 for _ in range(2))
    v = torch.randn(2, 2, length, dim, generator=gen)
    if shift:  # every logit about -shift: each row's logsumexp below ln(FLT_MAX)'s negative
        q[..., 0], k[..., 0] = 1.0, -shift * math.sqrt(dim)
    mask = torch.ones(2, 1, 1, length, dtype=torch.bool)
    mask[1, ..., length // 2 :] = False  # the second sample attends to its first half only
    return [t.to(device=device, dtype=dtype).requires_grad_(t.is_floating_point()) for t in (q, k, v)], mask.to(device)


def _grads(fn, tensors, mask):
    out = fn(*tensors, mask)
    out.backward(torch.ones_like(out))
    grads = [t.grad.float().clone() for t in tensors]
    for t in tensors:
        t.grad = None
    return out.float(), grads


def test_matches_sdpa_with_its_gradients_on_the_cpu():
    tensors, mask = _qkv(24, 16, "cpu", torch.float32)
    ours, ours_grads = _grads(masked_attention, tensors, mask)
    ref, ref_grads = _grads(lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m), tensors, mask)
    torch.testing.assert_close(ours, ref)
    for a, b in zip(ours_grads, ref_grads):
        torch.testing.assert_close(a, b)
    with torch.no_grad():  # inference and unmasked calls take the plain call
        torch.testing.assert_close(masked_attention(*tensors, mask), ref)
        torch.testing.assert_close(masked_attention(*tensors, None), F.scaled_dot_product_attention(*tensors))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_finite_gradients_where_cudnn_backward_fails():
    """pytorch/pytorch#196678's shape (length % 128 == 64, an explicit mask, every logsumexp below -88.7): the
    gradients are finite and match the math backend's in fp32."""
    tensors, mask = _qkv(704, 64, "cuda", torch.bfloat16, shift=120.0)
    _, grads = _grads(masked_attention, tensors, mask)
    assert all(torch.isfinite(g).all() for g in grads)
    exact = [t.detach().float().requires_grad_() for t in tensors]
    with sdpa_kernel([SDPBackend.MATH]):
        _, ref = _grads(lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m), exact, mask)
    for a, b in zip(grads, ref):
        assert (a - b).norm() <= 0.05 * b.norm() + 1e-3
