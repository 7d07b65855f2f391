"""What a model gets wrong on the held-out two-object prompts: colour attribution and two objects, read by the
shapes detector with GenEval's rules and sorted into failure kinds (issue #10: "if a target is missed, say what
limits it").

A colour-attribution prompt ("a red square and a blue hexagon") fails when a class is missing or when a found
object has the wrong colour; those differ in what would fix them.  Each image gets one kind:

- ``correct``: GenEval's rules pass;
- ``one class missing`` / ``both classes missing``: the detector (above the tag's threshold) does not find the
  class at all: composition, not binding;
- with both classes found, the most confident detection of each class: ``colours swapped`` (each object has the
  other's colour), ``colour leaked`` (one object right, the other in the first one's colour: one colour for both),
  ``one colour wrong`` (one right, the other a colour the prompt does not name), ``both colours wrong``.

Two-object prompts ("a square and a hexagon") have only the first two kinds.  The missing classes are counted by
class (is it the hexagon that single-object prompts miss too?).

    python scripts/experiments/binding_failures.py --pipeline models/shapes_reference --data runs/demo/data \\
        --images 4 --seed 1 --out runs/binding.json

Sampling as the shipped model's README reads GenEval: the alignment target alone (the quality rewards free in both
branches), text guidance 3 and reward guidance 1 (``--text-scale``, ``--reward-scale``), 25 Euler steps; image ``j`` of prompt ``i`` from the generator seeded
``seed * 1_000_003 + i * 64 + j``.  ``--oracle`` reads the world's own scenes for the same prompts instead: what the
detector finds when the drawing is right (at 32 px it reads 157 of 160 two-object scenes and 158 of 160 colour-
attribution scenes right, seed 1).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import torch

from miro.contracts.geneval_rules import evaluate, filter_detections

TASKS = ("color_attr", "two_object")
KINDS = ("correct", "one class missing", "both classes missing", "colours swapped", "colour leaked",
         "one colour wrong", "both colours wrong")  # fmt: skip


def failure_kind(metadata: dict, detections: list[dict]) -> tuple[str, list[str]]:
    """The kind of ``detections`` (the detector's reading of one image) against a two-object prompt's GenEval
    ``metadata``, and the classes it misses."""
    first, second = metadata["include"]
    if first["class"] == second["class"]:
        raise ValueError(f"{metadata['prompt']!r}: the two objects share a class; the kinds need two classes")
    detected = filter_detections(detections, metadata["tag"])
    correct, _ = evaluate(metadata, detected)
    missing = [req["class"] for req in (first, second) if not detected.get(req["class"])]
    if correct:
        return "correct", missing
    if missing:
        return ("one class missing" if len(missing) == 1 else "both classes missing"), missing
    if "color" not in first:  # two objects, both found, and still wrong: cannot happen with count 1
        raise ValueError(f"{metadata['prompt']!r}: both classes found yet the rules fail")
    a, b = (detected[req["class"]][0].get("color") for req in (first, second))
    want_a, want_b = first["color"], second["color"]
    if (a, b) == (want_b, want_a):
        return "colours swapped", missing
    if a == want_a or b == want_b:
        wrong, other = (b, want_a) if a == want_a else (a, want_b)
        return ("colour leaked" if wrong == other else "one colour wrong"), missing
    return "both colours wrong", missing


def image_seed(seed: int, prompt_index: int, image_index: int) -> int:
    """The generator seed of image ``image_index`` of held-out prompt ``prompt_index`` (shared by the binding and
    attention scripts, so their readings pair image for image)."""
    return seed * 1_000_003 + prompt_index * 64 + image_index


def summarise(readings: list[tuple[str, str, list[str]]]) -> dict:
    """Per task: the share of each kind (percent) and the missing classes' counts."""
    out = {}
    for task in TASKS:
        rows = [r for r in readings if r[0] == task]
        if not rows:
            continue
        kinds = Counter(kind for _, kind, _ in rows)
        missing = Counter(cls for _, _, classes in rows for cls in classes)
        out[task] = {"images": len(rows),
                     "kinds_pct": {k: round(100 * kinds[k] / len(rows), 1) for k in KINDS if k in kinds},
                     "missing_classes": dict(missing.most_common())}  # fmt: skip
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", type=Path, default=Path("models/shapes_reference"))
    p.add_argument("--data", type=Path, default=Path("runs/demo/data"), help="a shapes world (its heldout/ prompts)")
    p.add_argument("--images", type=int, default=4, help="images per prompt")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--text-scale", type=float, default=3.0, help="text guidance (the shipped setting: 3)")
    p.add_argument("--reward-scale", type=float, default=1.0, help="reward guidance (the shipped setting: 1)")
    p.add_argument("--oracle", action="store_true", help="read the world's own scenes for the prompts, not a model's")
    p.add_argument("--resolution", type=int, default=32, help="--oracle: the scenes' size in pixels")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, help="write the JSON result here")
    args = p.parse_args(argv)
    if args.images < 1 or args.batch < 1:
        p.error("--images and --batch must be >= 1")
    return args


