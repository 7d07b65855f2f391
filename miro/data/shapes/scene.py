"""Scenes: which objects a sample shows (from its GenEval task), where they go, and wrong captions.

Objects never touch (their boxes keep a gap) and keep a margin from the border; a position pair is placed so
that GenEval's own position rule finds exactly the intended relation and no other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from miro.contracts.geneval_rules import relative_position
from miro.data.shapes.captions import clause, counting_metadata, metadata, position_metadata
from miro.data.shapes.config import ShapesConfig
from miro.data.shapes.geometry import MAX_ROTATION, Placed, half_extent
from miro.data.shapes.vocab import OPPOSITE, RELATIONS

_REL_ANGLE = {"left of": np.pi, "right of": 0.0, "above": -np.pi / 2, "below": np.pi / 2}  # A relative to B, y down


class PlacementError(RuntimeError):
    """No non-overlapping layout was found (too many or too large objects for the resolution)."""


@dataclass(frozen=True)
class Vocabulary:
    """The classes and colours a world may use, minus what its held-out split forbids."""

    classes: tuple[str, ...]
    colors: tuple[str, ...]
    heldout_pairs: frozenset[tuple[str, str]]  # (color, class): never shown, never captioned
    heldout_triples: frozenset[tuple[str, str, str]]  # (class A, relation, class B) and converses: never captioned
    class_probs: tuple[float, ...] | None = None  # scene.class_weights normalised over ``classes``; None: uniform

    @classmethod
    def from_config(cls, cfg: ShapesConfig) -> Vocabulary:
        pairs = frozenset(tuple(p.split()) for p in cfg.heldout.color_class)
        triples = set()
        for t in cfg.heldout.relations:
            for rel in RELATIONS:
                a, sep, b = t.partition(f" {rel} ")
                if sep:
                    triples |= {(a, rel, b), (b, OPPOSITE[rel], a)}
        weights = cfg.scene.class_weights
        probs = None
        if weights:
            w = np.array([float(weights.get(c, 1.0)) for c in cfg.scene.classes])
            probs = tuple(float(x) for x in w / w.sum())
        return cls(tuple(cfg.scene.classes), tuple(cfg.scene.colors), pairs, frozenset(triples), probs)

    def pick_classes(self, rng: np.random.Generator, k: int) -> list[str]:
        """``k`` distinct classes for a caption to name, by ``class_probs``.  Without class weights these are the
        draws the generator always made, so a world's images stay those of its seed."""
        if self.class_probs is None:
            if k == 1:
                return [_pick(rng, self.classes)]
            return [str(x) for x in rng.choice(list(self.classes), size=k, replace=False)]
        return [str(x) for x in rng.choice(list(self.classes), size=k, replace=False, p=self.class_probs)]

    def allowed_colors(self, cls: str) -> list[str]:
        return [c for c in self.colors if (c, cls) not in self.heldout_pairs]

    def caption_allowed(self, meta: dict) -> bool:
        """False when the caption's metadata names a held-out colour-class pair or relation triple."""
        inc = meta["include"]
        for c in inc:
            if "color" in c and (c["color"], c["class"]) in self.heldout_pairs:
                return False
            if "position" in c:
                rel, target = c["position"]
                if (c["class"], rel, inc[target]["class"]) in self.heldout_triples:
                    return False
        return True


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _sizes(rng: np.random.Generator, n: int, resolution: int, cfg: ShapesConfig, shrink: float) -> np.ndarray:
    lo, hi = cfg.scene.object_size
    f = n ** -0.4
    return np.maximum(cfg.scene.min_object_px, resolution * rng.uniform(lo * f, hi * f, size=n)) * shrink


