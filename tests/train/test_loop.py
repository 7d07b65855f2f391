import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from miro.data.annotations import DataError
from miro.data.cache import cache_shards
from miro.models.config import AutoencoderConfig, ModelConfig
from miro.sampling.pipeline import MiroPipeline
from miro.train.checkpoint import list_checkpoints, resolve_resume
from miro.train.loop import micro_batch_size, train
from miro.utils.config import ConfigError
from tests.data.make_dataset import write_shards
from tests.train.conftest import tiny_components, tiny_config
from tests.train.tiny import TinyTextEncoder, tiny_kl_autoencoder


def scalars(run: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(next((run / "logs").rglob("events.out.tfevents.*")).parent))
    acc.Reload()
    out = {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    out["_images"] = acc.Tags()["images"]
    return out


def test_end_to_end_run_writes_the_documented_layout(tmp_path, shards_root):
    out = train(tiny_config(tmp_path / "run", shards_root, recommended_reward_targets={"contrast": 0.3, "alignment": None}),
                tiny_components())  # fmt: skip
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [3, 6]
    assert (out / "config.yaml").is_file() and (out / "logs" / "train.log").is_file()
    grid = Image.open(out / "samples" / "step-0000006.png")
    assert grid.size == (2 * 18 + 2, 3 * 18 + 2)  # columns: 2 prompts, rows: reward targets 0, 0.5, 1; 2 px gaps
    logged = scalars(out)
    for tag in ("train/loss", "train/lr", "train/grad_norm", "perf/images_per_s", "perf/data_wait_fraction",
                "data/epoch", "perf/tflops_per_device", "perf/mfu"):
        assert len(logged[tag]) == 3 and all(np.isfinite(logged[tag])), tag
    assert any(t.startswith("loss_per_t/") for t in logged)
    # MFU = achieved / peak with the analytic FLOPs of the batches: both logged, consistent with each other
    assert logged["perf/mfu"] == pytest.approx([v / 0.05 for v in logged["perf/tflops_per_device"]], rel=1e-5)
    assert logged["_images"]
    # the final folder is the sampling stage's pipeline, with the EMA network as its transformer
    pipe = MiroPipeline.from_pretrained(out / "final", text_encoder=TinyTextEncoder())
    ema = load_file(out / "checkpoints" / "checkpoint-6" / "ema.safetensors")
    for k, v in pipe.transformer.state_dict().items():
        assert torch.equal(v, ema[k]), k
    assert pipe.reward_names == ["sharpness", "contrast", "alignment"] and pipe.num_bins == 8
    assert pipe.recommended_reward_targets == {"contrast": 0.3, "alignment": None}  # None: recommended free
    images = pipe(["a red circle"], num_inference_steps=2, guidance_scale=1.0, output_type="np")
    assert images.shape == (1, 16, 16, 3) and np.isfinite(images).all()
    meta = json.loads((out / "final" / "miro_training.json").read_text())
    assert meta["reward_names"] == ["sharpness", "contrast", "alignment"] and meta["num_bins"] == 8
    assert meta["text_encoder"] == TinyTextEncoder().identifier()


def test_resume_continues_bit_identically(tmp_path, shards_root):
    whole = train(tiny_config(tmp_path / "whole", shards_root), tiny_components())
    split = tmp_path / "split"
    train(tiny_config(split, shards_root, stop_after=3), tiny_components())
    assert [s for s, _ in list_checkpoints(split / "checkpoints")] == [3] and not (split / "final").exists()
    # a fresh process would build a freshly initialised model: use another seed to prove it is overwritten
    train(tiny_config(split, shards_root, resume="latest"), tiny_components(seed=123))
    a, b = load_file(whole / "checkpoints/checkpoint-6/model.safetensors"), load_file(split / "checkpoints/checkpoint-6/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    fa = load_file(whole / "final/transformer/diffusion_pytorch_model.safetensors")  # the EMA weights
    fb = load_file(split / "final/transformer/diffusion_pytorch_model.safetensors")
    assert all(torch.equal(fa[k], fb[k]) for k in fa)
    la, lb = scalars(whole)["train/loss"], scalars(split)["train/loss"]
    assert la[-1] == lb[-1]  # the loss of steps 5-6 too


def test_checkpoint_limit_and_resume_paths(tmp_path, shards_root):
    out = train(tiny_config(tmp_path / "r", shards_root, max_steps=8, checkpoint_every=2, checkpoints_total_limit=2,
                            sample={"every": 0}, export_every=4), tiny_components())
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in (out / "pipelines").iterdir()) == ["step-0000004"]  # step 8 is final/
    assert MiroPipeline.from_pretrained(out / "pipelines" / "step-0000004", text_encoder=TinyTextEncoder()).reward_names
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-6", "checkpoint-8"]
    assert resolve_resume("latest", ckpts) == ckpts / "checkpoint-8"
    (ckpts / "checkpoint-10.tmp").mkdir()  # a save that was killed half way is never picked
    assert resolve_resume("latest", ckpts) == ckpts / "checkpoint-8"
    assert resolve_resume("latest", tmp_path / "nothing") is None
    with pytest.raises(ConfigError, match="not a complete checkpoint"):
        resolve_resume(str(ckpts / "checkpoint-10.tmp"), ckpts)


def test_baseline_without_rewards_or_annotations(tmp_path):
    write_shards(tmp_path / "plain", n_shards=2, per_shard=6)
    out = train(tiny_config(tmp_path / "run", tmp_path / "plain", rewards=[], max_steps=3), tiny_components(rewards=[]))
    assert Image.open(out / "samples" / "step-0000003.png").size == (38, 20)  # one "no reward" row
    assert json.loads((out / "final/miro_training.json").read_text())["reward_names"] == []
    assert MiroPipeline.from_pretrained(out / "final", text_encoder=TinyTextEncoder()).reward_names == []


def test_training_from_the_feature_cache_matches_on_the_fly(tmp_path):
    """In a KL latent space with posterior sampling: the cache holds the moments, so the same draws happen.
    fp32 on every machine: under bf16 autocast (``auto`` on a CPU with AVX512-BF16) the fp16 cache's rounding
    is amplified past the tolerance, and this test is about the data path, not the precision."""
    from tests.data.make_dataset import make_dataset

    shards = make_dataset(tmp_path / "d", n_shards=2, per_shard=8)
    vae = tmp_path / "vae"
    cache_shards(shards, TinyTextEncoder(), tiny_kl_autoencoder(vae), 16)
    runs = {}
    for cached in (False, True):
        cfg = tiny_config(tmp_path / f"run{cached}", tmp_path / "d", max_steps=3, data={"cache": cached},
                          mixed_precision="no", sample={"every": 3, "settings": {"guidance_scale": 2.0}},
                          autoencoder=AutoencoderConfig(kind="kl", path=str(vae)))
        comps = tiny_components(autoencoder=tiny_kl_autoencoder(vae))
        out = train(cfg, comps)
        runs[cached] = (load_file(out / "checkpoints/checkpoint-3/model.safetensors"), scalars(out)["train/loss"])
    (w_fly, loss_fly), (w_cached, loss_cached) = runs[False], runs[True]
    assert loss_cached == pytest.approx(loss_fly, rel=1e-3)  # fp16 storage of the moments and text
    # Adam turns a rounding-size gradient difference on a near-zero gradient into a full lr-size step, so
    # compare the weights as a whole: the same training up to fp16 rounding of the inputs
    diff = torch.cat([(w_cached[k] - w_fly[k]).flatten() for k in w_fly]).norm()
    assert diff / torch.cat([w.flatten() for w in w_fly.values()]).norm() < 1e-3


def test_bf16_autocast_on_the_cpu(tmp_path, shards_root):
    out = train(tiny_config(tmp_path / "bf16", shards_root, max_steps=2, mixed_precision="bf16", sample={"every": 0}),
                tiny_components())
    assert np.isfinite(scalars(out)["train/loss"]).all()


def test_auto_precision_is_resolved_and_recorded(tmp_path, shards_root):
    from omegaconf import OmegaConf

    from miro.utils.precision import resolve_precision

    out = train(tiny_config(tmp_path / "auto", shards_root, max_steps=1, mixed_precision="auto", sample={"every": 0}),
                tiny_components())
    recorded = OmegaConf.load(out / "config.yaml").mixed_precision
    device_type = "cuda" if torch.cuda.is_available() else "cpu"  # the loop trains on a GPU when there is one
    assert recorded == resolve_precision("auto", device_type) and recorded in ("no", "bf16")


def test_config_errors_stop_early(tmp_path, shards_root):
    with pytest.raises(ConfigError, match=r"reward_names=\['sharpness'\]: the model conditions on"):
        train(tiny_config(tmp_path / "a", shards_root, rewards=["sharpness"]), tiny_components())
    with pytest.raises(ConfigError, match="fp16"):
        train(tiny_config(tmp_path / "b", shards_root, mixed_precision="fp16", cpu=True), tiny_components())
    with pytest.raises(DataError, match=r"\['pickscore'\] are not in"):
        train(tiny_config(tmp_path / "c", shards_root, rewards=["pickscore"]), tiny_components(rewards=["pickscore"]))
    with pytest.raises(ConfigError, match="batch_size=6: must be divisible by grad_accum x processes = 1 x 4"):
        micro_batch_size(tiny_config(tmp_path, shards_root, batch_size=6), 4)
    with pytest.raises(ConfigError, match="batch_size=6: must be divisible by grad_accum=4"):
        tiny_config(tmp_path, shards_root, batch_size=6, grad_accum=4)
    with pytest.raises(ConfigError, match="stop_after=2"):
        tiny_config(tmp_path, shards_root, stop_after=2)
    with pytest.raises(DataError, match=r"shard\(s\) not found"):
        train(tiny_config(tmp_path / "d", tmp_path / "missing-{000000..000001}.tar"), tiny_components())


def test_nonfinite_gradients_skip_the_step_then_stop_the_run(tmp_path, shards_root):
    comps = tiny_components()
    before = {k: v.clone() for k, v in comps.model.state_dict().items()}
    comps.model.proj_out.register_forward_hook(lambda mod, args, out: out * float("nan"))
    cfg = tiny_config(tmp_path / "nan", shards_root, max_nonfinite_steps=3, sample={"every": 0})
    with pytest.raises(FloatingPointError, match="3 steps in a row with a non-finite gradient"):
        train(cfg, comps)
    state = comps.model.state_dict()  # on the GPU where there is one
    assert all(torch.equal(v.cpu(), before[k]) for k, v in state.items())  # no update was applied
    assert not (tmp_path / "nan" / "checkpoints").exists()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])  # on CUDA the second replays CUDA graphs
