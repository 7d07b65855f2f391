"""MiroRINPipeline: the authors' documented usage on checkpoints in their layout, without their package.

Everything is on disk as a user has it: a tiny random checkpoint in their layout (written from our model with
``rin_state_dict_to_authors``; the parity test checks that function against their file), a tiny random T5 in
transformers' format and a tiny random ``AutoencoderKL`` from ``save_pretrained``, either as folders or inside
a Hugging Face cache under the names their pipeline uses (``google/flan-t5-xl``, ``stabilityai/sdxl-vae``,
``nicolas-dufour/miro``).  No loader is mocked.  Parity with their pipeline: ``test_rin_pipeline_parity.py``.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import save_file

from miro.models.rin import (
    AuthorsCheckpointError,
    MiroRIN,
    rin_config_from_authors,
    rin_state_dict_to_authors,
)
from miro.sampling.pipeline import MiroPipeline
from miro.sampling.rin_pipeline import COHERENCE_KEYS, MiroRINPipeline
from miro.utils.weights import WeightsNotFoundError
from tests.models.helpers import randomize_, save_tiny_t5, save_tiny_vae

KEYS = ["clip_score", "aesthetic_score", "hpsv2_score"]
NET = dict(
    data_size=4, data_dim=16, num_input_channels=4, num_latents=4, latents_dim=32, label_dim=16,
    num_processing_layers=1, num_blocks=1, patch_size=2, num_cond_tokens=4, read_write_heads=2,
    compute_heads=2, latent_mlp_multiplier=1, data_mlp_multiplier=1, use_cond_rin_block=True,
    concat_cond_token_to_latents=False, use_self_conditioning=True, num_text_registers=2,
)  # fmt: skip
PRE = dict(num_latents=4, latents_dim=32, do_normalization="noise_driven", sigma_data=0.5, logvar_channels=8)
COMMIT = "0" * 40


def write_checkpoint(folder, keys, t5_folder, seed=0):
    """A folder in the authors' layout (their config.json keys, VAE buffers in the safetensors file)."""
    from transformers import AutoTokenizer, T5EncoderModel

    config = {
        "network": dict(NET, coherence_keys=keys), "preconditioning": PRE,
        "data_preprocessing": {"channel_wise_normalisation": True},
        "postprocessing": {"channel_wise_normalisation": True},
        "scheduler": {"start": 1, "end": 0, "clip_min": 1e-9}, "data_resolution": 4, "max_text_len": 4,
        "coherence_keys": keys,
    }  # fmt: skip
    torch.manual_seed(seed)
    model = randomize_(MiroRIN(**rin_config_from_authors(config)), seed=seed, std=0.1)
    state = rin_state_dict_to_authors(model)
    scale = (0.5 / torch.tensor([7.8518, 5.8465, 6.8716, 5.3140])).view(1, 4, 1, 1)
    state["postprocessing.scale"] = scale
    state["postprocessing.bias"] = -torch.tensor([-0.3480, 0.3754, 0.0419, 2.4331]).view(1, 4, 1, 1) * scale
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file(state, str(folder / "model.safetensors"))
    tok, t5 = AutoTokenizer.from_pretrained(t5_folder), T5EncoderModel.from_pretrained(t5_folder)
    with torch.no_grad():
        np.save(
            folder / "uncond_embedding.npy", t5(**tok([""], return_tensors="pt")).last_hidden_state[0].numpy()
        )


def put_in_hub_cache(hub, repo_id, folder):
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)


@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    """``t5/``, ``vae/``, ``repo/`` (variants ``multi`` and ``no_clip``), ``single/`` (one model at the root)
    and ``hub/``: an HF cache holding them under the names of the authors' pipeline."""
    root = tmp_path_factory.mktemp("rin_pipeline")
    save_tiny_t5(root / "t5", d_model=16)
    save_tiny_vae(root / "vae")
    write_checkpoint(root / "repo" / "multi", KEYS, root / "t5", seed=1)
    write_checkpoint(root / "repo" / "no_clip", KEYS[1:], root / "t5", seed=2)
    shutil.copytree(root / "repo" / "multi", root / "single")
    hub = root / "hub"
    put_in_hub_cache(hub, "google/flan-t5-xl", root / "t5")
    put_in_hub_cache(hub, "stabilityai/sdxl-vae", root / "vae")
    put_in_hub_cache(hub, "nicolas-dufour/miro", root / "single")
    put_in_hub_cache(hub, "nicolas-dufour/miro-ablations", root / "repo")
    return root


def local(disk, **kwargs):
    kwargs.setdefault("text_encoder", str(disk / "t5"))
    kwargs.setdefault("vae", str(disk / "vae"))
    return MiroRINPipeline.from_pretrained(disk / "single", **kwargs)


