import json

import numpy as np
import pytest
from PIL import Image

from miro.eval.cli import main, run_generate
from miro.eval.config import EvalConfig
from miro.eval.geneval.detector import DetectorUnavailable
from miro.eval.geneval.layout import iter_prompt_folders
from miro.eval.geneval.prompts import MetadataError, generate_suite, load_metadata
from miro.eval.provenance import SettingsMismatch
from miro.eval.rewards import score_folder
from miro.utils.config import ConfigError, to_typed
from tests.eval.test_rewards import Brightness, make_run


def test_prompts_command_writes_the_drawn_set(tmp_path):
    out = tmp_path / "p.jsonl"
    main(["prompts", f"prompts.out={out}", "prompts.seed=11", "prompts.per_task=4"])
    assert load_metadata(out) == generate_suite(seed=11, per_task=4)


def test_config_errors_name_the_key(tmp_path, capsys):
    with pytest.raises(SystemExit, match="command='nope'"):
        main(["nope"])
    with pytest.raises(SystemExit, match="image_dir=''.*required by `summary`"):
        main(["summary"])
    with pytest.raises(SystemExit, match=r"evaluate.rules.threshold=2.0: must be in \[0, 1\]"):
        main(["summary", f"image_dir={tmp_path}", "evaluate.rules.threshold=2"])
    with pytest.raises(SystemExit, match="detector.name='yolo'"):
        main(["summary", f"image_dir={tmp_path}", "detector.name=yolo"])
    with pytest.raises(SystemExit, match="generate.shard_index=3"):
        main(["summary", f"image_dir={tmp_path}", "generate.shard_index=3", "generate.num_shards=2"])
    with pytest.raises(SystemExit, match="compare.runs"):
        main(["compare", "compare.runs=[a]"])
    with pytest.raises(SystemExit, match=r"^error: .*facebook/mask2former-swin-small-coco-instance") as stop:
        main(["evaluate", f"image_dir={tmp_path}", f"detector.checkpoint={tmp_path / 'no_such_folder'}"])
    assert isinstance(stop.value.__context__, DetectorUnavailable)  # the one-line error names its cause
    with pytest.raises(SystemExit, match=r"^error: .*(line|prompt metadata file not found)") as stop:
        main(["prompts", f"prompts.out={tmp_path / 'x.jsonl'}", f"prompts.metadata={tmp_path / 'none.jsonl'}"])
    assert isinstance(stop.value.__context__, MetadataError | FileNotFoundError)


def test_summary_command_prints_genevals_text_and_writes_files(tmp_path, capsys):
    meta = json.dumps({"tag": "colors", "prompt": "p", "include": []})
    rows = [{"filename": f"{i}.png", "tag": "colors", "prompt": "p", "correct": i < 3, "reason": "",
             "metadata": meta, "details": "{}"} for i in range(4)]  # fmt: skip
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    main(["summary", f"image_dir={tmp_path}"])
    assert "colors           = 75.00% (3 / 4)" in capsys.readouterr().out
    assert json.loads((tmp_path / "summary.json").read_text())["overall"] == 0.75


class FakePipeline:
    """Records the call arguments; flat images from the generator's draws."""

    def __init__(self):
        self.calls = []

    def __call__(self, prompt, num_images_per_prompt, generator, output_type, **kwargs):
        import torch

        self.calls.append(dict(kwargs, prompt=prompt, n=num_images_per_prompt, output_type=output_type))
        draws = (torch.rand(num_images_per_prompt, generator=generator) * 255).int().tolist()
        return [Image.new("RGB", (16, 16), (d, d, d)) for d in draws]


def test_generate_passes_the_settings_to_the_pipeline(tmp_path):
    cfg = to_typed(
        {"command": "generate", "image_dir": str(tmp_path), "prompts": {"per_task": 1},
         "generate": {"pipeline": "unused", "n_samples": 3, "batch_size": 2,
                      "settings": {"steps": 7, "guidance_scale": 2.5, "reward_targets": {"aesthetic": 0.625},
                                   "sampler": "heun"}}},
        EvalConfig,
    )  # fmt: skip
    pipe = FakePipeline()
    report = run_generate(cfg, pipe=pipe)
    assert report.written == len(generate_suite(per_task=1))
    first = pipe.calls[0]
    assert first["n"] == 2 and pipe.calls[1]["n"] == 1
    settings = first["settings"]  # the one schema, passed whole
    assert settings.reward_targets == {"aesthetic": 0.625} and settings.steps == 7
    assert settings.guidance_scale == 2.5 and settings.sampler == "heun" and first["output_type"] == "pil"
    assert all(len(f.samples) == 3 for f in iter_prompt_folders(tmp_path))


