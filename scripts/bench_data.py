"""Is the data pipeline ever the bottleneck?  Loader samples/s against what training consumes, in one run.

    python scripts/bench_data.py            # ~3-5 min on 2 CPU cores; prints a markdown report
    python scripts/bench_data.py --quick    # smaller sets, for a smoke run

Setup (the same machine, side by side): the loader runs with ONE DataLoader worker process and training
with ONE torch thread, so each gets one core.  Datasets are written to a temp folder: shapes-like PNGs
(64 px, trained at 32 px) and web-like JPEGs (~320x256, trained at 256 px), 5 reward buckets per sample.
Consumers: the tiny preset (the demo: 32 px pixel space, MiniLM text) and the small preset on 4x32x32
latents (256 px), each a real training step (flow-matching loss, backward, AdamW).  Finally a real
``miro.train`` run of the demo reads its data-wait fraction.  Target: loader >= 3x consumption.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from annotate.sidecar import rewards_path, write_rewards  # noqa: E402
from annotate.stats import STATS_FILE, compute_stats, load_reward_stats, write_buckets  # noqa: E402
from miro.data.cache import cache_identity, cache_shards  # noqa: E402
from miro.data.pipeline import DataConfig, MiroDataset, inspect_dataset, make_loader  # noqa: E402
from miro.data.shards import ShardWriter  # noqa: E402

REWARDS = ["sharpness", "low_noise", "colorfulness", "contrast", "alignment"]
COLORS = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white"]


def scene(rng: random.Random, size: tuple[int, int], fmt: str) -> tuple[bytes, str]:
    img = Image.new("RGB", size, (180, 172, 155))
    d = ImageDraw.Draw(img)
    words = []
    for _ in range(rng.randint(1, 3)):
        c = rng.choice(COLORS)
        w = rng.randint(size[0] // 6, size[0] // 3)
        x, y = rng.randint(0, size[0] - w), rng.randint(0, size[1] - w)
        (d.ellipse if rng.random() < 0.5 else d.rectangle)([x, y, x + w, y + w], fill=c)
        words.append(c)
    buf = io.BytesIO()
    arr = np.asarray(img).astype(np.int16) + np.random.default_rng(rng.randint(0, 2**31)).integers(-12, 12, (size[1], size[0], 3))
    Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue(), "a photo of a " + " and a ".join(f"{c} shape" for c in words)


def write_dataset(folder: Path, n_shards: int, per_shard: int, size: tuple[int, int], fmt: str) -> list[Path]:
    rng = random.Random(0)
    ext = "jpg" if fmt == "JPEG" else "png"
    with ShardWriter(folder, "bench", maxcount=per_shard) as w:
        for i in range(n_shards * per_shard):
            img, cap = scene(rng, size, fmt)
            w.write(f"k{i:07d}", {ext: img, "txt": cap, "json": "{}"})
        shards = w.close()
    # annotations through the annotation stage's own writers, from random scores
    scores = np.random.default_rng(0)
    sidecars = [write_rewards(rewards_path(shard), [f"k{s * per_shard + i:07d}" for i in range(per_shard)],
                              {r: scores.random(per_shard) for r in REWARDS}, ["ok"] * per_shard, {})
                for s, shard in enumerate(shards)]
    (folder / STATS_FILE).write_text(json.dumps(compute_stats(sidecars, REWARDS, 64, None)))
    for p in sidecars:
        write_buckets(p, load_reward_stats(folder / STATS_FILE))
    return shards


def loader_rate(folder: Path, resolution: int, cache: bool, identity: dict | None, batches: int, workers: int = 1) -> float:
    cfg = DataConfig(shards=str(folder), resolution=resolution, num_workers=workers, cache=cache, verify_keys=False)
    ds = MiroDataset(cfg, inspect_dataset(cfg, REWARDS, cache_identity=identity), batch_size=64, seed=0)
    it = iter(make_loader(ds))
    for _ in range(3):  # worker start and shuffle-buffer fill
        next(it)
    tic = time.perf_counter()
    n = sum(len(b["keys"]) for b in islice(it, batches))
    return n / (time.perf_counter() - tic)


def train_rate(preset: str, latent: tuple[int, int, int], batch: int, steps: int, te=None, text_len: int = 12) -> float:
    """Images/s of real training steps (loss, backward, AdamW) on inputs shaped like cached batches;
    with ``te`` the captions are encoded on the fly (the uncached path's consumer-side cost)."""
    from omegaconf import OmegaConf

    from miro.flow import TimeSampler
    from miro.models.config import ModelConfig, build_model
    from miro.train.config import TrainConfig
    from miro.train.loop import flow_matching_loss
    from miro.train.optim import OptimConfig, build_optimizer
    from miro.utils.config import to_typed

    mcfg = to_typed(OmegaConf.load(ROOT / "conf/model" / f"{preset}.yaml"), ModelConfig)
    mcfg.reward_names = list(REWARDS)
    model = build_model(mcfg, text_dim=384, in_channels=latent[0], sample_size=latent[1])
    cfg = TrainConfig(model=mcfg, data=DataConfig(shards="unused"))
    opt = build_optimizer(model, OptimConfig())
    gen, sampler = torch.Generator().manual_seed(0), TimeSampler()
    inputs = {"x": torch.randn(batch, *latent), "text": torch.randn(batch, text_len, 384),
              "text_mask": torch.ones(batch, text_len, dtype=torch.bool), "rewards": torch.rand(batch, 5),
              "reward_mask": torch.ones(batch, 5, dtype=torch.bool)}
    captions = ["a photo of a red shape and a blue shape"] * batch

    def step():
        if te is not None:
            te.encode(captions)
        loss, _ = flow_matching_loss(model, inputs, gen, sampler, cfg)
        loss.mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    tic = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - tic)


