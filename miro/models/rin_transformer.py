"""``MiroRINTransformer``: the MIRO authors' RIN as a backbone of this package's trainer and pipeline.

``MiroRIN`` (``miro.models.rin``) is the authors' network with their call (signal level gamma, preconditioning,
a null text that is a token sequence) so that their checkpoints load and match theirs.  This class puts it
behind the model-call contract every other part of the package uses (docs/contracts.md)::

    velocity = model(x, t, text, text_mask, rewards=..., reward_mask=..., drop_text=...)

so ``python -m miro.train model=tiny_rin`` trains it (``model.backbone: rin``), ``MiroPipeline`` saves, loads
and samples it with the same guidance code as the DiT, and the test-time package judges and adapts it.

What it adds to ``MiroRIN`` and why:

* **t is the noise level** (``miro.flow``: ``x_t = (1 - t) x_0 + t eps``, velocity ``eps - x_0``); the RIN is fed
  gamma = 1 - t, the same network output (``MiroRIN.velocity``), with the authors' ``FlowPrecond``
  (``c_in``, ``c_out``; ``normalization: null`` turns it off).
* **A learned null text** (``null_text``, one token of ``text_dim``): ``drop_text`` replaces a sample's prompt
  by it with the mask ``[True, False, ...]``, as the authors' training drop puts the one-token empty-prompt
  embedding there.  A learned token instead of an encoder's empty prompt because this package's text
  encoders are interchangeable and the DiT does the same (one null per model, trained by the text dropout).
* **Rewards by this package's names** (``reward_names``, the run's list; ``[]`` builds the no-reward
  baseline): targets in [0, 1] go through the authors' per-reward Fourier embedders; ``reward_mask`` False gives
  the zero embedding the authors' network uses for a dropped reward.
* **Latent self-conditioning as state**: ``forward(..., previous_latents=z, return_latents=True)`` feeds the
  previous estimate's latents and returns ``(velocity, latents)``.  Training (``miro.train.loop``) does what
  the authors' ``BaseLoss`` does: a first pass at the same x_t and t, its latents detached and kept per sample
  with probability ``self_conditioning_rate`` (zeroed otherwise), then the pass the loss is taken on.  The
  sampler (``miro.sampling.sampler.guided_velocity``) carries each guidance branch's latents from one step to
  the next, as their sampler does.  A call without ``previous_latents`` gets zeros, the authors' first step.

Differences from the authors' training on purpose: no learned loss weighting (EDM2's ``logvar``; the loop's
loss is the plain velocity MSE for every backbone), and the trainer's optimizer (AdamW) and schedule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders.peft import PeftAdapterMixin
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from miro.models.rin import MiroRIN, RINOutput
from miro.utils.config import require

#: ``MiroRINTransformer`` arguments a config sets (the rest, ``reward_names``, ``text_dim``, ``in_channels`` and
#: ``sample_size``, come from the run and its encoders).
RIN_ARGUMENTS = (
    "patch_size",
    "data_dim",
    "num_latents",
    "latents_dim",
    "num_blocks",
    "num_processing_layers",
    "read_write_heads",
    "compute_heads",
    "mixer_heads",
    "mixer_depth",
    "num_text_registers",
    "latent_mlp_multiplier",
    "data_mlp_multiplier",
    "use_cond_rin_block",
    "use_self_conditioning",
    "sigma_data",
    "normalization",
)


def check_rin_arguments(args: dict[str, Any], prefix: str = "") -> None:
    """The one check of the RIN backbone's sizes; raises ``ConfigError`` naming ``<prefix><key>=<value>``."""

    def positive(key: str) -> None:
        if key in args:
            value = args[key]
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
            require(ok, prefix + key, value, "must be an int >= 1")

    for key in ("patch_size", "data_dim", "num_latents", "latents_dim", "num_blocks", "num_processing_layers",
                "read_write_heads", "compute_heads", "mixer_heads", "latent_mlp_multiplier", "data_mlp_multiplier"):
        positive(key)
    for key in ("mixer_depth", "num_text_registers"):
        if key in args:
            value = args[key]
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            require(ok, prefix + key, value, "must be an int >= 0")
    if "latents_dim" in args and isinstance(args["latents_dim"], int):
        require(args["latents_dim"] % 4 == 0, prefix + "latents_dim", args["latents_dim"],
                "must be a multiple of 4 (the time and reward embedders' Fourier features)")
        for key in ("compute_heads", "mixer_heads"):
            if isinstance(args.get(key), int) and args[key] >= 1:
                require(args["latents_dim"] % args[key] == 0, prefix + key, args[key],
                        f"must divide latents_dim={args['latents_dim']}")
    if isinstance(args.get("data_dim"), int) and isinstance(args.get("read_write_heads"), int):
        width = min(args["data_dim"], args.get("latents_dim", args["data_dim"]))
        if args["read_write_heads"] >= 1:
            require(width % args["read_write_heads"] == 0, prefix + "read_write_heads", args["read_write_heads"],
                    f"must divide min(data_dim, latents_dim)={width}")
    if "sigma_data" in args:
        value = args["sigma_data"]
        require(isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0,
                prefix + "sigma_data", value, "must be > 0")
    if "normalization" in args:
        require(args["normalization"] in ("noise_driven", None), prefix + "normalization", args["normalization"],
                "must be 'noise_driven' (the authors' FlowPrecond input scaling) or null (none)")