def test_compiled_training_matches_eager(tmp_path, shards_root, mode):
    runs = {}
    for compiled in (False, True):
        # fp32: under bf16 autocast fused and unfused kernels round differently, and Adam's first steps turn
        # any gradient near zero into a full +-lr update, so only fp32 compares at a tight tolerance
        cfg = tiny_config(tmp_path / f"c{compiled}", shards_root, max_steps=3, compile=compiled, compile_mode=mode,
                          mixed_precision="no", allow_tf32=False, sample={"every": 0})  # fmt: skip
        runs[compiled] = load_file(train(cfg, tiny_components()) / "checkpoints/checkpoint-3/model.safetensors")
    assert runs[True].keys() == runs[False].keys()  # compiled in place: the same checkpoint keys
    for k in runs[False]:
        torch.testing.assert_close(runs[True][k], runs[False][k], atol=1e-4, rtol=1e-3)


def test_compiled_training_pads_text_to_one_length(tmp_path, shards_root, monkeypatch):
    """Under ``compile`` every batch reaches the model with ``text_encoder.max_length`` tokens: a new caption length
    otherwise recompiles (a CUDA graph per length) and with dynamic shapes inductor's CPU backward of the U-Net
    failed on the second length.  ``compile`` itself is a no-op here: the padding is what is tested."""

    def seen_lengths(compiled):
        comps = tiny_components()
        monkeypatch.setattr(comps.model, "compile", lambda **kw: None)
        lengths = set()
        comps.model.register_forward_pre_hook(lambda mod, args: lengths.add(args[2].shape[1]))
        cfg = tiny_config(tmp_path / f"c{compiled}", shards_root, max_steps=6, compile=compiled, sample={"every": 0})
        train(cfg, comps)
        return lengths, cfg.text_encoder.max_length

    eager, max_length = seen_lengths(False)
    assert max(eager) < max_length  # eager: trimmed to the batch's longest caption
    assert seen_lengths(True) == ({max_length}, max_length)