def _separated(a, b, gap: float) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def layout(rng: np.random.Generator, specs: list[tuple[str, str]], resolution: int, cfg: ShapesConfig,
           relation: str | None = None) -> list[Placed]:
    """Place objects ``specs[i] = (class, colour)`` without overlap; with ``relation``, ``specs[1]`` (A) is put
    ``relation`` of ``specs[0]`` (B) so that GenEval's position rule returns exactly ``{relation}``."""
    n = len(specs)
    gap, margin = max(2.0, 0.04 * resolution), max(1.0, 0.02 * resolution)
    for attempt in range(14):
        sizes = _sizes(rng, n, resolution, cfg, 0.93**attempt)
        rots = [rng.uniform(-MAX_ROTATION[c], MAX_ROTATION[c]) for c, _ in specs]
        halves = [half_extent(c, s, r) for (c, _), s, r in zip(specs, sizes, rots)]
        if any(2 * max(h) > resolution - 2 * margin for h in halves):
            continue
        for _try in range(40):
            centers: list[tuple[float, float]] = []
            boxes: list[list[float]] = []
            ok = True
            for i, (hx, hy) in enumerate(halves):
                placed = False
                for _ in range(30):
                    if relation is not None and i == 1:
                        th = _REL_ANGLE[relation] + rng.uniform(-np.pi / 6, np.pi / 6)
                        dist = rng.uniform(0.3, 0.9) * resolution
                        cx, cy = centers[0][0] + dist * np.cos(th), centers[0][1] + dist * np.sin(th)
                    else:
                        cx, cy = rng.uniform(margin + hx, resolution - margin - hx), rng.uniform(margin + hy, resolution - margin - hy)
                    box = [cx - hx, cy - hy, cx + hx, cy + hy]
                    if box[0] < margin or box[1] < margin or box[2] > resolution - margin or box[3] > resolution - margin:
                        continue
                    if not all(_separated(box, b, gap) for b in boxes):
                        continue
                    if relation is not None and i == 1 and relative_position(box, boxes[0]) != {relation}:
                        continue
                    centers.append((cx, cy))
                    boxes.append(box)
                    placed = True
                    break
                if not placed:
                    ok = False
                    break
            if ok:
                return [Placed(c, col, ctr, float(s), float(r)) for (c, col), ctr, s, r in zip(specs, centers, sizes, rots)]
    raise PlacementError(f"could not place {n} objects at {resolution} px (relation={relation})")


@dataclass
class SceneDraw:
    """A sampled scene before rendering: the objects and the correct caption's metadata (no prompt yet)."""

    objects: list[Placed]
    meta: dict


def sample_scene(rng: np.random.Generator, task: str, vocab: Vocabulary, cfg: ShapesConfig, resolution: int,
                 mention_colors: bool) -> SceneDraw:
    """Objects for a ``task`` and the metadata of a correct caption.  ``mention_colors`` lets counting and
    position captions name colours (free phrasings only)."""
    classes = list(vocab.classes)

    def color_for(cls: str) -> str:
        return _pick(rng, vocab.allowed_colors(cls))

    relation = None
    if task in ("single_object", "colors"):
        (cls,) = vocab.pick_classes(rng, 1)
        specs = [(cls, color_for(cls))]
        meta = metadata(task, [clause(cls, 1, specs[0][1] if task == "colors" else None)])
    elif task == "counting":
        (cls,) = vocab.pick_classes(rng, 1)
        n = int(_pick(rng, cfg.scene.counts))
        same = n == 1 or rng.random() < 0.5
        col = color_for(cls)
        specs = [(cls, col if same else color_for(cls)) for _ in range(n)]
        meta = counting_metadata(cls, n, col if (same and mention_colors) else None)
    elif task in ("two_object", "color_attr"):
        a, b = vocab.pick_classes(rng, 2)
        ca = color_for(a)
        cb = _pick(rng, [c for c in vocab.allowed_colors(b) if c != ca] or vocab.allowed_colors(b))
        specs = [(a, ca), (b, cb)]
        colored = task == "color_attr"
        meta = metadata(task, [clause(a, 1, ca if colored else None), clause(b, 1, cb if colored else None)])
    elif task == "position":
        for _ in range(100):
            a, b = vocab.pick_classes(rng, 2)
            relation = _pick(rng, RELATIONS)
            if (a, relation, b) not in vocab.heldout_triples:
                break
        else:
            raise PlacementError("every position triple is held out")
        ca, cb = color_for(a), color_for(b)
        specs = [(b, cb), (a, ca)]
        meta = position_metadata(clause(a, 1, ca if mention_colors else None), relation, clause(b, 1, cb if mention_colors else None))
    else:
        raise ValueError(f"unknown task {task!r}")
    mentioned = {c for c, _ in specs}
    others = [c for c in classes if c not in mentioned]
    if others and rng.random() < cfg.scene.extra_objects:
        cap = 5 if resolution >= 48 else 4  # fewer, larger objects at low resolution
        k = min(len(others), 1 + int(rng.random() < 0.5), max(0, cap - len(specs)))
        for c in rng.choice(others, size=k, replace=False):
            specs.append((str(c), color_for(str(c))))
    return SceneDraw(layout(rng, specs, resolution, cfg, relation), meta)


