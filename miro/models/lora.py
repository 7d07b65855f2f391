"""LoRA adapters on ``MiroTransformer`` through ``peft``, the way diffusers adapts its own models.

``MiroTransformer`` carries diffusers' ``PeftAdapterMixin`` (``add_adapter``, ``set_adapter``,
``disable_adapters`` / ``enable_adapters``, ``fuse_lora`` / ``unfuse_lora``, ``delete_adapters``,
``save_lora_adapter`` / ``load_lora_adapter``); peft injects the low-rank layers.  This module owns what the
project adds on top, so every user (test-time training, Meta-TTRL, the pipeline) names the same things:

- ``LoraSpec``: rank, alpha, dropout and the target modules (a preset of ``TARGETS`` or a regex over module
  names), checked like a config, turned into a peft ``LoraConfig``;
- ``add_lora`` / ``reset_lora`` / ``remove_lora`` / ``lora_parameters``: a fresh adapter per prompt (test-time
  training resets it after every prompt), or one that persists (a cohort adapter);
- ``save_lora`` / ``load_lora``: one adapter as ``pytorch_lora_weights.safetensors`` (diffusers' file name and
  key layout; the peft config rides in the file's metadata, so rank and alpha come back exactly) in a folder,
  e.g. ``<pipeline>/lora/<name>/`` (``lora_folder``), with a clear error for a missing file or a file
  written for another model.

Only the adapter's parameters are trainable after ``add_lora`` (peft freezes the rest); the base weights are
never modified unless the adapter is merged (``merge_lora``, which ``unmerge_lora`` undoes).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from miro.utils.config import ConfigError, require

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"  # diffusers' name for one adapter's weights
_BLOCK = r"blocks\.\d+\."
#: The RIN backbone's (``MiroRINTransformer``) blocks: the condition, read, process and write attentions.
_RIN_BLOCK = r"rin\.rin_blocks\.\d+\.(retrieve_cond|retriever_ca|processer_sa\.\d+|writer_ca)\."
_RIN_ATTENTION = _RIN_BLOCK + r"(sa|ca)\.(qkv|q|kv|out)"
_RIN_MLP = _RIN_BLOCK + r"ffn\.(linear_packed|linear_out)"
_RIN_MIXER = r"rin\.transformers_blocks\.\d+\.(sa\.(qkv|out)|ffn\.linear_[12])"
#: The U-Net backbone's (``MiroUNet``: diffusers' UNet2DConditionModel) transformer blocks and ResNet blocks.
_UNET_BLOCK = r"unet\.(down_blocks\.\d+|up_blocks\.\d+|mid_block)\.attentions\.\d+\.transformer_blocks\.\d+\."
_UNET_ATTENTION = _UNET_BLOCK + r"(attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)"
_UNET_MLP = _UNET_BLOCK + r"ff\.net\.(0\.proj|2)"
_UNET_CONV = r"unet\.(down_blocks\.\d+|up_blocks\.\d+|mid_block)\.resnets\.\d+\.(conv1|conv2|time_emb_proj)"
#: Target-module presets: regexes over the module names of every backbone (peft matches them in full).
#: "attention": the backbone blocks' self- and cross-attention projections (what DreamBooth-LoRA adapts);
#: "attention_mlp": also their MLPs (what Akyurek et al. adapt: q/v + MLP); "all": also the adaLN
#: modulations and, in a conv U-shape, the conv blocks' convolutions (peft adapts Conv2d as well), and in the
#: RIN its condition mixer, in the U-Net its ResNet blocks' convolutions and time projections.
TARGETS = {
    "attention": "(" + _BLOCK + r"(attn\.to_qkv|attn\.to_out|cross_attn\.to_q|cross_attn\.to_kv|cross_attn\.to_out)"
                 + "|" + _RIN_ATTENTION + "|" + _UNET_ATTENTION + ")",
    "attention_mlp": "(" + _BLOCK + r"(attn\.to_qkv|attn\.to_out|cross_attn\.to_q|cross_attn\.to_kv|cross_attn\.to_out|mlp\.fc1|mlp\.fc2)"
                     + "|" + _RIN_ATTENTION + "|" + _RIN_MLP + "|" + _UNET_ATTENTION + "|" + _UNET_MLP + ")",
    "all": r"(" + _BLOCK + r"(attn\.to_qkv|attn\.to_out|cross_attn\.to_q|cross_attn\.to_kv|cross_attn\.to_out|mlp\.fc1|mlp\.fc2"
           r"|modulation)|conv_(stem|head|down_blocks\.\d+|up_blocks\.\d+)\.(conv1|conv2|emb)"
           + "|" + _RIN_ATTENTION + "|" + _RIN_MLP + "|" + _RIN_MIXER
           + "|" + _UNET_ATTENTION + "|" + _UNET_MLP + "|" + _UNET_CONV + ")",
}  # fmt: skip


@dataclass
class LoraSpec:
    """One LoRA adapter's shape.  ``targets``: a ``TARGETS`` preset or a regex over module names;
    ``alpha / rank`` scales the update (peft's ``lora_alpha``)."""

    rank: int = 8
    alpha: float = 8.0
    targets: str = "attention_mlp"
    dropout: float = 0.0

    def __post_init__(self):
        require(
            isinstance(self.rank, int) and self.rank >= 1, "lora.rank", self.rank, "must be an integer >= 1"
        )
        require(self.alpha > 0, "lora.alpha", self.alpha, "must be > 0")
        require(0.0 <= self.dropout < 1.0, "lora.dropout", self.dropout, "must be in [0, 1)")
        if self.targets not in TARGETS:
            try:
                re.compile(self.targets)
            except re.error as err:
                raise ConfigError(
                    f"lora.targets={self.targets!r} is neither a preset ({', '.join(TARGETS)}) "
                    f"nor a valid regex: {err}"
                ) from None

    @property
    def pattern(self) -> str:
        return TARGETS.get(self.targets, self.targets)

    def to_peft(self):
        from peft import LoraConfig

        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.pattern,
            init_lora_weights=True,
        )


