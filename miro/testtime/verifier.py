"""The verifier of a search: any set of scorers, each reward z-normalised and weighted, some held out.

Why z-scores: the rewards live on unrelated scales (sharpness is a log-variance, contrast a fraction, a
model's own likelihood ratio a squared error), so a weighted sum of raw scores would be decided by whichever
has the widest range.  Each reward k is turned into ``z_k = (r_k - mean_k) / std_k`` with the mean and std of a
dataset's ``reward_stats.json`` (what training binned) or of a reference batch (e.g. one sample per prompt
with the default condition, the baseline every method is compared against), and the verifier's score is
``sum_k weight_k z_k`` over the rewards that choose.

Why held-out rewards: a search maximises what it is shown, so the only honest check of reward hacking is a
reward it never saw (ReNO's leave-one-reward-out protocol).  A held-out reward is scored for every candidate
and reported in the trace, and has no weight; the verifier refuses a reward that is both held out and a chooser.

Scorers follow the ``annotate.scorers`` duck-typed API (``scorer.name``, ``scorer.score(images, prompts)`` ->
float64 array, NaN where a pair cannot be scored; grouped scorers add ``outputs`` and ``score_dict``) and are
passed in; the entry point builds them.  A scorer that runs the velocity network declares its cost with
``nfe(prompts)`` (network evaluations for scoring one image of each prompt), which searches charge to the
budget.  A scorer with ``score_tensor(images, prompts)`` (images [N, 3, H, W] in [0, 1]) is differentiable
(``Verifier.objective``, used by ReNO); the weight-free rewards get torch forms from
``miro.testtime.differentiable`` when the scorer itself has none.

``GenEvalScorer`` makes the shapes world's GenEval judge (the programmatic detector plus GenEval's rules) a
scorer: 1 when the image passes the prompt's rule, else 0, or with ``soft`` a graded reading.  It needs the
prompt's GenEval metadata: give it the rows of a held-out ``evaluation_metadata.jsonl`` (``from_file``) and it
looks each prompt up; a prompt it does not hold is parsed back into metadata when it is a shapes-world caption
(NaN otherwise).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path

import numpy as np

from miro.contracts.rewards import REWARDS, our_keys, our_names
from miro.utils.config import ConfigError

log = logging.getLogger(__name__)

ROLES = ("chooser", "held_out", "reported")


class VerifierError(ConfigError):
    """A verifier is asked for something it cannot do (unknown reward, held-out chooser, no chooser, ...)."""


@dataclass(frozen=True)
class RewardNorm:
    """How one reward is z-normalised: ``(raw - mean) / std``; ``source`` says where the numbers come from."""

    mean: float = 0.0
    std: float = 1.0
    source: str = "none"

    def __post_init__(self):
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0):
            raise VerifierError(
                f"reward normalisation mean={self.mean}, std={self.std}: must be finite with std > 0"
            )


def scorer_outputs(scorer) -> tuple[str, ...]:
    """The reward columns a scorer fills: ``outputs`` of a grouped scorer, else its ``name``."""
    return tuple(getattr(scorer, "outputs", ()) or (scorer.name,))


def score_with(scorer, images: list, prompts: list[str]) -> dict[str, np.ndarray]:
    """``{output: float64 array}`` of one scorer on a batch (grouped scorers through ``score_dict``)."""
    if hasattr(scorer, "score_dict"):
        out = scorer.score_dict(images, prompts)
    else:
        out = {scorer.name: scorer.score(images, prompts)}
    res = {}
    for name in scorer_outputs(scorer):
        values = np.asarray(out[name], dtype=np.float64).reshape(-1)
        if values.shape != (len(images),):
            raise VerifierError(
                f"scorer {scorer.name!r} returned {values.shape[0]} scores of {name!r} for {len(images)} images"
            )
        res[name] = values
    return res


def scorer_nfe(scorer, prompts: Sequence[str]) -> float:
    """Network evaluations a scorer spends on one image of each prompt (0 unless it declares ``nfe``)."""
    fn = getattr(scorer, "nfe", None)
    return float(fn(list(prompts))) if callable(fn) else 0.0


def norms_from_reward_stats(path: str | Path) -> dict[str, RewardNorm]:
    """Per reward the mean and std of a dataset's ``reward_stats.json`` (a file or the folder holding it), on
    our raw scale (the scale the scorers return) even when the sidecars were written on the authors' scale."""
    from miro.contracts.buckets import load_reward_stats

    stats = load_reward_stats(path)
    out = {}
    for name, entry in stats.rewards.items():
        mean, std = entry.get("mean"), entry.get("std")
        if isinstance(mean, (int, float)) and isinstance(std, (int, float)) and std > 0:
            # scorers return raw scores, whatever scale the sidecars hold
            mean, std = stats.moments(name, "raw") if name in REWARDS else (float(mean), float(std))
            out[name] = RewardNorm(mean, std, f"reward_stats:{stats.path}")
    return out


