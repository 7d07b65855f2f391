"""One guided sampling step of the authors' RIN: our sampler against THEIR ``flow_euler_sampler``, side by side.

Both sample the same random checkpoint in their layout from the same noise, text tokens and empty-prompt
tokens, with their pipeline's joint guidance (w = 7, targets 1.0 / 0.0).  Theirs is ``miro-t2i`` 0.1.4 in a
subprocess (``scripts/bench_rin_theirs.py``; their package is also named ``miro``), installed by
``tests/models/miro_t2i_reference.ensure_miro_t2i``; the runs alternate (theirs, ours, ours without the
condition cache, theirs, ...), each timing a whole ``--steps``-step run, and the table gives the median
time per guided step (two network evaluations per image) and the ratio.  The first run of each side is a
warm-up and the parity check: the final states must agree (fp32: to 1e-4).

    PYTHONPATH=. python scripts/bench_rin.py                              # small model, CPU, fp32 and bf16
    PYTHONPATH=. python scripts/bench_rin.py --size released --steps 2 --repeats 3
    PYTHONPATH=. python scripts/bench_rin.py --device cuda --size released --batch 4

dtypes: ``float32`` (both fp32; on CUDA their pipeline would autocast to bf16, here their sampler is told
fp32) and ``bfloat16``: ours with bf16 weights; theirs with their sampler's bf16 autocast (which they open
for ``device_type="cuda"`` only, so on the CPU it runs fp32) and, as a second row, with the network cast to
bf16 as their ``pipe.to(dtype=torch.bfloat16)`` does (on the CPU their network then fails: it casts the text
tokens to fp32).  Where a side cannot run, the row says why.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from miro.models.rin import MiroRIN, cast_dtype, rin_config_from_authors, rin_state_dict_to_authors
from miro.sampling.guidance import Guidance
from miro.sampling.rin import authors_gammas, sample_rin
from miro.sampling.sampler import Conditions
from miro.train.config import COMPILE_MODES

THEIRS = Path(__file__).with_name("bench_rin_theirs.py")
KEYS = ["clip_score", "aesthetic_score", "image_reward_score", "pick_a_score_score", "hpsv2_score",
        "vqa_score", "sciscore_score"]  # fmt: skip
#: ``network`` entries of their config.json; ``released`` is their multi_cad model (360M parameters).
SIZES = {
    "tiny": dict(data_size=8, data_dim=32, num_latents=8, latents_dim=64, label_dim=64, num_processing_layers=2,
                 num_blocks=2, read_write_heads=4, compute_heads=4, num_text_registers=4, num_cond_tokens=8),
    "small": dict(data_size=32, data_dim=256, num_latents=128, latents_dim=512, label_dim=2048,
                  num_processing_layers=2, num_blocks=2, read_write_heads=8, compute_heads=16,
                  num_text_registers=16, num_cond_tokens=77),
    "released": dict(data_size=32, data_dim=512, num_latents=256, latents_dim=1024, label_dim=2048,
                     num_processing_layers=4, num_blocks=4, read_write_heads=16, compute_heads=32,
                     num_text_registers=16, num_cond_tokens=77),
}  # fmt: skip
COMMON = dict(num_input_channels=4, patch_size=2, latent_mlp_multiplier=4, data_mlp_multiplier=4,
              use_cond_rin_block=True, concat_cond_token_to_latents=False, use_self_conditioning=True,
              coherence_keys=KEYS)  # fmt: skip


def write_checkpoint(folder: Path, size: str, seed: int = 0) -> tuple[MiroRIN, dict]:
    net = dict(COMMON, **SIZES[size])
    pre = dict(num_latents=net["num_latents"], latents_dim=net["latents_dim"], do_normalization="noise_driven",
               sigma_data=0.5, do_gradnorm_reweighting=True, logvar_channels=128)  # fmt: skip
    config = {"network": net, "preconditioning": pre, "scheduler": {"start": 1, "end": 0, "clip_min": 1e-9},
              "data_resolution": net["data_size"], "max_text_len": net["num_cond_tokens"], "coherence_keys": KEYS}  # fmt: skip
    torch.manual_seed(seed)
    model = MiroRIN(**rin_config_from_authors(config)).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file(rin_state_dict_to_authors(model), str(folder / "model.safetensors"))
    return model, config


def make_inputs(config: dict, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    net = config["network"]
    g = torch.Generator().manual_seed(seed)
    length = net["num_cond_tokens"]
    mask = torch.arange(length)[None] < torch.randint(4, length + 1, (batch, 1), generator=g)
    return {
        "noise": torch.randn(batch, 4, net["data_size"], net["data_size"], generator=g).numpy(),
        "text": torch.randn(batch, length, net["label_dim"], generator=g).numpy(),
        "text_mask": mask.numpy(),
        "uncond": torch.randn(1, net["label_dim"], generator=g).numpy(),
    }


class Theirs:
    """Their sampler in a subprocess (see ``bench_rin_theirs.py``)."""

    def __init__(self, folder: Path, inputs: Path, device: str, package: Path, threads: int):
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME")}
        env.update(PYTHONPATH=str(package), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self.proc = subprocess.Popen(
            [sys.executable, "-P", str(THEIRS), str(folder), str(inputs), device],
            cwd=folder.parent, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self._read("ready")

    def _read(self, expect: str | None = None) -> str:
        line = self.proc.stdout.readline().strip()
        if not line or (expect and line != expect):
            raise RuntimeError(
                f"their sampler's process said {line!r} (expected {expect!r}); see its stderr above"
            )
        return line

    def run(self, steps: int, guidance: float, dtype: str) -> float | str:
        self.proc.stdin.write(f"run {steps} {guidance} {dtype}\n")
        self.proc.stdin.flush()
        line = self._read()
        return line[len("error ") :] if line.startswith("error") else float(line)

    def final(self, path: Path) -> np.ndarray:
        self.proc.stdin.write(f"save {path}\n")
        self.proc.stdin.flush()
        self._read("saved")
        return np.load(path)

    def close(self) -> None:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        self.proc.wait(timeout=60)


def ours_runner(model: MiroRIN, inputs: dict, device: str, guidance: float, steps: int, cache: bool):
    noise = torch.from_numpy(inputs["noise"]).to(device)
    b, k = noise.shape[0], len(model.coherence_keys)
    conds = Conditions(
        torch.from_numpy(inputs["text"]).to(device), torch.from_numpy(inputs["text_mask"]).to(device),
        torch.ones(b, k, device=device), torch.ones(b, k, dtype=torch.bool, device=device),
        torch.zeros(b, k, device=device), torch.ones(b, k, dtype=torch.bool, device=device),
    )  # fmt: skip
    uncond = torch.from_numpy(inputs["uncond"]).to(device)
    gammas = authors_gammas(steps, device=device)
    g = Guidance.joint(guidance, k)

    def run():
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.inference_mode():
            out = sample_rin(model, noise, conds, uncond, g, gammas, cache_condition=cache)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start, out

    return run


def main(argv: list[str] | None = None) -> list[dict]:
    """Runs the benchmark, prints the table and returns its rows (also written to ``--out`` as JSON)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="small", choices=list(SIZES))
    ap.add_argument("--batch", type=int, default=1, help="images per run")
    ap.add_argument("--steps", type=int, default=3, help="steps per timed run")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per side (after one warm-up)")
    ap.add_argument("--guidance", type=float, default=7.0)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads on each side (1 on a shared machine)"
    )
    ap.add_argument(
        "--compile", action="store_true", help="torch.compile our network (warm-up includes compiling)"
    )
    ap.add_argument(
        "--compile-mode", default="default", choices=COMPILE_MODES,
        help="torch.compile's mode with --compile (reduce-overhead: CUDA graphs)",
    )  # fmt: skip
    ap.add_argument(
        "--freezing", action="store_true",
        help="with --compile: inductor's freezing (weights as constants, prepacked for oneDNN on the CPU)",
    )
    ap.add_argument(
        "--out", default=None, help="also write the rows (times in seconds per step) as JSON here"
    )
    args = ap.parse_args(argv)
    for name in ("batch", "steps", "repeats", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name}={getattr(args, name)}: must be >= 1")
    torch.set_num_threads(args.threads)
    if args.freezing:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
    from tests.models.miro_t2i_reference import ensure_miro_t2i

    package = ensure_miro_t2i()
    with tempfile.TemporaryDirectory(prefix="bench_rin-") as tmp:
        tmp = Path(tmp)
        model, config = write_checkpoint(tmp / "ckpt", args.size)
        inputs = make_inputs(config, args.batch)
        np.savez(tmp / "inputs.npz", **inputs)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        how = f"compiled ({args.compile_mode}{', freezing' if args.freezing else ''}), " if args.compile else ""
        print(f"{how}torch {torch.__version__}, {args.device}, {args.threads} thread(s); RIN {args.size} "
              f"({params:.1f}M parameters), batch {args.batch}, {args.steps} steps per run, guidance "
              f"{args.guidance} (2 network evaluations per image and step), {args.repeats} interleaved runs")  # fmt: skip
        theirs = Theirs(tmp / "ckpt", tmp / "inputs.npz", args.device, package, args.threads)
        rows = []
        try:
            for dtype in args.dtypes:
                model = model.to(args.device)
                cast_dtype(model, getattr(torch, dtype))
                if args.compile:
                    torch.compiler.reset()
                    model.compile(mode=args.compile_mode)  # in place: precondition's self(...) call goes through the compiled forward
                their_modes = [dtype] if dtype == "float32" else ["bfloat16", "cast-bfloat16"]
                ours = ours_runner(model, inputs, args.device, args.guidance, args.steps, cache=True)
                uncached = ours_runner(model, inputs, args.device, args.guidance, args.steps, cache=False)
                times = {
                    "ours": [],
                    "ours, mixer at every step": [],
                    **{f"theirs ({m})": [] for m in their_modes},
                }
                for _ in range(3 if args.compile else 1):  # warm-up (compiling; CUDA graphs record at the 2nd call)
                    _, ours_final = ours()  # and parity
                    uncached()
                finals = {}
                for mode in their_modes:
                    result = theirs.run(args.steps, args.guidance, mode)
                    finals[mode] = result if isinstance(result, str) else theirs.final(tmp / "final.npy")
                for _ in range(args.repeats):
                    for mode in their_modes:
                        if not isinstance(finals[mode], str):
                            times[f"theirs ({mode})"].append(theirs.run(args.steps, args.guidance, mode))
                    times["ours"].append(ours()[0])
                    times["ours, mixer at every step"].append(uncached()[0])
                per = {k: statistics.median(v) / args.steps for k, v in times.items() if v}
                for mode in their_modes:
                    ref, key = finals[mode], f"theirs ({mode})"
                    row = {"dtype": dtype, "theirs_as": mode, "ours_s": per["ours"],
                           "ours_mixer_every_step_s": per["ours, mixer at every step"],
                           "theirs_s": per.get(key), "ratio": per[key] / per["ours"] if key in per else None,
                           "max_abs_diff": None, "theirs_error": ref if isinstance(ref, str) else None}  # fmt: skip
                    if not isinstance(ref, str):
                        row["max_abs_diff"] = float(np.abs(ours_final.float().cpu().numpy() - ref).max())
                    rows.append(row)
        finally:
            theirs.close()
    print("\n| dtype | theirs run as | ms per guided step: ours | ours, mixer every step | theirs | theirs / ours "
          "| parity |\n|---|---|---|---|---|---|---|")  # fmt: skip
    for row in rows:
        their = "-" if row["theirs_s"] is None else f"{row['theirs_s'] * 1e3:.1f}"
        ratio = "-" if row["ratio"] is None else f"**{row['ratio']:.2f}x**"
        parity = (f"theirs cannot run: {row['theirs_error']}" if row["theirs_error"]
                  else f"final states differ by at most {row['max_abs_diff']:.2g}")  # fmt: skip
        print(f"| {row['dtype']} | {row['theirs_as']} | {row['ours_s'] * 1e3:.1f} | "
              f"{row['ours_mixer_every_step_s'] * 1e3:.1f} | {their} | {ratio} | {parity} |")  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps({"config": vars(args), "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
