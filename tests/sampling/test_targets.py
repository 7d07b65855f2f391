import pytest
import torch

from miro.sampling.targets import canonical_keys, reward_tensors

NAMES = ["pickscore", "aesthetic", "sharpness"]


def test_defaults_values_free_and_order():
    values, mask = reward_tensors({"sharpness": 0.25, "aesthetic": None}, NAMES, 2, default=1.0)
    torch.testing.assert_close(values, torch.tensor([[1.0, 0.0, 0.25]] * 2))
    assert mask.tolist() == [[True, False, True]] * 2
    values, mask = reward_tensors(None, NAMES, 1, default=0.0)
    assert values.tolist() == [[0.0, 0.0, 0.0]] and mask.all()


def test_per_prompt_targets():
    values, _ = reward_tensors([{"pickscore": 0.5}, None, {"sharpness": 0}], NAMES, 3, default=1.0)
    assert values.tolist() == [[0.5, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]
    values, _ = reward_tensors([{"pickscore": torch.tensor(0.5)}], NAMES, 1, default=0.0)
    assert values[0, 0] == 0.5


def test_authors_aliases():
    values, _ = reward_tensors({"pick_a_score_score": 0.75, "aesthetic_score": 0.5}, NAMES, 1, default=1.0)
    assert values.tolist() == [[0.75, 0.5, 1.0]]
    with pytest.raises(ValueError, match="twice"):
        canonical_keys({"aesthetic": 1.0, "aesthetic_score": 0.5}, NAMES, "reward_targets")


@pytest.mark.parametrize(
    "targets,match",
    [
        ({"hpsv2": 1.0}, r"'hpsv2'.*allowed: \['pickscore', 'aesthetic', 'sharpness'\].*aliases \['aesthetic_score', 'pick_a_score_score'\]"),
        ({"vqa_score": 1.0}, "not trained with"),
        ({"aesthetic": 1.5}, r"must be in \[0, 1\]"),
        ({"aesthetic": -0.01}, r"must be in \[0, 1\]"),
        ({"aesthetic": float("nan")}, r"must be in \[0, 1\]"),
        ({"aesthetic": "high"}, "must be a number"),
        ({"aesthetic": True}, "must be a number"),
        ([{}, {}, {}], "list of 3 mappings but there are 2 prompts"),
        ([{}, 0.5], r"reward_targets\[1\] must be a mapping"),
        (0.5, "must be a mapping"),
    ],
)
def test_errors_say_what_is_allowed(targets, match):
    with pytest.raises(ValueError, match=match):
        reward_tensors(targets, NAMES, 2, default=1.0)
