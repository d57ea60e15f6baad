"""Schedule scripts: races written once that happen every time, and recorded schedules.

One small text format (``# shmswap-script 1``; ``2``: with an end line) for three things: a
hand-written race (the shipped ones are in ``runner/races/``), a recorded schedule (``shmswap run
--deterministic --record``), and what ``shmswap explore`` prints.  ``shmswap replay FILE`` runs
any of them.  One statement a line, ``#`` comments:

    config {"cpus": 2, ...}  |  config cpus=2 size=64K ...     the configuration (first)
    workload OPS                       every CPU runs its seeded workload, OPS operations in all;
                                       the manager's work is one more task
    cpu0: alloc [order N] [state S] [times N]   queue an operation (also: free ENTRY[..ENTRY],
    manager: discard                   lookup ENTRY, run_pending_work, reclaim, discard, grace_period)
    run cpu0 [until COND | for N]      run cpu0 alone until COND (default: until done) or N steps
    fail atomic|sleeping N             fail the next N table allocations of that kind
    wake cpu0 on cpu1  (or: cpu0 wakes on cpu1)     where cpu0's task wakes after its sleep
    steps 0101*10                      one task per character (0-9a-z CPUs, * the manager)
    checkpoint STEP DIGEST [TASK KIND A B]          a recorded run's trace digest at STEP
    then first|random SEED|pct SEED DEPTH           who runs after the last statement
    check                              run the checker now (every task idle) against the expects
    expect ...                         what the next check must find (see ``Expect``)
    end N                              the last line of a version 2 script (what shmswap writes: a
                                       recording, an explored failure): N = its expect lines, so a
                                       copy cut short is refused, not replayed with fewer expectations

Conditions: ``done``, ``op``, ``sleep [in swap_cluster_alloc_table]``, ``wake``, ``lock|unlock|
trylock ci N | si | local N``, ``reclaim-window [cluster N]``, ``discard-window``, ``reader``,
``cluster N flag F``, ``percpu order O changes [to device D]`` (also ``its per-CPU cluster for order
O changes [to device D]``: its ``si[O]``/``offset[O]`` pair changes, to a cluster of device D if given).
Expectations: ``finding T5|T6b|W12 [WHERE]``, ``findings none``, ``violation INV [WHERE]`` (WHERE as
the checker names it: ``cluster N``, ``device D``, ``device D cluster N``),
``violations none``, ``warning TEXT``, ``crash TEXT``, ``deadlock``, ``state SHA256``,
``check JSON`` (the exact findings and violations).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields

from workers.workload import Workload

from ..checks.checker import CheckResult
from ..config import Config
from ..mm.cluster import CI_BYTES
from ..mm.reclaim import swap_reclaim_work
from ..mm.swap import FLAG_NAMES
from ..mm.work import swap_discard_work
from ..model import STATES, SWAPPED, Model
from ..substrate.files import write_atomically
from ..substrate.locks import LockClass
from ..substrate.preempt import Point
from .deterministic import (
    OP,
    Divergence,
    FirstPolicy,
    PCTPolicy,
    RandomPolicy,
    ScheduleFailure,
    Scheduler,
    describe_point,
    task_name,
)

__all__ = ["Script", "ScriptRun", "parse_script", "run_script", "record_text", "script_from_choices",
           "check_summary", "state_digest", "HEADER", "RECORDING_HEADER", "config_value", "Budget"]

HEADER = "# shmswap-script 1"
# Version 2: what shmswap writes (a recording, an explored failure) ends with ``end N``, N the
# number of its ``expect`` lines, so that a copy cut short is refused instead of replayed with
# fewer expectations.  Version 1 (hand-written races, older recordings) has no end line.
RECORDING_HEADER = "# shmswap-script 2"
VERSIONS = ("1", "2")
CHECKPOINT_EVERY = 1024
_STEP_CHARS = "0123456789abcdefghijklmnopqrstuvwxyz"
_FLAGS = {v.lower(): k for k, v in FLAG_NAMES.items()}


def _task_char(idx: int, ncpus: int) -> str:
    return "*" if idx == ncpus else _STEP_CHARS[idx]


def _parse_task(word: str, ncpus: int) -> int:
    word = word.rstrip(":")
    if word in ("manager", "m", "*"):
        return ncpus
    m = re.fullmatch(r"cpu(\d+)", word)
    if not m or int(m.group(1)) >= ncpus:
        raise ScheduleFailure(f"no task {word!r} (cpu0..cpu{ncpus - 1}, manager)")
    return int(m.group(1))


def config_value(v: str):
    """A ``key=value`` configuration value as written: an int, a float, else the text."""
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            continue
    return v


def _config(kw: dict, what: str = "config") -> Config:
    """``Config(**kw)``; an unknown field is a ``ValueError`` naming it (not a TypeError)."""
    known = {f.name for f in fields(Config) if f.init}
    for k in kw:
        if k not in known:
            raise ValueError(f"{what}: no configuration field {k!r}")
    return Config(**kw)


# What a script's ``config`` leaves out is ``Config``'s default, except these: the fill-and-drain
# workload every script was written for (``shmswap run`` defaults to --lifetimes on since), and no
# real-time reader delays (the scheduler decides who runs inside a read section).
SCRIPT_DEFAULTS = {"lifetimes": "off", "reader_delays": "off", "torture_readers": 0}


def _config_from(text: str) -> Config:
    text = text.strip()
    if text.startswith("{"):
        d = {**SCRIPT_DEFAULTS, **json.loads(text)}
        d["orders"] = {int(k): v for k, v in d["orders"].items()} if d.get("orders") else None
        d["bad_pages"] = tuple(d.get("bad_pages", ()))
        return _config(d)
    kw: dict = dict(SCRIPT_DEFAULTS)
    for item in text.split():
        k, _, v = item.partition("=")
        kw[k.replace("-", "_")] = config_value(v)
    return _config(kw)


def _override(cfg: Config, overrides: dict) -> Config:
    """The script's configuration with ``--set`` fields replaced; a bad one names ``--set``."""
    known = {f.name for f in fields(Config) if f.init}
    for k in overrides:
        if k not in known:
            raise ScheduleFailure(f"--set: no configuration field {k!r}")
    try:
        return cfg.with_(**overrides)
    except (ValueError, TypeError) as e:
        raise ScheduleFailure(f"--set: {e}") from None


