"""Caption alignment for the shapes world: parse a caption back into GenEval metadata, and score how well an
image satisfies it with the programmatic detector and GenEval's own filter and position rule.

``caption_alignment`` is the weight-free ``alignment`` reward: 1 when every clause holds, partial credit for
partly right counts, colours and relations, NaN when the caption is not a shapes-world caption.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from functools import lru_cache

from miro.contracts.geneval_rules import DEFAULT_OPTIONS, RuleOptions, filter_detections, relative_position
from miro.data.shapes.captions import (
    CONNECTORS,
    COPULAS,
    PREFIXES,
    SUFFIXES,
    THERE_IS,
    clause,
    counting_metadata,
    metadata,
    position_metadata,
)
from miro.data.shapes.detector import default_detector
from miro.data.shapes.vocab import CLASSES, COLORS, NUMBER_WORDS, RELATION_PHRASES, SYNONYMS, make_plural

_NOUNS: dict[str, tuple[str, bool]] = {}  # noun form -> (class, plural)
for _cls in CLASSES:
    _NOUNS[_cls], _NOUNS[make_plural(_cls)] = (_cls, False), (_cls, True)
    for _sing, _plur in SYNONYMS.get(_cls, ()):
        _NOUNS[_sing], _NOUNS[_plur] = (_cls, False), (_cls, True)


def _alt(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_COUNT_WORDS = {w: i for i, w in enumerate(NUMBER_WORDS) if 1 <= i <= 4} | {str(i): i for i in range(1, 5)}
_NP_RE = re.compile(
    rf"^(?P<det>a|an|(?:exactly )?(?:{_alt(_COUNT_WORDS)})) (?:(?P<color>{_alt(COLORS)}) )?(?P<noun>{_alt(_NOUNS)})$"
)
_REL_SPLIT = [(rel, phrase) for rel, phrases in RELATION_PHRASES.items() for phrase in phrases]
_REL_SPLIT.sort(key=lambda rp: len(rp[1]), reverse=True)


def _noun_phrase(text: str) -> tuple[dict, bool] | None:
    """"three green triangles" -> (clause, is_counting); None unless it is one well-formed noun phrase."""
    m = _NP_RE.match(text)
    if not m:
        return None
    cls, plural = _NOUNS[m["noun"]]
    det = m["det"]
    if det in ("a", "an"):
        if plural or det != ("an" if (m["color"] or m["noun"])[0] in "aeiou" else "a"):
            return None
        return clause(cls, 1, m["color"]), False
    count = _COUNT_WORDS[det.removeprefix("exactly ")]
    if plural != (count > 1):
        return None
    return clause(cls, count, m["color"]), True


def _strip_frame(text: str) -> list[str]:
    """The caption body with each accepted prefix / suffix removed (all candidate readings)."""
    t = re.sub(r"\s+", " ", text.strip().lower()).rstrip(".").strip()
    bodies = [t]
    for suf in SUFFIXES:
        if t.endswith(suf):
            bodies.append(t[: -len(suf)])
    out = []
    for b in bodies:
        out.append(b)
        for pre in (*PREFIXES, *THERE_IS.values()):
            if b.startswith(pre):
                out.append(b[len(pre) :])
    return out


def _parse_body(body: str) -> dict | None:
    single = _noun_phrase(body)
    if single is not None:
        c, counting = single
        if counting:
            return counting_metadata(c["class"], c["count"], c.get("color"))
        return metadata("colors" if "color" in c else "single_object", [c])
    for rel, phrase in _REL_SPLIT:
        left, sep, right = body.partition(f" {phrase} ")
        if not sep:
            continue
        for cop in COPULAS:
            left = left.removesuffix(f" {cop}")
        a, b = _noun_phrase(left), _noun_phrase(right)
        if a and b and not a[1] and not b[1]:
            return position_metadata(a[0], rel, b[0])
    for conn in CONNECTORS:
        left, sep, right = body.partition(f" {conn} ")
        a, b = (_noun_phrase(left), _noun_phrase(right)) if sep else (None, None)
        if a and b and not a[1] and not b[1]:
            colored = "color" in a[0] or "color" in b[0]
            return metadata("color_attr" if colored else "two_object", [a[0], b[0]])
    return None


@lru_cache(maxsize=65536)
def _parse_cached(text: str) -> dict | None:
    for body in _strip_frame(text):
        meta = _parse_body(body)
        if meta is not None:
            meta["prompt"] = text
            return meta
    return None


def parse_caption(text: str) -> dict | None:
    """GenEval metadata (``tag``, ``include``, optional ``exclude``, ``prompt``) of a caption in any form the
    shapes generator writes, or None when the text is not one of them."""
    if not isinstance(text, str):
        return None
    meta = _parse_cached(text)
    return None if meta is None else copy.deepcopy(meta)


def _pick_objects(dets: Sequence[dict], count: int, color: str | None) -> list[dict]:
    """Up to ``count`` detections of a clause's class, those of the asked colour first (then by score)."""
    if color is None:
        return list(dets[:count])
    right = [d for d in dets if d.get("color") == color]
    return (right + [d for d in dets if d.get("color") != color])[:count]


def alignment_score(meta: dict, detections: Sequence[dict], options: RuleOptions = DEFAULT_OPTIONS) -> float:
    """Graded agreement of detections with GenEval metadata, in [0, 1].

    Detections go through GenEval's per-class filter.  Each include clause scores the mean of its parts:
    count ``min(k, n) / n`` (``min(k, n) / max(k, n)`` when an exclude clause of the same class asks for an
    exact count), colour (the share of the ``n`` wanted objects found in that colour), position (the share of
    object-target pairs in the asked relation, by GenEval's rule).  Exclude clauses of other classes score
    1 or 0.  The result is the mean over clauses.  It is 1 whenever GenEval's rules pass the image; unlike
    them it also gives 1 when the asked colour is found among more objects of the class than asked for.
    """
    detected = filter_detections(detections, meta["tag"], options)
    excl = {c["class"]: c["count"] for c in meta.get("exclude", [])}
    chosen: list[list[dict]] = []
    scores: list[float] = []
    for req in meta["include"]:
        cls, n = req["class"], req["count"]
        dets = detected.get(cls, [])
        k = len(dets)
        exact = excl.get(cls) == n + 1
        parts = [min(k, n) / (max(k, n) if exact else n)]
        picked = _pick_objects(dets, n, req.get("color"))
        if "color" in req:
            parts.append(sum(d.get("color") == req["color"] for d in picked) / n)
        if "position" in req:
            rel, target = req["position"]
            pairs = [(a, b) for a in picked for b in chosen[target]]
            ok = sum(rel in relative_position(a["box"], b["box"], options.position_threshold) for a, b in pairs)
            parts.append(ok / (n * max(1, len(chosen[target]))) if pairs else 0.0)
        chosen.append(picked)
        scores.append(sum(parts) / len(parts))
    included = {req["class"] for req in meta["include"]}
    for cls, count in excl.items():
        if cls not in included:
            scores.append(float(len(detected.get(cls, [])) < count))
    return float(sum(scores) / len(scores)) if scores else float("nan")


def caption_alignment(image, caption: str, detector=None, options: RuleOptions = DEFAULT_OPTIONS) -> float:
    """The ``alignment`` reward: how well ``image`` (PIL or uint8 array) shows ``caption``, in [0, 1]; NaN when
    the caption is not a shapes-world caption.  ``detector`` defaults to the shapes detector."""
    meta = parse_caption(caption)
    if meta is None:
        return float("nan")
    detector = detector or default_detector()
    return alignment_score(meta, detector(image, masks=False), options)