@dataclass
class Scores:
    """Scores of N candidates: ``raw`` and ``z`` [N, K] over ``names`` (every reward), and ``score`` [N], the
    verifier's weighted sum over the choosers (NaN z-scores count as 0, i.e. as an average candidate)."""

    names: list[str]
    raw: np.ndarray
    z: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return len(self.score)

    def rewards(self, i: int) -> dict[str, float]:
        return {n: float(v) for n, v in zip(self.names, self.raw[i])}

    def column(self, name: str) -> np.ndarray:
        return self.raw[:, self.names.index(name)]


class Verifier:
    """A weighted sum of z-normalised rewards from ``scorers``, with held-out rewards.

    Args:
        scorers: objects with the ``annotate.scorers`` API; their reward names must be unique.
        weights: {reward: weight} of the rewards that choose; default weight 1 for every reward that is not
            held out.  A reward listed in neither ``weights`` nor ``held_out`` is scored and reported.
        held_out: rewards scored and reported for every candidate, never used to choose.  Here and in
            ``weights`` the MIRO authors' keys (``pick_a_score_score``, ...) name the scorers' rewards.
        norms: {reward: ``RewardNorm``} (``norms_from_reward_stats``); rewards without one are raw until
            ``calibrate`` is called on a reference batch.
        batch_size: images per scorer call.
    """

    def __init__(self, scorers: Sequence, weights: Mapping[str, float] | None = None, held_out: Iterable[str] = (),
                 norms: Mapping[str, RewardNorm] | None = None, batch_size: int = 16):  # fmt: skip
        self.scorers = list(scorers)
        if not self.scorers:
            raise VerifierError("verifier: no scorers given; pass at least one reward scorer")
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise VerifierError(f"verifier.batch_size={batch_size!r}: must be a positive integer")
        self.batch_size = batch_size
        names = [n for s in self.scorers for n in scorer_outputs(s)]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise VerifierError(f"verifier: rewards {dup} are given by more than one scorer")
        self.names = names
        held = our_names(held_out, names)  # the MIRO authors' keys name the scorers' rewards
        unknown = [n for n in held if n not in names]
        if unknown:
            raise VerifierError(
                f"verifier.held_out={held}: unknown rewards {unknown}; the scorers give {names}"
            )
        if weights is None:
            weights = {n: 1.0 for n in names if n not in held}
        weights = {str(k): float(v) for k, v in our_keys(dict(weights), names, "verifier.weights").items()}
        unknown = [n for n in weights if n not in names]
        if unknown:
            raise VerifierError(f"verifier.weights: unknown rewards {unknown}; the scorers give {names}")
        both = [n for n in weights if n in held]
        if both:
            raise VerifierError(f"verifier: {both} is held out and also a chooser (in weights); a held-out reward is "
                                "only reported, never used to choose: remove it from one of the two")  # fmt: skip
        bad = {k: v for k, v in weights.items() if not math.isfinite(v)}
        if bad:
            raise VerifierError(f"verifier.weights={bad}: must be finite numbers")
        self.weights = {k: v for k, v in weights.items() if v != 0.0}
        if not self.weights:
            raise VerifierError(f"verifier: no reward chooses (weights={weights}, held_out={held}); give at least one "
                                f"reward a nonzero weight among {names}")  # fmt: skip
        self.held_out = held
        self.norms: dict[str, RewardNorm] = {n: RewardNorm() for n in names}
        for name, norm in (norms or {}).items():
            if name in self.norms:
                self.norms[name] = norm

    # ------------------------------------------------------------------ description
    def role(self, name: str) -> str:
        return "chooser" if name in self.weights else "held_out" if name in self.held_out else "reported"

    @property
    def choosers(self) -> list[str]:
        return [n for n in self.names if n in self.weights]

    def describe(self) -> dict:
        """For the trace: every reward with its role, weight and normalisation."""
        return {n: {"role": self.role(n), "weight": self.weights.get(n, 0.0), "mean": self.norms[n].mean,
                    "std": self.norms[n].std, "norm_source": self.norms[n].source} for n in self.names}  # fmt: skip

    def _chooses(self, scorer) -> bool:
        return any(n in self.weights for n in scorer_outputs(scorer))

    def nfe(self, prompts: Sequence[str], role: str = "chooser") -> float:
        """Network evaluations to score one image of each prompt: the scorers that choose (``role="chooser"``,
        charged to a search's budget) or the others (``"report"``)."""
        scorers = [s for s in self.scorers if self._chooses(s) == (role == "chooser")]
        return float(sum(scorer_nfe(s, prompts) for s in scorers))

    # ------------------------------------------------------------------ scoring
    def raw_scores(self, images: Sequence, prompts: Sequence[str]) -> np.ndarray:
        """[N, K] raw rewards of PIL ``images`` (one prompt per image), scored in chunks of ``batch_size``."""
        images, prompts = list(images), list(prompts)
        if len(images) != len(prompts):
            raise VerifierError(f"{len(images)} images but {len(prompts)} prompts")
        raw = np.full((len(images), len(self.names)), np.nan)
        col = {n: i for i, n in enumerate(self.names)}
        for start in range(0, len(images), self.batch_size):
            sl = slice(start, start + self.batch_size)
            for scorer in self.scorers:
                for name, values in score_with(scorer, images[sl], prompts[sl]).items():
                    raw[sl, col[name]] = values
        return raw

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        mean = np.array([self.norms[n].mean for n in self.names])
        std = np.array([self.norms[n].std for n in self.names])
        return (raw - mean) / std

    def combine(self, z: np.ndarray) -> np.ndarray:
        w = np.array([self.weights.get(n, 0.0) for n in self.names])
        return np.where(np.isnan(z), 0.0, z) @ w

    def score(self, images: Sequence, prompts: Sequence[str]) -> Scores:
        """Every reward of every image, z-scores and the verifier's score."""
        raw = self.raw_scores(images, prompts)
        z = self.normalize(raw)
        return Scores(list(self.names), raw, z, self.combine(z))

    def calibrate(self, images: Sequence, prompts: Sequence[str], only_missing: bool = True) -> Verifier:
        """Set the normalisation of the rewards from a reference batch (mean and sample std over the images,
        NaN ignored); with ``only_missing`` only rewards without one (e.g. absent from ``reward_stats.json``).
        A reward constant over the batch keeps std 1 (``source`` says so)."""
        return self.calibrate_raw(self.raw_scores(images, prompts), only_missing)

    def calibrate_raw(self, raw: np.ndarray, only_missing: bool = True) -> Verifier:
        """``calibrate`` from raw scores [N, K] already computed (``raw_scores``)."""
        for k, name in enumerate(self.names):
            if only_missing and self.norms[name].source != "none":
                continue
            values = raw[:, k][~np.isnan(raw[:, k])]
            if len(values) == 0:
                log.warning("verifier: reward %s is NaN on every reference image; left unnormalised", name)
                continue
            std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            src = f"reference batch of {len(values)} images"
            if not std > 1e-12:
                std, src = 1.0, src + " (constant: std set to 1)"
            self.norms[name] = RewardNorm(float(values.mean()), std, src)
        return self

    def warn_if_unnormalised(self) -> None:
        raw = [n for n in self.choosers if self.norms[n].source == "none"]
        if raw and len(self.choosers) > 1:
            log.warning("verifier: choosers %s have no normalisation (raw scores are summed); give reward_stats.json "
                        "or calibrate on a reference batch", raw)  # fmt: skip

    # ------------------------------------------------------------------ differentiable objective
    def differentiable_terms(self) -> dict[str, object]:
        """{chooser: object with ``score_tensor``} for the choosers that have a differentiable form."""
        from miro.testtime.differentiable import differentiable_reward

        out = {}
        for scorer in self.scorers:
            for name in scorer_outputs(scorer):
                if name not in self.weights:
                    continue
                if any(
                    callable(getattr(scorer, m, None))
                    for m in ("score_tensor", "score_tensor_dict", "score_latents_dict")
                ):
                    out[name] = scorer
                else:
                    # annotate's weight-free scorer: its config
                    measure = getattr(scorer, "measures", {}).get(name)
                    config = asdict(measure.config) if is_dataclass(getattr(measure, "config", None)) else {}
                    fn = differentiable_reward(name, **config)
                    if fn is not None:
                        out[name] = fn
        return out

    def objective(self, images, prompts: Sequence[str], latents=None, terms: Mapping | None = None):
        """The differentiable verifier score [N] (torch) of images [N, 3, H, W] in [0, 1]: the weighted z-sum over
        the choosers with a differentiable form (``latents``, when given, go to scorers with ``score_latents``,
        which skips a decode-encode round trip)."""
        terms = self.differentiable_terms() if terms is None else terms
        if not terms:
            raise VerifierError(f"no chooser of this verifier is differentiable (choosers {self.choosers}); ReNO needs at "
                                "least one: a weight-free reward (sharpness, low_noise, colorfulness, contrast), the "
                                "intrinsic verifier or a scorer with score_tensor")  # fmt: skip
        groups: dict[int, tuple[object, list[str]]] = {}
        for (
            name,
            term,
        ) in terms.items():  # a grouped scorer (the intrinsic verifier) runs once for all its rewards
            groups.setdefault(id(term), (term, []))[1].append(name)
        total = 0.0
        for term, names in groups.values():
            if latents is not None and callable(getattr(term, "score_latents_dict", None)):
                values = term.score_latents_dict(latents, list(prompts))
            elif callable(getattr(term, "score_tensor_dict", None)):
                values = term.score_tensor_dict(images, list(prompts))
            else:
                values = {names[0]: term.score_tensor(images, list(prompts))}
            for name in names:
                norm = self.norms[name]
                total = total + self.weights[name] * (values[name] - norm.mean) / norm.std
        return total


