import pytest
import torch

from miro.flow import flow_sigmas, integrate
from miro.sampling import Conditions, Guidance, sample, total_nfe
from tests.sampling.closed_form import LinearGaussianModel, TinyNonlinearModel

B, L, D, R, C = 4, 5, 8, 3, 3
NAMES = ["a", "b", "c"]


def make_conditions(seed=0, free=None) -> Conditions:
    g = torch.Generator().manual_seed(seed)
    text_mask = torch.ones(B, L, dtype=torch.bool)
    text_mask[1, 3:] = False
    pos_mask = torch.ones(B, R, dtype=torch.bool)
    neg_mask = torch.ones(B, R, dtype=torch.bool)
    if free is not None:
        pos_mask[:, free] = neg_mask[:, free] = False
    return Conditions(
        text=torch.randn(B, L, D, generator=g),
        text_mask=text_mask,
        pos_rewards=0.5 + 0.5 * torch.rand(B, R, generator=g),
        pos_mask=pos_mask,
        neg_rewards=0.5 * torch.rand(B, R, generator=g),
        neg_mask=neg_mask,
    )


def noise(seed=1, size=4):
    return torch.randn(B, C, size, size, generator=torch.Generator().manual_seed(seed))


def branch_mean(model, conds, text: bool, positive):
    sel = torch.tensor(positive)
    return model.mean(
        conds.text,
        conds.text_mask,
        torch.where(sel, conds.pos_rewards, conds.neg_rewards),
        torch.where(sel, conds.pos_mask, conds.neg_mask),
        torch.full((B,), not text),
    )[:, :, None, None]


def conditional_only(model, conds, x1, sigmas, method="euler"):
    kw = dict(rewards=conds.pos_rewards, reward_mask=conds.pos_mask, drop_text=torch.zeros(B, dtype=torch.bool))
    return integrate(lambda x, t: model(x, t, conds.text, conds.text_mask, **kw), x1, sigmas, method)


@torch.no_grad()
def test_joint_guidance_lands_on_the_closed_form_guided_mean():
    model, conds, x1, w = LinearGaussianModel(), make_conditions(), noise(), 3.0
    target = (1 + w) * branch_mean(model, conds, True, (True,) * R) - w * branch_mean(model, conds, False, (False,) * R)
    target = target + model.s * x1
    out = sample(model, x1, conds, Guidance.joint(w, R), flow_sigmas(64), "heun")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, target, atol=2e-3, rtol=0)
    # Euler converges to the same map at first order
    err32 = (sample(model, x1, conds, Guidance.joint(w, R), flow_sigmas(32)) - target).abs().max()
    err64 = (sample(model, x1, conds, Guidance.joint(w, R), flow_sigmas(64)) - target).abs().max()
    assert 1.6 < err32 / err64 < 2.4
    assert (out - target).abs().max() < err64 / 5


@torch.no_grad()
def test_per_reward_weights_scale_each_rewards_contribution_exactly_for_a_linear_model():
    """With a mean linear in text feature and rewards, the chain adds w_text * (text effect) plus
    w_k * b_k (s+_k - s-_k) per reward: each reward pushed by its own weight, a free reward not at all."""
    model, x1 = LinearGaussianModel(), noise()
    conds = make_conditions(free=2)
    guidance = Guidance.resolve(NAMES, 1.5, reward_guidance_weights={"a": 4.0, "b": 0.0, "c": 9.0})
    pos = branch_mean(model, conds, True, (True,) * R)
    text_effect = pos - branch_mean(model, conds, False, (True,) * R)
    delta = (conds.pos_rewards - conds.neg_rewards) * torch.tensor([4.0, 0.0, 0.0])
    target = pos + 1.5 * text_effect + (delta @ model.reward_proj.T)[:, :, None, None] + model.s * x1
    out = sample(model, x1, conds, guidance, flow_sigmas(64), "heun")
    torch.testing.assert_close(out, target, atol=2e-3, rtol=0)


@pytest.mark.parametrize(
    "guidance",
    [
        Guidance.joint(0.0, R),
        Guidance.resolve(NAMES, 5.0, text_guidance_scale=0.0, reward_guidance_scale=0.0),
        Guidance.resolve(NAMES, 0.0, reward_guidance_weights={"a": 0.0, "b": 0.0}),
        Guidance.joint(7.0, R, interval=(0.0, 0.0)),  # no grid point of a run lies in [0, 0]
    ],
    ids=["joint-w0", "decoupled-0-0", "weights-0", "empty-interval"],
)
@pytest.mark.parametrize("method", ["euler", "heun"])
@torch.no_grad()
def test_neutral_guidance_is_plain_conditional_sampling(guidance, method):
    model, conds, x1 = TinyNonlinearModel(), make_conditions(), noise()
    ref = conditional_only(model, conds, x1, flow_sigmas(6), method)
    model.calls.clear()
    out = sample(model, x1, conds, guidance, flow_sigmas(6), method)
    assert torch.equal(out, ref)
    assert set(model.calls) == {B}  # one branch per evaluation


