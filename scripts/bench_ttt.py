"""TTT-Linear (dual form) against softmax attention (``F.scaled_dot_product_attention``) as the token count grows.

Both mixers run at the same width and heads, as whole modules with their projections: ``miro.models.ttt.TTTLinear``
(non-causal, its scan orders, mini-batch b) and ``miro.models.layers.Attention`` (fused qkv, QK-norm, SDPA,
output projection; the self-attention of MiroTransformer's blocks).  Per token count N (64 to 16384, doubling,
by default) it measures the median time of a forward pass and of forward + backward, and the memory: the peak
CUDA allocation of a forward + backward on ``--device cuda``, and on every device the bytes that autograd keeps
for the backward (saved tensors, each storage counted once).  It prints a table with the time ratio TTT /
attention and each method's doubling factor t(N) / t(N/2) (1 = constant, 2 = linear, 4 = quadratic), and writes
every number to a JSON file.  Between sizes that are not one doubling apart the factor is the geometric mean
per doubling, (t(N) / t(N')) ** (1 / log2(N / N')).

    python scripts/bench_ttt.py --device cpu --sizes 64,256              # a smoke run
    python scripts/bench_ttt.py --device cuda --dtype bf16                # 64 .. 16384 tokens
    python scripts/bench_ttt.py --device cuda --width 1024 --heads 16 --scan-orders raster --out ttt.json

``--dtype bf16`` runs both under ``torch.autocast`` (the TTT inner loop keeps fp32 statistics); ``fp32`` without
(TF32 matmuls stay off on CUDA unless ``--tf32``).  The TTT-Linear cost is linear in N and attention's quadratic
(``miro.models.flops.ttt_dual_flops``); the FLOPs of both are in the JSON too.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from miro.models.flops import ttt_dual_flops  # noqa: E402
from miro.models.layers import Attention  # noqa: E402
from miro.models.ttt import TTTLinear, parse_scan_orders  # noqa: E402

DEFAULT_SIZES = [64 * 2**i for i in range(9)]  # 64 .. 16384


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up (allocator, kernels)
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _saved_bytes(fn, module: torch.nn.Module) -> int:
    """Bytes of the tensors autograd saves for the backward of ``fn()`` (each storage once; the module's own
    parameters, which exist anyway, left out)."""
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        try:
            storage = t.untyped_storage()
            if storage.data_ptr() not in params:
                seen[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, NotImplementedError):
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())


def measure(module: torch.nn.Module, call, n: int, args, device: torch.device) -> dict:
    x = torch.randn(args.batch, n, args.width, device=device, requires_grad=True)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bf16" else nullcontext()

    def forward():
        with torch.no_grad(), autocast:
            return call(module, x)

    def forward_backward():
        with autocast:
            out = call(module, x)
        out.float().square().mean().backward()
        module.zero_grad(set_to_none=True)
        x.grad = None

    def forward_grad():
        with autocast:
            return call(module, x)

    row = {
        "forward_s": _time(forward, device, args.repeats),
        "forward_backward_s": _time(forward_backward, device, args.repeats),
        "saved_for_backward_mib": _saved_bytes(forward_grad, module) / 2**20,
    }
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        forward_backward()
        _sync(device)
        row["peak_mib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return row


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Time against tokens (log-log) for both mixers, forward and forward + backward, and the measured time ratio
    beside the FLOP model's: where each crosses 1 is the crossover."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["tokens"] for r in rows]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, style in (("ttt", "-"), ("attention", "--")):
        for key, marker in (("forward_s", "o"), ("forward_backward_s", "s")):
            ax.plot(n, [r[name][key] for r in rows], style, marker=marker, ms=3,
                    label=f"{name} {'forward' if key == 'forward_s' else 'forward + backward'}")  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel="tokens N", ylabel="seconds", title="time")
    ax.legend(fontsize=7)
    bx.plot(n, [r["forward_ratio"] for r in rows], marker="o", ms=3, label="measured, forward")
    bx.plot(n, [r["forward_backward_ratio"] for r in rows], marker="s", ms=3, label="measured, forward + backward")
    bx.plot(n, [r["ttt"]["forward_flops"] / r["attention"]["forward_flops"] for r in rows], "k:",
            label="FLOP model")  # fmt: skip
    bx.axhline(1.0, color="grey", lw=0.8)
    bx.set(xscale="log", yscale="log", xlabel="tokens N", ylabel="TTT / attention", title="ratio (< 1: TTT faster)")
    bx.legend(fontsize=7)
    for a in (ax, bx):
        a.grid(alpha=0.3, which="both")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument(
        "--sizes",
        default=",".join(map(str, DEFAULT_SIZES)),
        help="comma-separated token counts (default 64,128,...,16384)",
    )
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--mini-batch", type=int, default=16)
    parser.add_argument(
        "--scan-orders",
        default="raster+raster_rev",
        help="TTT scan orders, '+'-joined (raster, raster_rev; the model's default is both)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs per measurement (the median is kept)"
    )
    parser.add_argument("--tf32", action="store_true", help="allow TF32 matmuls on CUDA in fp32")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    parser.add_argument("--out", default="", help="JSON file (default runs/bench_ttt/<device>-<dtype>.json)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not sizes or min(sizes) < 1:
        parser.error(f"--sizes={args.sizes!r}: must be positive token counts")
    orders = parse_scan_orders(args.scan_orders)
    if any(o.startswith("col") for o in orders):
        parser.error("--scan-orders: the benchmark has no token grid; use raster and/or raster_rev")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32

    torch.manual_seed(0)
    ttt = TTTLinear(args.width, args.heads, mini_batch=args.mini_batch, scan_orders=orders).to(device)
    attn = Attention(args.width, args.heads, qk_norm=True).to(device)
    d = args.width // args.heads
    rows = []
    for n in sizes:
        row = {"tokens": n}
        for name, module, call in (("ttt", ttt, lambda m, x: m(x)), ("attention", attn, lambda m, x: m(x))):
            row[name] = measure(module, call, n, args, device)
        projections = 2 * n * args.width * 4 * args.width  # q, k, v, o
        row["ttt"]["forward_flops"] = args.batch * (
            projections
            + 2 * n * args.width * args.heads
            + (len(orders) - 1) * 2 * n * args.width**2
            + len(orders) * ttt_dual_flops(n, d, args.heads, args.mini_batch, "linear")
        )
        row["attention"]["forward_flops"] = args.batch * (projections + 4 * n * n * args.width)
        rows.append(row)
        print(
            f"  N={n}: ttt {row['ttt']['forward_backward_s'] * 1e3:.2f} ms, "
            f"attention {row['attention']['forward_backward_s'] * 1e3:.2f} ms (forward + backward)",
            file=sys.stderr,
        )

    header = (
        f"TTTLinear (dual, b={args.mini_batch}, scans {'+'.join(orders)}) vs SDPA attention: width {args.width}, "
        f"{args.heads} heads, batch {args.batch}, {args.device} {args.dtype}, torch {torch.__version__}"
    )
    print(header)
    cols = [
        "N",
        "ttt fwd ms",
        "attn fwd ms",
        "fwd ratio",
        "ttt f+b ms",
        "attn f+b ms",
        "f+b ratio",
        "ttt x2",
        "attn x2",
        "ttt saved MiB",
        "attn saved MiB",
        "FLOP ratio",
    ]
    if device.type == "cuda":
        cols += ["ttt peak MiB", "attn peak MiB"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    prev = None
    for row in rows:
        t, a = row["ttt"], row["attention"]
        row["forward_ratio"] = t["forward_s"] / a["forward_s"]
        row["forward_backward_ratio"] = t["forward_backward_s"] / a["forward_backward_s"]
        doublings = math.log2(row["tokens"] / prev["tokens"]) if prev is not None else 0.0
        for name in ("ttt", "attention"):  # per doubling of N (the geometric mean when sizes skip doublings)
            row[name]["doubling_factor"] = (
                (row[name]["forward_backward_s"] / prev[name]["forward_backward_s"]) ** (1 / doublings)
                if doublings > 0
                else None
            )
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        cells = [
            str(row["tokens"]),
            f"{t['forward_s'] * 1e3:.2f}",
            f"{a['forward_s'] * 1e3:.2f}",
            f"{row['forward_ratio']:.2f}",
            f"{t['forward_backward_s'] * 1e3:.2f}",
            f"{a['forward_backward_s'] * 1e3:.2f}",
            f"{row['forward_backward_ratio']:.2f}",
            fmt(t["doubling_factor"]),
            fmt(a["doubling_factor"]),
            f"{t['saved_for_backward_mib']:.1f}",
            f"{a['saved_for_backward_mib']:.1f}",
            f"{t['forward_flops'] / a['forward_flops']:.2f}",
        ]
        if device.type == "cuda":
            cells += [f"{t['peak_mib']:.1f}", f"{a['peak_mib']:.1f}"]
        print("| " + " | ".join(cells) + " |")
        prev = row
    print(
        "ratio = TTT time / attention time; x2 = forward+backward time at N / at N/2, per doubling of N "
        "(1 = constant, 2 = linear, 4 = quadratic); saved = activations autograd keeps for the backward; FLOP ratio = "
        "the FLOP model's forward TTT / attention"
    )

    result = {
        "config": {
            **vars(args),
            "sizes": sizes,
            "scan_orders": list(orders),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            # glibc's allocator settings change the CPU numbers (docs/benchmarks/ttt.md): record them
            "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        },
        "rows": rows,
    }
    out = Path(args.out or f"runs/bench_ttt/{args.device}-{args.dtype}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    plot(rows, out.with_suffix(".png"), header)
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return result


if __name__ == "__main__":
    main()
