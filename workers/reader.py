"""A torture reader process: lockless swap-cache lookups that wait inside their read sections.

rcutorture runs reader kthreads beside the updaters (``rcu_torture_reader``): they take random
delays inside their read-side critical sections, now and then long enough to span grace periods,
and they are what catches a broken RCU in an ordinary run.  Here the CPU workers are the updaters
(their own lookups take only short delays: a long one would stop a CPU's work), and each torture
reader (``--torture-readers N``, with ``--reader-delays on``) is a task of its own, a swap-in on no
CPU of the model, preempted inside ``rcu_read_lock()``.  Its worker id comes after the manager's
(``cpus + 1`` on); it has an RCU reader record, so grace periods wait for it, and it never
allocates, frees or takes a lock but the folio lock of a validation.

It looks where something is about to happen (``TortureReader.target``):

* a slot (in the upper half) of a cluster a CPU published (``workload.publish_exiting``) for the
  process it ends next: the table goes when it exits, and is reused for another cluster soon after;
* a slot of the cluster whose table is the last in use on its slab page (no CPU's active slab):
  when that cluster empties the page goes back to the pool, after a grace period;

then makes the lookup with ``swap_cache_get_folio``, validating the folio as a swap-in does (or
not, with ``--reader broken``).  ``checks.delays.ReaderDelays`` decides how long it waits between
loading the table pointer and reading the entry.  With nothing to look at, or a lookup that took no
long delay, it sleeps a millisecond.
"""

from __future__ import annotations

import os
import random
import signal
import time

import numpy as np

from shmswap.checks.delays import ReaderDelays
from shmswap.config import Config
from shmswap.mm.slab import OBJ_INUSE, PAGE_SLAB
from shmswap.mm.swap import SWP_OFFSET_MASK as _OFFSET_MASK
from shmswap.mm.swap_cache import swap_cache_get_folio
from shmswap.mm.system import SwapSystem
from shmswap.model import SWP_TYPE_SHIFT, Model
from shmswap.substrate import _prim
from shmswap.substrate.control import W_PARKED, W_RELEASED, W_RUNNING, Control
from shmswap.substrate.lifeline import Lifeline
from shmswap.substrate.proc import set_comm
from shmswap.substrate.stats import Stat
from workers.cpu import worker_ends
from workers.workload import OP_IDLE, OP_LOOKUP, validate_lookup

__all__ = ["reader_main", "TortureReader", "IDLE_S", "READER_NICE"]

IDLE_S = 0.001              # nothing to look at: sleep this long
READER_NICE = 10
_TORTURE_READS = int(Stat.TORTURE_READS)
_PARENT_CHECK_EVERY = 64


class TortureReader:
    """What one torture reader looks up, and the lookup."""

    def __init__(self, system: SwapSystem, cfg: Config, wid: int) -> None:
        self.system, self.cur, self.folios = system, system.cur, system.folios
        self.devices = system.devices
        self.ncpus = cfg.cpus
        self.spc = cfg.slots_per_cluster
        self.broken = cfg.reader == "broken"
        self.rng = random.Random(cfg.seed * 1_000_037 + wid)

    def step(self) -> bool:
        """One lookup where something is about to happen; False if there was nothing to look at."""
        target = self.target()
        if target is None:
            return False
        si, entry = target
        cur = self.cur
        cur.set_rec_op(OP_LOOKUP)
        cur.stat(_TORTURE_READS)
        folio = swap_cache_get_folio(si, entry)
        if folio >= 0:
            validate_lookup(self.folios, cur, folio, entry, self.broken)
            self.folios.folio_put(folio)
        cur.set_rec_op(OP_IDLE)
        return True

    def target(self) -> tuple | None:
        """(device, slot): half the time in a cluster a CPU's next exit empties, else in the cluster
        whose table is the last in use on its slab page; None if neither exists now."""
        first, second = (self.exiting, self.last_on_page) if self.rng.random() < 0.5 else \
            (self.last_on_page, self.exiting)
        return first() or second()

    def exiting(self) -> tuple | None:
        """A slot of the cluster a random CPU published for its next process to exit."""
        cpu = self.rng.randrange(self.ncpus)
        swp = self.cur.exiting(cpu)
        if not swp:
            return None
        si = self.devices[swp >> SWP_TYPE_SHIFT]
        first = (swp & _OFFSET_MASK) // self.spc * self.spc
        # in the upper half: when the table is reused, the next cluster fills from its start, and the
        # reader sees the allocations come up to its slot (a folio stays there only until its writeback)
        half = self.spc // 2
        return si, first + half + self.rng.randrange(self.spc - half)

    def last_on_page(self) -> tuple | None:
        """A slot of a cluster whose table is alone in use on a slab page no CPU allocates from."""
        si = self.devices[self.rng.randrange(len(self.devices))]
        shm = si.slab.shm
        pages = shm.pages
        lone = (pages["state"] == PAGE_SLAB) & (pages["inuse"] == 1)
        if si.slab.mode == "slab":
            lone &= pages["cpu"] < 0             # (in page mode every table is alone on its page)
        lone = np.flatnonzero(lone)
        if not len(lone):
            return None
        page = int(lone[self.rng.randrange(len(lone))])
        per_page = si.slab.per_page
        objs = shm.objs[page * per_page:(page + 1) * per_page]
        live = np.flatnonzero(objs["state"] == OBJ_INUSE)
        if not len(live):
            return None                          # freed meanwhile
        ci = int(objs["owner"][live[0]])
        if ci < 0:
            return None
        return si, ci * self.spc + self.rng.randrange(self.spc)


def reader_main(cfg: Config, n_workers: int, names: list[dict[str, str]], wid: int, driver_pid: int) -> None:
    """Entry point of a torture reader process (worker ``wid``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # the driver turns them into an orderly stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    set_comm(f"shmswap-rdr{wid - cfg.cpus - 1}")
    os.nice(READER_NICE)        # a waking reader must not push a CPU worker (a lock holder) off its core
    _prim.set_hook(None)
    driver = Lifeline(driver_pid, every_s=0.05)
    model = Model.attach(cfg, n_workers, names, wid)
    system = model.system
    ctl = Control(system.shm)
    with worker_ends(ctl, wid, system):
        delays = model.add_observer(ReaderDelays(system, cfg.seed, wid, long_p=1.0, last_p=1.0, budget=None))
        reader = TortureReader(system, cfg, wid)
        ctl.set_state(wid, W_RUNNING)
        steps = 0
        while not ctl.stopping():
            waited = delays.long
            if not reader.step() or delays.long == waited:
                time.sleep(IDLE_S)          # nothing to look at, or nothing to wait for there
            steps += 1
            ctl.beat(wid, steps)
            if steps % _PARENT_CHECK_EVERY == 0 and not driver.alive():
                raise _prim.Aborted("the driver is gone")
        delays.flush()
        ctl.set_state(wid, W_PARKED)
        if ctl.wait_release(driver):
            ctl.set_state(wid, W_RELEASED)
