"""The hand-off ring: allocations one CPU publishes for another CPU to free (DESIGN §2, §6).

In the kernel a slot allocated on one CPU is often freed on another (the process migrated, or
another process unmapped a shared page).  The ring carries such allocations between workers: a
bounded FIFO of records in its own segment under ``handoff_lock``, so cross-CPU frees exercise the
free path on clusters another CPU's cache points into.
"""

from __future__ import annotations

from .locks import LockClass
from .state import HANDOFF_HDR, HANDOFF_REC, HANDOFF_SLOTS, SwapShm

__all__ = ["HandoffRing"]

_H = {n: i for i, n in enumerate(HANDOFF_HDR)}
_LOCK = LockClass.HANDOFF_LOCK


class HandoffRing:
    def __init__(self, shm: SwapShm) -> None:
        self.q, self.r = shm.hq, shm.hr
        self.base = len(HANDOFF_HDR)

    def push(self, rec: list[int]) -> bool:
        """Publish ``rec`` (entry, order, folio, state); False if the ring is full."""
        q = self.q
        self.r.lock(0, _LOCK)
        if q[_H["count"]] >= HANDOFF_SLOTS:
            self.r.unlock(0, _LOCK)
            return False
        tail = q[_H["tail"]]
        b = self.base + tail * HANDOFF_REC
        for i in range(HANDOFF_REC):
            q[b + i] = rec[i]
        q[_H["tail"]] = (tail + 1) % HANDOFF_SLOTS
        q[_H["count"]] += 1
        q[_H["pushed"]] += 1
        self.r.unlock(0, _LOCK)
        return True

    def pop(self) -> list[int] | None:
        """Take the oldest record, or None."""
        q = self.q
        self.r.lock(0, _LOCK)
        if not q[_H["count"]]:
            self.r.unlock(0, _LOCK)
            return None
        head = q[_H["head"]]
        b = self.base + head * HANDOFF_REC
        rec = [q[b + i] for i in range(HANDOFF_REC)]
        q[_H["head"]] = (head + 1) % HANDOFF_SLOTS
        q[_H["count"]] -= 1
        q[_H["taken"]] += 1
        self.r.unlock(0, _LOCK)
        return rec

    def statistics(self) -> dict[str, int]:
        return {"pushed": self.q[_H["pushed"]], "taken": self.q[_H["taken"]], "held": self.q[_H["count"]]}
