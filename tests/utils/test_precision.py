import logging

import pytest
import torch

from miro.utils import precision
from miro.utils.precision import precision_dtype, resolve_precision


@pytest.fixture(autouse=True)
def fresh_cache():
    resolve_precision.cache_clear()
    precision.cpu_bf16_speedup.cache_clear()
    yield
    resolve_precision.cache_clear()
    precision.cpu_bf16_speedup.cache_clear()


@pytest.mark.parametrize("explicit", ["no", "bf16", "fp16"])
def test_explicit_choices_are_kept(explicit):
    assert resolve_precision(explicit, "cpu") == explicit


def test_a_bad_value_names_the_choices():
    with pytest.raises(ValueError, match=r"mixed_precision='fp8': must be one of \['auto', 'no', 'bf16', 'fp16'\]"):
        resolve_precision("fp8", "cpu")
    with pytest.raises(ValueError, match="resolve 'auto' first"):
        precision_dtype("auto")


def test_auto_falls_back_to_fp32_without_bf16_kernels(monkeypatch, caplog):
    monkeypatch.setattr(precision, "_cpu_bf16_kernels", lambda: False)
    with caplog.at_level(logging.INFO, logger="miro.precision"):
        assert resolve_precision("auto", "cpu") == "no"
    assert "fp32 (this CPU has no fast bf16 kernels" in caplog.text


@pytest.mark.parametrize(("speedup", "expected"), [(3.0, "bf16"), (1.05, "no")])
def test_auto_uses_bf16_only_where_it_is_faster(monkeypatch, caplog, speedup, expected):
    monkeypatch.setattr(precision, "_cpu_bf16_kernels", lambda: True)
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: speedup)
    with caplog.at_level(logging.INFO, logger="miro.precision"):
        assert resolve_precision("auto", "cpu") == expected
    assert f"{speedup:.2f}x fp32" in caplog.text


def test_auto_on_this_machine_agrees_with_its_kernels():
    """The real probe: bf16 is chosen exactly when oneDNN has bf16 kernels and they time faster."""
    got = resolve_precision("auto", "cpu")
    if not precision._cpu_bf16_kernels():
        assert got == "no" and precision.cpu_bf16_speedup() == 0.0
    else:
        assert got == ("bf16" if precision.cpu_bf16_speedup() >= 1.2 else "no")


def test_dtypes():
    assert precision_dtype("no") is torch.float32
    assert precision_dtype("bf16") is torch.bfloat16
    assert precision_dtype("fp16") is torch.float16
