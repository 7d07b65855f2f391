"""scripts/experiments/attention_guidance.py: the recorded maps, the word positions, the two losses, and the plain
mode through its own loop giving the pipeline's images."""

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from miro.models.config import AutoencoderConfig, TextEncoderConfig, build_text_encoder
from miro.models.unet import MiroUNet
from tests.scripts.loader import load_script

ag = load_script("experiments/attention_guidance.py")
PROMPT = "a photo of a red square and a blue hexagon"
ROW = {"tag": "color_attr", "prompt": PROMPT, "include": [{"class": "square", "count": 1, "color": "red"},
                                                          {"class": "hexagon", "count": 1, "color": "blue"}]}  # fmt: skip


@pytest.fixture(scope="module")
def encoder():
    return build_text_encoder(TextEncoderConfig(kind="minilm", max_length=16))


def tiny_unet(text_dim=384):
    torch.manual_seed(0)
    model = MiroUNet(in_channels=3, sample_size=16, text_dim=text_dim, reward_names=["sharpness", "alignment"],
                     block_out_channels=(8, 16, 16), attention_head_dim=4, norm_num_groups=4, cond_width=16,
                     cond_heads=2, reward_fourier_dim=8).eval()  # fmt: skip
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def test_the_recorder_keeps_the_velocity_and_records_distributions_over_the_condition():
    model = tiny_unet(text_dim=8)
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 3, 16, 16, generator=g), torch.rand(2, generator=g)
    text, mask = torch.randn(2, 5, 8, generator=g), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    with torch.no_grad():
        before = model(x, t, text, mask, torch.rand(2, 2, generator=g))
        recorder = ag.CrossAttentionRecorder(model.unet)
        g = torch.Generator().manual_seed(1)
        x, t, text = torch.randn(2, 3, 16, 16, generator=g), torch.rand(2, generator=g), torch.randn(2, 5, 8, generator=g)
        rewards = torch.rand(2, 2, generator=g)
        assert not recorder.maps and torch.allclose(model(x, t, text, mask, rewards), before, atol=1e-5)
        with recorder.recording():
            model(x, t, text, mask, rewards)
    assert len(recorder.maps) == len(recorder.layers) == 7  # 8x8: one down, two up; 4x4: one down, the mid, two up
    keys = 2 + 1 + 5  # rewards, the null slot, the text
    for res in (8, 4):
        m = recorder.mean_map(res)
        assert m.shape == (2, res * res, keys)
        assert torch.allclose(m.sum(-1), torch.ones(2, res * res), atol=1e-5)
        assert m[0, :, 2 + 1 + 3:].abs().max() < 1e-6  # masked text keys get nothing
        assert m[:, :, 2].abs().max() < 1e-6  # the null slot only when no text is kept
    with pytest.raises(ValueError, match="no cross-attention at 16x16"):
        recorder.mean_map(16)


def test_word_positions_follow_the_word_pieces(encoder):
    tok = encoder.tokenizer
    pos = ag.word_tokens(tok, PROMPT, {"red", "square", "blue", "hexagon"})
    assert pos == {"red": [5], "square": [6], "blue": [9], "hexagon": [10, 11, 12]}  # [CLS] a photo of a red ...
    assert tok.convert_ids_to_tokens(tok(PROMPT)["input_ids"])[10:13] == ["he", "##xa", "##gon"]
    with pytest.raises(ValueError, match="does not contain"):
        ag.word_tokens(tok, PROMPT, {"star"})


def test_the_losses_in_closed_form():
    b, res, n = 2, 4, 5
    one_spot = torch.zeros(b, res, res, n)
    one_spot[:, :, :, 0] = 1.0  # token 1 (channel 0) takes every pixel
    # a noun whose map is 1 everywhere has a smoothed peak of 1: no loss; a noun that is 0 everywhere: loss 1
    assert torch.allclose(ag.excite_loss(one_spot, [[1]]), torch.zeros(b), atol=1e-6)
    assert torch.allclose(ag.excite_loss(one_spot, [[1], [2]]), torch.ones(b))
    uniform = torch.full((b, res, res, n), 0.2)
    assert torch.allclose(ag.excite_loss(uniform, [[3]]), torch.full((b,), 0.8))
    # SynGen: a colour on its noun's map costs nothing; apart from the other pair it earns minus half the KL
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(b, res, res, n, generator=g) + 0.1
    maps[..., 1] = maps[..., 0]
    assert torch.allclose(ag.bind_loss(maps, [([1], [2])]), torch.zeros(b), atol=1e-6)
    two = ag.bind_loss(maps, [([1], [2]), ([3], [4])])
    kl = ag._sym_kl
    w = lambda k: maps[..., k - 1]  # noqa: E731
    expected = (kl(w(3), w(4)) - 0.5 * (kl(w(2), w(3)) + kl(w(2), w(4))) / 2
                - 0.5 * (kl(w(4), w(1)) + kl(w(4), w(2))) / 2)  # fmt: skip
    assert torch.allclose(two, expected, atol=1e-5)


