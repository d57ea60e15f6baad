"""``--swapoff-every S``: swapoff and swapon of one device while the CPUs run (reference §8, §10 W7).

Every S seconds (multiprocess: the manager's clock; single process: every N steps, see
``steps_between``) the next device, round robin over the swap types, goes through the kernel's
swapoff (mm/swapon.py ``swapoff``: ``del_from_avail_list``, ``wait_for_allocation``,
``try_to_unuse``, the ref drain, ``flush_percpu_swap_cluster``, ``free_cluster_info``), is
accounted as at the end of a run (no table, slot or lost cluster unexplained), and comes back with
``swapon_again`` (the same size, kind, discard setting and requested priority: a device without one
gets the new lowest default priority, as the kernel's swapon does; the per-CPU ``offset[]`` values
stay stale, as in the kernel).

``try_to_unuse`` during a run.  The slots are held by the CPUs (their allocation records) and by
the hand-off ring.  The manager posts a request (generation, swap type) in the control segment;
each worker reads that word between operations (one shared read per step, as for the stop word),
releases its records on the device and acks the generation in its control record; a parked worker
serves it from its wait.  Once every worker has acked, the manager takes the device's records out
of the hand-off ring in one pass under ``handoff_lock`` and frees them, so each record is freed
exactly once: by the worker that holds it, or by the manager if it sat in the ring.  No new slot of
the device can appear after the request: it is posted after ``del_from_avail_list`` cleared
``SWP_WRITEOK`` and ``wait_for_allocation`` let every allocator inside ``cluster_alloc_range``
finish, and every later ``cluster_alloc_range`` on the device fails; an allocation already past it
is in the worker's records before the worker looks at the request.  Then, as the kernel's
``try_to_unuse`` does, the manager waits for ``inuse_pages`` to reach 0; what never reaches it is a
violation, a worker that does not ack is the watchdog's (reported, the run aborted, no hang).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from shmswap.checks.checker import CheckResult, Finding, Violation, check_swapoff
from shmswap.config import Config
from shmswap.mm.alloc_table import LOST_NAMES, LOST_T5, LOST_W12, decode_lost, lost_device, w12_lost_reason
from shmswap.mm.device import swap_usage_in_pages
from shmswap.mm.swap import CLUSTER_FLAG_NONE
from shmswap.mm.swapon import swapoff, swapon_again
from shmswap.model import SWP_TYPE_SHIFT, Model
from shmswap.result import Result
from shmswap.substrate.control import UNUSE_TYPE_BITS, UNUSE_WORD, Control
from shmswap.substrate.handoff import HandoffRing
from shmswap.substrate.stats import Stat
from workers.workload import Workload

__all__ = ["release_device", "UnuseServer", "SwapoffEvents", "steps_between", "INPROCESS_STEPS_PER_S",
           "take_device_records"]

# The single-process runner's clock for --swapoff-every: a swapoff every S * this many steps, so a
# run replays exactly (a nominal rate: 50k to 90k steps/s were measured for small devices).
INPROCESS_STEPS_PER_S = 50_000
_TYPE_MASK = (1 << UNUSE_TYPE_BITS) - 1


def steps_between(every_s: float) -> int:
    """The single-process runner's period for ``--swapoff-every S``: S × INPROCESS_STEPS_PER_S steps."""
    return max(1, round(every_s * INPROCESS_STEPS_PER_S))


def release_device(load: Workload, type: int) -> int:  # noqa: A002 - si->type
    """A CPU's share of ``try_to_unuse(type)``: free its allocation records on that device (the
    task must be current); returns how many."""
    load.complete_writebacks()
    keep, n = [], 0
    for rec in load.live:
        if rec[0] >> SWP_TYPE_SHIFT == type:
            load.release(rec)
            n += 1
        else:
            keep.append(rec)
    if n:
        load.live.clear()
        load.live.extend(keep)
    return n


def take_device_records(handoff: HandoffRing, type: int) -> list[list[int]]:  # noqa: A002 - si->type
    """The hand-off ring's records on swap type ``type``, taken out of it."""
    return handoff.take_matching(lambda rec: rec[0] >> SWP_TYPE_SHIFT == type)


class UnuseServer:
    """A worker's side: notice the manager's request between operations, release, ack."""

    def __init__(self, ctl: Control, load: Workload, wid: int) -> None:
        self.ctl, self.load, self.wid = ctl, load, wid
        self.q = ctl.q
        self.seen = self.q[UNUSE_WORD]
        self.released = 0

    def poll(self) -> None:
        """Serve a new request, if any (the caller's hot loop may compare ``seen`` itself)."""
        if self.q[UNUSE_WORD] != self.seen:
            self.serve()

    def serve(self) -> None:
        word = self.q[UNUSE_WORD]
        self.released += release_device(self.load, word & _TYPE_MASK)
        self.ctl.ack_unuse(self.wid, word >> UNUSE_TYPE_BITS)
        self.seen = word


