"""A weight average of saved pipelines of one architecture (a "model soup", Wortsman et al. 2022): the transformer's
floating-point tensors averaged with the given weights, everything else (its config, the scheduler, the encoders'
configs, the recommended targets) copied from the first pipeline.  docs/text_conditioning.md, section 34: the
12,000- and 14,000-step shapes references, one fine-tuned from the other, averaged half and half.

    python scripts/experiments/average_weights.py --pipelines runs/12k models/shapes_reference --out runs/soup
    python scripts/experiments/average_weights.py --pipelines A B C --weights 0.5 0.25 0.25 --out runs/soup3

The pipelines must hold the same tensors with the same shapes (fine-tuned from one another or from one start:
averaging unrelated networks gives noise); anything else is an error that names what differs.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"


def average_pipelines(pipelines: list[Path], weights: list[float], out: Path) -> dict:
    """Write the averaged pipeline to ``out`` (which must not exist); returns a summary with each pipeline's
    distance to the average relative to the average's norm."""
    import torch
    from safetensors.torch import load_file, save_file

    if len(pipelines) < 2:
        raise ValueError("give at least two pipelines to average")
    if len(weights) != len(pipelines) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights={weights}: one non-negative weight per pipeline, not all zero")
    if out.exists():
        raise FileExistsError(f"{out} exists; give a new folder (nothing is overwritten)")
    files = [Path(p) / "transformer" / WEIGHTS_FILE for p in pipelines]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"no transformer weights at {missing} (give saved MiroPipeline folders)")
    configs = [json.loads((Path(p) / "transformer" / "config.json").read_text()) for p in pipelines]
    drop = {"_diffusers_version", "sample_size"}  # the U-Net's sample_size names a size, not a weight
    for p, cfg in zip(pipelines[1:], configs[1:]):
        diff = sorted(k for k in set(cfg) | set(configs[0]) if k not in drop and cfg.get(k) != configs[0].get(k))
        if diff:
            raise ValueError(f"{p} is another architecture than {pipelines[0]}: its config differs in {diff}")
    states = [load_file(str(f)) for f in files]
    for p, state in zip(pipelines[1:], states[1:]):
        if state.keys() != states[0].keys():
            raise ValueError(f"{p} holds other tensors than {pipelines[0]}: {sorted(state.keys() ^ states[0].keys())[:4]}")
        shapes = [k for k in state if state[k].shape != states[0][k].shape]
        if shapes:
            raise ValueError(f"{p}: tensors of other shapes than {pipelines[0]}'s: {shapes[:4]}")
    total = float(sum(weights))
    averaged = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            acc = sum((w / total) * s[key].double() for w, s in zip(weights, states))
            averaged[key] = acc.to(first.dtype)
        else:
            averaged[key] = first.clone()
    norm = float(torch.sqrt(sum((v.double() ** 2).sum() for v in averaged.values() if v.is_floating_point())))
    distances = [
        float(torch.sqrt(sum(((s[k].double() - averaged[k].double()) ** 2).sum() for k in averaged
                             if averaged[k].is_floating_point()))) / norm
        for s in states
    ]  # fmt: skip
    shutil.copytree(pipelines[0], out)
    save_file(averaged, str(out / "transformer" / WEIGHTS_FILE))
    summary = {"pipelines": [str(p) for p in pipelines], "weights": [w / total for w in weights],
               "relative_distance_to_average": [round(d, 5) for d in distances], "out": str(out)}  # fmt: skip
    (out / "average_weights.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipelines", type=Path, nargs="+", required=True, help="saved MiroPipeline folders")
    p.add_argument("--weights", type=float, nargs="+", help="one per pipeline (default: equal)")
    p.add_argument("--out", type=Path, required=True, help="a new folder for the averaged pipeline")
    args = p.parse_args(argv)
    weights = args.weights or [1.0] * len(args.pipelines)
    summary = average_pipelines(args.pipelines, weights, args.out)
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