def test_their_readme_usage_from_the_hf_cache(disk, caplog):
    """``MiroPipeline.from_pretrained("nicolas-dufour/miro")`` with the default T5 and VAE names, all found in
    the HF cache, T5 loaded only on the first call; editing a dict built from ``coherence_keys``."""
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        pipe = MiroPipeline.from_pretrained(
            "nicolas-dufour/miro", cache_dir=str(disk / "hub"), torch_dtype=torch.float32
        )
    said = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert not [m for m in said if "dtype" in m], said
    assert isinstance(pipe, MiroRINPipeline) and pipe.text_encoder is None  # lazy, as theirs
    assert MiroPipeline.COHERENCE_KEYS == COHERENCE_KEYS == MiroRINPipeline.COHERENCE_KEYS
    assert set(COHERENCE_KEYS) >= {"vqa_score", "sciscore_score"} and len(COHERENCE_KEYS) == 7
    assert pipe.coherence_keys == tuple(KEYS)
    targets = {k: 1.0 for k in pipe.coherence_keys}
    targets["aesthetic_score"] = 0.625
    images = pipe("a red apple", reward_targets=targets, num_inference_steps=3)
    assert pipe.text_encoder is not None
    assert len(images) == 1 and isinstance(images[0], PIL.Image.Image) and images[0].size == (8, 8)
    assert pipe.tokenizer("a red apple")["input_ids"] == [3, 4, 6, 1]


def test_variants_and_their_messages(disk):
    with pytest.raises(AuthorsCheckpointError, match=r"pass variant= one of \['multi', 'no_clip'\]"):
        MiroPipeline.from_pretrained(repo_id_or_path=str(disk / "repo"), vae=str(disk / "vae"))
    with pytest.raises(
        AuthorsCheckpointError, match=r"no variant 'nope'; variants found: \['multi', 'no_clip'\]"
    ):
        MiroRINPipeline.from_pretrained(disk / "repo", variant="nope", vae=str(disk / "vae"))
    hub = str(disk / "hub")  # the same messages for a cached hub repository of variants
    with pytest.raises(AuthorsCheckpointError, match=r"pass variant= one of \['multi', 'no_clip'\]"):
        MiroPipeline.from_pretrained("nicolas-dufour/miro-ablations", cache_dir=hub)
    with pytest.raises(
        AuthorsCheckpointError, match=r"no variant 'nope'; variants found: \['multi', 'no_clip'\]"
    ):
        MiroPipeline.from_pretrained("nicolas-dufour/miro-ablations", variant="nope", cache_dir=hub)
    pipe = MiroPipeline.from_pretrained(
        repo_id_or_path="nicolas-dufour/miro-ablations", variant="no_clip", cache_dir=hub
    )
    assert pipe.coherence_keys == tuple(KEYS[1:])
    with pytest.raises(ValueError, match=r"'clip_score', which this model was not trained with; allowed: "):
        pipe("a car", reward_targets={"clip_score": 1.0}, num_inference_steps=1)
    with pytest.raises(ValueError, match="'vqa_score', which this model was not trained with"):
        pipe("a car", negative_reward_targets={"vqa_score": 0.0}, num_inference_steps=1)
    with pytest.raises(TypeError, match="once"):
        MiroPipeline.from_pretrained(disk / "single", repo_id_or_path=disk / "single")
    with pytest.raises(TypeError, match=r"unknown keywords \['use_safetensors'\]"):
        MiroPipeline.from_pretrained(disk / "single", use_safetensors=True)


def test_module_api_as_their_nn_module(disk):
    pipe = local(disk)
    assert isinstance(pipe.network, MiroRIN) and pipe.eval() is pipe and not pipe.network.training
    n_net = sum(p.numel() for p in pipe.network.parameters())
    n_vae = sum(p.numel() for p in pipe.vae.parameters())
    assert sum(p.numel() for p in pipe.parameters()) == n_net + n_vae
    keys = pipe.state_dict().keys()
    assert any(k.startswith("network.") for k in keys) and any(k.startswith("vae.") for k in keys)
    pipe("a red apple", num_inference_steps=1)  # loads T5: it joins the module, as in theirs
    assert any(k.startswith("text_encoder.") for k in pipe.state_dict())
    pipe.to(torch.bfloat16)
    assert pipe.network.dtype == torch.bfloat16 and pipe.vae.dtype == torch.float32