@dataclass
class Stmt:
    line: int
    kind: str
    args: list
    text: str
    state: dict = field(default_factory=dict)


@dataclass
class Script:
    config: Config
    stmts: list[Stmt]
    workload: int | None = None
    fallback: tuple = ("first",)
    title: str = ""
    text: str = ""


def parse_script(text: str, overrides: dict | None = None) -> Script:
    """Parse a script (``overrides``: configuration fields replaced, e.g. ``alloc_table``);
    ``ScheduleFailure`` names the line of the first error."""
    cfg = None
    stmts: list[Stmt] = []
    workload = None
    fallback: tuple = ("first",)
    title = ""
    version = "1"
    expects = 0                      # expect lines (also conditional ones): what ``end N`` counts
    end: tuple[int, int] | None = None
    for n, raw in enumerate(text.splitlines(), 1):
        m = re.fullmatch(r"#\s*shmswap-script\s+(\S+)\s*", raw.strip())
        if m:
            if m.group(1) not in VERSIONS:
                raise ScheduleFailure(f"line {n}: unknown script version {m.group(1)[:20]!r} (this shmswap reads "
                                      f"versions {' and '.join(VERSIONS)})")
            version = m.group(1)
            continue
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("expect warning") else raw.strip()
        if not line:
            continue
        if end is not None:
            raise ScheduleFailure(f"line {n}: a statement after the end line (line {end[0]}): {raw.strip()[:60]}")
        try:
            if line.startswith("config "):
                cfg = _config_from(line[7:])
                if overrides:
                    cfg = _override(cfg, overrides)
                continue
            if line.startswith("end"):
                words = line.split()
                if words[0] == "end":
                    end = (n, int(words[1]))
                    if len(words) != 2 or end[1] < 0:
                        raise ScheduleFailure("end N: N is the number of expect lines")
                    continue
            if line.startswith("title "):
                title = line[6:].strip()
                continue
            if cfg is None:
                raise ScheduleFailure("the first statement must be config")
            nc = cfg.cpus
            words = line.split()
            head = words[0]
            expects += head == "expect"
            if head == "workload":
                workload = int(words[1])
            elif head == "then":
                fallback = tuple([words[1]] + [int(w) for w in words[2:]])
            elif head.endswith(":"):
                stmts.append(Stmt(n, "op", [_parse_task(head, nc), _parse_op(words[1:])], line))
            elif head == "run":
                idx = _parse_task(words[1], nc)
                rest = words[2:]
                if not rest or rest == ["until", "done"]:
                    stmts.append(Stmt(n, "until", [idx, ("done",)], line))
                elif rest[0] == "for":
                    stmts.append(Stmt(n, "for", [idx, int(rest[1])], line))
                elif rest[0] == "until":
                    stmts.append(Stmt(n, "until", [idx, _parse_cond(" ".join(rest[1:]), nc)], line))
                else:
                    raise ScheduleFailure(f"run: expected 'until' or 'for', got {rest[0]!r}")
            elif head == "fail":
                if words[1] not in ("atomic", "sleeping"):
                    raise ScheduleFailure("fail atomic|sleeping N")
                stmts.append(Stmt(n, "fail", [words[1], int(words[2]) if len(words) > 2 else 1], line))
            elif head == "wake" or (len(words) == 4 and words[1] == "wakes"):
                who, where = (words[1], words[3]) if head == "wake" else (words[0], words[3])
                stmts.append(Stmt(n, "wake", [_parse_task(who, nc), _parse_task(where, nc)], line))
            elif head == "steps":
                chars = "".join(words[1:])
                stmts.append(Stmt(n, "steps", [[nc if c == "*" else _STEP_CHARS.index(c) for c in chars]], line))
            elif head == "checkpoint":
                stmts.append(Stmt(n, "checkpoint", [int(words[1]), int(words[2], 16), " ".join(words[3:])], line))
            elif head == "check":
                stmts.append(Stmt(n, "check", [], line))
            elif head == "expect" and len(words) > 2 and words[1] == "if":
                k, _, v = words[2].partition("=")
                if str(getattr(cfg, k.replace("-", "_"))) == v:
                    stmts.append(Stmt(n, "expect", [words[3], " ".join(words[4:])], line))
            elif head == "expect":
                stmts.append(Stmt(n, "expect", [words[1], line.split(None, 2)[2] if len(words) > 2 else ""], line))
            else:
                raise ScheduleFailure(f"unknown statement {head!r}")
        except (ScheduleFailure, ValueError, IndexError) as e:
            raise ScheduleFailure(f"line {n}: {e}: {raw.strip()}") from None
    if cfg is None:
        raise ScheduleFailure("no config statement")
    if version != "1" and end is None:
        raise ScheduleFailure(f"truncated: a version {version} script ends with 'end N' (N its expect lines), "
                              f"and this one stops at line {len(text.splitlines())} without it")
    if end is not None and end[1] != expects:
        raise ScheduleFailure(f"line {end[0]}: truncated or edited: the end line counts {end[1]} expect lines, "
                              f"the script has {expects}")
    return Script(cfg, stmts, workload, fallback, title, text)


