"""miro/data/transforms.py: the text layout helpers (trim, pad to a batch, pad to a fixed length)."""

import pytest
import torch

from miro.data.transforms import pad_text, pad_text_to, trim_text


def test_pad_to_a_fixed_length_round_trips_through_trim():
    emb, mask = pad_text([torch.randn(3, 4), torch.randn(5, 4)])
    padded, padded_mask = pad_text_to(emb, mask, 8)
    assert padded.shape == (2, 8, 4) and padded_mask.shape == (2, 8) and padded_mask.dtype == torch.bool
    assert padded_mask.sum(1).tolist() == [3, 5] and not padded[:, 5:].any()
    back, back_mask = trim_text(padded, padded_mask)
    assert torch.equal(back, emb) and torch.equal(back_mask, mask)
    same = pad_text_to(emb, mask, 5)
    assert same[0] is emb and same[1] is mask  # already that long: untouched
    with pytest.raises(ValueError, match="has 5 text tokens, more than the 4"):
        pad_text_to(emb, mask, 4)
