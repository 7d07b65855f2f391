"""The slider app without a browser: the form -> the pipeline call, the messages shown instead of a traceback
(empty prompt, values out of range, a bad pipeline folder), generation with its progress and cancel flag, the
download's content, sweeps."""

import json
import math
import shutil
import threading
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from miro.app.core import (
    AppError,
    CancelFlags,
    Cancelled,
    Form,
    Generation,
    Request,
    display_images,
    error_page_html,
    form_settings,
    generate,
    load_app_pipeline,
    make_request,
    prepare,
    rewards_table_html,
    sampling_steps,
    status_html,
    sweep,
    sweep_summary_html,
    sweep_targets,
    write_download,
)
from miro.sampling.settings import SamplingSettings
from miro.sampling.targets import reward_tensors
from tests.app.conftest import REFERENCE, WEIGHT_FREE, app_config

NAMES = WEIGHT_FREE  # the reference model's rewards, in its order


def form(**changes) -> Form:
    values = dict(
        prompt="a photo of a red circle",
        reward_targets={n: 1.0 for n in NAMES} | {"contrast": 0.25},
        negative_reward_targets={n: 0.0 for n in NAMES} | {"sharpness": 0.1},
        guidance_mode="decoupled", guidance_scale=7.0, text_guidance_scale=3.0, reward_guidance_scale=1.5,
        steps=4.0, sampler="heun", seed=5.0, num_images=3.0,
    )  # fmt: skip
    values.update(changes)
    return Form(**values)


# ------------------------------------------------------------------------------------------- form -> call
def test_a_decoupled_form_becomes_one_pipeline_call():
    base = SamplingSettings(guidance_interval=[0.1, 0.9], reward_guidance_weights={"contrast": 2.0})
    req = make_request(form(prompt="  a photo of a red circle "), base)
    assert req.prompt == "a photo of a red circle"
    assert req.seeds == [5, 6, 7]  # image k: seed + k (numbers arrive from the page as floats)
    s = req.settings
    assert s.reward_targets["contrast"] == 0.25 and s.negative_reward_targets["sharpness"] == 0.1
    assert (s.text_guidance_scale, s.reward_guidance_scale, s.steps, s.sampler) == (3.0, 1.5, 4, "heun")
    assert s.guidance_interval == [0.1, 0.9] and s.reward_guidance_weights == {"contrast": 2.0}  # kept from the config
    kwargs = req.pipe_kwargs()
    assert kwargs["settings"] is s and kwargs["num_images_per_prompt"] == 3
    assert kwargs["output_type"] == "pil" and kwargs["return_dict"] is True
    assert [g.initial_seed() for g in kwargs["generator"]] == [5, 6, 7]


def test_a_free_reward_is_the_null_token_in_both_branches_and_must_be_a_reward_of_the_model():
    s = form_settings(form(free=["contrast"]), SamplingSettings())
    assert s.reward_targets["contrast"] is None and s.negative_reward_targets["contrast"] is None
    assert s.reward_targets["sharpness"] == 1.0 and s.negative_reward_targets["sharpness"] == 0.1
    for targets, default in ((s.reward_targets, 1.0), (s.negative_reward_targets, 0.0)):
        _, mask = reward_tensors(targets, NAMES, 1, default)
        assert mask[0].tolist() == [n != "contrast" for n in NAMES]  # the null token where False
    with pytest.raises(AppError, match=r"free rewards \['aesthetic'\]: this model has \['sharpness'"):
        form_settings(form(free=["aesthetic"]), SamplingSettings())


def test_the_joint_mode_uses_one_scale_for_text_and_rewards():
    base = SamplingSettings(text_guidance_scale=3.0, reward_guidance_scale=1.0)  # the config's decoupled values
    s = form_settings(form(guidance_mode="joint", guidance_scale=4.5), base)
    assert (s.guidance_scale, s.text_guidance_scale, s.reward_guidance_scale) == (4.5, None, None)
    guidance = s.guidance(NAMES)
    assert guidance.text_scale == 4.5 and set(guidance.reward_scales) == {4.5}
    decoupled = form_settings(form(), base).guidance(NAMES)
    assert decoupled.text_scale == 3.0 and set(decoupled.reward_scales) == {1.5}


@pytest.mark.parametrize("prompt", ["", "   \n", None])
def test_an_empty_prompt_is_a_message_not_a_call(prompt):
    with pytest.raises(AppError, match="The prompt is empty: type what the images should show"):
        make_request(form(prompt=prompt), SamplingSettings())


