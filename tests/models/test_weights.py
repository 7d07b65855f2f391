import pytest
import torch

from miro.models.weights import parse_dtype


def test_parse_dtype():
    assert parse_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ValueError, match="x.dtype='half'"):
        parse_dtype("half", "x.dtype")
