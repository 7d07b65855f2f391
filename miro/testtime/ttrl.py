"""Cohort-level test-time RL with the model's own monitor: Meta-TTRL mapped onto a reward-conditioned flow model
(testtime.md 3.4, issue #15; the equations and costs are in docs/ttrl.md).

One LoRA adapter (``miro.models.lora``) is trained with Flow-GRPO on a cohort of unlabeled test prompts and
kept: unlike per-prompt test-time training it is never reset, so what it learns must transfer across prompts
(Meta-TTRL's "capability-level" gains).  Each iteration:

1. **Rollouts.**  For ``prompts_per_iteration`` prompts, ``group_size`` trajectories of ``train_steps``
   stochastic steps (``miro.testtime.sde``: the ODE-to-SDE step with the flow's marginals) under the guided
   velocity with the guidance held fixed, recording each step's log-probability.
2. **Monitoring.**  The monitor scores each group's final images:

   - ``"intrinsic"`` (M1): the model's own reward-conditional likelihood ratios (``IntrinsicVerifier``) and, for
     prompts with rubric words, its prompt-against-counterfactual rubric (``RubricVerifier``), z-normalised on
     the first iteration's rollouts (then fixed, so the monitor is one reward function for the whole run) and
     summed.  **The judge is the frozen model (the adapter disabled).**  Why: the adapter is trained on the
     model's own samples under the high reward condition, which by itself lowers the denoising error of those
     samples under that condition, i.e. raises the likelihood ratio the monitor reads, whether or not the
     images improved.  A judge that moves with the policy can be satisfied by moving the judge; a frozen one
     is a stationary reward, as GRPO assumes, and its values are comparable across iterations.
   - ``"consensus"`` (M2, TTRL's majority vote for continuous images): minus the RMS pixel distance to the
     group's medoid.  It rewards agreement, so it rewards collapse of the group onto one mode; use it as a
     weak regulariser or a baseline, not as the objective of a long run.
   - ``"rewards"`` (M3, the E-TTRL / "RL leakage" control): an external ``Verifier``'s score.
   - a callable ``monitor(images [G, 3, H, W] in [0, 1], prompts) -> G floats`` (its cost in NFE-eq per image
     from an optional ``nfe(prompts)``, as scorers declare it).

   Every reward (monitor and ``track``) is computed with the adapter disabled; for external scorers that
   changes nothing.  ``track`` is an external ``Verifier`` scored on every group only to log its mean and its
   within-group Spearman agreement with the monitor (monitor fidelity: if the agreement falls over the
   iterations, the monitor is being hacked); it never enters the update.
3. **Update (Flow-GRPO).**  Group-relative advantages A = (r - mean_G r) / (std_G r + 1e-4); for each stored
   transition the ratio exp(logp_new - logp_old) under the current adapter, the clipped objective
   -min(A ratio, A clip(ratio, 1 - clip, 1 + clip)), plus ``kl_beta`` times the closed-form KL between the
   step's Gaussian under the adapted and the frozen model (equal stds: ||mean - mean_ref||^2 / (2 std^2)).
   One optimizer step per ``groups_per_step`` prompt groups (default 1; their transitions' losses averaged; None:
   the whole round, as Flow-GRPO accumulates), ``inner_epochs`` passes.  ``advantage_std="global"`` divides every
   group by the round's std instead of its own (Flow-GRPO's ``global_std``).

Compute is counted in NFE-eq exactly as ``miro.testtime.budget`` does: every network row run (CFG branches
counted per row, as the ``Renderer`` counts them) is 1, every row differentiated through 2 more, a monitor its
declared ``nfe`` per image; the trace has one ``SearchTrace`` per (iteration, prompt) with what that group cost
(``nfe``) and the tracking cost (``report_nfe``, not part of the method).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from miro.models.lora import LoraSpec, add_lora
from miro.sampling.sampler import guided_velocity
from miro.testtime.budget import BACKWARD, FORWARD, Candidate, SearchTrace, Trace, _jsonable
from miro.testtime.config import ADVANTAGE_STDS, _int, _num
from miro.testtime.render import derived_seed, to_pil
from miro.testtime.sde import Rollout, gaussian_kl, sde_rollout, step_log_prob
from miro.testtime.search import as_renderer, check_positive_int
from miro.testtime.verifier import Verifier, scorer_nfe, scorer_outputs
from miro.utils.config import ConfigError, require, require_choice

MONITORS = ("intrinsic", "consensus", "rewards")
FINAL_STEPS = ("ode", "sde")
INTRINSIC_OPTIONS = ("rewards", "draws", "t_range", "others", "rubric", "rubric_weight", "rubric_aggregate",
                     "batch_size", "seed")
_NOISE_STREAM = 2  # derived_seed stream of the rollouts (the Renderer uses 0 and 1)
_ADV_EPS = 1e-4  # Flow-GRPO's std offset of the group-relative advantage
_REDUCE = "mean"  # per-element mean log-probability, as Flow-GRPO (miro.testtime.sde)


@contextmanager
def adapters_disabled(model):
    """The frozen base model inside the block (the LoRA adapters bypassed), the adapters active again after."""
    model.disable_adapters()
    try:
        yield
    finally:
        model.enable_adapters()


# ---------------------------------------------------------------------------------------------- monitors


class _Monitor:
    """Scores a group of images of one prompt: ``(scores [G], {reward: raw [G]})``; ``rewards`` names what it
    reads (for the held-out check), ``nfe(prompt)`` its network cost per image."""

    name: str = "monitor"
    rewards: tuple[str, ...] = ()

    def nfe(self, prompt: str) -> float:
        return 0.0

    def raw(self, images: torch.Tensor, pil: list, prompt: str) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def finalize(self, raws: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
        """Scores of every group of an iteration from their raw rewards (a verifier may calibrate first)."""
        return [next(iter(r.values())) for r in raws]

    def describe(self) -> dict:
        return {"monitor": self.name, "rewards": list(self.rewards)}


class _VerifierMonitor(_Monitor):
    """A ``Verifier``'s weighted z-score; ``calibrate``: normalise the rewards without norms on the first batch."""

    def __init__(self, name: str, verifier: Verifier, calibrate: bool):
        self.name, self.verifier, self.calibrate = name, verifier, calibrate
        self.rewards = tuple(verifier.choosers)
        if not calibrate:
            verifier.warn_if_unnormalised()

    def nfe(self, prompt: str) -> float:
        return self.verifier.nfe([prompt], "chooser") + self.verifier.nfe([prompt], "report")

    def raw(self, images, pil, prompt):
        raw = self.verifier.raw_scores(pil, [prompt] * len(pil))
        return {n: raw[:, k] for k, n in enumerate(self.verifier.names)}

    def finalize(self, raws):
        names = self.verifier.names
        mats = [np.stack([r[n] for n in names], axis=1) for r in raws]
        if self.calibrate:
            self.verifier.calibrate_raw(np.concatenate(mats), only_missing=True)
            self.calibrate = False
        return [self.verifier.combine(self.verifier.normalize(m)) for m in mats]

    def describe(self):
        return {"monitor": self.name, "rewards": list(self.rewards), "verifier": self.verifier.describe()}