def _parse_op(words: list[str]) -> tuple:
    name = words[0]
    kw: dict = {"order": 0, "state": SWAPPED, "times": 1}
    if name == "alloc":
        i = 1
        while i < len(words):
            k, v = words[i], words[i + 1]
            if k not in kw:
                raise ScheduleFailure(f"alloc: unknown option {k!r}")
            kw[k] = v if k == "state" else int(v)
            i += 2
        if kw["state"] not in STATES or kw["state"] == "raw":
            raise ScheduleFailure(f"alloc: state must be one of swapped, cache_only, cached (got {kw['state']})")
        return ("alloc", kw["order"], kw["state"], kw["times"])
    if name in ("free", "lookup"):
        a, _, b = words[1].partition("..")
        return (name, int(a), int(b or a))
    if name in ("run_pending_work", "reclaim", "discard", "grace_period"):
        return (name,)
    raise ScheduleFailure(f"unknown operation {name!r}")


def _parse_cond(text: str, nc: int) -> tuple:
    t = text.strip()
    if t in ("done", "op", "wake", "reader", "discard-window") or t.startswith("sleep"):
        return (t.split()[0],)
    m = re.fullmatch(r"(lock|unlock|trylock) (ci|local) (\d+)", t)
    if m:
        cls = LockClass.CI_LOCK if m.group(2) == "ci" else LockClass.LOCAL_LOCK
        return ("point", {"lock": int(Point.LOCK), "unlock": int(Point.UNLOCK), "trylock": int(Point.TRYLOCK)}[
            m.group(1)], int(cls), int(m.group(3)))
    m = re.fullmatch(r"(lock|unlock) si", t)
    if m:
        return ("point", int(Point.LOCK if m.group(1) == "lock" else Point.UNLOCK), int(LockClass.SI_LOCK), -1)
    m = re.fullmatch(r"reclaim-window(?: cluster (\d+))?", t)
    if m:
        return ("reclaim-window", int(m.group(1)) if m.group(1) else -1)
    m = re.fullmatch(r"cluster (\d+) flag (\w+)", t)
    if m:
        if m.group(2).lower() not in _FLAGS:
            raise ScheduleFailure(f"no cluster flag {m.group(2)!r} ({', '.join(_FLAGS)})")
        return ("flag", int(m.group(1)), _FLAGS[m.group(2).lower()])
    m = re.fullmatch(r"(?:percpu order|its per-CPU cluster for order) (\d+) changes(?: to device (\d+))?", t)
    if m:
        return ("percpu", int(m.group(1))) + ((int(m.group(2)),) if m.group(2) else ())
    raise ScheduleFailure(f"unknown condition {t!r}")


