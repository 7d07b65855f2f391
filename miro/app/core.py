"""The slider app without its page: what a form asks of the pipeline, generation, measured rewards, sweeps,
downloads and the messages the page shows instead of a traceback.  No gradio here (``miro.app.ui`` is the page),
so every piece is tested without a browser.

- ``Form`` holds the page's values; ``make_request`` checks them (an empty prompt, a value out of range: an
  ``AppError`` whose message the page shows) and turns them into one ``MiroPipeline`` call (``Request``: the
  prompt, the ``SamplingSettings``, one seed per image, image k with seed + k, so ``python -m miro.sampling
  ... seeds=[seed + k]`` redraws image k).
- ``Measurer``: annotate's reward scorers (the weight-free ones by default).
- ``generate`` and ``sweep`` run the pipeline with a progress report per sampling step and a cancel flag that
  stops it at the next step (``sampling_steps``); ``write_download`` / ``write_sweep_download`` write the zip
  files the page offers (images, and their settings as JSON in the format of ``python -m miro.sampling``).
"""

from __future__ import annotations

import html
import json
import math
import threading
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from miro.app.config import GUIDANCE_MODES
from miro.contracts.rewards import from_author_key
from miro.sampling.settings import SamplingSettings
from miro.utils.config import ConfigError

StepCallback = Callable[[int, int], None]  # (steps done, steps in all)


class AppError(Exception):
    """Something the user can fix, in words for the page (shown instead of a traceback)."""


class Cancelled(Exception):
    """The user pressed Cancel: raised at the next sampling step."""


# ---------------------------------------------------------------------------------------------------- the model
def reference_pipeline() -> Path:
    """The shipped reference model of the shapes world: ``models/shapes_reference`` of the checkout."""
    return Path(__file__).resolve().parents[2] / "models" / "shapes_reference"


PIPELINE_HINT = ("Start the app with a folder written by MiroPipeline.save_pretrained (a training run's final/): "
                 "python -m miro.app pipeline=<folder>.  Without pipeline= it opens the shipped reference model "
                 "models/shapes_reference of a checkout.")  # fmt: skip


def load_app_pipeline(path: str | Path | None, device: str = "auto", dtype: str = "float32"):
    """The pipeline of ``path`` (None = the reference model), or an ``AppError`` saying what is wrong with the
    folder: missing, not a pipeline folder, a damaged or foreign weight file, anything else that fails to load."""
    from miro.sampling.pipeline import PipelineFolderError, load_pipeline

    folder = reference_pipeline() if path is None else Path(path).expanduser()
    shown = "the reference model " + str(folder) if path is None else str(path)
    if not folder.exists():
        raise AppError(f"pipeline={shown}: no such folder")
    if not folder.is_dir():
        raise AppError(f"pipeline={shown}: a file, not a pipeline folder")
    try:
        return load_pipeline(folder, device, dtype)
    except (FileNotFoundError, PipelineFolderError) as err:
        raise AppError(f"pipeline={shown}: {err}") from None
    except Exception as err:  # noqa: BLE001 - a foreign or damaged folder fails anywhere in diffusers; say so on the page
        raise AppError(f"pipeline={shown}: not loadable as a MiroPipeline ({type(err).__name__}: {err})") from None


# ---------------------------------------------------------------------------------------------------- the form
@dataclass
class Form:
    """The page's values (what the user set)."""

    prompt: str
    reward_targets: dict[str, float] = field(default_factory=dict)
    negative_reward_targets: dict[str, float] = field(default_factory=dict)
    guidance_mode: str = "decoupled"
    guidance_scale: float = 7.0
    text_guidance_scale: float = 3.0
    reward_guidance_scale: float = 1.0
    steps: int = 25
    sampler: str = "euler"
    seed: int = 0
    num_images: int = 4
    free: list[str] = field(default_factory=list)  # rewards left free: the null token in both guidance branches


