"""Cohort test-time RL (miro.testtime.ttrl): Flow-GRPO on a LoRA raises a reward it is shown, the adapter round-trips,
NFE-eq is counted as the network really ran, lr = 0 changes nothing, and bad arguments fail clearly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from miro.models.config import AutoencoderConfig, TextEncoderConfig
from miro.models.lora import LoraSpec
from miro.sampling.sampler import guided_velocity
from miro.testtime.render import Renderer
from miro.testtime.sde import sde_rollout
from miro.testtime.ttrl import (
    HISTORY_FIELDS,
    adapters_disabled,
    consensus_scores,
    group_advantages,
    iteration_advantages,
    ttrl_adapt,
)
from miro.testtime.verifier import Verifier
from miro.utils.config import ConfigError
from tests.sampling.conftest import text_encoder, tiny_transformer  # noqa: F401
from tests.testtime.conftest import SETTINGS, Brightness, RowCounter

PROMPTS = ["a red circle", "two blue squares"]
SMALL = {
    "lora": LoraSpec(rank=4, alpha=4.0, targets="attention_mlp"),
    "settings": SETTINGS,
    "progress": False,
}


def make_pipe(text_encoder):  # noqa: F811
    """A fresh tiny pipeline (the session's ``tiny_pipe`` must not carry an adapter into other tests)."""
    from miro.sampling.pipeline import MiroPipeline

    pipe = MiroPipeline(transformer=tiny_transformer(), scheduler=FlowMatchEulerDiscreteScheduler(shift=2.0),
                        text_encoder_config=TextEncoderConfig(kind="minilm", max_length=16),
                        autoencoder_config=AutoencoderConfig(kind="identity"), num_bins=8, text_encoder=text_encoder)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def pipe(text_encoder):  # noqa: F811
    return make_pipe(text_encoder)


def ode_samples(pipe, n=8):
    """The settings' ODE samples of seeds 100..100+n for every prompt: [P * n, 3, H, W]."""
    r = Renderer(pipe, SETTINGS)
    return torch.cat(
        [r.render(p, torch.cat([r.noise(100 + j) for j in range(n)]), r.default)[0] for p in PROMPTS]
    )


def sde_samples(pipe, n=16, steps=4):
    """SDE rollouts (the trained policy) of fixed noises for every prompt."""
    r = Renderer(pipe, SETTINGS)
    out = []
    for p in PROMPTS:
        g = torch.Generator().manual_seed(123)
        noise = torch.randn((n, *r.latent_shape), generator=g)
        vel = guided_velocity(r.model, r.conditions(p, [r.default] * n), r.guidance())
        out.append(r.decode(sde_rollout(vel, noise, r.sigmas(steps), 0.7, g).final))
    return torch.cat(out)


def test_ttrl_raises_the_monitored_reward_over_the_base_model(pipe):
    """Brightness as an external monitor (M3): after 16 rounds the SDE policy's samples of held-fixed noises are
    brighter by > 0.02 (measured +0.038..+0.072 over ten seeds) and the ODE samples of fixed seeds by > 0.005
    (+0.020 at this seed; nine of ten seeds gain, the ODE is not what GRPO optimises)."""
    base_sde, base_ode = sde_samples(pipe).mean().item(), ode_samples(pipe).mean().item()
    result = ttrl_adapt(pipe, PROMPTS, monitor="rewards", verifier=Verifier([Brightness()]), group_size=8,
                        iterations=16, train_steps=4, lr=3e-3, kl_beta=0.01, seed=0, **SMALL)  # fmt: skip
    assert sde_samples(pipe).mean().item() > base_sde + 0.02
    assert ode_samples(pipe).mean().item() > base_ode + 0.005
    means = [h["monitor_mean"] for h in result.history]
    assert np.mean(means[-4:]) > np.mean(means[:4]) + 0.02
    with adapters_disabled(pipe.transformer):  # the base weights were never touched
        assert ode_samples(pipe).mean().item() == pytest.approx(base_ode, abs=1e-6)


def test_saved_adapter_reloads_and_reproduces_the_adapted_samples(pipe, text_encoder, tmp_path):  # noqa: F811
    result = ttrl_adapt(pipe, PROMPTS, monitor="rewards", verifier=Verifier([Brightness()]), group_size=4,
                        iterations=2, train_steps=2, lr=1e-2, out_dir=tmp_path, save_images=1, **SMALL)  # fmt: skip
    adapted = ode_samples(pipe, 4)
    assert result.adapter_folder == tmp_path / "adapter"
    fresh = make_pipe(text_encoder)
    base = ode_samples(fresh, 4)
    assert not torch.equal(adapted, base)
    fresh.load_lora(result.adapter_folder, "ttrl")
    assert torch.equal(ode_samples(fresh, 4), adapted)
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["adapter_name"] == "ttrl" and len(saved["history"]) == 2
    assert json.loads((tmp_path / "trace.json").read_text())["method"] == "ttrl"
    assert json.loads((tmp_path / "adapter" / "lora.json").read_text())["method"] == "ttrl"
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["00_adapted.png", "00_base.png"]


def test_history_fields_and_tracking_with_the_intrinsic_monitor(pipe):
    """M1 with a tracked external reward: every history field, the agreement a Spearman in [-1, 1], one trace
    search per (iteration, prompt), and the judge run with the adapter disabled."""
    seen = []
    from peft.tuners.tuners_utils import BaseTunerLayer

    class Track(Brightness):
        def score(self, images, prompts):
            seen.append(
                all(m.disable_adapters for m in pipe.transformer.modules() if isinstance(m, BaseTunerLayer))
            )
            return super().score(images, prompts)

    result = ttrl_adapt(pipe, PROMPTS, monitor="intrinsic", monitor_options={"draws": 1, "rewards": ["sharpness"]},
                        track=Verifier([Track()]), group_size=3, iterations=2, prompts_per_iteration=1,
                        train_steps=2, lr=1e-3, **SMALL)  # fmt: skip
    assert len(result.history) == 2 and len(result.trace.searches) == 2
    for row in result.history:
        assert set(HISTORY_FIELDS) <= set(row)
        assert (
            -1.0 <= row["agreement"] <= 1.0
            and np.isfinite(row["track_mean"])
            and np.isfinite(row["monitor_mean"])
        )
        assert row["kl"] >= 0 and 0 <= row["clip_fraction"] <= 1 and row["nfe"] > 0 and row["wall_time"] > 0
    assert [row["prompts"] for row in result.history] in (
        [[PROMPTS[0]], [PROMPTS[1]]],
        [[PROMPTS[1]], [PROMPTS[0]]],
    )
    assert seen == [True, True]
    assert result.history[-1]["nfe_total"] == pytest.approx(result.trace.nfe)
    cand = result.trace.searches[0].candidates[0]
    assert {"intrinsic_sharpness", "rubric"} <= set(cand.rewards) and "track" in cand.extra
    assert pipe.transformer.active_adapters() == ["ttrl"]


def test_nfe_accounting_equals_a_hand_count(pipe):
    """One prompt, G = 2, T = 2 SDE steps, joint guidance (2 rows per image and step), two inner epochs, a KL:
    rollout 2 x 2 x 2 = 8 forwards; with final_step="sde" per epoch 8 forwards with grad + 8 x 2 backward = 24,
    twice = 48, and the frozen reference once, 8: 64 NFE-eq; with final_step="ode" (the default) the last step
    is not trained: per epoch 4 + 8 = 12, twice 24, reference 4: 36.  The intrinsic monitor adds its declared
    2 x rewards x draws per image: 2 x 1 x 1 x 2 images = 4 (no rubric).  The transformer's real rows, counted by
    hooks, agree."""
    rows = RowCounter(pipe.transformer)
    try:
        result = ttrl_adapt(pipe, PROMPTS[:1], monitor="rewards", verifier=Verifier([Brightness()]), group_size=2,
                            iterations=1, train_steps=2, inner_epochs=2, kl_beta=0.02, lr=1e-3, final_step="sde",
                            **SMALL)  # fmt: skip
        assert result.nfe == 64 and result.history[0]["nfe"] == 64
        assert (rows.forward, rows.backward, rows.nfe()) == (32, 16, 64)
        rows.forward = rows.backward = 0
        pipe.unload_lora("ttrl")
        result = ttrl_adapt(pipe, PROMPTS[:1], monitor="rewards", verifier=Verifier([Brightness()]), group_size=2,
                            iterations=1, train_steps=2, inner_epochs=2, kl_beta=0.02, lr=1e-3, **SMALL)  # fmt: skip
        assert result.nfe == 36 and (rows.forward, rows.backward, rows.nfe()) == (20, 8, 36)
        rows.forward = rows.backward = 0
        pipe.unload_lora("ttrl")
        result = ttrl_adapt(pipe, PROMPTS[:1], monitor="intrinsic", group_size=2, iterations=1, train_steps=2,
                            monitor_options={"draws": 1, "rewards": ["aesthetic"], "rubric": False}, kl_beta=0.0,
                            lr=1e-3, **SMALL)  # fmt: skip
        assert result.nfe == 8 + 4 + 12  # rollout, monitor, one epoch of the one trained step, no reference
        assert rows.nfe() == 24
        rows.forward = rows.backward = 0
        pipe.unload_lora("ttrl")
        # a noise window of one step in three: rollout 2 x 3 x 2 = 12, one trained step per epoch 4 + 8, twice 24,
        # the reference of that step 4: 40
        result = ttrl_adapt(pipe, PROMPTS[:1], monitor="rewards", verifier=Verifier([Brightness()]), group_size=2,
                            iterations=1, train_steps=3, sde_steps=1, inner_epochs=2, kl_beta=0.02, lr=1e-3,
                            **SMALL)  # fmt: skip
        assert result.nfe == 40 and (rows.forward, rows.backward, rows.nfe()) == (24, 8, 40)
        assert result.trace.options["sde_steps"] == 1
    finally:
        rows.close()


def test_zero_learning_rate_changes_nothing(pipe):
    before = ode_samples(pipe, 4)
    state = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    result = ttrl_adapt(pipe, PROMPTS, monitor="rewards", verifier=Verifier([Brightness()]), group_size=3,
                        iterations=2, train_steps=2, lr=0.0, **SMALL)  # fmt: skip
    after = pipe.transformer.state_dict()
    assert set(after) - set(state) and all(torch.equal(after[k], v) for k, v in state.items() if k in after)
    lora_state = {k: v.clone() for k, v in after.items() if "lora_" in k}
    assert torch.equal(ode_samples(pipe, 4), before)
    assert all(h["kl"] == 0 for h in result.history)  # the adapter (B = 0) never moves from the frozen model
    assert all(torch.equal(pipe.transformer.state_dict()[k], v) for k, v in lora_state.items())


def test_consensus_monitor_and_group_advantages(pipe):
    imgs = torch.zeros(4, 3, 2, 2)
    imgs[1] += 0.1
    imgs[2] += 0.2
    imgs[3] += 1.0
    s = consensus_scores(imgs)
    assert s[1] == 0.0 and s[3] == min(s)  # the medoid scores 0; the outlier least
    adv = group_advantages(np.array([1.0, 2.0, 3.0, np.nan]))
    assert (
        adv[3] == 0 and adv[:3].mean() == pytest.approx(0) and adv[2] == pytest.approx(np.sqrt(1.5), rel=1e-3)
    )
    assert not np.any(group_advantages(np.ones(4)))
    result = ttrl_adapt(pipe, PROMPTS[:1], monitor="consensus", group_size=3, iterations=1, train_steps=2,
                        lr=1e-3, **SMALL)  # fmt: skip
    assert result.trace.verifier["monitor"] == "consensus" and max(result.trace.searches[0].candidates,
                                                                   key=lambda c: c.score).score == 0.0  # fmt: skip


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"group_size": 1}, "group_size=1"),
        ({"monitor": "votes"}, "monitor='votes'.*intrinsic"),
        ({"monitor": "rewards"}, "monitor='rewards' needs verifier="),
        ({"prompts": []}, "prompts=\\[\\]"),
        ({"prompts": "a red circle"}, "prompts='a red circle'"),
        ({"train_steps": 0}, "train_steps=0"),
        ({"sde_noise": -0.1}, "sde_noise=-0.1"),
        ({"sde_noise": 0.0}, "sde_noise=0.0.*ODE"),
        ({"monitor_options": {"draw": 2}}, "unknown keys \\['draw'\\]"),
        ({"monitor_options": {"rewards": [], "rubric": False}}, "rubric is the whole monitor, but rubric=False"),
        ({"prompts": ["a photo"], "monitor_options": {"rewards": []}}, "no cohort prompt has rubric words"),
        ({"monitor_options": {"rubric_weight": -1}}, "rubric_weight=-1: must be a number >= 0"),
        ({"monitor_options": {"rubric_aggregate": "max"}}, "rubric.aggregate='max'"),
        ({"monitor": "consensus", "max_kl": 0}, "max_kl=0: must be a number > 0 or None"),
        ({"monitor": "consensus", "groups_per_step": 0}, "groups_per_step=0"),
        ({"monitor": "consensus", "train_steps": 4, "sde_steps": 4}, "sde_steps=4: must be null or an integer in \\[1, 3\\]"),
        ({"monitor": "consensus", "sde_steps": 0}, "sde_steps=0"),
        ({"monitor": "consensus", "advantage_std": "batch"}, "advantage_std='batch'.*global"),
        ({"monitor": "rewards", "verifier": Verifier([Brightness()]), "track": Verifier([Brightness()])},
         "\\['brightness'\\] are also read by the monitor"),
    ],
)  # fmt: skip
def test_bad_arguments_fail_clearly_and_leave_no_adapter(pipe, kwargs, match):
    kwargs = {"prompts": PROMPTS, **kwargs}
    with pytest.raises(ConfigError, match=match):
        ttrl_adapt(pipe, kwargs.pop("prompts"), **kwargs, **SMALL)
    assert not getattr(pipe.transformer, "peft_config", None)


