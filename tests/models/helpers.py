"""Tiny models and inputs shared by the model tests."""

from __future__ import annotations

import torch

from miro.models import MiroTransformer

REWARDS = ["sharpness", "alignment", "contrast"]


def tiny_model(**overrides) -> MiroTransformer:
    kwargs = dict(
        in_channels=3, sample_size=8, patch_size=2, width=32, depth=2, num_heads=2, text_dim=12,
        reward_names=REWARDS, reward_fourier_dim=16, num_registers=2, cond_refiner_depth=1, pooled_text=True,
    )
    kwargs.update(overrides)
    torch.manual_seed(0)
    return MiroTransformer(**kwargs)


def randomize_(model: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Perturb every parameter (the zero-initialised ones too) so outputs depend on every input."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def inputs(model: MiroTransformer, batch: int = 4, size: int | None = None, text_len: int = 5, seed: int = 0):
    """(x, t, text, text_mask, rewards, reward_mask, drop_text) for ``model``; sample 0 has a padded text."""
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    size = size or cfg.sample_size
    x = torch.randn(batch, cfg.in_channels, size, size, generator=g)
    t = torch.rand(batch, generator=g)
    text = torch.randn(batch, text_len, cfg.text_dim, generator=g)
    text_mask = torch.ones(batch, text_len, dtype=torch.bool)
    text_mask[0, 2:] = False
    r = len(cfg.reward_names)
    rewards = torch.rand(batch, r, generator=g)
    reward_mask = torch.ones(batch, r, dtype=torch.bool)
    drop_text = torch.zeros(batch, dtype=torch.bool)
    return x, t, text, text_mask, rewards, reward_mask, drop_text


def save_tiny_vae(path, shift_factor=None, scaling_factor=0.5):
    """A 2-level diffusers AutoencoderKL (4 latent channels, /2) saved in its real on-disk format."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
        norm_num_groups=4, sample_size=16, scaling_factor=scaling_factor, shift_factor=shift_factor,
    )
    vae.save_pretrained(path)
    return vae


T5_WORDS = ["<pad>", "</s>", "<unk>", "\u2581a", "\u2581red", "\u2581green", "\u2581apple", "\u2581blue", "\u2581car",
            "\u2581two", "\u2581stars"]  # fmt: skip


def save_tiny_t5(path, d_model: int = 16):
    """A 2-layer T5 encoder over an 11-word Unigram vocabulary in transformers' on-disk format (``tokenizer.json``
    + ``tokenizer_config.json`` naming ``T5Tokenizer``, ``T5EncoderModel.save_pretrained``), as a FLAN-T5
    folder is laid out; "a red apple" is ``[3, 4, 6, 1]`` (</s> appended)."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import T5Config, T5EncoderModel

    vocab = [(w, 0.0 if i < 3 else -float(i)) for i, w in enumerate(T5_WORDS)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    path.mkdir(parents=True)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "T5Tokenizer", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>",
        "model_max_length": 512, "extra_ids": 0,
    }))  # fmt: skip
    cfg = T5Config(vocab_size=len(T5_WORDS), d_model=d_model, d_kv=4, d_ff=32, num_layers=2, num_heads=4,
                   feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1)  # fmt: skip
    torch.manual_seed(0)
    T5EncoderModel(cfg).save_pretrained(path)
    return path
