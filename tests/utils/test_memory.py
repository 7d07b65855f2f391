"""miro.utils.memory: the peak-memory probe of the benchmarks sees what a block allocates and frees."""

import time

from miro.utils.memory import PeakMemory


def test_peak_memory_sees_memory_allocated_and_freed_inside_the_block():
    with PeakMemory(interval=0.001) as peak:
        block = bytearray(64 * 2**20)
        block[::4096] = b"x" * len(block[::4096])  # touch every page, so it is resident
        deadline = time.monotonic() + 5.0  # held until the sampler thread has read it: it needs the GIL back and a
        while peak.peak - peak.before < 60 * 2**20 and time.monotonic() < deadline:  # core, which a busy CI run
            time.sleep(0.01)  # can withhold for longer than a fixed wait (a 50 ms wait once read 0.008 MiB)
        del block
    assert 60 <= peak.growth_mib < 200 and peak.peak > peak.before > 0
    with PeakMemory() as quiet:
        pass
    assert quiet.growth_mib < 8


def test_children_counts_a_child_process_memory():
    import subprocess
    import sys

    code = "b = bytearray(96 * 2**20); b[::4096] = b'x' * len(b[::4096]); import time; time.sleep(3)"
    with PeakMemory(interval=0.01, children=True) as both:
        child = subprocess.Popen([sys.executable, "-c", code])
        child.wait()
    assert both.growth_mib >= 90  # the child's 96 MiB, which this process alone never holds