def test_a_tracked_monitor_reward_is_allowed_when_not_held_out(pipe):
    result = ttrl_adapt(pipe, PROMPTS[:1], monitor="rewards", verifier=Verifier([Brightness()]),
                        track=Verifier([Brightness()]), track_held_out=False, group_size=2, iterations=1,
                        train_steps=1, lr=1e-3, final_step="sde", **SMALL)  # fmt: skip
    assert result.history[0]["agreement"] == pytest.approx(1.0)


def test_one_training_step_needs_a_stochastic_last_step(pipe):
    from miro.utils.config import ConfigError

    with pytest.raises(ConfigError, match="train_steps=1: must be >= 2 with final_step='ode'"):
        ttrl_adapt(pipe, PROMPTS[:1], monitor="consensus", group_size=2, iterations=1, train_steps=1, **SMALL)
    with pytest.raises(ConfigError, match="final_step='euler'"):
        ttrl_adapt(pipe, PROMPTS[:1], monitor="consensus", group_size=2, iterations=1, final_step="euler", **SMALL)
    assert not getattr(pipe.transformer, "peft_config", None)


def test_the_rubric_alone_as_the_intrinsic_monitor_and_its_weight(pipe):
    """``rewards=[]``: the monitor reads only the rubric (its score is the rubric's z-score); with the ratios on,
    ``rubric_weight`` scales the rubric's share of the score: score = z_ratio + w z_rubric, exactly."""
    only = ttrl_adapt(pipe, PROMPTS[:1], monitor="intrinsic", monitor_options={"draws": 1, "rewards": []},
                      group_size=3, iterations=1, train_steps=2, lr=0.0, **SMALL)  # fmt: skip
    assert only.trace.verifier["rewards"] == ["rubric"]
    cands = only.trace.searches[0].candidates
    assert set(cands[0].rewards) == {"rubric"}
    pipe.unload_lora("ttrl")
    opts = {"draws": 1, "rewards": ["sharpness"], "rubric_weight": 3.0}
    both = ttrl_adapt(pipe, PROMPTS[:1], monitor="intrinsic", monitor_options=opts, group_size=3, iterations=1,
                      train_steps=2, lr=0.0, **SMALL)  # fmt: skip
    cands = both.trace.searches[0].candidates
    raw = np.array([[c.rewards["intrinsic_sharpness"], c.rewards["rubric"]] for c in cands])
    z = (raw - raw.mean(0)) / raw.std(0, ddof=1)  # calibrated on the first iteration's group
    np.testing.assert_allclose([c.score for c in cands], z[:, 0] + 3.0 * z[:, 1], rtol=1e-6, atol=1e-9)