def test_initial_weights_depend_on_the_seed_only(tmp_path, shards_root):
    """Two processes with one config train one model: the fresh transformer comes from ``seed``, not from the
    process's torch seed (which a library reseeds at random on import)."""
    from miro.train.loop import build_components

    def weights(seed, process_seed):
        torch.manual_seed(process_seed)
        model = build_components(tiny_config(tmp_path, shards_root, seed=seed)).model
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.equal(weights(0, 1), weights(0, 2))
    assert not torch.equal(weights(0, 1), weights(1, 1))


def test_init_from_starts_from_a_saved_transformer_and_refuses_another_architecture(tmp_path, shards_root):
    """``init_from``: a pipeline folder's (or a transformer folder's) weights replace the seed's, exactly; a
    saved model of another width or a folder without a transformer is a ConfigError, not a partial load."""
    from miro.train.loop import build_components

    def flat(model):
        return torch.cat([p.detach().flatten() for p in model.state_dict().values()])

    saved = build_components(tiny_config(tmp_path, shards_root, seed=1)).model
    saved.save_pretrained(tmp_path / "pipe" / "transformer")
    fresh = build_components(tiny_config(tmp_path, shards_root, seed=0)).model
    assert not torch.equal(flat(fresh), flat(saved))
    for folder in (tmp_path / "pipe", tmp_path / "pipe" / "transformer"):
        loaded = build_components(tiny_config(tmp_path, shards_root, seed=0, init_from=str(folder))).model
        assert torch.equal(flat(loaded), flat(saved))
    wider = ModelConfig(patch_size=2, width=64, depth=2, num_heads=2)
    with pytest.raises(ConfigError, match=r"init_from=.*pipe: its transformer is not the configured model .*shapes"):
        build_components(tiny_config(tmp_path, shards_root, model=wider, init_from=str(tmp_path / "pipe")))
    with pytest.raises(ConfigError, match=r"init_from=.*nowhere: no transformer/config.json"):
        build_components(tiny_config(tmp_path, shards_root, init_from=str(tmp_path / "nowhere")))


