"""``python -m miro.eval <command> [key=value ...]``: GenEval, reward metrics and FID (hydra, typed schema).

    python -m miro.eval prompts prompts.out=prompts/geneval_seed7.jsonl prompts.seed=7
    python -m miro.eval generate image_dir=runs/geneval generate.pipeline=runs/tiny/pipeline
    python -m miro.eval evaluate image_dir=runs/geneval detector.checkpoint=/models/mask2former
    python -m miro.eval evaluate image_dir=runs/geneval detector=shapes
    python -m miro.eval summary image_dir=runs/geneval
    python -m miro.eval geneval image_dir=... generate.pipeline=... detector=shapes   (all three)
    python -m miro.eval rewards image_dir=runs/geneval rewards=[pickscore,hpsv2,sharpness]
    python -m miro.eval compare 'compare.runs=[runs/base,runs/miro]' compare.out_dir=runs/cmp
    python -m miro.eval fid image_dir=runs/geneval fid.reference=data/ref_images
    python -m miro.eval sliders image_dir=samples   (the sweeps of `python -m miro.sampling mode=sweep`)

The first argument names the command (or pass ``command=...``).  Configuration: ``miro/conf/eval.yaml``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from miro.contracts.rewards import our_names
from miro.eval.config import EvalConfig
from miro.utils.config import ConfigError, entry_point, rename_group_options
from miro.utils.device import parse_dtype, resolve_device

log = logging.getLogger("miro.eval")


def load_items(cfg: EvalConfig) -> list[dict]:
    """The prompt set: the metadata file, or GenEval's templates drawn with the seed."""
    from miro.eval.geneval.prompts import generate_suite, load_metadata

    if cfg.prompts.metadata:
        return load_metadata(cfg.prompts.metadata)
    return generate_suite(seed=cfg.prompts.seed, per_task=cfg.prompts.per_task)


def run_prompts(cfg: EvalConfig) -> Path:
    from miro.eval.geneval.prompts import write_metadata

    items = load_items(cfg)
    write_metadata(items, cfg.prompts.out)
    print(f"{len(items)} prompts written to {cfg.prompts.out}")
    return Path(cfg.prompts.out)


def pipeline_generate_fn(pipe, cfg: EvalConfig):
    """The ``generate(prompt, n, generator)`` callable of ``generate_layout`` on a MiroPipeline."""
    settings = cfg.generate.settings

    def generate(prompt, n, generator):
        return pipe(prompt, num_images_per_prompt=n, generator=generator, output_type="pil", settings=settings)

    return generate


def run_generate(cfg: EvalConfig, pipe=None):
    from miro.eval.geneval.generate import generate_layout

    items = load_items(cfg)
    g = cfg.generate
    if g.source == "shapes_oracle":
        from miro.eval.geneval.shapes_oracle import oracle_generate_fn

        generate = oracle_generate_fn(resolution=g.oracle_resolution)
    else:
        if pipe is None:
            from miro.sampling.pipeline import load_pipeline

            pipe = load_pipeline(g.pipeline, g.device, g.dtype)
        generate = pipeline_generate_fn(pipe, cfg)
    from dataclasses import asdict

    from miro.eval.provenance import record_settings

    settings = {k: v for k, v in asdict(g).items() if k not in ("shard_index", "num_shards", "device")}
    settings["prompts"] = {"metadata": cfg.prompts.metadata} if cfg.prompts.metadata else {
        "seed": cfg.prompts.seed, "per_task": cfg.prompts.per_task}  # fmt: skip
    image_dir = Path(cfg.image_dir)
    started = image_dir.is_dir() and any(p.name.isdigit() for p in image_dir.iterdir())
    record_settings(image_dir / "generation.json", settings, resuming=started,
                    hint="use a new image_dir for new settings")  # fmt: skip
    report = generate_layout(
        items, cfg.image_dir, generate, n_samples=g.n_samples, batch_size=g.batch_size,
        seed=g.seed, grid=g.grid, shard_index=g.shard_index, num_shards=g.num_shards,
    )  # fmt: skip
    print(f"{report.written} prompt folders written, {report.skipped} already complete, in {cfg.image_dir}")
    return report


def results_path(cfg: EvalConfig) -> Path:
    return Path(cfg.evaluate.results) if cfg.evaluate.results else Path(cfg.image_dir) / "results.jsonl"


def build_detector(cfg: EvalConfig):
    d = cfg.detector
    if d.name == "shapes":
        from miro.data.shapes.detector import default_detector
        from miro.eval.geneval.evaluate import PerImageDetector

        return PerImageDetector(default_detector().detect)
    from miro.eval.geneval.detector import Mask2FormerDetector

    return Mask2FormerDetector.from_pretrained(
        d.checkpoint, device=resolve_device(d.device), dtype=parse_dtype(d.dtype, "detector.dtype"), batch_size=d.batch_size,
        test_scale=tuple(d.test_scale),
    )


