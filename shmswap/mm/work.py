"""The device's work items and the kernel's deferred work, run off the allocation path.

* ``swap_discard_work`` when a free scheduled it (discard never runs under the local lock);
* ``swap_reclaim_work`` when an allocation filled the device while swap was over half full;
* a grace period when table frees wait for one, then the RCU callbacks (pages back to the pool).

In a single-process run the runner calls ``run_pending_work`` between operations; the manager
process calls it on its own schedule (DESIGN §1, §5).  Models ``swap_discard_work`` and the
``flush_work`` of both items that swapoff does.
"""

from __future__ import annotations

from .cluster import swap_do_scheduled_discard
from .device import SwapInfo
from .rcu import Rcu
from .reclaim import swap_reclaim_work
from .slab import TableSlab

__all__ = ["swap_discard_work", "flush_scheduled_work", "run_pending_work"]


def swap_discard_work(si: SwapInfo) -> bool:
    """Models ``swap_discard_work()``: the discard workqueue item."""
    si.take_discard_work()
    return swap_do_scheduled_discard(si)


def flush_scheduled_work(si: SwapInfo) -> None:
    """``flush_work`` of both work items: run whichever a free or an allocation scheduled."""
    if si.take_discard_work():
        swap_do_scheduled_discard(si)
    if si.take_reclaim_work():
        swap_reclaim_work(si)


def run_pending_work(si: SwapInfo, slab: TableSlab, rcu: Rcu, grace_period: bool | None = None) -> None:
    """Run the scheduled work items; a grace period if asked, or (None) if frees wait for one."""
    flush_scheduled_work(si)
    # Callbacks whose grace period already elapsed first: a reader inside its section must not
    # hold back memory that no longer needs it (and with ``--rcu none`` none needs one).
    slab.process_deferred()
    if grace_period or (grace_period is None and slab.pending()):
        rcu.synchronize_rcu()
        slab.process_deferred()
