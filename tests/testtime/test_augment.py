"""Prompt-preserving augmentations (miro.testtime.augment): the rules per prompt kind and the transforms."""

import pytest
import torch

from miro.testtime.augment import allowed_augmentations, augment, prompt_facts, resolve_augmentations


@pytest.mark.parametrize(
    "prompt, allowed",
    [
        ("a photo of a circle", {"hflip", "translate", "crop", "color"}),
        ("a photo of a red circle", {"hflip", "translate", "crop"}),  # colour named: no colour jitter
        ("a photo of two crosses", {"hflip", "color"}),  # counting: no shift, no crop
        ("A photo of exactly 3 squares", {"hflip", "color"}),
        ("a photo of a circle right of a star", {"translate", "crop", "color"}),  # left/right: no mirror
        ("a cat to the left of a dog", {"translate", "crop", "color"}),
        (
            "a photo of a diamond above a heart",
            {"hflip", "translate", "crop", "color"},
        ),  # vflip is never default
        ("a photo of an orange hexagon and a green star", {"hflip", "translate", "crop"}),
    ],
)
def test_the_default_set_keeps_the_prompt_true(prompt, allowed):
    assert set(allowed_augmentations(prompt)) == allowed


def test_latent_space_has_no_colour_jitter():
    assert "color" not in allowed_augmentations("a photo of a circle", pixel_space=False)


def test_facts():
    f = prompt_facts("a triangle under a heart on a beige background")
    assert f.above_below and f.colours and not f.left_right and not f.counts


def test_an_explicit_unsafe_choice_is_an_error_that_says_why():
    with pytest.raises(ValueError, match="left/right relation"):
        resolve_augmentations(["hflip"], "a circle left of a star")
    with pytest.raises(ValueError, match="above/below"):
        resolve_augmentations("vflip", "a circle above a star")
    with pytest.raises(ValueError, match="counts objects"):
        resolve_augmentations(["crop"], "two circles")
    with pytest.raises(ValueError, match="unknown"):
        resolve_augmentations(["rotate"], "a circle")
    assert resolve_augmentations(["vflip", "hflip"], "a circle") == ("vflip", "hflip")
    assert resolve_augmentations("none", "a circle") == () == resolve_augmentations(None, "a circle")


def test_transforms():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 16, 16, generator=g) * 2 - 1
    assert torch.equal(augment(x, ()), x)
    # each item is the identity or its mirror image, and both occur
    out = augment(x, ["hflip"], torch.Generator().manual_seed(1))
    same = [(o == i).all().item() for o, i in zip(out, x)]
    mirrored = [(o == i.flip(-1)).all().item() for o, i in zip(out, x)]
    assert all(s or m for s, m in zip(same, mirrored)) and any(same) and any(mirrored)
    # deterministic for a seed
    a = augment(x, ["translate", "crop", "color"], torch.Generator().manual_seed(2))
    b = augment(x, ["translate", "crop", "color"], torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and a.shape == x.shape and a.abs().max() <= 1


def test_translate_repeats_the_border_instead_of_wrapping():
    from miro.testtime.augment import _translate

    x = torch.zeros(1, 8, 8)
    x[0, :, 7] = 1.0  # a bright last column
    out = _translate(x, 0, 1)  # one pixel to the right
    assert out[0, :, 0].eq(0).all()  # the bright column did not wrap to the left edge
    torch.testing.assert_close(out[0, :, 1:], x[0, :, :7])
