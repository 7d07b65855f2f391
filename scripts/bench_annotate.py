"""Benchmark of the annotation job against the bare forward and against the naive way, side by side in one run.

For each model set (real architectures at random weights: PickScore ViT-H/14, HPSv2 open_clip ViT-H-14,
ImageReward BLIP-L, OpenAI CLIP ViT-L/14 shared by clip_score + aesthetic, SciScore ViT-H/14, on synthetic JPEG
shards; jina-CLIP v2 and VQAScore at the sizes ``random_scorer`` documents; and the weight-free set with
alignment, on shapes-world shards) it measures on the same shards:

- bare:  the batched forward alone on images decoded and preprocessed beforehand (the ceiling);
- job:   ``annotate.job.run_scoring`` end to end (tar reading, decoding and preprocessing in DataLoader workers,
         batched forward, sidecar writing), with the same in-memory models;
- naive: what the official scorer packages do: every model scores one image at a time and decodes it itself.

It reports images/s, efficiency = job / bare (target >= 0.85), speedup = job / naive (target >= 3), and the peak
memory of the job (process plus workers, in an extra untimed run: sampling memory slows the process it watches).
A last check runs the weight-free job on 2 and on 12 shards: peak memory must not grow with the dataset.  Models are built in memory with random weights (construction skips the
initialisers and fills weights with N(0, 0.02)); only the shards go to a temp dir.

    python scripts/bench_annotate.py                                  # all sets, a few minutes on a quiet 2-core CPU
    python scripts/bench_annotate.py --models clip_l --images 16      # one model set
    python scripts/bench_annotate.py --models none --free-images 400  # weight-free set only
    python scripts/bench_annotate.py --models sciscore,jina_clip,vqascore --images 4   # the authors' other three
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from annotate.config import AnnotateConfig, DataConfig  # noqa: E402
from annotate.job import run_scoring  # noqa: E402
from annotate.scorers import build_scorer, build_scorers  # noqa: E402
from annotate.scorers.base import Scorer, default_collate  # noqa: E402
from annotate.scorers.pixels import PixelScorer  # noqa: E402
from miro.data.shards import ShardWriter  # noqa: E402
from miro.utils.memory import PeakMemory  # noqa: E402

MODEL_SETS = ("pickscore", "hpsv2", "imagereward", "clip_l", "sciscore", "jina_clip", "vqascore")
WEIGHT_FREE = ["sharpness", "low_noise", "colorfulness", "contrast", "alignment"]


# --- random-weight models of the real architectures -----------------------------------------------------------
@contextlib.contextmanager
def skip_init():
    """Build modules without running their (slow) initialisers; weights are filled afterwards."""
    names = ["normal_", "uniform_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_", "orthogonal_"]
    saved = {n: getattr(torch.nn.init, n) for n in names}
    tsaved = {n: getattr(torch.Tensor, n) for n in ("normal_", "uniform_")}
    try:
        for n in names:
            setattr(torch.nn.init, n, lambda t, *a, **k: t)
        for n in tsaved:
            setattr(torch.Tensor, n, lambda self, *a, **k: self)
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.nn.init, n, f)
        for n, f in tsaved.items():
            setattr(torch.Tensor, n, f)


def fill_random(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and name.endswith("weight"):
                p.fill_(1.0)  # norm scales
            elif p.ndim == 1 or name.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02, generator=g)
    return model.eval()


def clip_processor_parts():
    from transformers import CLIPImageProcessorPil

    from annotate.scorers.transforms import OPENAI_MEAN, OPENAI_STD
    from miro.utils.clip_tokenizer import load_clip_tokenizer

    ip = CLIPImageProcessorPil(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, resample=3, image_mean=list(OPENAI_MEAN), image_std=list(OPENAI_STD)
    )
    return ip, load_clip_tokenizer(77)


def hf_clip(vision: dict, text: dict, projection_dim: int, act: str):
    from transformers import CLIPConfig, CLIPModel

    cfg = CLIPConfig(
        vision_config={**vision, "patch_size": 14, "image_size": 224, "hidden_act": act},
        text_config={**text, "max_position_embeddings": 77, "hidden_act": act},
        projection_dim=projection_dim,
    )
    with skip_init():
        model = CLIPModel(cfg)
    return fill_random(model)


def vit_h_clip():
    """A transformers CLIPModel ViT-H/14 (PickScore's and SciScore's architecture)."""
    return hf_clip(
        dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16),
        dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16),
        1024,
        "gelu",
    )


def random_scorer(kind: str) -> Scorer:
    if kind == "pickscore":  # ViT-H/14 as in yuvalkirstain/PickScore_v1
        from annotate.scorers.pickscore import PickScoreConfig, PickScoreScorer

        return PickScoreScorer(vit_h_clip(), *clip_processor_parts(), PickScoreConfig())
    if kind == "hpsv2":  # open_clip ViT-H-14
        import open_clip

        from annotate.scorers.hpsv2 import HPSv2Config, HPSv2Scorer

        with skip_init():
            model = open_clip.create_model("ViT-H-14")
        return HPSv2Scorer(fill_random(model), open_clip.get_tokenizer("ViT-H-14"), HPSv2Config())
    if kind == "imagereward":  # BLIP ViT-L/16 + BERT-base with cross-attention
        from annotate.scorers.heads import MLPHead
        from annotate.scorers.imagereward import (
            MED_CONFIG,
            BlipVisionArch,
            ImageRewardConfig,
            ImageRewardScorer,
            build_tokenizer,
            build_towers,
            default_vocab,
        )

        with skip_init():
            vision, text = build_towers(BlipVisionArch(), MED_CONFIG)
            head = MLPHead(768)
        return ImageRewardScorer(fill_random(vision), fill_random(text), fill_random(head), build_tokenizer(default_vocab()), ImageRewardConfig())
    if kind == "clip_l":  # OpenAI ViT-L/14, QuickGELU, one image forward for clip_score and aesthetic
        from annotate.scorers.aesthetic import AestheticConfig
        from annotate.scorers.clip_l import ClipLScorer
        from annotate.scorers.clip_score import ClipScoreConfig
        from annotate.scorers.heads import MLPHead

        model = hf_clip(
            dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16),
            dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
            768,
            "quick_gelu",
        )
        with skip_init():
            head = MLPHead(768)
        configs = {"clip_score": ClipScoreConfig(), "aesthetic": AestheticConfig()}
        return ClipLScorer(model, *clip_processor_parts(), ("clip_score", "aesthetic"), fill_random(head), configs)
    if kind == "sciscore":  # Jialuo21/SciScore: a CLIPModel ViT-H/14 (laion CLIP-ViT-H-14 fine-tuned), PickScore's sizes
        from annotate.scorers.sciscore import SciScoreConfig, SciScoreScorer

        return SciScoreScorer(vit_h_clip(), *clip_processor_parts(), SciScoreConfig())
    if kind == "jina_clip":
        return random_jina_clip()
    if kind == "vqascore":
        return random_vqascore()
    raise ValueError(kind)


def random_jina_clip() -> Scorer:
    """A compute stand-in for jinaai/jina-clip-v2, which exists only as the repo's remote code (not here): a
    transformers CLIPModel with jina's call signature at jina's sizes, i.e. a ViT-L/14 (24 x 1024) on 512 px
    images (1369 patches; jina's EVA02-L/14 tower) and a 24 x 1024 text tower with XLM-RoBERTa-large's 250,002
    token vocabulary and 1024 positions (jina's text tower), 1024-d projection: about 0.87B parameters like
    jina-CLIP v2.  EVA02's rotary embeddings and SwiGLU differ from CLIP's blocks by a few percent of the FLOPs.
    The captions go through the CLIP tokenizer (no XLM-R vocabulary offline); the batch is padded to its longest."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    from annotate.scorers.jina_clip import JinaClipConfig, JinaClipScorer
    from annotate.scorers.transforms import OPENAI_MEAN, OPENAI_STD
    from miro.utils.clip_tokenizer import load_clip_tokenizer

    cfg = CLIPConfig(
        vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           patch_size=14, image_size=512, hidden_act="gelu"),
        text_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                         vocab_size=250002, max_position_embeddings=1024, hidden_act="gelu"),
        projection_dim=1024,
    )  # fmt: skip
    with skip_init():
        model = CLIPModel(cfg)
    ip = CLIPImageProcessorPil(size={"height": 512, "width": 512}, do_center_crop=False, resample=3,
                               image_mean=list(OPENAI_MEAN), image_std=list(OPENAI_STD))  # fmt: skip
    return JinaClipScorer(fill_random(model), ip, load_clip_tokenizer(77), JinaClipConfig(trust_remote_code=True))


