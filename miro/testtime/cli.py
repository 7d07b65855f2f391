"""``python -m miro.testtime``: test-time scaling of a saved pipeline on a list of prompts (hydra, typed schema).

    python -m miro.testtime pipeline=runs/tiny/pipeline prompts='["a red circle"]' method=best_of_n budget.samples=8
    python -m miro.testtime pipeline=... metadata=world/heldout/evaluation_metadata.jsonl limit=20 seeds='[0,1,2,3]' \
        method=condition_search 'verifier.rewards=[sharpness,low_noise,colorfulness,contrast,intrinsic]' \
        'verifier.held_out=[contrast]'

One search per (prompt, seed).  Writes into ``out_dir``: ``images/NNNNN_sSEED.png`` (the kept image of each
search), ``trace.json`` (``miro.testtime.budget.Trace``: NFE-eq, wall time, every reward of every candidate,
the kept condition and noise) and ``summary.json`` (mean kept rewards, NFE-eq, the calibration).  The verifier's
scorers are built here: annotate's scorers for the reward names of ``miro.contracts.rewards``, the model's own
judges (``intrinsic``, ``rubric``) and the shapes world's GenEval judge (``geneval``, reading ``metadata``).
Rewards without ``verifier.stats`` are z-normalised on the one-sample images of the searches (the baseline).
"""

from __future__ import annotations

import json
from pathlib import Path

from miro.testtime.config import JUDGES, TestTimeConfig
from miro.utils.config import ConfigError, entry_point


def load_prompts(cfg: TestTimeConfig) -> tuple[list[str], list[dict]]:
    """The prompts (``prompts`` then those of ``metadata``, cut to ``limit``) and the metadata rows."""
    from miro.testtime.verifier import load_prompt_metadata

    rows = load_prompt_metadata(cfg.metadata) if cfg.metadata else []
    prompts = list(cfg.prompts) + [r["prompt"] for r in rows]
    if cfg.limit is not None:
        prompts = prompts[: cfg.limit]
    return prompts, rows


def build_scorers(cfg: TestTimeConfig, pipe, metadata: list[dict]) -> list:
    """The verifier's scorers for ``verifier.rewards``."""
    v = cfg.verifier
    names = [n for n in v.rewards if n not in JUDGES]
    scorers = []
    if names:
        from annotate.scorers.registry import build_scorers as annotate_build_scorers
        from miro.utils.device import resolve_device

        configs = {n: dict((v.configs or {}).get(n, {}) or {}) for n in names}
        scorers += annotate_build_scorers(names, configs, device=resolve_device(v.device))
    if "intrinsic" in v.rewards:
        from miro.testtime.intrinsic import IntrinsicVerifier

        i = v.intrinsic
        scorers.append(IntrinsicVerifier(pipe, i.rewards, i.draws, i.t_range, i.others, i.text, i.seed,
                                         mixed_precision=cfg.mixed_precision, t_ranges=i.t_ranges))  # fmt: skip
    if "rubric" in v.rewards:
        from miro.testtime.intrinsic import RubricVerifier

        r = v.rubric
        scorers.append(RubricVerifier(pipe, r.draws, r.t_range, r.max_counterfactuals, r.reward_targets, r.seed,
                                      mixed_precision=cfg.mixed_precision, aggregate=r.aggregate))  # fmt: skip
    if "geneval" in v.rewards:
        from miro.testtime.verifier import GenEvalScorer

        scorers.append(GenEvalScorer(metadata, soft=v.geneval_soft))
    return scorers


