"""VQAScore: a tiny random Qwen2.5-VL saved with save_pretrained, through the production loader, against
t2v_metrics' per-sample computation written out independently."""

import numpy as np
import pytest
import torch

from annotate.scorers import build_scorer
from annotate.scorers.transforms import OPENAI_MEAN, OPENAI_STD
from annotate.scorers.vqascore import QUESTION, clean_caption, smart_resize
from miro.utils.config import ConfigError

SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Qwen2-VL's chat template, cut to what a one-turn image question uses (the real folders ship the full one)
TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% elif c['type'] == 'text' %}"
    "{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_level_alphabet() -> list[str]:
    """GPT-2's byte -> unicode table (the base vocabulary of Qwen2's byte-level BPE)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    out, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in out:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in sorted(out)]


def tiny_qwen_tokenizer():
    from transformers import Qwen2Tokenizer

    merges = [("Y", "e"), ("Ye", "s"), ("Ġ", "y"), ("Ġy", "e"), ("Ġye", "s")]
    vocab = {c: i for i, c in enumerate(byte_level_alphabet())}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tok.add_special_tokens({"additional_special_tokens": SPECIAL[1:]})
    return tok


def tiny_qwen_vl(folder, repetition_penalty: float = 1.05, seed: int = 0):
    """A Qwen2.5-VL folder as save_pretrained writes it: config, safetensors, generation config (with the
    real Instruct checkpoints' greedy-irrelevant sampling keys and repetition penalty), processor files."""
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    tok = tiny_qwen_tokenizer()
    ids = tok.convert_tokens_to_ids(SPECIAL)
    ip = Qwen2VLImageProcessor(
        min_pixels=56 * 56, max_pixels=28 * 28 * 256, image_mean=list(OPENAI_MEAN), image_std=list(OPENAI_STD)
    )
    Qwen2_5_VLProcessor(
        image_processor=ip, tokenizer=tok, video_processor=Qwen2VLVideoProcessor(), chat_template=TEMPLATE
    ).save_pretrained(str(folder))
    text = dict(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
        bos_token_id=ids[0],
        eos_token_id=ids[2],
        pad_token_id=ids[0],
    )
    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=4,
        out_hidden_size=64,
        fullatt_block_indexes=[1],
        window_size=112,
    )
    cfg = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids[5],
        video_token_id=ids[6],
        vision_start_token_id=ids[3],
        vision_end_token_id=ids[4],
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(cfg)
    with torch.no_grad():  # a larger "Yes" row, so P(Yes) moves between samples
        model.lm_head.weight[tok.encode("Yes")[0]].normal_(std=0.3)
    model.generation_config = GenerationConfig(
        bos_token_id=ids[0],
        eos_token_id=[ids[2], ids[0]],
        pad_token_id=ids[0],
        do_sample=True,
        repetition_penalty=repetition_penalty,
        temperature=0.1,
        top_p=0.001,
        top_k=1,
    )
    model.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return tiny_qwen_vl(tmp_path_factory.mktemp("qwen_vl"))


def t2v_metrics_qwen(folder, images, texts, question=QUESTION, answer="Yes") -> np.ndarray:
    """t2v_metrics' Qwen2VLModel.forward, one sample at a time: RGB, qwen_vl_utils resize, chat template,
    processor, one greedy generate step with output_scores, softmax, the first id of encode(answer)."""
    import math

    from transformers import AutoImageProcessor, AutoProcessor, Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(folder)).eval()
    processor = AutoProcessor.from_pretrained(str(folder))
    processor.image_processor = AutoImageProcessor.from_pretrained(
        str(folder), backend="pil"
    )  # 4.x's slow processor
    out = []
    for image, text in zip(images, texts, strict=True):
        image = image.convert("RGB")
        h, w = image.height, image.width
        hb, wb = max(28, round(h / 28) * 28), max(28, round(w / 28) * 28)
        if hb * wb > 16384 * 28 * 28:
            beta = math.sqrt(h * w / (16384 * 28 * 28))
            hb, wb = max(28, math.floor(h / beta / 28) * 28), max(28, math.floor(w / beta / 28) * 28)
        elif hb * wb < 4 * 28 * 28:
            beta = math.sqrt(4 * 28 * 28 / (h * w))
            hb, wb = math.ceil(h * beta / 28) * 28, math.ceil(w * beta / 28) * 28
        image = image.resize((wb, hb))
        messages = [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": image},
                    {"type": "text", "text": question.format(text)},
                ],
            }
        ]
        prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = processor(text=[prompt], images=[image], padding=True, return_tensors="pt")
        with torch.inference_mode():
            gen = model.generate(
                **inputs, max_new_tokens=1, do_sample=False, output_scores=True, return_dict_in_generate=True
            )
        out.append(torch.softmax(gen.scores[0], dim=-1)[0, processor.tokenizer.encode(answer)[0]].item())
    return np.asarray(out)


def test_matches_t2v_metrics_per_sample(qwen_dir, images, prompts):
    scorer = build_scorer("vqascore", model=str(qwen_dir))
    ours = scorer.score(images, prompts)  # one batch of 4: left padding, one generate
    ref = t2v_metrics_qwen(qwen_dir, images, prompts)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6)
    assert np.all((ours > 0) & (ours < 1)) and np.ptp(ours) > 1e-3 * ours.mean()
    assert scorer.answer_id == scorer.processor.tokenizer.encode("Yes")[0]


