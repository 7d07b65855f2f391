"""Our RIN sampler and pipeline against the MIRO authors' own ``MiroPipeline.__call__`` (``miro-t2i`` 0.1.4).

Their package runs in a subprocess (``tests/models/miro_t2i_reference.py``; it is also named ``miro``).
The reference script gives their pipeline a tiny random FLAN-T5 (``t5/``) and a tiny random SDXL VAE (in an
HF cache, where their ``from_pretrained`` fetches ``stabilityai/sdxl-vae``), a tiny random checkpoint in
their layout, and records each call of its ``PIPELINE_CALLS`` (their default call, explicit targets /
negatives / guidance with two images per prompt, guidance 0, a negative guidance scale, the legacy network as
a variant): the noise, every network evaluation, every step's guided velocity, the final latents and images.

Here ``MiroRINPipeline`` replays each call from the same folders and seed and must give, in fp32, the same
noise, the same per-branch outputs and latents at every step and the same guided velocity (atol 1e-5), the
same final latents and decoded images (atol 1e-4) and the same uint8 images.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from miro.sampling.rin import authors_gammas
from miro.sampling.rin_pipeline import MiroRINPipeline
from tests.models.miro_t2i_reference import reference_or_skip

# their side runs with one thread (miro_t2i_reference); ours too, so both sum in the same order (with two threads
# the branch latents differed by 1.1e-5)
pytestmark = pytest.mark.usefixtures("one_torch_thread")
VELOCITY_ATOL = 1e-5
IMAGE_ATOL = 1e-4
VAE_SNAPSHOT = "hub/models--stabilityai--sdxl-vae/snapshots/" + "0" * 40


@pytest.fixture(scope="module")
def reference():
    return reference_or_skip()


def calls(ref):
    return {c["name"]: c for c in json.loads((ref / "pipeline_calls.json").read_text())}


def load_ours(ref, **load):
    return MiroRINPipeline.from_pretrained(
        ref / "pipeline", text_encoder=str(ref / "t5"), vae=str(ref / VAE_SNAPSHOT), **load
    )


def close(ours: torch.Tensor, theirs: np.ndarray, atol: float, what: str) -> None:
    theirs = torch.from_numpy(theirs)
    assert ours.shape == theirs.shape, f"{what}: shape {list(ours.shape)} vs theirs {list(theirs.shape)}"
    err = (ours.float().cpu() - theirs.float()).abs().max().item()
    assert err <= atol, f"{what}: max |ours - theirs| = {err:.3g} > {atol}"


NAMES = ("default", "explicit", "unguided", "negative_scale", "legacy")


@pytest.mark.parametrize("name", NAMES)
def test_pipeline_matches_theirs_step_by_step(reference, name):
    spec = calls(reference)[name]
    arrays = np.load(reference / "pipeline.npz")
    get = lambda k: arrays[f"{name}/{k}"]  # noqa: E731
    pipe = load_ours(reference, **spec["load"])
    kwargs = dict(spec["call"])
    seed = kwargs.pop("seed")
    steps = []

    def record(i, x, v, velocity):
        steps.append(
            (x.clone(), v.clone(), [(c, f.clone(), z.clone()) for c, f, z in velocity.branch_outputs])
        )

    guided = kwargs.get("guidance_scale", 7.0) > 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        final = pipe(
            **kwargs, generator=torch.Generator().manual_seed(seed), output_type="latent", callback=record
        )
        images = pipe(**kwargs, generator=torch.Generator().manual_seed(seed), output_type="numpy")
    said = [str(w.message) for w in caught if "without guidance" in str(w.message)]
    assert len(said) == (2 if kwargs.get("guidance_scale", 7.0) < 0 else 0), said
    n = kwargs["num_inference_steps"]
    assert len(steps) == n == get("v").shape[0]
    close(authors_gammas(n)[:-1], get("gamma"), 0.0, "gamma grid")
    b = final.shape[0]
    noise = torch.randn(final.shape, generator=torch.Generator().manual_seed(seed))
    close(noise, get("noise"), 0.0, "initial noise")
    for i, (x_next, v, branches) in enumerate(steps):
        assert len(branches) == (2 if guided else 1), f"step {i}: {len(branches)} branches"
        # their stacked batch: the positive branch's rows, then the negative branch's
        close(torch.cat([f for _, f, _ in branches]), get("F")[i], VELOCITY_ATOL, f"step {i} branch outputs")
        close(torch.cat([z for _, _, z in branches]), get("z")[i], VELOCITY_ATOL, f"step {i} branch latents")
        close(v, get("v")[i], VELOCITY_ATOL, f"step {i} guided velocity")
        if i + 1 < n:
            close(x_next, get("x")[i + 1][:b], IMAGE_ATOL, f"state after step {i}")
    close(final, get("final"), IMAGE_ATOL, "final latents")
    with torch.no_grad():
        decoded = pipe.vae.decode((final - pipe.latent_bias) / pipe.latent_scale).sample
    close(decoded, get("decoded"), IMAGE_ATOL, "decoded images")
    assert images.dtype == np.uint8 and images.shape == get("images").shape
    diff = np.abs(images.astype(int) - get("images").astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01, f"uint8 images differ at {(diff > 0).sum()} values"


def test_reference_calls_are_not_vacuous(reference):
    """The recorded calls exercise what they name: guidance changes the trajectory, the carried latents are
    fed back (none at the first evaluation only), and the explicit targets differ from the defaults."""
    arrays = np.load(reference / "pipeline.npz")
    for name in NAMES:
        assert arrays[f"{name}/prev_is_none"].tolist() == [True] + [False] * (len(arrays[f"{name}/v"]) - 1)
    f = arrays["default/F"]
    b = f.shape[1] // 2
    assert np.abs(f[:, :b] - f[:, b:]).max() > 1e-2  # the two branches differ
    assert arrays["explicit/F"].shape[1] == 4  # 2 images x 2 branches
    assert np.abs(arrays["unguided/v"] - arrays["unguided/F"]).max() == 0  # no guidance: v is F(c, s+)