def random_vqascore() -> Scorer:
    """Qwen2.5-VL-3B-Instruct (the documented 12 GB choice) at random weights, REDUCED to fit beside other work
    on this 24 GB / 2-core machine: the vision tower at its real size (32 blocks of 1280, window attention with
    full attention at blocks 7, 15, 23, 31, 2 x 2 patch merger to 2048) and the language model at its real width
    (2048, MLP 11008, 16 query / 2 key-value heads) but 9 of its 36 layers and the tests' byte-level tokenizer
    (no Qwen vocabulary offline: ~270 tokens, so the question is ~4x more text tokens than with the real
    tokenizer).  The full 3B model is 15 GB in float32 and the 7B default 33 GB; their language model cost is
    4x (3B) this one's per token.  Qwen's image processor and qwen_vl_utils' resize as in the scorer."""
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    from annotate.scorers.transforms import OPENAI_MEAN, OPENAI_STD
    from annotate.scorers.vqascore import QwenVQAScorer, VQAScoreConfig
    from tests.annotate.scorers.test_vqascore import SPECIAL, TEMPLATE, tiny_qwen_tokenizer

    tok = tiny_qwen_tokenizer()
    ids = tok.convert_tokens_to_ids(SPECIAL)
    ip = Qwen2VLImageProcessor(image_mean=list(OPENAI_MEAN), image_std=list(OPENAI_STD))
    processor = Qwen2_5_VLProcessor(image_processor=ip, tokenizer=tok, video_processor=Qwen2VLVideoProcessor(),
                                    chat_template=TEMPLATE)  # fmt: skip
    text = dict(vocab_size=len(tok), hidden_size=2048, intermediate_size=11008, num_hidden_layers=9,
                num_attention_heads=16, num_key_value_heads=2,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
                bos_token_id=ids[0], eos_token_id=ids[2], pad_token_id=ids[0])  # fmt: skip
    vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                  fullatt_block_indexes=[7, 15, 23, 31], window_size=112, patch_size=14, spatial_merge_size=2)  # fmt: skip
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids[5], video_token_id=ids[6],
                           vision_start_token_id=ids[3], vision_end_token_id=ids[4])  # fmt: skip
    with skip_init():
        model = Qwen2_5_VLForConditionalGeneration(cfg)
    model = fill_random(model)
    model.generation_config = GenerationConfig(bos_token_id=ids[0], eos_token_id=[ids[2], ids[0]], pad_token_id=ids[0])
    return QwenVQAScorer(model, processor, VQAScoreConfig())