class _ConsensusMonitor(_Monitor):
    name = "consensus"
    rewards = ("consensus",)

    def raw(self, images, pil, prompt):
        return {"consensus": consensus_scores(images)}


class _CallableMonitor(_Monitor):
    def __init__(self, fn: Callable):
        self.fn = fn
        self.name = str(getattr(fn, "name", getattr(fn, "__name__", "monitor")))
        self.rewards = (self.name,)

    def nfe(self, prompt):
        return scorer_nfe(self.fn, [prompt])

    def raw(self, images, pil, prompt):
        out = np.asarray(self.fn(images, [prompt] * images.shape[0]), dtype=np.float64).reshape(-1)
        if out.shape != (images.shape[0],):
            raise ValueError(
                f"monitor {self.name!r} returned {out.shape[0]} scores for {images.shape[0]} images"
            )
        return {self.name: out}


def consensus_scores(images: torch.Tensor) -> np.ndarray:
    """M2: minus each image's RMS pixel distance to the group's medoid (the image with the least summed distance
    to the others).  The medoid scores 0, the best; it rewards agreement, hence collapse (module docstring)."""
    flat = images.detach().float().flatten(1).cpu()
    d = torch.cdist(flat, flat) / math.sqrt(flat.shape[1])
    medoid = int(d.sum(1).argmin())
    return (-d[:, medoid]).double().numpy()


