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
change between a caption and its swap; ``binding_probe`` whether it is *readable*: a linear probe from one colour
word's token to its noun's class, on colour-class pairs it was not fitted on, from the frozen encoder's tokens, from
the model's projection of them and from its condition tokens after the refiner (section 37).  Reported per condition: the share of scenes whose mean margin is positive
(chance 50%), the mean margin relative to the true caption's error, and both again per noise band (t < 0.5,
t >= 0.5).

    python scripts/experiments/binding_likelihood.py --pipeline models/shapes_reference --data runs/demo/data \\
        --images 4 --draws 8 --out runs/binding_likelihood.json
"""

from __future__ import annotations

import argparse
import json
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


def probe_items(colors, classes, test_pairs) -> tuple[list[str], list[tuple[int, int, int, bool]]]:
    """Every two-object colour-attribution caption of the vocabulary ("a photo of a red circle and a blue square",
    two colours and two classes, each different), and per caption and named object one item: (caption index,
    which object, the index of its class, whether its (colour, class) pair is in ``test_pairs``)."""
    from miro.data.shapes.vocab import with_article

    captions, items = [], []
    for c1 in colors:
        for c2 in colors:
            for s1 in classes:
                for s2 in classes:
                    if c1 == c2 or s1 == s2:
                        continue
                    k = len(captions)
                    captions.append(f"a photo of {with_article(c1)} {s1} and {with_article(c2)} {s2}")
                    items += [(k, 0, classes.index(s1), (c1, s1) in test_pairs),
                              (k, 1, classes.index(s2), (c2, s2) in test_pairs)]  # fmt: skip
    return captions, items


def fit_probe(x_train: torch.Tensor, y_train: torch.Tensor, classes: int, l2: float = 1e-3, iters: int = 200):
    """A multinomial logistic regression (L-BFGS, standardised features): the linear read-out of a token."""
    mean, std = x_train.mean(0), x_train.std(0).clamp(min=1e-6)
    w = torch.zeros(x_train.shape[1], classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    x = ((x_train - mean) / std).double()
    opt = torch.optim.LBFGS([w, b], max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y_train) + l2 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lambda z: (((z - mean) / std).double() @ w + b).detach()


def _probe_scores(logits: torch.Tensor, bound: torch.Tensor, other: torch.Tensor) -> tuple[float, float]:
    """(two-way %, top-1 %): the bound class scored above the caption's other class; the bound class the argmax."""
    idx = torch.arange(len(logits))
    two_way = (logits[idx, bound] > logits[idx, other]).float().mean()
    return round(100 * float(two_way), 1), round(100 * float((logits.argmax(1) == bound).float().mean()), 1)


def world_heldout_pairs(data: Path) -> list[tuple[str, str]]:
    """The (colour, class) pairs a shapes world never shows nor captions (``world.json``), [] without one."""
    world = data / "world.json"
    if not world.is_file():
        return []
    names = json.loads(world.read_text()).get("config", {}).get("heldout", {}).get("color_class", [])
    return [tuple(n.split(" ", 1)) for n in names]


