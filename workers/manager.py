"""The manager process: owner of the segments, the kernel's background work, and the watchdog.

It creates the device (swapon) and unlinks it at the end; serves the CPU workers' sleeping table
allocations through their mailboxes (``kmem_cache_zalloc(GFP_KERNEL)``: latency and failure
injectable); runs the grace periods and the deferred table frees (call_rcu), the discard work and
the full-cluster reclaim work; and watches the workers: a dead worker (psutil) or one that makes no
progress for ``--watchdog-s`` is reported with its CPU, its operation, the cluster it had isolated
and the locks it holds, its RCU reader is declared quiescent, and the run stops with exit status 1.
It also watches the driver and cleans up if the driver disappears.

At the end it waits for every worker to park outside any operation, runs the invariant checker at
that quiescence, lets the workers release what they hold, drains the hand-off ring, runs swapoff
and accounts for every table object.
"""

from __future__ import annotations

import heapq
import os
import signal
import threading
import time
import traceback

import numpy as np
import psutil
from multiprocess.connection import wait

from shmswap.config import Config
from shmswap.finish import finish_run
from shmswap.mm.device import swap_usage_in_pages
from shmswap.model import Model
from shmswap.substrate import _prim
from shmswap.substrate.control import (
    STATE_NAMES,
    W_ABORTED,
    W_FAILED,
    W_PARKED,
    W_RELEASED,
    W_RUNNING,
    W_STARTING,
    Control,
)
from shmswap.substrate.lifeline import Lifeline
from shmswap.substrate.locks import LockClass
from shmswap.substrate.proc import set_comm
from shmswap.trace import TraceRecorder, counter_budget, share, trace_document, write_trace
from workers.memory import PssMeter
from workers.sampler import Sampler
from workers.swapoff import SwapoffEvents, take_device_records
from workers.workload import OP_NAMES, drain_handoff, release_record

__all__ = ["manager_main", "Manager"]

TICK_S = 0.002
PROGRESS_EVERY_S = 0.2
_DONE = {W_PARKED, W_RELEASED, W_ABORTED, W_FAILED}    # a worker that no longer runs its workload
GP_EVERY_S = 0.02        # the kernel's RCU runs grace periods whether or not frees wait for one
WATCH_EVERY_S = 0.05


def manager_main(cfg: Config, n_workers: int, ctl_conn, worker_conns: list, driver_pid: int) -> None:
    """Entry point of the manager process."""
    # The driver turns SIGINT and SIGTERM into an orderly stop; a signal sent to the whole process
    # group (Ctrl-C on a terminal, systemd stopping a unit) must not kill this process first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    set_comm("shmswap-manager")
    _prim.set_hook(None)
    model = None
    watch = Watch()
    try:
        model = Model.owner(cfg, n_workers, supervisor=watch)
        ctl_conn.send(("names", model.system.names()))     # every device's segments
        result = Manager(model, cfg, ctl_conn, worker_conns, driver_pid, watch).run()
        ctl_conn.send(("result", result))
    except BaseException:
        try:
            ctl_conn.send(("error", traceback.format_exc()))
        except (OSError, ValueError):
            pass
    finally:
        if model is not None:
            model.close()


class Watch:
    """What the manager's RCU asks its watchdog: is a reader alive, is the run aborting."""

    def __init__(self) -> None:
        self.pids: dict[int, int] = {}          # worker id -> pid (the CPUs and the torture readers)
        self.ctl: Control | None = None

    def reader_alive(self, w: int) -> bool:
        return w not in self.pids or _pid_alive(self.pids[w])

    def aborting(self) -> bool:
        return self.ctl is not None and self.ctl.aborted()


