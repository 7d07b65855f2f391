"""Captions: GenEval-style metadata (the caption's intent) and the sentences that say it.

A caption is always written *from* its metadata (``tag``, ``include``, optional ``exclude``), either in GenEval's
exact phrasing (``geneval_prompt``) or in a freer one (``free_prompt``), so ``alignment.parse_caption`` can
recover the metadata from the text.  The phrase tables here are the single source for writer and parser.
"""

from __future__ import annotations

import numpy as np

from miro.data.shapes.vocab import NUMBER_WORDS, RELATION_PHRASES, SYNONYMS, make_plural, with_article

# Free phrasings: what may come before and after the noun phrases.
PREFIXES: tuple[str, ...] = ("a photo of ", "an image of ", "a picture of ", "a drawing of ", "a simple drawing of ")
THERE_IS: dict[bool, str] = {False: "there is ", True: "there are "}  # keyed by "first noun phrase is plural"
SUFFIXES: tuple[str, ...] = (" on a plain background", " on a beige background", " in the picture")
CONNECTORS: tuple[str, ...] = ("and", "together with", "as well as", "with")  # two objects, no relation
COPULAS: tuple[str, ...] = ("is", "placed", "sits")  # "a star is left of a circle"


def clause(cls: str, count: int = 1, color: str | None = None, position: tuple[str, int] | None = None) -> dict:
    """One ``include`` item with GenEval's key order (class, count, color, position)."""
    c: dict = {"class": cls, "count": int(count)}
    if color is not None:
        c["color"] = color
    if position is not None:
        c["position"] = [position[0], int(position[1])]
    return c


def metadata(tag: str, include: list[dict], exclude: list[dict] | None = None, prompt: str | None = None) -> dict:
    """A GenEval metadata row with GenEval's key order (tag, include, exclude, prompt)."""
    m: dict = {"tag": tag, "include": include}
    if exclude:
        m["exclude"] = exclude
    if prompt is not None:
        m["prompt"] = prompt
    return m


def counting_metadata(cls: str, count: int, color: str | None = None) -> dict:
    return metadata("counting", [clause(cls, count, color)], [clause(cls, count + 1)])


def position_metadata(a: dict, rel: str, b: dict) -> dict:
    """"A rel B": GenEval lists the target B first and gives A the position ``[rel, 0]``."""
    return metadata("position", [clause(b["class"], 1, b.get("color")), clause(a["class"], 1, a.get("color"), (rel, 0))])


def _np_geneval(c: dict, counting: bool) -> str:
    if counting:
        noun = c["class"] if c["count"] == 1 else make_plural(c["class"])
        return f"{NUMBER_WORDS[c['count']]} {c['color'] + ' ' if 'color' in c else ''}{noun}"
    return with_article(f"{c['color']} {c['class']}" if "color" in c else c["class"])


def geneval_prompt(meta: dict) -> str:
    """The prompt exactly as GenEval's ``create_prompts.py`` writes it (extended to coloured counting and
    coloured position clauses, which GenEval never generates)."""
    tag, inc = meta["tag"], meta["include"]
    if tag == "position":
        return f"a photo of {_np_geneval(inc[1], False)} {inc[1]['position'][0]} {_np_geneval(inc[0], False)}"
    return "a photo of " + " and ".join(_np_geneval(c, tag == "counting") for c in inc)


def _noun(cls: str, plural: bool, rng: np.random.Generator, synonyms: float) -> str:
    if cls in SYNONYMS and rng.random() < synonyms:
        sing, plur = SYNONYMS[cls][int(rng.integers(len(SYNONYMS[cls])))]
        return plur if plural else sing
    return make_plural(cls) if plural else cls


def _np_free(c: dict, counting: bool, rng: np.random.Generator, synonyms: float) -> str:
    n = c["count"]
    noun = _noun(c["class"], n > 1, rng, synonyms)
    body = f"{c['color']} {noun}" if "color" in c else noun
    if not counting:
        return with_article(body)
    style = rng.random()
    number = str(n) if style < 0.2 else (f"exactly {NUMBER_WORDS[n]}" if style < 0.3 else NUMBER_WORDS[n])
    return f"{number} {body}"


def free_prompt(meta: dict, rng: np.random.Generator, synonyms: float = 0.15) -> str:
    """A freer sentence for the same metadata ("three green triangles on a plain background", "there is a blue
    star above an orange hexagon", "A disc together with a cross.")."""
    tag, inc = meta["tag"], meta["include"]
    counting = tag == "counting"
    nps = [_np_free(c, counting, rng, synonyms) for c in inc]
    if tag == "position":
        rel = inc[1]["position"][0]
        phrases = RELATION_PHRASES[rel]
        relp = phrases[int(rng.integers(len(phrases)))]
        a, b = nps[1], nps[0]
        if rng.random() < 0.25:
            body, lead = f"{a} {COPULAS[int(rng.integers(len(COPULAS)))]} {relp} {b}", False
        else:
            body, lead = f"{a} {relp} {b}", True
    else:
        conn = CONNECTORS[int(rng.integers(len(CONNECTORS)))]
        body, lead = f" {conn} ".join(nps), True
    if lead:
        r = rng.random()
        if r < 0.35:
            body = PREFIXES[int(rng.integers(len(PREFIXES)))] + body
        elif r < 0.55:
            body = THERE_IS[inc[1 if tag == "position" else 0]["count"] > 1] + body
    if rng.random() < 0.3:
        body += SUFFIXES[int(rng.integers(len(SUFFIXES)))]
    if rng.random() < 0.3:
        body = body[0].upper() + body[1:]
    if rng.random() < 0.3:
        body += "."
    return body
