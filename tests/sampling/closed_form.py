"""A conditional velocity model with a closed-form flow: Gaussian data whose mean is linear in the condition.

x_0 ~ N(mu(c, r), s^2) per element, mu = A text_feature(c) + sum_k b_k value_k(r) + m, where the null text
and a dropped reward use learned-null vectors.  The velocity is E[eps - x_0 | x_t] (``tests/flow/gaussian``),
so a guided combination sum_i c_i v_i with sum_i c_i = 1 is the exact field of N(sum_i c_i mu_i, s^2) and
its flow maps noise x_1 to sum_i c_i mu_i + s x_1.
"""

import torch
from torch import nn

from tests.flow.gaussian import optimal_velocity


class LinearGaussianModel(nn.Module):
    def __init__(self, channels: int = 3, text_dim: int = 8, num_rewards: int = 3, s: float = 0.4, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.text_proj = nn.Parameter(torch.randn(channels, text_dim, generator=g) / text_dim**0.5)
        self.null_text = nn.Parameter(torch.randn(text_dim, generator=g))
        self.reward_proj = nn.Parameter(torch.randn(channels, num_rewards, generator=g) * 2)
        self.null_reward = nn.Parameter(torch.rand(num_rewards, generator=g))
        self.bias = nn.Parameter(torch.randn(channels, generator=g))
        self.s = s
        self.calls: list[int] = []  # batch size of each forward, to count network evaluations

    def mean(self, text, text_mask, rewards, reward_mask, drop_text):
        m = text_mask.to(text.dtype).unsqueeze(-1)
        feat = (text * m).sum(1) / m.sum(1).clamp_min(1)
        feat = torch.where(drop_text[:, None], self.null_text.to(feat.dtype), feat)
        r = torch.where(reward_mask, rewards.to(feat.dtype), self.null_reward.to(feat.dtype))
        return feat @ self.text_proj.T + r @ self.reward_proj.T + self.bias

    def forward(self, x, t, text, text_mask, rewards=None, reward_mask=None, drop_text=None):
        self.calls.append(x.shape[0])
        mu = self.mean(text, text_mask, rewards, reward_mask, drop_text)
        mu = mu.reshape(*mu.shape, *([1] * (x.dim() - 2))).to(x.dtype)
        return optimal_velocity(x, t.to(x.dtype), mu, self.s)


class TinyNonlinearModel(nn.Module):
    """A small nonlinear conditional network (attention over text, reward MLP, time features) for checks
    that must not rely on linearity, such as batched-vs-separate branch evaluation."""

    def __init__(self, channels: int = 3, text_dim: int = 8, num_rewards: int = 3, width: int = 16, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        self.query = nn.Linear(width, text_dim)
        self.text_out = nn.Linear(text_dim, width)
        self.null_text = nn.Parameter(torch.randn(1, 1, text_dim))
        self.reward = nn.Sequential(nn.Linear(num_rewards, width), nn.SiLU(), nn.Linear(width, width))
        self.null_reward = nn.Parameter(torch.randn(num_rewards))
        self.time = nn.Linear(2, width)
        self.out = nn.Conv2d(width, channels, 3, padding=1)
        self.calls: list[int] = []

    def forward(self, x, t, text, text_mask, rewards=None, reward_mask=None, drop_text=None):
        self.calls.append(x.shape[0])
        h = self.inp(x)
        text = torch.where(drop_text[:, None, None], self.null_text.to(text.dtype), text)
        mask = text_mask | drop_text[:, None]
        q = self.query(h.mean((2, 3)))[:, None]  # [B, 1, D]
        att = (q @ text.transpose(1, 2)).masked_fill(~mask[:, None], float("-inf")).softmax(-1)
        r = torch.where(reward_mask, rewards.to(x.dtype), self.null_reward.to(x.dtype))
        tf = torch.stack([torch.sin(3 * t), torch.cos(3 * t)], -1).to(x.dtype)
        cond = self.text_out((att @ text)[:, 0]) + self.reward(r) + self.time(tf)
        return self.out(torch.tanh(h + cond[:, :, None, None]))
