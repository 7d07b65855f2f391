"""The CLIP BPE tokenizer as Hugging Face files, built offline from the vocabulary open_clip ships.

Needed wherever a local CLIP-family checkpoint (PickScore, HPS converted to transformers, OpenAI CLIP) comes
without tokenizer files, and by the tests that build tiny CLIP models in the real on-disk format.  The ids
are open_clip's; HF pads with <|endoftext|> (49407) where open_clip pads with 0, which changes nothing
because CLIP's text tower is causal and pools at the EOS token.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

NUM_MERGES = 49152 - 256 - 2  # the merges CLIP uses from the file


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def bpe_vocab_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("open_clip_torch is not installed; it ships bpe_simple_vocab_16e6.txt.gz")
    path = Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the open_clip_torch install")
    return path


@lru_cache(maxsize=1)
def _vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    lines = gzip.open(bpe_vocab_path()).read().decode("utf-8").split("\n")[1 : NUM_MERGES + 1]
    merges = [tuple(m.split()) for m in lines]
    byte_chars = list(_bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, [" ".join(m) for m in merges]


def write_clip_tokenizer_files(out_dir: str | Path, model_max_length: int = 77) -> Path:
    """Write vocab.json, merges.txt and the tokenizer configs; ``CLIPTokenizer.from_pretrained(out_dir)`` loads them."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab, merges = _vocab_and_merges()
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    (out / "special_tokens_map.json").write_text(json.dumps(special))
    cfg = {"tokenizer_class": "CLIPTokenizer", "model_max_length": model_max_length, "do_lower_case": True, **special}
    (out / "tokenizer_config.json").write_text(json.dumps(cfg))
    return out


def load_clip_tokenizer(model_max_length: int = 77, cache_dir: str | Path | None = None):
    """An HF ``CLIPTokenizer`` built from open_clip's vocabulary (written once to ``cache_dir`` or a temp dir)."""
    import tempfile

    from transformers import CLIPTokenizer

    out = Path(cache_dir) if cache_dir is not None else Path(tempfile.mkdtemp(prefix="clip-tok-"))
    if not (out / "vocab.json").exists():
        write_clip_tokenizer_files(out, model_max_length)
    return CLIPTokenizer.from_pretrained(str(out))
