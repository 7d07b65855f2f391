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


main()
