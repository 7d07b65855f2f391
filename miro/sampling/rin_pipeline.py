"""``MiroRINPipeline``: the MIRO authors' released checkpoints behind their own pipeline API (issue #17).

Their ``miro-t2i`` 0.1.4 ``MiroPipeline`` (``pipeline.py``, read, never imported: their package is also
named ``miro``) is an ``nn.Module`` holding the RIN, its preconditioning, the SDXL VAE and a lazily loaded
FLAN-T5-XL.  This class gives the same API on this package's ``MiroRIN`` and its RIN sampler
(``miro.sampling.rin``), so their documented usage runs unchanged::

    pipe = MiroPipeline.from_pretrained("nicolas-dufour/miro")          # dispatches here (their layout)
    pipe = MiroRINPipeline.from_pretrained(repo_id_or_path=folder, variant="no_clip", torch_dtype=torch.bfloat16)
    image = pipe("a prompt", reward_targets={"aesthetic_score": 0.625}, guidance_scale=7.0)[0]

Why a class of its own and not the diffusers ``MiroPipeline``: the components differ (a RIN that returns
self-conditioning latents, a token-sequence null text, a VAE normalised by the checkpoint's channel
buffers, T5 loaded on first use), the folder layout differs (no ``model_index.json``), and their users rely on
``nn.Module`` behaviour (``parameters()``, ``state_dict()``, ``eval()``).  ``MiroPipeline.from_pretrained``
returns this class for a folder in their layout, as diffusers' ``DiffusionPipeline.from_pretrained`` returns
the class a folder names.

Same as theirs (checked against their package by ``tests/sampling/test_rin_pipeline_parity.py``): the
prompt tokens (padded and truncated to ``max_text_len``, ``last_hidden_state`` in fp32, padding kept), the
noise (``torch.randn(B, 4, res, res, generator=generator)`` on the device), their Euler grid and joint
guidance with a guidance scale <= 0 meaning none, default targets 1.0 / 0.0, ``(z - bias) / scale`` then the
VAE, ``clamp(x / 2 + 1 / 2)`` truncated to uint8, ``output_type="numpy"`` for that array.

Differences on purpose (docs/rin.md): bad arguments are refused with a message naming the argument (theirs
fails deep in torch, or not at all); targets must lie in [0, 1] and a target of None drops that reward (the
zero embedding); ``torch_dtype`` casts the network only (the VAE and T5 stay fp32, as an fp16 SDXL VAE
overflows), and a bf16 network also runs on the CPU (theirs casts the text to fp32 and fails there);
``output_type="latent"`` returns the final latents.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from miro.models.rin import (
    AUTHORS_COHERENCE_KEYS,
    AUTHORS_FILES,
    AuthorsCheckpointError,
    MiroRIN,
    cast_dtype,
    load_authors_checkpoint,
    resolve_authors_folder,
)
from miro.sampling.guidance import Guidance
from miro.sampling.rin import authors_gammas, sample_rin
from miro.sampling.sampler import Conditions
from miro.sampling.targets import check_count, check_generator, prompt_list, reward_tensors
from miro.utils.weights import hub_offline, load_pretrained

#: Their default text encoder and VAE (``pipeline.py`` ``DEFAULT_TEXT_ENCODER`` / ``DEFAULT_VAE``).
DEFAULT_TEXT_ENCODER = "google/flan-t5-xl"
DEFAULT_VAE = "stabilityai/sdxl-vae"
#: Every reward name their models know (their ``MiroPipeline.COHERENCE_KEYS``); a checkpoint has a subset.
COHERENCE_KEYS = AUTHORS_COHERENCE_KEYS
#: Their VAE latent statistics (``models/postprocessing.py`` ``VAE_STATS["sdxl"]``), for a checkpoint
#: whose file lacks the ``postprocessing.scale`` / ``bias`` buffers (their loader then keeps these).
SDXL_CHANNEL_MEAN = (-0.3480, 0.3754, 0.0419, 2.4331)
SDXL_CHANNEL_STD = (7.8518, 5.8465, 6.8716, 5.3140)
SDXL_SCALE = 0.13025
OUTPUT_TYPES = ("pil", "numpy", "latent")
MIXED_PRECISIONS = ("auto", "no", "bf16", "fp16")


def is_authors_folder(path: str | Path, variant: str | None = None) -> bool:
    """True when ``path`` is a local folder in the authors' layout: their files at its root or in its
    ``variant`` subfolder, or variants in subfolders (then ``from_pretrained`` names them when ``variant`` is
    missing or wrong), and no diffusers ``model_index.json``."""
    root = Path(path)
    if not root.is_dir() or (root / "model_index.json").is_file():
        return False

    def holds(folder: Path) -> bool:
        return folder.is_dir() and all((folder / n).is_file() for n in AUTHORS_FILES)

    if holds(root) or (variant and holds(root / variant)):
        return True
    return any(holds(p) for p in root.iterdir())


def _cached_snapshot(repo_id: str, cache_dir: str | None, revision: str | None) -> Path | None:
    """The repo's snapshot folder in the HF cache (only the files downloaded so far), or None."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, cache_dir=cache_dir, revision=revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (huggingface_hub raises several types)
        return None