def test_max_kl_undoes_the_iteration_that_crossed_it_and_stops(pipe):
    """The first iteration's later groups are updated by an adapter that already moved (KL > 0 > the bound): the
    run stops there, with the adapter back at its initial state (B = 0: the frozen model's samples)."""
    base = ode_samples(pipe, 2)
    result = ttrl_adapt(pipe, PROMPTS, monitor="rewards", verifier=Verifier([Brightness()]), group_size=3,
                        iterations=5, train_steps=2, lr=1e-2, max_kl=1e-12, **SMALL)  # fmt: skip
    assert len(result.history) == 1 and result.history[0]["stopped"] == "max_kl" and result.history[0]["kl"] > 0
    assert torch.equal(ode_samples(pipe, 2), base)
    assert result.options["max_kl"] == 1e-12


def test_callback_sees_every_row_may_sample_and_stops_the_run(pipe, text_encoder):  # noqa: F811
    """A callback that samples from the adapted model between iterations leaves the adaptation as it was (the
    same history as without a callback), and a true return stops the run after that iteration."""
    kw = {"monitor": "rewards", "verifier": Verifier([Brightness()]), "group_size": 3, "iterations": 3,
          "train_steps": 2, "lr": 1e-2, **SMALL}  # fmt: skip
    plain = ttrl_adapt(pipe, PROMPTS, **kw)
    seen = []

    def evaluate(row):
        seen.append((row["iteration"], ode_samples(other, 1).mean().item()))
        return False

    other = make_pipe(text_encoder)
    watched = ttrl_adapt(other, PROMPTS, callback=evaluate, **kw)
    assert [i for i, _ in seen] == [0, 1, 2] and all(r["stopped"] is None for r in watched.history)
    assert [r["monitor_mean"] for r in watched.history] == [r["monitor_mean"] for r in plain.history]
    assert torch.equal(ode_samples(other, 2), ode_samples(pipe, 2))
    third = make_pipe(text_encoder)
    stopped = ttrl_adapt(third, PROMPTS, callback=lambda row: row["iteration"] == 1, **kw)
    assert [r["stopped"] for r in stopped.history] == [None, "callback"]


