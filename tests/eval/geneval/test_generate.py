import json

import numpy as np
import pytest
import torch
from PIL import Image

from miro.eval.geneval.generate import generate_layout, sample_prompt
from miro.eval.geneval.layout import LayoutError, iter_prompt_folders, list_samples, make_grid, prompt_dir
from miro.eval.geneval.prompts import generate_suite

ITEMS = generate_suite(seed=5, per_task=1)[78:86]  # two single-object items, then one of each other task


class FakeGenerator:
    """Flat-colour images whose colour comes from the generator's draws; counts its calls."""

    def __init__(self, fail_at_prompt: str | None = None, size=(24, 16)):
        self.calls = []
        self.fail_at_prompt = fail_at_prompt
        self.size = size

    def __call__(self, prompt, n, generator):
        if prompt == self.fail_at_prompt:
            raise KeyboardInterrupt("killed")
        self.calls.append((prompt, n))
        colors = (torch.rand(n, 3, generator=generator) * 255).to(torch.uint8).numpy()
        return [Image.new("RGB", self.size, tuple(int(v) for v in c)) for c in colors]


def test_layout_is_genevals(tmp_path):
    gen = FakeGenerator()
    report = generate_layout(ITEMS, tmp_path, gen, n_samples=4, batch_size=2, seed=42)
    assert (report.written, report.skipped) == (len(ITEMS), 0)
    assert gen.calls[:2] == [(ITEMS[0]["prompt"], 2)] * 2
    for i, item in enumerate(ITEMS):
        folder = tmp_path / f"{i:05d}"
        assert (folder / "metadata.jsonl").read_text() == json.dumps(item)
        assert sorted(p.name for p in (folder / "samples").iterdir()) == ["0000.png", "0001.png", "0002.png", "0003.png"]
        assert Image.open(folder / "grid.png").size == (2 * (24 + 2) + 2, 2 * (16 + 2) + 2)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # Every prompt restarts from the seed (GenEval's convention): same colours for every prompt.
    first = [np.asarray(Image.open(p)).tolist() for p in list_samples(tmp_path / "00000")]
    second = [np.asarray(Image.open(p)).tolist() for p in list_samples(tmp_path / "00003")]
    assert first == second and first[0] != first[1]


def test_resume_skips_complete_folders_and_redoes_incomplete_ones(tmp_path):
    generate_layout(ITEMS, tmp_path, FakeGenerator(), n_samples=2, grid=False)
    (tmp_path / "00002" / "samples" / "0001.png").unlink()
    gen = FakeGenerator()
    report = generate_layout(ITEMS, tmp_path, gen, n_samples=2, grid=False)
    assert (report.written, report.skipped) == (1, len(ITEMS) - 1)
    assert gen.calls == [(ITEMS[2]["prompt"], 1), (ITEMS[2]["prompt"], 1)]
    assert not (tmp_path / "00002" / "grid.png").exists()


def test_killed_run_leaves_only_complete_folders_and_resumes(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        generate_layout(ITEMS, tmp_path, FakeGenerator(fail_at_prompt=ITEMS[3]["prompt"]), n_samples=2)
    assert [f.index for f in iter_prompt_folders(tmp_path)] == [0, 1, 2]
    (tmp_path / ".00003.partial" / "samples").mkdir(parents=True)  # as if killed while writing
    report = generate_layout(ITEMS, tmp_path, FakeGenerator(), n_samples=2)
    assert (report.written, report.skipped) == (len(ITEMS) - 3, 3)
    assert [f.index for f in iter_prompt_folders(tmp_path)] == list(range(len(ITEMS)))
    assert not (tmp_path / ".00003.partial").exists()


def test_folder_of_another_prompt_set_is_refused(tmp_path):
    generate_layout(ITEMS[:2], tmp_path, FakeGenerator(), n_samples=1)
    with pytest.raises(LayoutError, match="another prompt set"):
        generate_layout(ITEMS[1:3], tmp_path, FakeGenerator(), n_samples=1)


def test_shards_cover_every_prompt_once(tmp_path):
    gens = [FakeGenerator(), FakeGenerator()]
    for k, gen in enumerate(gens):
        generate_layout(ITEMS, tmp_path, gen, n_samples=1, shard_index=k, num_shards=2)
    assert sorted(p for g in gens for p, _ in g.calls) == sorted(i["prompt"] for i in ITEMS)
    assert len(list(iter_prompt_folders(tmp_path))) == len(ITEMS)


def test_bad_arguments_and_generators(tmp_path):
    with pytest.raises(ValueError, match="shard_index"):
        generate_layout(ITEMS, tmp_path, FakeGenerator(), shard_index=2, num_shards=2)
    with pytest.raises(ValueError, match="n_samples"):
        generate_layout(ITEMS, tmp_path, FakeGenerator(), n_samples=0)
    with pytest.raises(RuntimeError, match="returned 1 images"):
        sample_prompt(lambda p, n, g: [Image.new("RGB", (4, 4))], "x", 3, 3, 0)


def test_reader_follows_genevals_walking_rules(tmp_path):
    generate_layout(ITEMS[:3], tmp_path, FakeGenerator(), n_samples=2, grid=True)
    (tmp_path / "notes").mkdir()  # not numeric: ignored
    (tmp_path / "7.txt").write_text("x")  # a file: ignored
    samples = tmp_path / "00001" / "samples"
    Image.new("RGB", (4, 4)).save(samples / "00002.png")  # five digits: evaluated, as in GenEval
    Image.new("RGB", (4, 4)).save(samples / "x1.png")  # not \d+\.png: ignored
    Image.new("RGB", (4, 4)).save(samples / "0003.jpg")
    folders = list(iter_prompt_folders(tmp_path))
    assert [f.index for f in folders] == [0, 1, 2]
    assert [p.name for p in folders[1].samples] == ["0000.png", "0001.png", "00002.png"]
    assert folders[2].metadata == ITEMS[2]
    (prompt_dir(tmp_path, 2) / "metadata.jsonl").write_text("{broken")
    with pytest.raises(LayoutError, match="00002/metadata.jsonl"):
        list(iter_prompt_folders(tmp_path))
    (prompt_dir(tmp_path, 2) / "metadata.jsonl").unlink()
    with pytest.raises(LayoutError, match="missing"):
        list(iter_prompt_folders(tmp_path))
    with pytest.raises(LayoutError, match="not found"):
        list(iter_prompt_folders(tmp_path / "nope"))


def test_grid_matches_torchvision_make_grid():
    from torchvision.transforms.functional import to_tensor
    from torchvision.utils import make_grid as tv_make_grid

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)) for _ in range(3)]
    ours = np.asarray(make_grid(images, columns=2))
    ref = tv_make_grid(torch.stack([to_tensor(i) for i in images]), nrow=2)
    ref = (ref * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(ours, ref)