# ---------------------------------------------------------------------------------------------- GenEval judge


def load_prompt_metadata(path: str | Path) -> list[dict]:
    """The rows of a GenEval ``evaluation_metadata.jsonl`` (validated), e.g. a shapes world's held-out file."""
    from miro.eval.geneval.prompts import load_metadata

    return load_metadata(path)


class GenEvalScorer:
    """The shapes world's GenEval judge as a scorer (reward ``geneval``).

    ``score``: 1.0 when the shapes detector's reading of the image passes GenEval's rule for the prompt's
    metadata, else 0.0.  With ``soft``: ``(pass + graded) / 2``, where graded is the detector's partial credit
    (``miro.data.shapes.alignment.alignment_score``: share of right counts, colours and relations), so it is
    1 exactly when the rule passes and still ranks near misses.  NaN for a prompt without metadata.

    ``metadata``: GenEval rows (``tag``, ``include``, ``exclude``, ``prompt``) looked up by prompt, e.g.
    ``load_prompt_metadata("world/heldout/evaluation_metadata.jsonl")``; prompts not among them are parsed
    back into metadata (``miro.data.shapes.alignment.parse_caption``) when they are shapes-world captions.
    """

    def __init__(
        self,
        metadata: Iterable[Mapping] | None = None,
        soft: bool = False,
        detector=None,
        name: str = "geneval",
    ):
        self.name = name
        self.soft = bool(soft)
        self.metadata: dict[str, dict] = {}
        for row in metadata or ():
            self.metadata[row["prompt"]] = dict(row)
        self._detector = detector

    @classmethod
    def from_file(cls, path: str | Path, soft: bool = False, detector=None) -> GenEvalScorer:
        return cls(load_prompt_metadata(path), soft=soft, detector=detector)

    @property
    def detector(self):
        if self._detector is None:
            from miro.data.shapes.detector import default_detector

            self._detector = default_detector()
        return self._detector

    def metadata_for(self, prompt: str) -> dict | None:
        if prompt in self.metadata:
            return self.metadata[prompt]
        from miro.data.shapes.alignment import parse_caption

        return parse_caption(prompt)

    def judge(self, image, prompt: str) -> dict:
        """``{"correct": bool, "graded": float, "reason": str}`` for one image, or ``{}`` without metadata."""
        from miro.contracts.geneval_rules import detection_colors, result_row
        from miro.data.shapes.alignment import alignment_score

        meta = self.metadata_for(prompt)
        if meta is None:
            return {}
        dets = self.detector(image, masks=False)
        row = result_row("", {**meta, "prompt": meta.get("prompt", prompt)}, dets, detection_colors)
        return {
            "correct": bool(row["correct"]),
            "graded": float(alignment_score(meta, dets)),
            "reason": row["reason"],
        }

    def score(self, images: Sequence, prompts: Sequence[str]) -> np.ndarray:
        out = np.full(len(images), np.nan)
        for i, (image, prompt) in enumerate(zip(images, prompts)):
            j = self.judge(image, prompt)
            if j:
                out[i] = (float(j["correct"]) + j["graded"]) / 2 if self.soft else float(j["correct"])
        return out