# -- programs ----------------------------------------------------------------------------------------

class QueueProgram:
    """A script's CPU: the operations queued for it, one at a time."""

    def __init__(self) -> None:
        self.q: deque = deque()

    def idle(self) -> bool:
        return not self.q

    def pop(self):
        return self.q.popleft() if self.q else None


class Budget:
    """The operations the CPUs of a workload run share; ``stop``: the stop signals received (a
    Ctrl-C ends the run in order: no CPU begins another operation)."""

    def __init__(self, ops: int, stop: list[int] | None = None) -> None:
        self.left = ops
        self.stop = stop if stop is not None else []


class WorkloadProgram:
    """A CPU's seeded workload until the shared operation budget is spent."""

    def __init__(self, load: Workload, budget: Budget) -> None:
        self.load, self.budget = load, budget

    def idle(self) -> bool:
        return False

    def pop(self):
        if self.budget.left <= 0 or self.budget.stop:
            return None
        self.budget.left -= 1
        return self.load.step


class ManagerLoop:
    """The manager in a workload run: its pending work, again and again, while a CPU runs."""

    def __init__(self, model: Model, sched: Scheduler) -> None:
        self.model, self.sched = model, sched
        system = model.system
        self.op = lambda: system.run_pending_work(grace_period=system.slab.pending() > 4)

    def idle(self) -> bool:
        return False

    def pop(self):
        if all(t.done for t in self.sched.tasks if t.idx != self.sched.ncpus):
            return None
        return self.op


def add_queue_tasks(sched: Scheduler, model: Model) -> None:
    """Give every CPU and the manager a ``QueueProgram`` (a script fills the queues)."""
    for w in range(model.cpus):
        sched.add_task(w, w, QueueProgram())
    sched.add_task(model.cpus, model.manager_wid, QueueProgram())


def run_observing(sched: Scheduler, model: Model) -> None:
    """Run the schedule with ``sched`` observing the model's preemption points, then detach it."""
    model.add_observer(sched)
    try:
        sched.run()
    finally:
        model.system.observers.remove(sched)


