"""Reference outputs of the MIRO authors' RIN, written by THEIR code (``miro-t2i``) in its own process.

Run only through ``tests/models/miro_t2i_reference.py`` (``run_reference``): ``python -P`` with
``PYTHONPATH=<the --target folder of miro-t2i>`` and a working directory outside this repository, because
their top-level package is also named ``miro``.  Imports nothing of this project (nor pytest).

For each variant it builds their ``CADRINTextCond`` and ``FlowPrecond`` at a tiny size, perturbs every float
parameter (so zero-initialised norms and layer scales matter), writes a folder in their checkpoint layout
(``config.json``, ``model.safetensors``, ``uncond_embedding.npy``, as their ``MiroPipeline.from_pretrained``
reads it) and ``<variant>.npz`` with the inputs and fp32 outputs of these calls (``eval()``):

* ``net_selfcond``: the bare network, all rewards given, random previous latents;
* ``net_dropped``: the bare network, no previous latents, one reward key missing and one NaN value;
* ``precond``: ``FlowPrecond(network, batch, return_logvar=True)`` without previous latents (it fills zeros);
* ``precond_chain``: a second FlowPrecond call fed the latents of ``precond``, as their sampler does.

Then their whole pipeline (``pipeline_reference``): a tiny random FLAN-T5 stand-in (``t5/``: T5Tokenizer files
and ``T5EncoderModel.save_pretrained``) and a tiny random SDXL-VAE stand-in written into a Hugging Face cache
(``hub/models--stabilityai--sdxl-vae``, where their ``from_pretrained`` looks for it; ``HF_HUB_CACHE`` and
``HF_HUB_OFFLINE=1`` are set by the caller), a checkpoint folder ``pipeline/`` in their layout (the ``main``
network at its root, the ``legacy`` one as variant ``legacy/``), and for each call of ``PIPELINE_CALLS`` their
``MiroPipeline.from_pretrained(...)(...)`` run unchanged, recorded with hooks into ``pipeline.npz``: the
initial noise, every network evaluation (input x, gamma, previous latents, output F and latents, both guidance
branches stacked as they stack them), every step's guided velocity (``Sampler.process_step``), the final
latents (``flow_euler_sampler``'s result), the decoded float images and their uint8 images.
``pipeline_calls.json`` holds the calls' arguments, for the test to replay.

Usage: ``python -P miro_t2i_rin_script.py OUT_DIR PACKAGE_DIR``.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

OUT, PACKAGE = Path(sys.argv[1]), Path(sys.argv[2]).resolve()

import miro  # noqa: E402  (theirs: checked just below)

if not Path(miro.__file__).resolve().is_relative_to(PACKAGE):
    raise SystemExit(f"imported the wrong 'miro' package: {miro.__file__} (expected one under {PACKAGE})")

from miro.models.networks.rin import CADRINTextCond  # noqa: E402
from miro.models.postprocessing import VAEPostProcessing  # noqa: E402
from miro.models.preconditioning import FlowPrecond  # noqa: E402
from miro.models.preprocessing import PrecomputedSDLatentPreconditioning  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

T5_WORDS = ["<pad>", "</s>", "<unk>", "\u2581a", "\u2581red", "\u2581green", "\u2581apple", "\u2581blue",
            "\u2581car", "\u2581two", "\u2581stars"]  # fmt: skip
#: Their pipeline's calls: (name, from_pretrained keywords, call keywords); the seed makes the generator.
PIPELINE_CALLS = [
    ("default", {}, {"prompt": ["a red apple", "two blue stars a red car apple"], "num_inference_steps": 4,
                     "seed": 0}),
    ("explicit", {}, {"prompt": "green car", "num_inference_steps": 5, "guidance_scale": 3.5,
                      "num_images_per_prompt": 2, "seed": 1,
                      "reward_targets": {"clip_score": 0.8, "hpsv2_score": 0.25},
                      "negative_reward_targets": {"aesthetic_score": 0.6, "hpsv2_score": 0.9}}),
    ("unguided", {}, {"prompt": ["two stars"], "num_inference_steps": 3, "guidance_scale": 0.0, "seed": 2}),
    ("negative_scale", {}, {"prompt": ["a blue car"], "num_inference_steps": 3, "guidance_scale": -2.0,
                            "seed": 3}),
    ("legacy", {"variant": "legacy"}, {"prompt": ["a red car", "apple"], "num_inference_steps": 3,
                                       "guidance_scale": 2.0, "seed": 4}),
]  # fmt: skip

KEYS = ["clip_score", "aesthetic_score", "hpsv2_score"]
COMMON = dict(
    data_size=8,
    data_dim=32,
    num_input_channels=4,
    latents_dim=64,
    label_dim=24,
    num_processing_layers=2,
    num_blocks=2,
    patch_size=2,
    read_write_heads=4,
    compute_heads=4,
    latent_mlp_multiplier=4,
    data_mlp_multiplier=4,
    num_text_registers=3,
    coherence_keys=KEYS,
    coherence_dropout=0.1,
    dropout_strategy="binomial",
)
VARIANTS = {
    # the released models (multi_cad): condition cross-attention, latents + time, self-conditioning
    "main": dict(
        COMMON,
        num_latents=8,
        num_cond_tokens=5,
        use_cond_rin_block=True,
        concat_cond_token_to_latents=False,
        use_self_conditioning=True,
    ),
    # the legacy defaults (single-reward YAMLs): condition tokens concatenated to the latents
    "legacy": dict(
        COMMON,
        num_latents=16,
        num_cond_tokens=6,
        use_cond_rin_block=False,
        concat_cond_token_to_latents=True,
        use_self_conditioning=False,
    ),
}
B, L = 3, 5


def inputs(g, net_kwargs, rewards):
    text_mask = torch.ones(B, L, dtype=torch.bool)
    text_mask[0, 2:] = False
    text_mask[1, 4:] = False
    batch = {
        "y": torch.randn(B, 4, 8, 8, generator=g),
        "gamma": torch.rand(B, generator=g) * 0.98 + 0.01,
        "text_tokens_embeddings": torch.randn(B, L, net_kwargs["label_dim"], generator=g),
        "text_tokens_mask": text_mask,
    }
    batch.update({f"{k}_coherence": v for k, v in rewards.items()})
    return batch


def record(arrays, case, batch, outputs):
    for key, value in batch.items():
        if value is None:
            continue
        name = key[: -len("_coherence")] if key.endswith("_coherence") else key
        prefix = "reward." if key.endswith("_coherence") else ""
        arrays[f"{case}/in/{prefix}{name}"] = value.detach().numpy()
    for key, value in outputs.items():
        arrays[f"{case}/out/{key}"] = value.detach().float().numpy()


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for variant, net_kwargs in VARIANTS.items():
        torch.manual_seed(0)
        network = CADRINTextCond(**net_kwargs)
        pre_kwargs = dict(
            num_latents=net_kwargs["num_latents"],
            latents_dim=net_kwargs["latents_dim"],
            do_normalization="noise_driven",
            sigma_data=0.5,
            do_gradnorm_reweighting=True,
            logvar_channels=16,
            logvar_mlp_layers=0,
        )
        precond = FlowPrecond(**pre_kwargs)
        data_pre = PrecomputedSDLatentPreconditioning(channel_wise_normalisation=True)
        post = VAEPostProcessing(channel_wise_normalisation=True)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for module in (network, precond):
                for p in module.parameters():
                    if p.is_floating_point():
                        p.add_(0.1 * torch.randn(p.shape, generator=g))
        network.eval()
        precond.eval()

        folder = OUT / variant
        folder.mkdir(exist_ok=True)
        state = {}
        for prefix, module in (
            ("network", network),
            ("preconditioning", precond),
            ("data_preprocessing", data_pre),
            ("postprocessing", post),
        ):
            state.update({f"{prefix}.{k}": v.detach().contiguous() for k, v in module.state_dict().items()})
        save_file(state, str(folder / "model.safetensors"))
        config = {
            "network": net_kwargs,
            "preconditioning": pre_kwargs,
            "data_preprocessing": {"channel_wise_normalisation": True},
            "postprocessing": {"channel_wise_normalisation": True},
            "scheduler": {"start": 1, "end": 0, "clip_min": 1e-9},
            "data_resolution": 8,
            "max_text_len": L,
            "coherence_keys": KEYS,
        }
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        np.save(folder / "uncond_embedding.npy", torch.randn(1, net_kwargs["label_dim"], generator=g).numpy())

        arrays = {}
        full = {k: torch.rand(B, generator=g) for k in KEYS}
        with torch.no_grad():
            batch = inputs(g, net_kwargs, full)
            num_z = network.num_learned_latents + (
                1 + len(KEYS) + net_kwargs["num_text_registers"] + L
                if net_kwargs["concat_cond_token_to_latents"]
                else 0
            )
            batch["previous_latents"] = torch.randn(B, num_z, net_kwargs["latents_dim"], generator=g)
            x, z = network(dict(batch))
            record(arrays, "net_selfcond", batch, {"x": x, "z": z})

            dropped = {KEYS[0]: full[KEYS[0]].clone(), KEYS[2]: full[KEYS[2]].clone()}  # KEYS[1] missing
            dropped[KEYS[2]][1] = float("nan")
            batch = inputs(g, net_kwargs, dropped)
            x, z = network(dict(batch))
            record(arrays, "net_dropped", batch, {"x": x, "z": z})

            batch = inputs(g, net_kwargs, full)
            recorded = dict(batch)
            f, z, logvar = precond(network, dict(batch), return_logvar=True)
            record(arrays, "precond", recorded, {"x": f, "z": z, "logvar": logvar.flatten()})

            batch["gamma"] = torch.rand(B, generator=g) * 0.98 + 0.01
            batch["previous_latents"] = z
            recorded = dict(batch)
            f, z = precond(network, dict(batch))
            record(arrays, "precond_chain", recorded, {"x": f, "z": z})
        np.savez(OUT / f"{variant}.npz", **arrays)
    print(f"wrote {sorted(VARIANTS)} to {OUT} with miro-t2i from {Path(miro.__file__).parent}")


def save_tiny_t5(path, dim):
    """A T5 encoder of width ``dim`` over a 11-word Unigram vocabulary, in transformers' on-disk format."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import T5Config, T5EncoderModel

    vocab = [(w, 0.0 if i < 3 else -float(i)) for i, w in enumerate(T5_WORDS)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "T5Tokenizer", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>",
        "model_max_length": 512, "extra_ids": 0,
    }))  # fmt: skip
    cfg = T5Config(vocab_size=len(T5_WORDS), d_model=dim, d_kv=4, d_ff=32, num_layers=2, num_heads=4,
                   feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1)  # fmt: skip
    torch.manual_seed(5)
    T5EncoderModel(cfg).save_pretrained(path)


