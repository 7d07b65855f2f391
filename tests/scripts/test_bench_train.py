"""scripts/bench_train.py: the training step the model and precision parts time, on the device and in the
autocast dtype they are asked for (the GPU re-run takes the same code path with --device cuda)."""

import pytest
import torch

from tests.scripts.loader import load_script

bench = load_script("bench_train.py")


def _seen_dtypes(contender) -> set[torch.dtype]:
    seen = set()
    linear = next(m for m in contender.model.modules() if isinstance(m, torch.nn.Linear))
    handle = linear.register_forward_hook(lambda mod, args, out: seen.add(out.dtype))
    try:
        loss = contender.step()
    finally:
        handle.remove()
    assert loss == loss  # finite, not NaN
    return seen


def test_the_step_runs_under_the_requested_autocast_only():
    plain = bench.build_miro("tiny", 3, 16, 8, 4, 2)
    low = bench.build_miro("tiny", 3, 16, 8, 4, 2, autocast=torch.bfloat16)
    assert _seen_dtypes(plain) == {torch.float32}
    assert _seen_dtypes(low) == {torch.bfloat16}
    assert next(low.model.parameters()).dtype == torch.float32  # fp32 master weights
    assert plain.device == low.device == torch.device("cpu")


def test_the_dit_peer_takes_the_same_device_and_autocast():
    peer = bench.build_dit_peer(200_000, 2, 16, 3, 16, 4, 2, autocast=torch.bfloat16)
    assert _seen_dtypes(peer) == {torch.bfloat16}


def test_model_part_names_its_precision_and_peak(tmp_path):
    args = bench.parse_args(["--part", "model", "--preset", "tiny", "--dtype", "bfloat16", "--batch", "2",
                             "--image-size", "16", "--text-len", "4", "--steps", "1", "--rounds", "1",
                             "--warmup", "1", "--matmul-size", "64", "--matmul-seconds", "0.01", "--threads", "1"])  # fmt: skip
    text = bench.part_model(args)
    assert "bfloat16 autocast, 1 threads" in text and "torch.bfloat16 matmul rate" in text
    assert text.count("| MiroTransformer") == 1 and "DiTTransformer2DModel" in text


def test_bad_dtype_is_refused():
    with pytest.raises(SystemExit):
        bench.parse_args(["--dtype", "float16"])


@pytest.mark.slow
def test_compile_part_compares_eager_and_compiled_steps():
    args = bench.parse_args(["--part", "compile", "--preset", "tiny", "--batch", "2", "--image-size", "16",
                             "--text-len", "4", "--steps", "1", "--rounds", "1", "--warmup", "3", "--threads", "1"])  # fmt: skip
    text = bench.part_compile(args)
    assert "eager vs torch.compile (default)" in text and "compiled / eager" in text
    drift = float(text.split("differ by at most ")[1].split(" ")[0])
    assert drift < 1e-3  # the same init and batches: the same losses up to fusion's rounding


def test_backbones_part_times_the_dit_and_the_unet_side_by_side():
    args = bench.parse_args(["--part", "backbones", "--batch", "2", "--text-len", "4", "--steps", "1",
                             "--rounds", "1", "--warmup", "1", "--matmul-size", "64", "--matmul-seconds", "0.01",
                             "--threads", "1"])  # fmt: skip
    text = bench.part_backbones(args)
    rows = [line for line in text.splitlines() if line.startswith("| Miro")]
    assert [r.split(" (")[0] for r in rows] == ["| MiroTransformer", "| MiroUNet"]
    assert "tiny_unet, conv_scale_shift=true" in rows[0] and rows[0].endswith("| 1.00x |")
    gflops = [float(r.split("|")[3]) for r in rows]
    assert all(g > 0 for g in gflops)  # FLOPs counted for both backbones