def test_rewards_and_compare_commands(tmp_path, capsys):
    runs = [make_run(tmp_path / "base"), make_run(tmp_path / "miro", levels=[[40, 60], [120, 160], [230, 250]])]
    for run in runs:
        score_folder(run, [Brightness()])
    main(["compare", f"compare.runs=[{runs[0]},{runs[1]}]", f"compare.out_dir={tmp_path / 'cmp'}"])
    out = capsys.readouterr().out
    assert "| brightness |" in out and "paired t" in out
    assert (tmp_path / "cmp" / "comparison_bars.png").is_file()


def test_typed_config_rejects_unknown_keys():
    with pytest.raises(ConfigError):
        to_typed({"command": "summary", "evaluate": {"treshold": 0.2}}, EvalConfig)


def test_evaluate_command_end_to_end_with_tiny_models(tmp_path, capsys):
    """Real loading code, real post-processing, real rules: tiny random Mask2Former (cup boosted) + tiny CLIP."""
    from miro.eval.geneval.layout import write_prompt_folder
    from miro.eval.geneval.prompts import GENEVAL_CLASSES
    from tests.eval.tiny_models import save_tiny_clip, save_tiny_mask2former

    ckpt = save_tiny_mask2former(tmp_path / "m2f", boost_class=GENEVAL_CLASSES.index("cup"))
    clip_name, clip_file = save_tiny_clip(tmp_path / "clip.pt", tmp_path / "cfgs")
    items = [
        {"tag": "single_object", "include": [{"class": "cup", "count": 1}], "prompt": "a photo of a cup"},
        {"tag": "single_object", "include": [{"class": "dog", "count": 1}], "prompt": "a photo of a dog"},
        {"tag": "colors", "include": [{"class": "cup", "count": 1, "color": "red"}], "prompt": "a photo of a red cup"},
    ]
    rng = np.random.default_rng(0)
    for i, item in enumerate(items):
        images = [Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for _ in range(2)]
        write_prompt_folder(tmp_path / "run", i, item, images)
    args = ["evaluate", f"image_dir={tmp_path / 'run'}", f"detector.checkpoint={ckpt}", "detector.batch_size=2", "detector.test_scale=[160,96]",
            f"colors.model={clip_name}", f"colors.pretrained={clip_file}"]  # fmt: skip
    main(args)
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    assert [r["correct"] for r in rows[:4]] == [True, True, False, False]  # every query says "cup"
    assert rows[2]["reason"] == "expected dog>=1, found 0"
    assert json.loads(rows[0]["details"])["cup"][0][4] > 0.3
    assert rows[4]["reason"] == "" if rows[4]["correct"] else rows[4]["reason"].startswith("expected red cup>=1")
    assert "Overall score (avg. over tasks)" in capsys.readouterr().out
    assert (tmp_path / "run" / "summary.json").is_file()
    settings = json.loads((tmp_path / "run" / "results.settings.json").read_text())
    assert settings["colors"]["model"] == clip_name and settings["detector"]["name"] == "mask2former"
    main(args)  # resumes: nothing left to evaluate, same rows
    again = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert again == rows


