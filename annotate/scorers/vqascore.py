"""``vqascore``: VQAScore (Lin et al. 2024), a vision-language model's probability of answering "Yes" to
``Does this figure show "{caption}"? Please answer yes or no.``, as ``t2v_metrics`` computes it.

Two backends behind the one scorer interface (``backend``):

- ``transformers`` (default): a VLM that transformers supports natively, by default Qwen2.5-VL-7B-Instruct.
  Why this one: it loads with ``AutoModelForImageTextToText`` without remote code or extra packages, t2v_metrics
  ships a wrapper for it (``qwen2vl_model.py``: ``qwen2.5-vl-3b/7b/72b``), so its VQAScore numbers are the ones
  that wrapper gives, and 8.3B parameters in bf16 (about 17 GB) fit one 24 GB GPU (``Qwen/Qwen2.5-VL-3B-Instruct``
  fits 12 GB; Qwen2-VL folders load the same way).  Steps, as that wrapper does them per sample:
  ``Image.convert("RGB")``; qwen_vl_utils' ``fetch_image`` resize (``smart_resize``: sides rounded to multiples
  of 28 with 4 x 28^2 <= pixels <= 16384 x 28^2, then PIL ``resize`` with its default filter); the chat
  template with the image then the question as one user turn and the generation prompt; the processor; one
  greedy ``generate`` step with ``output_scores`` (so the folder's generation config, e.g. its repetition
  penalty, applies as there); softmax of that step's scores; the probability of the first token of
  ``tokenizer.encode("Yes")``.  Here samples are batched (left padding, one ``generate``), which the wrapper
  does not do; the test checks the two agree.  The question template is the one the issue and the authors'
  model use (t2v_metrics' Qwen wrapper defaults to ``Does this image show "{}"?``; set ``question_template``).
- ``clip_flant5``: the MIRO authors' model, ``t2v_metrics.VQAScore(model="clip-flant5-xxl")`` (CLIP-FlanT5,
  P("Yes") as exp(-mean cross-entropy) of the answer's T5 tokens).  It needs the ``t2v_metrics`` package, which
  this project does not install; without it building the scorer raises an ImportError naming the install.
  As the authors' ``utils/rewards/vqa_scores.py`` does, images go through temporary JPEG files and the model's
  pairwise ``forward``.

Captions are cleaned as the authors do before VQAScore (``clean_caption``): ``<PERSON>`` removed, code fences
and ``<tags>`` stripped, whitespace collapsed.  The score is raw P("Yes") in [0, 1], which is also the
authors' stored scale.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from annotate.scorers.base import Item, Scorer, as_float64, text_mask_nan
from annotate.scorers.hf_clip import load_image_processor
from miro.utils.config import require, require_choice, to_typed
from miro.utils.weights import check_keys, file_record, hf_weight_files, package_versions, resolve_dir

BACKENDS = ("transformers", "clip_flant5")
QUESTION = 'Does this figure show "{}"? Please answer yes or no.'
SOURCE = "the Hugging Face repo Qwen/Qwen2.5-VL-7B-Instruct (or another natively supported Qwen2-VL / Qwen2.5-VL folder)"
T2V_INSTALL = "pip install t2v_metrics (https://github.com/linzhiqiu/t2v_metrics)"

# qwen_vl_utils.vision_process (fetch_image's defaults)
IMAGE_FACTOR, MIN_PIXELS, MAX_PIXELS, MAX_RATIO = 28, 4 * 28 * 28, 16384 * 28 * 28, 200


@dataclass
class VQAScoreConfig:
    """The schema of ``conf/rewards/vqascore.yaml``."""

    backend: str = "transformers"
    model: str = "hf://Qwen/Qwen2.5-VL-7B-Instruct"  # backend=transformers: a folder or hf:// repo
    t2v_model: str = "clip-flant5-xxl"  # backend=clip_flant5: the t2v_metrics model name (the authors')
    question_template: str = QUESTION
    answer_template: str = "Yes"
    clean_caption: bool = True  # the authors' caption clean-up before VQAScore
    min_pixels: int = MIN_PIXELS  # qwen_vl_utils' resize bounds (transformers backend)
    max_pixels: int = MAX_PIXELS
    download: bool = False
    batch_size: int = 8

    def __post_init__(self):
        require_choice("backend", self.backend, BACKENDS)
        require(
            self.question_template.count("{}") == 1,
            "question_template",
            self.question_template,
            "must hold one {} for the caption",
        )
        require(
            bool(self.answer_template.strip()),
            "answer_template",
            self.answer_template,
            "must be a non-empty answer such as 'Yes'",
        )
        require(
            0 < self.min_pixels <= self.max_pixels,
            "min_pixels",
            self.min_pixels,
            f"must be in 1..max_pixels ({self.max_pixels})",
        )
        require(self.batch_size > 0, "batch_size", self.batch_size, "must be a positive integer")


def clean_caption(text: str) -> str:
    """The authors' clean-up: ``<PERSON>`` removed (``preprocess_data._clean``), then fenced code blocks, an
    unclosed fence, ``<tags>`` and backticks removed and runs of whitespace collapsed (``vqa_scores.py``)."""
    text = text.replace("<PERSON>", "")
    text = re.sub(r"```[\s\S]*?```", "", text)
    text = re.sub(r"```[\s\S]*$", "", text)
    text = re.sub(r"<[^>]+>", " ", text).replace("`", "")
    return re.sub(r"\s{2,}", " ", text).strip()


def smart_resize(
    height: int,
    width: int,
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
    factor: int = IMAGE_FACTOR,
) -> tuple[int, int]:
    """qwen_vl_utils' target size: sides multiples of ``factor``, pixels within the bounds, aspect kept."""
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(
            f"aspect ratio {max(height, width) / min(height, width):.1f} is over qwen_vl_utils' limit of {MAX_RATIO}"
        )
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def fetch_image(
    image: Image.Image, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS
) -> Image.Image:
    """t2v_metrics' ``convert("RGB")`` then qwen_vl_utils' ``fetch_image`` resize (PIL's default filter)."""
    image = image.convert("RGB")
    h, w = smart_resize(image.height, image.width, min_pixels, max_pixels)
    return image.resize((w, h))