def _make_op(model: Model, op: tuple) -> Callable[[], None]:
    system = model.system
    kind = op[0]
    if kind == "alloc":
        _, order, state, times = op

        def alloc() -> None:
            for _ in range(times):
                model.alloc(order=order, state=state)
        return alloc
    if kind == "free":
        def free() -> None:
            for e in range(op[1], op[2] + 1):
                if e in model.held:
                    model.free(e)
        return free
    if kind == "lookup":
        return lambda: [model.lookup(None, e) for e in range(op[1], op[2] + 1)] and None
    if kind == "run_pending_work":
        return lambda: system.run_pending_work()
    if kind == "reclaim":
        return lambda: swap_reclaim_work(system.si)
    if kind == "discard":
        return lambda: swap_discard_work(system.si) and None

    def grace_period() -> None:
        system.rcu.synchronize_rcu()
        system.slab.process_deferred()
    return grace_period


# -- results ------------------------------------------------------------------------------------------

def check_summary(res: CheckResult) -> dict:
    return {"violations": sorted([v.invariant, v.where] for v in res.violations),
            "findings": sorted([f.where, f.branch] for f in res.findings)}


def state_digest(model: Model) -> str:
    """sha256 of the snapshot (clusters, lists, per-CPU caches, counters, slab) as JSON."""
    return hashlib.sha256(model.snapshot().to_json(sort_keys=True).encode()).hexdigest()


@dataclass
class ScriptRun:
    """What running a script gave."""

    title: str
    ok: bool                              # every expectation held (and no unexpected failure)
    failures: list[str]                   # expectations that did not hold, divergences
    failure: str | None                   # the scheduler's: crash, deadlock, divergence, script error
    failure_kind: str | None
    checks: list[dict]                    # each check's summary (the last is the final one)
    state: str                            # the final snapshot's digest
    steps: int
    choices: list[int]
    trace: list[tuple]
    digest: int
    checkpoints: list[tuple]
    warnings: list[str]
    finished: object = None

    @property
    def check(self) -> dict:
        return self.checks[-1] if self.checks else {}

    def failed(self, until: str = "violation") -> bool:
        """A violation (or crash, deadlock); with ``until='finding'`` a finding is enough."""
        if self.failure_kind in ("crash", "deadlock"):
            return True
        c = self.check
        if c.get("violations"):
            return True
        return until == "finding" and bool(c.get("findings"))


class _Checks:
    def __init__(self) -> None:
        self.pending: list[Stmt] = []
        self.failures: list[str] = []
        self.summaries: list[dict] = []


def _evaluate(expects: list[Stmt], summary: dict, warnings: list[str], failure: str | None,
              failure_kind: str | None, state: str | None) -> list[str]:
    out = []
    for e in expects:
        what, arg = e.args
        words = arg.split()
        ok = True
        if what == "finding":
            ok = any(b == words[0] and (len(words) < 2 or w == " ".join(words[1:])) for w, b in summary["findings"])
        elif what == "findings":
            ok = not summary["findings"] if arg == "none" else len(summary["findings"]) == int(arg)
        elif what == "violation":
            ok = any(i == words[0] and (len(words) < 2 or w == " ".join(words[1:])) for i, w in summary["violations"])
        elif what == "violations":
            ok = not summary["violations"] if arg == "none" else len(summary["violations"]) == int(arg)
        elif what == "warning":
            ok = any(arg.strip('"') in w for w in warnings)
        elif what == "crash":
            ok = failure_kind == "crash" and arg.strip('"') in (failure or "")
        elif what == "deadlock":
            ok = failure_kind == "deadlock"
        elif what == "state":
            ok = state is None or state == arg
        elif what == "check":
            ok = summary == json.loads(arg)
        else:
            ok = False
        if not ok:
            got = {"state": state, "crash": failure, "deadlock": failure, "warning": warnings[-3:]}.get(what, summary)
            out.append(f"line {e.line}: expect {what} {arg}: not so (got {got})")
    return out


