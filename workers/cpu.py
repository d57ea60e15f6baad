"""A CPU worker process: one CPU of the model and the one task that runs there (DESIGN §1).

It attaches to the manager's segments by name (without resource tracking), makes its task current
(lock ownership, lockstat block, RCU reader record, statistics), routes the sleeping table
allocation to the manager through its mailbox, and runs its seeded workload until the run stops.
Then it parks outside any operation (quiescence) while the manager checks the invariants, and on
the manager's word releases everything it holds (its share of swapoff's ``try_to_unuse``).

It ignores SIGINT (the driver turns Ctrl-C into an orderly stop), raises out of any lock wait once
the abort word is set, and exits on its own if the driver disappears.
"""

from __future__ import annotations

import os
import signal
import time

from shmswap import _prim
from shmswap.config import Config
from shmswap.control import (
    W_ABORTED,
    W_FAILED,
    W_PARKED,
    W_RELEASED,
    W_RUNNING,
    Control,
)
from shmswap.preempt import Point, install
from shmswap.proc import set_comm
from shmswap.system import SwapSystem
from workers.workload import Workload

__all__ = ["cpu_main"]

_PARENT_CHECK_EVERY = 256


def _mailbox(conn):
    """The sleeping allocation, served by the manager: send the cluster, sleep for the answer."""
    def sleep_alloc(si, ci: int) -> int:
        conn.send(ci)
        return conn.recv()
    return sleep_alloc


def _reader_window_hook(system, max_s: float):
    """Fault injection at the reader's window (reference §10 W3), as an observer.

    A lockless reader that has loaded a table pointer is held, for at most ``max_s``, until the
    object it points to has been recycled for another cluster with a folio at the reader's offset
    (slab mode), or given back to the page pool or reused (page mode): the rare interleaving the
    oracles are there to catch is made to happen, not hoped for.  A correct RCU keeps the page-mode
    case from ever happening while the reader waits, so that reader just waits out ``max_s``.
    """
    from shmswap.folio import PG_SWAPCACHE
    from shmswap.slab import OBJ_POOL
    objs, tables, folios = system.shm.objs, system.shm.tables_np, system.shm.folios
    page_mode = system.slab.mode == "page"

    def cached_folio(tb: int) -> bool:
        """A folio entry whose folio is published in the swap cache (flags set after the entry)."""
        return bool(tb) and not tb & 1 and bool(folios["flags"][(tb >> 3) - 1] & PG_SWAPCACHE)

    si = system.si

    def own(table: int) -> bool:
        """The table of a cluster this CPU allocates from: it cannot be freed while we wait here."""
        owner = int(objs["owner"][table])
        return any(si.pcp_offset(si.task.cpu, o) >> si.spc_shift == owner for o in range(si.nr_orders))

    def hook(kind: int, table: int, off: int) -> None:
        if kind != Point.READER or own(table):
            return
        gen0 = int(objs["gen"][table])
        deadline = time.monotonic() + max_s
        while time.monotonic() < deadline:
            if objs["state"][table] == OBJ_POOL:
                return
            tb = int(tables[table, off])
            if objs["gen"][table] != gen0 and (page_mode or cached_folio(tb)):
                return
            time.sleep(0.0001)
    return hook


def _pin(wid: int) -> list[int]:
    import psutil
    cores = psutil.Process().cpu_affinity() or list(range(os.cpu_count() or 1))
    target = [cores[wid % len(cores)]]
    psutil.Process().cpu_affinity(target)
    return psutil.Process().cpu_affinity()


def cpu_main(cfg: Config, n_workers: int, names: dict, wid: int, conn, budget: int | None,
             driver_pid: int) -> None:
    """Entry point of CPU worker ``wid``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_comm(f"shmswap-cpu{wid}")
    _prim.set_hook(None)
    system = SwapSystem.attach(cfg, n_workers, names)
    ctl = Control(system.shm)
    try:
        task = system.task(wid)
        system.si.sleep_alloc = _mailbox(conn)
        system.si.on_warn = lambda message: conn.send(("warn", wid, message))
        if cfg.pin:
            ctl.set_affinity(wid, _pin(wid))
        if cfg.reader_delay_us and wid == 0:    # one slow reader; the other CPUs churn
            install(_reader_window_hook(system, cfg.reader_delay_us / 1e6))
        load = Workload(system, task, cfg, cfg.cpus, handoff=system.handoff)
        ctl.set_state(wid, W_RUNNING)
        _run(ctl, load, wid, budget, driver_pid)
        ctl.set_state(wid, W_PARKED)
        if ctl.wait_release(driver_pid):
            load.release_all()
            ctl.set_state(wid, W_RELEASED)
    except _prim.Aborted:
        ctl.set_state(wid, W_ABORTED)
    except BaseException:
        # Whatever this worker holds stays locked: make every waiter give up instead of hanging.
        ctl.set_state(wid, W_FAILED)
        ctl.abort()
        raise
    finally:
        install(None)
        system.shm.close()


def _run(ctl: Control, load: Workload, wid: int, budget: int | None, driver_pid: int) -> None:
    steps = 0
    while not ctl.stopping():
        load.step()
        steps += 1
        ctl.beat(wid, steps)
        if budget is not None and steps >= budget:
            break
        if steps % _PARENT_CHECK_EVERY == 0 and os.getppid() != driver_pid:
            raise _prim.Aborted("the driver is gone")
