"""The kernel's deferred work, run off the allocation path: the manager's duties (DESIGN §1, §5).

* ``swap_discard_work`` when a free scheduled it (discard never runs under the local lock);
* ``swap_reclaim_work`` when an allocation filled the device while swap was over half full;
* a grace period when table frees wait for one, then the RCU callbacks (pages back to the pool).

In a single-process run the driver calls ``run_pending_work`` between operations; the runtime's
manager process calls it on its own schedule.
"""

from __future__ import annotations

from .allocator import flush_scheduled_work

__all__ = ["run_pending_work"]


def run_pending_work(system, grace_period: bool | None = None) -> None:
    """Run the scheduled work items; a grace period if asked, or (None) if frees wait for one."""
    flush_scheduled_work(system.si)
    # Callbacks whose grace period already elapsed first: a reader inside its section must not
    # hold back memory that no longer needs it (and with ``--rcu none`` none needs one).
    system.slab.process_deferred()
    if grace_period or (grace_period is None and system.shm.slab_hdr["npending"]):
        system.rcu.synchronize_rcu()
        system.slab.process_deferred()
