"""The table of scripts/experiments/ttt_quality.sh: per token mixer, the training loss (tensorboard), images/s,
the fixed-noise loss by noise level with its text gap (``gaps.json``) and held-out GenEval (``geneval.json``).

    python scripts/experiments/ttt_quality_table.py runs/ttt64 attention ttt_linear attention+ttt_linear
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def scalars(run: Path, tag: str) -> list[tuple[int, float, float]]:
    """(step, value, wall time) of one tensorboard tag over every event file of the run (resumed runs append)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for events in sorted(run.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags().get("scalars", []):
            for e in acc.Scalars(tag):
                out[e.step] = (e.step, e.value, e.wall_time)
    return [out[k] for k in sorted(out)]


def row(out: Path, mixer: str) -> dict:
    run = out / mixer.replace("+", "_")
    loss = scalars(run, "train/loss")
    speed = [v for _, v, _ in scalars(run, "perf/images_per_s")]
    last = loss[-1][0] if loss else 0
    gaps = json.loads((run / "gaps.json").read_text()) if (run / "gaps.json").exists() else {}
    gen = json.loads((run / "geneval.json").read_text()) if (run / "geneval.json").exists() else {}
    # the curve's results by training step ("400"); its other keys are settings (targets, sample_steps, interval...)
    final = gen[max((k for k in gen if k.isdigit()), key=int)] if any(k.isdigit() for k in gen) else {}
    g = next(iter(final.values()), {}) if final else {}
    return {
        "mixer": mixer,
        "steps": last,
        "images_per_s": statistics.median(speed) if speed else float("nan"),
        "train_loss_last_100": statistics.mean(v for s, v, _ in loss if s > last - 100) if loss else float("nan"),
        "loss_by_t": {t: v["loss"] for t, v in gaps.items()},
        "shuffled_text_pct": {t: v["shuffled_text_pct"] for t, v in gaps.items()},
        "geneval": g,
    }


def main(argv: list[str]) -> list[dict]:
    out, mixers = Path(argv[0]), argv[1:]
    rows = [row(out, m) for m in mixers]
    times = sorted({t for r in rows for t in r["loss_by_t"]}, key=float)
    print("| mixer | steps | images/s | train loss (last 100 steps) | " + " | ".join(f"loss t={t}" for t in times)
          + " | text gap t=0.7 | GenEval | colour found / chance |")
    print("|---|---:|---:|---:|" + "---:|" * len(times) + "---:|---:|---:|")
    for r in rows:
        g = r["geneval"]
        print(f"| {r['mixer']} | {r['steps']} | {r['images_per_s']:.1f} | {r['train_loss_last_100']:.4f} | "
              + " | ".join(f"{r['loss_by_t'].get(t, float('nan')):.4f}" for t in times)
              + f" | {r['shuffled_text_pct'].get('0.7', float('nan')):+.2f}% | {g.get('overall', float('nan'))}% | "
              f"{g.get('colour_only', '-')} / {g.get('colour_only_chance', '-')}% |")
    (out / "ttt_quality.json").write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
