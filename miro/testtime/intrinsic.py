"""The model as its own judge: reward-conditional and prompt-conditional likelihood ratios of an image under the
velocity network itself (testtime.md 3.4, Meta-TTRL's "metacognition").

Why it works: the flow-matching loss ``||v(x_t, c) - u||^2`` (``u = eps - x_0``, ``x_t = (1 - t) x_0 + t eps``,
the convention of ``miro.flow``) is, averaged over (t, eps), a bound on the negative log-likelihood of x_0 under
the condition c.  So the difference of the losses under two conditions estimates their log-likelihood ratio:
the condition that explains the image better denoises it better.  A reward-conditioned model has learned what
a high and a low value of each reward look like, so

    intrinsic_k(x_0) = E_{t, eps} [ ||v(x_t, s_k = 0) - u||^2 - ||v(x_t, s_k = 1) - u||^2 ]

is positive when the model reads the image as high in reward k.  The same (t, eps) are used for both
conditions of a difference (common random numbers: the difference has far less variance than either loss),
and the same draws for every image and every call (a fixed set of ``draws`` from ``seed``, t stratified over
``t_range``), so a score is a deterministic function of the image and candidates are compared on equal terms.
Rewards other than k take ``others`` (None: their learned null embedding, the reward's marginal; or a value).

``RubricVerifier`` is the same ratio on the text condition, a rubric of sub-prompt probes: the prompt against
counterfactual prompts that change one colour, one class, one count or the relation ("a red circle" against "a
blue circle"), words parsed with the shapes world's vocabulary (``miro.data.shapes.vocab``).  A probe's margin
``E[||v(x_t, c') - u||^2 - ||v(x_t, c) - u||^2]`` is positive when the image fits the prompt better than the
counterfactual; ``rubric`` is the mean over kinds of the mean margin of each kind.

Both follow the scorer API (grouped: ``outputs``, ``score_dict``) so a ``Verifier`` can use them, declare their
cost in network evaluations (``nfe(prompts)``), and are differentiable (``score_latents_dict``,
``score_tensor_dict``) for ReNO.  Cost per image: intrinsic ``2 x rewards x draws`` forwards; rubric
``draws x (1 + counterfactuals)``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from miro.contracts.rewards import our_names
from miro.utils.config import ConfigError, require, require_choice

DEFAULT_T_RANGE = (0.1, 0.9)
RUBRIC_AGGREGATES = ("mean", "min")


def _check_t_range(key: str, t_range) -> tuple[float, float]:
    ok = isinstance(t_range, Sequence) and not isinstance(t_range, str) and len(t_range) == 2
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in t_range)
    require(ok and 0.0 < float(t_range[0]) < float(t_range[1]) <= 1.0, key, t_range,
            "must be [t_lo, t_hi] with 0 < t_lo < t_hi <= 1")  # fmt: skip
    return float(t_range[0]), float(t_range[1])


def _check_common(draws, t_range, batch_size) -> tuple[float, float]:
    require(isinstance(draws, int) and not isinstance(draws, bool) and draws >= 1, "draws", draws,
            "must be a positive integer (the (t, eps) pairs per image)")  # fmt: skip
    _check_t_range("t_range", t_range)
    require(
        isinstance(batch_size, int) and batch_size >= 1,
        "batch_size",
        batch_size,
        "must be a positive integer",
    )
    return float(t_range[0]), float(t_range[1])


class _LikelihoodJudge:
    """Shared machinery: fixed (t, eps) draws, images to latents, and batched flow-matching errors of rows
    (image, draw, text, reward condition)."""

    def __init__(self, pipe, draws: int, t_range, seed: int, batch_size: int, mixed_precision: str):
        self.pipe = pipe
        self.draws = draws
        self.t_range = _check_common(draws, t_range, batch_size)
        self.seed = int(seed)
        self.batch_size = batch_size
        self.autocast = None
        tr = pipe.transformer
        if getattr(tr, "dtype", torch.float32) == torch.float32 and mixed_precision != "no":
            from miro.utils.precision import precision_dtype, resolve_precision

            precision = resolve_precision(mixed_precision, torch.device(tr.device).type)
            self.autocast = None if precision == "no" else precision_dtype(precision)
        self._cache: dict = {}

    def _draws(self, shape: tuple[int, ...], device) -> tuple[torch.Tensor, torch.Tensor]:
        """t [M] (stratified over ``t_range``) and eps [M, *shape]: the same for every image and call."""
        key = (tuple(shape), str(device))
        if key not in self._cache:
            g = torch.Generator().manual_seed(self.seed)
            u = self._positions(g)
            eps = torch.randn((self.draws, *shape), generator=g, dtype=torch.float32)
            self._cache = {key: (self._stratified(u, self.t_range).to(device), eps.to(device))}
        return self._cache[key]

    def _positions(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """The draws' positions u [M] in [0, 1), one per stratum (the first numbers of the seed's generator)."""
        g = generator if generator is not None else torch.Generator().manual_seed(self.seed)
        offsets = torch.rand(self.draws, generator=g, dtype=torch.float64)
        return (torch.arange(self.draws, dtype=torch.float64) + offsets) / self.draws

    @staticmethod
    def _stratified(u: torch.Tensor, t_range: tuple[float, float]) -> torch.Tensor:
        """Positions u in [0, 1) mapped into ``t_range`` (fp32)."""
        lo, hi = t_range
        return (lo + (hi - lo) * u).float()

    def t_draws(self, latents: torch.Tensor) -> torch.Tensor:
        """The noise level t of each fixed draw [draws] (the order of the per-draw rows of ``differences()`` and
        ``margins(per_draw=True)``)."""
        return self._draws(tuple(latents.shape[1:]), latents.device)[0]

    def latents(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] images in [0, 1] -> the model's latents on the transformer's device (differentiable for the
        identity autoencoder)."""
        ae = self.pipe.autoencoder
        weight = next(ae.parameters(), None)
        x = images * 2 - 1
        z = ae.encode(x if weight is None else x.to(weight.device)).float()
        return z.to(self.pipe.transformer.device)

    def pil_latents(self, images: Sequence) -> torch.Tensor:
        from miro.testtime.differentiable import pil_to_tensor

        with torch.no_grad():
            return self.latents(pil_to_tensor(images))

    def errors(self, x0: torch.Tensor, img: torch.Tensor, draw: torch.Tensor, text_idx: torch.Tensor, texts,
               cond_idx: torch.Tensor, conds, drop_text: bool = False, t_rows: torch.Tensor | None = None,
               ) -> torch.Tensor:  # fmt: skip
        """Per row, the mean squared error ``||v(x_t, c) - u||^2 / D`` (fp32) of image ``img`` at draw ``draw`` under
        text ``texts[text_idx]`` and reward condition ``conds[cond_idx]``; rows are run ``batch_size`` at a time.

        ``texts`` is (embeddings [T, L, D], mask [T, L]); ``conds`` is (rewards [Q, R], mask [Q, R]) or None.
        ``t_rows`` [rows] replaces the draws' own t row by row (the same eps: per-reward noise bands)."""
        model = self.pipe.transformer
        device = x0.device
        t_all, eps_all = self._draws(tuple(x0.shape[1:]), device)
        emb, mask = texts
        dtype = getattr(model, "dtype", torch.float32)
        out = []
        for start in range(0, img.shape[0], self.batch_size):
            sl = slice(start, start + self.batch_size)
            b, m = img[sl], draw[sl]
            t = t_all[m] if t_rows is None else t_rows[sl]
            te = t.view(-1, *([1] * (x0.dim() - 1)))
            eps = eps_all[m]
            x_t = (1 - te) * x0[b] + te * eps
            u = eps - x0[b]
            kwargs = {"text": emb[text_idx[sl]].to(dtype), "text_mask": mask[text_idx[sl]],
                      "drop_text": torch.full((len(b),), drop_text, dtype=torch.bool, device=device)}  # fmt: skip
            if conds is not None:
                kwargs["rewards"], kwargs["reward_mask"] = conds[0][cond_idx[sl]], conds[1][cond_idx[sl]]
            ctx = (
                torch.autocast(device.type, dtype=self.autocast)
                if self.autocast is not None
                else nullcontext()
            )
            with ctx:
                v = model(x_t.to(dtype), t, **kwargs).float()
            out.append((v - u).pow(2).flatten(1).mean(1))
        return torch.cat(out) if out else torch.zeros(0, device=device)

    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pipe.encode_prompts(list(prompts))

    def score_tensor_dict(self, images: torch.Tensor, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Differentiable scores of images [N, 3, H, W] in [0, 1] (``score_latents_dict`` of the subclass)."""
        return self.score_latents_dict(self.latents(images), prompts)

    def score_dict(self, images: Sequence, prompts: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        prompts = list(prompts) if prompts is not None else [""] * len(images)
        with torch.no_grad():
            out = self.score_latents_dict(self.pil_latents(images), prompts)
        return {k: v.detach().double().cpu().numpy() for k, v in out.items()}


class IntrinsicVerifier(_LikelihoodJudge):
    """Per reward k, the model's likelihood ratio of the image under s_k = 1 against s_k = 0 (module docstring).

    Args:
        pipe: a ``MiroPipeline`` (or anything with ``transformer``, ``autoencoder``, ``encode_prompts``,
            ``reward_names``).
        rewards: the model's rewards to judge (default all); outputs are ``intrinsic_<reward>``.
        draws: (t, eps) pairs per image; t_range: the noise levels they are stratified over.
        t_ranges: {reward: [t_lo, t_hi]}, a reward's own noise band (the others keep ``t_range``): the same eps
            and strata, t mapped into the band.  Why: a reward of fine detail (pixel noise) is visible to the
            network only at low t, where x_t still shows it, and one of colour or layout at higher t
            (``scripts/experiments/intrinsic_agreement.py`` measures which band agrees with which reward).
        others: the other rewards' targets: None (their null embedding) or a value in [0, 1].
        text: condition on the prompt (False: the null text, a prompt-free judgement).
        seed: of the fixed draws.  batch_size: network rows per forward.
    """

    name = "intrinsic"

    def __init__(self, pipe, rewards: Sequence[str] | None = None, draws: int = 4, t_range=DEFAULT_T_RANGE,
                 others: float | None = None, text: bool = True, seed: int = 0, batch_size: int = 64,
                 mixed_precision: str = "auto", prefix: str = "intrinsic_",
                 t_ranges: Mapping[str, Sequence[float]] | None = None):  # fmt: skip
        super().__init__(pipe, draws, t_range, seed, batch_size, mixed_precision)
        names = list(pipe.reward_names)
        if not names:
            raise ConfigError(
                "intrinsic verifier: this model has no reward conditioning (reward_names=[]); nothing to judge"
            )
        rewards = our_names(names if rewards is None else rewards, names)  # the authors' keys name the model's rewards
        unknown = [r for r in rewards if r not in names]
        require(not unknown and bool(rewards) and len(set(rewards)) == len(rewards), "intrinsic.rewards", rewards,
                f"must be a non-empty subset of the model's rewards {names}, each once")  # fmt: skip
        require(others is None or (isinstance(others, (int, float)) and 0.0 <= float(others) <= 1.0), "intrinsic.others",
                others, "must be null (the other rewards' null embedding) or a target in [0, 1]")  # fmt: skip
        self.model_rewards, self.rewards, self.others, self.text = names, rewards, others, bool(text)
        require(t_ranges is None or isinstance(t_ranges, Mapping), "intrinsic.t_ranges", t_ranges,
                "must be a mapping {reward: [t_lo, t_hi]} (or null: every reward on t_range)")  # fmt: skip
        own = {our_names([k], names)[0]: v for k, v in (t_ranges or {}).items()}
        require(set(own) <= set(rewards), "intrinsic.t_ranges", dict(t_ranges or {}),
                f"names rewards this verifier does not judge; judged: {rewards}")  # fmt: skip
        # the noise band of every judged reward, in self.rewards' order
        self.t_ranges = [_check_t_range(f"intrinsic.t_ranges.{r}", own[r]) if r in own else self.t_range
                         for r in rewards]  # fmt: skip
        self.outputs = tuple(f"{prefix}{r}" for r in rewards)
        self.text_outputs = frozenset(self.outputs) if self.text else frozenset()

    def nfe(self, prompts: Sequence[str]) -> int:
        return len(prompts) * 2 * len(self.rewards) * self.draws

    def _conditions(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """[2K, R] targets and masks: row 2j has s_k = 0, row 2j + 1 has s_k = 1 for the j-th judged reward k."""
        r = len(self.model_rewards)
        base = torch.zeros(r) if self.others is None else torch.full((r,), float(self.others))
        rows, masks = [], []
        for name in self.rewards:
            k = self.model_rewards.index(name)
            for value in (0.0, 1.0):
                row = base.clone()
                row[k] = value
                mask = torch.full((r,), self.others is not None, dtype=torch.bool)
                mask[k] = True
                rows.append(row)
                masks.append(mask)
        return torch.stack(rows).to(device), torch.stack(masks).to(device)

    def score_latents_dict(self, latents: torch.Tensor, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """{output: [B]} on latents [B, C, h, w] (differentiable when grad is enabled)."""
        diff = self.differences(latents, prompts).mean(1)  # [B, K]
        return {name: diff[:, j] for j, name in enumerate(self.outputs)}

    def differences(self, latents: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """[B, draws, K]: each (t, eps) draw's error difference ``e(s_k = 0) - e(s_k = 1)`` apart (``reward_t_draws()``
        gives their t; the score is their mean), for studies of which noise levels carry which reward."""
        b = latents.shape[0]
        if len(prompts) != b:
            raise ValueError(f"{b} images but {len(prompts)} prompts")
        device = latents.device
        k2, m = 2 * len(self.rewards), self.draws
        idx = torch.arange(b * m * k2, device=device)
        img, draw, cond = idx // (m * k2), (idx // k2) % m, idx % k2
        texts = self.encode(prompts)
        t_rows = None
        if any(r != self.t_range for r in self.t_ranges):
            t_rows = self.reward_t_draws(latents)[cond // 2, draw]
        e = self.errors(latents.float(), img, draw, img, texts, cond, self._conditions(device),
                        drop_text=not self.text, t_rows=t_rows)  # fmt: skip
        e = e.view(b, m, len(self.rewards), 2)
        return e[..., 0] - e[..., 1]

    def reward_t_draws(self, latents: torch.Tensor) -> torch.Tensor:
        """[K, draws]: the noise level of each draw for each judged reward (its band, or ``t_range``)."""
        u = self._positions()
        return torch.stack([self._stratified(u, r) for r in self.t_ranges]).to(latents.device)

    def score(self, images: Sequence, prompts: Sequence[str] | None = None) -> np.ndarray:
        if len(self.outputs) != 1:
            raise TypeError(f"scorer {self.name!r} fills {list(self.outputs)}; use score_dict()")
        return self.score_dict(images, prompts)[self.outputs[0]]


# ---------------------------------------------------------------------------------------------- rubric


@dataclass(frozen=True)
class Probe:
    """One rubric item: the ``kind`` of word changed (colour, class, count, relation), the word, its replacement
    and the counterfactual prompt."""

    kind: str
    word: str
    replacement: str
    prompt: str


@lru_cache(maxsize=1)
def _vocabulary():
    from miro.data.shapes.vocab import (
        CLASSES,
        COLORS,
        NUMBER_WORDS,
        OPPOSITE,
        RELATION_PHRASES,
        SYNONYMS,
        make_plural,
    )

    nouns: dict[str, tuple[str, bool]] = {}
    for cls in CLASSES:
        nouns[cls], nouns[make_plural(cls)] = (cls, False), (cls, True)
        for sing, plur in SYNONYMS.get(cls, ()):
            nouns[sing], nouns[plur] = (cls, False), (cls, True)
    relations = {phrase: rel for rel, phrases in RELATION_PHRASES.items() for phrase in phrases}
    counts = {NUMBER_WORDS[i]: i for i in (2, 3, 4)}
    return COLORS, CLASSES, nouns, relations, OPPOSITE, RELATION_PHRASES, counts, make_plural


def _alternation(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


def _fix_article(text: str, start: int) -> str:
    """Re-choose "a" / "an" right before position ``start`` for the word now there."""
    m = re.search(r"\b(a|an) $", text[:start])
    if not m:
        return text
    article = "an " if text[start : start + 1] in tuple("aeiou") else "a "
    return text[: m.start()] + article + text[start:]


def _replace(text: str, start: int, end: int, new: str) -> str:
    return _fix_article(text[:start] + new + text[end:], start)


def counterfactual_probes(prompt: str, max_per_word: int = 3) -> list[Probe]:
    """The rubric probes of ``prompt``: for every colour, class noun, count word and relation phrase of the shapes
    world's vocabulary in it, up to ``max_per_word`` prompts with that one word changed (other colours / classes
    / counts not already in the prompt, in vocabulary order after the word; the opposite relation)."""
    colors, classes, nouns, relations, opposite, phrases, counts, make_plural = _vocabulary()
    low = prompt.lower()
    probes: list[Probe] = []
    present_colors = {c for c in colors if re.search(rf"\b{c}\b", low)}
    present_classes = {nouns[w][0] for w in nouns if re.search(rf"\b{re.escape(w)}\b", low)}

    def rotate(items, word):
        i = items.index(word) if word in items else -1
        return [items[(i + j) % len(items)] for j in range(1, len(items) + 1)]

    for m in re.finditer(rf"\b({_alternation(colors)})\b", low):
        alts = [c for c in rotate(list(colors), m[1]) if c not in present_colors][:max_per_word]
        probes += [Probe("color", m[1], a, _replace(prompt, m.start(), m.end(), a)) for a in alts]
    for m in re.finditer(rf"\b({_alternation(nouns)})\b", low):
        cls, plural = nouns[m[1]]
        alts = [c for c in rotate(list(classes), cls) if c not in present_classes][:max_per_word]
        probes += [Probe("class", m[1], (make_plural(a) if plural else a), _replace(prompt, m.start(), m.end(),
                   make_plural(a) if plural else a)) for a in alts]  # fmt: skip
    for m in re.finditer(rf"\b({_alternation(counts)})\b", low):
        alts = [w for w in rotate(list(counts), m[1]) if w != m[1]][:max_per_word]
        probes += [Probe("count", m[1], a, _replace(prompt, m.start(), m.end(), a)) for a in alts]
    for m in re.finditer(rf"\b({_alternation(relations)})\b", low):
        new = phrases[opposite[relations[m[1]]]][0]
        probes.append(Probe("relation", m[1], new, _replace(prompt, m.start(), m.end(), new)))
    return probes


class RubricVerifier(_LikelihoodJudge):
    """The prompt against counterfactual prompts, as the model's likelihood ratio (module docstring).

    Output ``rubric`` (NaN for a prompt with no probe word).  ``reward_targets``: the reward condition of every
    row (None: every reward's null embedding; or a value in [0, 1] for all rewards).  ``aggregate``: how an image's
    probe margins become its score: "min" (the default: the worst probe, so the image is judged by the
    counterfactual that fits it best, as a classifier would) or "mean" (the mean over kinds of each kind's mean
    margin, the default before session 24).  A failing image usually fails on one word, which the mean dilutes
    among the others: on the shapes reference "min" ranked a passing candidate above a failing one of the same
    prompt more often (pairwise AUC 0.71 against 0.64), and best-of-8 by it alone gained 12.5 GenEval points on
    other seeds (docs/testtime.md, session 24)."""

    name = "rubric"
    outputs = ("rubric",)
    text_outputs = frozenset(outputs)

    def __init__(self, pipe, draws: int = 4, t_range=DEFAULT_T_RANGE, max_counterfactuals: int = 3,
                 reward_targets: float | None = None, seed: int = 0, batch_size: int = 64,
                 mixed_precision: str = "auto", aggregate: str = "min"):  # fmt: skip
        super().__init__(pipe, draws, t_range, seed, batch_size, mixed_precision)
        require_choice("rubric.aggregate", aggregate, RUBRIC_AGGREGATES)
        self.aggregate = aggregate
        require(isinstance(max_counterfactuals, int) and max_counterfactuals >= 1, "rubric.max_counterfactuals",
                max_counterfactuals, "must be a positive integer")  # fmt: skip
        require(reward_targets is None or (isinstance(reward_targets, (int, float)) and 0 <= reward_targets <= 1),
                "rubric.reward_targets", reward_targets, "must be null (null embeddings) or a target in [0, 1]")  # fmt: skip
        self.max_counterfactuals = max_counterfactuals
        self.reward_targets = reward_targets

    def probes(self, prompt: str) -> list[Probe]:
        return counterfactual_probes(prompt, self.max_counterfactuals)

    def nfe(self, prompts: Sequence[str]) -> int:
        return sum(self.draws * (1 + len(p)) for p in (self.probes(q) for q in prompts) if p)

    def margins(self, latents: torch.Tensor, prompts: Sequence[str], per_draw: bool = False) -> list[torch.Tensor]:
        """Per image, the margin [P] of each probe (positive: the image fits the prompt better); with ``per_draw``,
        [draws, P]: each (t, eps) draw's margin apart (``t_draws()`` gives their t), for studies of which noise
        levels carry the prompt's words."""
        b, device = latents.shape[0], latents.device
        per_image = [self.probes(p) for p in prompts]
        empty = torch.zeros((self.draws, 0) if per_draw else (0,), device=device)
        texts: list[str] = []
        index: dict[str, int] = {}

        def tid(text):
            if text not in index:
                index[text] = len(texts)
                texts.append(text)
            return index[text]

        img, draw, text_idx, spans = [], [], [], []
        for i, (prompt, probes) in enumerate(zip(prompts, per_image)):
            if not probes:
                spans.append(None)
                continue
            ids = [tid(prompt)] + [tid(p.prompt) for p in probes]
            spans.append((len(img), len(ids)))
            for m in range(self.draws):
                for j in ids:
                    img.append(i)
                    draw.append(m)
                    text_idx.append(j)
        if not img:
            return [empty for _ in range(b)]
        conds = None
        r = len(getattr(self.pipe, "reward_names", []))
        if r:
            value = 0.0 if self.reward_targets is None else float(self.reward_targets)
            conds = (torch.full((1, r), value, device=device),
                     torch.full((1, r), self.reward_targets is not None, dtype=torch.bool, device=device))  # fmt: skip
        t = lambda v: torch.tensor(v, dtype=torch.long, device=device)  # noqa: E731
        e = self.errors(
            latents.float(), t(img), t(draw), t(text_idx), self.encode(texts), t([0] * len(img)), conds
        )
        out = []
        for span in spans:
            if span is None:
                out.append(empty)
                continue
            start, n = span
            block = e[start : start + self.draws * n].view(self.draws, n)
            diff = block[:, 1:] - block[:, :1]
            out.append(diff if per_draw else diff.mean(0))
        return out

    def _aggregate(self, margins: torch.Tensor, probes: list[Probe]) -> torch.Tensor:
        if self.aggregate == "min":
            return margins.min()
        kinds = sorted({p.kind for p in probes})
        per_kind = [margins[[i for i, p in enumerate(probes) if p.kind == k]].mean() for k in kinds]
        return torch.stack(per_kind).mean()

    def score_latents_dict(self, latents: torch.Tensor, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        margins = self.margins(latents, prompts)
        vals = [self._aggregate(mg, self.probes(p)) if len(mg) else torch.tensor(float("nan"), device=latents.device)
                for mg, p in zip(margins, prompts)]  # fmt: skip
        return {"rubric": torch.stack(vals)}

    def score(self, images: Sequence, prompts: Sequence[str] | None = None) -> np.ndarray:
        return self.score_dict(images, prompts)["rubric"]

    def probe_table(self, images: Sequence, prompts: Sequence[str]) -> list[list[dict]]:
        """Per image, every probe with its margin (for agreement studies against the detector)."""
        with torch.no_grad():
            margins = self.margins(self.pil_latents(images), list(prompts))
        return [[{"kind": p.kind, "word": p.word, "replacement": p.replacement, "counterfactual": p.prompt,
                  "margin": float(v)} for p, v in zip(self.probes(q), mg.tolist())]
                for q, mg in zip(prompts, margins)]  # fmt: skip
