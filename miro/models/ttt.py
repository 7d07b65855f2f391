"""Test-time-training token mixers: TTT-Linear and TTT-MLP (Sun et al. 2024, "Learning to (Learn at Test
Time): RNNs with Expressive Hidden States", arXiv 2407.04620), with the non-causal image design of
the project notes on test-time methods (testtime.md, section 4.3) (several scan orders, each behind its own tanh gate).

A mixer is a drop-in for self-attention inside a block: ``mixer(x [B, N, D], grid=(h, w)) -> [B, N, D]``.

**Per head** (head dim d = D / H), token x gives ``q, k, v`` (one fused projection).  The hidden state is an
inner model ``g`` with weights ``theta`` (TTT-Linear: ``z = u W + b``; TTT-MLP: ``z = gelu(u W1 + b1) W2 + b2``,
hidden 4d, tanh-GELU), used in residual form ``f(u) = u + LN(g(u))`` with an inner LayerNorm of learnable
per-head scale ``gamma`` and shift ``beta``.  The self-supervised inner loss reconstructs the value view from
the key view::

    l(theta; k, t) = 1/2 || LN_{gamma,beta}(g(k; theta)) - t ||^2,        t = v - k  (f(k) - v = LN(g(k)) - t)

with, by default, L2-normalised q and k and a LayerNorm (no affine) on the target ``t = LN(v - k)`` (TTT-Video's
stabilisers, testtime.md 4.3).  The per-token inner learning rate is ``eta(x) = base_lr * sigmoid(x θ_lr + b_lr)
/ d`` (base_lr 1 for TTT-Linear, 0.1 for TTT-MLP, as the paper).  The initial weights ``theta_0`` are learned.

**Mini-batch TTT** (size b).  Inside a mini-batch every gradient is taken at the weights ``theta_start`` that
the previous mini-batch ended with (the paper's mini-batch gradient descent).  The update is the
eta-weighted *mean* of the mini-batch's gradients (the 1/i scale of the authors' code, without its learnable
offset):

- causal: token i (1-based within its mini-batch) is read out with
  ``theta_i = theta_start - (1/i) sum_{j<=i} eta_j grad l_j(theta_start)``;
- non-causal: every token of the mini-batch is read out with the full mini-batch's update
  ``theta_end = theta_start - (1/L) sum_{j<=L} eta_j grad l_j(theta_start)`` (E_ij = eta_j / L, TTT-Video).

In both modes the next mini-batch starts from ``theta_end``.  With b = 1 causal TTT is plain online gradient
descent, one token at a time.  The output of token i is ``y_i = q_i + LN(g(q_i; theta_i))``.

**Sequence lengths that b does not divide** get a *shorter last mini-batch* of N mod b tokens (no padding):
its non-causal update is the mean over its own L = N mod b tokens, so no padded token ever enters a mean or
a gradient, and the result does not depend on how the sequence would have been padded.

Two implementations, equal up to rounding (tests/models/test_ttt.py):

- ``primal`` (reference): per token, the hand-written gradient at ``theta_start`` (``inner_grad``), accumulated
  step by step in explicit loops, explicit per-token weights (d x d per token and head; slow, for tests);
- ``dual`` (fast, the default): the paper's dual form, matmuls only, looping over mini-batches.  For TTT-Linear
  with the coefficient matrix ``E`` (E_ij = eta_j / i on and below the diagonal when causal, eta_j / L
  everywhere otherwise) and G the gradients w.r.t. Z = K W + b (rows g_j)::

      Zbar = Q W + b - (E * (Q K^T + 1)) G,     W <- W - (e * K)^T G,     b <- b - e^T G,     e_j = eta_j / L

  and the same two-layer expansion for TTT-MLP (``X2 = gelu(K W1 + b1)`` in place of K for the second layer).
  The last mini-batch's weight update is not computed (nothing reads it).

**Image mode** (non-causal): the tokens are scanned in several orders (``raster``, ``raster_rev``, ``col``,
``col_rev``; the column orders need the token grid).  Each scan permutes q, k, v and eta, runs the mixer,
permutes the result back, applies the post-LayerNorm and the output projection; the scans share every weight
and are summed through separate per-channel tanh gates (init 0.1, so a fresh mixer contributes ~0.1 of its
output).  The causal mode (one ``raster`` scan) is the paper's language-model layer.

**Precision.** The inner loop runs on fp32 tensors whatever the input dtype (fp64 stays fp64): the
LayerNorm statistics, the gradients and the accumulated weights are fp32.  Under autocast its matmuls
still run in the autocast dtype (bf16 tensor cores) and their results are cast back to fp32.

Not implemented (testtime.md 4.3 options): RoPE on q and k (the backbone adds 2-D sin-cos positions to the
tokens), the Mamba-backbone extras (conv before Q/K, output gelu gate), checkpointing over mini-batch groups.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

INNER_KINDS = ("linear", "mlp")
SCAN_ORDERS = ("raster", "raster_rev", "col", "col_rev")
IMPLEMENTATIONS = ("dual", "primal")
DEFAULT_BASE_LR = {"linear": 1.0, "mlp": 0.1}  # the paper's eta_base
MLP_EXPANSION = 4  # TTT-MLP's hidden width / head dim

Params = tuple[torch.Tensor, ...]

# ---------------------------------------------------------------------------------------------- inner model


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The inner loop's dtype: fp32, or fp64 for fp64 inputs."""
    return torch.promote_types(dtype, torch.float32)


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A matmul whose result has the inner loop's dtype (under autocast it runs in bf16 and is cast back)."""
    return torch.matmul(a, b).to(_acc_dtype(a.dtype))


