"""The LAION improved-aesthetic-predictor v2 head: finding its file and loading it with every key checked."""

from __future__ import annotations

import logging
from pathlib import Path

from annotate.scorers.clip_l_config import AestheticConfig
from annotate.scorers.heads import MLPHead
from miro.utils.weights import file_record, load_checked, read_checkpoint, resolve_file

log = logging.getLogger(__name__)

HEAD_URL = "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/sac%2Blogos%2Bava1-l14-linearMSE.pth"
KNOWN_HEADS = {
    "21dd590f3ccdc646f0d53120778b296013b096a035a2718c9cb0d511bff0f1e0": "sac+logos+ava1-l14-linearMSE.pth",
}


def load_aesthetic_head(path: str | Path) -> tuple[MLPHead, dict]:
    """The MLP from a ``.pth`` state dict (input width read from ``layers.0.weight``), every key checked."""
    sd = read_checkpoint(path)
    if "layers.0.weight" not in sd:
        raise KeyError(f"aesthetic head {path}: no 'layers.0.weight'; keys are {sorted(sd)[:10]}")
    mlp = MLPHead(sd["layers.0.weight"].shape[1])
    load_checked(mlp, {k: v.float() for k, v in sd.items()}, f"aesthetic head {path}")
    record = file_record(Path(path), "aesthetic_head")
    record["known_as"] = KNOWN_HEADS.get(record["sha256"])
    if record["known_as"] is None:
        log.warning("aesthetic head %s (sha256 %s) is not the published sac+logos+ava1 head", path, record["sha256"])
    return mlp.eval(), record


def resolve_head(cfg: AestheticConfig) -> Path:
    return resolve_file(cfg.head, what="LAION aesthetic head", source=f"{HEAD_URL} (sha256 21dd590f...f1e0)", download=cfg.download, key="rewards.aesthetic.head")
