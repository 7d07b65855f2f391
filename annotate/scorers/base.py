"""The scorer interface: CPU preprocessing (picklable, runs in DataLoader workers) split from a batched forward.

``score()`` is exactly that split run inline, so the annotation job, the reward metrics of generated images and
the slider sweeps all compute the same numbers::

    prep = scorer.preprocessor()                 # light, picklable: no model weights
    items = [prep(image, prompt) for ...]        # in workers
    out = scorer.forward(default_collate(items))  # on the device: {reward name: float64 array}

A scorer may fill several reward columns from one forward pass (CLIP score and the aesthetic head share one
ViT-L/14 image embedding); ``outputs`` lists them and ``text_outputs`` those that need a prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

Item = dict[str, Any]
Preprocessor = Callable[[Image.Image, "str | None"], Item]


def ensure_rgb(image: Image.Image) -> Image.Image:
    """PIL's plain ``convert("RGB")`` (alpha dropped, not composited), a no-op on RGB images."""
    return image if image.mode == "RGB" else image.convert("RGB")


def default_collate(items: Sequence[Item]) -> dict[str, torch.Tensor | list[torch.Tensor]]:
    """Stack each field of the items (tensors, numbers or numpy arrays) along a new first axis; tensors of
    different shapes (a VLM's variable-size image patches and prompts) stay a list for the scorer to pad."""
    out = {}
    for k in items[0]:
        vals = [it[k] for it in items]
        if torch.is_tensor(vals[0]) and any(v.shape != vals[0].shape for v in vals):
            out[k] = vals
        elif torch.is_tensor(vals[0]):
            out[k] = torch.stack(vals)
        else:
            out[k] = torch.as_tensor(np.asarray(vals))
    return out


def as_float64(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Scores as a float64 numpy array; non-finite values (fp16 overflow, 0/0) become NaN."""
    if torch.is_tensor(x):
        x = x.detach().to("cpu", torch.float64).numpy()
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    return np.where(np.isfinite(x), x, np.nan)


class Scorer:
    """Base class; subclasses set ``name``/``outputs``/``text_outputs`` and implement the three hooks."""

    name: str = ""
    outputs: tuple[str, ...] = ()
    text_outputs: frozenset[str] = frozenset()
    batch_size: int = 32  # chunk size used by score(); the job batches itself
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32

    # --- the split API -------------------------------------------------------------------------------
    def preprocessor(self) -> Preprocessor:
        """A picklable callable ``(image, prompt or None) -> item`` holding no model weights.  The image comes in
        any PIL mode, as opened: each scorer applies its official package's order of operations (resize, crop
        and RGB conversion) to it; see the table in docs/annotate.md."""
        raise NotImplementedError

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Scores of a collated batch for every output, float64 (NaN where not computable)."""
        raise NotImplementedError

    def provenance(self) -> dict:
        """Model ids, weight files with sha256, package versions and the config: enough to reproduce a score."""
        raise NotImplementedError

    def output_provenance(self, output: str) -> dict:
        """Provenance of one reward column (a scorer filling several columns narrows it to that column)."""
        return self.provenance()

    # --- conveniences ----------------------------------------------------------------------------------
    @property
    def image_only_outputs(self) -> tuple[str, ...]:
        return tuple(o for o in self.outputs if o not in self.text_outputs)

    def accepts(self, has_prompt: bool) -> bool:
        """Whether a sample with (``has_prompt``) or without a caption gives this scorer anything to compute."""
        return has_prompt or bool(self.image_only_outputs)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Scorer:
        if device is not None:
            self.device = torch.device(device)
        if dtype is not None:
            self.dtype = dtype
        self._move()
        return self

    def _move(self) -> None:
        """Move model weights to ``self.device``/``self.dtype``: ``self.model`` when the scorer has one (weight-free
        scorers have none; scorers with several parts or an fp32 head override this)."""
        model = getattr(self, "model", None)
        if model is not None:
            model.to(self.device, self.dtype)

    def score_dict(self, images: Sequence[Image.Image], prompts: Sequence[str | None] | None = None) -> dict[str, np.ndarray]:
        n = len(images)
        if prompts is None:
            prompts = [None] * n
        if len(prompts) != n:
            raise ValueError(f"{self.name}: {n} images but {len(prompts)} prompts")
        out = {o: np.full(n, np.nan) for o in self.outputs}
        prep = self.preprocessor()
        rows = [i for i in range(n) if self.accepts(prompts[i] is not None)]
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            items = [prep(images[i], prompts[i]) for i in chunk]
            res = self.forward(default_collate(items))
            for o in self.outputs:
                out[o][chunk] = res[o]
        return out

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str | None] | None = None) -> np.ndarray:
        """One float64 score per (image, prompt) pair, NaN where the pair cannot be scored."""
        if len(self.outputs) != 1:
            raise TypeError(f"scorer {self.name!r} fills {list(self.outputs)}; use score_dict()")
        return self.score_dict(images, prompts)[self.outputs[0]]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(outputs={list(self.outputs)}, device={self.device}, dtype={self.dtype})"


def text_mask_nan(scores: np.ndarray, has_prompt: torch.Tensor | None) -> np.ndarray:
    """NaN for rows whose prompt was missing (their text was a placeholder)."""
    if has_prompt is None:
        return scores
    keep = has_prompt.cpu().numpy().astype(bool)
    return np.where(keep, scores, np.nan)


class MultiOutputScorer(Scorer):
    """A scorer that fills several reward columns from one pass (CLIP-L: clip_score and aesthetic; the
    weight-free rewards): ``output_provenance`` describes one column, ``provenance`` all of them."""

    def output_provenance(self, output: str) -> dict:
        raise NotImplementedError

    def provenance(self) -> dict:
        if len(self.outputs) == 1:
            return self.output_provenance(self.outputs[0])
        return {"outputs": {o: self.output_provenance(o) for o in self.outputs}}
