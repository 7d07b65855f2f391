import numpy as np
import PIL.Image
import pytest
import torch

from miro.flow import flow_sigmas
from miro.sampling.pipeline import MiroPipeline, MiroPipelineOutput
from tests.sampling.conftest import REWARDS, tiny_transformer

PROMPTS = ["a red circle", "two blue squares above a star"]


def gen(seed):
    return torch.Generator().manual_seed(seed)


def run(pipe, prompt=PROMPTS, seed=0, steps=4, **kw):
    kw.setdefault("output_type", "pt")
    return pipe(prompt, num_inference_steps=steps, generator=gen(seed), **kw)


def test_save_load_sample_bit_identically(tiny_pipe, saved_pipe):
    loaded = MiroPipeline.from_pretrained(saved_pipe)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.reward_names == REWARDS and loaded.coherence_keys == tuple(REWARDS) and loaded.num_bins == 8
    assert loaded.trained_targets == pytest.approx(
        [k / 7 for k in range(8)]
    )  # the contract's bucket / (B - 1)
    assert loaded.scheduler.config.shift == 2.0
    assert (saved_pipe / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    for (k, a), (_, b) in zip(
        tiny_pipe.transformer.state_dict().items(), loaded.transformer.state_dict().items()
    ):
        assert torch.equal(a, b), k
    kw = dict(
        reward_targets={"aesthetic": 0.3}, text_guidance_scale=2.0, reward_guidance_scale=5.0, sampler="heun"
    )
    assert torch.equal(run(tiny_pipe, **kw), run(loaded, **kw))


def test_scheduler_sigmas_are_the_flow_grid(tiny_pipe):
    for steps in (1, 4, 50):
        tiny_pipe.scheduler.set_timesteps(steps)
        torch.testing.assert_close(
            tiny_pipe.scheduler.sigmas.float(), flow_sigmas(steps, 2.0), atol=1e-6, rtol=0
        )


def test_deterministic_for_a_generator_and_per_image_generators(tiny_pipe):
    a, b, c = run(tiny_pipe, seed=3), run(tiny_pipe, seed=3), run(tiny_pipe, seed=4)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    # one generator per image: image i is the image its seed gives alone
    both = tiny_pipe(PROMPTS, num_inference_steps=4, generator=[gen(5), gen(6)], output_type="pt")
    torch.testing.assert_close(both[1:], run(tiny_pipe, PROMPTS[1], seed=6), atol=1e-5, rtol=1e-5)


def test_sde_sampler_is_fixed_by_the_generators_and_per_image(tiny_pipe):
    """The stochastic sampler draws its fresh noise from the call's generators: a seed fixes the images, one
    generator per image gives each image what its seed gives alone, and it costs what Euler costs."""
    a, b = run(tiny_pipe, seed=3, sampler="sde"), run(tiny_pipe, seed=3, sampler="sde")
    assert torch.equal(a, b) and not torch.allclose(a, run(tiny_pipe, seed=3), atol=1e-3)
    torch.testing.assert_close(run(tiny_pipe, seed=3, sampler="sde", sde_noise=0.0), run(tiny_pipe, seed=3),
                               atol=1e-5, rtol=1e-5)  # fmt: skip
    both = tiny_pipe(PROMPTS, num_inference_steps=4, generator=[gen(5), gen(6)], output_type="pt", sampler="sde")
    torch.testing.assert_close(both[1:], run(tiny_pipe, PROMPTS[1], seed=6, sampler="sde"), atol=1e-5, rtol=1e-5)
    out = tiny_pipe(PROMPTS, num_inference_steps=4, generator=gen(0), sampler="sde", return_dict=True)
    euler = tiny_pipe(PROMPTS, num_inference_steps=4, generator=gen(0), return_dict=True)
    assert out.nfe == euler.nfe and out.settings.sampler == "sde" and out.settings.sde_noise == 0.7


def test_output_types(tiny_pipe):
    pil = tiny_pipe(PROMPTS[0], num_inference_steps=2, num_images_per_prompt=3, generator=gen(0))
    assert (
        isinstance(pil, list)
        and len(pil) == 3
        and isinstance(pil[0], PIL.Image.Image)
        and pil[0].size == (8, 8)
    )
    pt = run(tiny_pipe, steps=2)
    assert pt.shape == (2, 3, 8, 8) and pt.min() >= 0 and pt.max() <= 1
    arr = run(tiny_pipe, steps=2, output_type="np")
    assert arr.shape == (2, 8, 8, 3) and arr.dtype == np.float32
    np.testing.assert_allclose(arr, pt.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    u8 = run(tiny_pipe, steps=2, output_type="numpy")  # the authors' "numpy": uint8
    assert u8.dtype == np.uint8 and np.array_equal(u8, (arr * 255).round().astype(np.uint8))
    assert np.array_equal(np.asarray(tiny_pipe(PROMPTS, num_inference_steps=2, generator=gen(0))[1]), u8[1])
    latent = run(tiny_pipe, steps=2, output_type="latent")
    torch.testing.assert_close((latent.clamp(-1, 1) + 1) / 2, pt)
    out = run(tiny_pipe, steps=2, return_dict=True)
    assert isinstance(out, MiroPipelineOutput) and torch.equal(out.images, pt)


def test_authors_call_runs_unchanged(tiny_pipe):
    """Their keyword arguments and reward key names, their defaults (targets 1, negatives 0, w = 7)."""
    ours = run(tiny_pipe, reward_targets={"aesthetic": 0.625})
    theirs = tiny_pipe(
        PROMPTS,
        reward_targets={"aesthetic_score": 0.625},
        negative_reward_targets=None,
        num_inference_steps=4,
        guidance_scale=7.0,
        num_images_per_prompt=1,
        generator=gen(0),
        output_type="pt",
    )
    explicit = run(
        tiny_pipe,
        reward_targets={"sharpness": 1.0, "aesthetic": 0.625, "pickscore": 1.0},
        negative_reward_targets={r: 0.0 for r in REWARDS},
        guidance_scale=7.0,
    )
    assert torch.equal(ours, theirs) and torch.equal(ours, explicit)


def test_authors_module_api_and_argument_messages(tiny_pipe):
    """Code written for their nn.Module pipeline: ``network``, ``parameters()``, ``state_dict()``, ``eval()``,
    ``tokenizer``, ``COHERENCE_KEYS``; and the arguments their users get wrong, each named (issue #17)."""
    from miro.sampling.pipeline import MiroPipeline

    assert tiny_pipe.network is tiny_pipe.transformer and tiny_pipe.eval() is tiny_pipe
    modules = (tiny_pipe.transformer, tiny_pipe.text_encoder, tiny_pipe.autoencoder)
    assert sum(p.numel() for p in tiny_pipe.parameters()) == sum(
        p.numel() for m in modules for p in m.parameters()
    ) > sum(p.numel() for p in tiny_pipe.transformer.parameters())
    # still diffusers' dict of the optional __init__ arguments, for Other(**pipe.components, **pipe.parameters)
    assert tiny_pipe.parameters["text_encoder_config"] == tiny_pipe.config.text_encoder_config
    state = tiny_pipe.state_dict()
    assert len(state) == sum(len(m.state_dict()) for m in modules)
    name, weight = next(iter(tiny_pipe.transformer.state_dict().items()))
    assert torch.equal(state[f"transformer.{name}"], weight)
    assert tiny_pipe.tokenizer("a red circle")["input_ids"][0] == tiny_pipe.text_encoder.tokenizer.cls_token_id
    assert len(MiroPipeline.COHERENCE_KEYS) == 7 and "vqa_score" in MiroPipeline.COHERENCE_KEYS
    cases = [
        (dict(prompt=None), ValueError, r"prompt=None \(NoneType\): must be a string or a non-empty list"),
        (dict(prompt=3), ValueError, r"prompt=3 \(int\)"),
        (dict(num_inference_steps=4.0), ValueError, r"num_inference_steps=4.0 \(float\): must be >= 1, an int"),
        (dict(generator=3), TypeError, r"generator=3 \(int\): .*torch.Generator\(\).manual_seed\(3\)"),
        (dict(guidance_scale=-1.0), ValueError, r"guidance_scale=-1.0: must be >= 0 .*pass 0"),
        (dict(reward_targets={"vqa_score": 1.0}), ValueError, r"'vqa_score', which this model was not trained with"),
    ]  # fmt: skip
    for kwargs, error, message in cases:
        kwargs = {"prompt": PROMPTS, "num_inference_steps": 1, **kwargs}
        with pytest.raises(error, match=message):
            tiny_pipe(**kwargs)


def test_guidance_modes_on_the_real_model(tiny_pipe):
    joint = run(tiny_pipe, guidance_scale=3.0)
    decoupled = run(tiny_pipe, text_guidance_scale=3.0, reward_guidance_scale=3.0, guidance_scale=1.0)
    weights = run(tiny_pipe, guidance_scale=3.0, reward_guidance_weights={r: 3.0 for r in REWARDS})
    assert torch.equal(joint, decoupled) and torch.equal(joint, weights)
    plain = run(tiny_pipe, guidance_scale=0.0)
    assert torch.equal(plain, run(tiny_pipe, guidance_scale=3.0, guidance_interval=(0.0, 0.0)))
    assert not torch.allclose(joint, plain, atol=1e-3)
    assert not torch.allclose(
        run(tiny_pipe, text_guidance_scale=1.0, reward_guidance_scale=5.0), joint, atol=1e-3
    )
    # a free reward (null embedding) differs from a reward at any value
    assert not torch.allclose(run(tiny_pipe, reward_targets={"pickscore": None}), run(tiny_pipe), atol=1e-4)


def test_cached_condition_set_equals_the_full_forward(tiny_pipe):
    """The sampler's encode-once path gives the transformer's own forward, branch for branch."""
    from miro.sampling import Conditions, Guidance, sample

    model = tiny_pipe.transformer
    text, mask = tiny_pipe.encode_prompts(PROMPTS)
    r = len(REWARDS)
    conds = Conditions(
        text,
        mask,
        torch.ones(2, r),
        torch.ones(2, r, dtype=torch.bool),
        torch.zeros(2, r),
        torch.tensor([[True, False, True]] * 2),
    )
    x1 = torch.randn(2, 3, 8, 8, generator=gen(0))
    g = Guidance(2.0, (5.0, 1.0, 0.0))
    with torch.no_grad():
        fast = sample(model, x1, conds, g, flow_sigmas(4))
        full = sample(model, x1, conds, g, flow_sigmas(4), batch_branches=False, cache_condition=False)
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"reward_targets": {"hpsv2": 1.0}}, r"allowed: \['sharpness', 'aesthetic', 'pickscore'\]"),
        ({"negative_reward_targets": {"sharpness": 1.2}}, r"must be in \[0, 1\]"),
        ({"reward_targets": [{"sharpness": 0.5}] * 3}, "list of 3 mappings but there are 2 prompts"),
        (
            {"generator": [gen(0)] * 3},
            "list of 3 but 4 images are requested .2 prompts x num_images_per_prompt=2",
        ),
        ({"reward_guidance_weights": {"clip_score": 1.0}}, "allowed"),
        ({"sampler": "dpm"}, r"must be one of \['euler', 'heun', 'sde'\]"),
        ({"sampler": "sde", "sde_noise": -0.5}, r"settings.sde_noise=-0.5: must be a finite number >= 0"),
        ({"output_type": "jpeg"}, "output_type"),
        ({"height": 9}, "multiples of 2"),
        ({"num_inference_steps": 0}, "must be >= 1"),
        ({"guidance_interval": (0.5, 0.2)}, "t_lo <= t_hi"),
        ({"latents": torch.zeros(1, 3, 8, 8)}, r"latents must have shape \(4, 3, 8, 8\)"),
    ],
)
def test_argument_errors(tiny_pipe, kwargs, match):
    kwargs = {"num_images_per_prompt": 2, "num_inference_steps": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        tiny_pipe(PROMPTS, **kwargs)
    with pytest.raises(ValueError, match="non-empty list of strings"):
        tiny_pipe([])


def test_construction_errors(text_encoder):
    from diffusers import FlowMatchEulerDiscreteScheduler

    from miro.models.config import AutoencoderConfig

    ok = dict(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        autoencoder_config=AutoencoderConfig(),
        text_encoder=text_encoder,
    )
    with pytest.raises(ValueError, match="text_dim=64"):
        MiroPipeline(transformer=tiny_transformer(text_dim=64), **ok)
    with pytest.raises(ValueError, match="use_dynamic_shifting"):
        MiroPipeline(
            tiny_transformer(),
            FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True),
            autoencoder_config=AutoencoderConfig(),
            text_encoder=text_encoder,
        )
    with pytest.raises(
        ValueError, match=r"does not describe the given text encoder: \{'max_length': \(32, 16\)\}"
    ):
        MiroPipeline(
            transformer=tiny_transformer(), text_encoder_config={"kind": "minilm", "max_length": 32}, **ok
        )
    pipe = MiroPipeline(transformer=tiny_transformer(), **ok)
    with pytest.raises(ValueError, match="text_encoder_config"):
        pipe.save_pretrained("/nonexistent/never-written")


