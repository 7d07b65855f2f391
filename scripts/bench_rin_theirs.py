"""The authors' side of ``scripts/bench_rin.py``: THEIR sampler on THEIR network, driven over stdin.

Run only by ``bench_rin.py`` with ``python -P``, ``PYTHONPATH=<miro-t2i's --target folder>`` and a working
directory outside this repository (their top-level package is also named ``miro``); it imports nothing of
this project.  Usage: ``python -P bench_rin_theirs.py FOLDER INPUTS.npz DEVICE``.

It builds ``CADRINTextCond`` + ``FlowPrecond`` from ``FOLDER/config.json`` and loads ``model.safetensors``
as their ``MiroPipeline.from_pretrained`` does, then answers one line per command:

* ``run STEPS GUIDANCE DTYPE``: times one ``flow_euler_sampler`` call (their pipeline's arguments: the text
  tokens and the empty prompt's tokens, all targets 1.0 / 0.0) and prints ``seconds``;
  DTYPE ``float32`` or ``bfloat16`` (their ``sampling_dtype``: autocast, which their sampler opens for CUDA
  only) or ``cast-bfloat16`` (the network cast to bf16, as ``pipe.to(dtype=torch.bfloat16)`` does);
* ``save PATH``: writes the last run's final state to PATH (``.npy``), for the parity check;
* ``quit``.  An error prints ``error <message>`` instead of the time.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

FOLDER, INPUTS, DEVICE = Path(sys.argv[1]), Path(sys.argv[2]), torch.device(sys.argv[3])

from miro.models.networks.rin import CADRINTextCond  # noqa: E402
from miro.models.preconditioning import FlowPrecond  # noqa: E402
from miro.models.sampler import flow_euler_sampler  # noqa: E402
from miro.models.scheduler import LinearScheduler  # noqa: E402
from safetensors.torch import load_file  # noqa: E402


def strip(state, prefix):
    return {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}


def main():
    config = json.loads((FOLDER / "config.json").read_text())
    network = CADRINTextCond(**config["network"])
    precond = FlowPrecond(**config["preconditioning"])
    state = load_file(str(FOLDER / "model.safetensors"))
    network.load_state_dict(strip(state, "network"), strict=True)
    precond.load_state_dict(strip(state, "preconditioning"), strict=True)
    network.eval().to(DEVICE)
    precond.eval().to(DEVICE)
    arrays = np.load(INPUTS)
    noise = torch.from_numpy(arrays["noise"]).to(DEVICE)
    text = torch.from_numpy(arrays["text"]).to(DEVICE)
    mask = torch.from_numpy(arrays["text_mask"]).to(DEVICE)
    uncond = torch.from_numpy(arrays["uncond"]).to(DEVICE)
    b = noise.shape[0]
    keys = [f"{k}_coherence" for k in config["coherence_keys"]]
    last = None
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        if cmd[0] == "save":
            np.save(cmd[1], last.float().cpu().numpy())
            print("saved", flush=True)
            continue
        steps, guidance, dtype = int(cmd[1]), float(cmd[2]), cmd[3]
        try:
            if dtype == "cast-bfloat16":
                network.to(torch.bfloat16)
                precond.to(torch.bfloat16)
                sampling_dtype = torch.float32
            else:
                network.float()
                precond.float()
                sampling_dtype = getattr(torch, dtype)
            batch = {"y": noise.clone(), "previous_latents": None, "text_tokens_embeddings": text.clone(),
                     "text_tokens_mask": mask.clone()}  # fmt: skip
            batch.update({k: torch.ones(b, device=DEVICE) for k in keys})
            uncond_tokens = {"text_tokens_embeddings": uncond[None].expand(b, -1, -1).contiguous(),
                             "text_tokens_mask": torch.ones(b, uncond.shape[0], dtype=torch.bool, device=DEVICE)}  # fmt: skip
            if DEVICE.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.inference_mode():
                last = flow_euler_sampler(
                    lambda bb: precond(network, bb), batch, num_steps=steps,
                    scheduler=LinearScheduler(**config.get("scheduler", {})), conditioning_keys=["text_tokens"],
                    uncond_tokens=uncond_tokens, cfg_rate=guidance, coherence_keys=keys,
                    coherence_values={k: 1.0 for k in keys}, uncoherence_values={k: 0.0 for k in keys},
                    sigma_data=0.5, data_mean=0.5, data_std=0.5, sampling_dtype=sampling_dtype,
                )  # fmt: skip
            if DEVICE.type == "cuda":
                torch.cuda.synchronize()
            print(f"{time.perf_counter() - start:.6f}", flush=True)
        except Exception as err:  # noqa: BLE001 - reported to the driver, which prints it in the table
            print(f"error {type(err).__name__}: {str(err).splitlines()[0][:200]}", flush=True)


main()