def _with_clause(meta: dict, i: int, **changes) -> dict:
    out = {k: v for k, v in meta.items() if k != "prompt"}
    out["include"] = [dict(c) for c in meta["include"]]
    out["include"][i].update(changes)
    return out


def wrong_caption(rng: np.random.Generator, meta: dict, objects: list[Placed], vocab: Vocabulary, weights: dict[str, float]) -> tuple[str, dict] | None:
    """Metadata that the scene contradicts, of a kind drawn by ``weights`` among those that apply to the task
    (count: counting; colour: captions naming colours; relation: position; class: all), or None if none does.

    The changed clause is made false for sure: a class absent from the scene, a colour no object of that class
    has (in colour attribution, often the other object's colour: a binding error), a count other than the true
    one, a relation other than the placed one.  ``swapped_colors`` exchanges the colours of the two named objects
    (colour attribution; position captions that name colours): every word of the caption is in the image and
    only the binding is false, the hard negative that gives the alignment reward a meaning for binding.  It
    draws no random numbers, so a world that does not weight it is generated exactly as before."""
    present = {o.cls for o in objects}
    inc = meta["include"]
    options: dict[str, list[dict]] = {}
    absent = [c for c in vocab.classes if c not in present]
    if absent:
        i = int(rng.integers(len(inc)))
        cls = _pick(rng, absent)
        changed = _with_clause(meta, i, **{"class": cls})
        if "color" in changed["include"][i] and (changed["include"][i]["color"], cls) in vocab.heldout_pairs:
            changed["include"][i]["color"] = _pick(rng, vocab.allowed_colors(cls))
        if "exclude" in changed:
            changed["exclude"] = [clause(cls, changed["include"][i]["count"] + 1)]
        options["wrong_class"] = [changed]
    if meta["tag"] == "counting":
        n = inc[0]["count"]
        new = _pick(rng, [k for k in range(1, 5) if k != n])
        options["wrong_count"] = [counting_metadata(inc[0]["class"], new, inc[0].get("color"))]
    colored = [i for i, c in enumerate(inc) if "color" in c]
    if colored:
        i = _pick(rng, colored)
        cls = inc[i]["class"]
        has = {o.color for o in objects if o.cls == cls}
        other = [inc[j]["color"] for j in colored if j != i and inc[j]["color"] not in has]
        pool = [c for c in vocab.allowed_colors(cls) if c not in has]
        if other and rng.random() < 0.5:
            pool = [c for c in other if (c, cls) not in vocab.heldout_pairs] or pool
        if pool:
            options["wrong_color"] = [_with_clause(meta, i, color=_pick(rng, pool))]
    pair = [i for i in colored if inc[i]["count"] == 1]
    if len(pair) == 2:
        (i, j), (ci, cj) = pair, (inc[pair[0]]["color"], inc[pair[1]]["color"])
        has_i = {o.color for o in objects if o.cls == inc[i]["class"]}
        has_j = {o.color for o in objects if o.cls == inc[j]["class"]}
        if ci != cj and cj not in has_i and ci not in has_j:
            options["swapped_colors"] = [_with_clause(_with_clause(meta, i, color=cj), j, color=ci)]
    if meta["tag"] == "position":
        rel, target = inc[1]["position"]
        new = _pick(rng, [r for r in RELATIONS if r != rel])
        options["wrong_relation"] = [_with_clause(meta, 1, position=[new, target])]
    kinds = [k for k in options if weights.get(k, 0.0) > 0 and vocab.caption_allowed(options[k][0])]
    if not kinds:
        return None
    p = np.array([weights[k] for k in kinds], dtype=np.float64)
    kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
    return kind, options[kind][0]