@dataclass
class Request:
    """One pipeline call: ``pipe(prompt, settings=settings, **pipe_kwargs())``, image k drawn with ``seeds[k]``."""

    prompt: str
    settings: SamplingSettings
    seeds: list[int]

    def pipe_kwargs(self) -> dict[str, Any]:
        import torch

        return {
            "settings": self.settings,
            "num_images_per_prompt": len(self.seeds),
            "generator": [torch.Generator().manual_seed(s) for s in self.seeds],
            "output_type": "pil",
            "return_dict": True,
        }


def check_prompt(prompt: str | None) -> str:
    text = (prompt or "").strip()
    if not text:
        raise AppError("The prompt is empty: type what the images should show, then press Generate.")
    return text


def _integer(value: Any, key: str, low: int, high: int | None = None) -> int:
    """A whole number from a page control (numbers arrive as floats), in [low, high]."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and float(value).is_integer()
    allowed = f"a whole number >= {low}" if high is None else f"a whole number in {low}..{high}"
    if not ok or not (low <= int(value) and (high is None or int(value) <= high)):
        raise AppError(f"{key}={value!r}: must be {allowed}")
    return int(value)


def form_settings(form: Form, base: SamplingSettings) -> SamplingSettings:
    """``base`` (the app's configured settings) with the page's values: targets, the guidance mode's scales
    (``joint``: one scale, the decoupled ones unset; ``decoupled``: the text and reward scales), steps, sampler."""
    if form.guidance_mode not in GUIDANCE_MODES:
        raise AppError(f"guidance mode {form.guidance_mode!r}: must be one of {list(GUIDANCE_MODES)}")
    if form.guidance_mode == "joint":
        scales = {"guidance_scale": form.guidance_scale, "text_guidance_scale": None, "reward_guidance_scale": None}
    else:
        scales = {"text_guidance_scale": form.text_guidance_scale, "reward_guidance_scale": form.reward_guidance_scale}
    unknown = [n for n in form.free if n not in form.reward_targets]
    if unknown:
        raise AppError(f"free rewards {unknown}: this model has {list(form.reward_targets)}")
    try:
        return base.updated(
            reward_targets={n: None if n in form.free else v for n, v in form.reward_targets.items()},
            negative_reward_targets={n: None if n in form.free else v for n, v in form.negative_reward_targets.items()},
            steps=_integer(form.steps, "steps", 1),
            sampler=form.sampler,
            **scales,
        )
    except ConfigError as err:  # "settings.<key>=<value>: <allowed>"
        raise AppError(str(err)) from None


def make_request(form: Form, base: SamplingSettings, max_images: int = 16) -> Request:
    """The pipeline call a form asks for; ``AppError`` for an empty prompt or a value out of range."""
    prompt = check_prompt(form.prompt)
    settings = form_settings(form, base)
    n = _integer(form.num_images, "number of images", 1, max_images)
    seed = _integer(form.seed, "seed", 0, 2**63 - 1 - n)
    return Request(prompt, settings, [seed + k for k in range(n)])


# ---------------------------------------------------------------------------------------------------- progress
@contextmanager
def sampling_steps(pipe, total: int, on_step: StepCallback | None = None, cancel: threading.Event | None = None):
    """While inside, every sampling step of ``pipe`` calls ``on_step(done, total)`` and, once ``cancel`` is set,
    raises ``Cancelled`` (the step after the user pressed Cancel).  ``MiroPipeline`` counts its steps through
    diffusers' ``progress_bar``; this replaces it on the instance and restores it on leaving."""

    class _Steps:
        done = 0

        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n: int = 1) -> None:
            _Steps.done += n
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"after step {_Steps.done} of {total}")
            if on_step is not None:
                on_step(min(_Steps.done, total), total)

    if cancel is not None and cancel.is_set():
        raise Cancelled(f"before step 1 of {total}")
    pipe.progress_bar = _Steps
    try:
        yield
    finally:
        del pipe.progress_bar


