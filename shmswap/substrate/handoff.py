"""The hand-off ring: allocations one CPU publishes for another CPU to free (DESIGN §2, §6).

In the kernel a slot allocated on one CPU is often freed on another (the process migrated, or
another process unmapped a shared page).  The ring carries such allocations between workers: a
bounded FIFO of records in its own segment under ``handoff_lock``, so cross-CPU frees exercise the
free path on clusters another CPU's cache points into.
"""

from __future__ import annotations

from collections.abc import Callable

from .locks import LockClass
from .state import HANDOFF, HANDOFF_REC, HANDOFF_SLOTS, SwapShm

__all__ = ["HandoffRing"]

_LOCK = int(LockClass.HANDOFF_LOCK)
_LOCK_OFF = 8 * HANDOFF.lock


class HandoffRing:
    def __init__(self, shm: SwapShm) -> None:
        self.q, self.r = shm.hq, shm.hr
        self.base = HANDOFF.size

    def push(self, rec: list[int]) -> bool:
        """Publish ``rec`` (entry, order, folio, state); False if the ring is full."""
        q = self.q
        self.r.lock(_LOCK_OFF, _LOCK)
        if q[HANDOFF.count] >= HANDOFF_SLOTS:
            self.r.unlock(_LOCK_OFF, _LOCK)
            return False
        tail = q[HANDOFF.tail]
        b = self.base + tail * HANDOFF_REC
        for i in range(HANDOFF_REC):
            q[b + i] = rec[i]
        q[HANDOFF.tail] = (tail + 1) % HANDOFF_SLOTS
        q[HANDOFF.count] += 1
        q[HANDOFF.pushed] += 1
        self.r.unlock(_LOCK_OFF, _LOCK)
        return True

    def pop(self) -> list[int] | None:
        """Take the oldest record, or None."""
        q = self.q
        self.r.lock(_LOCK_OFF, _LOCK)
        if not q[HANDOFF.count]:
            self.r.unlock(_LOCK_OFF, _LOCK)
            return None
        head = q[HANDOFF.head]
        b = self.base + head * HANDOFF_REC
        rec = [q[b + i] for i in range(HANDOFF_REC)]
        q[HANDOFF.head] = (head + 1) % HANDOFF_SLOTS
        q[HANDOFF.count] -= 1
        q[HANDOFF.taken] += 1
        self.r.unlock(_LOCK_OFF, _LOCK)
        return rec

    def take_matching(self, match: Callable[[list[int]], bool]) -> list[list[int]]:
        """Take every record ``match`` accepts, keeping the others in their order (one pass under
        ``handoff_lock``: a record is either taken here or popped by a CPU, never both)."""
        q = self.q
        self.r.lock(_LOCK_OFF, _LOCK)
        n, head = q[HANDOFF.count], q[HANDOFF.head]
        recs = [[q[self.base + (head + i) % HANDOFF_SLOTS * HANDOFF_REC + k] for k in range(HANDOFF_REC)]
                for i in range(n)]
        taken = [rec for rec in recs if match(rec)]
        if taken:
            kept = [rec for rec in recs if not match(rec)]
            for i, rec in enumerate(kept):
                b = self.base + (head + i) % HANDOFF_SLOTS * HANDOFF_REC
                for k in range(HANDOFF_REC):
                    q[b + k] = rec[k]
            q[HANDOFF.tail] = (head + len(kept)) % HANDOFF_SLOTS
            q[HANDOFF.count] = len(kept)
            q[HANDOFF.taken] += len(taken)
        self.r.unlock(_LOCK_OFF, _LOCK)
        return taken

    def statistics(self) -> dict[str, int]:
        return {"pushed": self.q[HANDOFF.pushed], "taken": self.q[HANDOFF.taken], "held": self.q[HANDOFF.count]}