def _matched(model: nn.Module, pattern: str) -> list[str]:
    return [name for name, _ in model.named_modules() if name and re.fullmatch(pattern, name)]


def adapter_names(model: nn.Module) -> list[str]:
    """The adapters injected into ``model`` (empty when none)."""
    return list(getattr(model, "peft_config", {}) or {})


def add_lora(model: nn.Module, spec: LoraSpec | None = None, name: str = "default") -> list[nn.Parameter]:
    """Inject a fresh adapter ``name`` (B = 0, so the model's output is unchanged), make it the active one and
    return its parameters (the only trainable ones afterwards)."""
    spec = spec or LoraSpec()
    if name in adapter_names(model):
        raise ValueError(
            f"the model already has a LoRA adapter named {name!r}; reset_lora or remove_lora it first"
        )
    if not _matched(model, spec.pattern):
        raise ConfigError(
            f"lora.targets={spec.targets!r} matches no module of this {type(model).__name__} "
            f"(module names look like {[n for n, _ in model.named_modules() if n][:4]})"
        )
    if not adapter_names(
        model
    ):  # peft freezes the base weights; remove_lora of the last adapter restores this
        model._lora_base_requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    model.add_adapter(spec.to_peft(), adapter_name=name)
    model.set_adapter(name)
    return lora_parameters(model, name)


def lora_parameters(model: nn.Module, name: str = "default") -> list[nn.Parameter]:
    """The parameters of adapter ``name`` (its lora_A / lora_B matrices), in module order."""
    _check_adapter(model, name)
    tag = f".{name}."
    return [p for n, p in model.named_parameters() if ("lora_A" in n or "lora_B" in n) and tag in n]


def _lora_layers(model: nn.Module, name: str):
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer) and name in m.lora_A]


def reset_lora(model: nn.Module, name: str = "default", seed: int | None = None) -> None:
    """Re-initialise adapter ``name`` as freshly added (A random, B = 0: the model is the base model again),
    without re-injecting it, so optimisers built on its parameters stay valid for the next prompt.  With
    ``seed``, A is drawn from a CPU generator of that seed (peft's own init, Kaiming-uniform with a = sqrt(5),
    draws from the global RNG), so a per-prompt adapter starts the same on every device and every run."""
    _check_adapter(model, name)
    if seed is None:
        for layer in _lora_layers(model, name):
            layer.reset_lora_parameters(name, True)
        return
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for layer in _lora_layers(model, name):
            a, b = layer.lora_A[name].weight, layer.lora_B[name].weight
            fresh = torch.empty(a.shape, dtype=torch.float32)
            nn.init.kaiming_uniform_(fresh, a=math.sqrt(5), generator=g)
            a.copy_(fresh)
            b.zero_()


def remove_lora(model: nn.Module, name: str = "default") -> None:
    """Delete adapter ``name``.  When it was the last one, peft's wrapper layers go too (the module tree, the
    state-dict keys and the parameters' ``requires_grad`` are what they were before the first ``add_lora``),
    so the model saves and trains as if it had never been adapted."""
    _check_adapter(model, name)
    if adapter_names(model) != [name]:
        model.delete_adapters(name)
        return
    model.unload_lora()
    flags = getattr(model, "_lora_base_requires_grad", None) or {}
    for n, p in model.named_parameters():
        p.requires_grad_(flags.get(n, p.requires_grad))
    model._lora_base_requires_grad = None


def merge_lora(model: nn.Module) -> None:
    """Fold the active adapter into the base weights (faster sampling); ``unmerge_lora`` takes it out again."""
    model.fuse_lora()