def _pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Manager:
    def __init__(self, model: Model, cfg: Config, ctl_conn, worker_conns: list, driver_pid: int,
                 watch: Watch) -> None:
        self.model, self.system, self.cfg = model, model.system, cfg
        system = model.system
        self.ctl = Control(system.shm)
        self.watch = watch
        watch.ctl = self.ctl
        self.ctl_conn = ctl_conn
        self.conns = list(worker_conns)
        self.driver_pid = driver_pid
        self.driver = Lifeline(driver_pid)    # not getppid(): under forkserver that is the fork server
        self.ncpu = cfg.cpus
        # the processes the manager watches: the CPUs, then the torture readers (after its own id)
        self.watched = list(range(self.ncpu)) + list(range(self.ncpu + 1, model.n_workers))
        self.ctl.set("driver_pid", driver_pid)
        self.ctl.set("manager_pid", os.getpid())
        self.pids: dict[int, int] = {}
        self.events: list[str] = []
        self.notes: list[str] = []
        self.worker_warnings: list[str] = []
        self.last_steps = [0] * model.n_workers
        self.last_progress: list[float | None] = [None] * model.n_workers
        self.sleep_served = 0
        # Sleeping allocations wait out their latency in a queue here, not in the manager's loop:
        # N sleepers overlap as they would in the kernel, and the loop keeps running grace periods.
        self.latency_s = cfg.sleep_latency_us / 1e6
        self.sleepers: list[tuple[float, int, object, int, int]] = []   # (due, id, conn, type, cluster)
        self._watching = threading.Event()
        # --swapoff-every: one device swapped off and on again every S seconds (workers/swapoff.py)
        self.swapoffs = SwapoffEvents(model, cfg) if cfg.swapoff_every else None
        # --sample-ms and --trace: a sampler read from the loop, a recorder among the observers.
        self.sampler = Sampler(system, cfg.sample_ms, cfg.cpus) if cfg.sample_ms else None
        self.tracer: TraceRecorder | None = None
        self.traces: dict[int, tuple] = {}
        if cfg.trace:
            self.trace_t0 = _prim.now_ns()
            self.tracer = model.add_observer(TraceRecorder(self.ncpu, share(cfg.trace_limit, self.ncpu + 1,
                                                                          bool(cfg.sample_ms)),
                                                           cfg.trace_lock_ns))

    # -- main loop ----------------------------------------------------------------------------------
    def run(self):
        self._await_pids()
        self._await_running()
        self.meter = PssMeter().start()
        self.meter.watch(list(self.pids.values()))
        start = time.monotonic()
        self.ctl.set("started", _prim.now_ns())
        deadline = None if self.cfg.ops else start + float(self.cfg.seconds)
        if self.sampler is not None:
            self.sampler.start = self.sampler.next_at = start
        watchdog = threading.Thread(target=self._watch, name="watchdog", daemon=True)
        watchdog.start()
        try:
            self._loop(start, deadline)
        except _prim.Aborted:
            pass
        finally:
            self._watching.set()
            watchdog.join()
        if self.events:
            self._stop_all()
        duration = time.monotonic() - start
        return self._finish(duration)

    def _loop(self, start: float, deadline: float | None) -> None:
        next_progress = next_gp = start
        next_swapoff = start + self.cfg.swapoff_every
        while not self._all_in(_DONE) and not self.events:
            self._serve(TICK_S)
            now = time.monotonic()
            self.system.run_pending_work(grace_period=False)     # work items, callbacks already due
            if self._grace_period(now >= next_gp):
                next_gp = now + GP_EVERY_S
            if self.sampler is not None:
                self.sampler.tick(now)
            if self.swapoffs is not None and now >= next_swapoff and not self.ctl.stopping():
                self._swapoff_cycle()
                next_swapoff = time.monotonic() + self.cfg.swapoff_every
            if (deadline is not None and now >= deadline) or self._all_in(_DONE, range(self.ncpu)):
                self.ctl.stop()                 # (the CPUs spent their --ops: the torture readers stop too)
            if now >= next_progress:
                self._send(("progress", self._total_steps(), now - start))
                next_progress = now + PROGRESS_EVERY_S

    def _grace_period(self, due: bool) -> bool:
        """Advance the grace period under way, or start one if ``due`` or a free waits for one, without
        waiting for readers (a reader waiting in its section must not stop the sleepers being served);
        when one completes, run the RCU callbacks.  True then."""
        rcu, slabs = self.system.rcu, self.system.slabs
        if not (due or rcu.grace_period_under_way or any(slab.pending() for slab in slabs)):
            return False
        if not rcu.poll_grace_period():
            return False
        for slab in slabs:
            slab.process_deferred()
        return True

    def _await_pids(self) -> None:
        while True:
            if self.ctl_conn.poll(0.05):
                msg = self.ctl_conn.recv()
                if msg[0] == "pids":              # the CPUs', then the torture readers'
                    self.pids = dict(zip(self.watched, msg[1], strict=True))
                    self.watch.pids = self.pids
                    return
            if not self.driver.alive():
                raise RuntimeError("the driver disappeared before starting the workers")

    def _await_running(self, timeout_s: float = 60.0) -> None:
        """The run's clock starts when every worker runs: under spawn and forkserver a worker takes
        a second or more to start (imports, attach), and a short run would otherwise be over before
        it began.  A worker that dies meanwhile is left to the watchdog."""
        deadline = time.monotonic() + timeout_s
        while (any(self.ctl.state(w) == W_STARTING and self._alive(w) for w in self.watched)
               and not self.events and time.monotonic() < deadline):
            self._serve(TICK_S)
            if not self.driver.alive():
                raise RuntimeError("the driver disappeared while the workers started")

    def _serve(self, timeout: float) -> None:
        """Answer sleeping table allocations, worker warnings and control messages."""
        if self.sleepers:
            timeout = min(timeout, max(0.0, self.sleepers[0][0] - time.monotonic()))
        for conn in wait(self.conns + [self.ctl_conn], timeout):
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                if conn is self.ctl_conn:
                    self.events.append("the driver's control pipe closed")
                    self.ctl.abort()
                else:
                    self.conns.remove(conn)
                continue
            if conn is self.ctl_conn:
                if msg[0] == "stop":
                    why = msg[1] if len(msg) > 1 else "SIGINT"
                    self.notes.append(f"stopped early by the driver ({'Ctrl-C' if why == 'SIGINT' else why})")
                    self.ctl.stop()
            elif msg[0] == "sleep":           # a Mailbox: ("sleep", the device's type, the cluster, the CPU)
                heapq.heappush(self.sleepers, (time.monotonic() + self.latency_s, id(conn), conn, *msg[1:]))
            elif msg[0] == "trace":
                self.traces[msg[1]] = msg[1:]
            else:
                self.worker_warnings.append(f"worker {msg[1]}: {msg[2]}")
        self._wake_sleepers()

    def _wake_sleepers(self) -> None:
        now = time.monotonic()
        while self.sleepers and self.sleepers[0][0] <= now:
            _, _, conn, dtype, ci, cpu = heapq.heappop(self.sleepers)
            slab = self.system.slabs[dtype]      # the sleeper's device: its own table slab
            table = slab.alloc_sleeping(ci, cpu if cpu >= 0 else None)   # from the sleeper's CPU's slab
            self.sleep_served += 1
            if self.tracer is not None:
                self.tracer.instant("sleeping table alloc served", {"device": dtype, "cluster": ci, "table": table})
            try:
                conn.send(table)
            except (OSError, ValueError):
                # The sleeper died; the watchdog reports it.  The table goes back unused, to its slab.
                if table >= 0:
                    slab.free(table)
                if conn in self.conns:
                    self.conns.remove(conn)

    def _send(self, msg) -> None:
        try:
            self.ctl_conn.send(msg)
        except (OSError, ValueError):
            pass

    # -- supervision ----------------------------------------------------------------------------------
    def _all_in(self, states: set[int], who=None) -> bool:
        return all(self.ctl.state(w) in states for w in (self.watched if who is None else who))

    def _total_steps(self) -> int:
        return sum(self.ctl.steps(w) for w in range(self.ncpu))

    def _alive(self, w: int) -> bool:
        return _pid_alive(self.pids[w])

    def _watch(self) -> None:
        """The watchdog thread: it must run even while the main loop waits on a lock or a reader."""
        while not self._watching.wait(WATCH_EVERY_S):
            if self._check_workers(time.monotonic()) or self._check_driver():
                self.ctl.abort()          # lock waiters and grace periods give up; the loop ends
                return

    def _check_driver(self) -> bool:
        if not self.driver.alive():
            self.events.append(f"the driver (pid {self.driver_pid}) is gone")
            return True
        return False

    def _check_workers(self, now: float) -> bool:
        """A failed or dead worker, or one without progress for --watchdog-s, stops the run."""
        bad = False
        for w in self.watched:
            state = self.ctl.state(w)
            if state == W_FAILED:
                self.events.append(f"worker {w} failed with an exception (its traceback is on stderr): "
                                   f"{self._describe(w)}")
                bad = True
                continue
            if state in (W_RELEASED, W_PARKED, W_ABORTED):
                continue
            if not self._alive(w):
                self.events.append(f"worker {w} (pid {self.pids[w]}) died: {self._describe(w)}")
                self.system.shm.readers["dead"][w] = 1      # a dead reader is quiescent
                bad = True
                continue
            if state != W_RUNNING:
                continue
            steps = self.ctl.steps(w)
            if self.last_progress[w] is None or steps != self.last_steps[w]:
                self.last_steps[w], self.last_progress[w] = steps, now
            elif now - self.last_progress[w] > self.cfg.watchdog_s:
                self.events.append(f"worker {w} (pid {self.pids[w]}) made no progress for "
                                   f"{self.cfg.watchdog_s:g} s: {self._describe(w)}")
                bad = True
        return bad

    def _describe(self, w: int) -> str:
        rec = self.system.shm.workers["rec"][w]
        op = OP_NAMES.get(int(rec["op"]), str(int(rec["op"])))
        cluster = int(rec["cluster"])
        held = self.locks_held_by(w)
        return (f"running as CPU {int(rec['cpu'])}, {op}"
                f"{f', cluster {cluster} isolated' if cluster >= 0 and rec['op'] else ''}; "
                f"locks held: {', '.join(held) if held else 'none'}")

    def locks_held_by(self, w: int) -> list[str]:
        """Every lock word whose owner field names worker ``w``."""
        me = w + 1
        held = []
        for dshm in self.system.device_shms:       # every device's locks; device 0's unprefixed
            dev = f"device {dshm.type} " if dshm.type else ""
            held += [f"{dev}ci_lock of cluster {c}" for c in np.flatnonzero((dshm.clu["lock"] >> 32) == me)]
            for name, cls in (("si_lock", LockClass.SI_LOCK), ("global_lock", LockClass.GLOBAL_CLUSTER_LOCK),
                              ("avail_lock", LockClass.SWAP_AVAIL_LOCK)):
                if int(dshm.dev[name]) >> 32 == me:
                    held.append(f"{dev}{cls.label}")
            if int(dshm.slab_hdr["lock"]) >> 32 == me:
                held.append(f"{dev}slab_lock")
        shm = self.system.shm
        held += [f"local_lock of CPU {c}" for c in np.flatnonzero((shm.pcp["lock"] >> 32) == me)]
        return held

    def _stop_all(self) -> None:
        """Abort: waiters raise, the living stop; whoever does not exit soon is killed."""
        self.ctl.abort()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            self._serve(0.01)
            if all(not self._alive(w) or self.ctl.state(w) in (W_ABORTED, W_RELEASED, W_PARKED, W_FAILED)
                   for w in self.watched):
                break
        for w in self.watched:
            if self._alive(w):
                try:
                    os.kill(self.pids[w], signal.SIGKILL)
                except ProcessLookupError:
                    pass

    # -- the end of a run --------------------------------------------------------------------------------
    def _finish(self, duration: float):
        self._send(("phase", "checking invariants"))
        system = self.system
        system.rcu.finish_grace_period()         # the workers are parked: no reader holds it back now
        readers = len(self.watched) - self.ncpu
        notes = [f"{self.ncpu} CPU worker processes, a manager"
                 f"{f' and {readers} torture reader processes' if readers else ''}; "
                 f"{self.sleep_served} sleeping table allocations served by the manager"] + self.notes
        if self.ncpu > (os.cpu_count() or 1):
            notes.append(f"{self.ncpu} CPUs on {os.cpu_count()} cores: lock holders get preempted")
        if self.sampler is not None:
            self.sampler.tick(force=True)            # the last point: the state the run ended in
        end_ns = _prim.now_ns()
        self._collect_traces()
        res = finish_run(self.model, duration, notes, warnings=self._warnings, try_to_unuse=self._try_to_unuse,
                         events=self.events, gp_latencies_ns=system.rcu.latencies_ns,
                         lost_at_swapoff=self.swapoffs.lost_counts() if self.swapoffs is not None else ())
        if self.swapoffs is not None:
            self.swapoffs.add_to(res)
        if self.sampler is not None:
            res.extra["samples"] = self.sampler.samples
            res.extra["sampling"] = self.sampler.summary()
        if self.tracer is not None:
            res.extra["trace"] = self._write_trace(res, end_ns)
        res.extra["workers"] = [{"wid": w, "pid": self.pids[w], "state": STATE_NAMES.get(self.ctl.state(w)),
                                 "steps": self.ctl.steps(w), "affinity": self.ctl.affinity(w)}
                                for w in self.watched]
        res.extra["handoff"] = system.handoff.statistics()
        memory = self.meter.stop()        # sampled from the workload's start to the end of swapoff
        memory["shm_touched_mib"] = round(system.shm.shm_bytes_touched() / 2**20, 1)
        res.extra["memory"] = memory
        return res

    # -- --trace ------------------------------------------------------------------------------------------
    def _collect_traces(self, timeout_s: float = 5.0) -> None:
        """Every worker ships its trace buffer before parking: wait (serving) for those not yet read."""
        if self.tracer is None:
            return
        deadline = time.monotonic() + timeout_s
        while (len(self.traces) < self.ncpu and self.conns and time.monotonic() < deadline
               and any(self._alive(w) or self.ctl.state(w) == W_PARKED for w in range(self.ncpu)
                       if w not in self.traces)):
            self._serve(0.01)

    def _write_trace(self, res, end_ns: int) -> dict:
        """Merge the buffers (the CPUs', the manager's, the samples as counters, the findings); write."""
        cfg = self.cfg
        self.model.system.observers.remove(self.tracer)
        shipments = [self.traces[w] for w in sorted(self.traces)] + [self.tracer.shipment()]
        counters = []
        samples = self.sampler.samples if self.sampler is not None else []
        room = counter_budget(cfg.trace_limit, bool(samples)) // 2
        step = max(1, -(-len(samples) // room)) if room else 1
        for s in samples[::step]:
            ts = int((self.sampler.start + s["t"]) * 1e9)     # time.monotonic is CLOCK_MONOTONIC too
            counters.append((ts, "tables live", {"live": s["tables_live"]}))
            counters.append((ts, "ops/s", {"ops/s": s["ops_per_s"]}))
        names = {w: f"CPU {w}" for w in range(self.ncpu)} | {self.ncpu: "manager"}
        doc = trace_document(shipments, names, self.trace_t0, cfg.trace_limit, end_ns=end_ns,
                             findings=[f.as_dict() for f in res.check.findings], counters=counters,
                             other={"cpus": self.ncpu, "lock_wait_threshold_ns": cfg.trace_lock_ns,
                                    "missing_workers": [w for w in range(self.ncpu) if w not in self.traces]})
        out = {"path": cfg.trace, "events": len(doc["traceEvents"]), "dropped": doc["otherData"]["dropped"],
               "limit": cfg.trace_limit}
        try:
            out["bytes"] = write_trace(cfg.trace, doc)
            res.notes.append(f"trace: {out['events']:,} events ({out['dropped']:,} over --trace-limit dropped), "
                             f"{out['bytes']:,} bytes written to {cfg.trace}")
        except OSError as e:
            out["error"] = f"cannot write {cfg.trace!r}: {e.strerror}"
            res.notes.append(f"--trace: {out['error']}")
        return out

    def _warnings(self) -> list[str]:
        return self.worker_warnings + self.model.warnings

    # -- --swapoff-every ----------------------------------------------------------------------------
    def _swapoff_cycle(self) -> None:
        """One device off and on again while the CPUs run; serving the mailboxes while swapoff
        waits for the refs (a sleeping allocation on the device holds one)."""
        try:
            self.swapoffs.cycle(self._unuse_during_run, idle=lambda: self._serve(TICK_S / 2))
        except TimeoutError as e:
            self.events.append(f"swapoff during the run: {e}")
            self.ctl.abort()

    def _unuse_during_run(self, t: int) -> int:
        """``try_to_unuse(t)`` during the run: post the request, wait for every worker's ack (they
        release their records on device ``t``), free the ring's records of the device, then wait
        for ``inuse_pages`` to reach 0 as the kernel's loop does.  Returns the ring records freed."""
        system, ctl, events = self.system, self.ctl, self.swapoffs
        events.gen += 1
        gen = events.gen
        ctl.post_unuse(gen, t)
        limit = max(30.0, self.cfg.watchdog_s)
        deadline = time.monotonic() + limit
        while any(ctl.unuse_acked(w) != gen for w in range(self.ncpu)):
            self._serve(TICK_S / 2)
            system.run_pending_work(grace_period=any(slab.pending() for slab in system.slabs))
            if self.events or ctl.aborted():
                raise _prim.Aborted(f"swapoff of device {t}: the run was aborted during try_to_unuse")
            if time.monotonic() > deadline:
                late = [w for w in range(self.ncpu) if ctl.unuse_acked(w) != gen]
                self.events.append(f"swapoff of device {t}: workers {late} did not release their slots "
                                   f"(try_to_unuse) within {limit:g} s: "
                                   + "; ".join(self._describe(w) for w in late))
                raise _prim.Aborted("try_to_unuse timed out")
        self.model.on_manager()
        si = system.devices[t]
        taken = take_device_records(system.handoff, t)
        for rec in taken:
            release_record(si, rec)
        settle = time.monotonic() + 1.0
        while swap_usage_in_pages(si) and time.monotonic() < settle:     # left to check_swapoff
            self._serve(TICK_S / 2)
            system.run_pending_work(grace_period=any(slab.pending() for slab in system.slabs))
        return len(taken)

    def _try_to_unuse(self) -> dict:
        """swapoff's ``try_to_unuse``: the workers release their slots, then the hand-off ring drains."""
        self._send(("phase", "swapoff"))
        system = self.system
        self.ctl.release()
        deadline = time.monotonic() + max(30.0, self.cfg.watchdog_s)
        while not self._all_in({W_RELEASED, W_ABORTED, W_FAILED}):
            self._serve(TICK_S)
            system.run_pending_work(grace_period=any(slab.pending() for slab in system.slabs))
            if time.monotonic() > deadline or any(not self._alive(w) and self.ctl.state(w) != W_RELEASED
                                                  for w in self.watched):
                raise TimeoutError("workers did not release their slots")
        self.model.on_manager()
        return {"handoff_drained": drain_handoff(system.si, system.handoff)}
