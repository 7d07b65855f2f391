import open_clip
import torch

from miro.utils.clip_tokenizer import load_clip_tokenizer

TEXTS = ["a red apple", "Two blue squares left of a GREEN star!!", "café — naïve 3 dogs", ""]


def test_ids_match_open_clip(tmp_path):
    hf = load_clip_tokenizer(cache_dir=tmp_path)
    assert len(hf) == 49408
    ref = open_clip.get_tokenizer("ViT-L-14")(TEXTS)
    ours = hf(TEXTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    for r, o in zip(ref, ours):
        n = int((r != 0).sum())
        assert r[:n].tolist() == o[:n].tolist()
        assert torch.all(o[n:] == 49407)


def test_truncation_keeps_eos(tmp_path):
    hf = load_clip_tokenizer(cache_dir=tmp_path)
    ids = hf(["word " * 200], padding="max_length", max_length=77, truncation=True).input_ids[0]
    assert len(ids) == 77 and ids[0] == 49406 and ids[-1] == 49407