def _intrinsic_monitor(pipe, prompts: Sequence[str], options: Mapping) -> _VerifierMonitor:
    """The frozen model's likelihood ratios (``rewards``: the model's rewards to read, default all; an empty list
    reads none) plus, where a prompt has rubric words, its rubric with weight ``rubric_weight`` against 1 per ratio.

    Why a weight: the ratios read image quality (sharpness, contrast) and the rubric is the only term that reads
    the prompt; at equal weights it is one term of six, and on the U-Net reference a strong update followed the
    quality terms and lost the prompt (docs/ttrl.md, session 24)."""
    from miro.testtime.intrinsic import IntrinsicVerifier, RubricVerifier, counterfactual_probes

    opts = dict(options)
    use_rubric = bool(opts.pop("rubric", True))
    weight = opts.pop("rubric_weight", 1.0)
    aggregate = opts.pop("rubric_aggregate", "min")
    require(_num(weight) and weight >= 0, "monitor_options.rubric_weight", weight, "must be a number >= 0")
    common = {k: opts[k] for k in ("draws", "t_range", "batch_size", "seed") if k in opts}
    ratios = opts.get("rewards") is None or len(opts["rewards"]) > 0
    scorers = [IntrinsicVerifier(pipe, **opts)] if ratios else []
    rubric = use_rubric and any(counterfactual_probes(p) for p in prompts)
    if rubric:
        scorers.append(RubricVerifier(pipe, aggregate=aggregate, **common))
    if not scorers:
        raise ConfigError("monitor_options: rewards=[] turns the likelihood ratios off, so the rubric is the whole "
                          f"monitor, but {'rubric=False' if not use_rubric else 'no cohort prompt has rubric words'}"
                          "; give rewards, or prompts with colour / class / count / relation words")  # fmt: skip
    weights = {n: (weight if n == "rubric" else 1.0) for s in scorers for n in scorer_outputs(s)}
    return _VerifierMonitor("intrinsic", Verifier(scorers, weights), calibrate=True)


def _build_monitor(monitor, pipe, prompts, verifier, options) -> _Monitor:
    if callable(monitor) and not isinstance(monitor, str):
        return _CallableMonitor(monitor)
    if monitor not in MONITORS:
        raise ConfigError(f"monitor={monitor!r}: must be one of {list(MONITORS)} or a callable "
                          "(images [G, 3, H, W] in [0, 1], prompts) -> G scores")  # fmt: skip
    if monitor == "rewards":
        if not isinstance(verifier, Verifier):
            raise ConfigError(f"monitor='rewards' needs verifier= (a miro.testtime.Verifier of external rewards), "
                              f"got verifier={verifier!r}")  # fmt: skip
        return _VerifierMonitor("rewards", verifier, calibrate=False)
    if monitor == "consensus":
        return _ConsensusMonitor()
    unknown = sorted(set(options) - set(INTRINSIC_OPTIONS))
    require(
        not unknown,
        "monitor_options",
        dict(options),
        f"unknown keys {unknown}; allowed: {list(INTRINSIC_OPTIONS)}",
    )
    return _intrinsic_monitor(pipe, prompts, options)


# ---------------------------------------------------------------------------------------------- result


@dataclass
class TTRLResult:
    """What ``ttrl_adapt`` did: the adapter's name (active on the pipeline's transformer afterwards), one history
    row per iteration, the ``Trace`` (one ``SearchTrace`` per (iteration, prompt)), where the adapter was saved
    (``pipe.load_lora(adapter_folder, adapter_name)`` loads it), and the options."""

    adapter_name: str
    history: list[dict]
    trace: Trace
    adapter_folder: Path | None = None
    options: dict = field(default_factory=dict)

    @property
    def nfe(self) -> float:
        return self.trace.nfe

    def to_dict(self) -> dict:
        return _jsonable({"adapter_name": self.adapter_name, "adapter_folder": None if self.adapter_folder is None
                          else str(self.adapter_folder), "options": self.options, "history": self.history,
                          "nfe": self.nfe, "report_nfe": self.trace.report_nfe})  # fmt: skip


HISTORY_FIELDS = ("iteration", "prompts", "monitor_mean", "monitor_std", "track_mean", "agreement", "kl",
                  "clip_fraction", "loss", "zero_advantage_groups", "nfe", "nfe_total", "report_nfe", "wall_time",
                  "stopped")  # fmt: skip


# ---------------------------------------------------------------------------------------------- the method


def _check_args(prompts, group_size, iterations, prompts_per_iteration, train_steps, sde_noise, lr, kl_beta, clip,
                inner_epochs) -> list[str]:  # fmt: skip
    if isinstance(prompts, str) or not isinstance(prompts, Sequence) or not prompts:
        raise ConfigError(f"prompts={prompts!r}: must be a non-empty list of prompt strings (the cohort)")
    if not all(isinstance(p, str) and p for p in prompts):
        raise ConfigError(f"prompts={list(prompts)!r}: every prompt must be a non-empty string")
    check_positive_int("ttrl.group_size", group_size, 2)  # group-relative advantages need two samples
    check_positive_int("ttrl.iterations", iterations)
    check_positive_int("ttrl.train_steps", train_steps)
    check_positive_int("ttrl.inner_epochs", inner_epochs)
    if prompts_per_iteration is not None:
        check_positive_int("ttrl.prompts_per_iteration", prompts_per_iteration)
    require(_num(sde_noise) and sde_noise > 0, "ttrl.sde_noise", sde_noise,
            "must be a number > 0 (the SDE's noise scale a, ~0.7; 0 is the deterministic ODE, which has no "
            "log-probability to form a ratio with)")  # fmt: skip
    require(_num(lr) and lr >= 0, "ttrl.lr", lr, "must be a number >= 0")
    require(_num(kl_beta) and kl_beta >= 0, "ttrl.kl_beta", kl_beta, "must be a number >= 0")
    require(_num(clip) and clip > 0, "ttrl.clip", clip, "must be a number > 0 (the PPO ratio clip range)")
    return list(prompts)