@pytest.mark.parametrize(
    "guidance",
    [
        Guidance.joint(7.0, R),
        Guidance.resolve(NAMES, text_guidance_scale=2.0, reward_guidance_scale=5.0),
        Guidance.resolve(NAMES, 3.0, reward_guidance_weights={"a": 6.0, "c": 0.0}),
    ],
    ids=["joint", "decoupled", "per-reward"],
)
@torch.no_grad()
def test_batched_branches_equal_separate_forwards(guidance):
    model, conds, x1 = TinyNonlinearModel(), make_conditions(), noise()
    sigmas = flow_sigmas(5)
    model.calls.clear()
    batched = sample(model, x1, conds, guidance, sigmas, "heun")
    assert model.calls == [B * guidance.nfe()] * 9  # 5 Heun steps, the last one single
    model.calls.clear()
    separate = sample(model, x1, conds, guidance, sigmas, "heun", batch_branches=False)
    assert model.calls == [B] * (9 * guidance.nfe())
    torch.testing.assert_close(batched, separate, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_guidance_interval_saves_evaluations_and_only_guides_inside():
    model, conds, x1 = LinearGaussianModel(), make_conditions(), noise()
    sigmas = flow_sigmas(10)
    guidance = Guidance.joint(4.0, R, interval=(0.45, 1.0))
    model.calls.clear()
    out = sample(model, x1, conds, guidance, sigmas)
    inside = sum(0.45 <= float(s) <= 1.0 for s in sigmas[:-1])
    assert 0 < inside < 10
    assert model.calls == [2 * B] * inside + [B] * (10 - inside)
    assert sum(model.calls) == B * total_nfe(guidance, sigmas) == B * (10 + inside)
    model.calls.clear()
    sample(model, x1, conds, guidance, sigmas, "heun")
    assert sum(model.calls) == B * total_nfe(guidance, sigmas, "heun")
    # after the interval the trajectory follows the conditional field only
    full = sample(model, x1, conds, Guidance.joint(4.0, R), sigmas)
    plain = sample(model, x1, conds, Guidance.joint(0.0, R), sigmas)
    assert (out - full).abs().max() > 1e-2 and (out - plain).abs().max() > 1e-2


@torch.no_grad()
def test_a_reward_with_equal_targets_is_evaluated_once():
    """If s+ == s- for a reward, the chain's conditions either side of its switch coincide and are merged."""
    model, x1 = LinearGaussianModel(), noise()
    conds = make_conditions()
    conds.neg_rewards[:, 0] = conds.pos_rewards[:, 0]
    g1 = Guidance.resolve(NAMES, 2.0, reward_guidance_weights={"a": 6.0, "c": 0.0})
    g2 = Guidance.resolve(NAMES, 2.0, reward_guidance_weights={"a": 2.0, "c": 0.0})
    model.calls.clear()
    out1 = sample(model, x1, conds, g1, flow_sigmas(4))
    assert g1.nfe() == 5 and model.calls == [3 * B] * 4  # z_1 and z_2 merge, and their coefficients cancel
    torch.testing.assert_close(out1, sample(model, x1, conds, g2, flow_sigmas(4)), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_model_dtype_inputs_and_fp32_state():
    model, conds, x1 = TinyNonlinearModel(), make_conditions(), noise()
    ref = sample(model, x1, conds, Guidance.joint(2.0, R), flow_sigmas(4))
    low = sample(model.to(torch.bfloat16), x1, conds, Guidance.joint(2.0, R), flow_sigmas(4), dtype=torch.bfloat16)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, ref, atol=0.15, rtol=0.05)


@torch.no_grad()
def test_bf16_autocast_keeps_fp32_weights_and_state():
    model, conds, x1 = TinyNonlinearModel(), make_conditions(), noise()
    seen = []
    model.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    ref = sample(model, x1, conds, Guidance.joint(2.0, R), flow_sigmas(4))
    assert set(seen) == {torch.float32}
    seen.clear()
    mixed = sample(model, x1, conds, Guidance.joint(2.0, R), flow_sigmas(4), autocast=torch.bfloat16)
    assert set(seen) == {torch.bfloat16}  # the network ran under autocast...
    assert mixed.dtype == torch.float32 and next(model.parameters()).dtype == torch.float32  # ...nothing else
    torch.testing.assert_close(mixed, ref, atol=0.15, rtol=0.05)


def test_mismatched_shapes_are_rejected():
    conds = make_conditions()
    with pytest.raises(ValueError, match="batch 3 but the conditions have 4"):
        sample(LinearGaussianModel(), noise()[:3], conds, Guidance.joint(1.0, R), flow_sigmas(2))
    with pytest.raises(ValueError, match="neg_rewards"):
        Conditions(conds.text, conds.text_mask, conds.pos_rewards, conds.pos_mask, conds.neg_rewards[:, :2],
                   conds.neg_mask)