def build_colors(cfg: EvalConfig):
    """The CLIP colour classifier, loaded on first use; None for the shapes detector (exact colours)."""
    if cfg.detector.name == "shapes":
        return None
    from miro.eval.geneval.colors import ColorClassifier
    from miro.eval.geneval.evaluate import LazyColors

    c = cfg.colors
    return LazyColors(
        lambda: ColorClassifier.load(
            c.model, c.pretrained, device=resolve_device(c.device), force_quick_gelu=c.force_quick_gelu,
            batch_size=c.batch_size, background=c.background, crop=c.crop, amp=c.amp,
        )
    )  # fmt: skip


def run_evaluate(cfg: EvalConfig, detector=None) -> dict:
    """Evaluate ``image_dir`` into ``results.jsonl``, then print and write the summary."""
    from dataclasses import asdict

    from miro.eval.geneval.evaluate import evaluate_folder

    settings = {"detector": asdict(cfg.detector)}
    settings["detector"].pop("device")
    settings["detector"].pop("batch_size")
    if cfg.detector.name != "shapes":
        settings["colors"] = {k: v for k, v in asdict(cfg.colors).items() if k not in ("device", "batch_size")}
    evaluate_folder(
        cfg.image_dir,
        detector if detector is not None else build_detector(cfg),
        colors=build_colors(cfg),
        options=cfg.evaluate.rules.options(),
        results=results_path(cfg),
        batch_size=cfg.evaluate.batch_size,
        settings=settings,
    )
    return run_summary(cfg)


def run_geneval(cfg: EvalConfig) -> dict:
    """Generate (complete folders are kept), evaluate, summarise."""
    run_generate(cfg)
    return run_evaluate(cfg)


def run_summary(cfg: EvalConfig) -> dict:
    from miro.eval.geneval.summary import load_results, summarize, to_text, write_summary

    path = results_path(cfg)
    summary = summarize(load_results(path))
    write_summary(summary, path.parent, stem=path.stem.replace("results", "summary") or "summary")
    print(to_text(summary))
    return summary


def build_scorers(cfg: EvalConfig) -> list:
    """annotate's scorers for ``rewards`` (rewards that share work share one scorer)."""
    from annotate.scorers.registry import build_scorers as annotate_build_scorers

    configs = {name: dict(settings) for name, settings in cfg.rewards.items()}
    return annotate_build_scorers(list(configs), configs, device=resolve_device(cfg.reward_metrics.device))


def run_rewards(cfg: EvalConfig, scorers=None) -> dict:
    from miro.eval.rewards import score_folder, summary_markdown, write_reward_summary

    scorers = scorers if scorers is not None else build_scorers(cfg)
    m = cfg.reward_metrics
    rows = score_folder(cfg.image_dir, scorers, out_file=m.out, batch_size=m.batch_size)
    out_dir = Path(m.out).parent if m.out else Path(cfg.image_dir)
    provenance = {name: s.provenance() for s in scorers if hasattr(s, "provenance") for name in [s.name]}
    (out_dir / "rewards_provenance.json").write_text(json.dumps(provenance, indent=2, default=str) + "\n", encoding="utf-8")
    summary = write_reward_summary(rows, out_dir)
    print(summary_markdown(summary))
    return summary


def run_compare(cfg: EvalConfig) -> list[dict]:
    from miro.eval.rewards import compare_folders, comparison_markdown

    c = cfg.compare
    labels = tuple(c.labels) if c.labels else None
    comparison = compare_folders(c.runs[0], c.runs[1], c.out_dir, labels)
    shown = labels or tuple(Path(r).name for r in c.runs)
    print(comparison_markdown(comparison, shown if shown[0] != shown[1] else ("A", "B")))
    print(f"table, JSON and plots in {c.out_dir}")
    return comparison


def run_fid(cfg: EvalConfig) -> float:
    from miro.eval.excluded import report_excluded
    from miro.eval.fid import (
        InceptionFeatures,
        folder_images,
        folder_statistics,
        frechet_distance,
        save_statistics,
    )

    f = cfg.fid
    features = InceptionFeatures(device=resolve_device(f.device), batch_size=f.batch_size)
    excluded: dict[str, list[dict]] = {"reference": [], "generated": []}
    ref = folder_statistics(f.reference, features, excluded=excluded["reference"])
    if f.save_reference_stats:
        save_statistics(f.save_reference_stats, *ref)
    value = frechet_distance(*ref, *folder_statistics(cfg.image_dir, features, excluded=excluded["generated"]))
    for name, folder in (("reference", f.reference), ("generated", cfg.image_dir)):
        total = 0 if str(folder).endswith(".npz") else len(folder_images(folder))
        report_excluded(f"fid ({name} {folder})", excluded[name], total)
    out = Path(cfg.image_dir) / "fid.json"
    out.write_text(json.dumps({"fid": value, "reference": f.reference, "excluded": excluded}, indent=2) + "\n", encoding="utf-8")
    print(f"FID {value:.4f} (written to {out})")
    return value


