"""MiroRIN against the MIRO authors' own code (``miro-t2i`` 0.1.4), fp32, atol 1e-5.

Their package runs in a subprocess (``miro_t2i_reference.py``: their top-level package is also ``miro``): it
builds their ``CADRINTextCond`` + ``FlowPrecond`` at a tiny size with perturbed random weights, saves them in
their checkpoint layout and records one forward pass per case.  Here those folders are read with
``load_authors_checkpoint`` and the same inputs must give the same outputs:

* both network variants: ``main`` (the released models: condition cross-attention, self-conditioning) and
  ``legacy`` (condition tokens concatenated to the latents, no self-conditioning);
* the bare network with self-conditioning latents and all rewards; with no previous latents, a missing reward
  key and a NaN reward (their "dropped" reward); ``FlowPrecond`` with its zero latents and logvar head; a
  second ``FlowPrecond`` step fed the first step's latents, as their sampler chains them.

Skips (with pip's error) only when ``miro-t2i`` is neither installed nor installable.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from miro.models.rin import MiroRIN, load_authors_checkpoint, rin_state_dict_to_authors
from tests.models.miro_t2i_reference import reference_or_skip

VARIANTS = ("main", "legacy")
CASES = ("net_selfcond", "net_dropped", "precond", "precond_chain")
ATOL = 1e-5


@pytest.fixture(scope="module")
def reference():
    return reference_or_skip()


def case_inputs(arrays, case: str) -> dict:
    prefix = f"{case}/in/"
    ins = {k[len(prefix) :]: torch.from_numpy(arrays[k]) for k in arrays.files if k.startswith(prefix)}
    rewards = {k[len("reward.") :]: v for k, v in ins.items() if k.startswith("reward.")}
    return dict(
        y=ins["y"],
        gamma=ins["gamma"],
        text=ins["text_tokens_embeddings"],
        text_mask=ins["text_tokens_mask"],
        rewards=rewards,
        previous_latents=ins.get("previous_latents"),
    )


def run_ours(model: MiroRIN, case: str, ins: dict):
    fn = model.precondition if case.startswith("precond") else model
    with torch.no_grad():
        return fn(
            ins["y"], ins["gamma"], ins["text"], ins["text_mask"], ins["rewards"],
            previous_latents=ins["previous_latents"],
        )  # fmt: skip


def assert_close(ours: torch.Tensor, theirs: np.ndarray, what: str) -> None:
    theirs = torch.from_numpy(theirs)
    assert ours.shape == theirs.shape, f"{what}: shape {list(ours.shape)} vs theirs {list(theirs.shape)}"
    err = (ours.float() - theirs).abs().max().item()
    assert err <= ATOL, f"{what}: max |ours - theirs| = {err:.3g} > {ATOL}"


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_matches_authors(reference, variant, case):
    model = load_authors_checkpoint(reference / variant).model
    assert not model.training
    arrays = np.load(reference / f"{variant}.npz")
    ins = case_inputs(arrays, case)
    x, z = run_ours(model, case, ins)
    assert_close(x, arrays[f"{case}/out/x"], f"{variant}/{case} output")
    assert_close(z, arrays[f"{case}/out/z"], f"{variant}/{case} latents")
    if case == "precond":
        with torch.no_grad():
            assert_close(model.logvar(ins["gamma"]), arrays[f"{case}/out/logvar"], f"{variant} logvar")


def test_the_cases_exercise_what_they_name(reference):
    """The reference cases are not vacuous: self-conditioning, a dropped reward and the padding mask each
    change (or, for padded tokens, do not change) our output, so matching theirs tests those paths."""
    model = load_authors_checkpoint(reference / "main").model
    arrays = np.load(reference / "main.npz")
    ins = case_inputs(arrays, "net_selfcond")
    base, _ = run_ours(model, "net", ins)
    no_prev, _ = run_ours(model, "net", dict(ins, previous_latents=None))
    assert (base - no_prev).abs().max() > 1e-3
    dropped = dict(ins["rewards"], clip_score=torch.tensor([float("nan")] * 3))
    assert (base - run_ours(model, "net", dict(ins, rewards=dropped))[0]).abs().max() > 1e-3
    padded = ins["text"].clone()
    padded[0, 2:] += 5.0  # sample 0's tokens 2.. are padding
    out, _ = run_ours(model, "net", dict(ins, text=padded))
    assert torch.allclose(out, base, atol=1e-6, rtol=0)
    padded[0, 0] += 5.0
    assert (run_ours(model, "net", dict(ins, text=padded))[0] - base).abs().max() > 1e-3


def test_velocity_is_their_preconditioned_output_in_our_time(reference):
    """``velocity(x, t)`` at our noise level t is their ``FlowPrecond`` output at gamma = 1 - t."""
    model = load_authors_checkpoint(reference / "main").model
    arrays = np.load(reference / "main.npz")
    ins = case_inputs(arrays, "precond")
    with torch.no_grad():
        t = 1 - ins["gamma"].double()  # exact, so that 1 - t is their fp32 gamma again
        out = model.velocity(ins["y"], t, ins["text"], ins["text_mask"], ins["rewards"])
    assert_close(out.sample, arrays["precond/out/x"], "velocity")
    assert_close(out.latents, arrays["precond/out/z"], "velocity latents")


@pytest.mark.parametrize("variant", VARIANTS)
def test_weights_round_trip_to_their_layout_and_ours(reference, variant, tmp_path):
    """``rin_state_dict_to_authors`` rebuilds their file exactly (network and preconditioning keys), and
    ``save_pretrained`` / ``from_pretrained`` keep the outputs."""
    from safetensors.torch import load_file

    model = load_authors_checkpoint(reference / variant).model
    theirs = {
        k: v
        for k, v in load_file(str(reference / variant / "model.safetensors")).items()
        if k.startswith(("network.", "preconditioning."))
    }
    ours = rin_state_dict_to_authors(model)
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key
    model.save_pretrained(tmp_path)
    again = MiroRIN.from_pretrained(tmp_path).eval()
    arrays = np.load(reference / f"{variant}.npz")
    x, _ = run_ours(again, "net_selfcond", case_inputs(arrays, "net_selfcond"))
    assert_close(x, arrays["net_selfcond/out/x"], f"{variant} after save_pretrained")