_GELU_C = math.sqrt(2.0 / math.pi)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU, tanh approximation (as the authors' TTT-MLP)."""
    return F.gelu(x, approximate="tanh")


def gelu_grad(x: torch.Tensor) -> torch.Tensor:
    """d gelu(x) / dx of the tanh approximation, written out."""
    t = torch.tanh(_GELU_C * (x + 0.044715 * x**3))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _GELU_C * (1 + 3 * 0.044715 * x * x)


def _normalize(z: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(z - mean) / std over the last dim, and std = sqrt(var + eps) (biased variance, as nn.LayerNorm)."""
    centred = z - z.mean(-1, keepdim=True)
    # mean of squares rather than Tensor.var: the same biased variance, and several times faster on the CPU for
    # the inner loop's many small [.., L, d] blocks (var's kernel is tuned for long rows)
    std = torch.sqrt(centred.square().mean(-1, keepdim=True) + eps)
    return centred / std, std


def layer_norm(z: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float) -> torch.Tensor:
    """The inner LayerNorm: gamma * (z - mean) / std + beta (gamma, beta broadcast against z)."""
    return gamma * _normalize(z, eps)[0] + beta


def ln_l2_grad(
    z: torch.Tensor, target: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float
) -> torch.Tensor:
    """d/dz of 1/2 ||LN_{gamma,beta}(z) - target||^2, per row, in closed form (the authors' ln_fused_l2_bwd).

    With x = (z - mu) / s, s = sqrt(var + eps) and gx = gamma * (gamma x + beta - target)::

        dl/dz = (gx - mean(gx) - x * mean(gx * x)) / s
    """
    x, std = _normalize(z, eps)
    gx = gamma * (gamma * x + beta - target)
    return (gx - gx.mean(-1, keepdim=True) - x * (gx * x).mean(-1, keepdim=True)) / std


def _linear_step_grad(z: torch.Tensor, shift: torch.Tensor, gamma2: torch.Tensor, eps: float) -> torch.Tensor:
    """``ln_l2_grad(z, target, gamma, beta)`` with shift = gamma * (beta - target) and gamma2 = gamma^2 given: the
    same closed form in fewer (fused) ops, for the dual scan's sequential loop, where each op is a fixed cost."""
    centred = z - z.mean(-1, keepdim=True)
    rstd = torch.rsqrt(centred.square().mean(-1, keepdim=True) + eps)
    x = centred * rstd
    gx = torch.addcmul(shift, gamma2, x)
    return (gx - torch.addcmul(gx.mean(-1, keepdim=True), x, (gx * x).mean(-1, keepdim=True))) * rstd


def inner_forward(kind: str, params: Params, u: torch.Tensor) -> torch.Tensor:
    """The inner model g(u; theta) before its LayerNorm: u [..., n, d] -> [..., n, d].

    ``params``: (W [..., d, d], b [..., d]) for "linear"; (W1 [..., d, h], b1 [..., h], W2 [..., h, d],
    b2 [..., d]) for "mlp"; their leading dims broadcast against u's.
    """
    if kind == "linear":
        w, b = params
        return _mm(u, w) + b.unsqueeze(-2)
    w1, b1, w2, b2 = params
    return _mm(gelu(_mm(u, w1) + b1.unsqueeze(-2)), w2) + b2.unsqueeze(-2)


def inner_loss(
    kind: str,
    params: Params,
    k: torch.Tensor,
    target: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    eps: float = 1e-6,
) -> torch.Tensor:
    """The self-supervised loss summed over the n tokens of k [..., n, d]: sum_j 1/2 ||LN(g(k_j)) - t_j||^2
    (shape [...]).  For autograd checks of ``inner_grad``; the mixers never call it."""
    z = inner_forward(kind, params, k)
    return 0.5 * (layer_norm(z, gamma, beta, eps) - target).square().sum((-2, -1))


def inner_grad(
    kind: str,
    params: Params,
    k: torch.Tensor,
    target: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    eps: float = 1e-6,
) -> Params:
    """The hand-written gradient of ``inner_loss`` w.r.t. ``params`` (same order and shapes, leading dims of
    k's): sum over the n tokens of k [..., n, d].

    linear: G = ln_l2_grad(K W + b); dW = K^T G, db = sum_j g_j.
    mlp: Z1 = K W1 + b1, X2 = gelu(Z1), G2 = ln_l2_grad(X2 W2 + b2), G1 = (G2 W2^T) * gelu'(Z1);
    dW1 = K^T G1, db1 = sum G1, dW2 = X2^T G2, db2 = sum G2.
    """
    if kind == "linear":
        w, b = params
        g = ln_l2_grad(_mm(k, w) + b.unsqueeze(-2), target, gamma, beta, eps)
        return _mm(k.transpose(-1, -2), g), g.sum(-2)
    w1, b1, w2, b2 = params
    z1 = _mm(k, w1) + b1.unsqueeze(-2)
    x2 = gelu(z1)
    g2 = ln_l2_grad(_mm(x2, w2) + b2.unsqueeze(-2), target, gamma, beta, eps)
    g1 = _mm(g2, w2.transpose(-1, -2)) * gelu_grad(z1)
    return _mm(k.transpose(-1, -2), g1), g1.sum(-2), _mm(x2.transpose(-1, -2), g2), g2.sum(-2)


# ---------------------------------------------------------------------------------------------- the scans


def _check_scan_args(kind: str, q: torch.Tensor, mini_batch: int) -> None:
    if kind not in INNER_KINDS:
        raise ValueError(f"inner={kind!r}: must be one of {list(INNER_KINDS)}")
    if not (isinstance(mini_batch, int) and mini_batch >= 1):
        raise ValueError(f"mini_batch={mini_batch!r}: must be an integer >= 1")
    if q.dim() != 4:
        raise ValueError(f"q, k, target must be [B, H, N, d], got {tuple(q.shape)}")


def ttt_primal(
    kind: str,
    params: Params,
    q: torch.Tensor,
    k: torch.Tensor,
    target: torch.Tensor,
    eta: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    mini_batch: int,
    causal: bool,
    eps: float = 1e-6,
) -> torch.Tensor:
    """The reference scan, token by token with explicit weights.  Shapes as ``ttt_scan``."""
    _check_scan_args(kind, q, mini_batch)
    batch, heads, n, _ = q.shape
    state = [p.expand(batch, *p.shape) for p in params]  # [B, H, ...]
    outputs = []

    def read(theta, i):
        u = q[:, :, i : i + 1]
        return u + layer_norm(inner_forward(kind, theta, u), gamma, beta, eps)

    for start in range(0, n, mini_batch):
        length = min(mini_batch, n - start)
        acc = [torch.zeros_like(p) for p in state]
        for i in range(length):
            t = start + i
            grads = inner_grad(kind, state, k[:, :, t : t + 1], target[:, :, t : t + 1], gamma, beta, eps)
            lr = eta[:, :, t]  # [B, H]
            acc = [a + lr.reshape(batch, heads, *[1] * (g.dim() - 2)) * g for a, g in zip(acc, grads)]
            if causal:  # token i sees the mean of the mini-batch's gradients so far
                outputs.append(read([p - a / (i + 1) for p, a in zip(state, acc)], t))
        end = [p - a / length for p, a in zip(state, acc)]
        if not causal:  # every token sees the whole mini-batch's update
            outputs += [read(end, start + i) for i in range(length)]
        state = end
    return torch.cat(outputs, dim=2)


def _coefficients(eta: torch.Tensor, causal: bool) -> torch.Tensor:
    """E [..., L, L] for one mini-batch's eta [..., L]: eta_j / i on and below the diagonal (causal, i 1-based),
    eta_j / L everywhere (non-causal)."""
    length = eta.shape[-1]
    if causal:
        scale = 1.0 / torch.arange(1, length + 1, device=eta.device, dtype=eta.dtype)
        return torch.tril(scale[:, None] * eta.unsqueeze(-2))
    return (eta / length).unsqueeze(-2).expand(*eta.shape[:-1], length, length)


def _mini_batch_parts(q, k, target, eta, mini_batch: int, causal: bool):
    """The scan cut into mini-batches: one part for the full mini-batches and one for the shorter last one (if
    any), each (q, k, target [B, H, M, L, d], E and E * (Q K^T + 1) [B, H, M, L, L], e = eta / L [B, H, M, L])
    with every mini-batch's Q K^T and E computed in one batched matmul."""
    n = q.shape[2]
    full = n - n % mini_batch
    for lo, hi, size in ((0, full, mini_batch), (full, n, n - full)):
        if hi == lo:
            continue
        # contiguous: the loop's small ops on strided views of the fused q/k/v projection are several times slower
        qs, ks, ts = (x[:, :, lo:hi].unflatten(2, (-1, size)).contiguous() for x in (q, k, target))  # [B, H, M, L, d]
        es = eta[:, :, lo:hi].unflatten(2, (-1, size))  # [B, H, M, L]
        coef = _coefficients(es, causal)
        attn = coef * (_mm(qs, ks.transpose(-1, -2)) + 1)
        yield qs, ks, ts, coef, attn, es / size


def ttt_dual(
    kind: str,
    params: Params,
    q: torch.Tensor,
    k: torch.Tensor,
    target: torch.Tensor,
    eta: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    mini_batch: int,
    causal: bool,
    eps: float = 1e-6,
) -> torch.Tensor:
    """The dual form: matmuls only.  Shapes as ``ttt_scan``.

    Only what the next mini-batch's state needs runs in the sequential loop (the keys' gradients and the state
    update); the queries' outputs, which need the state at the start of each mini-batch and that mini-batch's
    gradients, are computed afterwards for all mini-batches of a part in one batched matmul each.  The loop is
    what makes TTT slow on a CPU (one step per b tokens, each a dozen small ops), so it is kept this short.
    """
    _check_scan_args(kind, q, mini_batch)
    batch, n = q.shape[0], q.shape[2]
    last = (n - 1) // mini_batch  # the last mini-batch's update is never read: it is not computed
    state = [p.expand(batch, *p.shape) for p in params]
    zs = []
    m = 0
    gamma2 = gamma * gamma
    for qs, ks, ts, coef, attn, e in _mini_batch_parts(q, k, target, eta, mini_batch, causal):
        seen = []  # per mini-batch of the part: the state it starts from and its gradients (and x2 for mlp)
        if kind == "linear":
            # ln_l2_grad's pieces that do not depend on the state, for every mini-batch at once:
            # gamma * (gamma x + beta - t) = gamma^2 x + gamma (beta - t), and the update's (eta K)^T
            shifts = gamma.unsqueeze(2) * (beta.unsqueeze(2) - ts)  # [B, H, M, L, d]
            eks = (e.unsqueeze(-1) * ks).transpose(-1, -2)  # [B, H, M, d, L]
            e_cols = e.unsqueeze(-1)  # [B, H, M, L, 1]
            for km, sm, ekm, ecm in zip(ks.unbind(2), shifts.unbind(2), eks.unbind(2), e_cols.unbind(2)):
                w, b = state
                g = _linear_step_grad(_mm(km, w) + b.unsqueeze(-2), sm, gamma2, eps)
                seen.append((w, b, g))
                if m < last:
                    state = [w - _mm(ekm, g), b - (ecm * g).sum(-2)]
                m += 1
        else:
            for km, tm, em in zip(ks.unbind(2), ts.unbind(2), e.unbind(2)):
                e_col = em.unsqueeze(-1)  # [B, H, L, 1]
                w1, b1, w2, b2 = state
                z1 = _mm(km, w1) + b1.unsqueeze(-2)
                x2 = gelu(z1)
                g2 = ln_l2_grad(_mm(x2, w2) + b2.unsqueeze(-2), tm, gamma, beta, eps)
                g1 = _mm(g2, w2.transpose(-1, -2)) * gelu_grad(z1)
                seen.append((w1, b1, w2, b2, g1, g2, x2))
                if m < last:
                    state = [
                        w1 - _mm((e_col * km).transpose(-1, -2), g1),
                        b1 - (e_col * g1).sum(-2),
                        w2 - _mm((e_col * x2).transpose(-1, -2), g2),
                        b2 - (e_col * g2).sum(-2),
                    ]
                m += 1
        stacked = [torch.stack(x, dim=2) for x in zip(*seen)]  # [B, H, M, ...]
        if kind == "linear":
            w, b, g = stacked
            z = _mm(qs, w) + b.unsqueeze(-2) - _mm(attn, g)
        else:
            w1, b1, w2, b2, g1, g2, x2 = stacked
            x2q = gelu(_mm(qs, w1) + b1.unsqueeze(-2) - _mm(attn, g1))
            attn2 = coef * (_mm(x2q, x2.transpose(-1, -2)) + 1)
            z = _mm(x2q, w2) + b2.unsqueeze(-2) - _mm(attn2, g2)
        zs.append(z.flatten(2, 3))  # [B, H, M * L, d]
    z = torch.cat(zs, dim=2) if len(zs) > 1 else zs[0]
    return q + layer_norm(z, gamma, beta, eps)


def ttt_scan(
    kind: str,
    params: Params,
    q: torch.Tensor,
    k: torch.Tensor,
    target: torch.Tensor,
    eta: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    mini_batch: int = 16,
    causal: bool = False,
    implementation: str = "dual",
    eps: float = 1e-6,
) -> torch.Tensor:
    """One TTT scan over the token order given: the outputs ``q_i + LN(g(q_i; theta_i))`` [B, H, N, d].

    Args:
        kind: "linear" or "mlp".
        params: the initial inner weights per head, [H, ...] each (see ``inner_forward``).
        q, k, target: [B, H, N, d] (target = the reconstruction target, v - k or its LayerNorm).
        eta: [B, H, N], the per-token inner learning rates.
        gamma, beta: the inner LayerNorm's scale and shift, broadcast against [B, H, N, d] (e.g. [H, 1, d]).
        mini_batch: b; N % b tokens form a shorter last mini-batch.
        causal: token i sees the gradients of tokens <= i of its mini-batch (else all of it).
        implementation: "dual" (fast) or "primal" (the per-token reference).
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation={implementation!r}: must be one of {list(IMPLEMENTATIONS)}")
    fn = ttt_dual if implementation == "dual" else ttt_primal
    return fn(kind, params, q, k, target, eta, gamma, beta, mini_batch, causal, eps)


# ---------------------------------------------------------------------------------------------- the mixers


def parse_scan_orders(orders: str | Sequence[str]) -> tuple[str, ...]:
    """Scan orders from a "+"-joined string ("raster+raster_rev") or a sequence, checked, as a tuple."""
    parts = tuple(orders.split("+")) if isinstance(orders, str) else tuple(orders)
    if not parts or len(set(parts)) != len(parts) or any(p not in SCAN_ORDERS for p in parts):
        raise ValueError(
            f"scan_orders={orders!r}: must be one or more distinct orders of {list(SCAN_ORDERS)}"
        )
    return parts


def scan_permutation(order: str, n: int, grid: tuple[int, int] | None, device=None) -> torch.Tensor | None:
    """Token indices in scan order (None = the identity, "raster").  Tokens are stored row-major on the
    ``grid`` (rows, columns); the column orders need it."""
    if order == "raster":
        return None
    if order == "raster_rev":
        return torch.arange(n - 1, -1, -1, device=device)
    if grid is None or int(grid[0]) * int(grid[1]) != n:
        raise ValueError(
            f"scan order {order!r} needs the token grid (rows, columns) with rows * columns = N = {n}, "
            f"got grid={grid}"
        )
    idx = torch.arange(n, device=device).view(int(grid[0]), int(grid[1])).t().reshape(-1)
    return idx.flip(0) if order == "col_rev" else idx


class TTTMixer(nn.Module):
    """A multi-head TTT token mixer (see the module docstring): x [B, N, D] -> [B, N, D].

    Args:
        dim, num_heads: width D and heads H (head dim D / H).
        inner: "linear" (TTT-Linear) or "mlp" (TTT-MLP, hidden 4 x head dim).
        mini_batch: TTT mini-batch size b (16 in the paper); a shorter last mini-batch when b does not divide N.
        scan_orders: the token orders, each behind its own tanh gate (a "+"-joined string or a sequence of
            "raster", "raster_rev", "col", "col_rev").
        causal: the language-model layer (token i sees tokens <= i of its mini-batch) instead of the image
            design (every token sees its whole mini-batch).
        base_lr: eta_base (None: 1.0 for linear, 0.1 for mlp).
        qk_l2norm: L2-normalise q and k per head; ln_target: LayerNorm (no affine) on the target v - k.
        gate_init: the initial value of every gate parameter alpha (the output is sum_s tanh(alpha_s) * o_s).
        implementation: "dual" (fast) or "primal" (the per-token reference); an attribute, switchable.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        inner: str = "linear",
        mini_batch: int = 16,
        scan_orders: str | Sequence[str] = ("raster", "raster_rev"),
        causal: bool = False,
        base_lr: float | None = None,
        qk_l2norm: bool = True,
        ln_target: bool = True,
        gate_init: float = 0.1,
        implementation: str = "dual",
        eps: float = 1e-6,
    ):
        super().__init__()
        if inner not in INNER_KINDS:
            raise ValueError(f"inner={inner!r}: must be one of {list(INNER_KINDS)}")
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"width={dim} must be divisible by num_heads={num_heads}")
        if not (isinstance(mini_batch, int) and not isinstance(mini_batch, bool) and mini_batch >= 1):
            raise ValueError(f"mini_batch={mini_batch!r}: must be an integer >= 1")
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation={implementation!r}: must be one of {list(IMPLEMENTATIONS)}")
        self.inner = inner
        self.num_heads = num_heads
        self.head_dim = d = dim // num_heads
        self.mini_batch = mini_batch
        self.scan_orders = parse_scan_orders(scan_orders)
        self.causal = causal
        self.base_lr = DEFAULT_BASE_LR[inner] if base_lr is None else float(base_lr)
        self.qk_l2norm = qk_l2norm
        self.ln_target = ln_target
        self.gate_init = gate_init
        self.implementation = implementation
        self.eps = eps
        self.to_qkv = nn.Linear(dim, 3 * dim)
        self.to_lr = nn.Linear(dim, num_heads)  # theta_lr, b_lr: eta = base_lr * sigmoid(.) / d
        hidden = MLP_EXPANSION * d if inner == "mlp" else d
        self.w1 = nn.Parameter(torch.empty(num_heads, d, hidden))  # the learned initial inner weights
        self.b1 = nn.Parameter(torch.empty(num_heads, hidden))
        if inner == "mlp":
            self.w2 = nn.Parameter(torch.empty(num_heads, hidden, d))
            self.b2 = nn.Parameter(torch.empty(num_heads, d))
        self.ln_weight = nn.Parameter(torch.empty(num_heads, d))  # the inner LayerNorm, per head
        self.ln_bias = nn.Parameter(torch.empty(num_heads, d))
        self.post_norm = nn.LayerNorm(dim, eps=1e-6)
        self.to_out = nn.Linear(dim, dim)
        self.gates = nn.Parameter(torch.empty(len(self.scan_orders), dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """testtime.md 4.3's init: W0 ~ N(0, 0.02), b0 = 0, inner LN gamma = 1, beta = 0, theta_lr ~ N(0, 0.02),
        b_lr = 0, gates alpha = gate_init; xavier-uniform q/k/v and output projections with zero biases."""
        for layer in (self.to_qkv, self.to_out):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.normal_(self.to_lr.weight, std=0.02)
        nn.init.zeros_(self.to_lr.bias)
        for w in self.inner_weights()[0::2]:
            nn.init.normal_(w, std=0.02)
        for b in self.inner_weights()[1::2]:
            nn.init.zeros_(b)
        nn.init.ones_(self.ln_weight)
        nn.init.zeros_(self.ln_bias)
        self.post_norm.reset_parameters()
        nn.init.constant_(self.gates, self.gate_init)

    def inner_weights(self) -> tuple[nn.Parameter, ...]:
        """The learned initial inner weights: (W, b) or (W1, b1, W2, b2), [H, ...] each."""
        return (self.w1, self.b1) if self.inner == "linear" else (self.w1, self.b1, self.w2, self.b2)

    def extra_repr(self) -> str:
        return (
            f"inner={self.inner!r}, heads={self.num_heads}, mini_batch={self.mini_batch}, "
            f"scan_orders={self.scan_orders}, causal={self.causal}, implementation={self.implementation!r}"
        )

    def views(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(q, k, target [B, H, N, d], eta [B, H, N]) in the inner loop's dtype, for x [B, N, D]."""
        b, n, _ = x.shape
        h, d = self.num_heads, self.head_dim
        acc = _acc_dtype(x.dtype)
        q, k, v = self.to_qkv(x).view(b, n, 3, h, d).permute(2, 0, 3, 1, 4).to(acc).unbind(0)
        if self.qk_l2norm:
            q, k = F.normalize(q, dim=-1, eps=self.eps), F.normalize(k, dim=-1, eps=self.eps)
        target = v - k  # f(k) = k + LN(g(k)) reconstructs v  <=>  LN(g(k)) reconstructs v - k
        if self.ln_target:
            target = _normalize(target, self.eps)[0]
        eta = self.base_lr / d * torch.sigmoid(self.to_lr(x).to(acc)).transpose(1, 2)
        return q, k, target, eta

    def forward(self, x: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """x [B, N, D] (tokens row-major on ``grid`` = (rows, columns), needed by the column scans) -> [B, N, D]."""
        b, n, dim = x.shape
        q, k, target, eta = self.views(x)
        acc = q.dtype
        params = tuple(p.to(acc) for p in self.inner_weights())
        gamma, beta = self.ln_weight.to(acc).unsqueeze(1), self.ln_bias.to(acc).unsqueeze(1)  # [H, 1, d]
        out = None
        for s, order in enumerate(self.scan_orders):
            idx = scan_permutation(order, n, grid, x.device)
            views = (
                (q, k, target, eta)
                if idx is None
                else tuple(t.index_select(2, idx) for t in (q, k, target, eta))
            )
            y = ttt_scan(
                self.inner,
                params,
                *views,
                gamma,
                beta,
                self.mini_batch,
                self.causal,
                self.implementation,
                self.eps,
            )
            if idx is not None:
                y = y.index_select(2, torch.argsort(idx))
            o = self.to_out(self.post_norm(y.transpose(1, 2).reshape(b, n, dim).to(x.dtype)))
            o = torch.tanh(self.gates[s]).to(o.dtype) * o
            out = o if out is None else out + o
        return out


class TTTLinear(TTTMixer):
    """TTT-Linear: the inner model is z = u W + b per head (see ``TTTMixer`` for the arguments)."""

    def __init__(self, dim: int, num_heads: int, **kwargs):
        super().__init__(dim, num_heads, inner="linear", **kwargs)


class TTTMLP(TTTMixer):
    """TTT-MLP: the inner model is z = gelu(u W1 + b1) W2 + b2 per head, hidden 4 x head dim."""

    def __init__(self, dim: int, num_heads: int, **kwargs):
        super().__init__(dim, num_heads, inner="mlp", **kwargs)