@pytest.mark.parametrize(("changes", "message"), [
    ({"reward_targets": {"contrast": 1.5}}, "settings.reward_targets.contrast=1.5: must be in [0, 1]"),
    ({"steps": 0}, "steps=0: must be a whole number >= 1"),
    ({"steps": 2.5}, "steps=2.5: must be a whole number >= 1"),
    ({"num_images": 17}, "number of images=17: must be a whole number in 1..16"),
    ({"seed": -1}, "seed=-1: must be a whole number in 0.."),
    ({"sampler": "dpm"}, "settings.sampler='dpm': must be one of ['euler', 'heun', 'sde']"),
    ({"guidance_mode": "both"}, "guidance mode 'both': must be one of ['joint', 'decoupled']"),
    ({"text_guidance_scale": math.inf}, "settings.text_guidance_scale=inf: must be a finite number"),
])  # fmt: skip
def test_a_value_out_of_range_names_key_value_and_what_is_allowed(changes, message):
    with pytest.raises(AppError) as err:
        make_request(form(**changes), SamplingSettings(), max_images=16)
    assert str(err.value).startswith(message), str(err.value)


# ------------------------------------------------------------------------------------------- bad pipeline folder
def test_a_bad_pipeline_folder_says_what_is_wrong(tmp_path):
    with pytest.raises(AppError, match=r"pipeline=.*nowhere: no such folder"):
        load_app_pipeline(tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(AppError, match="a file, not a pipeline folder"):
        load_app_pipeline(tmp_path / "file.txt")
    with pytest.raises(AppError, match="not a saved MiroPipeline folder .no model_index.json"):
        load_app_pipeline(tmp_path)
    damaged = tmp_path / "damaged"
    shutil.copytree(REFERENCE, damaged)
    weights = damaged / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a cut download
    with pytest.raises(AppError, match="not a readable safetensors file"):
        load_app_pipeline(damaged)
    (damaged / "model_index.json").write_text("{not json")
    with pytest.raises(AppError, match="model_index.json: unreadable"):
        load_app_pipeline(damaged)


def test_prepare_turns_a_bad_config_for_this_model_into_a_message(tmp_path):
    with pytest.raises(AppError, match="no such folder"):
        prepare(app_config(pipeline=str(tmp_path / "nowhere")), tmp_path)
    with pytest.raises(AppError, match="reward 'pickscore', which this model was not trained with"):
        prepare(app_config(settings={"reward_targets": {"pickscore": 0.5}}), tmp_path)
    with pytest.raises(AppError, match=r"sweep.reward='aesthetic': this model has \['sharpness'"):
        prepare(app_config(sweep={"reward": "aesthetic"}), tmp_path)
    with pytest.raises(AppError, match=r"scorers=\['pickscore'\]: PickScore model: folder .* does not exist"):
        prepare(app_config(scorers={"pickscore": {"model": str(tmp_path / "nope")}}), tmp_path)  # real scorer, no weights


def test_the_error_page_shows_the_message_escaped_and_how_to_start():
    page = error_page_html("The app cannot start", "pipeline=<x>: no such folder")
    assert "pipeline=&lt;x&gt;: no such folder" in page and "<x>" not in page
    assert "python -m miro.app pipeline=&lt;folder&gt;" in page and "models/shapes_reference" in page
    assert 'data-kind="error"' in status_html("error", "boom") and "&lt;b&gt;" in status_html("error", "<b>")


# ------------------------------------------------------------------------------------------- generation
def test_the_initial_form_follows_the_config_and_the_model(state, tmp_path):
    from miro.demo.config import CLEAN_TARGETS

    start = state.initial_form()
    assert state.reward_names == NAMES and list(start.reward_targets) == NAMES
    # the reference model recommends the clean images' medians (model_index.json) with colourfulness and contrast
    # left free (they carry the object's colour): the sliders start there, those two ticked free
    free = ["colorfulness", "contrast"]
    assert start.free == free and set(start.negative_reward_targets.values()) == {0.0}
    assert start.reward_targets == {n: 1.0 if n in free else v for n, v in CLEAN_TARGETS.items()}
    s = form_settings(start, state.cfg.settings)
    assert s.reward_targets == {n: None if n in free else v for n, v in CLEAN_TARGETS.items()}
    assert s.negative_reward_targets == {n: None if n in free else 0.0 for n in NAMES}  # free in both branches
    assert (start.guidance_mode, start.text_guidance_scale, start.reward_guidance_scale) == ("decoupled", 3.0, 1.0)
    other = prepare(app_config(settings={"reward_targets": {"contrast": 0.2}, "text_guidance_scale": None},
                               guidance_mode="joint"), tmp_path)  # fmt: skip
    start = other.initial_form()
    assert start.reward_targets["contrast"] == 0.2 and start.reward_targets["sharpness"] == CLEAN_TARGETS["sharpness"]
    assert start.free == ["colorfulness"]  # a configured target overrides the recommendation to leave it free
    freed = prepare(app_config(settings={"reward_targets": {"sharpness": None}}), tmp_path).initial_form()
    assert freed.free == ["sharpness", "colorfulness", "contrast"]  # and a configured null frees one
    assert start.guidance_mode == "joint" and start.text_guidance_scale == 7.0  # unset: the joint scale


def test_generate_renders_measures_reports_steps_and_is_reproducible(state):
    steps = []
    req = make_request(form(num_images=2, sampler="euler"), state.cfg.settings)
    gen = generate(state.pipe, req, state.measurer, state.pipeline, 7, on_step=lambda d, t: steps.append((d, t)))
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert len(gen.images) == 2 and gen.images[0].size == (32, 32)
    assert list(gen.measured) == WEIGHT_FREE and all(len(v) == 2 for v in gen.measured.values())
    assert gen.metadata[1]["seed"] == 6 and gen.metadata[1]["reward_targets"]["contrast"] == 0.25
    assert gen.metadata[1]["negative_reward_targets"]["sharpness"] == pytest.approx(0.1) and gen.metadata[1]["steps"] == 4
    # image k is the single image of seed + k (what `python -m miro.sampling ... seeds=[6]` draws)
    alone = state.pipe(req.prompt, settings=req.settings, generator=torch.Generator().manual_seed(6))[0]
    assert np.array_equal(np.asarray(alone), np.asarray(gen.images[1]))
    assert "progress_bar" not in vars(state.pipe)  # the step hook is gone


def test_cancel_stops_generation_at_the_next_step(state):
    req = make_request(form(num_images=1), state.cfg.settings)
    flag = threading.Event()
    seen = []

    def on_step(done, total):
        seen.append(done)
        if done == 2:
            flag.set()

    with pytest.raises(Cancelled):
        generate(state.pipe, req, state.measurer, on_step=on_step, cancel=flag)
    assert seen == [1, 2]
    with pytest.raises(Cancelled):  # already set: nothing runs
        with sampling_steps(state.pipe, 4, cancel=flag):
            pytest.fail("entered")
    assert "progress_bar" not in vars(state.pipe)


def test_cancel_flags_belong_to_a_session():
    flags = CancelFlags()
    assert flags.cancel("a") is False
    first = flags.start("a")
    assert flags.cancel("b") is False and not first.is_set()
    assert flags.cancel("a") is True and first.is_set()
    second = flags.start("a")
    flags.finish("a", first)  # an old job's finish leaves the new flag
    assert flags.cancel("a") is True and second.is_set()
    flags.finish("a", second)
    assert flags.cancel("a") is False


def test_the_download_holds_the_images_and_their_settings_as_json(state, tmp_path):
    req = make_request(form(num_images=2, seed=3), state.cfg.settings)
    gen = generate(state.pipe, req, state.measurer, state.pipeline, index=12)
    path = write_download(gen, tmp_path)
    assert path.name == "miro_images_0012_s3.zip"
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["00000_s3.json", "00000_s3.png", "00001_s4.json", "00001_s4.png", "settings.json"]
        settings = json.loads(archive.read("settings.json"))
        meta = json.loads(archive.read("00001_s4.json"))
        png = Image.open(archive.open("00001_s4.png"))
        assert np.array_equal(np.asarray(png), np.asarray(gen.images[1]))  # lossless, as generated
    assert settings["prompt"] == "a photo of a red circle" and settings["seeds"] == [3, 4]
    assert settings["pipeline"] == str(REFERENCE)
    assert settings["settings"]["reward_targets"]["contrast"] == 0.25 and settings["settings"]["sampler"] == "heun"
    assert settings["images"][1]["file"] == "00001_s4.png" and settings["images"][1]["measured"] == meta["measured"]
    assert meta["seed"] == 4 and meta["prompt"] == "a photo of a red circle" and meta["nfe"] > 0
    assert meta["measured"]["contrast"] == pytest.approx(gen.measured["contrast"][1])
    assert settings["measured_mean"]["contrast"] == pytest.approx(np.mean(gen.measured["contrast"]))


def test_the_rewards_table_lists_every_image_the_targets_and_the_mean():
    req = Request("p", SamplingSettings(), [4, 5])
    meta = [{"reward_targets": {"contrast": 0.9}}] * 2
    gen = Generation(3, req, [None, None], meta, {"contrast": [0.1, 0.3], "alignment": [None, 1.0]}, "pipe", 1.0)
    table = rewards_table_html(gen)
    assert 'data-generation="3"' in table
    assert '<td data-reward="contrast" data-image="1">0.3</td>' in table
    assert '<td data-reward="contrast" data-role="mean">0.2</td>' in table
    assert '<td data-reward="contrast" data-role="target">0.9</td>' in table
    assert '<td data-reward="alignment" data-image="0">n/a</td>' in table  # not measurable: NaN
    assert '<td data-reward="alignment" data-role="target">-</td>' in table  # not a reward of the model
    free = Generation(3, req, [None, None], [{"reward_targets": {"contrast": None}}] * 2, {"contrast": [0.1, 0.3]}, "p", 1.0)
    assert '<td data-reward="contrast" data-role="target">free</td>' in rewards_table_html(free)


def test_images_are_shown_enlarged_by_a_whole_factor():
    image = Image.fromarray(np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3))
    shown = display_images([image, image.resize((256, 256))], 192)
    assert shown[0].size == (192, 192) and shown[1].size == (256, 256)
    assert np.array_equal(np.asarray(shown[0])[::6, ::6], np.asarray(image))  # nearest neighbour