def test_global_advantages_share_the_rounds_std():
    """Flow-GRPO's global_std: each group centred on its own mean, all divided by the std of the round's scores, so
    a group whose scores barely differ keeps small advantages (its own std would blow them up to unit size)."""
    tight, wide = np.array([1.0, 1.01, 0.99]), np.array([0.0, 2.0, 4.0, np.nan])
    g_tight, g_wide = iteration_advantages([tight, wide], "group")
    assert np.abs(g_tight).max() > 1.2  # about unit std (sqrt 1.5 less the 1e-4 offset): 0.01 blown up
    assert np.array_equal(g_wide, group_advantages(wide))
    scale = np.std([1.0, 1.01, 0.99, 0.0, 2.0, 4.0])  # 1.29
    a_tight, a_wide = iteration_advantages([tight, wide], "global")
    np.testing.assert_allclose(a_tight, (tight - 1.0) / (scale + 1e-4))
    np.testing.assert_allclose(a_wide[:3], np.array([-2.0, 0.0, 2.0]) / (scale + 1e-4))
    assert a_wide[3] == 0 and np.abs(a_tight).max() < 0.01
    assert not np.any(iteration_advantages([np.ones(3), np.full(2, 5.0)], "global")[0])
    with pytest.raises(ConfigError, match="advantage_std='z'"):
        iteration_advantages([tight], "z")