def _check_track(track, monitor: _Monitor, held_out: bool) -> None:
    if track is None:
        return
    if not isinstance(track, Verifier):
        raise ConfigError(
            f"track={track!r}: must be a miro.testtime.Verifier (external rewards to log) or None"
        )
    both = sorted(set(track.names) & set(monitor.rewards))
    if held_out and both:
        raise ConfigError(f"track: rewards {both} are also read by the monitor ({monitor.name!r}); a tracked reward "
                          "is held out of the update (track_held_out=True): track other rewards, or pass "
                          "track_held_out=False to log the monitor's own rewards")  # fmt: skip


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 2 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return math.nan
    return float(spearmanr(a[ok], b[ok])[0])


def group_advantages(scores: np.ndarray, std: float | None = None) -> np.ndarray:
    """(r - mean) / (std + 1e-4) over one group; ``std`` None: the group's own (population) std, as GRPO; else the
    given one (``iteration_advantages``' global std).  NaN scores get advantage 0."""
    r = np.asarray(scores, dtype=np.float64)
    ok = np.isfinite(r)
    out = np.zeros_like(r)
    if ok.sum() >= 2:
        scale = r[ok].std() if std is None else std
        out[ok] = (r[ok] - r[ok].mean()) / (scale + _ADV_EPS)
    return out


def iteration_advantages(scores: Sequence[np.ndarray], std: str = "group") -> list[np.ndarray]:
    """Every group's advantages in one round: each centred on its own mean, divided by its own std (``"group"``)
    or by the std of every finite score of the round (``"global"``, Flow-GRPO's ``global_std``).

    Why "global": dividing by the group's own std blows a group whose scores barely differ (every image passes,
    or the judge cannot tell them apart) up to unit-size advantages, so its near-random ranking steps the
    adapter as hard as a group with a real winner.  A shared scale keeps such a group's advantages small."""
    require_choice("ttrl.advantage_std", std, ADVANTAGE_STDS)
    if std == "group":
        return [group_advantages(s) for s in scores]
    flat = np.concatenate([np.asarray(s, dtype=np.float64) for s in scores])
    flat = flat[np.isfinite(flat)]
    scale = float(flat.std()) if flat.size else 0.0
    return [group_advantages(s, scale) for s in scores]