# ------------------------------------------------------------------------------------------- sweeps
def test_sweep_targets():
    assert sweep_targets(0.0, 1.0, 5) == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(AppError, match="must satisfy 0 <= from < to <= 1"):
        sweep_targets(0.6, 0.2, 3)
    with pytest.raises(AppError, match="number of targets=1"):
        sweep_targets(0.0, 1.0, 1)


def test_a_sweep_varies_one_reward_measures_it_and_writes_its_folder(state, tmp_path):
    steps = []
    view = sweep(state.pipe, form(sampler="euler"), state.cfg.settings, state.measurer, "contrast", [0.1, 0.5, 0.9], 1,
                 tmp_path / "sweep", on_step=lambda d, t: steps.append((d, t)))  # fmt: skip
    assert steps[-1] == (4, 4)  # one pipeline call of 3 images
    scored = view.scored
    assert list(scored.scores) == ["contrast"] and scored.scores["contrast"].shape == (3, 1)
    assert scored.sweep.fixed_targets["sharpness"] == 1.0 and scored.sweep.seeds == [5]
    assert view.plot.is_file() and view.grid.size[1] > 3 * 32
    with zipfile.ZipFile(view.archive) as archive:
        names = set(archive.namelist())
        data = json.loads(archive.read("sweep.json"))
    assert {"sweep.json", "plot.png", "grid.png", "images/t00_s5.png", "images/t02_s5.png"} <= names
    assert data["reward"] == "contrast" and data["targets"] == [0.1, 0.5, 0.9] and "summary" in data
    html = sweep_summary_html(view)
    assert 'data-reward="contrast"' in html and "data-spearman=" in html
    every = sweep(state.pipe, form(sampler="euler", free=["contrast", "low_noise"]), state.cfg.settings, state.measurer,
                  "contrast", [0.0, 1.0], 1, tmp_path / "all", plot_all=True)  # fmt: skip
    # the swept reward is steered even when the form frees it; the other free ones stay free
    assert every.scored.sweep.fixed_targets["low_noise"] is None and every.scored.sweep.fixed_targets["sharpness"] == 1.0
    negatives = every.scored.sweep.settings["negative_reward_targets"]
    assert negatives["low_noise"] is None and negatives["contrast"] == 0.0, negatives
    assert list(every.scored.scores) == ["contrast", "sharpness", "low_noise", "colorfulness", "alignment"]


def test_a_sweep_of_a_reward_the_model_lacks_is_a_message(state, tmp_path):
    with pytest.raises(AppError, match=r"reward 'aesthetic': this model has \['sharpness'"):
        sweep(state.pipe, form(), state.cfg.settings, state.measurer, "aesthetic", [0.0, 1.0], 1, tmp_path)
    with pytest.raises(AppError, match="The prompt is empty"):
        sweep(state.pipe, form(prompt=""), state.cfg.settings, state.measurer, "contrast", [0.0, 1.0], 1, tmp_path)