def save_tiny_sdxl_vae_in_hub_cache(hub):
    """A 2-level AutoencoderKL (4 latent channels, /2) as ``stabilityai/sdxl-vae`` in an HF cache folder."""
    from diffusers import AutoencoderKL

    torch.manual_seed(6)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
        norm_num_groups=4, sample_size=16, scaling_factor=0.13025,
    )  # fmt: skip
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    commit = "0" * 40
    repo = hub / "models--stabilityai--sdxl-vae"
    vae.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)


class Recorder:
    """Hooks on their pipeline that record one call (see the module docstring)."""

    def __init__(self, pipe):
        import miro.pipeline as pipeline_module
        from miro.models.sampler import Sampler

        self.rec = None
        self.evals = []
        pipe.preconditioning.register_forward_pre_hook(self.pre)
        pipe.preconditioning.register_forward_hook(self.post)
        if not hasattr(Sampler, "_recorded"):
            process_step, euler = Sampler.process_step, pipeline_module.flow_euler_sampler

            def recorded_step(sampler, *args, **kwargs):
                out = process_step(sampler, *args, **kwargs)
                Recorder.current.rec["v"].append(out[0].detach().clone())
                return out

            def recorded_sampler(*args, **kwargs):
                out = euler(*args, **kwargs)
                Recorder.current.rec["final"] = out.detach().clone()
                return out

            Sampler.process_step, Sampler._recorded = recorded_step, True
            pipeline_module.flow_euler_sampler = recorded_sampler

    def start(self):
        Recorder.current = self
        self.rec = {"v": [], "x": [], "gamma": [], "prev": [], "F": [], "z": []}

    def pre(self, module, args):
        batch = args[1]
        self.rec["x"].append(batch["y"].detach().clone())
        self.rec["gamma"].append(batch["gamma"].detach().clone())
        prev = batch.get("previous_latents")
        self.rec["prev"].append(None if prev is None else prev.detach().clone())

    def post(self, module, args, output):
        self.rec["F"].append(output[0].detach().clone())
        self.rec["z"].append(output[1].detach().clone())


