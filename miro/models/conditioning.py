"""Per-sample condition dropout masks for training (the rates live in the training config)."""

from __future__ import annotations

import torch


def sample_condition_dropout(
    batch: int,
    num_rewards: int,
    p_reward: float = 0.0,
    p_text: float = 0.0,
    generator: torch.Generator | None = None,
    keep_at_least_one: bool = True,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw (reward_mask [B, R] bool, drop_text [B] bool), independently per sample (never per batch).

    Each reward is dropped (mask False) with probability ``p_reward`` (MIRO's ``binomial`` strategy);
    with ``keep_at_least_one`` a sample whose draw dropped every reward keeps one of them, chosen uniformly,
    as MIRO does.  Each sample's text is dropped with probability ``p_text``.  Combine the result with the
    dataset's own mask of known rewards (``reward_mask & known``).
    """
    if not 0.0 <= p_reward <= 1.0:
        raise ValueError(f"p_reward={p_reward}: must be in [0, 1]")
    if not 0.0 <= p_text <= 1.0:
        raise ValueError(f"p_text={p_text}: must be in [0, 1]")
    if batch < 0 or num_rewards < 0:
        raise ValueError(f"batch={batch}, num_rewards={num_rewards}: must be >= 0")
    gen_device = generator.device if generator is not None else device
    keep = torch.rand(batch, num_rewards, generator=generator, device=gen_device) >= p_reward
    if keep_at_least_one and num_rewards > 0:
        pick = torch.randint(num_rewards, (batch,), generator=generator, device=gen_device)
        rescue = torch.zeros_like(keep).scatter_(1, pick[:, None], True) & ~keep.any(dim=1, keepdim=True)
        keep = keep | rescue
    drop_text = torch.rand(batch, generator=generator, device=gen_device) < p_text
    return keep.to(device), drop_text.to(device)