class ScriptPolicy:
    """Runs the statements of a script from inside the scheduler, one choice at a time."""

    def __init__(self, script: Script, model: Model, sched: Scheduler, fallback, checks: _Checks,
                 lenient: bool = False, make_op: Callable[[Model, tuple], Callable[[], None]] | None = None) -> None:
        self.make_op = make_op or _make_op          # a lesson's keeps what its operations return
        self.stmts = script.stmts
        self.model = model
        self.sched = sched
        self.fallback = fallback
        self.pc = 0
        self.checks = checks
        self.lenient = lenient
        self.ncpus = model.cpus

    def _cond(self, st: Stmt, t) -> bool:
        cond = st.args[1]
        kind, a, b = t.pending
        c = cond[0]
        shm = self.model.system.shm
        if c == "done":
            return t.done or (kind == OP and t.program.idle())
        if c == "op":
            return kind == OP and st.state.get("ran", False)
        if c == "sleep":
            return kind == Point.TABLE_SLEEP
        if c == "wake":
            return kind == Point.TABLE_WAKE
        if c == "reader":
            return kind == Point.READER
        if c == "discard-window":
            return kind == Point.DISCARD_WINDOW
        if c == "reclaim-window":
            return kind == Point.RECLAIM_WINDOW and (cond[1] < 0 or a == cond[1])
        if c == "point":
            _, pk, cls, n = cond
            if kind != pk or a != cls:
                return False
            if n < 0:
                return True
            if cls == LockClass.CI_LOCK:
                return b == n * CI_BYTES
            pcp = self.model.system.si.pcp
            return b == (n * pcp.words + pcp.lock_word) * 8
        if c == "flag":
            return int(shm.clu["flags"][cond[1]]) == cond[2]
        if c == "percpu":
            # The pair, not the offset alone: one offset[] per CPU for every device (reference §10 W12).
            pcp = self.model.system.si.pcp
            now = (pcp.si(t.idx, cond[1]), pcp.offset(t.idx, cond[1]))
            if "base" not in st.state:
                st.state["base"] = now
                return False
            return now != st.state["base"] and (len(cond) < 3 or now[0] == cond[2] + 1)
        raise ScheduleFailure(f"line {st.line}: bad condition")

    def _need(self, st: Stmt, t, runnable) -> None:
        if t not in runnable:
            raise ScheduleFailure(f"line {st.line}: {st.text}: {t.name} {self.sched.why_not(t.idx)}")

    def prepare(self, sched) -> None:
        """Run the statements that need no choice (queue, fail, wake, expect, check, conditions met)."""
        self._advance(sched, None, None, decide=False)

    def choose(self, sched, runnable, cur):
        return self._advance(sched, runnable, cur, decide=True)

    def _advance(self, sched, runnable, cur, decide: bool):
        while self.pc < len(self.stmts):
            st = self.stmts[self.pc]
            k = st.kind
            if k == "op":
                sched.task(st.args[0]).program.q.append(self.make_op(self.model, st.args[1]))
            elif k == "fail":
                if st.args[0] == "atomic":
                    sched.fail_atomic += st.args[1]
                else:
                    sched.fail_sleeping += st.args[1]
            elif k == "wake":
                sched.wake_plan[sched.task(st.args[0]).wid] = st.args[1]
            elif k == "expect":
                self.checks.pending.append(st)
            elif k == "check":
                self._check(st)
            elif k == "checkpoint":
                step, digest, where = st.args
                if sched.step != step or sched.digest != digest:
                    raise Divergence(f"the trace differs from the recording between step "
                                     f"{st.state.get('prev', 0)} and step {step} (recorded at step {step}: "
                                     f"{where or '?'}; now step {sched.step}: {self._last()})")
            elif k == "until":
                t = sched.task(st.args[0])
                if self._cond(st, t):
                    self.pc += 1
                    continue
                if not decide:
                    return None
                if self.lenient and t not in runnable:
                    self.pc += 1
                    continue
                self._need(st, t, runnable)
                st.state["ran"] = True
                return t
            elif k == "for":
                t = sched.task(st.args[0])
                n = st.state.get("n", 0)
                if n < st.args[1] and not decide:
                    return None
                if n < st.args[1] and (not self.lenient or t in runnable):
                    self._need(st, t, runnable)
                    st.state["n"] = n + 1
                    return t
            elif k == "steps":
                seq = st.args[0]
                i = st.state.get("i", 0)
                if i < len(seq) and not decide:
                    return None
                if i < len(seq):
                    st.state["i"] = i + 1
                    for t in runnable:
                        if t.idx == seq[i]:
                            return t
                    if not self.lenient:
                        raise Divergence(f"step {sched.step + 1} (line {st.line}): the recording runs "
                                         f"{task_name(seq[i], self.ncpus)}, which {sched.why_not(seq[i])}")
                    return self.fallback.choose(sched, runnable, cur)
            self.pc += 1
        return self.fallback.choose(sched, runnable, cur) if decide else None

    def _last(self) -> str:
        tr = self.sched.trace
        if not tr:
            return "nothing yet"
        _, idx, kind, a, b = tr[-1]
        return f"{task_name(idx, self.ncpus)} {describe_point(kind, a, b, CI_BYTES)}"

    def _check(self, st: Stmt) -> None:
        busy = [t.name for t in self.sched.tasks if not t.done and not (t.pending[0] == OP and t.program.idle())
                and t is not self.sched.cur]
        cur = self.sched.cur
        if busy or (cur is not None and cur.pending[0] != OP):
            raise ScheduleFailure(f"line {st.line}: check while a task is inside an operation "
                                  f"({', '.join(busy or [cur.name])})")
        res = self.model.check()
        summary = check_summary(res)
        self.checks.summaries.append(summary)
        self.checks.failures += _evaluate(self.checks.pending, summary, self.model.warnings, None, None, None)
        self.checks.pending = []