def pipeline_reference():
    from miro import MiroPipeline

    save_tiny_t5(OUT / "t5", VARIANTS["main"]["label_dim"])  # both variants have the same label_dim
    save_tiny_sdxl_vae_in_hub_cache(OUT / "hub")
    from transformers import AutoTokenizer, T5EncoderModel

    tok = AutoTokenizer.from_pretrained(str(OUT / "t5"))
    t5 = T5EncoderModel.from_pretrained(str(OUT / "t5")).eval()
    with torch.no_grad():  # their uncond_embedding.npy: the empty prompt's tokens (one EOS), [1, D]
        ids = tok([""], return_tensors="pt")
        uncond = t5(**ids).last_hidden_state[0].numpy()
    root = OUT / "pipeline"
    for src, dst in ((OUT / "main", root), (OUT / "legacy", root / "legacy")):
        dst.mkdir(parents=True, exist_ok=True)
        config = json.loads((src / "config.json").read_text())
        (dst / "config.json").write_text(json.dumps(config, indent=2))
        (dst / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes())
        np.save(dst / "uncond_embedding.npy", uncond)

    arrays, calls = {}, []
    pipes = {}
    for name, load_kwargs, call_kwargs in PIPELINE_CALLS:
        key = json.dumps(load_kwargs, sort_keys=True)
        if key not in pipes:
            pipe = MiroPipeline.from_pretrained(str(root), text_encoder=str(OUT / "t5"), **load_kwargs)
            pipes[key] = (pipe, Recorder(pipe))
        pipe, recorder = pipes[key]
        kwargs = dict(call_kwargs)
        seed = kwargs.pop("seed")
        recorder.start()
        images = pipe(**kwargs, generator=torch.Generator().manual_seed(seed), output_type="numpy")
        rec = recorder.rec
        post = pipe.postprocessing
        with torch.no_grad():
            decoded = post.vae.decode((rec["final"] - post.bias) / post.scale).sample
        b = rec["final"].shape[0]
        out = {
            "noise": rec["x"][0][:b], "final": rec["final"], "decoded": decoded,
            "images": torch.from_numpy(np.ascontiguousarray(images)),
            "v": torch.stack(rec["v"]), "gamma": torch.stack([g[0] for g in rec["gamma"]]),
            "x": torch.stack([x[:b] for x in rec["x"]]), "F": torch.stack(rec["F"]), "z": torch.stack(rec["z"]),
        }  # fmt: skip
        for k, v in out.items():
            arrays[f"{name}/{k}"] = v.numpy()
        arrays[f"{name}/prev_is_none"] = np.array([p is None for p in rec["prev"]])
        calls.append({"name": name, "load": load_kwargs, "call": call_kwargs})
    np.savez(OUT / "pipeline.npz", **arrays)
    (OUT / "pipeline_calls.json").write_text(json.dumps(calls, indent=2))
    print(f"wrote their pipeline's {len(calls)} calls to {OUT / 'pipeline.npz'}")


main()
pipeline_reference()
