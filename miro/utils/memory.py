"""Peak memory of a block of code, for the benchmarks (``scripts/bench_annotate.py``, ``bench_testtime_memory.py``).

A thread samples the memory every ``interval`` seconds while the block runs (a Python allocation that never
releases the GIL between touching its pages and freeing them can slip between two samples; real workloads, which run
torch kernels and sleep on I/O, do not).  psutil comes with accelerate."""

from __future__ import annotations

import contextlib
import threading
import time


class PeakMemory:
    """``with PeakMemory() as m: ...`` then ``m.peak`` (bytes), ``m.before`` and ``m.growth_mib``.

    ``children``: also count the child processes (DataLoader workers), each by its proportional set size (PSS)
    where the OS reports it, so pages a forked worker shares with its parent count once; plain RSS otherwise, and
    for this process alone."""

    def __init__(self, interval: float = 0.005, children: bool = False):
        import psutil

        self.process, self.interval, self.children = psutil.Process(), interval, children
        self.before = self.peak = 0
        self._stop = threading.Event()

    def _one(self, process) -> int:
        import psutil

        if not self.children:
            return process.memory_info().rss
        try:
            return getattr(process.memory_full_info(), "pss", None) or process.memory_info().rss
        except psutil.AccessDenied:
            return process.memory_info().rss

    def current(self) -> int:
        """This process's memory now (plus its children's with ``children``), in bytes."""
        import psutil

        total = self._one(self.process)
        if self.children:
            for child in self.process.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += self._one(child)
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self.before = self.peak = self.current()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())

    @property
    def growth_mib(self) -> float:
        """The peak above the memory at the start of the block, in MiB."""
        return (self.peak - self.before) / 2**20
