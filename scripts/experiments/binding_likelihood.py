"""Does the model read binding at all?  Its own likelihood of a correctly drawn colour-attribution scene under the
true caption against the caption with the two colours exchanged (issue #10, colour attribution; docs/
text_conditioning.md, section 36).

``binding_failures.py`` reads what the model *draws*; this reads what it *knows*.  For every held-out colour-
attribution prompt ("a photo of a red circle and a blue square") the world's own scenes are rendered (``--oracle``
of binding_failures: the objects right, the colours on the right objects), and at fixed (t, eps) draws the
flow-matching error ``||v(x_t, c) - u||^2`` is computed under the true caption and under the swapped one ("a photo
of a blue circle and a red square": the same words, bound the other way round).  Every row shares its (t, eps)
with its pair, so the margin error(swapped) - error(true) is a paired likelihood ratio (the rubric's, in
``miro.testtime.intrinsic``, with the swap as its one probe).  A margin above zero: the model finds the scene more
likely under its true caption.  Three reward conditions, each row's rewards:

- ``text only``: every reward's null embedding (what the text alone carries);
- ``alignment 1`` / ``alignment 0``: the alignment target set, the other rewards null.  If the alignment reward
  knows binding, the swapped caption should cost more at alignment 1 than at 0 (``alignment_gap``).

The control replaces one object's colour by a colour the scene does not have ("a photo of a green circle and a blue
square"): a model that reads colour words at all prefers the true caption there.  ``text_encoder_token_shift`` says
whether the binding is in the model's input at all: how much the frozen encoder's token embeddings of the same words
change between a caption and its swap.  Reported per condition: the share of scenes whose mean margin is positive
(chance 50%), the mean margin relative to the true caption's error, and both again per noise band (t < 0.5,
t >= 0.5).

    python scripts/experiments/binding_likelihood.py --pipeline models/shapes_reference --data runs/demo/data \\
        --images 4 --draws 8 --out runs/binding_likelihood.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from binding_failures import heldout_rows, image_seed, report  # noqa: E402

CONDITIONS = ("text only", "alignment 1", "alignment 0")


def _recolour(meta: dict, first: str, second: str) -> dict:
    """``meta`` with its two objects coloured ``first`` and ``second``, its prompt rewritten in GenEval's phrasing."""
    from miro.data.shapes.captions import geneval_prompt

    a, b = meta["include"]
    out = {k: v for k, v in meta.items() if k != "prompt"}
    out["include"] = [{**a, "color": first}, {**b, "color": second}]
    out["prompt"] = geneval_prompt(out)
    return out


def swapped(meta: dict) -> dict:
    """``meta`` (a colour-attribution GenEval row) with its two colours exchanged, its prompt rewritten."""
    a, b = meta["include"]
    if "color" not in a or "color" not in b or a["color"] == b["color"]:
        raise ValueError(f"{meta.get('prompt')!r}: needs two objects of two different named colours")
    return _recolour(meta, b["color"], a["color"])


def recoloured(meta: dict) -> dict:
    """The control: ``meta`` with its first object's colour replaced by the first palette colour that neither object
    has (a caption the scene contradicts in a colour word, not in the binding)."""
    from miro.data.shapes.vocab import COLORS

    a, b = meta["include"]
    return _recolour(meta, next(c for c in COLORS if c not in (a.get("color"), b.get("color"))), b["color"])


