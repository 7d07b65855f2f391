"""THE device and dtype names of every config: ``device: auto | cpu | cuda | cuda:N | mps`` and
``dtype: float32 | bfloat16 | float16``.  One resolver and one table, used by sampling, evaluation,
annotation and the model factories."""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_dtype(name: str, key: str = "dtype") -> torch.dtype:
    """The torch dtype of a config name; ``ValueError`` naming ``key`` and the allowed names otherwise."""
    if name not in DTYPES:
        raise ValueError(f"{key}={name!r}: must be one of {list(DTYPES)}")
    return DTYPES[name]


def resolve_device(name: str | torch.device | None = "auto", local_rank: int | None = None) -> str:
    """``auto`` = CUDA when available, else the CPU; with ``local_rank`` (a distributed job) ``auto`` and
    ``cuda`` mean ``cuda:LOCAL_RANK``.  Other names are returned as they are."""
    name = "auto" if name is None else str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and local_rank is not None:
        return f"cuda:{local_rank}"
    return name
