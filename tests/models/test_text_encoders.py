
import pytest
import torch

from miro.models.text_encoders import TextEncoder
from miro.utils.weights import WeightsNotFoundError
from tests.models.helpers import save_tiny_t5


@pytest.fixture(scope="module")
def minilm():
    return TextEncoder("minilm", max_length=16)


def _pooled(emb, mask):
    pooled = (emb * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return torch.nn.functional.normalize(pooled, dim=-1)


def test_minilm_embeddings_are_semantic(minilm):
    emb, mask = minilm.encode(["a red apple", "a green apple", "a blue car"])
    p = _pooled(emb, mask)
    assert p[0] @ p[1] > p[0] @ p[2] + 0.3
    assert p[1] @ p[0] > p[1] @ p[2] + 0.3


def test_minilm_matches_sentence_transformers_mean_pooling(minilm):
    """all-MiniLM-L6-v2's published usage: mean of last_hidden_state over the mask, then L2-normalise."""
    from transformers import AutoModel, AutoTokenizer

    from miro.models.text_encoders import minilm_path

    tok = AutoTokenizer.from_pretrained(minilm_path())
    ref_model = AutoModel.from_pretrained(minilm_path()).eval()
    batch = tok(["two small stars", "a cat"], padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = _pooled(ref_model(**batch).last_hidden_state, batch["attention_mask"].bool())
    torch.testing.assert_close(_pooled(*minilm.encode(["two small stars", "a cat"])), ref, rtol=1e-4, atol=1e-5)


def test_padding_masks_truncation_and_empty_prompts(minilm):
    long = " ".join(["square"] * 40)
    emb, mask = minilm.encode(["a red apple", "", long])
    assert emb.shape == (3, 16, 384) and emb.dtype == torch.float32 and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [5, 2, 16]  # [CLS] a red apple [SEP]; [CLS] [SEP]; truncated
    assert torch.equal(emb[~mask], torch.zeros_like(emb[~mask]))
    assert (emb[mask].abs().sum(-1) > 0).all()
    assert minilm.dim == 384 and minilm.max_length == 16


def test_empty_batch_and_chunking(minilm):
    emb, mask = minilm.encode([])
    assert emb.shape == (0, 16, 384) and mask.shape == (0, 16)
    prompts = ["a red apple", "two stars", "", "a blue car", "three squares"]
    full, full_mask = minilm.encode(prompts)
    minilm.batch_size = 2
    try:
        chunked, chunked_mask = minilm.encode(prompts)
    finally:
        minilm.batch_size = 64
    assert torch.equal(full_mask, chunked_mask)
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-5)


def test_encoding_is_independent_of_the_batch(minilm):
    alone, _ = minilm.encode(["three blue triangles"])
    batched, _ = minilm.encode(["a", "three blue triangles", "x " * 30])
    torch.testing.assert_close(batched[1], alone[0], rtol=1e-5, atol=1e-5)


def test_frozen_and_stays_in_eval(minilm):
    assert not any(p.requires_grad for p in minilm.parameters())
    minilm.train()
    assert not minilm.model.training
    a, _ = minilm.encode(["a red apple"])
    b, _ = minilm.encode(["a red apple"])
    assert torch.equal(a, b)  # dropout stays off


def test_output_dtype_and_identifier():
    enc16 = TextEncoder("minilm", max_length=8, output_dtype="float16")
    emb, _ = enc16.encode(["a"])
    assert emb.dtype == torch.float16
    ident = enc16.identifier()
    assert ident.startswith("minilm:") and ":len8:" in ident
    assert ident == TextEncoder("minilm", max_length=8).identifier()  # output dtype only rounds
    assert ident != TextEncoder("minilm", max_length=9).identifier()
    assert "unknown" not in ident


def test_bad_arguments(minilm):
    with pytest.raises(TypeError, match="list of prompts"):
        minilm.encode("a red apple")
    with pytest.raises(TypeError, match="must be strings"):
        minilm.encode(["ok", None])
    with pytest.raises(ValueError, match="kind"):
        TextEncoder("bert")
    with pytest.raises(ValueError, match="512 positions"):
        TextEncoder("minilm", max_length=1000)
    with pytest.raises(ValueError, match="path is required"):
        TextEncoder("t5")


def test_missing_weights_name_the_path(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="no folder at .*nowhere.*text_encoder.path"):
        TextEncoder("t5", path=str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsNotFoundError, match="does not hold a loadable checkpoint"):
        TextEncoder("clip", path=str(tmp_path / "empty"))


def test_missing_hub_repo_offline_says_how_to_supply(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match="huggingface-cli download miro-test/no-such-t5"):
        TextEncoder("t5", path="miro-test/no-such-t5")


# ---------------------------------------------------------------- tiny T5 and CLIP in the real format
def test_t5_through_the_production_path(tmp_path):
    path = save_tiny_t5(tmp_path / "t5")
    enc = TextEncoder("t5", path=str(path), max_length=6, dtype="float32")
    emb, mask = enc.encode(["a red apple", "", "two blue stars a red car apple"])
    assert enc.dim == 16 and emb.shape == (3, 6, 16)
    assert mask.sum(1).tolist() == [4, 1, 6]  # three words + </s>; </s> only; truncated
    from transformers import T5EncoderModel

    ref = T5EncoderModel.from_pretrained(path).eval()
    ids = torch.tensor([[3, 4, 6, 1]])
    with torch.no_grad():
        expected = ref(input_ids=ids).last_hidden_state[0]
    torch.testing.assert_close(emb[0, :4], expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(emb[0, 4:], torch.zeros(2, 16))
    assert enc.identifier().startswith(f"t5:{path}:") and "unknown" not in enc.identifier()


def test_t5_bfloat16_weights(tmp_path):
    path = save_tiny_t5(tmp_path / "t5")
    enc = TextEncoder("t5", path=str(path), max_length=6, dtype="bfloat16", output_dtype="float16")
    emb, _ = enc.encode(["a red apple"])
    assert next(enc.model.parameters()).dtype == torch.bfloat16 and emb.dtype == torch.float16
    assert ":bfloat16" in enc.identifier()


def _tiny_clip_folder(path):
    from transformers import CLIPTextConfig, CLIPTextModel

    from miro.utils.clip_tokenizer import write_clip_tokenizer_files

    write_clip_tokenizer_files(path)
    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=49406,
                         eos_token_id=49407, pad_token_id=49407)
    torch.manual_seed(0)
    CLIPTextModel(cfg).save_pretrained(path)
    return path


@pytest.mark.parametrize("layer", ["last", "penultimate"])
def test_clip_through_the_production_path(tmp_path, layer):
    path = _tiny_clip_folder(tmp_path / "clip")
    enc = TextEncoder("clip", path=str(path), max_length=10, layer=layer)
    emb, mask = enc.encode(["a red apple", ""])
    assert emb.shape == (2, 10, 16) and mask.sum(1).tolist() == [5, 2]  # <sot> a red apple <eot>; <sot> <eot>
    from transformers import CLIPTextModel, CLIPTokenizer

    ref = CLIPTextModel.from_pretrained(path).eval()
    ids = CLIPTokenizer.from_pretrained(path)(["a red apple"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = ref(input_ids=ids, output_hidden_states=True)
    expected = out.last_hidden_state if layer == "last" else out.hidden_states[-2]
    torch.testing.assert_close(emb[0, :5], expected[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="77 positions"):
        TextEncoder("clip", path=str(path), max_length=78)