def _lost_reason(branch: int, wid: int, cpu: int, other: int, word: int) -> str:
    if branch == LOST_W12:
        return w12_lost_reason(wid, cpu, other, lost_device(word))
    if branch == LOST_T5:
        return (f"isolated from free_clusters by worker {wid}; its atomic table allocation failed, and after the "
                f"sleep CPU {cpu}'s per-CPU cluster {other} was used instead (seed T5)")
    return (f"isolated from free_clusters by worker {wid} on CPU {cpu}; the atomic and the sleeping table "
            f"allocations failed (seed T6b)")


class SwapoffEvents:
    """The schedule, the swapoff / account / swapon of one device, and the figures of a run."""

    def __init__(self, model: Model, cfg: Config) -> None:
        self.model, self.system, self.cfg = model, model.system, cfg
        self.every_s = cfg.swapoff_every
        # the priority each swapon asks for (-1: none, a new lowest at each swapon_again)
        self.prios = [prio for _, prio in cfg.device_configs()]
        self.next_type = 0
        self.gen = 0
        self.check = CheckResult()
        self.figures = [{"type": t, "swapoffs": 0, "swapons": 0, "slots_unused": 0, "handoff_unused": 0,
                         "swapoff_ms_total": 0.0, "swapoff_ms_max": 0.0, "lost_at_swapoff": {}}
                        for t in range(len(self.system.devices))]

    def cycle(self, try_to_unuse: Callable[[int], int], idle: Callable[[], None] | None = None) -> int:
        """Swap the next device off and on again; returns its type.

        ``try_to_unuse(type)`` frees every slot of the device the CPUs and the ring hold and
        returns how many hand-off records it freed; ``idle()`` runs while swapoff waits for the
        device's refs.  A ``TimeoutError`` (refs that never drain) or ``_prim.Aborted`` (the
        watchdog) propagates: the device is then left off.
        """
        t = self.next_type
        self.next_type = (t + 1) % len(self.system.devices)
        si = self.system.devices[t]
        fig = self.figures[t]
        model = self.model
        t0 = time.perf_counter()

        def unuse(_si) -> None:
            fig["slots_unused"] += swap_usage_in_pages(si)     # what try_to_unuse has to free
            fig["handoff_unused"] += try_to_unuse(t)
            model.on_manager()

        model.on_manager()
        swapoff(si, unuse, idle=idle)
        ms = (time.perf_counter() - t0) * 1e3
        fig["swapoffs"] += 1
        fig["swapoff_ms_total"] += ms
        fig["swapoff_ms_max"] = max(fig["swapoff_ms_max"], ms)
        self._account(si, fig)
        swapon_again(si, self.prios[t])
        fig["swapons"] += 1
        return t

    def _account(self, si, fig: dict) -> None:
        """check_swapoff's account of the device, and its isolated clusters: a seed T5/T6b/W12
        cluster is a finding (the swapon that follows relists it), any other a violation."""
        shm, n = si.shm, fig["swapoffs"]
        more = CheckResult()
        check_swapoff(shm, more, [], count_folios=False)
        where = f"device {si.type} swapoff #{n} during the run"
        self.check.violations += [replace(v, where=f"{where}: {v.where}") for v in more.violations]
        clu = shm.clu
        for c in (int(c) for c in (clu["flags"] == CLUSTER_FLAG_NONE).nonzero()[0]):
            word = int(clu["lost"][c])
            branch, wid, cpu, other = decode_lost(word)
            if branch in LOST_NAMES:
                name = LOST_NAMES[branch]
                fig["lost_at_swapoff"][name] = fig["lost_at_swapoff"].get(name, 0) + 1
                self.check.findings.append(Finding(f"{where}: cluster {c}",
                                                   _lost_reason(branch, wid, cpu, other, word), name))
            else:
                self.check.violations.append(Violation(f"{where}: cluster {c}",
                                                       f"on no list after swapoff (count {int(clu['count'][c])}, "
                                                       "table NULL) and no recorded seed event explains it",
                                                       "I-conservation"))

    def lost_counts(self) -> list[int]:
        """Per swap type, the lost clusters this run's swapoffs found (``finish_run``'s
        ``lost_at_swapoff``: ``swapon_again`` cleared the device's words)."""
        return [sum(f["lost_at_swapoff"].values()) for f in self.figures]

    def summary(self) -> dict:
        stats = self.system.shm.workers["stats"]
        figures = [dict(f, swapoff_ms_total=round(f["swapoff_ms_total"], 2),
                        swapoff_ms_max=round(f["swapoff_ms_max"], 2)) for f in self.figures]
        return {"every_s": self.every_s, "devices": figures,
                "alloc_no_device": int(stats[:, int(Stat.ALLOC_NO_DEVICE)].sum()),
                "violations": len(self.check.violations), "findings": len(self.check.findings)}

    def add_to(self, res: Result) -> None:
        """The events' figures, violations and findings into the run's result."""
        res.extra["swapoff_events"] = self.summary()
        res.check.violations += self.check.violations
        res.check.findings += self.check.findings
        for row in res.extra.get("devices", ()):
            f = self.figures[row["type"]]
            row.update(swapoffs=f["swapoffs"], swapons=f["swapons"], slots_unused=f["slots_unused"],
                       swapoff_ms_max=round(f["swapoff_ms_max"], 2))
