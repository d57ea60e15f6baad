"""The folio model: what swap-cache entries point at (DESIGN §2 and §6).

A folio here is a record in the folios segment: refcount, flags, ``folio->swap``, order, owner,
generation and a lock word.  Each worker owns a range of ids and allocates from it alone; any
worker may take a reference (``folio_try_get``, the speculative get of a lockless reader) or drop
one.  An id is free again when its refcount reaches 0, whoever drops the last reference.

Models: ``folio_try_get``, ``folio_put`` / ``folio_ref_add`` / ``folio_ref_sub``,
``folio_trylock`` / ``folio_unlock``, ``folio_test_swapcache``, and
``folio_matches_swap_entry`` (mm/swap.h), the check a reader must make after a lockless lookup.
"""

from __future__ import annotations

import numpy as np

from .layout import FOLIO_DTYPE, word
from .locks import LockClass

__all__ = ["Folios", "PG_SWAPCACHE", "PG_DIRTY"]

PG_SWAPCACHE = 1
PG_DIRTY = 2
_FW = FOLIO_DTYPE.itemsize // 8
F_REF, F_FLAGS, F_SWAP, F_ORDER, F_OWNER, F_GEN, F_LOCK = (
    word(FOLIO_DTYPE, n) for n in ("ref", "flags", "swap", "order", "owner", "gen", "lock"))
FOLIO = LockClass.FOLIO_LOCK


class Folios:
    """One process's handle on the folio table."""

    def __init__(self, shm) -> None:
        self.fq, self.fr = shm.fq, shm.fr
        self.per_worker = shm.geo.folios_per_worker
        self.shm = shm
        # Idle ids known to this process, per owning worker (a process may play several).
        self._free: dict[int, set[int]] = {}

    def _base(self, f: int) -> int:
        return f * _FW

    # -- allocation (owner only) ------------------------------------------------------------------
    def folio_alloc(self, wid: int, order: int) -> int:
        """A new folio of ``order`` with one reference (the owner's), or -1 if none is free."""
        free = self._free.setdefault(wid, set())
        if not free:
            lo = wid * self.per_worker
            idle = np.flatnonzero(self.shm.folios["ref"][lo:lo + self.per_worker] == 0)
            free.update(int(i) + lo for i in idle)
            if not free:
                return -1
        f = free.pop()
        b = self._base(f)
        self.fq[b + F_FLAGS] = 0
        self.fq[b + F_SWAP] = 0
        self.fq[b + F_ORDER] = order
        self.fq[b + F_OWNER] = wid
        self.fq[b + F_GEN] += 1
        self.fr.store(b * 8 + F_REF * 8, 1)
        return f

    # -- references -------------------------------------------------------------------------------
    def folio_try_get(self, f: int) -> bool:
        """Models ``folio_try_get()``: take a reference unless the folio is already freed."""
        off = self._base(f) * 8 + F_REF * 8
        while True:
            ref = self.fr.load(off)
            if ref <= 0:
                return False
            if self.fr.cmpxchg(off, ref, ref + 1) == ref:
                return True

    def folio_ref_add(self, f: int, nr: int) -> None:
        self.fr.fetch_add(self._base(f) * 8 + F_REF * 8, nr)

    def folio_put(self, f: int, nr: int = 1) -> bool:
        """Drop ``nr`` references; True if that freed the folio."""
        old = self.fr.fetch_add(self._base(f) * 8 + F_REF * 8, -nr)
        if old < nr:
            raise AssertionError(f"folio {f}: refcount underflow ({old} - {nr})")
        if old == nr:
            owner_free = self._free.get(self.fq[self._base(f) + F_OWNER])
            if owner_free is not None:
                owner_free.add(f)
            return True
        return False

    def ref(self, f: int) -> int:
        return self.fr.load(self._base(f) * 8 + F_REF * 8)

    # -- lock and flags -----------------------------------------------------------------------------
    def folio_trylock(self, f: int) -> bool:
        return self.fr.trylock(self._base(f) * 8 + F_LOCK * 8, FOLIO)

    def folio_lock(self, f: int) -> None:
        self.fr.lock(self._base(f) * 8 + F_LOCK * 8, FOLIO)

    def folio_unlock(self, f: int) -> None:
        self.fr.unlock(self._base(f) * 8 + F_LOCK * 8, FOLIO)

    def flags(self, f: int) -> int:
        return self.fq[self._base(f) + F_FLAGS]

    def set_flags(self, f: int, flags: int) -> None:
        self.fq[self._base(f) + F_FLAGS] = flags

    def swap(self, f: int) -> int:
        return self.fq[self._base(f) + F_SWAP]

    def set_swap(self, f: int, entry: int) -> None:
        self.fq[self._base(f) + F_SWAP] = entry

    def order(self, f: int) -> int:
        return self.fq[self._base(f) + F_ORDER]

    def folio_test_swapcache(self, f: int) -> bool:
        return bool(self.fq[self._base(f) + F_FLAGS] & PG_SWAPCACHE)

    def folio_is_foreign(self, f: int, entry: int) -> bool:
        """Cached for a different entry: what a recycled table or folio can show a reader."""
        b = self._base(f)
        nr = 1 << self.fq[b + F_ORDER]
        swap = self.fq[b + F_SWAP]
        return bool(self.fq[b + F_FLAGS] & PG_SWAPCACHE) and swap != 0 and swap != entry & ~(nr - 1)

    def folio_matches_swap_entry(self, f: int, entry: int) -> bool:
        """Models ``folio_matches_swap_entry()``: in the swap cache, at the aligned entry."""
        b = self._base(f)
        if not self.fq[b + F_FLAGS] & PG_SWAPCACHE:
            return False
        nr = 1 << self.fq[b + F_ORDER]
        return self.fq[b + F_SWAP] == entry & ~(nr - 1)