def naive_split(scorer: Scorer) -> list[Scorer]:
    """The naive way runs each reward as its own package: CLIP score and the aesthetic head each do their own
    ViT-L/14 image forward (same weights in memory)."""
    from annotate.scorers.clip_l import ClipLScorer

    if not isinstance(scorer, ClipLScorer) or len(scorer.outputs) == 1:
        return [scorer]
    parts = []
    for o in scorer.outputs:
        head = scorer.head if o == "aesthetic" else None
        parts.append(ClipLScorer(scorer.model, scorer.image_processor, scorer.tokenizer, (o,), head, {o: scorer.configs[o]}))
    return parts


# --- data --------------------------------------------------------------------------------------------------------
def synthetic_jpeg(rng: np.random.Generator, w: int, h: int) -> bytes:
    """A web-like JPEG: smooth colour field, a few filled shapes, mild sensor noise."""
    c = rng.uniform(0, 255, (2, 2, 3))
    yy, xx = np.linspace(0, 1, h)[:, None, None], np.linspace(0, 1, w)[None, :, None]
    field = c[0, 0] * (1 - yy) * (1 - xx) + c[0, 1] * (1 - yy) * xx + c[1, 0] * yy * (1 - xx) + c[1, 1] * yy * xx
    img = Image.fromarray(np.clip(field + rng.normal(0, 4, (h, w, 3)), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        box = [x0, y0, x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2))]
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def world_shards(folder: Path, n: int, per_shard: int, resolution: int, seed: int = 0) -> list[tuple[str, bytes, str]]:
    """Shapes-world shards (default degradations, a share of wrong captions): the weight-free set's home."""
    from miro.data.shapes.config import ShapesConfig
    from miro.data.shapes.world import ShapesWorld

    world = ShapesWorld(ShapesConfig(out=str(folder), resolution=resolution, seed=seed))
    samples = []
    with ShardWriter(folder, "shapes", maxcount=per_shard) as w:
        for i in range(n):
            s = world.sample(i)
            w.write(s.key, s.members())
            samples.append((s.key, s.image, s.caption))
    return samples