#: ``from_pretrained`` keywords of ``MiroRINPipeline`` besides ``variant``, ``device``, ``text_encoder``.
AUTHORS_LOAD_KEYWORDS = ("cache_dir", "revision", "torch_dtype", "tokenizer", "vae")


def is_authors_location(
    path: str | Path, variant: str | None = None, cache_dir: str | None = None, revision: str | None = None
) -> bool:
    """Whether ``path`` is in the authors' layout: a local folder, or a hub repo id whose cached snapshot is
    such a folder (``is_authors_folder``: their files, or variants holding them, and no ``model_index.json``),
    or, online and not cached, whose files are so on the hub.  False for everything else (diffusers' loader
    then gives its own message)."""
    if Path(path).expanduser().is_dir():
        return is_authors_folder(Path(path).expanduser(), variant)
    repo = str(path)
    if repo.count("/") != 1 or repo.startswith((".", "/", "~")):
        return False
    snapshot = _cached_snapshot(repo, cache_dir, revision)
    if snapshot is not None:
        return is_authors_folder(snapshot, variant)
    prefix = f"{variant}/" if variant else ""
    if hub_offline():
        return False
    try:
        from huggingface_hub import file_exists

        return not file_exists(repo, "model_index.json", revision=revision) and file_exists(
            repo, prefix + "uncond_embedding.npy", revision=revision
        )
    except Exception:  # noqa: BLE001 - no network: let diffusers' loader say what is missing
        return False


def _download_authors_files(repo_id: str, variant, cache_dir, revision) -> Path:
    """``hf_hub_download`` of ``AUTHORS_FILES`` (in ``subfolder=variant``); the folder holding them."""
    from huggingface_hub import hf_hub_download

    kwargs = {"repo_id": repo_id, "cache_dir": cache_dir, "revision": revision}
    if variant:
        kwargs["subfolder"] = variant
    paths = []
    for name in AUTHORS_FILES:
        try:
            paths.append(Path(hf_hub_download(filename=name, **kwargs)))
        except Exception as err:  # noqa: BLE001 - hub errors have many types; name what was asked
            where = f"{repo_id}/{variant}" if variant else repo_id
            raise AuthorsCheckpointError(
                f"{where}: could not get {name} of the authors' layout ({type(err).__name__}: {err}); pass a "
                f"local folder holding {list(AUTHORS_FILES)}, or variant= for a repository of variants"
            ) from err
    return paths[0].parent