class QwenVQAPrep:
    """Picklable: the question in the chat template, the resized image, the processor's tensors (one sample)."""

    def __init__(self, processor, cfg: VQAScoreConfig):
        self.processor, self.cfg = processor, cfg

    def __call__(self, image, prompt: str | None) -> Item:
        caption = prompt or ""
        if self.cfg.clean_caption:
            caption = clean_caption(caption)
        image = fetch_image(image, self.cfg.min_pixels, self.cfg.max_pixels)
        question = self.cfg.question_template.format(caption)
        messages = [
            {
                "role": "user",
                "content": [{"type": "image", "image": image}, {"type": "text", "text": question}],
            }
        ]
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        enc = self.processor(text=[text], images=[image], padding=True, return_tensors="pt")
        item: Item = {
            k: v[0] if k in ("input_ids", "attention_mask", "mm_token_type_ids") else v
            for k, v in enc.items()
        }
        item["has_prompt"] = torch.tensor(prompt is not None)
        return item


def left_pad(rows: list[torch.Tensor], value: int) -> torch.Tensor:
    """Rows of different lengths as one tensor, padded on the left (where a decoder-only model reads from)."""
    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=rows[0].dtype)
    for i, r in enumerate(rows):
        out[i, out.shape[1] - len(r) :] = r
    return out


def _rows(x) -> list[torch.Tensor]:
    return list(x) if isinstance(x, list) else list(x.unbind(0))


class QwenVQAScorer(Scorer):
    """VQAScore on a natively supported transformers VLM (Qwen2-VL / Qwen2.5-VL)."""

    name = "vqascore"
    outputs = ("vqascore",)
    text_outputs = frozenset({"vqascore"})

    def __init__(self, model, processor, cfg: VQAScoreConfig, files: list[dict] | None = None):
        self.model, self.processor, self.config, self.files = model.eval(), processor, cfg, files or []
        self.batch_size = cfg.batch_size
        # t2v_metrics: the first id of tokenizer.encode(answer)
        self.answer_id = int(processor.tokenizer.encode(cfg.answer_template)[0])
        pad = processor.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else model.generation_config.pad_token_id or 0)

    def preprocessor(self) -> QwenVQAPrep:
        return QwenVQAPrep(self.processor, self.config)

    @torch.inference_mode()
    def forward(self, batch) -> dict[str, np.ndarray]:
        ids = left_pad(_rows(batch["input_ids"]), self.pad_id)
        inputs = {"input_ids": ids, "attention_mask": left_pad(_rows(batch["attention_mask"]), 0)}
        if "mm_token_type_ids" in batch:
            inputs["mm_token_type_ids"] = left_pad(_rows(batch["mm_token_type_ids"]), 0)
        inputs["pixel_values"] = torch.cat(_rows(batch["pixel_values"])).to(self.dtype)
        inputs["image_grid_thw"] = torch.cat(_rows(batch["image_grid_thw"]))
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        out = self.model.generate(
            **inputs, max_new_tokens=1, do_sample=False, output_scores=True, return_dict_in_generate=True
        )
        p_yes = torch.softmax(out.scores[0].float(), dim=-1)[:, self.answer_id]
        return {self.name: text_mask_nan(as_float64(p_yes), batch.get("has_prompt"))}

    def provenance(self) -> dict:
        return {
            "model": getattr(self.model.config, "_name_or_path", "") or "Qwen2.5-VL",
            "implementation": "annotate.scorers.vqascore (transformers VLM, t2v_metrics' P('Yes') from one greedy step)",
            "weights": self.files,
            "answer_token_id": self.answer_id,
            "packages": package_versions("transformers", "pillow"),
            "config": asdict(self.config),
        }


