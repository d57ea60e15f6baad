"""The run's memory, as the kernel accounts it: PSS summed over the manager and the CPU workers.

PSS (proportional set size) charges each shared page to its mappers in equal parts, so the sum
over the run's processes counts every page of the shared segments once, plus each process's own
memory.  A thread of the manager samples it (``/proc/<pid>/smaps_rollup`` through psutil) from
the start of the workload to the end of swapoff, the check included, and keeps the peak: the
figure that says whether a 1 TiB device costs more than the memory it used.
"""

from __future__ import annotations

import os
import threading

import psutil

__all__ = ["PssMeter"]

EVERY_S = 0.05


class PssMeter:
    """``start()``, ``watch(pids)``, ``stop() -> dict`` (``res.extra["memory"]``)."""

    def __init__(self, every_s: float = EVERY_S) -> None:
        self.every_s = every_s
        self.peak = 0
        self.samples = 0
        self._procs: dict[int, psutil.Process] = {}
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self.watch([os.getpid()])

    def watch(self, pids: list[int]) -> None:
        with self._lock:
            for pid in pids:
                try:
                    self._procs.setdefault(pid, psutil.Process(pid))
                except psutil.Error:
                    pass

    def sample(self) -> int:
        """One sample: the PSS of every watched process still alive, summed; updates the peak."""
        total = 0
        with self._lock:
            procs = list(self._procs.values())
        for p in procs:
            try:
                total += p.memory_full_info().pss
            except (psutil.Error, AttributeError):
                pass        # exited (its pages went to the others' share) or no PSS on this system
        self.samples += 1
        self.peak = max(self.peak, total)
        return total

    def _run(self) -> None:
        while not self._done.wait(self.every_s):
            self.sample()

    def start(self) -> PssMeter:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="pss-meter", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()
        return {"peak_pss_mib": round(self.peak / 2**20, 1), "samples": self.samples,
                "every_s": self.every_s, "processes": len(self._procs)}
