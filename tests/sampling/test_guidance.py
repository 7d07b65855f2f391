import pytest

from miro.sampling.guidance import Branch, Guidance

NAMES = ["pickscore", "aesthetic", "sharpness"]
POS, NEG = (True,) * 3, (False,) * 3


def test_joint_is_the_authors_formula():
    # (1 + w) v(c, s+) - w v(null, s-)
    assert Guidance.joint(7.0, 3).branches() == [Branch(False, NEG, -7.0), Branch(True, POS, 8.0)]
    assert Guidance.joint(7.0, 3).nfe() == 2


def test_resolve_defaults_to_joint_and_equal_decoupled_scales_are_joint():
    joint = Guidance.joint(4.0, 3)
    assert Guidance.resolve(NAMES, 4.0) == joint
    same = Guidance.resolve(NAMES, 1.0, text_guidance_scale=4.0, reward_guidance_scale=4.0)
    assert same.branches() == joint.branches()


def test_decoupled_has_three_branches():
    g = Guidance.resolve(NAMES, text_guidance_scale=3.0, reward_guidance_scale=5.0)
    # v(c,s+) + 3 (v(c,s-) - v(null,s-)) + 5 (v(c,s+) - v(c,s-))
    assert g.branches() == [Branch(False, NEG, -3.0), Branch(True, NEG, -2.0), Branch(True, POS, 6.0)]
    assert g.nfe() == 3


@pytest.mark.parametrize("text,reward,nfe", [(0.0, 5.0, 2), (3.0, 0.0, 3), (0.0, 0.0, 1)])
def test_zero_scales_drop_branches(text, reward, nfe):
    """Text guidance is measured at s- (the chain switches text on first), so with reward guidance off it
    still needs v(c, s+), v(c, s-) and v(null, s-)."""
    g = Guidance.resolve(NAMES, text_guidance_scale=text, reward_guidance_scale=reward)
    assert g.nfe() == nfe
    if nfe == 1:
        assert g.branches() == [Branch(True, POS, 1.0)]


def test_per_reward_weights_chain_in_decreasing_weight():
    g = Guidance.resolve(NAMES, 2.0, reward_guidance_weights={"aesthetic": 6.0, "sharpness": 0.0})
    # groups by weight: {aesthetic: 6}, {pickscore: 2}, {sharpness: 0}; text weight 2
    assert g.reward_scales == (2.0, 6.0, 0.0)
    assert g.branches() == [
        Branch(False, NEG, -2.0),
        Branch(True, NEG, 2.0 - 6.0),
        Branch(True, (False, True, False), 6.0 - 2.0),
        Branch(True, (True, True, False), 2.0 - 0.0),
        Branch(True, POS, 1.0),
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"guidance_scale": 3.0},
        {"text_guidance_scale": 1.0, "reward_guidance_scale": 4.0},
        {"reward_guidance_weights": {"pickscore": 9.0, "aesthetic": -1.0}},
        {"guidance_scale": 0.0, "reward_guidance_weights": {"sharpness": 2.5}},
    ],
)
def test_coefficients_sum_to_one(kwargs):
    """A velocity shared by every condition passes through guidance unchanged."""
    assert sum(b.coef for b in Guidance.resolve(NAMES, **kwargs).branches()) == pytest.approx(1.0)


def test_interval_only_evaluates_the_positive_branch_outside():
    g = Guidance.resolve(NAMES, 7.0, guidance_interval=(0.2, 0.6))
    assert g.active(0.2) and g.active(0.6) and not g.active(0.7) and not g.active(0.1)
    assert g.nfe(0.9) == 1 and g.nfe(0.4) == 2
    assert g.branches(False) == [Branch(True, POS, 1.0)]


def test_no_reward_model_is_classifier_free_guidance():
    assert Guidance.joint(3.0, 0).branches() == [Branch(False, (), -3.0), Branch(True, (), 4.0)]


def test_errors_name_what_is_allowed():
    with pytest.raises(ValueError, match=r"allowed: \['pickscore', 'aesthetic', 'sharpness'\]"):
        Guidance.resolve(NAMES, reward_guidance_weights={"hpsv2": 1.0})
    with pytest.raises(ValueError, match="0 <= t_lo <= t_hi <= 1"):
        Guidance.resolve(NAMES, guidance_interval=(0.6, 0.2))
    with pytest.raises(ValueError, match="0 <= t_lo <= t_hi <= 1"):
        Guidance.resolve(NAMES, guidance_interval=(-0.1, 0.5))
    with pytest.raises(ValueError, match="pair"):
        Guidance.resolve(NAMES, guidance_interval=(0.1, 0.2, 0.3))
    with pytest.raises(ValueError, match="finite"):
        Guidance.resolve(NAMES, float("nan"))
