"""The oracles that watch the lockless readers, as observers (DESIGN §5).

``swap_table_get`` (mm/swap_table.py) tells its observers when a reader has loaded a table pointer
(``reader_window``) and what it read (``reader_read``).  ``ReaderOracle`` judges each read from the
object header of the table it reached:

* a read of **freed memory**: the object went back to the page pool (poisoned), or, in page mode
  (where nothing may reuse a table before the reader's grace period ends), it was reallocated
  since the reader loaded the pointer; the reader then goes on as if it had read NULL;
* the **pipe age** (rcutorture): for a table waiting for its grace period, how many grace periods
  completed since it was freed; 2 or more means a grace period ended under a reader.

The third oracle, a folio accepted for the wrong entry, is the workload's validation after the
lookup (workers/workload.py): only the caller can tell whether it checks what it got.  The oracle
notes (``Current.read_foreign``) whether the folio a read returned was, at that moment, cached for
another entry: the caller may find it already gone from the swap cache, yet it was another's.

In slab mode reuse is allowed (SLAB_TYPESAFE_BY_RCU) and it is the caller's validation that must
catch a foreign folio.  ``--reader broken`` and ``--rcu none`` prove these oracles have teeth.
"""

from __future__ import annotations

from ..mm.slab import OBJ_POOL, OBJ_RCU, TableSlab
from ..mm.swap_table import swp_tb_to_folio
from ..mm.task import Current
from ..substrate.observe import Observer
from ..substrate.stats import Stat

__all__ = ["ReaderOracle"]

_FREED_MEMORY_READS, _PIPE_TOO_OLD = int(Stat.FREED_MEMORY_READS), int(Stat.PIPE_TOO_OLD)


class ReaderOracle(Observer):
    """Catches reads of freed table memory and records the pipe-age histogram."""

    def __init__(self, slab: TableSlab, cur: Current) -> None:
        self.slab = slab
        self.rcu = slab.rcu
        self.cur = cur
        self.page_mode = slab.mode == "page"
        self._gen: dict[int, int] = {}     # per worker: tasks sharing this process interleave

    def _slab(self) -> TableSlab:
        """The slab of the device the reader is reading (``table`` indexes that device's slab)."""
        si = self.cur.reader_si
        return self.slab if si is None else si.slab

    def reader_window(self, wid: int, ci: int, table: int, off: int) -> None:
        self._gen[wid] = self._slab().obj_gen_live(table)

    def reader_read(self, wid: int, ci: int, table: int, off: int, tb: int) -> int:
        slab = self._slab()
        state = slab.obj_state(table)
        cur = self.cur
        if state == OBJ_POOL or (self.page_mode and slab.obj_gen_live(table) != self._gen.get(wid)):
            cur.stat(_FREED_MEMORY_READS)
            cur.read_foreign = False
            return 0
        # What the reader got, as it got it: a folio cached for another entry is foreign even if it
        # leaves the swap cache before the caller looks at it (a reader that does not validate
        # uses it all the same; workers/workload.py judges the caller).
        si = cur.reader_si
        cur.read_foreign = bool(tb and not tb & 1 and si is not None and si.folios.folio_is_foreign(
            swp_tb_to_folio(tb), (ci << si.spc_shift) | off))
        if state == OBJ_RCU:
            age = self.rcu.completed() - slab.obj_gp(table)
            self.rcu.pipe_record(age)
            if age >= 2:
                self.cur.stat(_PIPE_TOO_OLD)
        else:
            self.rcu.pipe_record(0)
        return tb
