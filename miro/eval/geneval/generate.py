"""Generate GenEval's image folder from a prompt set with any text-to-image callable.

The generator is a callable ``generate(prompt, num_images, generator) -> list[PIL.Image]``; with GenEval's
convention every prompt restarts from the same seed (``diffusers_generate.py`` calls ``seed_everything``
per prompt), and its samples are drawn in batches of ``batch_size`` from one ``torch.Generator``.  So a
prompt's images do not depend on which other prompts ran, which makes the folder resumable and shardable
(``shard_index`` / ``num_shards`` split the prompts between processes or GPUs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from miro.eval.geneval.layout import is_complete, write_prompt_folder

log = logging.getLogger(__name__)

GenerateFn = Callable[[str, int, torch.Generator], list[Image.Image]]


@dataclass
class GenerationReport:
    written: int = 0
    skipped: int = 0  # complete folders left as they were


def generate_layout(
    items: Sequence[dict],
    out_dir: str | Path,
    generate: GenerateFn,
    n_samples: int = 4,
    batch_size: int = 1,
    seed: int = 42,
    grid: bool = True,
    shard_index: int = 0,
    num_shards: int = 1,
    progress: bool = True,
) -> GenerationReport:
    """Write ``out_dir/NNNNN/{metadata.jsonl, samples/NNNN.png[, grid.png]}`` for this shard's prompts."""
    if n_samples < 1 or batch_size < 1:
        raise ValueError(f"n_samples={n_samples}, batch_size={batch_size}: both must be >= 1")
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index={shard_index}: must be in 0..num_shards-1 (num_shards={num_shards})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = GenerationReport()
    indices = range(shard_index, len(items), num_shards)
    for index in tqdm(indices, desc="geneval generate", unit="prompt", disable=not progress):
        metadata = items[index]
        if is_complete(out_dir, index, metadata, n_samples):
            report.skipped += 1
            continue
        images = sample_prompt(generate, metadata["prompt"], n_samples, batch_size, seed)
        write_prompt_folder(out_dir, index, metadata, images, grid_columns=batch_size if grid else None)
        report.written += 1
        log.debug("prompt %d/%d written: %r", index + 1, len(items), metadata["prompt"])
    return report


def sample_prompt(generate: GenerateFn, prompt: str, n_samples: int, batch_size: int, seed: int) -> list[Image.Image]:
    """``n_samples`` images of one prompt, drawn in batches from one generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    images: list[Image.Image] = []
    while len(images) < n_samples:
        want = min(batch_size, n_samples - len(images))
        batch = list(generate(prompt, want, generator))
        if len(batch) != want:
            raise RuntimeError(f"the generator returned {len(batch)} images for {prompt!r}, expected {want}")
        images.extend(batch)
    return images