def test_from_pretrained_variant_subfolder_device_and_text_encoder(saved_pipe, tmp_path, text_encoder):
    """The authors' layout (a pipeline per subfolder, chosen by `variant`), `device=`, a passed encoder."""
    import shutil

    shutil.copytree(saved_pipe, tmp_path / "ablations" / "no-aesthetic")
    pipe = MiroPipeline.from_pretrained(
        tmp_path / "ablations", variant="no-aesthetic", device="cpu", text_encoder=text_encoder
    )
    assert pipe.text_encoder is text_encoder and pipe.device.type == "cpu" and pipe.reward_names == REWARDS


def test_to_dtype_casts_only_the_transformer(saved_pipe):
    pipe = MiroPipeline.from_pretrained(saved_pipe, torch_dtype=torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.transformer.dtype == torch.bfloat16
    assert next(pipe.text_encoder.parameters()).dtype == torch.float32
    ref_pipe = MiroPipeline.from_pretrained(saved_pipe)
    ref_pipe.set_progress_bar_config(disable=True)
    low, ref = run(pipe, steps=3, guidance_scale=1.0), run(ref_pipe, steps=3, guidance_scale=1.0)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, ref, atol=0.05, rtol=0)


def test_no_reward_baseline_is_classifier_free_guidance(text_encoder):
    """A transformer with reward_names = [] samples with plain CFG: (1 + w) v(c) - w v(null)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from miro.models.config import AutoencoderConfig

    pipe = MiroPipeline(
        tiny_transformer(reward_names=[]),
        FlowMatchEulerDiscreteScheduler(),
        autoencoder_config=AutoencoderConfig(),
        text_encoder=text_encoder,
    )
    pipe.set_progress_bar_config(disable=True)
    assert pipe.reward_names == []
    guided = run(pipe, guidance_scale=2.0)
    assert guided.shape == (2, 3, 8, 8) and not torch.allclose(
        guided, run(pipe, guidance_scale=0.0), atol=1e-3
    )
    with pytest.raises(ValueError, match=r"allowed: \[\]"):
        run(pipe, reward_targets={"aesthetic": 1.0})


def test_image_size_follows_the_conv_levels_stride(text_encoder, tmp_path):
    """A two-level conv U-shape takes patches at half resolution: sizes must be multiples of patch x 2 = 4;
    it samples and round-trips through save_pretrained like any transformer."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from miro.models.config import AutoencoderConfig, TextEncoderConfig

    pipe = MiroPipeline(
        tiny_transformer(conv_channels=8, conv_levels=2),
        FlowMatchEulerDiscreteScheduler(),
        text_encoder_config=TextEncoderConfig(kind="minilm", max_length=16),
        autoencoder_config=AutoencoderConfig(),
        text_encoder=text_encoder,
    )
    pipe.set_progress_bar_config(disable=True)
    with pytest.raises(ValueError, match="height=10 and width=8 must be multiples of 4"):
        run(pipe, height=10, width=8)
    out = run(pipe, height=12, width=8)
    assert out.shape == (2, 3, 12, 8) and torch.isfinite(out).all()
    pipe.save_pretrained(tmp_path)
    loaded = MiroPipeline.from_pretrained(tmp_path, text_encoder=text_encoder)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.transformer.config.conv_levels == 2
    assert torch.equal(run(loaded, height=12, width=8), out)