def test_init_from_deepens_the_condition_refiner_with_identity_blocks(tmp_path, shards_root):
    """``init_from`` into a deeper ``cond_refiner_depth``: the saved weights load, the new refiner blocks start as
    identity maps (the grown model's velocity equals the saved one's) and take gradient; a shallower refiner is
    still refused."""
    from miro.train.loop import build_components

    def model(depth, **kw):
        return build_components(tiny_config(tmp_path, shards_root, model=ModelConfig(
            patch_size=2, width=32, depth=2, num_heads=2, cond_refiner_depth=depth), **kw)).model

    saved = model(1, seed=1).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # no zero-initialised layer left, so every block's output reaches the velocity
        for p in saved.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    saved.save_pretrained(tmp_path / "pipe" / "transformer")
    grown = model(3, seed=0, init_from=str(tmp_path / "pipe")).eval()
    assert len(grown.cond_blocks) == 3
    assert torch.equal(grown.cond_blocks[0].attn.to_qkv.weight, saved.cond_blocks[0].attn.to_qkv.weight)
    assert grown.cond_blocks[1].attn.to_qkv.weight.abs().sum() > 0  # the new blocks keep their random inputs
    x, text = torch.randn(2, 3, 16, 16, generator=gen), torch.randn(2, 5, saved.config.text_dim, generator=gen)
    args = (x, torch.tensor([0.2, 0.7]), text, torch.ones(2, 5, dtype=torch.bool), torch.rand(2, saved.num_rewards, generator=gen))
    with torch.no_grad():
        assert torch.allclose(grown(*args), saved(*args), atol=1e-6)
        nudged = copy.deepcopy(grown)
        nudged.cond_blocks[2].mlp.fc2.bias.fill_(0.1)
        assert not torch.allclose(nudged(*args), saved(*args), atol=1e-3)  # the new blocks are in the path
    grown(*args).square().mean().backward()
    for i in (1, 2):
        assert grown.cond_blocks[i].attn.to_out.weight.grad.abs().sum() > 0
        assert grown.cond_blocks[i].mlp.fc2.weight.grad.abs().sum() > 0
    grown.save_pretrained(tmp_path / "deep" / "transformer")
    with pytest.raises(ConfigError, match=r"init_from=.*deep: its transformer is not the configured model .*unexpected"):
        model(1, init_from=str(tmp_path / "deep"))


def test_frozen_parameters_keep_their_initial_values_through_training(tmp_path, shards_root):
    """``freeze=[text_proj]``: the run trains every other weight and leaves the text projection at its init (in the
    checkpoint's weights and in the EMA); a prefix that names nothing is a ConfigError listing the modules."""
    init = tiny_components().model.state_dict()
    out = train(tiny_config(tmp_path / "run", shards_root, freeze=["text_proj"]), tiny_components())
    trained = load_file(out / "checkpoints/checkpoint-6/model.safetensors")
    ema = load_file(out / "final/transformer/diffusion_pytorch_model.safetensors")
    for weights in (trained, ema):
        assert torch.equal(weights["text_proj.weight"], init["text_proj.weight"])
        assert torch.equal(weights["text_proj.bias"], init["text_proj.bias"])
    assert not torch.equal(trained["text_norm.weight"], init["text_norm.weight"])  # the rest of the path trains
    with pytest.raises(ConfigError, match=r"freeze=\['text_projection'\]: 'text_projection' names no parameter .*text_proj"):
        train(tiny_config(tmp_path / "bad", shards_root, freeze=["text_projection"]), tiny_components())