def test_the_plain_mode_gives_the_pipelines_images_and_a_guided_mode_moves_them(encoder):
    from miro.sampling.pipeline import MiroPipeline

    pipe = MiroPipeline(transformer=tiny_unet(), scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0),
                        text_encoder_config=TextEncoderConfig(kind="minilm", max_length=16),
                        autoencoder_config=AutoencoderConfig(kind="identity"), num_bins=8, text_encoder=encoder)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    free = {"sharpness": None}
    seeds = [3, 4]
    ref = pipe([PROMPT] * 2, reward_targets={"alignment": 1.0, **free}, negative_reward_targets=free,
               guidance_scale=0.0, text_guidance_scale=3.0, reward_guidance_scale=1.0, num_inference_steps=5,
               generator=[torch.Generator().manual_seed(s) for s in seeds], output_type="np", mixed_precision="no")  # fmt: skip
    recorder = ag.CrossAttentionRecorder(pipe.transformer.unet)
    plain, losses = ag.guided_sample(pipe, recorder, PROMPT, ROW, seeds, "none", 0.0, 0, 8, steps=5,
                                     precision="no")  # fmt: skip
    assert losses == []
    assert np.abs(np.stack([np.asarray(i) for i in plain]) / 255.0 - ref).max() <= 0.5 / 255 + 1e-6
    moved, losses = ag.guided_sample(pipe, recorder, PROMPT, ROW, seeds, "excite", 0.5, 2, 8, steps=5, precision="no")
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert np.abs(np.stack([np.asarray(i) for i in moved]) / 255.0 - ref).max() > 0.01


def test_arguments():
    args = ag.parse_args(["--mode", "bind", "--resolution", "16"])
    assert (args.mode, args.resolution, args.guided_steps, args.images) == ("bind", 16, 10, 2)
    with pytest.raises(SystemExit):
        ag.parse_args(["--scale", "-1"])


def test_word_boxes_mark_each_objects_cells_for_its_colour_and_class_words():
    dets = [{"class": "square", "score": 0.9, "box": [0, 0, 16, 16]}, {"class": "square", "score": 0.2, "box": [16, 16, 32, 32]},
            {"class": "hexagon", "score": 0.8, "box": [16, 0, 32, 16]}]  # fmt: skip
    boxes = ag._word_boxes(ROW, dets, 32, resolutions=(4,))[4]
    square = torch.zeros(4, 4)
    square[:2, :2] = 1  # the most confident square, the top-left quarter (rows are y)
    hexagon = torch.zeros(4, 4)
    hexagon[:2, 2:] = 1
    assert torch.equal(boxes["square"].view(4, 4), square) and torch.equal(boxes["red"], boxes["square"])
    assert torch.equal(boxes["hexagon"].view(4, 4), hexagon) and torch.equal(boxes["other:blue"], boxes["square"])
    with pytest.raises(ValueError, match="does not find the hexagon"):
        ag._word_boxes(ROW, dets[:2], 32)


def test_attention_mass_shares_add_up_and_box_shares_are_fractions(encoder):
    from miro.sampling.pipeline import MiroPipeline

    torch.manual_seed(0)
    unet = MiroUNet(in_channels=3, sample_size=32, text_dim=384, reward_names=["sharpness", "alignment"],
                    block_out_channels=(8, 16), attention_head_dim=4, norm_num_groups=4, cond_width=16, cond_heads=2,
                    reward_fourier_dim=8).eval()  # fmt: skip
    pipe = MiroPipeline(transformer=unet, scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0),
                        text_encoder_config=TextEncoderConfig(kind="minilm", max_length=16),
                        autoencoder_config=AutoencoderConfig(kind="identity"), num_bins=8, text_encoder=encoder)  # fmt: skip
    out = ag.attention_mass(pipe, ag.CrossAttentionRecorder(unet.unet), [ROW], times=(0.5,), images=2)
    level = out["by_t"]["0.5"]["16"]
    assert sum(level["share"].values()) == pytest.approx(1.0, abs=2e-3)  # the null slot is not read with a prompt
    for role in ("colour", "class"):
        assert 0 < level[role]["own_box_area"] < 1 and 0 <= level[role]["own_box_share"] <= 1
        assert 0 < level[role]["excite_peak"] <= 1