def test_recommended_targets_round_trip_and_are_checked(tiny_pipe, tmp_path):
    from miro.sampling.pipeline import MiroPipeline

    parts = dict(transformer=tiny_pipe.transformer, scheduler=tiny_pipe.scheduler,
                 text_encoder_config=tiny_pipe.config.text_encoder_config,
                 autoencoder_config=tiny_pipe.config.autoencoder_config, text_encoder=tiny_pipe.text_encoder)  # fmt: skip
    pipe = MiroPipeline(**parts, recommended_reward_targets={"sharpness": 0.25, "pickscore": 0.75})
    assert pipe.recommended_reward_targets == {"sharpness": 0.25, "pickscore": 0.75}
    pipe.save_pretrained(tmp_path / "p")
    assert MiroPipeline.from_pretrained(tmp_path / "p").recommended_reward_targets == {
        "sharpness": 0.25,
        "pickscore": 0.75,
    }
    assert MiroPipeline(**parts).recommended_reward_targets is None
    assert pipe.recommended_negative_reward_targets is None  # frees nothing
    # a reward recommended free (None) stays free through save and load, and is free in the negative branch too
    free = MiroPipeline(**parts, recommended_reward_targets={"sharpness": 0.25, "pickscore": None})
    free.save_pretrained(tmp_path / "f")
    from unittest import mock

    from diffusers.pipelines import pipeline_utils

    with mock.patch.object(pipeline_utils.logger, "warning") as warned:  # diffusers type-checks the loaded value
        loaded = MiroPipeline.from_pretrained(tmp_path / "f")
    assert not [c for c in warned.call_args_list if "Expected types" in str(c)], warned.call_args_list
    assert loaded.recommended_reward_targets == {"sharpness": 0.25, "pickscore": None}
    assert loaded.recommended_negative_reward_targets == {"pickscore": None}
    with pytest.raises(ValueError, match="must be in \\[0, 1\\]"):
        MiroPipeline(**parts, recommended_reward_targets={"sharpness": 1.5})
    with pytest.raises(ValueError, match="nope"):
        MiroPipeline(**parts, recommended_reward_targets={"nope": 0.5})
