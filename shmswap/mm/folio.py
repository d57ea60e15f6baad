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

from collections.abc import Callable

import numpy as np

from ..substrate.layout import FOLIO
from ..substrate.locks import LockClass

__all__ = ["Folios", "PG_SWAPCACHE", "PG_DIRTY", "F_ORDER", "FOLIO_WORDS"]

PG_SWAPCACHE = 1
PG_DIRTY = 2
# Word indices of a folio record, and byte offsets of its atomic words (generated from the dtype).
_FW = FOLIO_WORDS = FOLIO.size
F_FLAGS, F_SWAP, F_ORDER, F_OWNER, F_GEN = FOLIO.flags, FOLIO.swap, FOLIO.order, FOLIO.owner, FOLIO.gen
_FB = 8 * _FW
_REF_B, _LOCK_B = 8 * FOLIO.ref, 8 * FOLIO.lock
_FOLIO_LOCK = int(LockClass.FOLIO_LOCK)


class Folios:
    """One process's handle on the folio table."""

    def __init__(self, shm) -> None:
        self.fq, self.fr = shm.fq, shm.fr
        self.per_worker = shm.geo.folios_per_worker
        self.shm = shm
        # Idle ids known to this process, per owning worker (a process may play several).
        self._free: dict[int, set[int]] = {}
        # Told of an id this process freed for an owner it does not play, when the owner must take
        # it back as if all were one process (the deterministic scheduler's processes mode).
        self.foreign_free: Callable[[int, int], None] | None = None

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
        b = f * _FW
        fq = self.fq
        fq[b + F_FLAGS] = 0
        fq[b + F_SWAP] = 0
        fq[b + F_ORDER] = order
        fq[b + F_OWNER] = wid
        fq[b + F_GEN] += 1
        self.fr.store(f * _FB + _REF_B, 1)
        return f

    # -- references -------------------------------------------------------------------------------
    def folio_try_get(self, f: int) -> bool:
        """Models ``folio_try_get()``: take a reference unless the folio is already freed."""
        off = f * _FB + _REF_B
        fr = self.fr
        while True:
            ref = fr.load(off)
            if ref <= 0:
                return False
            if fr.cmpxchg(off, ref, ref + 1) == ref:
                return True

    def folio_ref_add(self, f: int, nr: int) -> None:
        self.fr.fetch_add(f * _FB + _REF_B, nr)

    def folio_put(self, f: int, nr: int = 1) -> bool:
        """Drop ``nr`` references; True if that freed the folio."""
        old = self.fr.fetch_add(f * _FB + _REF_B, -nr)
        if old < nr:
            raise AssertionError(f"folio {f}: refcount underflow ({old} - {nr})")
        if old == nr:
            owner = self.fq[f * _FW + F_OWNER]
            owner_free = self._free.get(owner)
            if owner_free is not None:
                owner_free.add(f)
            elif self.foreign_free is not None:
                self.foreign_free(int(owner), f)
            return True
        return False

    def ref(self, f: int) -> int:
        return self.fr.load(f * _FB + _REF_B)

    # -- lock and flags -----------------------------------------------------------------------------
    def folio_trylock(self, f: int) -> bool:
        return self.fr.trylock(f * _FB + _LOCK_B, _FOLIO_LOCK)

    def folio_lock(self, f: int) -> None:
        self.fr.lock(f * _FB + _LOCK_B, _FOLIO_LOCK)

    def folio_unlock(self, f: int) -> None:
        self.fr.unlock(f * _FB + _LOCK_B, _FOLIO_LOCK)

    def flags(self, f: int) -> int:
        return self.fq[f * _FW + F_FLAGS]

    def set_flags(self, f: int, flags: int) -> None:
        self.fq[f * _FW + F_FLAGS] = flags

    def swap(self, f: int) -> int:
        return self.fq[f * _FW + F_SWAP]

    def set_swap(self, f: int, entry: int) -> None:
        self.fq[f * _FW + F_SWAP] = entry

    def order(self, f: int) -> int:
        return self.fq[f * _FW + F_ORDER]

    def set_swapcache(self, f: int, entry: int) -> None:
        """``folio->swap = entry`` and ``folio_set_swapcache()`` (swap_cache_add_folio)."""
        b = f * _FW
        self.fq[b + F_SWAP] = entry
        self.fq[b + F_FLAGS] |= PG_SWAPCACHE

    def clear_swapcache(self, f: int) -> None:
        """``folio->swap.val = 0`` and ``folio_clear_swapcache()`` (__swap_cache_del_folio)."""
        b = f * _FW
        self.fq[b + F_SWAP] = 0
        self.fq[b + F_FLAGS] &= ~PG_SWAPCACHE

    def folio_test_swapcache(self, f: int) -> bool:
        return bool(self.fq[f * _FW + F_FLAGS] & PG_SWAPCACHE)

    def folio_is_foreign(self, f: int, entry: int) -> bool:
        """Cached for a different entry: what a recycled table or folio can show a reader."""
        b = f * _FW
        nr = 1 << self.fq[b + F_ORDER]
        swap = self.fq[b + F_SWAP]
        return bool(self.fq[b + F_FLAGS] & PG_SWAPCACHE) and swap != 0 and swap != entry & ~(nr - 1)

    def folio_matches_swap_entry(self, f: int, entry: int) -> bool:
        """Models ``folio_matches_swap_entry()``: in the swap cache, at the aligned entry."""
        b = f * _FW
        if not self.fq[b + F_FLAGS] & PG_SWAPCACHE:
            return False
        nr = 1 << self.fq[b + F_ORDER]
        return self.fq[b + F_SWAP] == entry & ~(nr - 1)
