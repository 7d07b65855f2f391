"""Guided sampling throughput: our batched loop against the naive loop, at equal network evaluations.

Naive: diffusers' ``FlowMatchEulerDiscreteScheduler.step`` with one separate ``model(...)`` call per guidance
branch (the usual CFG loop).  Ours: ``miro.sampling.sample`` (all branches of a step in one forward pass, the
condition set encoded once per run).  Both run the same transformer, noise, conditions, guidance and grid;
the script checks that they produce the same images, then times them interleaved (ABAB...) and reports the
median images/s of each and their ratio.  A third column ("batched only", ``cache_condition=False``) calls
the model's plain forward so the share of each optimisation is visible.

    PYTHONPATH=. python scripts/bench_sample.py         # tiny and small models, joint and decoupled guidance
    PYTHONPATH=. python scripts/bench_sample.py --models tiny --batch 1 4 16 --repeats 5 --threads 2
    PYTHONPATH=. python scripts/bench_sample.py --precision --models tiny small   # bf16 autocast / fp32
    PYTHONPATH=. python scripts/bench_sample.py --precision --device cuda

``--precision`` instead times our sampler with fp32 weights in fp32 against the same call under bf16
autocast (``MiroPipeline(mixed_precision=...)``), interleaved, and reports the images/s of each, their ratio,
the largest pixel difference, and what ``mixed_precision=auto`` picks on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from miro.flow import flow_sigmas
from miro.models.transformer import MiroTransformer
from miro.sampling import Conditions, Guidance, sample

REWARDS = ["pickscore", "imagereward", "hpsv2", "clip_score", "aesthetic"]
# The project's model presets (miro/conf/model/tiny.yaml, miro/conf/model/small.yaml) at their usual inputs.
MODELS = {
    "tiny": dict(in_channels=3, sample_size=32, patch_size=4, width=128, depth=4, num_heads=4,
                 reward_fourier_dim=64, cond_refiner_depth=1),
    "small": dict(in_channels=4, sample_size=32, patch_size=2, width=384, depth=12, num_heads=6,
                  num_registers=4, cond_refiner_depth=1),
}
DEFAULT_STEPS = {"tiny": 10, "small": 4}
TEXT_DIM, TEXT_LEN = 384, 32


def naive_loop(model, noise, conds: Conditions, guidance: Guidance, steps: int, shift: float) -> torch.Tensor:
    """The textbook guided loop: scheduler.step and one forward per branch."""
    sched = FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(steps)
    branches = [(b.coef, conds.branch(b)) for b in guidance.branches()]
    x = noise.clone()
    for ts in sched.timesteps:
        t = torch.full((x.shape[0],), float(ts) / sched.config.num_train_timesteps, device=x.device)
        v = sum(coef * model(x, t, **inputs) for coef, inputs in branches)
        x = sched.step(v, ts, x).prev_sample
    return x


def make_inputs(cfg: dict, batch: int, device: str = "cpu", seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    text_mask = torch.arange(TEXT_LEN)[None] < torch.randint(8, TEXT_LEN, (batch, 1), generator=g)
    r = len(REWARDS)
    conds = Conditions(
        text=torch.randn(batch, TEXT_LEN, TEXT_DIM, generator=g) * text_mask[..., None],
        text_mask=text_mask,
        pos_rewards=torch.ones(batch, r),
        pos_mask=torch.ones(batch, r, dtype=torch.bool),
        neg_rewards=torch.zeros(batch, r),
        neg_mask=torch.ones(batch, r, dtype=torch.bool),
    )
    noise = torch.randn(batch, cfg["in_channels"], cfg["sample_size"], cfg["sample_size"], generator=g)
    conds = Conditions(**{k: v.to(device) for k, v in vars(conds).items()})
    return noise.to(device), conds


def timed(fn, device: str) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds): on a shared machine with one torch thread the CPU time
    leaves out the time spent waiting for a core (on a GPU only the wall time means anything)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    sync()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench(name: str, guidance_name: str, guidance: Guidance, batch: int, steps: int, repeats: int,
          device: str = "cpu", dtype: torch.dtype = torch.float32) -> dict:
    cfg = MODELS[name]
    torch.manual_seed(0)
    model = MiroTransformer(text_dim=TEXT_DIM, reward_names=REWARDS, **cfg).eval()
    with torch.no_grad():  # DiT's zero-initialised gates and output would make every branch equal
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.02)
    model.to(device, dtype)
    noise, conds = make_inputs(cfg, batch, device)
    sigmas = flow_sigmas(steps)
    runs = {
        "naive": lambda: naive_loop(model, noise, conds, guidance, steps, 1.0),
        "batched only": lambda: sample(model, noise, conds, guidance, sigmas, dtype=dtype, cache_condition=False),
        "ours": lambda: sample(model, noise, conds, guidance, sigmas, dtype=dtype),
    }
    with torch.inference_mode():
        outs = {k: fn() for k, fn in runs.items()}  # warm-up, and the equal-output check
        diff = max((outs[k] - outs["naive"]).abs().max().item() for k in outs)
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
        for _ in range(repeats):
            for k, fn in runs.items():
                times[k].append(timed(fn, device))
    ips = {k: batch / statistics.median(w for w, _ in v) for k, v in times.items()}
    cpu = {k: batch / statistics.median(c for _, c in v) for k, v in times.items()}
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return {
        "model": f"{name} ({params:.1f}M)",
        "guidance": f"{guidance_name} (NFE {guidance.nfe()}/step)",
        "batch": batch,
        "steps": steps,
        **{f"{k} img/s": v for k, v in ips.items()},
        "ours/naive": ips["ours"] / ips["naive"],
        "ours/naive (CPU time)": cpu["ours"] / cpu["naive"],
        "batched only/naive (CPU time)": cpu["batched only"] / cpu["naive"],
        "max |diff|": diff,
    }


def bench_precision(name: str, batch: int, steps: int, repeats: int, device: str = "cpu") -> dict:
    """fp32 against bf16 autocast, same model (fp32 weights), noise, conditions and guidance."""
    from miro.utils.precision import resolve_precision

    cfg = MODELS[name]
    torch.manual_seed(0)
    model = MiroTransformer(text_dim=TEXT_DIM, reward_names=REWARDS, **cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.02)
    model.to(device)
    noise, conds = make_inputs(cfg, batch, device)
    sigmas, guidance = flow_sigmas(steps), Guidance.joint(3.0, len(REWARDS))
    runs = {"fp32": lambda: sample(model, noise, conds, guidance, sigmas),
            "bf16": lambda: sample(model, noise, conds, guidance, sigmas, autocast=torch.bfloat16)}
    with torch.inference_mode():
        outs = {k: fn() for k, fn in runs.items()}
        times: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(repeats):
            for k, fn in runs.items():
                times[k].append(timed(fn, device)[0])
    ips = {k: batch / statistics.median(v) for k, v in times.items()}
    return {"model": name, "batch": batch, "steps": steps, "fp32 img/s": ips["fp32"], "bf16 img/s": ips["bf16"],
            "bf16/fp32": ips["bf16"] / ips["fp32"],
            "max |diff| (x in [-1, 1])": (outs["bf16"].clamp(-1, 1) - outs["fp32"].clamp(-1, 1)).abs().max().item(),
            "auto picks": resolve_precision("auto", torch.device(device).type)}


def print_table(rows: list[dict]) -> None:
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        cells = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["tiny", "small"], choices=list(MODELS))
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4], help="images per run (one row each)")
    ap.add_argument("--steps", type=int, default=None, help="steps per run (default: tiny 10, small 4)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--precision", action="store_true", help="time bf16 autocast against fp32 instead")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.precision:
        print(f"torch {torch.__version__}, {args.device}, {args.threads} threads, joint guidance w=3, "
              f"median of {args.repeats} interleaved repeats\n")
        print_table([bench_precision(m, b, args.steps or DEFAULT_STEPS[m], args.repeats, args.device)
                     for m in args.models for b in args.batch])
        return
    r = len(REWARDS)
    guidances = {
        "joint w=7": Guidance.joint(7.0, r),
        "decoupled 3/7": Guidance(3.0, (7.0,) * r),
    }
    rows = [
        bench(m, g, guidance, b, args.steps or DEFAULT_STEPS[m], args.repeats, args.device, getattr(torch, args.dtype))
        for m in args.models
        for b in args.batch
        for g, guidance in guidances.items()
    ]
    print(f"torch {torch.__version__}, {args.device} {args.dtype}, {args.threads} threads, "
          f"median of {args.repeats} interleaved repeats\n")
    print_table(rows)


if __name__ == "__main__":
    main()