def make_shards(folder: Path, n: int, per_shard: int, size: tuple[int, int], seed: int = 0) -> list[tuple[str, bytes, str]]:
    rng = np.random.default_rng(seed)
    samples = []
    with ShardWriter(folder, "bench", maxcount=per_shard) as w:
        for i in range(n):
            data, cap = synthetic_jpeg(rng, *size), f"a photo of {i % 7 + 1} coloured shapes on a smooth background"
            w.write(f"img{i:06d}", {"jpg": data, "txt": cap})
            samples.append((f"img{i:06d}", data, cap))
    return samples


# --- measurement -----------------------------------------------------------------------------------------------------
def decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def bare(scorers: list[Scorer], samples, batch: int) -> float:
    """Forward only, on inputs decoded and preprocessed beforehand.  The weight-free scorers compute in their
    preprocessing, so for them "bare" is preprocessing + forward on images decoded beforehand."""
    total = 0.0
    for s in scorers:
        prep = s.preprocessor()
        images = [(decode(d), cap) for _, d, cap in samples]
        weight_free = isinstance(s, PixelScorer)
        items = None if weight_free else [prep(im, cap) for im, cap in images]
        t0 = time.perf_counter()
        for i in range(0, len(images), batch):
            chunk = [prep(im, cap) for im, cap in images[i : i + batch]] if weight_free else items[i : i + batch]
            s.forward(default_collate(chunk))
        total += time.perf_counter() - t0
    return total


def naive(scorers: list[Scorer], samples) -> float:
    """Each model scores one image at a time and decodes it itself (processors built once, as the packages do)."""
    preps = [s.preprocessor() for s in scorers]
    t0 = time.perf_counter()
    for _, data, cap in samples:
        for s, prep in zip(scorers, preps):
            s.forward(default_collate([prep(decode(data), cap)]))
    return time.perf_counter() - t0