def renderer(args):
    """``render(prompts, seeds) -> images``: the pipeline in the shipped setting, or with ``--oracle`` the world's
    own scenes for each prompt at ``--resolution`` (what the detector reads when the drawing is right: the ceiling)."""
    if args.oracle:
        from miro.eval.geneval.shapes_oracle import oracle_generate_fn

        gen = oracle_generate_fn(resolution=args.resolution)
        return lambda prompts, seeds: [gen(p, 1, torch.Generator().manual_seed(s))[0] for p, s in zip(prompts, seeds)]
    from miro.sampling.pipeline import MiroPipeline

    pipe = MiroPipeline.from_pretrained(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    free = {name: None for name in pipe.reward_names if name != "alignment"}
    return lambda prompts, seeds: pipe(
        prompts, reward_targets={"alignment": 1.0, **free}, negative_reward_targets=free, guidance_scale=0.0,
        text_guidance_scale=args.text_scale, reward_guidance_scale=args.reward_scale, num_inference_steps=25,
        generator=[torch.Generator().manual_seed(s) for s in seeds])  # fmt: skip


def heldout_rows(data: Path, tags) -> list[dict]:
    """The GenEval metadata rows of a shapes world's held-out prompts whose tag is in ``tags``, in file order."""
    metadata_file = data / "heldout" / "evaluation_metadata.jsonl"
    if not metadata_file.is_file():
        raise SystemExit(f"no held-out prompts at {metadata_file} (build the world first)")
    rows = [json.loads(line) for line in metadata_file.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["tag"] in tags]


def report(result: dict, out: Path | None) -> dict:
    """Print ``result`` as JSON and write it to ``out`` when given (its folder made); returns it."""
    print(json.dumps(result, indent=1))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv=None) -> dict:
    args = parse_args(argv)
    from miro.data.shapes.detector import detect

    torch.set_num_threads(args.threads)
    rows = heldout_rows(args.data, TASKS)
    render = renderer(args)
    jobs = [(i, j) for i in range(len(rows)) for j in range(args.images)]
    readings, start = [], time.perf_counter()
    for k in range(0, len(jobs), args.batch):
        chunk = jobs[k:k + args.batch]
        images = render([rows[i]["prompt"] for i, _ in chunk], [image_seed(args.seed, i, j) for i, j in chunk])
        for (i, _), image in zip(chunk, images):
            kind, missing = failure_kind(rows[i], detect(image))
            readings.append((rows[i]["tag"], kind, missing))
    result = {"pipeline": f"oracle scenes at {args.resolution} px" if args.oracle else str(args.pipeline),
              "images_per_prompt": args.images, "seed": args.seed,
              "text_scale": args.text_scale, "reward_scale": args.reward_scale,
              "seconds": round(time.perf_counter() - start, 1), "tasks": summarise(readings)}  # fmt: skip
    return report(result, args.out)


if __name__ == "__main__":
    main()