def run_sliders(cfg: EvalConfig, scorers=None) -> list[dict]:
    """Measure every reward-slider sweep under ``image_dir`` (scores, Spearman, plot.png into each folder)."""
    from miro.eval.sliders import score_sweep_folder, sweep_folders

    folders = sweep_folders(cfg.image_dir)
    if not folders:
        raise FileNotFoundError(f"image_dir={cfg.image_dir!r}: no sweep.json there nor in sweep_* folders "
                                "(written by `python -m miro.sampling mode=sweep`)")  # fmt: skip
    from miro.utils.storage import check_writable_all

    check_writable_all(folders, "sliders: sweep folder")  # scores and plots are written into each
    s = cfg.sliders
    summaries = []
    for folder in folders:
        own = scorers if scorers is not None else build_slider_scorers(s.scorers, folder, s.device)
        scored = score_sweep_folder(folder, own, s.batch_size)
        summary = scored.summary()
        rho = ", ".join(f"{k} {'n/a' if v['spearman'] is None else format(v['spearman'], '.3f')}" for k, v in summary.items())
        print(f"{folder}: {scored.sweep.reward} swept, Spearman {rho}")
        summaries.append(summary)
    return summaries


def build_slider_scorers(names: list[str] | None, folder: Path, device: str) -> dict:
    """annotate's scorers by name; by default the swept reward's own scorer."""
    from miro.sampling.sliders import SWEEP_FILE

    try:
        from annotate.scorers import build_scorer
    except ImportError as err:
        raise ConfigError(f"sliders.scorers={names}: the annotate package (reward scorers) is not importable: {err}") from err
    names = list(names) if names is not None else [json.loads((folder / SWEEP_FILE).read_text())["reward"]]
    return {name: build_scorer(name, device=resolve_device(device)) for name in names}


def output_folders(cfg: EvalConfig) -> list[Path]:
    """The folders a command writes into (checked before any work starts)."""
    results = results_path(cfg).parent if cfg.image_dir or cfg.evaluate.results else None
    m = cfg.reward_metrics
    folders = {
        "prompts": [Path(cfg.prompts.out).parent] if cfg.prompts.out else [],
        "generate": [Path(cfg.image_dir)],
        "evaluate": [results],
        "summary": [results],
        "geneval": [Path(cfg.image_dir), results],
        "rewards": [Path(m.out).parent if m.out else Path(cfg.image_dir)],
        "compare": [Path(cfg.compare.out_dir)] if cfg.compare.out_dir else [],
        "fid": [Path(cfg.image_dir)],
        "sliders": [],  # each sweep folder is checked before it is scored (miro.eval.sliders)
    }[cfg.command]
    return [f for f in folders if f is not None]


def run(cfg: EvalConfig):
    cfg.require_for(cfg.command)
    from miro.utils.storage import check_writable_all

    check_writable_all(output_folders(cfg), f"{cfg.command}: output folder", create=False)
    try:
        return _command(cfg)
    except OSError as err:  # a full disk while writing results: one line (appended rows are kept, a rerun resumes)
        from miro.utils.storage import OutputError, disk_full

        if not disk_full(err):
            raise
        raise OutputError(f"{cfg.command}: disk full while writing {err.filename or 'its outputs'}; the rows written "
                          "so far are kept and a rerun resumes") from None


def _command(cfg: EvalConfig):
    commands = {
        "prompts": run_prompts,
        "generate": run_generate,
        "evaluate": run_evaluate,
        "summary": run_summary,
        "geneval": run_geneval,
        "rewards": run_rewards,
        "compare": run_compare,
        "fid": run_fid,
        "sliders": run_sliders,
    }
    return commands[cfg.command](cfg)



def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that report bad input, settings or missing weights (shown without a traceback)."""
    from miro.eval.fid import FIDInputError, FIDUnavailable
    from miro.eval.geneval.colors import ColorModelUnavailable
    from miro.eval.geneval.detector import DetectorUnavailable
    from miro.eval.geneval.evaluate import EvaluationError
    from miro.eval.geneval.layout import LayoutError
    from miro.eval.geneval.prompts import MetadataError
    from miro.eval.geneval.summary import ResultsError
    from miro.eval.provenance import SettingsMismatch
    from miro.eval.rewards import RewardsError

    return (ConfigError, FileNotFoundError, FIDInputError, FIDUnavailable, ColorModelUnavailable, DetectorUnavailable,
            EvaluationError, LayoutError, MetadataError, ResultsError, SettingsMismatch, RewardsError)  # fmt: skip


def _argv_with_command(argv: list[str]) -> list[str]:
    """``python -m miro.eval evaluate k=v`` -> ``k=v command=evaluate`` (hydra takes only overrides); the MIRO
    authors' keys select our reward's group file (``rewards=[pick_a_score_score]`` is ``rewards=[pickscore]``)."""
    if argv and "=" not in argv[0] and not argv[0].startswith("-"):
        argv = [*argv[1:], f"command={argv[0]}"]
    return rename_group_options(argv, "rewards", our_names)


def run_logged(cfg: EvalConfig):
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run(cfg)


# ``main(["evaluate", "image_dir=..."])`` or ``python -m miro.eval evaluate image_dir=...``: bad values, bad input
# or missing weights end in one "error: ..." line that says what to do
main = entry_point("eval", EvalConfig, run_logged, errors=user_errors, argv=_argv_with_command)
