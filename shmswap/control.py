"""Run control between the driver, the manager and the CPU workers, in shared memory.

Words, not messages: a worker checks ``stop`` between operations at the cost of one memoryview
read, publishes its state and heartbeat with plain stores (one writer each), and the manager reads
them all to decide when the system is quiescent and to notice a worker that makes no progress.
"""

from __future__ import annotations

import os
import time

from .state import CONTROL_HDR, CONTROL_REC, SwapShm

__all__ = ["Control", "W_STARTING", "W_RUNNING", "W_PARKED", "W_RELEASED", "W_ABORTED", "W_FAILED",
           "STATE_NAMES"]

W_STARTING, W_RUNNING, W_PARKED, W_RELEASED, W_ABORTED, W_FAILED = range(6)
STATE_NAMES = {W_STARTING: "starting", W_RUNNING: "running", W_PARKED: "parked", W_RELEASED: "released",
               W_ABORTED: "aborted", W_FAILED: "failed"}
_H = {n: i for i, n in enumerate(CONTROL_HDR)}
_R = {n: i for i, n in enumerate(CONTROL_REC)}
_NH, _NR = len(CONTROL_HDR), len(CONTROL_REC)


class Control:
    def __init__(self, shm: SwapShm) -> None:
        self.q = shm.ctlq
        self.shm = shm
        self.abort_off = shm.dev_dt.fields["abort"][1]

    def _w(self, wid: int, name: str) -> int:
        return _NH + wid * _NR + _R[name]

    # -- header -----------------------------------------------------------------------------------
    def stop(self) -> None:
        self.q[_H["stop"]] = 1

    def stopping(self) -> bool:
        return bool(self.q[_H["stop"]])

    def release(self) -> None:
        self.q[_H["release"]] = 1

    def abort(self) -> None:
        """Stop everything: lock waiters raise ``_prim.Aborted``, parked workers exit."""
        self.q[_H["stop"]] = 1
        self.shm.devr.store(self.abort_off, 1)

    def aborted(self) -> bool:
        return bool(self.shm.devr.load(self.abort_off))

    def set(self, name: str, value: int) -> None:
        self.q[_H[name]] = value

    def get(self, name: str) -> int:
        return self.q[_H[name]]

    def wait_release(self, driver_pid: int, poll_s: float = 0.001) -> bool:
        """Park until the manager says release (True) or the run is aborted (False)."""
        while not self.q[_H["release"]]:
            if self.aborted() or os.getppid() != driver_pid:
                return False
            time.sleep(poll_s)
        return True

    # -- per worker -------------------------------------------------------------------------------
    def set_state(self, wid: int, state: int) -> None:
        self.q[self._w(wid, "state")] = state

    def state(self, wid: int) -> int:
        return self.q[self._w(wid, "state")]

    def beat(self, wid: int, steps: int) -> None:
        self.q[self._w(wid, "steps")] = steps

    def steps(self, wid: int) -> int:
        return self.q[self._w(wid, "steps")]

    def set_affinity(self, wid: int, cores: list[int]) -> None:
        self.q[self._w(wid, "affinity")] = sum(1 << c for c in cores)

    def affinity(self, wid: int) -> list[int]:
        mask = self.q[self._w(wid, "affinity")]
        return [c for c in range(64) if mask >> c & 1]
