from tests.scripts.loader import load_script


def _load():
    return load_script("bench_train.py")


def test_model_part_runs_and_reports_both_models(tmp_path):
    bench = _load()
    out = tmp_path / "bench.md"
    bench.main(["--part", "model", "--threads", "1", "--batch", "2", "--image-size", "16", "--text-len", "4",
                "--steps", "1", "--rounds", "1", "--warmup", "0", "--matmul-size", "64", "--matmul-seconds", "0.05",
                "--out", str(out)])
    text = out.read_text()
    assert "| MiroTransformer (tiny) | 1.99M |" in text
    assert "diffusers DiTTransformer2DModel" in text and "images/s ratio" in text


def test_dit_peer_matches_the_parameter_count():
    bench = _load()
    peer = bench.build_dit_peer(1_920_000, heads=4, head_dim=32, in_channels=3, image_size=16, patch=4, batch=2)
    assert abs(peer.params - 1_920_000) < 0.06 * 1_920_000
    assert isinstance(peer.step(), float)