def demo_run(folder: Path, out: Path, steps: int) -> dict:
    """A real ``miro.train`` run of the tiny preset on the cached 32 px set: images/s and data wait."""
    from hydra import compose, initialize_config_dir
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import miro.train.__main__  # noqa: F401
    from miro.train.config import TrainConfig
    from miro.train.loop import train
    from miro.utils.config import to_typed

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        hcfg = compose("train", overrides=[f"output_dir={out}", f"data.shards={folder}", "data.cache=true",
                                           "data.num_workers=1", f"max_steps={steps}", f"log_every={steps // 2}",
                                           f"checkpoint_every={steps}", "sample.every=0", "progress_bar=false"])
    train(to_typed(hcfg, TrainConfig))
    acc = EventAccumulator(str(next(out.rglob("events.out.tfevents.*")).parent))
    acc.Reload()
    last = {tag: acc.Scalars(tag)[-1].value for tag in ("perf/images_per_s", "perf/data_wait_fraction")}
    return last


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    n_shards, per_shard, batches = (4, 256, 8) if args.quick else (8, 512, 30)
    from miro.models.autoencoders import IdentityAutoencoder
    from miro.models.config import TextEncoderConfig, build_text_encoder

    te = build_text_encoder(TextEncoderConfig())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small, web = tmp / "shapes32", tmp / "web256"
        write_dataset(small, n_shards, per_shard, (64, 64), "PNG")
        write_dataset(web, max(2, n_shards // 2), per_shard // 2, (320, 256), "JPEG")
        ident = IdentityAutoencoder()
        tic = time.perf_counter()
        cache_shards(sorted(small.glob("*.tar")), te, ident, 32, batch_size=128)
        cache_s = time.perf_counter() - tic
        id32 = cache_identity(te.identifier(), ident.identifier(), 32)
        web_ae = _tiny_kl_autoencoder(tmp / "vae")
        cache_shards(sorted(web.glob("*.tar")), te, web_ae, 256, batch_size=32)
        id256 = cache_identity(te.identifier(), web_ae.identifier(), 256)

        load = {
            "32 px PNG: decode + crop + join": loader_rate(small, 32, False, None, batches),
            "32 px, feature cache": loader_rate(small, 32, True, id32, batches),
            "256 px JPEG: decode + crop + join": loader_rate(web, 256, False, None, max(4, batches // 4)),
            "256 px, feature cache (4x32x32 moments)": loader_rate(web, 256, True, id256, batches),
        }
        steps = 5 if args.quick else 20
        consume = {
            "tiny, 32 px pixels, cached text (batch 64)": train_rate("tiny", (3, 32, 32), 64, steps),
            "tiny, 32 px pixels, MiniLM in the loop (batch 64)": train_rate("tiny", (3, 32, 32), 64, max(2, steps // 2), te=te),
            "small, 4x32x32 latents, cached (batch 8)": train_rate("small", (4, 32, 32), 8, max(2, steps // 5)),
        }
        demo = demo_run(small, tmp / "run", 40 if args.quick else 120)

    print(f"Feature cache build, 32 px set ({n_shards * per_shard} samples, MiniLM + identity, 1 thread): "
          f"{n_shards * per_shard / cache_s:.0f} samples/s\n")
    print("| loader (1 worker process) | samples/s |\n|---|---:|")
    for k, v in load.items():
        print(f"| {k} | {v:,.0f} |")
    print("\n| training step (1 thread) | images/s |\n|---|---:|")
    for k, v in consume.items():
        print(f"| {k} | {v:,.1f} |")
    pairs = [("32 px demo: cached loader / tiny step", load["32 px, feature cache"], consume[
        "tiny, 32 px pixels, cached text (batch 64)"]),
             ("32 px demo: uncached loader / tiny step with MiniLM", load["32 px PNG: decode + crop + join"],
              consume["tiny, 32 px pixels, MiniLM in the loop (batch 64)"]),
             ("256 px: cached loader / small step", load["256 px, feature cache (4x32x32 moments)"],
              consume["small, 4x32x32 latents, cached (batch 8)"])]
    print("\n| pair | ratio (target >= 3) |\n|---|---:|")
    for name, a, b in pairs:
        print(f"| {name} | {a / b:,.1f}x |")
    print(f"\nReal `miro.train` run of the demo preset (cached, 1 worker): {demo['perf/images_per_s']:.0f} images/s, "
          f"data wait {100 * demo['perf/data_wait_fraction']:.1f}% of step time")


def _tiny_kl_autoencoder(folder: Path):
    """A random-weight AutoencoderKL with SD's geometry (4 latent channels, downsample 8) through the
    production loader: the cache's I/O does not depend on the weights."""
    from diffusers import AutoencoderKL

    from miro.models.autoencoders import KLAutoencoder

    torch.manual_seed(0)
    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 16, 16), latent_channels=4,
                  norm_num_groups=4, sample_size=256, scaling_factor=0.13025).save_pretrained(folder)
    return KLAutoencoder(str(folder))


if __name__ == "__main__":
    main()
