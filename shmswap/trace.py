"""Trace export: a run's events as Chrome trace-event JSON, which Perfetto's UI opens (``--trace``).

``TraceRecorder`` is an observer (``substrate/observe.py``): each process of a run (every CPU
worker and the manager) installs one when ``--trace`` is set, and it buffers that process's events
as compact tuples, at most its share of ``--trace-limit``; what does not fit is counted, not kept.
Timestamps come from ``_prim.now_ns()`` (CLOCK_MONOTONIC, the same clock in every process).  At the
end each worker ships its buffer to the manager through its pipe, and ``trace_document`` merges the
buffers into one document: one track (``tid``) per CPU worker and one for the manager, in one
process (``pid`` 1, the run).

Events: lock waits of at least ``--trace-lock-ns`` (``X``, the wait), table sleeps (``X``, from the
sleep to the wake-up), wake-ups and migrations, table allocations and frees, grace periods (``X``),
WARNs (``i``), the manager's samples (``C``, with ``--sample-ms``) and the checker's findings
(global ``i`` events at the end).  Nothing here is called by the allocator except through the
observer hooks, and with ``--trace`` off nothing is installed.

Lock waits arrive through the C module's preemption-point hook, which then calls into Python only
after a contended acquire (``set_hook_points``): an uncontended lock costs what it costs untraced.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from .substrate import _prim
from .substrate.files import write_atomically
from .substrate.locks import LockClass
from .substrate.observe import Observer

__all__ = ["TraceRecorder", "trace_document", "write_trace", "TRACE_PID", "RESERVED_EVENTS", "share",
           "counter_budget"]

TRACE_PID = 1
RESERVED_EVENTS = 64          # metadata, findings and counters come out of this part of the limit
_MAX_FINDINGS = 32
_LOCK_NAMES = {int(c): c.label for c in LockClass}


def counter_budget(limit: int, sampling: bool) -> int:
    """Events set aside for the samples' counters (a tenth of the limit when sampling)."""
    return limit // 10 if sampling else 0