class ClipFlanT5Prep:
    """Picklable: the RGB pixels and the cleaned caption as uint8 tensors (the forward writes the JPEG files)."""

    def __init__(self, cfg: VQAScoreConfig):
        self.cfg = cfg

    def __call__(self, image, prompt: str | None) -> Item:
        caption = clean_caption(prompt or "") if self.cfg.clean_caption else (prompt or "")
        return {
            "pixels": torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()),
            "caption": torch.tensor(list(caption.encode("utf-8")), dtype=torch.uint8),
            "has_prompt": torch.tensor(prompt is not None),
        }


class ClipFlanT5VQAScorer(Scorer):
    """The authors' VQAScore: t2v_metrics' CLIP-FlanT5 (needs the t2v_metrics package and a CUDA GPU for xxl)."""

    name = "vqascore"
    outputs = ("vqascore",)
    text_outputs = frozenset({"vqascore"})

    def __init__(self, vqa, cfg: VQAScoreConfig):
        self.vqa, self.config, self.batch_size = vqa, cfg, cfg.batch_size

    def _move(self) -> None:  # t2v_metrics places its model itself (its device argument at construction)
        pass

    def preprocessor(self) -> ClipFlanT5Prep:
        return ClipFlanT5Prep(self.config)

    @torch.inference_mode()
    def forward(self, batch) -> dict[str, np.ndarray]:
        import tempfile

        texts = [bytes(t.tolist()).decode("utf-8") for t in _rows(batch["caption"])]
        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for i, px in enumerate(_rows(batch["pixels"])):
                paths.append(str(Path(tmp) / f"image_{i}.jpg"))
                Image.fromarray(px.numpy()).save(paths[-1])
            scores = self.vqa.model.forward(
                paths,
                texts,
                question_template=self.config.question_template,
                answer_template=self.config.answer_template,
            )
        return {self.name: text_mask_nan(as_float64(scores), batch.get("has_prompt"))}

    def provenance(self) -> dict:
        return {
            "model": f"t2v_metrics {self.config.t2v_model}",
            "implementation": "annotate.scorers.vqascore (t2v_metrics VQAScore model.forward on temporary JPEG files, as the MIRO authors)",
            "weights": [],
            "packages": package_versions("t2v_metrics", "transformers", "pillow"),
            "config": asdict(self.config),
        }


def load_clip_flant5(cfg: VQAScoreConfig) -> ClipFlanT5VQAScorer:
    try:
        import t2v_metrics
    except ImportError as err:
        raise ImportError(
            f"rewards.vqascore.backend=clip_flant5 (the MIRO authors' {cfg.t2v_model}) needs the t2v_metrics package, which is "
            f"not installed: {T2V_INSTALL}; or set rewards.vqascore.backend=transformers (a natively supported VLM)"
        ) from err
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return ClipFlanT5VQAScorer(t2v_metrics.VQAScore(model=cfg.t2v_model, device=device), cfg)


def load_transformers_vlm(cfg: VQAScoreConfig) -> QwenVQAScorer:
    import transformers
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = resolve_dir(
        cfg.model, what="VQAScore VLM", source=SOURCE, download=cfg.download, key="rewards.vqascore.model"
    )
    kind = transformers.AutoConfig.from_pretrained(str(folder)).model_type
    require(
        kind in ("qwen2_vl", "qwen2_5_vl"),
        "rewards.vqascore.model",
        cfg.model,
        f"is a {kind!r} model; the transformers backend reads Qwen2-VL / Qwen2.5-VL folders (model_type qwen2_vl, qwen2_5_vl)",
    )
    model, info = AutoModelForImageTextToText.from_pretrained(str(folder), output_loading_info=True)
    check_keys(
        f"VQAScore VLM ({folder})",
        info.get("missing_keys", ()),
        info.get("unexpected_keys", ()),
        (),
        info.get("mismatched_keys", ()),
    )
    processor = AutoProcessor.from_pretrained(str(folder))
    processor.image_processor = load_image_processor(folder, "VQAScore VLM processor", SOURCE)
    return QwenVQAScorer(
        model.float(), processor, cfg, [file_record(p, "model") for p in hf_weight_files(folder)]
    )


SETTINGS = VQAScoreConfig


def build(**cfg) -> Scorer:
    c = to_typed(cfg, VQAScoreConfig)
    return load_clip_flant5(c) if c.backend == "clip_flant5" else load_transformers_vlm(c)
