"""Every stage's command goes through ``miro.utils.config.run_typed``: a bad value stops it with one
``error: <key>=<value>: <what is allowed>`` line on stderr and a non-zero exit code, before any work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# (module, arguments with one bad value, the message naming it); docs/configs.md lists the same commands
ENTRY_POINTS = [
    ("miro.data.shapes", ["out={tmp}/world", "resolution=16"], "resolution=16: must be in 32..256"),
    ("miro.data.importer", ["src={tmp}/no_such_folder", "out={tmp}/shards"], "src='{tmp}/no_such_folder': must be an existing directory"),
    ("annotate", ["data.shards={tmp}", "batch_size=0"], "batch_size=0: must be a positive integer"),
    ("miro.train.cache", ["cache_job.batch_size=0"], "cache_job.batch_size=0: must be >= 1"),
    ("miro.train", ["max_steps=0"], "max_steps=0: must be >= 1"),
    ("miro.train.autoencoder", ["data.shards={tmp}", "out={tmp}/ae", "norm_num_groups=5"],
     "norm_num_groups=5: must be positive and divide every block width"),
    ("miro.sampling", ["pipeline={tmp}/pipeline", "mode=nope"], "mode='nope': must be one of"),
    ("miro.eval", ["nope"], "command='nope': must be one of"),
    ("miro.demo", ["out={tmp}/demo", "resolution=48"], "resolution=48: must be 32, 64, 128 or 256"),
    ("miro.testtime", ["pipeline={tmp}/pipeline", "prompts=[a]", "method=nope"], "method='nope': must be one of"),
    ("miro.testtime.adapt", ["pipeline={tmp}/pipeline", "prompts=[a]", "monitor=nope"], "monitor='nope': must be one of"),
]


@pytest.mark.parametrize("module,args,message", ENTRY_POINTS, ids=[e[0] for e in ENTRY_POINTS])
def test_a_bad_value_ends_the_command_with_one_error_line(tmp_path, module, args, message):
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    args = [a.format(tmp=tmp_path) for a in args]
    proc = subprocess.run([sys.executable, "-m", module, *args, f"hydra.run.dir={tmp_path}/hydra"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"error: {message.format(tmp=tmp_path)}"), lines[0]
    assert not any((tmp_path / name).exists() for name in ("world", "shards", "demo"))  # stopped before any work