def test_init_from_adds_the_frozen_text_path_closed(tmp_path, shards_root):
    """``init_from`` a U-Net without the frozen text path into one with it: every saved weight loads, the gate is
    zero (the velocity is the saved model's), and a missing weight of any other module is still refused."""
    from miro.models.config import UNetConfig
    from miro.train.loop import build_components

    def unet(frozen, **kw):
        cfg = ModelConfig(backbone="unet", unet=UNetConfig(block_out_channels=[8, 16], attention_head_dim=4,
                                                           norm_num_groups=4, cond_width=16, cond_heads=2,
                                                           frozen_text_path=frozen))  # fmt: skip
        return build_components(tiny_config(tmp_path, shards_root, model=cfg, **kw)).model.eval()

    saved = unet(False, seed=1)
    with torch.no_grad():
        for p in saved.parameters():
            p.add_(0.2 * torch.randn_like(p))
    saved.save_pretrained(tmp_path / "pipe" / "transformer")
    grown = unet(True, seed=0, init_from=str(tmp_path / "pipe"))
    assert torch.equal(grown.frozen_text_gate, torch.zeros(16)) and grown.frozen_text_map.abs().sum() > 0
    gen = torch.Generator().manual_seed(0)
    args = (torch.randn(2, 3, 16, 16, generator=gen), torch.tensor([0.2, 0.7]),
            torch.randn(2, 5, saved.config.text_dim, generator=gen), torch.ones(2, 5, dtype=torch.bool),
            torch.rand(2, saved.num_rewards, generator=gen))  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(grown(*args), saved(*args), rtol=0, atol=1e-6)
    grown.save_pretrained(tmp_path / "with" / "transformer")
    with pytest.raises(ConfigError, match=r"init_from=.*with: its transformer is not the configured model .*unexpected"):
        unet(False, init_from=str(tmp_path / "with"))


def test_resolution_must_be_a_multiple_of_the_conv_levels_stride(tmp_path, shards_root):
    """With a conv U-shape the tokens are patches of the deepest level: 16 px works for patch 2 and two
    levels (stride 4), three levels need 16 (patch 2 x 2^2 = 8 divides 16) and 12 px fails naming the key."""
    from miro.train.loop import build_components

    levels2 = ModelConfig(patch_size=2, width=32, depth=2, num_heads=2, conv_channels=8, conv_levels=2)
    assert build_components(tiny_config(tmp_path, shards_root, model=levels2)).model.spatial_stride == 4
    with pytest.raises(ConfigError, match=r"data.resolution=12: .*model.patch_size x 2\^\(model.conv_levels - 1\) = 1 x 8 = 8"):
        build_components(tiny_config(tmp_path, shards_root, model=replace(levels2, conv_levels=3), data={"resolution": 12}))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_run_picks_bf16_resumes_and_exports_a_cpu_pipeline(tmp_path, shards_root):
    """On a GPU: auto precision is bf16, a resumed run ends where the whole run ends (up to the order of
    floating-point reductions, which CUDA does not fix), and the export samples on the CPU."""
    from omegaconf import OmegaConf

    whole = train(tiny_config(tmp_path / "whole", shards_root), tiny_components())
    assert OmegaConf.load(whole / "config.yaml").mixed_precision == "bf16"
    assert np.isfinite(scalars(whole)["train/loss"]).all()
    split = tmp_path / "split"
    train(tiny_config(split, shards_root, stop_after=3), tiny_components())
    train(tiny_config(split, shards_root, resume="latest"), tiny_components(seed=123))
    a = load_file(whole / "checkpoints/checkpoint-6/model.safetensors")
    b = load_file(split / "checkpoints/checkpoint-6/model.safetensors")
    assert a.keys() == b.keys()
    diff = torch.cat([(a[k].float() - b[k].float()).flatten() for k in a]).norm()
    assert diff / torch.cat([a[k].float().flatten() for k in a]).norm() < 1e-3
    pipe = MiroPipeline.from_pretrained(whole / "final", text_encoder=TinyTextEncoder())
    images = pipe(["a red circle"], num_inference_steps=2, guidance_scale=0.0, output_type="np")
    assert images.shape == (1, 16, 16, 3) and np.isfinite(images).all()