def _fallback(spec: tuple):
    name = spec[0]
    if name == "random":
        return RandomPolicy(spec[1] if len(spec) > 1 else 1)
    if name == "pct":
        return PCTPolicy(spec[1] if len(spec) > 1 else 1, spec[2] if len(spec) > 2 else 3,
                         spec[3] if len(spec) > 3 else 2000)
    return FirstPolicy()


def run_script(text: str | Script, *, policy=None, setup: Callable[[Model], None] | None = None,
               keep_trace: bool = True, max_steps: int | None = None, lenient: bool = False,
               finish: Callable[[Model, Scheduler], object] | None = None, stop: list[int] | None = None,
               stop_after: int = 1) -> ScriptRun:
    """Run a script (text or parsed) on a fresh model; ``policy`` replaces its ``then`` fallback.

    ``setup(model)`` runs first (a test installs a test-only variant there); ``finish(model,
    sched)`` runs at the end, before the model closes (``shmswap run --deterministic``'s report).
    ``stop``: the stop signals received while it runs (a list that grows); a workload's CPUs begin
    no operation after the first, and ``stop_after`` of them stop the schedule at the next step
    (failure kind ``interrupted``).
    """
    script = parse_script(text) if isinstance(text, str) else text
    cfg = script.config.with_(sleep_latency_us=0) if script.config.sleep_latency_us else script.config
    with Model(cfg, n_workers=cfg.cpus + 1) as model:
        if setup is not None:
            setup(model)
        checks = _Checks()
        sched = Scheduler(model, None, keep_trace=keep_trace, max_steps=max_steps)
        if stop is not None:
            sched.stop, sched.stop_after = stop, stop_after
        sched.policy = ScriptPolicy(script, model, sched, policy or _fallback(script.fallback), checks, lenient)
        checkpoints: list[tuple] = []

        def on_step(s: Scheduler, t) -> None:
            if s.step % CHECKPOINT_EVERY == 0:
                checkpoints.append((s.step, s.digest, t.idx, *t.pending))
        sched.on_step = on_step
        if script.workload is not None:
            budget = Budget(script.workload, stop)
            for w in range(cfg.cpus):
                sched.add_task(w, w, WorkloadProgram(Workload(model.system, model.tasks[w], cfg, cfg.cpus), budget))
            sched.add_task(cfg.cpus, model.manager_wid, ManagerLoop(model, sched), background=True)
        else:
            add_queue_tasks(sched, model)
        run_observing(sched, model)
        model.on_manager()
        failures = list(checks.failures)
        state = None
        if sched.failure_kind in (None, "crash", "deadlock"):
            if sched.failure_kind is None:
                res = model.check()
                summary = check_summary(res)
                checks.summaries.append(summary)
                state = state_digest(model)
            else:
                summary = {"violations": [], "findings": []}
            failures += _evaluate(checks.pending, summary, model.warnings, sched.failure, sched.failure_kind, state)
        if sched.failure_kind in ("divergence", "script", "limit", "interrupted"):
            failures.append(sched.failure)
        elif sched.failure_kind in ("crash", "deadlock") and not any(
                e.args[0] in ("crash", "deadlock") for e in checks.pending):
            failures.append(sched.failure)
        out = ScriptRun(script.title, not failures, failures, sched.failure, sched.failure_kind, checks.summaries,
                        state or "", sched.step, sched.choices, sched.trace, sched.digest, checkpoints,
                        list(model.warnings))
        if finish is not None and sched.failure_kind is None:
            out.finished = finish(model, sched)
        return out


