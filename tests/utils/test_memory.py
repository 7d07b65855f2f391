"""miro.utils.memory: the peak-memory probe of the benchmarks sees what a block allocates and frees."""

import mmap
import time

from miro.utils.memory import PeakMemory


def test_peak_memory_sees_memory_allocated_and_freed_inside_the_block():
    with PeakMemory(interval=0.001) as peak:
        # an anonymous mapping, not a bytearray: fresh pages whatever the allocator already holds (in a long test
        # worker malloc can hand back 64 MiB that are resident already, and the process does not grow)
        block = mmap.mmap(-1, 64 * 2**20)
        for offset in range(0, len(block), 4096):  # touch every page, so it is resident
            block[offset] = 1
        deadline = time.monotonic() + 5.0  # held until the sampler thread, which needs the GIL back, has read it
        while peak.peak - peak.before < 60 * 2**20 and time.monotonic() < deadline:
            time.sleep(0.01)
        block.close()
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
