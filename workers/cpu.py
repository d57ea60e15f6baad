"""A CPU worker process: one CPU of the model and the one task that runs there (DESIGN §1).

It attaches to the manager's segments by name (without resource tracking), makes its task current
(lock ownership, lockstat block, RCU reader record, statistics), routes the sleeping table
allocation to the manager through its mailbox, and runs its seeded workload until the run stops.
Then it parks outside any operation (quiescence) while the manager checks the invariants, and on
the manager's word releases everything it holds (its share of swapoff's ``try_to_unuse``).

It ignores SIGINT and SIGTERM (the driver turns them into an orderly stop), raises out of any lock wait once
the abort word is set, and exits on its own if the driver disappears.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import psutil

from shmswap.checks.delays import ReaderDelays
from shmswap.checks.faults import ReaderWindowDelay
from shmswap.config import Config
from shmswap.model import Model
from shmswap.substrate import _prim
from shmswap.substrate.control import (
    UNUSE_WORD,
    W_ABORTED,
    W_FAILED,
    W_PARKED,
    W_RELEASED,
    W_RUNNING,
    Control,
)
from shmswap.substrate.lifeline import Lifeline
from shmswap.substrate.observe import Observer
from shmswap.substrate.proc import set_comm
from shmswap.trace import TraceRecorder, share
from workers.swapoff import UnuseServer
from workers.workload import Workload

__all__ = ["worker_ends", "cpu_main"]

_PARENT_CHECK_EVERY = 256


class Mailbox:
    """Device ``type``'s sleeping allocation, served by the manager: send the device and the
    cluster, sleep for the answer (the table, from that device's slab, or -1)."""

    def __init__(self, conn, type: int = 0) -> None:  # noqa: A002 - si->type
        self.conn = conn
        self.type = type
        self.cur = None                         # set once the model is attached: the sleeper's CPU

    def __call__(self, ci: int) -> int:
        cpu = self.cur.task.cpu if self.cur is not None and self.cur.task is not None else -1
        self.conn.send(("sleep", self.type, ci, cpu))
        return self.conn.recv()


class WarnForwarder(Observer):
    """Sends this worker's WARNs to the manager, whose checker reports them."""

    def __init__(self, conn) -> None:
        self.conn = conn

    def warn(self, wid: int, message: str) -> None:
        self.conn.send(("warn", wid, message))


def _pin(wid: int) -> list[int]:
    cores = psutil.Process().cpu_affinity() or list(range(os.cpu_count() or 1))
    target = [cores[wid % len(cores)]]
    psutil.Process().cpu_affinity(target)
    return psutil.Process().cpu_affinity()


def cpu_main(cfg: Config, n_workers: int, names: list[dict[str, str]], wid: int, conn, budget: int | None,
             driver_pid: int) -> None:
    """Entry point of CPU worker ``wid``."""
    # The driver turns SIGINT and SIGTERM into an orderly stop; a signal sent to the whole process
    # group (Ctrl-C on a terminal, systemd stopping a unit) must not kill this process first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    set_comm(f"shmswap-cpu{wid}")
    _prim.set_hook(None)
    driver = Lifeline(driver_pid, every_s=0.05)   # by pid and start time: under forkserver getppid() is the server
    mailboxes: list[Mailbox] = []

    def mailbox(type_: int) -> Mailbox:
        mailboxes.append(Mailbox(conn, type_))
        return mailboxes[-1]

    model = Model.attach(cfg, n_workers, names, wid, observers=[WarnForwarder(conn)], sleep_allocs=mailbox)
    system = model.system
    for box in mailboxes:
        box.cur = system.cur
    ctl = Control(system.shm)
    with worker_ends(ctl, wid, system):
        task = model.tasks[wid]
        if cfg.pin:
            ctl.set_affinity(wid, _pin(wid))
        if cfg.reader_delay_us and wid == 0:    # one slow reader; the other CPUs churn
            model.add_observer(ReaderWindowDelay(system, cfg.reader_delay_us / 1e6))
        delays = None
        if cfg.reader_delays == "on" and not cfg.reader_delay_us:
            # rcutorture's random read-side delays, the short ones: the long ones are the torture
            # readers' (workers/reader.py), which stop no CPU's work while they wait
            delays = model.add_observer(ReaderDelays(system, cfg.seed, wid, long_p=0.0))
        tracer = None
        if cfg.trace:                           # --trace: this CPU's share of the events, shipped at the end
            tracer = model.add_observer(TraceRecorder(wid, share(cfg.trace_limit, cfg.cpus + 1, bool(cfg.sample_ms)),
                                                      cfg.trace_lock_ns))
        load = Workload(system, task, cfg, cfg.cpus, handoff=system.handoff)
        # --swapoff-every: this CPU's share of the manager's try_to_unuse, between operations
        unuse = UnuseServer(ctl, load, wid) if cfg.swapoff_every else None
        ctl.set_state(wid, W_RUNNING)
        _run(ctl, load, wid, budget, driver, unuse)
        if unuse is not None:
            unuse.poll()                        # a request posted before the stop
        if delays is not None:
            delays.flush()
        if tracer is not None:
            system.observers.remove(tracer)
            conn.send(("trace", *tracer.shipment()))
        ctl.set_state(wid, W_PARKED)
        if ctl.wait_release(driver, idle=unuse.poll if unuse is not None else None):
            load.release_all()
            ctl.set_state(wid, W_RELEASED)


@contextmanager
def worker_ends(ctl: Control, wid: int, system) -> Iterator[None]:
    """How a worker process ends, whatever ends it: an abort leaves it W_ABORTED; an exception
    W_FAILED, with the run aborted (whatever it holds stays locked: every waiter must give up
    instead of hanging); and its observers cleared and segments detached in any case."""
    try:
        yield
    except _prim.Aborted:
        ctl.set_state(wid, W_ABORTED)
    except BaseException:
        ctl.set_state(wid, W_FAILED)
        ctl.abort()
        raise
    finally:
        system.observers.clear()
        system.detach()


def _run(ctl: Control, load: Workload, wid: int, budget: int | None, driver: Lifeline,
         unuse: UnuseServer | None = None) -> None:
    steps = 0
    q = ctl.q
    while not ctl.stopping():
        load.step()
        steps += 1
        ctl.beat(wid, steps)
        if unuse is not None and q[UNUSE_WORD] != unuse.seen:
            unuse.serve()
        if budget is not None and steps >= budget:
            break
        if steps % _PARENT_CHECK_EVERY == 0 and not driver.alive():
            raise _prim.Aborted("the driver is gone")