def test_rewards_command_with_the_real_weight_free_scorers(tmp_path, capsys):
    """annotate's image-statistics scorers (one shared pass) through the command, on shapes-oracle images."""
    run = tmp_path / "run"
    main(["generate", f"image_dir={run}", "generate.source=shapes_oracle", "generate.n_samples=2",
          "prompts.metadata=" + str(_shapes_prompts(tmp_path))])  # fmt: skip
    main(["rewards", f"image_dir={run}", "rewards=[sharpness,colorfulness,contrast]", "rewards.sharpness.size=64",
          "reward_metrics.batch_size=3"])  # fmt: skip
    rows = [json.loads(line) for line in (run / "rewards.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    for row in rows:
        assert row["status"] == "ok"
        assert all(isinstance(row[k], float) and np.isfinite(row[k]) for k in ("sharpness", "colorfulness", "contrast"))
    with pytest.raises(SystemExit, match=r"^error: .*changed: \['oracle_resolution'\]") as stop:
        main(["generate", f"image_dir={run}", "generate.source=shapes_oracle", "generate.n_samples=2",
              "generate.oracle_resolution=32", "prompts.metadata=" + str(_shapes_prompts(tmp_path))])  # fmt: skip
    assert isinstance(stop.value.__context__, SettingsMismatch)
    summary = json.loads((run / "rewards_summary.json").read_text())
    assert set(summary) == {"sharpness", "colorfulness", "contrast"} and summary["sharpness"]["prompts"] == 3
    provenance = json.dumps(json.loads((run / "rewards_provenance.json").read_text()))
    assert '"size": 64' in provenance  # the group's setting reached the scorer
    assert "| sharpness |" in capsys.readouterr().out


def _shapes_prompts(tmp_path):
    path = tmp_path / "shapes_prompts.jsonl"
    items = [
        {"tag": "single_object", "include": [{"class": "star", "count": 1}], "prompt": "a photo of a star"},
        {"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "red"}], "prompt": "a photo of a red circle"},
        {"tag": "counting", "include": [{"class": "heart", "count": 2}], "exclude": [{"class": "heart", "count": 3}],
         "prompt": "a photo of two hearts"},
    ]  # fmt: skip
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    return path


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory):
    """A tiny random MiroPipeline (identity autoencoder, MiniLM text encoder) saved with save_pretrained."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler

    from miro.models.config import AutoencoderConfig, TextEncoderConfig, build_text_encoder
    from miro.models.transformer import MiroTransformer
    from miro.sampling.pipeline import MiroPipeline

    torch.manual_seed(0)
    transformer = MiroTransformer(
        in_channels=3, sample_size=8, patch_size=2, width=32, depth=2, num_heads=2, text_dim=384,
        reward_names=["sharpness", "aesthetic"], reward_fourier_dim=16, cond_refiner_depth=1, time_frequency_dim=32,
    )  # fmt: skip
    with torch.no_grad():
        for p in transformer.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)  # non-zero output layers, so the images depend on the conditions
    text_cfg = TextEncoderConfig(kind="minilm", max_length=16)
    pipe = MiroPipeline(
        transformer=transformer.eval(), scheduler=FlowMatchEulerDiscreteScheduler(shift=2.0),
        text_encoder_config=text_cfg, autoencoder_config=AutoencoderConfig(kind="identity"), num_bins=8,
        text_encoder=build_text_encoder(text_cfg),
    )  # fmt: skip
    path = tmp_path_factory.mktemp("pipe") / "tiny"
    pipe.save_pretrained(path)
    return path


def test_geneval_command_with_a_saved_pipeline(saved_pipeline, tmp_path, capsys):
    """The real generation path: MiroPipeline.from_pretrained, then generate, evaluate (shapes), summary."""
    prompts = _shapes_prompts(tmp_path)
    common = [f"generate.pipeline={saved_pipeline}", f"prompts.metadata={prompts}", "detector=shapes",
              "generate.settings.steps=2", "generate.n_samples=3", "generate.batch_size=2",
              "generate.settings.height=16", "generate.settings.width=16",
              "generate.settings.reward_targets={aesthetic: 0.25}"]  # fmt: skip
    main(["geneval", f"image_dir={tmp_path / 'a'}", *common])
    rows = [json.loads(line) for line in (tmp_path / "a" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 9 and {r["tag"] for r in rows} == {"single_object", "colors", "counting"}
    samples = sorted((tmp_path / "a").glob("*/samples/*.png"))
    assert len(samples) == 9 and all(Image.open(p).size == (16, 16) for p in samples)
    assert "Overall score (avg. over tasks)" in capsys.readouterr().out
    # Same seed and settings, same images; other reward targets, other images.
    main(["generate", f"image_dir={tmp_path / 'b'}", *common])
    again = sorted((tmp_path / "b").glob("*/samples/*.png"))
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in samples]
    main(["generate", f"image_dir={tmp_path / 'c'}", *common, "generate.settings.reward_targets={aesthetic: 1.0}"])
    other = sorted((tmp_path / "c").glob("*/samples/*.png"))
    assert [p.read_bytes() for p in other] != [p.read_bytes() for p in samples]