def binding_probe(pipe, splits: dict[str, list[tuple[str, str]]], colors=None, classes=None, seed: int = 0) -> dict:
    """Is the binding linearly readable from one token?  From each colour word's token, a linear probe predicts the
    class of the noun it is bound to.  Per split (name -> test pairs): trained on the vocabulary's captions without a
    test pair, tested on the colour tokens bound by a test pair (e.g. the world's held-out pairs, which the model
    never saw: GenEval's colour-attribution prompts each hold one).  Read out of the frozen encoder's tokens and of
    the model's condition tokens (``encode_condition``, rewards null: after ``text_proj`` and the refiner, what the
    U-Net's cross-attention reads), and between the two (``projected``: ``text_proj`` alone, before the refiner);
    as a control, a random Gaussian map of the encoder's tokens to the condition's width (``random projection``:
    what a map of that width keeps when nothing trained it).  ``colors`` / ``classes``: the vocabulary (default
    the shapes world's).  ``two_way_pct``: the bound class scores above the caption's other class (chance 50%: a
    token that knows the caption's two classes and not which is its own); ``top1_pct``: among all classes;
    ``train_two_way_pct``: the same on the probe's own training items (how much is readable at all)."""
    from miro.data.shapes.vocab import CLASSES, COLORS

    colors, classes = list(colors or COLORS), list(classes or CLASSES)
    captions, _ = probe_items(colors, classes, ())
    emb, mask = pipe.encode_prompts(captions)
    model = pipe.transformer
    with torch.no_grad():
        cond = model.encode_condition(emb, mask)["cond"][:, -emb.shape[1] :].float().cpu()
        normed = model.text_norm(emb.to(model.text_proj.weight.dtype))
        projected = model.text_proj(normed).float().cpu()
        gen = torch.Generator().manual_seed(seed)
        random_map = torch.randn(normed.shape[-1], projected.shape[-1], generator=gen) / normed.shape[-1] ** 0.5
        randomised = normed.float().cpu() @ random_map
    emb = emb.float().cpu()
    ids = pipe.tokenizer(captions, padding="max_length", max_length=emb.shape[1], truncation=True)["input_ids"]
    colour_ids = {pipe.tokenizer.convert_tokens_to_ids(c) for c in colors}
    at = []  # the positions of each caption's two colour words
    for k, row in enumerate(ids):
        at.append([i for i, tok in enumerate(row) if tok in colour_ids])
        if len(at[-1]) != 2:
            raise ValueError(f"{captions[k]!r}: expected two single-piece colour words, found {len(at[-1])}")
    out = {"chance_top1_pct": round(100 / len(classes), 1)}
    for split, pairs in splits.items():
        _, items = probe_items(colors, classes, set(pairs))
        rows = torch.tensor([k for k, *_ in items])
        cols = torch.tensor([at[k][obj] for k, obj, *_ in items])
        y = torch.tensor([c for _, _, c, _ in items])
        other = torch.tensor([items[i ^ 1][2] for i in range(len(items))])  # the caption's other object's class
        test = torch.tensor([t for *_, t in items])
        train = ~(test | test.view(-1, 2).flip(1).reshape(-1))  # neither object of the caption is a test pair
        row = {"test_pairs": [" ".join(p) for p in pairs], "train_items": int(train.sum()), "test_items": int(test.sum())}
        for name, tokens in (("text encoder", emb), ("random projection", randomised), ("projected", projected),
                             ("condition tokens", cond)):  # fmt: skip
            feats = tokens[rows, cols]
            probe = fit_probe(feats[train], y[train], len(classes))
            (two_way, top1), (train_two_way, _) = (_probe_scores(probe(feats[sel]), y[sel], other[sel]) for sel in (test, train))
            row[name] = {"two_way_pct": two_way, "top1_pct": top1, "train_two_way_pct": train_two_way}
        out[split] = row
    return out


def probe_splits(data: Path, seed: int, colors, classes) -> dict[str, list[tuple[str, str]]]:
    """The probe's test pairs: the world's held-out pairs within the vocabulary (when ``data`` has a world.json),
    and a quarter of the vocabulary's pairs drawn with ``seed`` (pairs the model saw in training, the probe not)."""
    pairs = [(c, s) for c in colors for s in classes]
    draw = np.random.default_rng(seed).permutation(len(pairs))[: max(1, len(pairs) // 4)]
    splits = {"random pairs": [pairs[i] for i in draw]}
    held = [p for p in world_heldout_pairs(data) if p in pairs]
    return {"world held-out pairs": held, **splits} if held else splits


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
    p.add_argument("--probe-vocab", type=int, nargs=2, default=None, metavar=("COLOURS", "CLASSES"),
                   help="the binding probe's vocabulary: the world's first COLOURS colours and CLASSES classes "
                   "(default all: 5,040 captions)")
    p.add_argument("--probe-only", action="store_true",
                   help="only the binding probe (30 s; no scenes, no likelihood; any model, with rewards or not)")
    p.add_argument("--out", type=Path, help="write the JSON result here")
    args = p.parse_args(argv)
    if args.images < 1 or args.draws < 1:
        p.error("--images and --draws must be >= 1")
    if args.probe_vocab and min(args.probe_vocab) < 2:
        p.error("--probe-vocab needs at least 2 colours and 2 classes (a caption names two of each)")
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
    from miro.data.shapes.vocab import CLASSES, COLORS

    colors, classes = (COLORS[: args.probe_vocab[0]], CLASSES[: args.probe_vocab[1]]) if args.probe_vocab else (COLORS, CLASSES)
    pipe = MiroPipeline.from_pretrained(args.pipeline)

    def probe() -> dict:
        return binding_probe(pipe, probe_splits(args.data, args.seed, colors, classes), colors, classes, args.seed)

    if args.probe_only:
        return report({"pipeline": str(args.pipeline), "seed": args.seed, "binding_probe": probe()}, args.out)
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
              "text_encoder_token_shift": token_shift(pipe, true_prompts, swap_prompts),
              "binding_probe": probe()}
    return report(result, args.out)


if __name__ == "__main__":
    main()