def test_torch_dtype_bf16_runs_on_the_cpu_without_warnings(disk, caplog):
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        pipe = local(disk, torch_dtype=torch.bfloat16)
        low = pipe(
            "a red apple",
            num_inference_steps=3,
            generator=torch.Generator().manual_seed(0),
            output_type="latent",
        )
    said = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert not [m for m in said if "dtype" in m], said
    assert pipe.network.dtype == torch.bfloat16 and low.dtype == torch.float32
    ref = local(disk)(
        "a red apple", num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="latent"
    )
    assert 0 < (low - ref).abs().max() < 0.25 * ref.abs().max()


@pytest.mark.slow
def test_compiled_network_with_freezing_samples_the_same(disk):
    """docs/rin.md's CPU recipe for speed (inductor's freezing, then ``pipe.network.compile()``) changes the
    kernels, not the sampler: the same latents as the eager network, to float rounding."""
    import torch._inductor.config as inductor_config

    def call(pipe):
        return pipe("a red apple", num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                    output_type="latent")  # fmt: skip

    ref = call(local(disk))
    pipe = local(disk)
    pipe.network.compile()
    with inductor_config.patch(freezing=True):  # read when the first call compiles
        out = call(pipe)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_arguments_are_named_with_what_is_allowed(disk):
    pipe = local(disk)
    cases = [
        (dict(prompt=None), ValueError, r"prompt=None \(NoneType\): must be a string or a non-empty list"),
        (dict(prompt=3), ValueError, r"prompt=3 \(int\)"),
        (dict(prompt=[]), ValueError, r"prompt=\[\]"),
        (dict(num_inference_steps=4.0), ValueError, r"num_inference_steps=4.0 \(float\): must be >= 1, an int"),
        (dict(num_inference_steps=0), ValueError, r"num_inference_steps=0"),
        (dict(num_images_per_prompt=0), ValueError, r"num_images_per_prompt=0"),
        (dict(generator=3), TypeError, r"generator=3 \(int\): must be a torch.Generator or None; for a seed, "
                                       r"pass torch.Generator\(\).manual_seed\(3\)"),
        (dict(guidance_scale=float("nan")), ValueError, r"guidance_scale=nan: must be a finite number"),
        (dict(output_type="pt"), ValueError, r"output_type='pt': must be one of \['pil', 'numpy', 'latent'\]"),
        (dict(reward_targets={"aesthetic_score": 1.5}), ValueError, r"must be in \[0, 1\]"),
        (dict(mixed_precision="fp8"), ValueError, r"mixed_precision='fp8'"),
    ]  # fmt: skip
    for kwargs, error, message in cases:
        kwargs = {"prompt": "a red apple", "num_inference_steps": 1, **kwargs}
        with pytest.raises(error, match=message):
            pipe(**kwargs)
    with pytest.raises(TypeError, match="torch_dtype='bf16': must be a torch.dtype"):
        local(disk, torch_dtype="bf16")
    with pytest.raises(WeightsNotFoundError, match="SDXL VAE: no folder at .*nowhere.* \\(from vae\\)"):
        local(disk, vae=str(disk / "nowhere"))
    lazy = local(disk, text_encoder=str(disk / "no_t5"))  # T5 is read on the first call, as theirs
    with pytest.raises(
        WeightsNotFoundError, match="FLAN-T5 .*no folder at .*no_t5.* \\(from text_encoder\\)"
    ):
        lazy("a red apple", num_inference_steps=1)


def test_guidance_targets_and_seeds_change_what_they_should(disk):
    pipe = local(disk)

    def run(**kwargs):
        kwargs = {"prompt": ["a red apple", "two blue stars"], "num_inference_steps": 3, "output_type": "latent",
                  "generator": torch.Generator().manual_seed(0), **kwargs}  # fmt: skip
        return pipe(**kwargs)

    base = run()
    assert base.shape == (2, 4, 4, 4) and torch.equal(base, run())  # the generator fixes the noise
    assert (base - run(guidance_scale=0.0)).abs().max() > 1e-3
    assert (base - run(reward_targets={"aesthetic_score": 0.0})).abs().max() > 1e-3
    assert (base - run(negative_reward_targets={"hpsv2_score": 1.0})).abs().max() > 1e-3
    with pytest.warns(UserWarning, match=r"guidance_scale=-1.0 < 0 samples without guidance"):
        negative = run(guidance_scale=-1.0)
    assert torch.equal(negative, run(guidance_scale=0.0))  # theirs: a scale <= 0 is no guidance
    two = run(num_images_per_prompt=2, generator=torch.Generator().manual_seed(1))
    assert two.shape == (4, 4, 4, 4) and (two[0] - two[1]).abs().max() > 1e-3
    images = run(output_type="numpy")
    assert images.dtype == np.uint8 and images.shape == (2, 8, 8, 3)
