import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from miro.train.checkpoint import list_checkpoints

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
def test_two_cpu_processes_read_disjoint_data_and_write_one_checkpoint(tmp_path, shards_root):
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "conf/accelerate/cpu_ddp.yaml"),
           "--num_processes", "2", "--main_process_port", str(free_port()),
           str(ROOT / "tests/train/ddp_run.py"), str(out), str(shards_root)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    keys = [(out / "logs" / f"keys-rank{r}.txt").read_text().split() for r in (0, 1)]
    assert len(keys[0]) == len(keys[1]) == 16  # 4 steps x micro batch 4
    assert not set(keys[0]) & set(keys[1])  # epoch mode: each rank its own shards
    ckpts = out / "checkpoints"
    assert [s for s, _ in list_checkpoints(ckpts)] == [2, 4] and len(list(ckpts.iterdir())) == 2
    for _, path in list_checkpoints(ckpts):
        names = sorted(p.name for p in path.iterdir())
        assert names.count("model.safetensors") == 1
        assert {"random_states_0.pkl", "random_states_1.pkl"} <= set(names)
    assert (out / "final" / "transformer" / "config.json").is_file()
    assert len(list((out / "samples").glob("step-*.png"))) == 1  # grids on the main process only