def job(scorers: list[Scorer], shards: Path, out: Path, batch: int, workers: int) -> float:
    names = [o for s in scorers for o in s.outputs]
    cfg = AnnotateConfig(data=DataConfig(shards=str(shards)), out_dir=str(out), rewards=names, batch_size=batch, workers=workers, progress=False, device="cpu")
    t0 = time.perf_counter()
    run_scoring(cfg, scorers=scorers)
    return time.perf_counter() - t0


def measure(label: str, scorers: list[Scorer], samples, shards: Path, tmp: Path, args, naive_scorers: list[Scorer] | None = None) -> dict:
    """``scorers`` as the job builds them; ``naive_scorers`` one per reward as separate packages would be."""
    n = len(samples)
    prep0 = scorers[0].preprocessor()
    scorers[0].forward(default_collate([prep0(decode(samples[0][1]), samples[0][2])]))  # warm-up
    peak = float("nan")
    if not args.no_memory_check:  # first, untimed: sampling PSS costs CPU; first, so no earlier phase's heap counts
        with PeakMemory(interval=0.1, children=True) as m:
            job(scorers, shards, tmp / f"out-{label}-mem", args.batch_size, args.workers)
        peak = m.peak
    t_bare = t_job = t_naive = float("inf")
    for r in range(args.repeats):  # phases interleaved, best of the repeats: load changes hit all three alike
        t_bare = min(t_bare, bare(scorers, samples, args.batch_size))
        t_job = min(t_job, job(scorers, shards, tmp / f"out-{label}-{r}", args.batch_size, args.workers))
        if not args.skip_naive:
            t_naive = min(t_naive, naive(naive_scorers or scorers, samples))
    if args.skip_naive:
        t_naive = float("nan")
    row = {
        "set": label,
        "images": n,
        "bare": n / t_bare,
        "job": n / t_job,
        "naive": n / t_naive,
        "efficiency": t_bare / t_job,
        "speedup": t_naive / t_job,
        "t": (t_bare, t_job, t_naive),
        "peak": peak,
    }
    print(
        f"{label:12s} n={n:4d}  bare {row['bare']:8.3f} img/s  job {row['job']:8.3f} img/s  naive {row['naive']:8.3f} img/s  "
        f"efficiency {row['efficiency']:.3f}  speedup {row['speedup']:.2f}x  job peak memory {peak / 2**30:.2f} GiB",
        flush=True,
    )
    return row


def memory_flatness(tmp: Path, args) -> tuple[int, int, int, int]:
    """Peak memory of the weight-free job on 2 shards and on 12 shards of the same size."""
    out = []
    scorers = build_scorers(WEIGHT_FREE)
    for k in (2, 12):
        folder = tmp / f"flat{k}"
        world_shards(folder, k * args.per_shard, args.per_shard, args.world_resolution, seed=k)
        with PeakMemory(interval=0.1, children=True) as m:
            job(scorers, folder, tmp / f"flat-out{k}", args.batch_size, args.workers)
        out += [k * args.per_shard, m.peak]
    return tuple(out)


def markdown(rows: list[dict], flat, args, extra: str) -> str:
    gib = 2**30
    lines = [
        "| set | images | bare forward img/s | job img/s | naive img/s | efficiency job/bare (>= 0.85) | speedup job/naive (>= 3) | job peak memory (PSS, GiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['set']} | {r['images']} | {r['bare']:.3f} | {r['job']:.3f} | {r['naive']:.3f} | {r['efficiency']:.3f} | {r['speedup']:.2f}x | {r['peak'] / gib:.2f} |")
    heavy = [r for r in rows if r["set"] != "weight-free"]
    if len(heavy) > 1:
        tb, tj, tn = (sum(r["t"][i] for r in heavy) for i in range(3))
        lines.append(f"| all models (sum of the runs above) | {heavy[0]['images']} | {heavy[0]['images'] / tb:.3f} | {heavy[0]['images'] / tj:.3f} | {heavy[0]['images'] / tn:.3f} | {tb / tj:.3f} | {tn / tj:.2f}x | |")
    if flat:
        lines.append("")
        lines.append(f"Memory with dataset size (weight-free job): {flat[0]} images -> peak memory {flat[1] / gib:.2f} GiB; {flat[2]} images -> {flat[3] / gib:.2f} GiB (ratio {flat[3] / flat[1]:.3f}).")
    lines.append("")
    lines.append(extra)
    return "\n".join(lines)