def conditions(reward_names, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards and masks [3, R] of ``CONDITIONS``: nothing set; alignment = 1; alignment = 0."""
    if "alignment" not in reward_names:
        raise SystemExit(f"the pipeline has no alignment reward (rewards {list(reward_names)})")
    r, k = len(reward_names), list(reward_names).index("alignment")
    values, mask = torch.zeros(3, r), torch.zeros(3, r, dtype=torch.bool)
    values[1, k], mask[1, k], mask[2, k] = 1.0, True, True
    return values.to(device), mask.to(device)


def margins(judge, latents: torch.Tensor, true_prompts: list[str], swap_prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """[N, 3 conditions, draws]: error(swapped) - error(true) per scene, condition and (t, eps) draw; and error(true)."""
    n, draws, device = latents.shape[0], judge.draws, latents.device
    texts = judge.encode(true_prompts + swap_prompts)
    conds = conditions(judge.pipe.reward_names, device)
    rows = [(i, m, c, s) for i in range(n) for c in range(3) for m in range(draws) for s in (0, 1)]
    t = lambda v: torch.tensor(v, dtype=torch.long, device=device)  # noqa: E731
    with torch.no_grad():
        e = judge.errors(latents.float(), t([r[0] for r in rows]), t([r[1] for r in rows]),
                         t([r[0] + r[3] * n for r in rows]), texts, t([r[2] for r in rows]), conds)  # fmt: skip
    e = e.view(n, 3, draws, 2).double().cpu().numpy()
    return e[..., 1] - e[..., 0], e[..., 0]


def token_shift(pipe, true_prompts: list[str], swap_prompts: list[str]) -> dict[str, float]:
    """How much the frozen text encoder's output says about the binding: the relative L2 change of each token's
    embedding between a caption and its swap, the tokens matched by (word piece, occurrence), mean over the prompt
    pairs, for colour words, class words and the rest.  The cross-attention sees the tokens as an unordered set, so
    this change is all the binding signal it gets."""
    from miro.data.shapes.vocab import CLASSES, COLORS

    pairs = sorted(set(zip(true_prompts, swap_prompts)))
    emb, _ = pipe.encode_prompts([p for pair in pairs for p in pair])
    shifts: dict[str, list[float]] = {"colour words": [], "class words": [], "other tokens": []}
    for k, (a, b) in enumerate(pairs):
        keyed = []
        for j, text in enumerate((a, b)):
            pieces = pipe.tokenizer.convert_ids_to_tokens(pipe.tokenizer(text)["input_ids"])
            keyed.append({(w, pieces[:i].count(w)): emb[2 * k + j, i] for i, w in enumerate(pieces)})
        for key, v in keyed[0].items():
            if key in keyed[1]:
                group = "colour words" if key[0] in COLORS else "class words" if key[0] in CLASSES else "other tokens"
                shifts[group].append(float((v - keyed[1][key]).norm() / v.norm()))
    return {g: round(float(np.mean(v)), 4) for g, v in shifts.items() if v}


def summarise(margin: np.ndarray, base: np.ndarray, t: np.ndarray) -> dict:
    """Per condition: share of scenes with a positive mean margin, the mean relative margin, per noise band."""
    out = {}
    bands = {"all": np.ones_like(t, dtype=bool), "t < 0.5": t < 0.5, "t >= 0.5": t >= 0.5}
    for c, name in enumerate(CONDITIONS):
        row = {}
        for band, sel in bands.items():
            m = margin[:, c, sel].mean(1)
            rel = margin[:, c, sel].sum(1) / base[:, c, sel].sum(1)
            row[band] = {"true_preferred_pct": round(100 * float((m > 0).mean()), 1),
                         "mean_relative_margin_pct": round(100 * float(rel.mean()), 2)}  # fmt: skip
        out[name] = row
    gap = margin[:, 1].mean(1) - margin[:, 2].mean(1)
    out["alignment_gap"] = {"mean_margin_at_1_minus_at_0": float(gap.mean()),
                            "scenes_where_alignment_1_prefers_true_more_pct": round(100 * float((gap > 0).mean()), 1)}  # fmt: skip
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", type=Path, default=Path("models/shapes_reference"))
    p.add_argument("--data", type=Path, default=Path("runs/demo/data"), help="a shapes world (its heldout/ prompts)")
    p.add_argument("--images", type=int, default=4, help="oracle scenes per prompt")
    p.add_argument("--draws", type=int, default=8, help="(t, eps) draws, stratified over --t-range")
    p.add_argument("--t-range", type=float, nargs=2, default=[0.05, 0.95])
    p.add_argument("--seed", type=int, default=1, help="the scenes' seeds and the draws' seed")
    p.add_argument("--resolution", type=int, default=32, help="the scenes' size (the model's training size)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, help="write the JSON result here")
    args = p.parse_args(argv)
    if args.images < 1 or args.draws < 1:
        p.error("--images and --draws must be >= 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    from miro.eval.geneval.shapes_oracle import oracle_generate_fn
    from miro.sampling.pipeline import MiroPipeline
    from miro.testtime.intrinsic import RubricVerifier

    torch.set_num_threads(args.threads)
    rows = heldout_rows(args.data, ("color_attr",))
    if not rows:
        raise SystemExit(f"no colour-attribution prompts in {args.data / 'heldout'}")
    pipe = MiroPipeline.from_pretrained(args.pipeline)
    conditions(pipe.reward_names, "cpu")  # no alignment reward: refused before any work
    judge = RubricVerifier(pipe, draws=args.draws, t_range=tuple(args.t_range), seed=args.seed)
    gen = oracle_generate_fn(resolution=args.resolution)
    start = time.perf_counter()
    scenes, true_prompts, swap_prompts, control_prompts = [], [], [], []
    for i, row in enumerate(rows):
        swap, control = swapped(row)["prompt"], recoloured(row)["prompt"]
        for j in range(args.images):
            scenes += gen(row["prompt"], 1, torch.Generator().manual_seed(image_seed(args.seed, i, j)))
            true_prompts.append(row["prompt"])
            swap_prompts.append(swap)
            control_prompts.append(control)
    latents = judge.pil_latents(scenes)
    margin, base = margins(judge, latents, true_prompts, swap_prompts)
    control, control_base = margins(judge, latents, true_prompts, control_prompts)
    t = judge.t_draws(latents).double().cpu().numpy()
    result = {"pipeline": str(args.pipeline), "scenes": len(scenes), "prompts": len(rows), "draws": args.draws,
              "t": [round(float(v), 3) for v in t], "seed": args.seed,
              "seconds": round(time.perf_counter() - start, 1), "conditions": summarise(margin, base, t),
              "control_one_colour_replaced": summarise(control, control_base, t),
              "text_encoder_token_shift": token_shift(pipe, true_prompts, swap_prompts)}  # fmt: skip
    return report(result, args.out)


if __name__ == "__main__":
    main()