def unmerge_lora(model: nn.Module) -> None:
    model.unfuse_lora()


def _check_adapter(model: nn.Module, name: str) -> None:
    names = adapter_names(model)
    if name not in names:
        raise ValueError(f"the model has no LoRA adapter named {name!r} (it has: {names or 'none'})")


def lora_folder(pipeline_folder: str | Path, name: str) -> Path:
    """Where adapter ``name`` of a pipeline is kept: ``<pipeline>/lora/<name>``."""
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"adapter name {name!r} must be a plain folder name")
    return Path(pipeline_folder) / "lora" / name


def save_lora(model: nn.Module, folder: str | Path, name: str = "default", extra: dict | None = None) -> Path:
    """Write adapter ``name`` to ``folder/pytorch_lora_weights.safetensors`` (fp32; the peft config in the
    file's metadata) and ``folder/lora.json`` (the ``LoraSpec`` fields, the adapter name and ``extra``, e.g.
    what the adapter was trained on).  Returns the weights file."""
    _check_adapter(model, name)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_lora_adapter(folder, adapter_name=name, upcast_before_saving=True, weight_name=LORA_WEIGHTS)
    cfg = model.peft_config[name]
    spec = {
        "rank": int(cfg.r),
        "alpha": float(cfg.lora_alpha),
        "dropout": float(cfg.lora_dropout),
        "target_modules": cfg.target_modules
        if isinstance(cfg.target_modules, str)
        else sorted(cfg.target_modules),
    }
    (folder / "lora.json").write_text(
        json.dumps({"adapter_name": name, **spec, **(extra or {})}, indent=1) + "\n"
    )
    return folder / LORA_WEIGHTS


def load_lora(model: nn.Module, folder: str | Path, name: str = "default") -> list[nn.Parameter]:
    """Load an adapter written by ``save_lora`` (or any diffusers LoRA file for this model without a prefix)
    as adapter ``name`` and make it active.  Keys that this model does not have are an error, not a warning:
    an adapter trained on another architecture must not half-load."""
    from safetensors import safe_open

    path = Path(folder) / LORA_WEIGHTS
    if not path.is_file():
        found = sorted(p.name for p in Path(folder).iterdir()) if Path(folder).is_dir() else "no such folder"
        raise FileNotFoundError(
            f"no LoRA adapter at {path}: expected {LORA_WEIGHTS} (written by save_lora); found {found}"
        )
    if name in adapter_names(model):
        raise ValueError(f"the model already has a LoRA adapter named {name!r}; remove_lora it first")
    try:
        with safe_open(str(path), "pt") as f:
            keys = list(f.keys())
    except Exception as err:  # safetensors raises its own error types for a truncated or foreign file
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from None
    modules = {n for n, _ in model.named_modules()}
    wanted = {k.rsplit(".lora_", 1)[0] for k in keys if ".lora_" in k}
    missing = sorted(wanted - modules)
    if missing or not wanted:
        raise ValueError(
            f"{path} does not fit this {type(model).__name__}: "
            + (
                f"{len(missing)} of its {len(wanted)} adapted modules do not exist here (e.g. {missing[:3]})"
                if wanted
                else "it holds no lora_A / lora_B weights"
            )
        )
    model.load_lora_adapter(str(folder), prefix=None, adapter_name=name, weight_name=LORA_WEIGHTS)
    model.set_adapter(name)
    return lora_parameters(model, name)


def spec_of(model: nn.Module, name: str = "default") -> LoraSpec:
    """The ``LoraSpec`` of an injected adapter (targets as the regex it was built with)."""
    _check_adapter(model, name)
    cfg = model.peft_config[name]
    targets = (
        cfg.target_modules if isinstance(cfg.target_modules, str) else "|".join(sorted(cfg.target_modules))
    )
    preset = next((k for k, v in TARGETS.items() if v == targets), targets)
    return LoraSpec(
        rank=int(cfg.r), alpha=float(cfg.lora_alpha), targets=preset, dropout=float(cfg.lora_dropout)
    )


def lora_state(model: nn.Module, name: str = "default") -> dict[str, torch.Tensor]:
    """A detached copy of adapter ``name``'s weights (to keep the best ones during training)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if f".{name}." in n and ".lora_" in n}


def restore_lora(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy weights taken by ``lora_state`` back in place."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, value in state.items():
            params[n].copy_(value)


__all__ = [
    "LORA_WEIGHTS", "TARGETS", "LoraSpec", "add_lora", "adapter_names", "load_lora", "lora_folder", "lora_parameters",
    "lora_state", "merge_lora", "remove_lora", "reset_lora", "restore_lora", "save_lora", "spec_of", "unmerge_lora",
]  # fmt: skip
