"""Which mixed precision a run uses: ``auto`` picks bf16 only where it is supported AND faster.

bf16 autocast keeps fp32 master weights, fp32 optimizer state and an fp32 loss (``miro.flow.velocity_loss``
upcasts); only the matmuls and attention run in bf16.  Whether that pays off depends on the hardware:

- CUDA: bf16 on devices that support it (Ampere and newer); fp32 otherwise (fp16 needs a loss scaler and is
  only used when asked for explicitly).
- CPU: oneDNN has fast bf16 kernels only on CPUs with AVX512-BF16 or AMX.  Elsewhere torch emulates bf16
  and a matmul runs tens of times slower than fp32 (measured: 0.5 against 36 GFLOP/s on an AVX2-only EPYC,
  while an AVX512-BF16 machine gave 806 against 184).  ``auto`` therefore checks oneDNN's bf16 support and
  then times one small matmul in both dtypes, and falls back to fp32 with a log line saying why.

The decision is made once per process and cached.
"""

from __future__ import annotations

import functools
import logging
import time

import torch

log = logging.getLogger("miro.precision")

PRECISIONS = ("auto", "no", "bf16", "fp16")
_DTYPES = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def precision_dtype(precision: str) -> torch.dtype:
    """The autocast dtype of a resolved precision ("no" -> float32)."""
    if precision not in _DTYPES:
        raise ValueError(f"precision={precision!r}: must be one of {list(_DTYPES)} (resolve 'auto' first)")
    return _DTYPES[precision]


def _matmul_rate(dtype: torch.dtype, size: tuple[int, int, int], seconds: float) -> float:
    m, k, n = size
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    a @ b  # warm-up (kernel selection)
    count, start = 0, time.perf_counter()
    while True:
        a @ b
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds or count >= 200:
            return count / elapsed


@functools.cache
def cpu_bf16_speedup(size: tuple[int, int, int] = (1024, 256, 512), seconds: float = 0.05) -> float:
    """bf16 / fp32 matmul throughput on this CPU (one small timed matmul each; ~0.1 s in all).

    The sizes are those of a small model's linear layers (tokens x width @ width x 4 width)."""
    if not _cpu_bf16_kernels():
        return 0.0
    return _matmul_rate(torch.bfloat16, size, seconds) / _matmul_rate(torch.float32, size, seconds)


def _cpu_bf16_kernels() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@functools.cache
def resolve_precision(requested: str, device_type: str, min_speedup: float = 1.2) -> str:
    """``requested`` in PRECISIONS -> "no" | "bf16" | "fp16" for a device type ("cpu", "cuda", ...).

    Explicit choices are returned unchanged (the caller validates them for the device); ``auto`` returns
    "bf16" where the device has fast bf16 kernels (on the CPU: at least ``min_speedup`` x fp32 on a timed
    matmul), "no" otherwise, and logs the decision with its reason.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"mixed_precision={requested!r}: must be one of {list(PRECISIONS)}")
    if requested != "auto":
        return requested
    if device_type == "cuda":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            log.info("mixed_precision=auto: bf16 (this CUDA device supports it)")
            return "bf16"
        log.info("mixed_precision=auto: fp32 (this CUDA device has no bf16 support)")
        return "no"
    if device_type == "cpu":
        if not _cpu_bf16_kernels():
            log.info("mixed_precision=auto: fp32 (this CPU has no fast bf16 kernels: no AVX512-BF16 / AMX; "
                     "torch would emulate bf16, much slower than fp32)")
            return "no"
        speedup = cpu_bf16_speedup()
        if speedup >= min_speedup:
            log.info("mixed_precision=auto: bf16 (bf16 matmul %.2fx fp32 on this CPU)", speedup)
            return "bf16"
        log.info("mixed_precision=auto: fp32 (bf16 matmul only %.2fx fp32 on this CPU)", speedup)
        return "no"
    log.info("mixed_precision=auto: fp32 (no bf16 policy for device type %r)", device_type)
    return "no"
