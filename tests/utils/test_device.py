import pytest
import torch

from miro.utils.device import DTYPES, parse_dtype, resolve_device


def test_one_dtype_table():
    assert DTYPES == {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    assert parse_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ValueError, match=r"generate.dtype='half': must be one of \['float32', 'float16', 'bfloat16'\]"):
        parse_dtype("half", "generate.dtype")
    # the tables that used to be separate are this one
    from annotate.scorers import registry

    assert registry.DTYPES is DTYPES


def test_auto_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device(None) == "cpu" and resolve_device("auto", 1) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_device("auto", local_rank=2) == "cuda:2"
    assert resolve_device("cuda", local_rank=1) == "cuda:1" and resolve_device("cuda:3", local_rank=1) == "cuda:3"
    assert resolve_device("cpu") == "cpu" and resolve_device(torch.device("cpu")) == "cpu"
