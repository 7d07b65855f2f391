import math

import pytest
import torch
from torch import nn

from miro.train.optim import OptimConfig, build_optimizer, lr_at, param_groups
from miro.utils.config import ConfigError, to_typed


def test_warmup_then_cosine_values():
    cfg = OptimConfig(lr=1e-3, warmup_steps=4, min_lr_ratio=0.1)
    assert [lr_at(s, cfg, 104) for s in range(4)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert lr_at(4, cfg, 104) == pytest.approx(1e-3)  # progress 0
    assert lr_at(54, cfg, 104) == pytest.approx(1e-4 + 9e-4 * 0.5)  # half way: cos(pi/2) = 0
    assert lr_at(29, cfg, 104) == pytest.approx(1e-4 + 9e-4 * 0.5 * (1 + math.cos(math.pi * 0.25)))
    assert lr_at(104, cfg, 104) == pytest.approx(1e-4) and lr_at(500, cfg, 104) == pytest.approx(1e-4)


def test_constant_schedule_and_no_warmup():
    cfg = OptimConfig(lr=3e-4, warmup_steps=0, schedule="constant")
    assert {lr_at(s, cfg, 10) for s in (0, 5, 9)} == {3e-4}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5, 4)
        self.lin = nn.Linear(4, 4)
        self.conv = nn.Conv2d(4, 4, 1)
        self.norm = nn.LayerNorm(4)
        self.null = nn.Parameter(torch.zeros(4))


def test_weight_decay_only_on_matrices():
    net = Net()
    decay, rest = param_groups(net, 0.05)
    assert decay["weight_decay"] == 0.05 and rest["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(net.lin.weight), id(net.conv.weight)}
    no_decay = {net.emb.weight, net.lin.bias, net.conv.bias, net.norm.weight, net.norm.bias, net.null}
    assert {id(p) for p in rest["params"]} == {id(p) for p in no_decay}
    opt = build_optimizer(net, OptimConfig(weight_decay=0.05))
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(net.parameters()))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])  # fmt: skip
def test_fused_adamw_on_cuda_only(device):
    """The fused kernel on CUDA (one launch per step); the default implementation elsewhere.  Both take the same
    step: the fused update matches the reference update to float rounding."""
    net = Net().to(device)
    opt = build_optimizer(net, OptimConfig(weight_decay=0.05))
    assert bool(opt.defaults["fused"]) == (device == "cuda")
    ref = Net().to(device)
    ref.load_state_dict(net.state_dict())
    ref_opt = torch.optim.AdamW(param_groups(ref, 0.05), lr=opt.defaults["lr"], foreach=False)
    for model, optimizer in ((net, opt), (ref, ref_opt)):
        torch.manual_seed(0)
        for _ in range(3):
            optimizer.zero_grad()
            model.lin(torch.randn(4, model.lin.in_features, device=device)).square().mean().backward()
            optimizer.step()
    for a, b in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_bad_values_name_the_key():
    with pytest.raises(ConfigError, match="optim.schedule='linear'"):
        to_typed({"schedule": "linear"}, OptimConfig)
    with pytest.raises(ConfigError, match="optim.lr=0"):
        OptimConfig(lr=0)
