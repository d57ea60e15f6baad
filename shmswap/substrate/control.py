"""Run control between the driver, the manager and the CPU workers, in shared memory.

Words, not messages: a worker checks ``stop`` between operations at the cost of one memoryview
read, publishes its state and heartbeat with plain stores (one writer each), and the manager reads
them all to decide when the system is quiescent and to notice a worker that makes no progress.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .layout import DEVICE
from .state import CONTROL, CONTROL_W, SwapShm

__all__ = ["Control", "W_STARTING", "W_RUNNING", "W_PARKED", "W_RELEASED", "W_ABORTED", "W_FAILED",
           "STATE_NAMES", "UNUSE_TYPE_BITS", "UNUSE_WORD"]

W_STARTING, W_RUNNING, W_PARKED, W_RELEASED, W_ABORTED, W_FAILED = range(6)
UNUSE_TYPE_BITS = 16           # the unuse word: generation << 16 | swap type
UNUSE_WORD = CONTROL.unuse     # its index in ``Control.q`` (a worker reads it between operations)
STATE_NAMES = {W_STARTING: "starting", W_RUNNING: "running", W_PARKED: "parked", W_RELEASED: "released",
               W_ABORTED: "aborted", W_FAILED: "failed"}
_NH, _NR = CONTROL.size, CONTROL_W.size


class Control:
    def __init__(self, shm: SwapShm) -> None:
        self.q = shm.ctlq
        self.shm = shm
        self.abort_off = 8 * DEVICE.abort

    def _w(self, wid: int, word: int) -> int:
        return _NH + wid * _NR + word

    # -- header -----------------------------------------------------------------------------------
    def stop(self) -> None:
        self.q[CONTROL.stop] = 1

    def stopping(self) -> bool:
        return bool(self.q[CONTROL.stop])

    def release(self) -> None:
        self.q[CONTROL.release] = 1

    def abort(self) -> None:
        """Stop everything: lock waiters raise ``_prim.Aborted``, parked workers exit."""
        self.q[CONTROL.stop] = 1
        self.shm.devr.store(self.abort_off, 1)

    def aborted(self) -> bool:
        return bool(self.shm.devr.load(self.abort_off))

    def set(self, name: str, value: int) -> None:
        self.q[getattr(CONTROL, name)] = value

    def get(self, name: str) -> int:
        return self.q[getattr(CONTROL, name)]

    def wait_release(self, driver_alive: Callable[[], bool], poll_s: float = 0.001,
                     idle: Callable[[], None] | None = None) -> bool:
        """Park until the manager says release (True), or the run is aborted or the driver is gone
        (False).  ``driver_alive`` is a ``lifeline.Lifeline`` (or any callable): not ``getppid``,
        which under forkserver is the fork server.  ``idle()`` runs at every poll (a parked
        worker still serves a swapoff's try_to_unuse)."""
        polls = 0
        while not self.q[CONTROL.release]:
            if self.aborted() or (polls % 32 == 0 and not driver_alive()):
                return False
            if idle is not None:
                idle()
            polls += 1
            time.sleep(poll_s)
        return True

    # -- --swapoff-every: the manager's try_to_unuse request and the workers' acks -------------------
    def post_unuse(self, gen: int, type: int) -> None:  # noqa: A002 - si->type
        """Ask every worker to release its records on swap type ``type`` (request ``gen`` >= 1)."""
        self.q[CONTROL.unuse] = gen << UNUSE_TYPE_BITS | type

    def ack_unuse(self, wid: int, gen: int) -> None:
        self.q[self._w(wid, CONTROL_W.unuse_ack)] = gen

    def unuse_acked(self, wid: int) -> int:
        return self.q[self._w(wid, CONTROL_W.unuse_ack)]

    # -- per worker -------------------------------------------------------------------------------
    def set_state(self, wid: int, state: int) -> None:
        self.q[self._w(wid, CONTROL_W.state)] = state

    def state(self, wid: int) -> int:
        return self.q[self._w(wid, CONTROL_W.state)]

    def beat(self, wid: int, steps: int) -> None:
        self.q[self._w(wid, CONTROL_W.steps)] = steps

    def steps(self, wid: int) -> int:
        return self.q[self._w(wid, CONTROL_W.steps)]

    def set_affinity(self, wid: int, cores: list[int]) -> None:
        self.q[self._w(wid, CONTROL_W.affinity)] = sum(1 << c for c in cores)

    def affinity(self, wid: int) -> list[int]:
        mask = self.q[self._w(wid, CONTROL_W.affinity)]
        return [c for c in range(64) if mask >> c & 1]
