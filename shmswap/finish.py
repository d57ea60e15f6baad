"""The end of a run, one path for the single-process and the multiprocess runs (DESIGN §1, §8).

At quiescence (every CPU parked outside any operation):

1. the manager's pending work (discard, reclaim, grace periods, deferred frees);
2. the test-only injected fault, if configured (``--inject-bug lose-cluster``);
3. the invariant check, with the watchdog's events as violations;
4. the result, collected from the shared state;
5. swapoff of every device (the last swapped on first) in the kernel's order, whose
   ``try_to_unuse`` the runner supplies, run once, in the first swapoff (the in-process runner
   frees every task's slots itself; the manager lets the worker processes do it), for every device;
6. the account after swapoff, per device: no table, slot, folio reference or new WARN may remain.

An aborted run (a dead or stuck worker) stops after step 4: its state is not quiescent, and the
report says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from .checks.checker import CheckResult, Violation, check_swapoff
from .mm.swap import SWAP_USAGE_COUNTER_MASK
from .mm.swapon import swapoff
from .model import Model
from .result import Result, collect

__all__ = ["finish_run"]


def device_figures(system, lost_at_swapoff: Sequence[int] = ()) -> list[dict]:
    """Per device: kind, discard setting, size, priority, usage, W12 events and the clusters the seed
    lost on it; its table slab (``Result.tables`` is their sum)."""
    out = []
    for si in system.devices:
        shm = si.shm
        dev, hdr = shm.dev, shm.slab_hdr
        out.append({"type": si.type, "kind": "ssd" if si.ssd else "hdd", "discard": shm.cfg.discard,
                    "slots": int(dev["max"]),
                    "prio": int(dev["prio"]), "pages": int(dev["pages"]),
                    "inuse_pages": int(dev["inuse_pages"]) & SWAP_USAGE_COUNTER_MASK,
                    "on_avail": int(dev["on_avail"]), "w12_events": int(dev["xdev"]),
                    # with the lost clusters this run's swapoffs found (swapon_again clears the words)
                    "lost_clusters": int((shm.clu["lost"] != 0).sum()) + _lost_before(lost_at_swapoff, si.type),
                    "live_tables": int(hdr["live"]), "peak_tables": int(hdr["peak"]),
                    "atomic_allocs": int(hdr["atomic_allocs"]), "sleep_allocs": int(hdr["sleep_allocs"]),
                    "table_frees": int(hdr["frees"])})
    return out


def _lost_before(lost_at_swapoff: Sequence[int], type: int) -> int:  # noqa: A002 - si->type
    """The lost clusters earlier swapoffs found on device ``type`` (0 without a count)."""
    return int(lost_at_swapoff[type]) if type < len(lost_at_swapoff) else 0


def finish_run(model: Model, duration_s: float, notes: list[str], *, warnings: Callable[[], list[str]],
               try_to_unuse: Callable[[], dict], events: list[str] = (),
               gp_latencies_ns: list[int] | None = None, lost_at_swapoff: Sequence[int] = ()) -> Result:
    """Check, collect, swapoff and account; ``warnings()`` gives every WARN text seen so far;
    ``lost_at_swapoff[type]``: the lost clusters the run's swapoffs found on each device
    (``--swapoff-every``, workers/swapoff.py), added to the device rows."""
    cfg = model.cfg
    model.on_manager()
    if not events:
        model.system.run_pending_work()
    if cfg.inject_bug == "lose-cluster":
        model.inject_lost_cluster()
    chk = model.check(warnings())
    for e in events:
        chk.violations.append(Violation("watchdog", e, "watchdog"))
    res = collect(model.system, chk, duration_s, notes, gp_latencies_ns=gp_latencies_ns)
    if len(model.system.devices) > 1:
        res.extra["devices"] = device_figures(model.system, lost_at_swapoff)
    if events:
        res.extra["watchdog"] = list(events)
        res.notes.append("the run was aborted: the invariant check ran on a state that is not quiescent "
                         "(a worker stopped mid-operation), so some of its violations may follow from that")
        res.notes.append("swapoff skipped: the run was aborted")
        return res
    outcome: dict = {}

    def unuse(_si) -> None:
        if not outcome:               # the runner's try_to_unuse frees every device's slots, once
            outcome.update(try_to_unuse(), released=True)
        model.on_manager()
        model.system.run_pending_work()

    model.on_manager()
    warned = len(warnings())
    system = model.system
    try:
        for si in reversed(system.devices):
            swapoff(si, unuse)
            system.run_pending_work()
    except TimeoutError as e:
        res.check.violations.append(Violation("swapoff", str(e), "watchdog"))
        return res
    outcome.pop("released", None)
    res.extra["swapoff"] = account = check_swapoff(system.shm, res.check, warnings()[warned:])
    if len(system.devices) > 1:
        account["devices"] = [dict(account, type=0)]
        for shm in system.device_shms[1:]:
            more = CheckResult(checked=[], violations=[])
            figures = check_swapoff(shm, more, [])
            res.check.violations += [replace(v, where=f"device {shm.type} {v.where}") for v in more.violations]
            account["devices"].append(dict(figures, type=shm.type))
            account["tables_left"] += figures["tables_left"]
            account["inuse_after"] += figures["inuse_after"]
    account.update(outcome)
    return res