# -- writing scripts -------------------------------------------------------------------------------------

def record_text(script: Script, run: ScriptRun, title: str = "") -> str:
    """A recording of ``run``: its configuration and program, every choice, checkpoints of the
    trace digest, and the final state and check it must reach."""
    cfg = script.config
    nc = cfg.cpus
    out = [RECORDING_HEADER, f"title {title or script.title or 'recorded schedule'}",
           "config " + json.dumps(cfg.as_dict(), sort_keys=True)]
    if script.workload is not None:
        out.append(f"workload {script.workload}")
    elif script.stmts:
        raise ScheduleFailure("record: only workload runs are recorded (a script is its own record)")
    cps = {c[0]: c for c in run.checkpoints}
    step = 0
    chars = "".join(_task_char(i, nc) for i in run.choices)
    while step < len(chars):
        end = min(step + CHECKPOINT_EVERY, len(chars))
        for i in range(step, end, 128):
            out.append("steps " + chars[i:min(i + 128, end)])
        if end in cps:
            _, digest, idx, kind, a, b = cps[end]
            out.append(f"checkpoint {end} {digest:016x} {task_name(idx, nc)} "
                       f"{describe_point(kind, a, b, CI_BYTES)}")
        step = end
    out.append(f"checkpoint {len(chars)} {run.digest:016x}")
    out.append(f"expect state {run.state}")
    out.append("expect check " + json.dumps(run.check, sort_keys=True))
    out.append("end 2")                  # the two expect lines: a copy cut before them is refused
    return "\n".join(out) + "\n"


def script_from_choices(script: Script, choices: list[int], title: str, expect: list[str]) -> str:
    """A readable script: the scenario's operations, then ``run cpuN for K`` per run of choices."""
    nc = script.config.cpus
    out = [RECORDING_HEADER, f"title {title}", "config " + json.dumps(script.config.as_dict(), sort_keys=True)]
    if script.workload is not None:
        out.append(f"workload {script.workload}")
    out += [s.text for s in script.stmts if s.kind in ("op", "fail", "wake", "expect")]
    i = 0
    while i < len(choices):
        j = i
        while j < len(choices) and choices[j] == choices[i]:
            j += 1
        out.append(f"run {task_name(choices[i], nc)} for {j - i}")
        i = j
    out.append("then first")
    out += [f"expect {e}" for e in expect]
    out.append(f"end {sum(ln.split(None, 1)[0] == 'expect' for ln in out if ln.strip())}")
    return "\n".join(out) + "\n"


def deterministic_script(cfg: Config, ops: int | None = None) -> str:
    """The script of ``shmswap run --deterministic``: the workload, then a seeded random schedule."""
    n = ops or cfg.ops or 2000
    return "\n".join([HEADER, "title shmswap run --deterministic",
                      "config " + json.dumps(cfg.as_dict(), sort_keys=True), f"workload {n}",
                      f"then random {cfg.seed}"]) + "\n"


def run_deterministic(cfg: Config, record: str | None = None, finish=None,
                      stop: list[int] | None = None) -> tuple[ScriptRun, str]:
    """Run the workload under the deterministic scheduler (seed ``cfg.seed``); returns the run and
    the text of its recording (written whole to ``record`` if given).

    ``stop`` (the stop signals received): at the first the CPUs begin no further operation and the
    run ends in order, unrecorded (its operation count is not the script's: it would not replay);
    at the second the schedule stops at the next step.
    """
    script = parse_script(deterministic_script(cfg))
    run = run_script(script, finish=finish, stop=stop, stop_after=2)
    text = record_text(parse_script(script.text), run) if run.failure_kind is None and not stop else ""
    if record and text:
        write_atomically(record, text)
    return run, text