def test_without_penalty_it_is_the_softmax_of_the_last_logits(tmp_path, images, prompts):
    """With no logits processor in the generation config, P(Yes) = softmax(logits at the last prompt position)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    folder = tiny_qwen_vl(tmp_path / "plain", repetition_penalty=1.0, seed=1)
    scorer = build_scorer("vqascore", model=str(folder), batch_size=2)
    prep = scorer.preprocessor()
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(folder)).eval()
    expected = []
    for image, prompt in zip(images, prompts, strict=True):
        item = prep(image, prompt)
        inputs = {
            k: (v[None] if k in ("input_ids", "attention_mask", "mm_token_type_ids") else v)
            for k, v in item.items()
            if k != "has_prompt"
        }
        with torch.no_grad():
            logits = model(**inputs).logits[0, -1]
        expected.append(torch.softmax(logits, -1)[scorer.answer_id].item())
    np.testing.assert_allclose(scorer.score(images, prompts), expected, rtol=1e-4, atol=1e-6)


def test_missing_prompt_is_nan_and_provenance(qwen_dir, images):
    scorer = build_scorer("vqascore", model=str(qwen_dir))
    out = scorer.score(images[:2], ["a red circle", None])
    assert np.isfinite(out[0]) and np.isnan(out[1])
    prov = scorer.provenance()
    assert prov["config"]["question_template"] == 'Does this figure show "{}"? Please answer yes or no.'
    assert prov["weights"] and prov["answer_token_id"] == scorer.answer_id


def test_question_template_is_used(qwen_dir, images):
    scorer = build_scorer("vqascore", model=str(qwen_dir))
    item = scorer.preprocessor()(images[0], "a cat")
    text = scorer.processor.tokenizer.decode(item["input_ids"])
    assert 'Does this figure show "a cat"? Please answer yes or no.<|im_end|>' in text
    assert text.endswith("<|im_start|>assistant\n")


def test_smart_resize_is_qwen_vl_utils():
    assert smart_resize(96, 128) == (84, 140)  # rounded to multiples of 28
    assert smart_resize(20, 30) == (56, 84)  # under 4 x 28^2 pixels: scaled up, rounded up
    h, w = smart_resize(8000, 6000)  # over 16384 x 28^2: scaled down, rounded down
    assert (
        h % 28 == 0 and w % 28 == 0 and h * w <= 16384 * 28 * 28 and (h, w) == (4116, 3080)
    )  # beta = sqrt(48e6 / 12845056)
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(1, 500)


def test_the_authors_caption_cleanup():
    assert clean_caption("a <PERSON> walking a dog") == "a walking a dog"
    assert clean_caption("a cat ```code``` on a <b>mat</b>") == "a cat on a mat"
    assert clean_caption("unclosed ```fence and the rest") == "unclosed"
    assert clean_caption("  `tick`  spaces   ") == "tick spaces"


def test_clip_flant5_without_t2v_metrics_names_the_install():
    pytest.importorskip("transformers")
    try:
        import t2v_metrics  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("t2v_metrics is installed here")
    with pytest.raises(ImportError, match=r"pip install t2v_metrics.*backend=transformers"):
        build_scorer("vqascore", backend="clip_flant5")


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"backend": "llava"}, "backend='llava'"),
        ({"question_template": "no slot"}, "question_template"),
        ({"answer_template": " "}, "answer_template"),
        ({"min_pixels": 10, "max_pixels": 5}, "min_pixels"),
    ],
)
def test_bad_settings_name_key_value_and_allowed(cfg, match):
    with pytest.raises(ConfigError, match=match):
        build_scorer("vqascore", **cfg)


def test_other_vlm_families_are_refused(tmp_path):
    from tests.annotate.conftest import tiny_hf_clip

    with pytest.raises(ConfigError, match="qwen2_vl, qwen2_5_vl"):
        build_scorer("vqascore", model=str(tiny_hf_clip(tmp_path / "clip")))


def test_annotation_job_with_a_worker_matches_the_api(tmp_path, qwen_dir):
    """The job's DataLoader worker preprocesses (pickled prep), collates ragged prompts/patches as lists, and the
    sidecar equals score_dict; vqascore and sciscore side by side."""
    from annotate.job import run_scoring
    from annotate.scorers import build_scorers
    from miro.contracts import sidecar
    from miro.data.images import decode_image
    from miro.data.shards import iter_shard
    from tests.annotate.conftest import tiny_hf_clip, write_good_shards
    from tests.annotate.test_job import cfg, read

    shards = write_good_shards(tmp_path / "shards", 1, 5, size=(64, 48))
    sci = tiny_hf_clip(tmp_path / "sci", "gelu", 16, seed=7)
    settings = {"vqascore": {"model": str(qwen_dir)}, "sciscore": {"model": str(sci), "processor": str(sci)}}
    run_scoring(cfg(tmp_path / "shards", rewards=settings, workers=1, device="cpu"))
    got, meta = read(sidecar.rewards_path(shards[0]))
    members = list(iter_shard(shards[0]))
    imgs = [decode_image(m["png"]) for _, m in members]
    caps = [m["txt"].decode() for _, m in members]
    expect = {}
    for s in build_scorers(list(settings), settings):
        expect.update(s.score_dict(imgs, caps))
    for r in settings:
        np.testing.assert_allclose(got[r], expect[r], rtol=1e-4, atol=1e-7)
    assert meta["rewards"]["vqascore"]["config"]["backend"] == "transformers"