class CancelFlags:
    """One cancel flag per browser session: a job registers its flag, Cancel sets it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._flags: dict[str, threading.Event] = {}

    def start(self, key: str) -> threading.Event:
        with self._lock:
            flag = self._flags[key] = threading.Event()
            return flag

    def cancel(self, key: str) -> bool:
        """Set the session's flag; False when it runs nothing."""
        with self._lock:
            flag = self._flags.get(key)
        if flag is None:
            return False
        flag.set()
        return True

    def finish(self, key: str, flag: threading.Event) -> None:
        with self._lock:
            if self._flags.get(key) is flag:
                del self._flags[key]


# ---------------------------------------------------------------------------------------------------- measuring
class _Column:
    """One reward of a ``Measurer`` as a single-output scorer (``score(images, prompts)``, for ``miro.eval.sliders``)."""

    def __init__(self, measurer: Measurer, name: str):
        self.measurer, self.name = measurer, name

    def score(self, images, prompts):
        return self.measurer.measure(images, prompts, [self.name])[self.name]


class Measurer:
    """The rewards measured on every image: annotate's scorers (``build_scorers``: rewards sharing work share a
    scorer).  ``measure`` gives {reward: float64 per image, NaN where it cannot be computed}."""

    def __init__(self, scorers: Sequence, names: Sequence[str]):
        self.scorers, self.names = list(scorers), list(names)

    @classmethod
    def build(cls, configs: Mapping[str, Mapping], device: str = "auto") -> Measurer:
        """``configs``: {reward: its scorer's settings} (``miro.app.config.scorer_configs``); a scorer whose weights
        are missing is an ``AppError`` naming the file."""
        from annotate.scorers.registry import build_scorers
        from miro.utils.device import resolve_device

        try:
            scorers = build_scorers(list(configs), {k: dict(v) for k, v in configs.items()}, device=resolve_device(device))
        except (ConfigError, FileNotFoundError, OSError, ValueError) as err:
            raise AppError(f"scorers={list(configs)}: {err}") from None
        return cls(scorers, list(configs))

    def measure(self, images, prompts: Sequence[str | None], names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        wanted = self.names if names is None else list(names)
        out: dict[str, np.ndarray] = {}
        for scorer in self.scorers:
            if not set(scorer.outputs) & set(wanted):
                continue
            scores = scorer.score_dict(list(images), list(prompts))
            out.update({k: np.asarray(v, dtype=np.float64) for k, v in scores.items() if k in wanted})
        return {name: out[name] for name in wanted if name in out}

    def column(self, name: str) -> _Column:
        if name not in self.names:
            raise AppError(f"reward {name!r} is not measured here; measured: {self.names} (add it with scorers=[...])")
        return _Column(self, name)


def _json_float(value: float) -> float | None:
    return float(value) if math.isfinite(float(value)) else None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _target(targets: Mapping[str, float | None], name: str) -> str:
    """A reward's target as the rewards table shows it: its value, "free" (None: not steered), "-" (not given)."""
    if name not in targets:
        return "-"
    return "free" if targets[name] is None else _fmt(targets[name])


# ---------------------------------------------------------------------------------------------------- generation
@dataclass
class Generation:
    """The images of one request, what the pipeline resolved for each (``metadata``: the JSON that ``python -m
    miro.sampling`` writes beside an image, plus ``measured``) and the measured rewards."""

    index: int
    request: Request
    images: list  # PIL images, as generated
    metadata: list[dict]
    measured: dict[str, list[float | None]]
    pipeline: str
    seconds: float

    def mean(self, name: str) -> float | None:
        values = [v for v in self.measured.get(name, []) if v is not None]
        return float(np.mean(values)) if values else None

    def image_names(self) -> list[str]:
        return [f"{k:05d}_s{seed}.png" for k, seed in enumerate(self.request.seeds)]

    def settings_json(self) -> dict[str, Any]:
        """What the download's ``settings.json`` holds: the request, what the pipeline resolved, the measurements."""
        return {
            "prompt": self.request.prompt,
            "pipeline": self.pipeline,
            "seeds": list(self.request.seeds),
            "settings": self.request.settings.to_dict(),
            "measured_mean": {name: self.mean(name) for name in self.measured},
            "images": [{"file": name, **meta} for name, meta in zip(self.image_names(), self.metadata)],
            "seconds": round(self.seconds, 3),
        }


def generate(pipe, request: Request, measurer: Measurer, pipeline: str = "", index: int = 0,
             on_step: StepCallback | None = None, cancel: threading.Event | None = None) -> Generation:  # fmt: skip
    """Render the request and measure every image; ``Cancelled`` when ``cancel`` is set, an ``AppError`` for a
    value the model rejects (a reward it was not trained with, a size it cannot make)."""
    from miro.sampling.cli import image_metadata

    start = time.perf_counter()
    with sampling_steps(pipe, request.settings.steps, on_step, cancel):
        try:
            out = pipe(request.prompt, **request.pipe_kwargs())
        except ValueError as err:  # the pipeline's checks against the model
            raise AppError(str(err)) from None
    scores = measurer.measure(out.images, [request.prompt] * len(out.images))
    measured = {name: [_json_float(v) for v in values] for name, values in scores.items()}
    metadata = []
    for k, (image, seed) in enumerate(zip(out.images, request.seeds)):
        meta = image_metadata(out, k, image, prompt=request.prompt, seed=seed)
        meta["pipeline"] = pipeline
        meta["measured"] = {name: values[k] for name, values in measured.items()}
        metadata.append(meta)
    return Generation(index, request, list(out.images), metadata, measured, pipeline, time.perf_counter() - start)


def display_images(images, size: int) -> list:
    """Images narrower than ``size`` enlarged by a whole factor (nearest neighbour: the pixels stay visible)."""
    from PIL import Image

    out = []
    for image in images:
        factor = max(1, size // max(1, image.width))
        out.append(image if factor == 1 else image.resize((image.width * factor, image.height * factor), Image.NEAREST))
    return out


def rewards_table_html(gen: Generation) -> str:
    """The measured rewards of every image (rows) with the target each reward was given, and their mean."""
    names = list(gen.measured)
    targets = gen.metadata[0]["reward_targets"] if gen.metadata else {}
    head = "".join(f'<th data-reward="{html.escape(n)}">{html.escape(n)}</th>' for n in names)
    target_row = "".join(
        f'<td data-reward="{html.escape(n)}" data-role="target">{_target(targets, n)}</td>'
        for n in names
    )
    rows = []
    for k, seed in enumerate(gen.request.seeds):
        cells = "".join(f'<td data-reward="{html.escape(n)}" data-image="{k}">{_fmt(gen.measured[n][k])}</td>' for n in names)
        rows.append(f'<tr data-image="{k}"><td>image {k + 1}</td><td>{seed}</td>{cells}</tr>')
    mean = "".join(f'<td data-reward="{html.escape(n)}" data-role="mean">{_fmt(gen.mean(n))}</td>' for n in names)
    return (
        f'<table class="miro-rewards" data-generation="{gen.index}">'
        f"<caption>Measured rewards (the scorers' raw scale; the target is the slider's value in [0, 1])</caption>"
        f"<thead><tr><th></th><th>seed</th>{head}</tr></thead><tbody>"
        f'<tr class="target"><td>target</td><td></td>{target_row}</tr>'
        + "".join(rows)
        + f'<tr class="mean"><td>mean</td><td></td>{mean}</tr></tbody></table>'
    )


def write_download(gen: Generation, folder: str | Path) -> Path:
    """A zip of the images (PNG, as generated), one JSON per image (the format of ``python -m miro.sampling``)
    and ``settings.json`` (``Generation.settings_json``)."""
    import io

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"miro_images_{gen.index:04d}_s{gen.request.seeds[0]}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, image, meta in zip(gen.image_names(), gen.images, gen.metadata):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            archive.writestr(name, buffer.getvalue())
            archive.writestr(name.replace(".png", ".json"), json.dumps(meta, indent=2))
        archive.writestr("settings.json", json.dumps(gen.settings_json(), indent=2))
    return path


# ---------------------------------------------------------------------------------------------------- sweeps
def sweep_targets(low: float, high: float, num: int) -> list[float]:
    """``num`` targets evenly spaced on [low, high]."""
    num = _integer(num, "number of targets", 2, 11)
    if not (0.0 <= low < high <= 1.0):
        raise AppError(f"sweep from {low} to {high}: must satisfy 0 <= from < to <= 1")
    return [round(float(t), 4) for t in np.linspace(low, high, num)]


@dataclass
class SweepView:
    scored: Any  # miro.eval.sliders.ScoredSweep
    plot: Path
    grid: Any  # PIL image
    archive: Path

    @property
    def reward(self) -> str:
        return self.scored.sweep.reward


def sweep(pipe, form: Form, base: SamplingSettings, measurer: Measurer, reward: str, targets: Sequence[float],
          num_seeds: int, folder: str | Path, plot_all: bool = False, pipeline: str = "", batch_size: int = 16,
          on_step: StepCallback | None = None, cancel: threading.Event | None = None) -> SweepView:  # fmt: skip
    """Vary ``reward`` over ``targets`` (the other rewards at the form's sliders, or free where the form frees them;
    the swept reward is steered even when the form frees it) for seeds seed..seed+num_seeds-1,
    measure the images (``miro.eval.sliders``: the swept reward, or every measured one with ``plot_all``) and write
    the sweep folder (grid, images, sweep.json with the scores, plot.png) and its zip into ``folder``."""
    from miro.eval.sliders import save_scores, score_sweep
    from miro.sampling.sliders import grid_image, reward_sweep, save_sweep

    prompt = check_prompt(form.prompt)
    if reward not in form.reward_targets:
        raise AppError(f"reward {reward!r}: this model has {list(form.reward_targets)}")
    form = replace(form, free=[n for n in form.free if n != reward])
    settings = form_settings(form, base)
    seed = _integer(form.seed, "seed", 0)
    seeds = [seed + k for k in range(_integer(num_seeds, "number of seeds", 1, 8))]
    measured = [reward] if reward in measurer.names else []
    plotted = measured + [n for n in measurer.names if n != reward] if (plot_all or not measured) else measured
    calls = math.ceil(len(targets) * len(seeds) / batch_size)
    with sampling_steps(pipe, calls * settings.steps, on_step, cancel):
        try:
            result = reward_sweep(
                pipe, prompt, reward, list(targets), seeds,
                fixed_targets={n: v for n, v in settings.reward_targets.items() if n != reward},  # None where free
                batch_size=batch_size, settings=settings.updated(reward_targets={}),
            )  # fmt: skip
        except ValueError as err:
            raise AppError(str(err)) from None
    result.settings["pipeline"] = pipeline
    scored = score_sweep(result, {name: measurer.column(name) for name in plotted})
    folder = Path(folder)
    save_sweep(result, folder)
    paths = save_scores(scored, folder)
    archive = folder.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            zf.write(file, file.relative_to(folder).as_posix())
    return SweepView(scored, paths["plot"], grid_image(result), archive)


def sweep_summary_html(view: SweepView) -> str:
    """Per measured reward: the mean (and std over seeds) at each target and Spearman's rho against the target."""
    summary = view.scored.summary()
    targets = view.scored.sweep.targets
    parts = []
    for name, s in summary.items():
        rho = s["spearman"]
        cells = "".join(
            f"<td>{_fmt(m)} &plusmn; {_fmt(d)}</td>" for m, d in zip(s["mean"], s["std"])
        )
        parts.append(
            f'<tr data-reward="{html.escape(name)}" data-spearman="{"" if rho is None else f"{rho:.4f}"}">'
            f"<td>{html.escape(name)}</td>{cells}<td>{_fmt(rho)}</td></tr>"
        )
    head = "".join(f"<th>{t:g}</th>" for t in targets)
    return (
        f'<table class="miro-sweep" data-reward="{html.escape(view.reward)}">'
        f"<caption>Measured (mean &plusmn; std over seeds) at each target of {html.escape(view.reward)}</caption>"
        f"<thead><tr><th>measured</th>{head}<th>Spearman</th></tr></thead><tbody>{''.join(parts)}</tbody></table>"
    )


# ---------------------------------------------------------------------------------------------------- messages
def status_html(kind: str, text: str) -> str:
    """A message box of the page: ``kind`` info, ok or error."""
    return f'<div class="miro-status miro-{html.escape(kind)}" data-kind="{html.escape(kind)}">{html.escape(text)}</div>'


def error_page_html(title: str, message: str, hint: str = PIPELINE_HINT) -> str:
    """The page served instead of the app when it cannot start (a bad pipeline folder, scorers that cannot load)."""
    return (
        f'<div class="miro-error-page" id="miro-error-page"><h2>{html.escape(title)}</h2>'
        f'<pre class="miro-error-message">{html.escape(message)}</pre><p>{html.escape(hint)}</p></div>'
    )


# ---------------------------------------------------------------------------------------------------- the app
@dataclass
class AppState:
    """What the page works with: the loaded pipeline, the measurer, the configured starting values, a folder for
    downloads, one lock (one job uses the model at a time) and the sessions' cancel flags."""

    cfg: Any  # miro.app.config.AppConfig
    pipe: Any
    measurer: Measurer
    pipeline: str
    workdir: Path
    lock: threading.Lock = field(default_factory=threading.Lock)
    cancels: CancelFlags = field(default_factory=CancelFlags)
    _count: int = 0

    @property
    def reward_names(self) -> list[str]:
        return list(self.pipe.reward_names)

    def next_index(self) -> int:
        with self.lock:
            self._count += 1
            return self._count

    def initial_form(self) -> Form:
        """The controls' starting values: the configured settings against this model (targets the configured
        ones, else the pipeline's ``recommended_reward_targets``, else 1.0; negatives 0.0; the pipeline's
        defaults).  A target at None (configured or recommended) starts that reward free; its sliders start
        at the clean defaults, 1.0 and 0.0, for when the user steers it again."""
        from miro.sampling.targets import canonical_keys

        s, names = self.cfg.settings, self.reward_names
        recommended = getattr(self.pipe, "recommended_reward_targets", None) or {}
        targets = {**recommended, **canonical_keys(s.reward_targets, names, "settings.reward_targets")}
        negatives = canonical_keys(s.negative_reward_targets, names, "settings.negative_reward_targets")
        free = [n for n in names if n in targets and targets[n] is None]
        return Form(
            prompt="",
            reward_targets={n: 1.0 if n in free else float(targets.get(n, 1.0)) for n in names},
            negative_reward_targets={n: float(negatives.get(n, 0.0)) for n in names},
            free=free,
            guidance_mode=self.cfg.guidance_mode,
            guidance_scale=s.guidance_scale,
            text_guidance_scale=s.guidance_scale if s.text_guidance_scale is None else s.text_guidance_scale,
            reward_guidance_scale=s.guidance_scale if s.reward_guidance_scale is None else s.reward_guidance_scale,
            steps=s.steps,
            sampler=s.sampler,
            seed=self.cfg.seed,
            num_images=self.cfg.num_images,
        )


def prepare(cfg, workdir: str | Path) -> AppState:
    """Load the pipeline and the scorers of ``cfg`` (``AppConfig``) and check the configured settings against the
    model; an ``AppError`` says what is wrong (the page shows it)."""
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    pipe = load_app_pipeline(cfg.pipeline, cfg.device, cfg.dtype)
    pipeline = str(reference_pipeline() if cfg.pipeline is None else cfg.pipeline)
    state = AppState(cfg, pipe, Measurer.build(cfg.scorers, cfg.device), pipeline, Path(workdir))
    try:
        state.initial_form()
        cfg.settings.guidance(state.reward_names)  # per-reward weights name rewards of this model
    except ValueError as err:
        raise AppError(f"{err} (pipeline={pipeline})") from None
    if cfg.sweep.reward is not None:  # the MIRO authors' key of one of the model's rewards names it
        cfg.sweep.reward = from_author_key(cfg.sweep.reward, state.reward_names) or cfg.sweep.reward
    if cfg.sweep.reward is not None and cfg.sweep.reward not in state.reward_names:
        raise AppError(f"sweep.reward={cfg.sweep.reward!r}: this model has {state.reward_names}")
    return state