def share(limit: int, processes: int, sampling: bool = False) -> int:
    """Each process's share of ``limit`` events once metadata, findings and counters are set aside."""
    rest = limit - RESERVED_EVENTS - 2 * processes - counter_budget(limit, sampling)
    return max(1, rest // processes)


class TraceRecorder(Observer):
    """Buffers one process's events, at most ``budget``; ``tid`` is its track (the CPU, or the manager).

    An event is a tuple ``(ph, name, ts_ns, dur_ns, args)``; ``dropped`` counts those over budget.
    """

    def __init__(self, tid: int, budget: int, lock_ns: int) -> None:
        self.tid = tid
        self.budget = budget
        self.lock_ns = lock_ns
        self.events: list[tuple] = []
        self.dropped = 0
        self._slept: dict[int, tuple[int, int]] = {}

    def _add(self, ph: str, name: str, ts: int, dur: int = 0, args: dict | None = None) -> None:
        if len(self.events) < self.budget:
            self.events.append((ph, name, ts, dur, args))
        else:
            self.dropped += 1

    def instant(self, name: str, args: dict | None = None) -> None:
        """An instant event now on this track (the manager's own events use it)."""
        self._add("i", name, _prim.now_ns(), 0, args)

    def span(self, name: str, start_ns: int, end_ns: int, args: dict | None = None) -> None:
        self._add("X", name, start_ns, max(0, end_ns - start_ns), args)

    # -- hooks ----------------------------------------------------------------------------------------
    def lock_wait(self, cls: int, wait_ns: int) -> None:
        if wait_ns >= self.lock_ns:
            now = _prim.now_ns()
            self._add("X", f"wait {_LOCK_NAMES.get(cls, cls)}", now - wait_ns, wait_ns, None)

    def table_alloc(self, wid: int, ci: int, table: int, sleeping: bool) -> None:
        self._add("i", "table alloc (sleeping)" if sleeping else "table alloc", _prim.now_ns(), 0,
                  {"cluster": ci, "table": table})

    def table_free(self, wid: int, ci: int, table: int) -> None:
        self._add("i", "table free", _prim.now_ns(), 0, {"cluster": ci, "table": table})

    def table_freed_unused(self, wid: int, ci: int, table: int) -> None:
        self._add("i", "table freed unused", _prim.now_ns(), 0, {"cluster": ci, "table": table})

    def sleep(self, wid: int, ci: int, cpu: int) -> None:
        self._slept[wid] = (_prim.now_ns(), ci)

    def wake(self, wid: int, cpu: int, before: int) -> None:
        now = _prim.now_ns()
        start, ci = self._slept.pop(wid, (now, -1))
        self._add("X", "table sleep", start, now - start, {"cluster": ci, "cpu_before": before, "cpu_after": cpu})
        if cpu != before:
            self._add("i", f"migrate CPU {before} -> {cpu}", now, 0, {"cluster": ci, "from": before, "to": cpu})
        else:
            self._add("i", "wake", now, 0, {"cpu": cpu})

    def warn(self, wid: int, message: str) -> None:
        self._add("i", "WARN", _prim.now_ns(), 0, {"message": message})

    def grace_period(self, gp_seq: int, ns: int) -> None:
        now = _prim.now_ns()
        self._add("X", "grace period", now - ns, ns, {"gp_seq": gp_seq})

    def shipment(self) -> tuple:
        """What a worker sends the manager at the end: (tid, events, dropped)."""
        return (self.tid, self.events, self.dropped)


def _event(ph: str, name: str, ts_ns: int, dur_ns: int, args: dict | None, tid: int, t0: int) -> dict:
    ev = {"name": name, "ph": ph, "pid": TRACE_PID, "tid": tid, "ts": (ts_ns - t0) / 1000.0}
    if ph == "X":
        ev["dur"] = dur_ns / 1000.0
    elif ph == "i":
        ev["s"] = "t"
    if args:
        ev["args"] = args
    return ev


def trace_document(shipments: Iterable[tuple], names: dict[int, str], t0_ns: int, limit: int, *,
                   findings: Iterable[dict] = (), end_ns: int | None = None,
                   counters: Iterable[tuple[int, str, dict]] = (), other: dict | None = None) -> dict:
    """Merge every process's buffer into one trace-event document of at most ``limit`` events.

    ``names`` maps each track to its name ("CPU 0", ..., "manager"); ``counters`` are
    ``(ts_ns, name, {series: value})``; ``findings`` become global instant events at ``end_ns``.
    """
    meta = [{"name": "process_name", "ph": "M", "pid": TRACE_PID, "tid": 0, "args": {"name": "shmswap run"}}]
    for tid, name in sorted(names.items()):
        meta.append({"name": "thread_name", "ph": "M", "pid": TRACE_PID, "tid": tid, "args": {"name": name}})
        meta.append({"name": "thread_sort_index", "ph": "M", "pid": TRACE_PID, "tid": tid,
                     "args": {"sort_index": tid}})
    events: list[dict] = []
    dropped = 0
    for tid, evs, lost in shipments:
        dropped += lost
        events.extend(_event(*e, tid=tid, t0=t0_ns) for e in evs)
    manager_tid = max(names) if names else 0
    for ts, name, values in counters:
        events.append({"name": name, "ph": "C", "pid": TRACE_PID, "tid": manager_tid,
                       "ts": (ts - t0_ns) / 1000.0, "args": values})
    findings = list(findings)
    end = end_ns if end_ns is not None else max((e["ts"] for e in events), default=0.0) * 1000 + t0_ns
    for f in findings[:_MAX_FINDINGS]:
        events.append({"name": f"finding: {f.get('branch', '')} {f.get('where', '')}".strip(), "ph": "i",
                       "s": "g", "pid": TRACE_PID, "tid": manager_tid, "ts": (end - t0_ns) / 1000.0, "args": f})
    dropped += max(0, len(findings) - _MAX_FINDINGS)
    events.sort(key=lambda e: e["ts"])
    room = max(0, limit - len(meta))
    if len(events) > room:
        dropped += len(events) - room
        events = events[:room]
    doc = {"traceEvents": meta + events, "displayTimeUnit": "ns",
           "otherData": {"limit": limit, "dropped": dropped, **(other or {})}}
    return doc


def write_trace(path: str, doc: dict) -> int:
    """Write the document whole or not at all (a temporary name beside it, then a rename); its size."""
    text = json.dumps(doc, separators=(",", ":"))
    write_atomically(path, text)
    return len(text)