def run_one(which: str, args) -> dict | tuple:
    """One set measured in this process: a model kind, "weight-free", or "memory"."""
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-annotate-") as d:
        tmp = Path(d)
        if which == "memory":
            return memory_flatness(tmp, args)
        if which == "weight-free":
            free = world_shards(tmp / "free", args.free_images, args.per_shard, args.world_resolution, seed=1)
            return measure("weight-free", build_scorers(WEIGHT_FREE), free, tmp / "free", tmp, args, [build_scorer(n) for n in WEIGHT_FREE])
        samples = make_shards(tmp / "real", args.images, args.per_shard, tuple(args.size))
        t0 = time.perf_counter()
        scorer = random_scorer(which)
        print(f"built {which} in {time.perf_counter() - t0:.1f} s ({sum(p.numel() for p in _params(scorer)) / 1e6:.0f}M parameters)", flush=True)
        return measure(which, [scorer], samples, tmp / "real", tmp, args, naive_split(scorer))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODEL_SETS), help=f"comma list of {MODEL_SETS} or 'none'")
    ap.add_argument("--images", type=int, default=12, help="images for each real-model set")
    ap.add_argument("--free-images", type=int, default=320, help="shapes-world images for the weight-free set")
    ap.add_argument("--world-resolution", type=int, default=128, help="shapes-world image size")
    ap.add_argument("--per-shard", type=int, default=40)
    ap.add_argument("--size", type=int, nargs=2, default=(384, 288), help="synthetic JPEG width height (real-model sets)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1), help="torch threads of the main process")
    ap.add_argument("--repeats", type=int, default=1, help="run the three phases this many times, keep the best of each")
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--no-memory-check", action="store_true")
    ap.add_argument("--write", type=Path, help="also write the markdown table to this file")
    ap.add_argument("--only", help=argparse.SUPPRESS)  # internal: measure one set in this (fresh) process
    args = ap.parse_args()
    if args.only:
        print("RESULT " + json.dumps(run_one(args.only, args)), flush=True)
        return
    load_before = os.getloadavg()[0]
    models = [] if args.models == "none" else [m for m in args.models.split(",") if m]
    sets = [*models, "weight-free", *([] if args.no_memory_check else ["memory"])]
    rows, flat = [], None
    for which in sets:  # each set in a fresh process: no memory left over from the previous model
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--only", which], stdout=subprocess.PIPE, text=True, check=True)
        lines = out.stdout.splitlines()
        print("\n".join(x for x in lines if not x.startswith("RESULT ")), flush=True)
        result = json.loads(next(x for x in lines if x.startswith("RESULT "))[len("RESULT ") :])
        if which == "memory":
            flat = result
        else:
            rows.append(result)
    cmd = "python scripts/bench_annotate.py " + " ".join(sys.argv[1:])
    extra = (
        f"Command: `{cmd.strip()}`; torch {torch.__version__}, {args.threads} torch threads, {args.workers} workers, batch {args.batch_size}, "
        f"{os.cpu_count()} CPUs, load average before the run {load_before:.1f}; each set measured in its own process."
    )
    table = markdown(rows, flat, args, extra)
    print()
    print(table)
    if args.write:
        args.write.write_text(table + "\n")


def _params(scorer: Scorer):
    for attr in ("model", "vision", "text", "head", "mlp"):  # vqascore's and jina_clip's towers live in .model
        m = getattr(scorer, attr, None)
        if isinstance(m, torch.nn.Module):
            yield from m.parameters()


if __name__ == "__main__":
    main()
