"""scripts/experiments/peer_unet.py: the peer U-Net keeps the model call contract, and a killed run resumes exactly."""

import json
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "experiments"))
import peer_unet as pu  # noqa: E402


def test_the_peer_unet_reads_the_text_and_a_dropped_prompt_is_one_null_condition():
    torch.manual_seed(0)
    model = pu.PeerUNet().eval()
    with torch.no_grad():  # perturb every weight, so that no zero-initialised layer hides the text
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    x, t = torch.randn(3, 3, 32, 32), torch.tensor([0.2, 0.5, 0.9])
    text, mask = torch.randn(3, 5, 384), torch.ones(3, 5, dtype=torch.bool)
    other = torch.randn(3, 5, 384)
    drop = torch.tensor([True, False, True])
    with torch.no_grad():
        a = model(x, t, text, mask, drop_text=drop)
        b = model(x, t, other, mask, drop_text=drop)
    assert a.shape == x.shape
    torch.testing.assert_close(a[drop], b[drop])          # dropped: whatever the tokens held, the same condition
    assert (a[1] - b[1]).abs().max() > 1e-4               # kept: the prompt changes the velocity
    assert mask.all()                                     # the caller's mask is not modified in place


class _World:
    """A stand-in for the in-memory feature cache: 16 random samples with text tokens and five rewards."""

    def __init__(self, data):
        g = torch.Generator().manual_seed(3)
        self.x = torch.randn(16, 3, 32, 32, generator=g).clamp(-1, 1)
        self.text = torch.randn(16, 4, 384, generator=g)
        self.rewards = torch.rand(16, 5, generator=g)
        self.reward_mask = torch.ones(16, 5, dtype=torch.bool)
        self.keys = [f"k{i}" for i in range(16)]

    def __len__(self):
        return 16

    def batch(self, idx):
        return {"x": self.x[idx], "text": self.text[idx], "text_mask": torch.ones(len(idx), 4, dtype=torch.bool),
                "rewards": self.rewards[idx], "reward_mask": self.reward_mask[idx]}


@pytest.mark.parametrize("arch,extra", [("ours", ["--rewards", "raw"]), ("unet", [])])
def test_a_killed_run_resumes_to_the_same_weights(monkeypatch, tmp_path, arch, extra):
    monkeypatch.setattr(pu, "Cached", _World)
    monkeypatch.setattr(pu, "clean_keys", lambda data: {"k1", "k3"})
    evaluated = []
    monkeypatch.setattr(pu, "failure_modes", lambda *a, **k: evaluated.append(a[6]) or {"tasks": {}})
    data = tmp_path / "data"
    (data / "heldout").mkdir(parents=True)
    rows = [{"tag": "colors", "prompt": f"a photo of a {c} circle", "include": [{"class": "circle", "count": 1, "color": c}]}
            for c in ("red", "blue", "green")]
    (data / "heldout" / "evaluation_metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["--data", str(data), "--arch", arch, "--steps", "4", "--batch", "2", "--checkpoint-every", "2",
              "--eval-at", "2", "--log-every", "1", *extra]

    pu.main([*common, "--out", str(tmp_path / "straight")])
    if arch == "ours":  # sampled toward the medians of the clean samples' rewards
        want = [round(float(v), 3) for v in _World(None).rewards[[1, 3]].median(0).values]
        assert evaluated == [want, want]
    else:
        assert evaluated == [1.0, 1.0]
    assert [p.name for p in sorted((tmp_path / "straight").glob("*.json"))] == ["eval-2.json", "eval-4.json", "result.json"]

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pu, "evaluate", killed)
    with pytest.raises(KeyboardInterrupt):
        pu.main([*common, "--out", str(tmp_path / "resumed")])
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)["step"] == 2
    monkeypatch.undo()
    monkeypatch.setattr(pu, "Cached", _World)
    monkeypatch.setattr(pu, "clean_keys", lambda data: {"k1", "k3"})
    monkeypatch.setattr(pu, "failure_modes", lambda *a, **k: {"tasks": {}})
    pu.main([*common, "--out", str(tmp_path / "resumed")])

    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 4
    for key in a["ema"]:
        torch.testing.assert_close(a["ema"][key], b["ema"][key], rtol=0, atol=0)
    assert len(a["history"]) == 4 and [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]

    # the grid of the last checkpoint: columns the first two colour prompts, rows two seeds, 3x nearest upscaling
    pu.main([*common, "--out", str(tmp_path / "resumed"), "--grid", str(tmp_path / "g.png"), "--images", "2",
             "--grid-prompts", "2", "--sample-steps", "2"])
    assert Image.open(tmp_path / "g.png").size == (2 * 34 * 3, 2 * 34 * 3)


def test_only_our_model_takes_reward_tokens():
    with pytest.raises(SystemExit, match="only --arch ours"):
        pu.build("unet", rewards=True)


def test_caption_residual_rewards_keep_what_the_caption_does_not_say():
    """Two captions, a reward that is mostly the caption (0.2 or 0.8) plus a small part of its own: the residual
    ranks the samples by their own part alone, uniformly in (0, 1) within each caption, and skips unknown rewards."""
    g = torch.Generator().manual_seed(0)
    n = 400
    group = torch.arange(n) % 2
    own = torch.rand(n, generator=g)
    tokens = torch.randn(2, 3, 384, generator=g)
    data = _World(None)
    data.text = [tokens[k] for k in group.tolist()]
    data.rewards = torch.stack([0.2 + 0.6 * group + 0.1 * own, torch.rand(n, generator=g)], dim=1)
    data.reward_mask = torch.ones(n, 2, dtype=torch.bool)
    data.reward_mask[:10, 1] = False
    out = pu.caption_residual_rewards(data, ridge=1e-6)
    first = out[:, 0]
    assert first.min() > 0 and first.max() < 1
    for k in (0, 1):  # within a caption: ordered as the own part, spread over the whole range
        sel = group == k
        assert torch.equal(first[sel].argsort(), own[sel].argsort())
        assert abs(first[sel].mean().item() - 0.5) < 0.02
    assert torch.equal(out[:10, 1], data.rewards[:10, 1])  # unknown values are left as they were
    assert torch.allclose(out[10:, 1].sort().values, (torch.arange(n - 10) + 0.5) / (n - 10))