def _nanmean(values) -> float:
    v = np.asarray(list(values), dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


@dataclass
class _Group:
    prompt: str
    seed: int
    rollout: Rollout
    raw: dict
    track_raw: dict | None
    track_score: np.ndarray | None
    nfe: float
    report_nfe: float
    wall: float
    scores: np.ndarray | None = None
    advantages: np.ndarray | None = None
    ref_means: list | None = None


class _Trainer:
    """The Flow-GRPO update of one adapter (module docstring, step 3)."""

    def __init__(self, renderer, params, lr, kl_beta, clip, sde_noise, max_grad_norm):
        self.r, self.params = renderer, params
        self.model = renderer.pipe.transformer
        self.opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        self.kl_beta, self.clip, self.a, self.max_grad_norm = kl_beta, clip, sde_noise, max_grad_norm

    def velocity(self, conds, guidance):
        r = self.r
        return guided_velocity(r.model, conds, guidance, dtype=self.model.dtype, autocast=r.autocast)

    def reference(self, group: _Group, conds, guidance) -> list[torch.Tensor]:
        """The frozen model's step means of every stored transition (no grad; once per group)."""
        with torch.no_grad(), adapters_disabled(self.model):
            vel = self.velocity(conds, guidance)
            return [step_log_prob(vel, *group.rollout.transition(i), self.a, _REDUCE)[1]
                    for i in range(group.rollout.stochastic_steps)]  # fmt: skip

    def accumulate(self, group: _Group, conds, guidance, weight: float = 1.0) -> dict:
        """Add one group's loss (times ``weight``) to the gradients, without stepping; returns its loss, KL and clip
        fraction, and the network rows run forward (with grad) and for the reference."""
        counter = self.r.counter
        before = counter.forward
        if self.kl_beta > 0 and group.ref_means is None:
            group.ref_means = self.reference(group, conds, guidance)
        ref_rows = counter.forward - before
        device = group.rollout.states.device
        adv = torch.as_tensor(group.advantages, dtype=torch.float32, device=device)
        steps = group.rollout.stochastic_steps  # a deterministic last step (final_step="ode") is not a policy step
        losses, kls, clipped = [], [], []
        before = counter.forward
        for i in range(steps):
            x, x_next, t, t_next = group.rollout.transition(i)
            # a fresh velocity function per step: its cached condition encoding is part of this step's graph
            # (an adapter may reach the condition encoder), which the step's backward frees
            vel = self.velocity(conds, guidance)
            logp, mean, std = step_log_prob(vel, x, x_next, t, t_next, self.a, _REDUCE)
            ratio = torch.exp(logp - group.rollout.log_probs[i])
            objective = torch.minimum(adv * ratio, adv * ratio.clamp(1 - self.clip, 1 + self.clip))
            loss = -objective.mean()
            if group.ref_means is not None:
                kl = gaussian_kl(mean, group.ref_means[i], std, _REDUCE)
                loss = loss + self.kl_beta * kl.mean()
                kls.append(kl.detach().mean())
            (loss / steps * weight).backward()  # weight 1: bit-identical to the per-group step
            losses.append(loss.detach())
            clipped.append(((ratio.detach() - 1).abs() > self.clip).float().mean())
        rows = counter.forward - before
        counter.backward += rows  # every row of the training forwards is differentiated through
        return {"loss": float(torch.stack(losses).mean()), "kl": float(torch.stack(kls).mean()) if kls else math.nan,
                "clip_fraction": float(torch.stack(clipped).mean()), "rows": rows, "ref_rows": ref_rows}  # fmt: skip

    def update(self, groups: Sequence[_Group], conditions: Callable[[_Group], tuple], guidance) -> list[dict]:
        """One optimizer step on the mean loss of ``groups`` (their gradients accumulated); per group its stats."""
        self.opt.zero_grad(set_to_none=True)
        stats = [self.accumulate(g, conditions(g), guidance, 1.0 / len(groups)) for g in groups]
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return stats


def ttrl_adapt(
    pipe,
    prompts: Sequence[str],
    *,
    monitor: str | Callable = "intrinsic",
    verifier: Verifier | None = None,
    track: Verifier | None = None,
    track_held_out: bool = True,
    monitor_options: Mapping | None = None,
    group_size: int = 8,
    iterations: int = 20,
    prompts_per_iteration: int | None = None,
    train_steps: int = 10,
    sde_noise: float = 0.7,
    final_step: str = "ode",
    sde_steps: int | None = None,
    lora: LoraSpec | None = None,
    lr: float = 1e-4,
    kl_beta: float = 0.02,
    clip: float = 0.2,
    inner_epochs: int = 1,
    groups_per_step: int | None = 1,
    advantage_std: str = "group",
    max_grad_norm: float | None = 1.0,
    max_kl: float | None = None,
    callback: Callable[[dict], bool | None] | None = None,
    settings=None,
    mixed_precision: str = "auto",
    seed: int = 0,
    adapter_name: str = "ttrl",
    out_dir: str | Path | None = None,
    save_images: int = 4,
    progress: bool = True,
) -> TTRLResult:
    """Adapt a LoRA on ``pipe``'s transformer to the prompt cohort with Flow-GRPO and the chosen monitor.

    Args:
        pipe: a ``MiroPipeline`` (or a ``Renderer`` of one, then ``settings`` must be None).  The adapter
            ``adapter_name`` is added to its transformer, stays there and is active afterwards.
        prompts: the cohort (unlabeled test prompts).
        monitor: "intrinsic" (M1), "consensus" (M2), "rewards" (M3, needs ``verifier``) or a callable
            ``(images [G, 3, H, W] in [0, 1], prompts) -> G scores`` (module docstring).
        verifier: the external ``Verifier`` of ``monitor="rewards"``.
        track: an external ``Verifier`` scored on every group only for the history (mean, agreement);
            ``track_held_out``: refuse a tracked reward that the monitor also reads.
        monitor_options: for "intrinsic": ``IntrinsicVerifier`` keywords (rewards, draws, t_range, others,
            batch_size, seed; ``rewards=[]`` reads no ratio), ``rubric`` (default True: add the rubric when a
            prompt has rubric words), ``rubric_weight`` (its weight against 1 per ratio, default 1) and
            ``rubric_aggregate`` ("min", the default, or "mean"; ``RubricVerifier``).
        group_size: images per prompt and iteration (G >= 2).  iterations: rollout-update rounds.
        prompts_per_iteration: prompts per round (default all), taken in a seeded shuffled cycle.
        train_steps: SDE steps of the rollouts (the pipeline's sigma grid for that many steps; inference
            keeps the settings' steps).  sde_noise: the SDE's a.  final_step: "ode" (default) makes the last
            rollout step deterministic and leaves it out of the update, so the monitor judges an image without
            the last step's noise (``sde_rollout(ode_last=True)``); "sde" keeps it stochastic (Flow-GRPO as
            written; the measurement of docs/ttrl.md ran with it).  sde_steps: only the first ``sde_steps``
            rollout steps draw noise and are trained, the rest are the ODE's Euler steps (None: every step but
            a deterministic last one); the noise explores the layout at high t and the image is finished as the
            ODE sampler finishes it (docs/ttrl.md, "Session 40").
        lora: the adapter's shape (default rank 16 on attention and MLP).  lr, kl_beta, clip, inner_epochs,
            max_grad_norm: the optimiser (AdamW), KL weight, PPO clip range, passes over each round's rollouts,
            gradient-norm clip (None: off).
        groups_per_step: prompt groups whose mean loss makes one optimizer step (default 1, GRPO per group;
            None: every group of the round, Flow-GRPO's accumulation).  Why: AdamW moves every parameter by about
            ``lr`` per step whatever the gradient's quality, so a step on one group of 8 noisily judged images
            walks in the noise's direction; averaging several groups' gradients first raises the step's
            signal-to-noise at the same rollout cost.
        advantage_std: "group" (each group divided by its own std, GRPO) or "global" (by the std of every score
            of the round, Flow-GRPO's ``global_std``; ``iteration_advantages``).
        max_kl: a bound on the drift: the first iteration whose mean KL to the frozen model (per element and
            step, the history's ``kl``) exceeds it is undone (the adapter goes back to its state before that
            iteration) and the adaptation stops (``stopped="max_kl"`` in its row).  None: no bound.  Why: the
            clipped ratio bounds each step, not their sum, and ``kl_beta`` only slows the drift; on the U-Net
            reference the prompt was lost at KL ~0.02 before the monitor had gained anything (docs/ttrl.md).
        callback: called with each iteration's history row after its update; a true return value stops the
            adaptation there (``stopped="callback"``).  The adapter is active and may be sampled from (e.g. to
            evaluate checkpoints); the rollouts' noise does not depend on what it does.
        settings: the pipeline's ``SamplingSettings`` (targets, the fixed guidance; ``steps`` for the saved
            previews).  mixed_precision: as the pipeline's.
        seed: rollouts' noise and the prompt order.  out_dir: if given, the adapter is saved to
            ``out_dir/adapter`` (``save_lora``), with ``history.json``, ``trace.json`` and, for the first
            ``save_images`` prompts, ODE samples of seed ``seed`` before and after in ``out_dir/images``.
        progress: a tqdm bar showing the monitor's mean.

    Returns a ``TTRLResult`` (adapter name, per-iteration history with the fields ``HISTORY_FIELDS``, the trace).
    """
    prompts = _check_args(prompts, group_size, iterations, prompts_per_iteration, train_steps, sde_noise, lr,
                          kl_beta, clip, inner_epochs)  # fmt: skip
    require_choice("final_step", final_step, FINAL_STEPS)
    require_choice("ttrl.advantage_std", advantage_std, ADVANTAGE_STDS)
    if groups_per_step is not None:
        check_positive_int("ttrl.groups_per_step", groups_per_step)
    require(max_kl is None or (_num(max_kl) and max_kl > 0), "ttrl.max_kl", max_kl, "must be a number > 0 or None")
    require(final_step == "sde" or train_steps >= 2, "train_steps", train_steps,
            "must be >= 2 with final_step='ode' (the last step is deterministic and not trained)")  # fmt: skip
    trainable = train_steps - (final_step == "ode")
    require(sde_steps is None or (_int(sde_steps) and 1 <= sde_steps <= trainable), "ttrl.sde_steps", sde_steps,
            f"must be null or an integer in [1, {trainable}] (train_steps={train_steps}, final_step={final_step!r})")
    renderer = as_renderer(pipe, settings, mixed_precision)
    pipe = renderer.pipe
    mon = _build_monitor(monitor, pipe, prompts, verifier, monitor_options or {})
    _check_track(track, mon, track_held_out)
    per_iter = min(prompts_per_iteration or len(prompts), len(prompts))
    lora = lora or LoraSpec(rank=16, alpha=16.0, targets="attention_mlp")
    options = {"monitor": mon.name, "group_size": group_size, "iterations": iterations,
               "prompts_per_iteration": per_iter, "train_steps": train_steps, "sde_noise": sde_noise,
               "final_step": final_step, "sde_steps": sde_steps,
               "lora": asdict(lora), "lr": lr, "kl_beta": kl_beta, "clip": clip, "inner_epochs": inner_epochs,
               "groups_per_step": groups_per_step, "advantage_std": advantage_std,
               "max_grad_norm": max_grad_norm, "max_kl": max_kl, "seed": seed, "adapter_name": adapter_name,
               "track": None if track is None else track.describe(), "log_prob": _REDUCE}  # fmt: skip
    trace = Trace(method="ttrl", options=options, verifier=mon.describe(), settings=renderer.settings.to_dict(),
                  one_sample_nfe=float(renderer.one_sample_nfe()), budget={})  # fmt: skip

    model = pipe.transformer
    previews = (
        _previews(renderer, prompts[:save_images], seed) if out_dir is not None and save_images else None
    )
    with torch.random.fork_rng():  # the adapter's random A matrices: a function of the seed
        torch.manual_seed(seed)
        params = add_lora(model, lora, adapter_name)
    trainer = _Trainer(renderer, params, lr, kl_beta, clip, sde_noise, max_grad_norm)
    guidance = renderer.guidance()
    sigmas = renderer.sigmas(train_steps)

    def conditions(g: _Group):
        return renderer.conditions(g.prompt, [renderer.default] * group_size)

    order = np.random.default_rng(seed).permutation(len(prompts))
    history: list[dict] = []
    nfe_total = 0.0

    from tqdm.auto import tqdm

    bar = tqdm(range(iterations), desc="ttrl", disable=not progress)
    for it in bar:
        start = time.perf_counter()
        snapshot = [p.detach().clone() for p in params] if max_kl is not None else None
        slots = [it * per_iter + k for k in range(per_iter)]
        groups = [_rollout(renderer, mon, track, prompts[order[s % len(prompts)]], derived_seed(seed, _NOISE_STREAM, s),
                           group_size, guidance, sigmas, sde_noise, final_step == "ode", sde_steps) for s in slots]  # fmt: skip
        for g, scores in zip(groups, mon.finalize([g.raw for g in groups])):
            g.scores = np.asarray(scores, dtype=np.float64)
        for g, adv in zip(groups, iteration_advantages([g.scores for g in groups], advantage_std)):
            g.advantages = adv
        live = [g for g in groups if np.any(g.advantages)]  # a group whose scores are all equal teaches nothing
        chunk = groups_per_step or max(len(live), 1)
        stats = []
        for _ in range(inner_epochs):
            for k in range(0, len(live), chunk):
                part = live[k : k + chunk]
                for g, s in zip(part, trainer.update(part, conditions, guidance)):
                    g.nfe += FORWARD * (s["rows"] + s["ref_rows"]) + BACKWARD * s["rows"]
                    stats.append(s)
        iter_nfe = float(sum(g.nfe for g in groups))
        nfe_total += iter_nfe
        for g in groups:
            trace.searches.append(_search_trace(g, it))
        track_scores = [g.track_score for g in groups if g.track_score is not None]
        row = {
            "iteration": it,
            "prompts": [g.prompt for g in groups],
            "monitor_mean": _nanmean(np.concatenate([g.scores for g in groups])),
            "monitor_std": float(np.nanstd(np.concatenate([g.scores for g in groups]))),
            "track_mean": _nanmean(np.concatenate(track_scores)) if track_scores else None,
            "agreement": _nanmean(_spearman(g.scores, g.track_score) for g in groups)
            if track_scores
            else None,
            "kl": _nanmean(s["kl"] for s in stats),
            "clip_fraction": _nanmean(s["clip_fraction"] for s in stats),
            "loss": _nanmean(s["loss"] for s in stats),
            "zero_advantage_groups": sum(not np.any(g.advantages) for g in groups),
            "nfe": iter_nfe,
            "nfe_total": nfe_total,
            "report_nfe": float(sum(g.report_nfe for g in groups)),
            "wall_time": time.perf_counter() - start,
            "stopped": None,
        }
        history.append(row)
        if max_kl is not None and math.isfinite(row["kl"]) and row["kl"] > max_kl:
            with torch.no_grad():
                for p, old in zip(params, snapshot):
                    p.copy_(old)
            row["stopped"] = "max_kl"
        elif callback is not None and callback(row):
            row["stopped"] = "callback"
        post = {"monitor": f"{row['monitor_mean']:.4g}"}
        if row["track_mean"] is not None:
            post["track"] = f"{row['track_mean']:.4g}"
        bar.set_postfix(post)
        if row["stopped"]:
            break
    bar.close()

    result = TTRLResult(adapter_name, history, trace, None, options)
    if out_dir is not None:
        result.adapter_folder = _save(renderer, result, Path(out_dir), prompts, previews, seed)
    return result


def _rollout(renderer, mon: _Monitor, track, prompt, seed, group_size, guidance, sigmas, sde_noise,
             ode_last: bool = True, sde_steps: int | None = None) -> _Group:
    """G SDE trajectories of one prompt (the current adapter), decoded, scored by the monitor and the track (the
    frozen model judging), with their NFE-eq."""
    start = time.perf_counter()
    model = renderer.pipe.transformer
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((group_size, *renderer.latent_shape), generator=g, dtype=torch.float32)
    conds = renderer.conditions(prompt, [renderer.default] * group_size)
    before = renderer.counter.forward
    vel = guided_velocity(renderer.model, conds, guidance, dtype=model.dtype, autocast=renderer.autocast)
    rollout = sde_rollout(vel, noise.to(renderer.device), sigmas, sde_noise, g, _REDUCE, ode_last=ode_last,
                          sde_steps=sde_steps)
    rows = renderer.counter.forward - before
    with torch.no_grad():
        images = renderer.decode(rollout.final).cpu()
    pil = to_pil(images)
    with torch.no_grad(), adapters_disabled(model):
        raw = mon.raw(images, pil, prompt)
        track_raw = track_score = None
        if track is not None:
            scores = track.score(pil, [prompt] * group_size)
            track_raw = {n: scores.column(n) for n in scores.names}
            track_score = scores.score
    report = (
        0.0
        if track is None
        else (track.nfe([prompt], "chooser") + track.nfe([prompt], "report")) * group_size
    )
    return _Group(prompt, seed, rollout, raw, track_raw, track_score,
                  FORWARD * rows + mon.nfe(prompt) * group_size, report, time.perf_counter() - start)  # fmt: skip


def _search_trace(g: _Group, iteration: int) -> SearchTrace:
    cands = []
    for j in range(len(g.scores)):
        extra = {"advantage": float(g.advantages[j])}
        if g.track_raw is not None:
            extra["track"] = {n: float(v[j]) for n, v in g.track_raw.items()}
            extra["track_score"] = float(g.track_score[j])
        cands.append(Candidate(index=j, rewards={n: float(v[j]) for n, v in g.raw.items()}, score=float(g.scores[j]),
                               noise={"seed": g.seed, "index": j}, nfe=g.nfe, extra=extra))  # fmt: skip
    best = int(np.argmax(np.nan_to_num(g.scores, nan=-np.inf)))
    return SearchTrace(prompt=g.prompt, seed=g.seed, budget_nfe=g.nfe, nfe=g.nfe, report_nfe=g.report_nfe,
                       wall_time=g.wall, candidates=cands, chosen=best, chosen_noise=cands[best].noise,
                       extra={"iteration": iteration})  # fmt: skip


def _previews(renderer, prompts: Sequence[str], seed: int) -> list[torch.Tensor]:
    """ODE samples (the settings' steps) of seed ``seed`` per prompt: the model before adaptation."""
    return [renderer.render(p, renderer.noise(seed), renderer.default)[0] for p in prompts]


def _save(renderer, result: TTRLResult, out: Path, prompts, previews, seed) -> Path:
    from miro.utils.atomic import atomic_write_json

    out.mkdir(parents=True, exist_ok=True)
    folder = out / "adapter"
    extra = {"method": "ttrl", "monitor": result.options["monitor"], "prompts": list(prompts),
             "iterations": len(result.history), "nfe": result.nfe}  # fmt: skip
    renderer.pipe.save_lora(folder, result.adapter_name, extra=_jsonable(extra))
    atomic_write_json(out / "history.json", result.to_dict(), indent=1)
    result.trace.save(out / "trace.json")
    if previews:
        (out / "images").mkdir(exist_ok=True)
        for k, (prompt, before) in enumerate(zip(prompts, previews)):
            after = renderer.render(prompt, renderer.noise(seed), renderer.default)[0]
            for tag, img in (("base", before), ("adapted", after)):
                to_pil(img)[0].save(out / "images" / f"{k:02d}_{tag}.png")
    return folder


__all__ = ["HISTORY_FIELDS", "MONITORS", "TTRLResult", "adapters_disabled", "consensus_scores", "group_advantages",
           "iteration_advantages",
           "ttrl_adapt"]  # fmt: skip