class MiroRINTransformer(ModelMixin, ConfigMixin, PeftAdapterMixin):
    """The authors' text-conditioned RIN (``MiroRIN``, held as ``rin``) behind the package's model contract.

    The defaults are a small CPU-sized RIN; the authors' released size is ``data_dim=512, num_latents=256,
    latents_dim=1024, num_blocks=4, num_processing_layers=4, read_write_heads=16, compute_heads=32,
    mixer_heads=16, num_text_registers=16`` on 4 x 32 x 32 SDXL latents (``miro/conf/model/miro_rin.yaml``).
    """

    _supports_gradient_checkpointing = False
    _no_split_modules = ["RINBlock", "RINSelfAttentionBlock"]

    @register_to_config
    def __init__(
        self,
        reward_names: Sequence[str] = (),
        text_dim: int = 384,
        in_channels: int = 3,
        sample_size: int = 32,
        patch_size: int = 2,
        data_dim: int = 128,
        num_latents: int = 64,
        latents_dim: int = 256,
        num_blocks: int = 2,
        num_processing_layers: int = 2,
        read_write_heads: int = 4,
        compute_heads: int = 8,
        mixer_heads: int = 8,
        mixer_depth: int = 2,
        num_text_registers: int = 4,
        latent_mlp_multiplier: int = 4,
        data_mlp_multiplier: int = 4,
        use_cond_rin_block: bool = True,
        use_self_conditioning: bool = True,
        sigma_data: float = 0.5,
        normalization: str | None = "noise_driven",
    ):
        super().__init__()
        reward_names = list(reward_names)
        args = {k: v for k, v in locals().items() if k in RIN_ARGUMENTS}
        check_rin_arguments(args)
        require(len(set(reward_names)) == len(reward_names), "reward_names", reward_names, "lists a reward twice")
        require(sample_size % patch_size == 0, "sample_size", sample_size,
                f"must be a multiple of patch_size={patch_size}")
        self.rin = MiroRIN(
            data_size=sample_size,
            data_dim=data_dim,
            num_input_channels=in_channels,
            num_latents=num_latents,
            latents_dim=latents_dim,
            label_dim=text_dim,
            num_processing_layers=num_processing_layers,
            num_blocks=num_blocks,
            patch_size=patch_size,
            read_write_heads=read_write_heads,
            compute_heads=compute_heads,
            latent_mlp_multiplier=latent_mlp_multiplier,
            data_mlp_multiplier=data_mlp_multiplier,
            use_cond_rin_block=use_cond_rin_block,
            concat_cond_token_to_latents=False,
            use_self_conditioning=use_self_conditioning,
            num_text_registers=num_text_registers,
            coherence_keys=reward_names,
            mixer_heads=mixer_heads,
            mixer_depth=mixer_depth,
            sigma_data=sigma_data,
            normalization=normalization,
            logvar_channels=0,
        )
        self.null_text = nn.Parameter(torch.zeros(1, text_dim))
        nn.init.trunc_normal_(self.null_text, std=0.02, a=-0.04, b=0.04)

    # ------------------------------------------------------------------------------------------------------
    @property
    def reward_names(self) -> list[str]:
        return list(self.config.reward_names)

    @property
    def num_rewards(self) -> int:
        return len(self.config.reward_names)

    @property
    def spatial_stride(self) -> int:
        """Input pixels per token side (the patch size): inputs must be multiples of it, and of ``sample_size``'s
        own value, since the RIN's patch positions are learned for one size."""
        return int(self.config.patch_size)

    @property
    def self_conditioning(self) -> bool:
        """Whether the network reads the previous estimate's latents (training and sampling carry them)."""
        return bool(self.config.use_self_conditioning)

    def _drop_text(self, text: torch.Tensor, text_mask: torch.Tensor, drop_text: torch.Tensor | None):
        if drop_text is None:
            return text, text_mask
        drop = drop_text.to(device=text.device, dtype=torch.bool)
        null = torch.zeros_like(text)
        null[:, 0] = self.null_text.to(text.dtype)
        null_mask = torch.zeros_like(text_mask, dtype=torch.bool)
        null_mask[:, 0] = True
        text = torch.where(drop[:, None, None], null, text)
        return text, torch.where(drop[:, None], null_mask, text_mask.to(torch.bool))

    def _check_inputs(self, x, t, text, text_mask, rewards, reward_mask) -> None:
        cfg = self.config
        size = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != size:
            raise ValueError(f"x: expected [B, {size[0]}, {size[1]}, {size[2]}] (in_channels, sample_size: the RIN's "
                             f"patch positions are learned for one size), got {list(x.shape)}")
        b = x.shape[0]
        if text.dim() != 3 or text.shape[0] != b or text.shape[2] != cfg.text_dim:
            raise ValueError(f"text: expected [{b}, L, {cfg.text_dim}], got {list(text.shape)}")
        if tuple(text_mask.shape) != tuple(text.shape[:2]):
            raise ValueError(f"text_mask: expected {list(text.shape[:2])}, got {list(text_mask.shape)}")
        if self.num_rewards and rewards is not None and tuple(rewards.shape) != (b, self.num_rewards):
            raise ValueError(f"rewards: expected [{b}, {self.num_rewards}] ({self.reward_names}), got {list(rewards.shape)}")
        if self.num_rewards and reward_mask is not None and tuple(reward_mask.shape) != (b, self.num_rewards):
            raise ValueError(f"reward_mask: expected [{b}, {self.num_rewards}], got {list(reward_mask.shape)}")
        t = torch.as_tensor(t)
        if t.numel() not in (1, b):
            raise ValueError(f"t: expected a scalar or [{b}] noise levels, got shape {list(t.shape)}")

    def encode_condition(
        self,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        rewards: torch.Tensor | None = None,
        reward_mask: torch.Tensor | None = None,
        drop_text: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The mixed condition tokens and their mask (``velocity``'s keyword inputs); they depend on neither x nor
        t, so a sampler computes them once per run."""
        text, text_mask = self._drop_text(text, text_mask, drop_text)
        if not self.num_rewards:
            rewards = reward_mask = None  # rewards None for a conditioned model: every reward dropped (NaN)
        mixed, mask = self.rin.encode_condition(text, text_mask, rewards, reward_mask)
        return {"condition": mixed, "condition_mask": mask}

    def velocity(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        condition: torch.Tensor,
        condition_mask: torch.Tensor,
        previous_latents: torch.Tensor | None = None,
        return_latents: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Velocity ``eps - x_0`` at noise level t from ``encode_condition``'s output (and the latents with
        ``return_latents``)."""
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(x.shape[0]) if t.dim() == 0 else t
        out: RINOutput = self.rin.velocity(x, t, None, None, previous_latents=previous_latents,
                                           condition=(condition, condition_mask))
        return (out.sample, out.latents) if return_latents else out.sample

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        rewards: torch.Tensor | None = None,
        reward_mask: torch.Tensor | None = None,
        drop_text: torch.Tensor | None = None,
        previous_latents: torch.Tensor | None = None,
        return_latents: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The model-call contract (module docstring); ``previous_latents`` [B, num_latents, latents_dim] feed the
        self-conditioning (zeros when None), ``return_latents`` also returns this call's latents."""
        self._check_inputs(x, t, text, text_mask, rewards, reward_mask)
        cond = self.encode_condition(text, text_mask, rewards, reward_mask, drop_text)
        return self.velocity(x, t, **cond, previous_latents=previous_latents, return_latents=return_latents)

    def training_flops(self, height: int, width: int, text_len: int) -> int:
        """Forward + backward FLOPs per sample of one training step, counted by ``FlopCounterMode`` on a
        one-sample forward (cached per shape): 3 x forward for the loss pass plus one forward for the
        self-conditioning pass when the network has one."""
        from miro.models.flops import counted_training_flops

        return counted_training_flops(self, height, width, text_len, passes=4 if self.self_conditioning else 3)
