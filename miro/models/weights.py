"""Weight dtype names of the model configs.

Finding weights (local folders, the Hugging Face cache, offline checks, fingerprints) lives in
``miro.utils.weights``, shared with the reward scorers.
"""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_dtype(name: str, key: str = "dtype") -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"{key}={name!r}: must be one of {list(DTYPES)}")
    return DTYPES[name]
