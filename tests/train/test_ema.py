import pytest
import torch
from torch import nn

from miro.train.ema import EMA


def net(seed):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    return m


def test_decay_zero_is_a_copy():
    ema = EMA(net(0), decay=0.0)
    src = net(1)
    src[1].running_mean.fill_(3.0)
    ema.update(src)
    for a, b in zip(ema.model.state_dict().values(), src.state_dict().values()):
        assert torch.equal(a, b)


def test_closed_form_after_n_updates():
    e0, target = net(0), net(1)
    ema = EMA(e0, decay=0.9)
    for _ in range(7):
        ema.update(target)
    for pe, p0, p in zip(ema.model.parameters(), e0.parameters(), target.parameters()):
        torch.testing.assert_close(pe, p + 0.9**7 * (p0 - p), rtol=1e-5, atol=1e-6)
    assert ema.num_updates == 7


def test_warmup_decay_and_ema_is_frozen_eval():
    ema = EMA(net(0), decay=0.999, warmup=True)
    assert ema.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    ema.num_updates = 90
    assert ema.current_decay() == pytest.approx(0.91)
    ema.num_updates = 10**6
    assert ema.current_decay() == 0.999
    assert not ema.model.training and not any(p.requires_grad for p in ema.model.parameters())


def test_state_dict_round_trip():
    a = EMA(net(0), decay=0.5)
    a.update(net(1))
    b = EMA(net(2), decay=0.9)
    b.load_state_dict(a.state_dict())
    assert b.decay == 0.5 and b.num_updates == 1
    for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()):
        assert torch.equal(x, y)
