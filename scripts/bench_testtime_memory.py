"""Peak memory of best-of-N against N: the test-time package's chunked search against rendering every candidate at once.

Issue 14 asks that memory stay flat in N: ``miro.testtime.best_of_n`` renders and scores ``--batch-size`` candidates
at a time and keeps only the incumbent.  The usual way to write best-of-N renders all N candidates in one pipeline
call, scores them and keeps the best; its activations and images grow with N.  For each way and each N this script
runs one best-of-N search in a fresh process (so no earlier allocation is reused) and reports the growth of the
resident set during the call: a sampler thread reads the RSS every 5 ms from just before the call to its end, and the
growth is the peak minus the RSS before (the pipeline, the scorer and one warm-up call are loaded first, so the
growth is what the search itself needs).  Both ways choose with the same verifier (sharpness); their candidates'
noises are drawn differently (memory does not depend on them).

    python scripts/bench_testtime_memory.py --pipeline models/shapes_reference --n 4 32 128 --steps 4

Writes ``--out`` (JSON) and prints a table with each way's growth per extra candidate (the least-squares slope of the
growth against N): about zero for a search whose memory is flat in N.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from miro.utils.memory import PeakMemory  # noqa: E402

PROMPT = "a photo of a red circle"
WAYS = ("chunked", "all_at_once")


def search(way: str, pipe, verifier, n: int, steps: int, batch_size: int, seed: int = 0) -> None:
    """One best-of-``n`` search for ``PROMPT`` (the kept image is dropped: only the memory is measured)."""
    import torch

    from miro.sampling.settings import SamplingSettings
    from miro.testtime import Budget, best_of_n

    if way == "chunked":
        best_of_n(pipe, [PROMPT], verifier, Budget(samples=n), seeds=seed, batch_size=batch_size,
                  settings=SamplingSettings(steps=steps))  # fmt: skip
        return
    images = pipe(PROMPT, num_images_per_prompt=n, num_inference_steps=steps,
                  generator=[torch.Generator().manual_seed(seed * 100_003 + j) for j in range(n)])  # fmt: skip
    scores = np.asarray(verifier.scorers[0].score(images, [PROMPT] * n), dtype=float)
    images[int(np.argmax(scores))].load()


def child(args) -> dict:
    """One (way, N) measurement in this process: load, warm up with one chunk, then the measured search."""
    import torch

    from annotate.scorers.registry import build_scorer
    from miro.sampling.pipeline import MiroPipeline
    from miro.testtime import Verifier

    torch.set_num_threads(args.threads)
    pipe = MiroPipeline.from_pretrained(args.pipeline)
    verifier = Verifier([build_scorer("sharpness")])
    search(args.way, pipe, verifier, args.batch_size, args.steps, args.batch_size)  # warm-up: kernels, allocator
    start = time.perf_counter()
    with PeakMemory() as peak:
        search(args.way, pipe, verifier, args.child_n, args.steps, args.batch_size)
    return {"way": args.way, "n": args.child_n, "growth_mib": round(peak.growth_mib, 1),
            "before_mib": round(peak.before / 2**20, 1), "seconds": round(time.perf_counter() - start, 2)}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", default="models/shapes_reference", help="a MiroPipeline folder")
    p.add_argument("--n", type=int, nargs="+", default=[4, 32, 128], help="candidates per search")
    p.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS))
    p.add_argument("--steps", type=int, default=4, help="sampling steps (memory does not depend on them)")
    p.add_argument("--batch-size", type=int, default=4, help="the chunked search's candidates per chunk")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("runs/bench_testtime_memory.json"))
    p.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)  # child mode
    p.add_argument("--child-n", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("n", "steps", "batch_size", "threads"):
        values = getattr(args, name) if isinstance(getattr(args, name), list) else [getattr(args, name)]
        if any(v < 1 for v in values):
            p.error(f"--{name.replace('_', '-')} {values}: must be >= 1")
    if not (Path(args.pipeline) / "model_index.json").is_file():
        p.error(f"--pipeline {args.pipeline}: not a MiroPipeline folder (no model_index.json)")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.way is not None:
        print(json.dumps(child(args)))
        return {}
    rows = []
    for way in args.ways:
        for n in args.n:
            cmd = [sys.executable, __file__, "--pipeline", str(args.pipeline), "--steps", str(args.steps),
                   "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--way", way, "--child-n", str(n)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{way} N={n} failed:\n{done.stderr[-2000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    result = {"pipeline": str(args.pipeline), "steps": args.steps, "batch_size": args.batch_size, "rows": rows,
              "mib_per_candidate": {}}
    for way in args.ways:  # the least-squares slope of the growth against N: ~0 for a search whose memory is flat
        mine = [r for r in rows if r["way"] == way]
        if len({r["n"] for r in mine}) >= 2:
            slope = np.polyfit([r["n"] for r in mine], [r["growth_mib"] for r in mine], 1)[0]
            result["mib_per_candidate"][way] = round(float(slope), 3)
    print("| way | " + " | ".join(f"N={n} growth (MiB)" for n in args.n) + " | MiB per candidate |")
    print("|---|" + "---:|" * (len(args.n) + 1))
    for way in args.ways:
        cells = [next(r["growth_mib"] for r in rows if r["way"] == way and r["n"] == n) for n in args.n]
        print(f"| {way} | " + " | ".join(f"{c:g}" for c in cells) + f" | {result['mib_per_candidate'].get(way)} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
