"""Benchmark of the shapes-world detector, caption alignment and generator; writes docs/benchmarks/detector.md.

    python scripts/bench_detector.py                      # full tables (a few minutes on one core)
    python scripts/bench_detector.py --scenes 60 --out -  # quick look, printed only

Accuracy: each cell renders ``--scenes`` scenes with one degradation at a strength drawn in the bin (or clean)
and matches detections (score > 0.3, GenEval's threshold) to the true objects (IoU >= 0.5).  *found* =
matched with the right class and colour / all objects; *recall* = matched / objects; *precision* = matched /
detections; *class* and *colour* = accuracy among matched objects.  Speed is measured in the same run, one
process, side by side with the generator it has to keep up with.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from miro.data.shapes.alignment import caption_alignment  # noqa: E402
from miro.data.shapes.config import (  # noqa: E402
    DEGRADATIONS,
    CaptionConfig,
    DegradationsConfig,
    DegradationSpec,
    ShapesConfig,
)
from miro.data.shapes.detector import default_detector  # noqa: E402
from miro.data.shapes.matching import MatchCounts, match_scene  # noqa: E402
from miro.data.shapes.world import ShapesWorld  # noqa: E402

BINS = ((0.15, 0.4), (0.4, 0.7), (0.7, 1.0))


def make_world(resolution: int, seed: int, degradation: str | None = None, lo: float = 0.0, hi: float = 0.0,
               default_mix: bool = False, wrong: float = 0.15) -> ShapesWorld:
    if default_mix:
        degs = DegradationsConfig()
    else:
        specs = {k: DegradationSpec(prob=0.0) for k in DEGRADATIONS}
        if degradation:
            specs[degradation] = DegradationSpec(prob=1.0, min_strength=lo, max_strength=hi)
        degs = DegradationsConfig(**specs)
    return ShapesWorld(ShapesConfig(out="-", resolution=resolution, seed=seed, degradations=degs,
                                    captions=CaptionConfig(wrong=wrong)))


def measure(world: ShapesWorld, n: int) -> tuple[MatchCounts, float]:
    det = default_detector()
    total, seconds = MatchCounts(), 0.0
    for i in range(n):
        s = world.sample(i)
        img = Image.open(io.BytesIO(s.image))
        t = time.perf_counter()
        dets = det(img)
        seconds += time.perf_counter() - t
        total.add(match_scene(dets, s.record["scene"]["objects"]))
    return total, seconds / n


def row(label: str, counts: MatchCounts, ms: float | None = None) -> str:
    r = counts.rates()
    cells = [label, str(counts.objects)] + [f"{100 * r[k]:.1f}" for k in ("found", "recall", "precision", "class_acc", "color_acc")]
    cells.append(f"{counts.false_positives / max(1, counts.objects):.3f}")
    if ms is not None:
        cells.append(f"{1000 * ms:.1f}")
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=300, help="scenes per table cell")
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--out", default="docs/benchmarks/detector.md", help="markdown file, or - to print only")
    args = ap.parse_args()
    n = args.scenes
    header = "| condition | objects | found % | recall % | precision % | class % | colour % | FP / object |"
    sep = "|" + "---|" * 8
    lines = [
        "## Shapes-world detector",
        "",
        f"Command: `python scripts/bench_detector.py --scenes {n} --seed {args.seed}` (one process; "
        f"{n} generated scenes per row, default object mix and sizes).  *found*: matched to a true box "
        "(IoU >= 0.5) with the right class and colour, over all objects; detections with score <= 0.3 "
        "(GenEval's threshold) are ignored.  The issue's target is found >= 98 % on clean 64 px scenes.  "
        f"Timings: one process on a machine with {os.cpu_count()} CPUs and a load average of "
        f"{os.getloadavg()[0]:.1f} when the run started (shared machines inflate them).",
        "",
        "### Clean scenes by resolution",
        "",
        header + " ms / image |",
        sep + "---|",
    ]
    default_detector()  # fit once, outside the timings
    for res in (32, 64, 128, 256):
        counts, ms = measure(make_world(res, args.seed), n)
        lines.append(row(f"clean {res} px", counts, ms))
        print(lines[-1], flush=True)
    lines += ["", "### 64 px, one degradation at a time, by strength", "", header, sep]
    for name in DEGRADATIONS:
        for lo, hi in BINS:
            counts, _ = measure(make_world(64, args.seed, name, lo, hi), n)
            lines.append(row(f"{name} {lo:.2f}-{hi:.2f}", counts))
            print(lines[-1], flush=True)
    counts, _ = measure(make_world(64, args.seed, default_mix=True), n)
    lines.append(row("default training mix", counts))
    print(lines[-1], flush=True)

    lines += ["", "### Caption alignment reward (64 px, default degradation mix, 50 % wrong captions)", "",
              "| caption kind | samples | mean alignment |", "|---|---|---|"]
    world = make_world(64, args.seed + 1, default_mix=True, wrong=0.5)
    by_kind: dict[str, list[float]] = {}
    for i in range(2 * n):
        s = world.sample(i)
        by_kind.setdefault(s.record["caption_kind"], []).append(caption_alignment(Image.open(io.BytesIO(s.image)), s.caption))
    wrong_all = [v for k, vs in by_kind.items() if k != "correct" for v in vs]
    for kind in ("correct", "wrong_count", "wrong_color", "wrong_class", "wrong_relation"):
        if kind in by_kind:
            lines.append(f"| {kind} | {len(by_kind[kind])} | {np.mean(by_kind[kind]):.3f} |")
    lines.append(f"| all wrong | {len(wrong_all)} | {np.mean(wrong_all):.3f} |")
    print("\n".join(lines[-7:]), flush=True)

    lines += ["", "### Generator throughput (one process, default mix)", "",
              "| resolution | samples / minute | target (issue #2: thousands per minute) | ratio |", "|---|---|---|---|"]
    for res in (32, 64, 128):
        world = ShapesWorld(ShapesConfig(out="-", resolution=res, seed=args.seed))
        m = max(200, n)
        t = time.perf_counter()
        for i in range(m):
            world.sample(i)
        rate = 60 * m / (time.perf_counter() - t)
        lines.append(f"| {res} px | {rate:,.0f} | 1,000 | {rate / 1000:.1f}x |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.out != "-":
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
