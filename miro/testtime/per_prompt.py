"""Per-prompt test-time training (Akyurek et al.'s TTT mapped onto a text-to-image flow model).

For each prompt, with a fresh LoRA adapter (``miro.models.lora``) that is reset afterwards:

1. **Pseudo-demonstrations.**  Render ``n_pseudo`` samples with the settings' condition and keep the
   verifier's ``top_k`` (in T2I a prompt has no demonstrations; the model's own best samples stand in, as
   TTRL's votes do).
2. **Training with leave-one-out validation.**  The demonstration ranked last of the ``top_k`` is held out
   (``leave_one_out``); the adapter is trained with the flow-matching loss on the others, conditioned on the
   prompt and the settings' reward targets (the high ones), each item under one prompt-preserving augmentation
   (``miro.testtime.augment``: no mirror for left/right prompts, no shift or crop when counting, no colour
   jitter when colours are named).  The held-out demonstration's loss at fixed (t, noise) draws is the
   validation signal: the adapter is kept at its best validation step and training stops after ``patience``
   steps without improvement, which stops it from memorising the few images it is shown.
3. **Augmented inference and voting.**  ``final_samples`` new noises are rendered with the adapter, under
   views (the noise itself, and its mirror image mapped back when the prompt allows ``hflip``), and the verifier
   picks one: ``vote="borda"`` ranks the candidates under every reward that chooses and sums the weighted
   ranks (robust to one reward being gamed, the analogue of ARC's voting across transforms), ``"score"`` takes
   the best weighted z-score.

The decisive measurement (the issue's and TTRL's "surpasses maj@n"): does the chosen adapted sample beat the
best pseudo-demonstration?  If not, the adapter has only memorised a selected sample and the method is an
expensive best-of-N.  The trace records both scores (``extra["best_demo_score"]``, ``extra["chosen_score"]``)
for every prompt, the training and validation losses, and every NFE-eq: rendering counts the network rows run
(CFG rows included), scoring the verifier's declared cost, and every training or validation image one forward
(1) plus, when trained, one backward (2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from miro.flow import LinearPath, TimeSampler, velocity_loss
from miro.models.lora import (
    LoraSpec,
    adapter_names,
    add_lora,
    lora_state,
    remove_lora,
    reset_lora,
    restore_lora,
)
from miro.testtime.augment import augment, resolve_augmentations
from miro.testtime.budget import Budget, BudgetExceeded, Candidate, Trace
from miro.testtime.render import Condition, derived_seed, to_pil
from miro.testtime.search import Search, as_renderer, check_positive_int, new_trace, seed_list
from miro.testtime.verifier import Scores, Verifier
from miro.utils.config import require, require_choice

VOTES = ("borda", "score")
VIEWS = ("identity", "hflip")


@dataclass
class TTTSettings:
    """The knobs of ``ttt_per_prompt`` (defaults sized for the shapes world's tiny model on a CPU)."""

    n_pseudo: int = 8
    top_k: int = 4
    steps: int = 40
    lr: float = 1e-3
    batch_size: int = 4
    leave_one_out: bool = True
    patience: int = 15
    val_every: int = 5
    val_draws: int = 8
    final_samples: int = 4
    vote: str = "borda"
    augment: list[str] = field(default_factory=lambda: ["auto"])  # ["auto"]: the prompt's safe set; []: none
    lora: LoraSpec = field(default_factory=lambda: LoraSpec(rank=8, alpha=8.0, targets="attention_mlp"))

    def __post_init__(self):
        for key in (
            "n_pseudo",
            "top_k",
            "steps",
            "batch_size",
            "val_every",
            "val_draws",
            "final_samples",
            "patience",
        ):
            check_positive_int(f"ttt.{key}", getattr(self, key))
        require(
            self.top_k <= self.n_pseudo, "ttt.top_k", self.top_k, f"must be <= ttt.n_pseudo={self.n_pseudo}"
        )
        require(not self.leave_one_out or self.top_k >= 2, "ttt.top_k", self.top_k,
                "must be >= 2 with leave_one_out (one demonstration is held out for validation)")  # fmt: skip
        require(math.isfinite(self.lr) and self.lr >= 0, "ttt.lr", self.lr, "must be a number >= 0")
        require_choice("ttt.vote", self.vote, VOTES)
        if isinstance(self.lora, dict):
            self.lora = LoraSpec(**self.lora)

    def planned_nfe(self, render_nfe: float, choose_nfe: float) -> float:
        """The most NFE-eq one prompt can cost (training stops early at most; validation counted in full)."""
        validations = 1 + self.steps // self.val_every if self.leave_one_out else 0
        return (self.n_pseudo * (render_nfe + choose_nfe) + self.steps * self.batch_size * 3
                + validations * self.val_draws + self.final_samples * (render_nfe + choose_nfe))  # fmt: skip


def settings_for_budget(samples: float, render_nfe: float, choose_nfe: float,
                        base: TTTSettings | None = None) -> TTTSettings:  # fmt: skip
    """``base`` resized to cost at most ``samples`` samples of ``render_nfe`` per image (a comparison with a
    search at equal NFE-eq): half the samples as pseudo-demonstrations, a quarter as adapted final samples, the
    rest as training steps (each ``batch_size`` x 3 NFE-eq plus its share of validation).  ``BudgetError`` below 4
    samples, where nothing is left to train with."""
    from miro.testtime.budget import BudgetError

    base = base or TTTSettings()
    per = render_nfe + choose_nfe
    total = samples * render_nfe
    n_pseudo = max(2, int(samples // 2))
    final = max(1, int(samples // 4))
    top_k = min(base.top_k, n_pseudo)
    left = total - (n_pseudo + final) * per - (base.val_draws if base.leave_one_out else 0)
    step_cost = base.batch_size * 3 + (base.val_draws / base.val_every if base.leave_one_out else 0)
    steps = int(left // step_cost) if left > 0 else 0
    if samples < 4 or steps < 1:
        raise BudgetError(f"ttt_per_prompt needs a budget of at least 4 samples with room for one training step; "
                          f"{samples:g} samples of {render_nfe:g} NFE-eq leave {max(left, 0):g} NFE-eq for training")  # fmt: skip
    fitted = TTTSettings(**{**vars(base), "n_pseudo": n_pseudo, "top_k": top_k, "final_samples": final,
                            "steps": steps, "patience": max(base.patience, steps)})  # fmt: skip
    assert fitted.planned_nfe(render_nfe, choose_nfe) <= total + 1e-6
    return fitted


def borda(scores: Scores, weights: dict[str, float]) -> np.ndarray:
    """Weighted Borda count over the rewards that choose: each reward ranks the candidates (0 = worst; NaN
    scores rank lowest), and a candidate's vote is the weighted sum of its ranks.  Ties broken by the score."""
    n = len(scores)
    total = np.zeros(n)
    for name, w in weights.items():
        col = np.nan_to_num(scores.column(name), nan=-np.inf)
        ranks = np.empty(n)
        ranks[np.argsort(col, kind="stable")] = np.arange(n)
        total += w * ranks
    return total + 1e-6 * np.nan_to_num(scores.score)


class _Trainer:
    """The adapter's training on one prompt's demonstrations (flow-matching loss, fixed condition)."""

    def __init__(
        self, renderer, prompt: str, cond: Condition, cfg: TTTSettings, params, adapter: str, seed: int
    ):
        self.r, self.cfg, self.params, self.adapter = renderer, cfg, params, adapter
        self.model = renderer.pipe.transformer
        c = renderer.conditions(prompt, [cond])
        self.text, self.text_mask = c.text, c.text_mask
        self.rewards, self.reward_mask = c.pos_rewards, c.pos_mask
        self.path, self.times = LinearPath(), TimeSampler("logit_normal")
        self.gen = torch.Generator().manual_seed(derived_seed(seed, 7, 0))

    def loss(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        n, d = x0.shape[0], self.r.device
        s = self.path.sample(x0.to(d), t.to(d), noise.to(d))
        ctx = (
            torch.autocast(d.type, dtype=self.r.autocast)
            if self.r.autocast is not None
            else torch.autocast(d.type, enabled=False)
        )
        with ctx:
            pred = self.model(s.x_t, t.to(d), self.text.expand(n, -1, -1), self.text_mask.expand(n, -1),
                              self.rewards.expand(n, -1), self.reward_mask.expand(n, -1))  # fmt: skip
        return velocity_loss(pred.float(), s.target.float())

    def fixed_draws(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``val_draws`` stratified t in (0, 1) and noises for one held-out latent (the same every validation)."""
        g = torch.Generator().manual_seed(derived_seed(0, 8, 0))
        k = self.cfg.val_draws
        t = (torch.arange(k, dtype=torch.float32) + torch.rand(k, generator=g)) / k
        noise = torch.randn((k, *x0.shape[1:]), generator=g)
        return x0.expand(k, *x0.shape[1:]), t.clamp(1e-3, 1 - 1e-3), noise

    def train(self, train_x0: torch.Tensor, val_x0: torch.Tensor | None, names: Sequence[str], meter) -> dict:
        cfg, model = self.cfg, self.model
        opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=0.0)
        history: dict = {"train_loss": [], "val_loss": [], "val_steps": []}
        val = self.fixed_draws(val_x0) if val_x0 is not None else None

        def validate(step: int) -> float:
            with torch.no_grad():
                v = float(self.loss(*val).mean())
            meter.charge(cfg.val_draws, "validation")
            history["val_loss"].append(v)
            history["val_steps"].append(step)
            return v

        best, best_step, best_state = (validate(0) if val else math.inf), 0, lora_state(model, self.adapter)
        was_training = model.training
        model.train()
        try:
            for step in range(1, cfg.steps + 1):
                idx = torch.randint(train_x0.shape[0], (cfg.batch_size,), generator=self.gen)
                x0 = augment(train_x0[idx], names, self.gen)
                t = self.times(cfg.batch_size, generator=self.gen)
                noise = torch.randn(x0.shape, generator=self.gen)
                loss = self.loss(x0, t, noise).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                meter.charge(3 * cfg.batch_size, "training")
                history["train_loss"].append(float(loss.detach()))
                if val and step % cfg.val_every == 0:
                    model.eval()
                    v = validate(step)
                    model.train()
                    if v < best:
                        best, best_step, best_state = v, step, lora_state(model, self.adapter)
                    elif step - best_step >= cfg.patience:
                        break
        finally:
            model.train(was_training)
        if val:
            restore_lora(model, best_state)
        history.update(best_step=best_step if val else cfg.steps, steps_run=len(history["train_loss"]),
                       best_val_loss=best if val else None)  # fmt: skip
        return history


def ttt_per_prompt(pipe, prompts: Sequence[str], verifier: Verifier, *, seeds: int | Sequence[int] = 0,
                   config: TTTSettings | None = None, settings=None, budget: Budget | None = None,
                   adapter_name: str = "ttt", mixed_precision: str = "auto",
                   progress: bool = False) -> tuple[list, Trace]:  # fmt: skip
    """Test-time training per prompt (module docstring).  Returns one PIL image per prompt and the ``Trace``
    (one ``SearchTrace`` per prompt: every pseudo-demonstration and final candidate with every reward, marked
    ``extra["stage"]``; the losses and the best-demo / chosen comparison in ``extra``).  The transformer is
    left as it was: the adapter is re-initialised for every prompt and removed at the end.  ``budget``: when
    given, the settings' most expensive path (``TTTSettings.planned_nfe``) must fit in it, so the method
    compares with a search at the same NFE-eq."""
    cfg = config or TTTSettings()
    renderer = as_renderer(pipe, settings, mixed_precision)
    if budget is not None:
        one = renderer.one_sample_nfe()
        need = max(
            cfg.planned_nfe(renderer.nfe(renderer.default), verifier.nfe([p], "chooser")) for p in prompts
        )
        if need > budget.total(one) + 1e-9:
            raise BudgetExceeded(f"ttt_per_prompt with these settings costs up to {need:g} NFE-eq per image "
                                 f"({need / one:.2f} samples) but the budget is {budget.total(one):g}; raise "
                                 f"budget.samples to >= {math.ceil(need / one * 100) / 100:g} or lower ttt.n_pseudo, "
                                 "ttt.steps or ttt.final_samples")  # fmt: skip
    seeds = seed_list(prompts, seeds)
    model = renderer.pipe.transformer
    if adapter_name in adapter_names(model):
        raise ValueError(
            f"the transformer already has an adapter named {adapter_name!r}; pass another adapter_name"
        )
    pixel_space = renderer.pipe.autoencoder.downsample == 1 and renderer.latent_shape[0] == 3
    plans = {
        p: resolve_augmentations(cfg.augment, p, pixel_space) for p in dict.fromkeys(prompts)
    }  # errors first
    cond = renderer.default
    render_nfe = renderer.nfe(cond)
    params = add_lora(model, cfg.lora, adapter_name)
    trace = new_trace("ttt_per_prompt", renderer, verifier, Budget(samples=1), {
        "config": {k: v for k, v in vars(cfg).items() if k != "lora"}, "lora": vars(cfg.lora), "adapter": adapter_name})  # fmt: skip
    images = []
    try:
        from tqdm.auto import tqdm

        for prompt, seed in tqdm(list(zip(prompts, seeds)), desc="ttt", disable=not progress):
            total = cfg.planned_nfe(render_nfe, verifier.nfe([prompt], "chooser"))
            search = Search(renderer, verifier, Budget(nfe=total), prompt, seed)
            reset_lora(model, adapter_name, seed=derived_seed(seed, 9, 0))  # the same fresh adapter every run
            image = _one_prompt(search, renderer, cond, cfg, plans[prompt], params, adapter_name, render_nfe)
            images.append(image)
            trace.searches.append(search.trace)
    finally:
        remove_lora(model, adapter_name)
    return images, trace


def _score(search: Search, images: torch.Tensor, spent: float, stage: str, views: Sequence[str],
           noises: Sequence[int]) -> Scores:  # fmt: skip
    """Charge and score ``images``, record them as candidates of ``stage`` (not chosen here)."""
    r, v, prompt = search.renderer, search.verifier, search.prompt
    search.meter.charge(spent, f"rendering {stage}")
    pil = to_pil(images)
    scores = v.score(pil, [prompt] * len(pil))
    search.meter.charge(search.choose_nfe * len(pil), f"scoring {stage}")
    search.meter.charge_report(search.report_nfe * len(pil))
    for i in range(len(pil)):
        search.trace.candidates.append(Candidate(
            index=len(search.trace.candidates), rewards=scores.rewards(i), score=float(scores.score[i]),
            condition=r.default.to_dict(), noise={"seed": search.seed, "index": int(noises[i])}, nfe=search.meter.spent,
            extra={"stage": stage, "view": views[i]}))  # fmt: skip
    return scores, pil


def _render(renderer, prompt: str, seed: int, indices: Sequence[int], views: Sequence[str], cond: Condition):
    noise = torch.cat([renderer.noise(seed, j) for j in indices])
    flip = torch.tensor([v == "hflip" for v in views])
    noise[flip] = noise[flip].flip(-1)
    out, spent = renderer.render(prompt, noise, cond)
    out[flip] = out[flip].flip(-1)  # the mirrored view mapped back
    return out, spent


def _one_prompt(search: Search, renderer, cond: Condition, cfg: TTTSettings, names: Sequence[str], params,
                adapter: str, render_nfe: float):  # fmt: skip
    prompt, seed = search.prompt, search.seed
    model = renderer.pipe.transformer
    # 1. pseudo-demonstrations: the plain sample of the seed is candidate 0, as in every search method
    model.disable_adapters()
    try:
        demo_images, spent = _render(
            renderer, prompt, seed, range(cfg.n_pseudo), ["identity"] * cfg.n_pseudo, cond
        )
    finally:
        model.enable_adapters()
    demo_scores, _ = _score(
        search, demo_images, spent, "pseudo", ["identity"] * cfg.n_pseudo, range(cfg.n_pseudo)
    )
    order = np.argsort(-np.nan_to_num(demo_scores.score, nan=-np.inf), kind="stable")[: cfg.top_k]
    with torch.no_grad():
        latents = renderer.pipe.autoencoder.encode(demo_images[order] * 2 - 1).float()
    held = int(order[-1]) if cfg.leave_one_out else None
    train_x0 = latents[:-1] if cfg.leave_one_out else latents
    val_x0 = latents[-1:] if cfg.leave_one_out else None
    # 2. train the fresh adapter
    trainer = _Trainer(renderer, prompt, cond, cfg, params, adapter, seed)
    history = trainer.train(train_x0, val_x0, names, search.meter)
    # 3. augmented inference with the adapter, then the vote
    views = [VIEWS[j % 2] if "hflip" in names else "identity" for j in range(cfg.final_samples)]
    idx = [cfg.n_pseudo + j for j in range(cfg.final_samples)]
    final_images, spent = _render(renderer, prompt, seed, idx, views, cond)
    final_scores, pil = _score(search, final_images, spent, "final", views, idx)
    votes = (
        borda(final_scores, _chooser_weights(search.verifier)) if cfg.vote == "borda" else final_scores.score
    )
    pick = int(np.argmax(np.nan_to_num(votes, nan=-np.inf)))
    chosen = len(search.trace.candidates) - cfg.final_samples + pick
    search.take(search.trace.candidates[chosen], pil[pick], None)
    best_demo = float(np.nanmax(demo_scores.score)) if np.isfinite(demo_scores.score).any() else math.nan
    chosen_score = float(final_scores.score[pick])
    image, _ = search.finish(
        augmentations=list(names), held_out_demo=held, demos=[int(i) for i in order], best_demo_score=best_demo,
        baseline_score=float(demo_scores.score[0]), chosen_score=chosen_score,
        beats_best_demo=bool(chosen_score > best_demo), final_mean_score=float(np.nanmean(final_scores.score)),
        demo_mean_score=float(np.nanmean(demo_scores.score)), **history)  # fmt: skip
    return image


def _chooser_weights(verifier: Verifier) -> dict[str, float]:
    """The verifier's weight of every reward that chooses (the Borda vote's weights)."""
    return {n: float(verifier.weights[n]) for n in verifier.choosers}


def ttt_method(
    pipe,
    prompts: Sequence[str],
    verifier: Verifier,
    budget: Budget,
    *,
    seeds: int | Sequence[int] = 0,
    settings=None,
    mixed_precision: str = "auto",
    batch_size: int | None = None,
    **ttt,
) -> tuple[list, Trace]:
    """``ttt_per_prompt`` with the search methods' signature (``miro.testtime.methods.METHODS``): ``ttt`` are
    ``TTTSettings`` fields; ``batch_size`` (the searches' rendering chunk) is not used."""
    config = ttt.pop("config", None) or TTTSettings(**ttt)
    return ttt_per_prompt(pipe, prompts, verifier, seeds=seeds, config=config, settings=settings, budget=budget,
                          mixed_precision=mixed_precision, progress=True)  # fmt: skip


__all__ = ["TTTSettings", "VOTES", "borda", "settings_for_budget", "ttt_method", "ttt_per_prompt"]
