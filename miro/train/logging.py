"""Training metrics: accumulated locally every step, reduced across ranks only when logged.

Logged: loss, loss per time bin (where in t the model is weak), lr, grad norm, images/s, data-wait fraction
(time blocked on the loader / step time: the loader is the bottleneck when this is not ~0), skipped samples,
and an MFU estimate when the FLOPs per image and the device peak are known.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from miro.flow import loss_per_time_bin
from miro.models.flops import measure_matmul_flops, training_flops

log = logging.getLogger("miro.train")
TIME_BINS = 10
# dense bf16 peaks (TFLOP/s) used when peak_tflops is not set; matched against the CUDA device name
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0,
               "4090": 165.0, "3090": 71.0, "V100": 125.0}


def peak_flops(device: torch.device, configured_tflops: float | None, dtype: torch.dtype = torch.float32) -> float | None:
    """The device's peak for MFU: ``peak_tflops`` if set; a known GPU's dense bf16 datasheet value; on the
    CPU this machine's measured square-matmul FLOP/s (``miro.models.flops.measure_matmul_flops``, ~1 s)."""
    if configured_tflops:
        return configured_tflops * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((t * 1e12 for key, t in PEAK_TFLOPS.items() if key in name), None)
    if device.type == "cpu":
        return measure_matmul_flops(dtype=dtype, device=device, seconds=1.0)
    return None


def batch_training_flops(model: torch.nn.Module, x: torch.Tensor, text: torch.Tensor) -> float:
    """Forward + backward FLOPs of one micro-batch (``miro.models.flops``, matmuls incl. attention over the
    padded text as the kernels compute it); 0 for a model without that analytic count."""
    if callable(getattr(model, "training_flops", None)):  # a backbone that counts its own (MiroRINTransformer)
        return float(model.training_flops(x.shape[-2], x.shape[-1], text.shape[1]) * x.shape[0])
    config = getattr(model, "config", None)
    if config is None or "patch_size" not in config:
        return 0.0
    return float(training_flops(config, x.shape[-2], x.shape[-1], text.shape[1]) * x.shape[0])


def setup_file_logging(logs: Path, main: bool) -> logging.Handler | None:
    """Mirror the ``miro`` loggers into ``logs/train.log`` on the main process; returns the handler, which
    the caller removes when the run ends (``close_file_logging``), so a second run in the same process logs
    into its own folder, not the first run's."""
    root = logging.getLogger("miro")
    root.setLevel(logging.INFO)
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # per-file "saved ..." lines at every checkpoint
    if not main:
        return None
    logs.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(logs / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    return handler


def close_file_logging(handler: logging.Handler | None) -> None:
    if handler is not None:
        logging.getLogger("miro").removeHandler(handler)
        handler.close()


class Meter:
    """Sums since the last log; ``flush`` reduces them over ranks and returns the scalars to log."""

    def __init__(self, device: torch.device, peak_flops: float | None = None):
        self.device, self.peak_flops = device, peak_flops
        self._reset()

    def _reset(self) -> None:
        # loss sum, sample count, skipped samples, grad-norm sum, optimizer steps, training FLOPs
        self.sums = torch.zeros(6, device=self.device, dtype=torch.float64)
        self.bin_sums = torch.zeros(TIME_BINS, device=self.device)
        self.bin_counts = torch.zeros(TIME_BINS, device=self.device)
        self.data_wait = 0.0
        self.paused = 0.0
        self.start = time.perf_counter()

    def add_micro(self, per_sample_loss: torch.Tensor, t: torch.Tensor, skipped: int, flops: float = 0.0) -> None:
        s, c = loss_per_time_bin(per_sample_loss, t, TIME_BINS)
        self.sums[5] += flops
        self.bin_sums += s
        self.bin_counts += c
        self.sums[0] += per_sample_loss.detach().double().sum()
        self.sums[1] += per_sample_loss.numel()
        self.sums[2] += skipped

    def add_step(self, grad_norm: torch.Tensor | float) -> None:
        self.sums[3] += float(grad_norm) if not torch.is_tensor(grad_norm) else grad_norm.detach().double()
        self.sums[4] += 1

    def pause(self, seconds: float) -> None:
        """Time spent on checkpoints and sample grids, excluded from throughput."""
        self.paused += seconds

    def flush(self, accelerator: Accelerator, lr: float) -> dict[str, float]:
        sums = accelerator.reduce(self.sums.clone(), "sum")
        bins = accelerator.reduce(torch.stack([self.bin_sums, self.bin_counts]), "sum")
        wait = accelerator.reduce(torch.tensor([self.data_wait], device=self.device, dtype=torch.float64), "mean")
        elapsed = max(time.perf_counter() - self.start - self.paused, 1e-9)
        steps = max(float(sums[4]), 1.0)
        images_per_s = float(sums[1]) / elapsed
        out = {
            "train/loss": float(sums[0] / sums[1].clamp(min=1)),
            "train/grad_norm": float(sums[3]) / steps,
            "train/lr": lr,
            "perf/images_per_s": images_per_s,
            "perf/data_wait_fraction": float(wait[0]) / elapsed,
            "data/skipped_samples": float(sums[2]),
        }
        for i in range(TIME_BINS):
            if bins[1, i] > 0:
                out[f"loss_per_t/{i / TIME_BINS:.1f}-{(i + 1) / TIME_BINS:.1f}"] = float(bins[0, i] / bins[1, i])
        if sums[5] > 0:
            achieved = float(sums[5]) / elapsed / accelerator.num_processes
            out["perf/tflops_per_device"] = achieved / 1e12
            if self.peak_flops:
                out["perf/mfu"] = achieved / self.peak_flops
        self._reset()
        return out


def status_line(step: int, max_steps: int, m: dict[str, float]) -> str:
    parts = [f"step {step}/{max_steps}", f"loss {m['train/loss']:.4f}", f"lr {m['train/lr']:.2e}",
             f"gnorm {m['train/grad_norm']:.3f}", f"{m['perf/images_per_s']:.1f} img/s",
             f"data wait {100 * m['perf/data_wait_fraction']:.0f}%"]
    if "perf/mfu" in m and math.isfinite(m["perf/mfu"]):
        parts.append(f"MFU {100 * m['perf/mfu']:.1f}%")
    if m["data/skipped_samples"]:
        parts.append(f"skipped {int(m['data/skipped_samples'])}")
    return " | ".join(parts)