def run(cfg: TestTimeConfig, pipe=None) -> dict:
    """Run the method on every (prompt, seed); returns the summary (also written to ``summary.json``)."""
    import numpy as np
    import torch

    from miro.testtime.methods import run_method
    from miro.testtime.render import Renderer, to_pil
    from miro.testtime.verifier import Verifier, norms_from_reward_stats
    from miro.utils.storage import check_writable

    prompts, metadata = load_prompts(cfg)
    if (
        pipe is None
        and not Path(cfg.pipeline).exists()
        and (cfg.pipeline.startswith((".", "/", "~")) or cfg.pipeline.count("/") != 1)
    ):
        raise FileNotFoundError(f"pipeline={cfg.pipeline!r}: no such folder (a MiroPipeline.save_pretrained folder, "
                                "or a repo id owner/name in the Hugging Face cache)")  # fmt: skip
    out_dir = check_writable(cfg.out_dir, "out_dir")
    if pipe is None:
        from miro.sampling.pipeline import load_pipeline

        pipe = load_pipeline(cfg.pipeline, cfg.device, cfg.dtype)
    renderer = Renderer(pipe, cfg.settings, cfg.mixed_precision)
    v = cfg.verifier
    norms = norms_from_reward_stats(v.stats) if v.stats else {}
    verifier = Verifier(
        build_scorers(cfg, pipe, metadata), dict(v.weights) or None, list(v.held_out), norms, v.batch_size
    )
    jobs = [(p, s) for p in prompts for s in cfg.seeds]
    calibration = {"reference": v.reference, "images": 0, "nfe": 0}
    if v.reference == "baseline" and any(verifier.norms[n].source == "none" for n in verifier.names):
        images, nfe = [], 0  # the one-sample images: candidate 0 of every search
        for p, s in jobs:
            out, spent = renderer.render(p, renderer.noise(s), renderer.default)
            images += to_pil(out)
            nfe += spent
        verifier.calibrate(images, [p for p, _ in jobs])
        calibration.update(images=len(images), nfe=int(nfe) + int(verifier.nfe([p for p, _ in jobs], "chooser"))
                           + int(verifier.nfe([p for p, _ in jobs], "report")))  # fmt: skip
    verifier.warn_if_unnormalised()
    images, trace = run_method(cfg.method, renderer, [p for p, _ in jobs], verifier, cfg.budget.budget(),
                               seeds=[s for _, s in jobs], **cfg.method_options())  # fmt: skip
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    index = {p: i for i, p in reversed(list(enumerate(prompts)))}
    for (p, s), image in zip(jobs, images):
        image.save(image_dir / f"{index[p]:05d}_s{s}.png")
    trace.options["calibration"] = calibration
    trace.save(out_dir / "trace.json")
    chosen = [st.chosen_rewards for st in trace.searches]
    summary = {
        "method": cfg.method, "searches": len(jobs), "budget": trace.budget, "one_sample_nfe": trace.one_sample_nfe,
        "nfe": trace.nfe, "report_nfe": trace.report_nfe, "wall_time": trace.wall_time, "calibration": calibration,
        "verifier": trace.verifier,
        "mean_kept_rewards": {n: float(np.nanmean([c.get(n, np.nan) for c in chosen])) if chosen else None
                              for n in verifier.names},
        "device": str(renderer.device), "torch": torch.__version__,
    }  # fmt: skip
    from miro.utils.atomic import atomic_write_text

    atomic_write_text(out_dir / "summary.json", json.dumps(_finite(summary), indent=1) + "\n")
    return summary


def _finite(obj):
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def run_and_report(cfg: TestTimeConfig) -> dict:
    summary = run(cfg)
    kept = ", ".join(f"{k} {v:.4g}" for k, v in summary["mean_kept_rewards"].items() if v is not None)
    print(f"{cfg.method}: {summary['searches']} searches, {summary['nfe']:g} NFE-eq "
          f"({summary['one_sample_nfe']:g} per sample), mean kept rewards: {kept}; written to {cfg.out_dir}")  # fmt: skip
    return summary


# a bad value, a missing pipeline or metadata file, an unwritable out_dir, a budget below one sample: one error line
def _errors() -> tuple:
    from miro.eval.geneval.prompts import MetadataError
    from miro.sampling.pipeline import PipelineFolderError
    from miro.utils.storage import OutputError

    return (ConfigError, FileNotFoundError, PipelineFolderError, OutputError, MetadataError)


main = entry_point("testtime", TestTimeConfig, run_and_report, errors=_errors)

__all__ = ["main", "run"]
