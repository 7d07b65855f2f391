"""The exploratory heads of scripts/experiments/text_conditioning.py (``ablate``) do what the docs say."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "experiments"))
import text_conditioning as tc  # noqa: E402

from miro.flow import LinearPath  # noqa: E402
from miro.models import MiroTransformer  # noqa: E402

SMALL = {**tc.TINY, "width": 32, "num_heads": 2, "depth": 1, "reward_names": tc.REWARDS}


def _args(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, generator=g).clamp(0.1, 1), torch.randn(n, 4, 384, generator=g),
            torch.ones(n, 4, dtype=torch.bool), torch.rand(n, 5, generator=g))


def test_xpred_turns_a_clean_image_estimate_into_the_velocity(monkeypatch):
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(3, 3, 32, 32, generator=g), torch.randn(3, 3, 32, 32, generator=g)
    t, text, mask, rewards = _args()
    s = LinearPath().sample(x0, t, eps)
    monkeypatch.setattr(MiroTransformer, "velocity", lambda self, x, t, cond, cond_mask, pooled=None: x0)
    model = tc.RecipeVariant(**SMALL).setup(xpred=True)
    torch.testing.assert_close(model(s.x_t, t, text, mask, rewards), s.target, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("conv_channels", [0, 8])
def test_residual_conv_starts_as_the_plain_head(conv_channels):
    torch.manual_seed(0)
    plain = tc.RecipeVariant(**SMALL, conv_channels=conv_channels).setup()
    with torch.no_grad():  # a non-zero output, so the residual conv has something to pass through
        for p in plain.parameters():
            p.add_(0.1 * torch.randn_like(p))
    head = tc.RecipeVariant(**SMALL, conv_channels=conv_channels).setup(conv_out=True)
    head.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(3, 3, 32, 32)
    assert head.residual_conv is not None and head.residual_conv.weight.abs().sum() == 0
    torch.testing.assert_close(head(x, *_args()), plain(x, *_args()))
    assert plain(x, *_args()).abs().max() > 0


@pytest.mark.parametrize("variant", sorted(tc.VARIANTS))
def test_every_variant_builds(variant):
    spec = tc.VARIANTS[variant]
    cfg = {**SMALL, "reward_names": tc.REWARDS if spec.get("rewards", True) else [], **spec.get("model", {})}
    model = tc.RecipeVariant(**cfg).setup(xpred=spec.get("xpred", False), conv_out=spec.get("conv_out", False))
    t, text, mask, rewards = _args()
    out = model(torch.randn(3, 3, 32, 32), t, text, mask, rewards if model.num_rewards else None)
    assert out.shape == (3, 3, 32, 32)


def test_curve_evaluates_only_the_asked_exports(tmp_path):
    (tmp_path / "pipelines" / "step-0001000").mkdir(parents=True)
    with pytest.raises(SystemExit, match=r"no export of steps \[2000\] in .*pipelines"):
        tc.main(["curve", "--run", str(tmp_path), "--exports", "2000", "--targets", "1.0"])


def test_curve_takes_one_pipeline_and_passes_the_solver_options(monkeypatch, tmp_path):
    """``curve --pipeline`` evaluates that folder alone, and --interval / --method / --sample-steps reach the
    sampler (the guidance-interval sweep of docs/text_conditioning.md section 14 depends on it)."""
    from types import SimpleNamespace

    from miro.sampling.pipeline import MiroPipeline

    model = SimpleNamespace(num_rewards=0)
    model.float = lambda: model
    from miro.models.autoencoders import IdentityAutoencoder

    monkeypatch.setattr(MiroPipeline, "from_pretrained",
                        classmethod(lambda cls, path: SimpleNamespace(transformer=model, autoencoder=IdentityAutoencoder())))
    calls = []
    monkeypatch.setattr(tc, "geneval", lambda *a, **k: calls.append((a, k)) or {"overall": 1.0})
    with pytest.raises(SystemExit, match="--run.*or one pipeline"):
        tc.main(["curve", "--run", str(tmp_path), "--pipeline", str(tmp_path)])
    tc.main(["curve", "--pipeline", str(tmp_path), "--data", str(tmp_path), "--targets", "1.0", "--scales", "5,1", "--interval", "0.2,0.8",
             "--method", "heun", "--sample-steps", "12", "--seed", "3", "--out", str(tmp_path / "out.json")])
    (args, kwargs), = calls
    assert args[1:6] == (tmp_path, 5.0, 1.0, 1, 12)
    assert kwargs == {"seed": 3, "targets": 1.0, "interval": (0.2, 0.8), "method": "heun", "sde_noise": 0.7, "decode": None,
                      "rewards": ()}
    calls.clear()
    tc.main(["curve", "--pipeline", str(tmp_path), "--data", str(tmp_path), "--score-rewards", "contrast", "sharpness"])
    assert calls[0][1]["rewards"] == ["contrast", "sharpness"]
    with pytest.raises(SystemExit):  # argparse names the allowed rewards
        tc.parse_args(["curve", "--score-rewards", "beauty"])


def test_geneval_reads_the_asked_rewards_on_the_images_it_judges(tmp_path):
    """``curve --score-rewards``: each reward's mean over exactly the images the detector read (here every sample
    decodes to the same red disc, so the mean is that image's own score)."""
    import json

    from PIL import Image

    from annotate.scorers import build_scorer

    model = MiroTransformer(**{**SMALL, "in_channels": 4, "sample_size": 8, "patch_size": 1}).eval()
    meta = {"tag": "single_object", "prompt": "a photo of a circle", "include": [{"class": "circle", "count": 1}]}
    (tmp_path / "heldout").mkdir()
    (tmp_path / "heldout" / "evaluation_metadata.jsonl").write_text(json.dumps(meta) + "\n")
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    disc = (yy - 16) ** 2 + (xx - 16) ** 2 < 64
    picture = torch.full((3, 32, 32), 0.4)
    picture[0, disc], picture[1, disc], picture[2, disc] = 0.8, -0.9, -0.9

    out = tc.geneval(model, tmp_path, 3.0, 1.0, images=2, steps=2, targets=0.5,
                     decode=lambda z: picture.expand(len(z), 3, 32, 32).clone(), rewards=["contrast", "colorfulness"])
    assert out["single_object"] == 100.0 and out["overall"] == 100.0
    pixels = ((picture.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    for name in ("contrast", "colorfulness"):
        expected = float(build_scorer(name).score([Image.fromarray(pixels)], [meta["prompt"]])[0])
        assert out["rewards"][name] == pytest.approx(expected, abs=2e-3)
    assert out["rewards"]["colorfulness"] > 10  # a saturated red disc: the reading is not a constant
    assert "rewards" not in tc.geneval(model, tmp_path, 3.0, 1.0, images=1, steps=2, targets=0.5,
                                       decode=lambda z: picture.expand(len(z), 3, 32, 32).clone())


def test_noise_band_experts_route_each_sample_by_its_noise_level():
    """``--expert-high``: at t >= switch the high expert's velocity, below it the low one's, per sample."""
    low = MiroTransformer(**SMALL).eval()
    high = MiroTransformer(**SMALL).eval()
    with torch.no_grad():
        for p in high.parameters():
            p.add_(0.05)
    experts = tc.NoiseBandExperts(low, high, 0.5)
    c, size = SMALL.get("in_channels", 3), SMALL.get("sample_size", 8)
    x = torch.randn(3, c, size, size, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.2, 0.5, 0.9])
    text = torch.randn(3, 4, SMALL["text_dim"], generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 4, dtype=torch.bool)
    with torch.no_grad():
        out, v_low, v_high = experts(x, t, text, mask), low(x, t, text, mask), high(x, t, text, mask)
        assert (v_low - v_high).abs().max() > 1e-3
        torch.testing.assert_close(out[0], v_low[0])
        torch.testing.assert_close(out[1:], v_high[1:])
        torch.testing.assert_close(experts(x, torch.full((3,), 0.3), text, mask), low(x, torch.full((3,), 0.3), text, mask))


def test_a_latent_model_is_decoded_before_the_detector_reads_it(monkeypatch, tmp_path):
    """A latent-space pipeline (docs/text_conditioning.md section 19): its samples go through the autoencoder's
    decode before the detector; the pixel-space probes refuse it with a message."""
    model = MiroTransformer(**{**SMALL, "in_channels": 4, "sample_size": 8, "patch_size": 1}).eval()
    meta = [{"tag": "single_object", "prompt": "a photo of a circle", "include": [{"class": "circle", "count": 1}]}]
    seen = []

    def decode(z):
        seen.append(tuple(z.shape))
        img = torch.full((len(z), 3, 32, 32), 0.4)  # the background colour, with one red disc
        yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
        disc = (yy - 16) ** 2 + (xx - 16) ** 2 < 64
        img[:, 0, disc], img[:, 1, disc], img[:, 2, disc] = 0.8, -0.9, -0.9
        return img

    dets = tc.render_heldout(model, meta, 3.0, 1.0, images=2, steps=2, targets=0.5, decode=decode)
    assert seen == [(2, 4, 8, 8)]
    assert [d[0]["class"] for d in dets] == ["circle", "circle"]
    monkeypatch.setattr(tc, "pipeline_decoder", lambda folder: decode)
    for command in ("shapes", "classgap", "gaps"):
        with pytest.raises(SystemExit, match=f"{command}: .* latent space; this probe is for pixel-space"):
            tc.main([command, "--pipeline", str(tmp_path), "--data", str(tmp_path), "--targets", "1.0"])


def test_autoencoder_fidelity_reads_the_originals_and_the_reconstructions(monkeypatch, tmp_path):
    """``autoencoder``: the detector reads each clean one-object image and its reconstruction; an autoencoder that
    gives the image back loses nothing, one that erases the object loses every reading."""
    from types import SimpleNamespace

    import miro.models.autoencoders as aes

    img = torch.full((3, 32, 32), 0.4)  # background, with one red disc
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    disc = (yy - 16) ** 2 + (xx - 16) ** 2 < 64
    img[0, disc], img[1, disc], img[2, disc] = 0.8, -0.9, -0.9
    items = [{"key": f"k{i}", "caption": "a red circle", "class": "circle", "color": "red"} for i in range(3)]
    monkeypatch.setattr(tc, "single_objects", lambda data, limit: items)
    monkeypatch.setattr(tc, "Cached", lambda data: SimpleNamespace(keys=["k0", "k1", "k2"], x=img.expand(3, -1, -1, -1)))

    class Stub:
        def __init__(self, path, normalization):
            assert (path, normalization) == (str(tmp_path), "scale")

        def encode(self, x):
            return x

        def decode(self, z):
            return z if erase is None else torch.full_like(z, erase)

    monkeypatch.setattr(aes, "KLAutoencoder", Stub)
    erase = None
    same = tc.autoencoder_fidelity(tmp_path, tmp_path)
    assert same["original"] == same["reconstruction"] == {"class_pct": 100.0, "colour_pct": 100.0, "one_object_pct": 100.0}
    assert same["mse"] == 0 and same["images"] == 3
    erase = 0.4
    gone = tc.autoencoder_fidelity(tmp_path, tmp_path)
    assert gone["reconstruction"] == {"class_pct": 0.0, "colour_pct": 0.0, "one_object_pct": 0.0} and gone["mse"] > 0.2
    with pytest.raises(SystemExit, match="--autoencoder FOLDER"):
        tc.main(["autoencoder", "--data", str(tmp_path)])


def test_shape_probe_takes_only_clean_correct_one_object_samples(tmp_path):
    """The text -> shape probe starts from clean, correctly captioned images of one object (a degraded image
    or a second object would make the detector's reading ambiguous), and names that object's class and colour."""
    import json
    import tarfile

    from miro.data.shapes.config import ShapesConfig
    from miro.data.shapes.generate import generate
    from miro.utils.config import to_typed

    cfg = to_typed({"out": str(tmp_path), "num_samples": 120, "resolution": 32, "shard_size": 60}, ShapesConfig)
    generate(cfg, progress=False)
    picked = tc.single_objects(tmp_path, limit=1000)
    metas = {}
    for shard in sorted((tmp_path / "train").glob("*.tar")):
        with tarfile.open(shard) as tf:
            for m in tf:
                if m.name.endswith(".json"):
                    meta = json.loads(tf.extractfile(m).read())
                    metas[meta["key"]] = meta
    expected = [k for k, m in metas.items() if not m["degradations"] and m["caption_kind"] == "correct"
                and len(m["scene"]["objects"]) == 1 and m["task"] in ("single_object", "colors")]
    assert [p["key"] for p in picked] == expected and len(expected) >= 3
    for p in picked:
        obj = metas[p["key"]]["scene"]["objects"][0]
        assert (p["class"], p["color"], p["caption"]) == (obj["class"], obj["color"], metas[p["key"]]["caption"])
    assert [p["key"] for p in tc.single_objects(tmp_path, limit=2)] == expected[:2]


def test_class_gap_is_zero_for_a_model_blind_to_the_class_word(monkeypatch):
    """``classgap`` compares the loss under the caption naming the object's class and under the same caption
    naming the next class, at the same x_t: exactly 0 for a model whose text projections are zero (it cannot
    read the class word), non-zero for one that reads the text, and it reports the no-text gap too."""
    # circle -> square: one wordpiece each, so the blind model sees the same number of (zero) text tokens
    items = [{"key": f"k{i}", "caption": "", "class": "circle", "color": c} for i, c in enumerate(["red", "blue"])]

    class FakeCache:
        keys = ["k0", "k1"]

        def __init__(self, data):
            pass

        def batch(self, idx):
            g = torch.Generator().manual_seed(0)
            return {"x": torch.randn(len(idx), 3, 32, 32, generator=g), "rewards": torch.rand(len(idx), 5, generator=g),
                    "reward_mask": torch.ones(len(idx), 5, dtype=torch.bool)}

    monkeypatch.setattr(tc, "single_objects", lambda data, limit: items[:limit])
    monkeypatch.setattr(tc, "Cached", FakeCache)
    torch.manual_seed(0)
    model = MiroTransformer(**SMALL)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        reading = tc.class_gap(model, Path("unused"), times=(0.5,), limit=2, seeds=1)["t=0.5"]
        for p in [*model.text_proj.parameters(), *model.pooled_text_proj.parameters()]:
            p.zero_()
        blind = tc.class_gap(model, Path("unused"), times=(0.5,), limit=2, seeds=1)["t=0.5"]
    assert reading["other_class_pct"] != 0 and reading["loss"] > 0
    assert blind["other_class_pct"] == 0


def test_failure_modes_count_objects_classes_colours_and_confusion(monkeypatch, tmp_path):
    """``failures`` reads the detector's output per image: below GenEval's 0.3 floor a detection does not count;
    the top class, any class, any colour and the confusion of the wanted class against the top one."""
    import json

    rows = [{"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "a photo of a circle"},
            {"tag": "colors", "include": [{"class": "star", "count": 1, "color": "red"}], "prompt": "a photo of a red star"},
            {"tag": "position", "include": [], "prompt": "ignored"}]  # fmt: skip
    (tmp_path / "heldout").mkdir()
    (tmp_path / "heldout" / "evaluation_metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def det(cls, color, score):
        return {"class": cls, "color": color, "score": score}

    fake = [[det("circle", "red", 0.9)], [det("square", "red", 0.9), det("circle", "blue", 0.5)],  # circle prompt
            [det("heart", "red", 0.8), det("star", "green", 0.2)], []]  # red star prompt: the star is below the floor
    monkeypatch.setattr(tc, "render_heldout", lambda model, meta, *a, **k: fake[: 2 * len(meta)])
    out = tc.failure_modes(None, tmp_path, 3.0, 1.0, images=2)
    single, colors = out["tasks"]["single_object"], out["tasks"]["colors"]
    assert single["objects"] == {"0": 0, "1": 1, "2": 1, "3+": 0} and single["top_class"] == 1 and single["any_class"] == 2
    assert colors["objects"] == {"0": 1, "1": 1, "2": 0, "3+": 0} and colors["any_class"] == 0
    assert colors["any_colour"] == 1 and colors["any_colour_pct"] == 50.0
    assert out["confusion"] == {"circle": {"circle": 1, "square": 1}, "star": {"heart": 1}}


def test_one_slider_moves_after_the_clean_targets(monkeypatch):
    from types import SimpleNamespace

    monkeypatch.setattr(tc, "clean_targets", lambda data: [0.8, 1.0, 0.6, 0.6, 1.0])
    args = SimpleNamespace(data=None, targets="clean", set_target=["alignment=0", "sharpness=0.25"])
    assert tc.resolve_targets(args) == [0.25, 1.0, 0.6, 0.6, 0.0]
    assert tc.resolve_targets(SimpleNamespace(data=None, targets="0.5", set_target=["contrast=1"])) == [0.5, 0.5, 0.5, 1.0, 0.5]
    assert tc.resolve_targets(SimpleNamespace(data=None, targets="0.5", set_target=None)) == 0.5
    for bad in ("aesthetic=0", "alignment", "alignment=2"):
        with pytest.raises(SystemExit, match="--set-target"):
            tc.resolve_targets(SimpleNamespace(data=None, targets="1.0", set_target=[bad]))
    left_out = SimpleNamespace(data=None, targets="clean", set_target=["colorfulness=none", "contrast=none"])
    assert tc.resolve_targets(left_out) == [0.8, 1.0, None, None, 1.0]
    assert tc.resolve_targets(SimpleNamespace(data=None, targets="none", set_target=None)) is None
    with pytest.raises(SystemExit, match="not none"):
        tc.resolve_targets(SimpleNamespace(data=None, targets="none", set_target=["contrast=1"]))


def test_the_reward_condition_gives_every_reward_some_or_none():
    pos, mask = tc.reward_condition(2, 3, 0.5)
    assert pos.tolist() == [[0.5] * 3] * 2 and mask.all()
    pos, mask = tc.reward_condition(2, 3, [0.25, None, 0.75])
    assert pos.tolist() == [[0.25, 0.0, 0.75]] * 2 and mask.tolist() == [[True, False, True]] * 2
    pos, mask = tc.reward_condition(2, 3, None)
    assert not mask.any() and pos.shape == (2, 3)
    assert tc.reward_condition(2, 0, 1.0)[0].shape == (2, 0)


def _perturbed(seed):
    torch.manual_seed(seed)
    model = MiroTransformer(**SMALL).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_autoguidance_extrapolates_away_from_the_weaker_model_and_samples():
    """``--autoguide``: v_good + lam (v_good - v_bad) at every condition; lam = 0 or bad = good is the good model,
    and the sampler runs it through the plain forward (it has no cached-condition split)."""
    from miro.sampling import Conditions, Guidance, sample

    good, bad = _perturbed(0), _perturbed(1)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    t, text, mask, rewards = _args()
    with torch.no_grad():
        vg, vb = good(x, t, text, mask, rewards), bad(x, t, text, mask, rewards)
        torch.testing.assert_close(tc.AutoGuided(good, bad, 2.0)(x, t, text, mask, rewards), 3 * vg - 2 * vb)
        torch.testing.assert_close(tc.AutoGuided(good, bad, 0.0)(x, t, text, mask, rewards), vg)
        torch.testing.assert_close(tc.AutoGuided(good, good, 5.0)(x, t, text, mask, rewards), vg)
        known = torch.ones(3, 5, dtype=torch.bool)
        conds = Conditions(text=text, text_mask=mask, pos_rewards=rewards, pos_mask=known,
                           neg_rewards=torch.zeros(3, 5), neg_mask=known)
        same = [sample(m, x, conds, Guidance(3.0, (1.0,) * 5), torch.tensor([1.0, 0.5, 0.0]))
                for m in (good, tc.AutoGuided(good, good, 4.0))]
    torch.testing.assert_close(same[0], same[1], rtol=1e-4, atol=1e-4)


def test_class_contrast_guides_against_the_other_classes_inside_its_interval():
    """``--class-contrast lam``: inside [t_lo, t_hi] the velocity gains lam (v(c) - mean_j v(c_j)), c_j the prompt
    naming each other class; outside it (or at lam = 0) it is the base velocity; multi-object prompts are refused."""
    from miro.models.text_encoders import TextEncoder
    from miro.sampling import Conditions

    model = _perturbed(0)
    meta = [{"tag": "colors", "prompt": "a photo of a red star", "include": [{"class": "star", "color": "red"}]}]
    emb, mask = TextEncoder().encode(["a photo of a red star"] * 2)
    rewards, known = torch.rand(2, 5, generator=torch.Generator().manual_seed(3)), torch.ones(2, 5, dtype=torch.bool)
    conds = Conditions(text=emb, text_mask=mask, pos_rewards=rewards, pos_mask=known, neg_rewards=rewards, neg_mask=known)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    base = lambda x, t: torch.zeros_like(x)  # noqa: E731
    v = tc.contrast_velocity(model, base, meta, 2, conds, (2.0, 0.3, 0.8))
    t = torch.full((2,), 0.5)
    others = [c for c in tc.CLASSES if c != "star"]
    alt_emb, alt_mask = TextEncoder().encode([f"a photo of a red {c}" for c in others])
    with torch.no_grad():
        own = model(x, t, emb, mask, rewards=rewards, reward_mask=known)
        alt = torch.stack([model(x, t, alt_emb[j].expand(2, -1, -1), alt_mask[j].expand(2, -1), rewards=rewards,
                                 reward_mask=known) for j in range(len(others))]).mean(0)  # fmt: skip
        torch.testing.assert_close(v(x, t), 2.0 * (own - alt), rtol=1e-4, atol=1e-5)
        assert v(x, torch.full((2,), 0.9)).abs().max() == 0
    two = [{**meta[0], "include": [{"class": "star"}, {"class": "circle"}]}]
    with pytest.raises(SystemExit, match="one-object prompts"):
        tc.contrast_velocity(model, base, two, 2, conds, (2.0, 0.3, 0.8))


def test_sliders_sweep_one_reward_after_the_base_targets_and_read_it_with_its_scorer(monkeypatch, tmp_path):
    """``sliders``: the swept reward alone moves (the others stay at the resolved targets), every value starts from
    the same noise seed, and the swept reward's own scorer reads the images (a fake sampler whose contrast is the
    contrast target gives Spearman 1; one whose images ignore the target gives no correlation)."""
    import json
    from types import SimpleNamespace

    import numpy as np

    rows = [{"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": f"a photo of a circle {i}"}
            for i in range(6)]  # fmt: skip
    (tmp_path / "heldout").mkdir()
    (tmp_path / "heldout" / "evaluation_metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(tc, "load_model", lambda folder, args: SimpleNamespace(reward_names=list(tc.REWARDS)))
    monkeypatch.setattr(tc, "pipeline_decoder", lambda folder: None)
    monkeypatch.setattr(tc, "clean_targets", lambda data: [0.8, 1.0, 0.6, 0.6, 1.0])
    calls = []

    def fake_sample(model, items, text_scale, reward_scale, images, steps, seed, targets, decode=None, **solver):
        calls.append((len(items), images, seed, list(targets)))
        c = targets[3]  # contrast: a split image whose halves lie c * 100 either side of grey
        img = np.full((len(items) * images, 32, 32, 3), 128, dtype=np.float64)
        img[:, :, :16] -= 100 * c
        img[:, :, 16:] += 100 * c
        return img.round().astype(np.uint8)

    monkeypatch.setattr(tc, "sample_heldout", fake_sample)
    out = tc.cmd_sliders(tc_args(tmp_path, ["sliders", "--sweep", "contrast", "sharpness", "--values", "0", "0.5", "1",
                                            "--slider-prompts", "3", "--images", "2", "--set-target", "alignment=0"]))
    assert [c[3] for c in calls[:3]] == [[0.8, 1.0, 0.6, v, 0.0] for v in (0.0, 0.5, 1.0)]
    assert [c[3] for c in calls[3:]] == [[v, 1.0, 0.6, 0.6, 0.0] for v in (0.0, 0.5, 1.0)]
    assert {c[:3] for c in calls} == {(3, 2, 0)}  # three prompts spread over six, two images each, one seed
    assert out["prompts"] == ["a photo of a circle 0", "a photo of a circle 2", "a photo of a circle 4"]
    contrast = out["rewards"]["contrast"]
    assert contrast["spearman"] > 0.99
    means = [contrast["per_value"][k]["mean"] for k in ("0", "0.5", "1")]
    assert means[0] < means[1] < means[2]
    assert out["rewards"]["sharpness"]["spearman"] is None  # the images ignore the sharpness target: no ranks
    assert out["rewards"]["sharpness"]["per_value"]["0"]["geneval"] == 0.0  # no circle drawn, nothing found
    with pytest.raises(SystemExit, match=r"--sweep \['aesthetic'\]"):
        tc.cmd_sliders(tc_args(tmp_path, ["sliders", "--sweep", "aesthetic"]))
    with pytest.raises(SystemExit, match="give a pipeline"):
        tc.main(["sliders", "--data", str(tmp_path)])



def tc_args(data, argv):
    """The parsed command line of ``argv`` with --data, a pipeline path and the clean targets."""
    return tc.parse_args([*argv, "--data", str(data), "--pipeline", str(data), "--targets", "clean"])


def test_speedup_reads_two_curves_and_finds_where_the_conditioned_run_holds_the_baselines_final(tmp_path):
    """``speedup``: the baseline's final is the mean of its last three exports; the conditioned run's step is where
    it reaches that level and stays (interpolated), the ratio the baseline's steps over it; a metric the
    conditioned run never reaches has no ratio."""
    import json

    def curve(overall, sharp):
        return {"targets": None, **{str(1000 * (i + 1)): {"text 3 / reward 0": {"overall": o, "single_object": o,
                "colour_only": 1.0, "rewards": {"sharpness": s}}} for i, (o, s) in enumerate(zip(overall, sharp))}}

    (tmp_path / "b.json").write_text(json.dumps(curve([10, 20, 30, 40, 50, 60], [0.1, 0.2, 0.2, 0.3, 0.3, 0.3])))
    (tmp_path / "m.json").write_text(json.dumps(curve([5, 10, 20, 30, 40, 45], [0.2, 0.4, 0.5, 0.5, 0.6, 0.6])))
    out = tc.main(["speedup", "--curves", str(tmp_path / "b.json"), str(tmp_path / "m.json"), "--out", str(tmp_path / "s.json"),
                   "--plot", str(tmp_path / "curves.png")])
    assert (tmp_path / "curves.png").stat().st_size > 1000
    result = json.loads((tmp_path / "s.json").read_text())
    assert out is None and set(result) == {"overall", "single_object", "sharpness"}
    assert result["overall"]["baseline_final"] == 50.0 and result["overall"]["speedup"] is None  # MIRO ends at 45
    sharp = result["sharpness"]
    assert sharp["baseline_final"] == pytest.approx(0.3) and sharp["miro_steps"] == pytest.approx(1500.0)
    assert sharp["speedup"] == pytest.approx(4.0) and not sharp["lower_bound"]
    with pytest.raises(SystemExit, match="share their steps"):
        (tmp_path / "short.json").write_text(json.dumps(curve([10, 20], [0.1, 0.2])))
        tc.main(["speedup", "--curves", str(tmp_path / "b.json"), str(tmp_path / "short.json")])
    # --final-window 1: the baseline's final export alone (60), which MIRO (ending at 45) still does not reach;
    # sharpness's final 0.3 is the same level, so the same step
    tc.main(["speedup", "--curves", str(tmp_path / "b.json"), str(tmp_path / "m.json"), "--final-window", "1",
             "--out", str(tmp_path / "s1.json")])
    last = json.loads((tmp_path / "s1.json").read_text())
    assert last["overall"]["baseline_final"] == 60.0 and last["overall"]["baseline_final_spread"] == 0.0
    assert last["sharpness"]["miro_steps"] == pytest.approx(1500.0) and last["sharpness"]["final_window"] == 1
    for bad in ("0", "7"):
        with pytest.raises(SystemExit, match="--final-window"):
            tc.main(["speedup", "--curves", str(tmp_path / "b.json"), str(tmp_path / "m.json"), "--final-window", bad])


def test_speedup_joins_the_stages_of_a_run_and_refuses_mixed_protocols(tmp_path):
    """A run trained in two stages is read as one curve: ``--curves A1.json,A2.json B.json`` joins the files by
    step (the same speed-up as one file holding every step); two files that share a step or were read with
    another seed are refused."""
    import json

    def curve(overall, first=1000, seed=1):
        return {"targets": None, "seed": seed, **{str(first + 1000 * i): {"text 3 / reward 0": {"overall": o}}
                                                 for i, o in enumerate(overall)}}

    for name, body in {"b1": curve([10, 20, 30]), "b2": curve([40, 50, 60], first=4000), "m": curve([5, 10, 20, 30, 55, 60]),
                       "b": curve([10, 20, 30, 40, 50, 60]), "clash": curve([40], first=3000),
                       "seed": curve([40, 50, 60], first=4000, seed=2)}.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(body))
    f = {name: str(tmp_path / f"{name}.json") for name in ("b1", "b2", "m", "b", "clash", "seed")}
    tc.main(["speedup", "--curves", f"{f['b1']},{f['b2']}", f["m"], "--out", str(tmp_path / "staged.json")])
    tc.main(["speedup", "--curves", f["b"], f["m"], "--out", str(tmp_path / "whole.json")])
    staged = json.loads((tmp_path / "staged.json").read_text())
    assert staged == json.loads((tmp_path / "whole.json").read_text())
    assert staged["overall"]["baseline_final"] == 50.0 and staged["overall"]["miro_steps"] == pytest.approx(4800.0)
    with pytest.raises(SystemExit, match="step 3000 is in two"):
        tc.main(["speedup", "--curves", f"{f['b1']},{f['clash']}", f["m"]])
    with pytest.raises(SystemExit, match="seed is 2.*one protocol"):
        tc.main(["speedup", "--curves", f"{f['b1']},{f['seed']}", f["m"]])


def test_curve_step_offset_labels_a_second_stage_by_its_total_steps(monkeypatch, tmp_path):
    """``curve --run STAGE2 --step-offset 6000``: a second stage's exports (and its final, at its own max_steps)
    are keyed by the steps of the whole schedule, so they join the first stage's curve."""
    import json
    from types import SimpleNamespace

    from miro.sampling.pipeline import MiroPipeline

    for name in ("step-0001000", "step-0002000"):
        (tmp_path / "pipelines" / name).mkdir(parents=True)
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "miro_training.json").write_text(json.dumps({"max_steps": 4000}))
    model = SimpleNamespace(num_rewards=0)
    model.float = lambda: model
    monkeypatch.setattr(MiroPipeline, "from_pretrained", classmethod(lambda cls, path: SimpleNamespace(transformer=model)))
    monkeypatch.setattr(tc, "pipeline_decoder", lambda folder: None)
    monkeypatch.setattr(tc, "geneval", lambda *a, **k: {"overall": 1.0})
    out = tmp_path / "curve.json"
    tc.main(["curve", "--run", str(tmp_path), "--data", str(tmp_path), "--scales", "3,0", "--step-offset", "6000",
             "--exports", "7000", "10000", "--out", str(out)])
    assert sorted(k for k in json.loads(out.read_text()) if k.isdigit()) == ["10000", "7000"]


def test_draws_sum_up_one_models_paired_draws_and_the_difference_to_another(tmp_path):
    """``draws``: the overall of each seed, every task's mean over the draws and, against another model's draws
    at the same seeds, the paired difference; a file of two settings, another protocol, a repeated seed or
    other seeds on the other side are refused."""
    import json

    def draw(name, seed, overall, attr, step="6000", targets="clean", settings=1):
        body = {"targets": targets, "sample_steps": 25, "seed": seed,
                step: {f"text {3 + i} / reward 1": {"overall": overall, "color_attr": attr, "colour_only_chance": 8.0}
                       for i in range(settings)}}
        (tmp_path / name).write_text(json.dumps(body))
        return str(tmp_path / name)

    mine = [draw("a1.json", 1, 50.0, 20.0), draw("a0.json", 0, 60.0, 30.0), draw("a2.json", 2, 55.0, 22.0)]
    theirs = [draw("b0.json", 0, 52.0, 31.0), draw("b1.json", 1, 48.0, 10.0, step="2000"),
              draw("b2.json", 2, 57.0, 22.0)]
    tc.main(["draws", "--draws", *mine, "--against", *theirs, "--out", str(tmp_path / "d.json")])
    result = json.loads((tmp_path / "d.json").read_text())
    assert result["seeds"] == [1, 0, 2] and result["overall"] == {"1": 50.0, "0": 60.0, "2": 55.0}
    assert result["mean"] == {"overall": 55.0, "color_attr": 24.0, "colour_only_chance": 8.0}
    diff = result["against"]["difference"]
    assert diff["overall"] == {"1": 2.0, "0": 8.0, "2": -2.0}  # paired by seed, not by the order of the files
    assert diff["mean"]["overall"] == pytest.approx(2.7) and diff["mean"]["color_attr"] == pytest.approx(3.0)
    assert result["against"]["mean"]["overall"] == pytest.approx(52.3)
    with pytest.raises(SystemExit, match="one guidance setting"):
        tc.main(["draws", "--draws", draw("two.json", 3, 50.0, 20.0, settings=2)])
    with pytest.raises(SystemExit, match="read with"):
        tc.main(["draws", "--draws", mine[0], draw("t.json", 5, 50.0, 20.0, targets="1.0")])
    with pytest.raises(SystemExit, match="read with"):  # the other model's draws must share the protocol too
        tc.main(["draws", "--draws", *mine, "--against", draw("t1.json", 1, 50.0, 20.0, targets="1.0")])
    with pytest.raises(SystemExit, match="seed 1 is drawn twice"):
        tc.main(["draws", "--draws", mine[0], draw("again.json", 1, 40.0, 20.0)])
    with pytest.raises(SystemExit, match="are not the draws' seeds"):
        tc.main(["draws", "--draws", *mine, "--against", *theirs[:2]])
    with pytest.raises(SystemExit, match="give a model's draws"):
        tc.main(["draws"])