def test_groups_per_step_accumulates_the_mean_gradient_of_the_groups(pipe, monkeypatch):
    """groups_per_step=None makes one optimizer step per round on the mean of its groups' gradients: at lr 0 (the
    rollouts and the adapter identical in both runs) the one accumulated gradient equals the mean of the two
    per-group gradients, and the optimizer steps once instead of twice."""
    seen = []
    original = torch.optim.AdamW.step

    def record(self, *args, **kwargs):
        seen.append([p.grad.detach().clone() for group in self.param_groups for p in group["params"]
                     if p.grad is not None])  # fmt: skip
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", record)
    common = {"monitor": "rewards", "verifier": Verifier([Brightness()]), "group_size": 3, "iterations": 1,
              "train_steps": 2, "lr": 0.0, "kl_beta": 0.0, "max_grad_norm": None, "seed": 3, **SMALL}  # fmt: skip
    per_group = ttrl_adapt(pipe, PROMPTS, **common)
    pipe.unload_lora("ttrl")
    per_group_grads, seen[:] = list(seen), []
    pooled = ttrl_adapt(pipe, PROMPTS, groups_per_step=None, **common)
    assert len(per_group_grads) == 2 and len(seen) == 1
    assert per_group.options["groups_per_step"] == 1 and pooled.options["groups_per_step"] is None
    assert pooled.nfe == per_group.nfe  # the same rows run, only the steps differ
    assert any(g.abs().max() > 0 for g in seen[0])
    for a, b, got in zip(*per_group_grads, seen[0]):
        torch.testing.assert_close(got, (a + b) / 2, rtol=1e-4, atol=1e-7)