def _latent_buffers(
    state: Mapping[str, torch.Tensor], config: Mapping[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, bias) [1, 4, 1, 1] of their ``VAEPostProcessing``: from the file, else from their stats."""
    if "postprocessing.scale" in state and "postprocessing.bias" in state:
        return state["postprocessing.scale"].float(), state["postprocessing.bias"].float()
    post = dict(config.get("postprocessing") or {})
    if post.get("model_type", "sdxl") != "sdxl":
        raise AuthorsCheckpointError(
            f"postprocessing.model_type={post['model_type']!r}: only 'sdxl' is known"
        )
    if post.get("channel_wise_normalisation", False):
        scale = 0.5 / torch.tensor(SDXL_CHANNEL_STD)
        bias = -torch.tensor(SDXL_CHANNEL_MEAN) * scale
    else:
        scale, bias = torch.full((4,), 1 / SDXL_SCALE), torch.zeros(4)
    return scale.view(1, 4, 1, 1), bias.view(1, 4, 1, 1)


class MiroRINPipeline(nn.Module):
    """The authors' ``MiroPipeline`` API on ``MiroRIN`` (module docstring).

    Attributes as theirs: ``network`` (the ``MiroRIN``), ``vae``, ``text_encoder`` / ``tokenizer`` (loaded
    on first use, from ``text_encoder_name``), ``uncond_embedding`` (the empty prompt's tokens), ``config``
    (their ``config.json``), ``coherence_keys``, ``COHERENCE_KEYS``.
    """

    COHERENCE_KEYS = COHERENCE_KEYS

    def __init__(
        self,
        network: MiroRIN,
        vae: nn.Module,
        uncond_embedding: torch.Tensor,
        config: Mapping[str, Any],
        latent_scale: torch.Tensor,
        latent_bias: torch.Tensor,
        text_encoder: nn.Module | str | None = None,
        tokenizer=None,
    ):
        super().__init__()
        self.network = network.eval()
        self.vae = vae.eval().requires_grad_(False)
        self.register_buffer("uncond_embedding", uncond_embedding.float(), persistent=False)
        self.register_buffer("latent_scale", latent_scale.float().view(1, -1, 1, 1), persistent=False)
        self.register_buffer("latent_bias", latent_bias.float().view(1, -1, 1, 1), persistent=False)
        self.config = dict(config)
        if isinstance(text_encoder, nn.Module):
            self.text_encoder = text_encoder.eval().requires_grad_(False)
            self.text_encoder_name = getattr(text_encoder, "name_or_path", None)
        else:
            self.text_encoder = None
            self.text_encoder_name = text_encoder or DEFAULT_TEXT_ENCODER
        self._tokenizer = tokenizer
        self.cache_dir: str | None = None
        self.path: Path | None = None
        if self.uncond_embedding.dim() != 2 or self.uncond_embedding.shape[1] != network.config.label_dim:
            raise AuthorsCheckpointError(
                f"uncond_embedding has shape {list(uncond_embedding.shape)}; expected [L, {network.config.label_dim}] "
                "(the empty prompt's text tokens, label_dim wide)"
            )

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        repo_id_or_path: str | Path,
        *,
        variant: str | None = None,
        cache_dir: str | None = None,
        revision: str | None = None,
        torch_dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        text_encoder: str | nn.Module | None = None,
        tokenizer=None,
        vae: str | nn.Module | None = None,
    ) -> MiroRINPipeline:
        """Their ``from_pretrained``: a local folder or a hub repo id in their layout (``config.json``,
        ``model.safetensors``, ``uncond_embedding.npy``; ``variant`` = a subfolder).

        ``text_encoder``: FLAN-T5's folder or repo id (default theirs, ``google/flan-t5-xl``), loaded on the
        first call, or a loaded ``T5EncoderModel`` (with ``tokenizer``).  ``vae``: the SDXL VAE's folder or
        repo id (default ``stabilityai/sdxl-vae``, loaded now, from the HF cache when offline) or an
        ``AutoencoderKL``.  ``cache_dir`` is the Hugging Face cache for all three (theirs: the checkpoint
        only).  ``torch_dtype`` casts the network; ``device`` moves everything.
        """
        if not isinstance(repo_id_or_path, (str, Path)):
            raise TypeError(
                f"repo_id_or_path={repo_id_or_path!r}: must be a folder path or a Hugging Face repo id (str)"
            )
        if torch_dtype is not None and not isinstance(torch_dtype, torch.dtype):
            raise TypeError(f"torch_dtype={torch_dtype!r}: must be a torch.dtype such as torch.bfloat16")
        root = Path(repo_id_or_path).expanduser()
        if root.is_dir():
            folder = resolve_authors_folder(root, variant)
        elif Path(str(repo_id_or_path)).is_absolute() or str(repo_id_or_path).startswith("."):
            raise AuthorsCheckpointError(f"{repo_id_or_path}: no such folder")
        else:  # a hub repo id: the cached snapshot if it has the files, else a download
            repo, folder = str(repo_id_or_path), None
            snapshot = _cached_snapshot(repo, cache_dir, revision)
            if snapshot is not None:
                try:
                    folder = resolve_authors_folder(snapshot, variant)
                except AuthorsCheckpointError:
                    if hub_offline():  # nothing to download: say what the cached repo holds
                        raise
            if folder is None:
                folder = _download_authors_files(repo, variant, cache_dir, revision)
        ckpt = load_authors_checkpoint(folder)
        scale, bias = _latent_buffers(ckpt.pipeline_state, ckpt.config)
        if vae is None or isinstance(vae, (str, Path)):
            from diffusers import AutoencoderKL

            source = str(vae or DEFAULT_VAE)
            vae = load_pretrained(
                lambda src: AutoencoderKL.from_pretrained(src, cache_dir=cache_dir),
                source,
                "the SDXL VAE",
                "vae",
            )
        pipe = cls(ckpt.model, vae, ckpt.uncond_embedding, ckpt.config, scale, bias, text_encoder, tokenizer)
        pipe.path, pipe.cache_dir = ckpt.path, cache_dir
        if torch_dtype is not None:
            cast_dtype(pipe.network, torch_dtype)
        if device is not None:
            pipe.to(device)
        return pipe

    # ------------------------------------------------------------------ their attributes
    @property
    def coherence_keys(self) -> tuple[str, ...]:
        """The rewards this checkpoint was trained with (their ``config.json``), in its column order."""
        return self.network.coherence_keys

    @property
    def device(self) -> torch.device:
        return self.network.latents.device

    @property
    def dtype(self) -> torch.dtype:
        return self.network.latents.dtype

    @property
    def tokenizer(self):
        """FLAN-T5's tokenizer, loaded on first use (theirs is None until the first call)."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            name = self.text_encoder_name or DEFAULT_TEXT_ENCODER
            self._tokenizer = load_pretrained(
                lambda src: AutoTokenizer.from_pretrained(src, cache_dir=self.cache_dir),
                str(name), "the FLAN-T5 tokenizer", "text_encoder",
            )  # fmt: skip
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value) -> None:
        self._tokenizer = value

    def load_text_encoder(self) -> nn.Module:
        """Load FLAN-T5's encoder (fp32, frozen) on the pipeline's device if not yet loaded; returns it."""
        if self.text_encoder is None:
            from transformers import T5EncoderModel

            name = str(self.text_encoder_name or DEFAULT_TEXT_ENCODER)
            encoder = load_pretrained(
                lambda src: T5EncoderModel.from_pretrained(src, cache_dir=self.cache_dir),
                name, "the FLAN-T5 text encoder", "text_encoder",
            )  # fmt: skip
            self.text_encoder = encoder.eval().requires_grad_(False).to(self.device)
        return self.text_encoder

    def to(self, *args, **kwargs) -> MiroRINPipeline:
        """Moves every part to the device; a dtype applies to the network only (the VAE and T5 stay fp32)."""
        device, dtype, non_blocking, _ = torch._C._nn._parse_to(*args, **kwargs)
        if device is not None:
            super().to(device=device, non_blocking=non_blocking)
        if dtype is not None:
            cast_dtype(self.network, dtype)
        return self

    # ------------------------------------------------------------------ encoding and decoding
    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Their ``_encode_prompts``: tokens padded/truncated to ``max_text_len``, ``last_hidden_state`` fp32."""
        encoder = self.load_text_encoder()
        tok = self.tokenizer(
            list(prompts),
            return_tensors="pt",
            padding="max_length",
            max_length=int(self.config.get("max_text_len", 77)),
            truncation=True,
        )
        device = next(encoder.parameters()).device
        ids, mask = tok["input_ids"].to(device), tok["attention_mask"].to(device)
        emb = encoder(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        return emb.to(self.device), mask.bool().to(self.device)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> np.ndarray:
        """Their ``VAEDecoderPostProcessing``: ``(z - bias) / scale``, the VAE, uint8 [B, H, W, 3] (64 a batch)."""
        out = []
        dtype = self.vae.dtype
        for chunk in latents.split(64):
            z = ((chunk.float() - self.latent_bias) / self.latent_scale).to(dtype)
            images = self.vae.decode(z).sample.float()
            images = (torch.clamp(images * 0.5 + 0.5, 0, 1) * 255).to(torch.uint8)
            out.append(images.permute(0, 2, 3, 1).cpu().numpy())
        return np.concatenate(out)

    # ------------------------------------------------------------------ the call
    def _autocast(self, mixed_precision: str) -> torch.dtype | None:
        """Their sampler runs under autocast on CUDA (bf16, or fp16 without bf16) and in fp32 elsewhere."""
        if mixed_precision not in MIXED_PRECISIONS:
            raise ValueError(f"mixed_precision={mixed_precision!r}: must be one of {list(MIXED_PRECISIONS)}")
        if self.dtype != torch.float32:
            return None  # a network cast to a low dtype runs in it
        if mixed_precision == "auto":
            if self.device.type != "cuda":
                return None
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mixed_precision]

    def _check_call(
        self, prompt, num_inference_steps, guidance_scale, num_images_per_prompt, generator, output_type
    ):
        prompts = prompt_list(prompt)
        check_count(num_inference_steps, "num_inference_steps")
        check_count(num_images_per_prompt, "num_images_per_prompt")
        if (
            isinstance(guidance_scale, bool)
            or not isinstance(guidance_scale, numbers.Real)
            or not math.isfinite(guidance_scale)
        ):
            raise ValueError(
                f"guidance_scale={guidance_scale!r}: must be a finite number (<= 0: no guidance)"
            )
        check_generator(generator, allow_list=False)
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type={output_type!r}: must be one of {list(OUTPUT_TYPES)}")
        return prompts

    @torch.inference_mode()
    def __call__(
        self,
        prompt: str | Sequence[str],
        *,
        reward_targets: Mapping[str, float | None] | None = None,
        negative_reward_targets: Mapping[str, float | None] | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.0,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        latents: torch.Tensor | None = None,
        mixed_precision: str = "auto",
        callback=None,
    ):
        """Their call: ``num_images_per_prompt`` images per prompt, from ``(1 + w) F(c, s+) - w F(null, s-)``.

        ``reward_targets`` / ``negative_reward_targets``: {reward: target in [0, 1]} (default 1.0 / 0.0; None
        drops a reward).  ``guidance_scale`` w <= 0: no guidance (theirs).  ``output_type``: "pil" (a list),
        "numpy" (uint8 [B, H, W, 3]) or "latent" (the final latents).  Extensions: ``latents`` (the initial
        noise instead of drawing it), ``mixed_precision`` ("auto" = theirs: bf16 autocast on CUDA, none
        elsewhere; "no", "bf16", "fp16"), ``callback(i, x, v, velocity)`` after each step.
        """
        prompts = self._check_call(
            prompt, num_inference_steps, guidance_scale, num_images_per_prompt, generator, output_type
        )
        if guidance_scale < 0:
            warnings.warn(
                f"guidance_scale={guidance_scale} < 0 samples without guidance, as the authors' pipeline does "
                "(their guidance applies only for a scale > 0)",
                UserWarning,
                stacklevel=3,  # the caller's line (inference_mode's wrapper is in between)
            )
        autocast = self._autocast(mixed_precision)
        names = list(self.coherence_keys)
        device = self.device
        text, text_mask = self.encode_prompts(prompts)
        n = num_images_per_prompt
        text, text_mask = text.repeat_interleave(n, 0), text_mask.repeat_interleave(n, 0)
        batch = text.shape[0]
        pos, pos_mask = reward_tensors(reward_targets, names, 1, 1.0, "reward_targets")
        neg, neg_mask = reward_tensors(negative_reward_targets, names, 1, 0.0, "negative_reward_targets")
        conds = Conditions(
            text, text_mask,
            pos.expand(batch, -1).to(device), pos_mask.expand(batch, -1).to(device),
            neg.expand(batch, -1).to(device), neg_mask.expand(batch, -1).to(device),
        )  # fmt: skip
        res = int(self.config.get("data_resolution", self.network.config.data_size))
        shape = (batch, self.network.config.num_input_channels, res, res)
        if latents is None:
            latents = torch.randn(shape, device=device, dtype=torch.float32, generator=generator)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents: expected shape {list(shape)}, got {list(latents.shape)}")
        sched = dict(self.config.get("scheduler") or {"start": 1, "end": 0, "clip_min": 1e-9})
        gammas = authors_gammas(num_inference_steps, device=device, **sched)
        guidance = Guidance.joint(max(float(guidance_scale), 0.0), len(names))
        out = sample_rin(
            self.network,
            latents.to(device),
            conds,
            self.uncond_embedding,
            guidance,
            gammas,
            autocast,
            callback,
        )
        if output_type == "latent":
            return out
        images = self.decode_latents(out)
        if output_type == "numpy":
            return images
        from PIL import Image

        return [Image.fromarray(img) for img in images]
