"""The teaching mode's lessons (``shmswap demo``), in the manner of the OSTEP homework simulators.

A lesson is a short series of steps on the model API (``shmswap.Model``) on a tiny device: 2 CPUs,
4 clusters of 8 slots, order-0 folios, an SSD.  Everything, the setup included, runs under the
deterministic scheduler (``runner/deterministic.py``): each CPU and the manager are tasks, exactly
one runs between preemption points, and a schedule script (``runner/script.py``'s format, run on
the lesson's device by ``runner/stepwise.py``) decides which.  One step is one script: usually one
operation (an allocation, a free, the manager's work) by one CPU; where the lesson is about an
interleaving inside an operation, the step's script says where the other CPU runs and the lesson
prints it -- the sleeping table allocation (``fail atomic 1``, ``run cpu0 until sleep in
swap_cluster_alloc_table``, ``run cpu1``, ``cpu0 wakes on cpu1``, ``run cpu0``) and the lockless
reader (``run cpu1 until reader``, ``run cpu0``: the free and the table free inside the reader's
window, ``run cpu1``).  So a lesson and its seed replay exactly.  Where the lesson's point is the
moment in the middle, the step also draws it: the script stops there (``run_schedule``'s
``stops``: after ``run cpu0 until sleep in swap_cluster_alloc_table``, cpu0 asleep with its
cluster isolated; after ``run cpuN until reader``, the reader holding the table pointer), the
lesson takes a picture, and the script goes on.  The seed (``-s SEED``) picks the
problem: which CPU goes first, how full things are before step 1, the order of the steps, and the
script (whether the other CPU allocates while one sleeps, whether the sleeping allocation fails
too, whether the writer allocates again inside the reader's window).

What a step changed is recorded, not computed by hand: a ``Recorder`` observer hears the table
allocations and frees, the sleep and the wake-up (a migration when the CPU differs) and the
reader's window, and the scheduler's ``on_step`` marks where another task takes over; list moves
and per-CPU cache changes come from ``Model.snapshot()`` before and after; fast or slow path and the
branch ``swap_cluster_alloc_table`` took after a sleep from the worker's counters, a lost cluster
from the record the seed's branch left in it (``cluster.lost``).  A slot is drawn with the CPU it
was allocated on: the task's CPU when ``folio_alloc_swap`` returned, i.e. the CPU it woke on after
a migration.

Each step asks the reader to predict (which cluster and slot, whether a table gets allocated or
freed, which list a cluster moves to; after a sleep, what ``swap_cluster_alloc_table`` does on the
CPU the task woke on -- the seed re-checks that CPU's per-CPU cluster, merged does not -- and
whether a cluster is lost) and carries the answers; ``shmswap demo -c`` prints them.  Nothing a
question asks is in the script the step prints.

Lessons: ``paths`` (the fast path and the slow path), ``sharing`` (two CPUs sharing a cluster),
``emptying`` (a cluster emptying and losing its table), ``sleep`` (the sleeping table allocation
with a migration, seed and merged ``swap_cluster_alloc_table`` on the same problem), ``reader``
(a lockless reader during a table free).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config import PAGE_SIZE, Config
from ..mm.alloc_table import LOST_NAMES, decode_lost
from ..mm.swap import SWAP_MAP_BAD
from ..model import CACHE_ONLY, SWAPPED, Allocation, Model, Snapshot
from ..runner.deterministic import SchedTask, Scheduler
from ..runner.stepwise import Stop, run_schedule, script_op
from ..substrate.observe import Observer
from ..substrate.stats import Stat
from .drawing import ClusterView, CpuView, Frame, short_list

__all__ = ["LESSONS", "Question", "Moment", "Step", "LessonRun", "run_lesson", "lesson_config", "CPUS", "CLUSTERS",
           "SPC"]

CPUS, CLUSTERS, SPC = 2, 4, 8


def lesson_config(alloc_table: str = "seed") -> Config:
    """The tiny device: 2 CPUs, 4 clusters of 8 slots, order 0, an SSD, nothing random."""
    return Config(size=CLUSTERS * SPC * PAGE_SIZE, slots_per_cluster=SPC, cpus=CPUS, orders="0:1",
                  atomic_fail=0.0, sleep_fail=0.0, migrate=0.0, seconds=1, alloc_table=alloc_table)


@dataclass(frozen=True)
class Question:
    ask: str
    answer: str


@dataclass(frozen=True)
class Moment:
    """A picture from the middle of a step: the script stopped after its line ``line``."""

    line: str
    text: str
    frame: Frame


@dataclass
class Step:
    """One step: who ran which kernel function, what changed, the questions, the pictures.

    ``schedule``: the script's lines when the step interleaves tasks (else empty: one task ran);
    ``points``: the scheduling points the step took; ``during``: the pictures taken at the script's
    stops, between ``before`` and ``after``."""

    n: int
    cpu: int | None
    func: str
    changed: str
    questions: list[Question]
    before: Frame
    after: Frame
    events: list[str] = field(default_factory=list)
    fresh: bool = False         # the first step on a new device (the lesson's next part)
    schedule: list[str] = field(default_factory=list)
    points: int = 0
    during: list[Moment] = field(default_factory=list)

    def headline(self) -> str:
        who = f"CPU {self.cpu}" if self.cpu is not None else "manager"
        return f"step {self.n}  {who:7}  {self.func}"


@dataclass
class LessonRun:
    """A lesson as run on one seed: its steps, the last picture and the checker's verdict."""

    name: str
    title: str
    seed: int
    intro: str
    setup: list[str]
    steps: list[Step]
    final: Frame
    checks: list[dict]
    points: int = 0             # scheduling points, setup included
    digest: int = 0             # of every step's trace, in order: the same seed gives the same one

    @property
    def check_ok(self) -> bool:
        return all(c["violations"] == 0 for c in self.checks)

    @property
    def frames(self) -> list[Frame]:
        """The pictures in order: before step 1, in the middle of a step that stops (``during``), after
        every step, and before the first step on a new device."""
        out = []
        for i, s in enumerate(self.steps):
            if i == 0 or s.fresh:
                out.append(s.before)
            out += [m.frame for m in s.during]
            out.append(s.after)
        return out or [self.final]


# -- recording ------------------------------------------------------------------------------------------

def _task(idx: int) -> str:
    """A task as the schedule scripts name it: ``cpuN`` starts every operation on CPU N."""
    return "manager" if idx == CPUS else f"cpu{idx}"


class Recorder(Observer):
    """What happened inside one step, in words, with the task (worker) that did it; ``None`` text
    marks where the scheduler handed the CPU to another task."""

    def __init__(self) -> None:
        self.events: list[tuple[int, str | None]] = []
        self.read: tuple[int, int] | None = None       # the reader's (table, entry value)
        self.reader = -1                               # the task in a lookup (others read tables too)
        self.window: tuple[int, int, int] | None = None  # the reader's (cluster, table, offset)
        self.asleep: tuple[int, int, int] | None = None  # the sleeper's (task, cluster, CPU)
        self.woke: tuple[int, int, int] | None = None    # the sleeper's (task, CPU now, CPU before)
        self.tables: list[tuple[int, int, int, bool]] = []   # (task, cluster, table, sleeping)
        self.unused: list[tuple[int, int, int]] = []         # (task, cluster, table) freed unused

    def reset(self) -> None:
        """Forget the last step."""
        self.events, self.read, self.window, self.tables, self.unused = [], None, None, [], []
        self.asleep = self.woke = None

    def note(self, wid: int, text: str | None) -> None:
        self.events.append((wid, text))

    def table_alloc(self, wid: int, ci: int, table: int, sleeping: bool) -> None:
        self.tables.append((wid, ci, table, sleeping))
        self.note(wid, f"table #{table} allocated for cluster {ci} ({'sleeping' if sleeping else 'atomic'})")

    def table_free(self, wid: int, ci: int, table: int) -> None:
        self.note(wid, f"swap_cluster_free_table: cluster {ci} lost its table #{table}")

    def table_freed_unused(self, wid: int, ci: int, table: int) -> None:
        self.unused.append((wid, ci, table))
        self.note(wid, f"table #{table}, allocated for cluster {ci}, freed unused")

    def sleep(self, wid: int, ci: int, cpu: int) -> None:
        self.asleep = (wid, ci, cpu)
        self.note(wid, f"atomic table allocation failed: every lock dropped, the task on CPU {cpu} sleeps "
                       f"for a table for cluster {ci} (isolated, on no list)")

    def wake(self, wid: int, cpu: int, before: int) -> None:
        self.woke = (wid, cpu, before)
        self.note(wid, f"woke on CPU {cpu}" + (f" (migrated from CPU {before})" if cpu != before else ""))

    def reader_window(self, wid: int, ci: int, table: int, off: int) -> None:
        if wid == self.reader:
            self.window = (ci, table, off)
            self.note(wid, f"the reader loaded cluster {ci}'s table pointer (#{table}), rcu_read_lock held")

    def reader_read(self, wid: int, ci: int, table: int, off: int, tb: int) -> int:
        if wid == self.reader:
            self.read = (table, tb)
            self.note(wid, f"the reader read entry {off} of table #{table}")
        return tb

    def texts(self, wid: int | None = None) -> list[str]:
        return [t for w, t in self.events if t is not None and (wid is None or w == wid)]

    def told(self) -> list[str]:
        """The events in words; when more than one task ran, in runs of one task each, in the order
        the scheduler ran them ("CPU 1 runs: ...")."""
        runs: list[tuple[int, list[str]]] = []
        for w, t in self.events:
            if t is None:
                if not runs or runs[-1][0] != w:
                    runs.append((w, []))
            else:
                if not runs or runs[-1][0] != w:     # an event of a task the scheduler did not mark
                    runs.append((w, []))
                runs[-1][1].append(t)
        if len({w for w, _ in runs}) <= 1:
            return [t for _, ts in runs for t in ts]
        return [f"{_task(w)} runs" + (": " + "; ".join(ts) if ts else "") for w, ts in runs]


def _lists_of(snap: Snapshot) -> dict[int, str | None]:
    return {c["index"]: c["list"] for c in snap.clusters}


def _diff(s0: Snapshot, s1: Snapshot) -> list[str]:
    """List moves and per-CPU cache changes between two snapshots."""
    out = []
    l0, l1 = _lists_of(s0), _lists_of(s1)
    for c in sorted(l0):
        if l0[c] != l1[c]:
            out.append(f"cluster {c}: {short_list(l0[c])} -> {short_list(l1[c])}")
    for p0, p1 in zip(s0.percpu, s1.percpu, strict=True):
        if p0["offset"][0] != p1["offset"][0]:
            out.append(f"CPU {p0['cpu']} offset[0]: {p0['offset'][0]} -> {p1['offset'][0]}")
    return out


# -- a lesson's device -------------------------------------------------------------------------------------

_MASK64 = (1 << 64) - 1


class Stage:
    """One device of a lesson: the model, its recorder, and the schedule scripts run on it."""

    def __init__(self, alloc_table: str = "seed") -> None:
        self.rec = Recorder()
        self.alloc_table = alloc_table
        self.model = Model(lesson_config(alloc_table), observers=[self.rec])
        self.results: list[tuple[int, str, object]] = []   # (task, operation, what it returned)
        self.points = 0
        self.digest = 0
        self.main: int | None = None                      # the step's task: others' operations are told
        self.cpu_of: dict[int, int] = {}                  # slot -> the CPU it was allocated on

    def make_op(self, model: Model, op: tuple) -> Callable[[], None]:
        """The script's operation ``op``, keeping what it returns (and, in words, what another
        task's operation did)."""
        kind = op[0]
        results, rec = self.results, self.rec

        def me() -> int:
            return model.system.current.wid

        def tell(text: str) -> None:
            if me() != self.main:
                rec.note(me(), text)

        if kind == "alloc":
            _, order, state, times = op

            def alloc() -> None:
                for _ in range(times):
                    a = model.alloc(order=order, state=state)
                    if a is not None:                 # the CPU the task runs on now: where it woke
                        cpu = model.system.current.cpu
                        self.cpu_of.update((s, cpu) for s in range(a.entry, a.entry + a.nr))
                    results.append((me(), "alloc", a))
                    tell("folio_alloc_swap: no slot" if a is None else
                         f"folio_alloc_swap: slot {a.entry} (cluster {a.entry // SPC}, table "
                         f"#{int(model.system.shm.clu['table'][a.entry // SPC])})")
            return alloc
        if kind == "free":
            def free() -> None:
                for e in range(op[1], op[2] + 1):
                    if e in model.held:
                        a = model.held[e]
                        tell(f"frees slot {e}")
                        model.free(e)
                        results.append((me(), "free", a))
            return free
        if kind == "lookup":
            def lookup() -> None:
                rec.reader = me()
                try:
                    for e in range(op[1], op[2] + 1):
                        results.append((me(), "lookup", model.lookup(None, e)))
                finally:
                    rec.reader = -1
            return lookup
        return script_op(model, op)

    def schedule(self, body: str, main: int | None = None,
                 stops: dict[int, Stop] | None = None) -> list[tuple[int, str, object]]:
        """Run the script ``body`` on this device under the deterministic scheduler; returns what
        its operations returned.  ``main``: the step's task (the operations of the others are told
        in the recorder's events); ``stops``: ``{n: callback}`` called once the first ``n`` lines
        are done (``run_schedule``)."""
        self.results = []
        self.main = main
        rec = self.rec
        last = [-1]

        def on_step(sched: Scheduler, t: SchedTask) -> None:
            if t.idx != last[0]:
                last[0] = t.idx
                rec.note(t.wid, None)
        sched = run_schedule(self.model, body, make_op=self.make_op, on_step=on_step, stops=stops)
        self.points += sched.step
        self.digest = (self.digest * 1000003 ^ sched.digest) & _MASK64
        self.model.on_manager()
        return self.results

    def frame(self, caption: str, note: str = "", marks: dict[int, str] | None = None) -> Frame:
        """The device now; ``marks``: words drawn next to some clusters (what a task does with it)."""
        m = self.model
        marks = marks or {}
        snap = m.snapshot()
        shm = m.system.shm
        owner = {}
        for a in m.held.values():
            for s in range(a.entry, a.entry + a.nr):
                owner[s] = str(self.cpu_of[s]) if s in self.cpu_of else "*"
        used = shm.map_np
        clusters = []
        for c in snap.clusters:
            i = c["index"]
            chars = "".join("H" if used[s] == SWAP_MAP_BAD else owner.get(s, "*") if used[s] else "."
                            for s in range(i * SPC, (i + 1) * SPC))
            clusters.append(ClusterView(i, chars, c["list"], int(shm.clu["table"][i]), c["flag"],
                                        bool(shm.clu["lost"][i]), marks.get(i, "")))
        cpus = tuple(CpuView(p["cpu"], p["offset"][0], SPC) for p in snap.percpu)
        return Frame(caption, tuple(clusters), cpus, {k: v for k, v in snap.lists.items() if v}, note,
                     self.alloc_table)

    def stat(self, wid: int, s: Stat) -> int:
        return int(self.model.system.shm.workers["stats"][wid][s])

    def lost(self, ci: int) -> tuple[str, int] | None:
        """The seed's record in a cluster it left isolated on no list: (branch, the cluster it used
        instead or -1), None when it is not lost."""
        word = int(self.model.system.shm.clu["lost"][ci])
        if not word:
            return None
        branch, _, _, other = decode_lost(word)
        return LOST_NAMES.get(branch, str(branch)), other

    def close(self) -> dict:
        m = self.model
        try:
            m.free_all()
            m.run_pending_work()
            res = m.check()
            return {"alloc_table": self.alloc_table, "ok": res.ok, "violations": len(res.violations),
                    "findings": [f"{f.where}: {f.branch}" for f in res.findings]}
        finally:
            m.close()


def _steers(line: str) -> bool:
    """A script line that does more than queue an operation and run its task to the end."""
    return line.startswith("fail ") or " wakes on " in line or " until " in line


def _op_words(state: str) -> str:
    return "" if state == SWAPPED else f" state {state}"


class Script:
    """Builds a lesson's steps on one or more stages."""

    def __init__(self, name: str, seed: int) -> None:
        self.name = name
        self.rng = random.Random(f"{name}/{seed}")
        self.stages: list[Stage] = []
        self.stage: Stage | None = None
        self.steps: list[Step] = []
        self.setup: list[str] = []
        self.note = ""
        self._last: Stage | None = None

    def open(self, alloc_table: str = "seed", note: str = "") -> Stage:
        self.stage = Stage(alloc_table)
        self.stages.append(self.stage)
        self.note = note
        return self.stage

    def close(self) -> list[dict]:
        checks = []
        for st in self.stages:
            checks.append(st.close())
        return checks

    # -- setting up the problem (no questions) --------------------------------------------------------
    def prefill(self, cpu: int, n: int, state: str = SWAPPED) -> list[Allocation]:
        if not n:
            return []
        body = f"cpu{cpu}: alloc{_op_words(state)} times {n}\nrun cpu{cpu}"
        got = [a for _, _, a in self.stage.schedule(body, cpu)]
        slots = [a.entry for a in got]
        listed = (f"{slots[0]}..{slots[-1]}" if n > 4 and slots == list(range(slots[0], slots[0] + n))
                  else " ".join(map(str, slots)))
        self.setup.append(f"{self.stage.alloc_table}: CPU {cpu} allocated {n} slot{'s' if n > 1 else ''}: {listed}")
        return got

    # -- steps -------------------------------------------------------------------------------------------
    def _caption(self, text: str) -> str:
        return f"{self.name} ({self.stage.alloc_table}): {text}"

    def _moment(self, line: str, short: str, text: str, marks: dict[int, str]) -> Moment:
        """A picture of the device now, in the middle of the running step, stopped after ``line``."""
        n = len(self.steps) + 1
        return Moment(line, text, self.stage.frame(self._caption(f"during step {n}: {short}"), self.note, marks))

    def _run(self, cpu: int | None, func: str, body: list[str],
             questions: Callable[[object, Snapshot, Snapshot, list[str]], tuple[str, list[Question]]],
             stops: dict[int, Callable[[], Moment | None]] | None = None) -> object:
        """One step: run the script ``body`` (its first operation is the step's, by ``cpu``).
        ``stops``: ``{n: look}``, ``look()`` called once the first ``n`` lines are done (every task
        parked); the pictures it returns are the step's ``during``."""
        st = self.stage
        n = len(self.steps) + 1
        who = f"CPU {cpu}" if cpu is not None else "the manager"
        before = st.frame(self._caption(f"before step {n}: {who} calls {func}"), self.note)
        s0 = st.model.snapshot()
        st.rec.reset()
        points = st.points
        me = CPUS if cpu is None else cpu
        during: list[Moment] = []

        def stop(look: Callable[[], Moment | None]) -> Stop:
            def at(_sched: Scheduler) -> None:
                m = look()
                if m is not None:
                    during.append(m)
            return at
        mine = [r for w, _, r in st.schedule("\n".join(body), me, {k: stop(v) for k, v in (stops or {}).items()})
                if w == me]
        result = mine[0] if mine else None
        s1 = st.model.snapshot()
        events = st.rec.texts(me)
        what, qs = questions(result, s0, s1, events)
        interleaved = len({w for w, t in st.rec.events if t is None}) > 1
        changed = "; ".join([what] + st.rec.told() + _diff(s0, s1))
        after = st.frame(self._caption(f"after step {n}: {what}"), self.note)
        fresh = bool(self.steps) and self._last is not st
        self._last = st
        self.steps.append(Step(n, cpu, func, changed, qs, before, after, st.rec.texts(), fresh,
                               body if interleaved or any(_steers(x) for x in body) else [], st.points - points,
                               during))
        return result

    def alloc(self, cpu: int, state: str = SWAPPED, *, atomic_fail: bool = False, sleep_fail: bool = False,
              wake_on: int | None = None, meanwhile: int | None = None) -> Allocation | None:
        """``cpu`` allocates.  With ``atomic_fail`` its atomic table allocation fails (``fail
        atomic 1``; ``sleep_fail``: the sleeping one too): the script runs it until it sleeps in
        swap_cluster_alloc_table, runs CPU ``meanwhile``'s allocation to the end (if given), and
        wakes it on CPU ``wake_on``."""
        st = self.stage
        counted = (Stat.FAST_HIT, Stat.SLOW_PATH, Stat.USED_PERCPU, Stat.INSTALLED, Stat.RETURNED_NULL)
        before = {k: st.stat(cpu, k) for k in counted}
        lost0 = {c for c in range(CLUSTERS) if st.lost(c)}
        body = [f"cpu{cpu}: alloc{_op_words(state)}"]
        stops: dict[int, Callable[[], Moment | None]] = {}
        at_wake: list[Snapshot] = []
        if atomic_fail:
            if meanwhile is not None:
                body.append(f"cpu{meanwhile}: alloc")
            body.append("fail atomic 1")
            if sleep_fail:
                body.append("fail sleeping 1")
            body.append(f"run cpu{cpu} until sleep in swap_cluster_alloc_table")
            stops[len(body)] = lambda line=body[-1]: self._asleep(cpu, line)
            if meanwhile is not None:
                body.append(f"run cpu{meanwhile}")
            if wake_on is not None:
                body.append(f"cpu{cpu} wakes on cpu{wake_on}")

            def wake_snapshot() -> None:          # what the re-check after the sleep will read
                at_wake.append(st.model.snapshot())
            stops[len(body)] = wake_snapshot
        body.append(f"run cpu{cpu}")

        def recheck(a: Allocation | None, did: set[Stat], s1: Snapshot) -> str:
            """What swap_cluster_alloc_table did after the sleep, from the recorder (the sleep, the
            wake-up, the tables), the counters (its branch), the snapshot taken just before the task
            woke (the per-CPU cache it re-checks) and the seed's lost-cluster record (the cluster
            used instead).  Whether a cluster is lost is the next question's."""
            if st.rec.asleep is None or st.rec.woke is None:
                return "it did not sleep"
            ci, now = st.rec.asleep[1], st.rec.woke[1]
            off = at_wake[0].percpu[now]["offset"][0] if at_wake else 0
            if off:
                pc = at_wake[0].clusters[off // SPC]
                cache = (f"CPU {now}'s per-CPU cluster (offset[0] = {off}: cluster {pc['index']}, on "
                         f"{short_list(pc['list'])}, {pc['count']} of {SPC} slots in use)")
            else:
                cache = f"CPU {now}'s per-CPU cache (offset[0] = 0: nothing cached)"
            table = [t for w, c, t, sleeping in st.rec.tables if w == cpu and c == ci and sleeping]
            unused = [t for w, _, t in st.rec.unused if w == cpu]
            lost = st.lost(ci)
            if st.alloc_table != "seed":
                out = [f"no re-check: it leaves {cache} alone"]
            elif Stat.USED_PERCPU in did:
                used = lost[1] if lost and lost[1] >= 0 else off // SPC
                out = [f"the seed re-checks {cache}: usable and not full, so it returns cluster {used} instead of "
                       f"cluster {ci}, the one it isolated"]
            else:
                out = [f"the seed re-checks {cache}: " + ("not usable or full, so it goes on with cluster "
                                                          f"{ci}" if off else "nothing to use")]
            if Stat.INSTALLED in did:
                out.append(f"it installs table #{table[0]} in cluster {ci}" if table else f"cluster {ci} gets a table")
            if Stat.RETURNED_NULL in did:
                out.append("the sleeping allocation failed too, so it returns NULL" +
                           ("" if st.alloc_table == "seed" else f" after putting cluster {ci} back on free_clusters")
                           + ": the slow path goes on")
            if unused:
                out.append(f"table #{unused[0]}, allocated in the sleep, is freed unused")
            elif not table and Stat.RETURNED_NULL not in did:
                out.append("the sleeping allocation failed too: no table to free")
            return "; ".join(out)

        def questions(a, s0, s1, events):
            did = {k for k in counted if st.stat(cpu, k) > before[k]}
            fast, slow = Stat.FAST_HIT in did, Stat.SLOW_PATH in did
            if a is None:
                where = "no slot (folio_alloc_swap failed)"
                qs = [Question("which cluster and slot does it take?", where)]
            else:
                c = a.entry // SPC
                if Stat.USED_PERCPU in did:
                    src = f"CPU {st.rec.woke[1]}'s per-CPU cluster, which the re-check after the sleep returned"
                elif Stat.INSTALLED in did:
                    src = "the cluster isolated from free_clusters, with the table the sleep brought"
                elif Stat.RETURNED_NULL in did:
                    src = (f"{short_list(_lists_of(s0)[c])}: swap_cluster_alloc_table returned NULL and "
                           "the slow path went on")
                elif fast:
                    src = "the per-CPU cache (swap_alloc_fast)"
                else:
                    src = f"{short_list(_lists_of(s0)[c])} (swap_alloc_slow)"
                where = f"slot {a.entry} of cluster {c}"
                qs = [Question("which cluster and slot does it take?", f"cluster {c}, slot {a.entry}, from {src}")]
            installed = [e for e in events if "allocated for cluster" in e and "freed unused" not in e]
            if not atomic_fail:                  # (with atomic_fail the script says it: it fails, it sleeps)
                tab = ("yes: " + installed[0] if installed else
                       f"no: cluster {a.entry // SPC} already has table "
                       f"#{int(st.model.system.shm.clu['table'][a.entry // SPC])}" if a else "no: nothing found")
                qs.append(Question("is a swap table allocated?", tab))
            if a is not None:
                c = a.entry // SPC
                l0, l1 = _lists_of(s0)[c], _lists_of(s1)[c]
                moved = f"{short_list(l1)} (from {short_list(l0)})" if l0 != l1 else f"it stays on {short_list(l1)}"
                qs.append(Question("which list is that cluster on afterwards?", moved))
            if atomic_fail:
                woke = f"cpu{cpu} wakes on CPU {wake_on}: does" if wake_on is not None else "After its sleep, does"
                other = f"CPU {wake_on}'s" if wake_on is not None else "its CPU's"
                qs.insert(0, Question(f"{woke} swap_cluster_alloc_table then use {other} per-CPU cluster or the "
                                      "cluster it isolated, and what becomes of the table it slept for?",
                                      recheck(a, did, s1)))
                lost = [(c, st.lost(c)) for c in range(CLUSTERS) if st.lost(c) and c not in lost0]
                qs.append(Question("does a cluster end up on no list (lost)?",
                                   "; ".join(f"yes: cluster {c} ({b}: isolated for the table, never put back on a "
                                             "list)" for c, (b, _) in lost) or "no"))
            return where + (" (fast path)" if fast else " (slow path)" if slow else ""), qs

        return self._run(cpu, f"folio_alloc_swap(order 0{', ' + state if state != SWAPPED else ''})", body,
                         questions, stops)

    def _asleep(self, cpu: int, line: str) -> Moment | None:
        """The picture when ``cpu``'s task has dropped every lock to sleep for a table."""
        st = self.stage
        if st.rec.asleep is None:
            return None
        _, ci, was = st.rec.asleep
        c = st.model.snapshot().clusters[ci]
        text = (f"cpu{cpu} (on CPU {was}) sleeps in swap_cluster_alloc_table for a table for cluster {ci}, every "
                f"lock dropped; cluster {ci}: " + (f"on {short_list(c['list'])}" if c["list"] else "on no list") + ", "
                + ("a table" if c["table"] else "no table") + f", {c['count']} slots in use")
        return self._moment(line, f"cpu{cpu} asleep in swap_cluster_alloc_table", text,
                            {ci: f"cpu{cpu} isolated it, asleep for its table"})

    def free(self, a: Allocation, cpu: int) -> None:
        c = a.entry // SPC
        func = "free_swap_and_cache_nr" if a.state == SWAPPED else "folio_free_swap (swap_cache_del_folio)"

        def questions(_, s0, s1, events):
            n_left = s1.clusters[c]["count"]
            gone = [e for e in events if "lost its table" in e]
            qs = [Question(f"does cluster {c} lose its table?",
                           "yes: it is empty, " + gone[0] if gone else f"no: {n_left} slot(s) still in use"),
                  Question(f"which list is cluster {c} on afterwards?",
                           short_list(s1.clusters[c]["list"]) + (f" (from {short_list(s0.clusters[c]['list'])})"
                                                                  if s0.clusters[c]["list"] != s1.clusters[c]["list"]
                                                                  else " (unchanged)"))]
            return f"slot {a.entry} freed", qs

        self._run(cpu, f"{func}(slot {a.entry})", [f"cpu{cpu}: free {a.entry}", f"run cpu{cpu}"], questions)

    def lookup(self, cpu: int, entry: int, free_meanwhile: tuple[int, Allocation] | None = None,
               realloc: bool = False) -> int | None:
        """``cpu`` looks ``entry`` up locklessly.  With ``free_meanwhile`` (a CPU and the allocation
        it frees) the script runs the reader until its window (``run cpuN until reader``), then the
        other CPU's free (and, with ``realloc``, a new cache-only allocation), then the reader."""
        st = self.stage
        body = [f"cpu{cpu}: lookup {entry}"]
        stops: dict[int, Callable[[], Moment | None]] = {}
        if free_meanwhile is not None:
            other, x = free_meanwhile
            body.append(f"cpu{other}: free {x.entry}")
            if realloc:
                body.append(f"cpu{other}: alloc state {CACHE_ONLY}")
            body.append(f"run cpu{cpu} until reader")
            stops[len(body)] = lambda line=body[-1]: self._in_window(cpu, entry, line)
            body.append(f"run cpu{other}")
        body.append(f"run cpu{cpu}")

        def questions(folio, s0, s1, events):
            table, tb = st.rec.read if st.rec.read is not None else (-1, 0)
            if folio is not None:
                ans = f"yes: folio {folio}"
            elif table < 0:
                ans = "no: the cluster's table pointer was NULL"
            elif tb and not tb & 1:
                ans = (f"no: table #{table} had been reused by another cluster; the reader read that cluster's "
                       f"folio {(tb >> 3) - 1} at its offset and folio_matches_swap_entry rejected it")
            else:
                ans = "no: the detached table reads NULL there (SLAB_TYPESAFE_BY_RCU kept its memory valid)"
            return (f"lookup of slot {entry}: " + ("found" if folio is not None else "nothing"),
                    [Question(f"does the lockless lookup of slot {entry} find a folio?", ans)])

        return self._run(cpu, f"swap_cache_get_folio(slot {entry})", body, questions, stops)

    def _in_window(self, cpu: int, entry: int, line: str) -> Moment | None:
        """The picture when ``cpu``'s lockless reader holds a cluster's table pointer, the entry not
        read yet."""
        if self.stage.rec.window is None:
            return None
        ci, table, off = self.stage.rec.window
        held = f"table #{table}" if table >= 0 else "NULL"
        text = (f"cpu{cpu}'s lookup of slot {entry} loaded cluster {ci}'s table pointer ({held}) inside "
                f"rcu_read_lock and has not read its entry {off} yet")
        return self._moment(line, f"cpu{cpu}'s reader holds {held}", text,
                            {ci: f"cpu{cpu}'s reader holds {held} (its entry {off} not read yet)"})

    def work(self) -> None:
        st = self.stage
        live0 = st.model.system.slab.statistics()["live"]

        def questions(_, s0, s1, events):
            live = st.model.system.slab.statistics()["live"]
            tables = sum(1 for c in s1.clusters if c["table"])
            return (f"a grace period passed; {live} table object(s) live",
                    [Question("how many table objects are live afterwards?",
                              f"{live} (before: {live0}), one per cluster with a table ({tables}): a freed "
                              "table went straight back to the slab's freelist (SLAB_TYPESAFE_BY_RCU); only "
                              "empty slab pages wait for a grace period")])
        self._run(None, "run_pending_work (discard, reclaim, synchronize_rcu, RCU callbacks)",
                  ["manager: run_pending_work", "manager: grace_period", "run manager"], questions)


# -- the lessons -----------------------------------------------------------------------------------------

def _paths(s: Script) -> None:
    rng = s.rng
    a = rng.choice((0, 1))
    b = 1 - a
    s.open()
    s.prefill(a, rng.randint(2, 4))
    s.alloc(a)                                   # fast: its cached cluster
    s.alloc(b)                                   # slow: nothing cached, free_clusters
    used = s.stage.model.snapshot().clusters[0]["count"]
    for _ in range(SPC - used):
        s.alloc(a)                               # fast, until cluster 0 is full: the cache is emptied
    s.alloc(a if rng.random() < 0.5 else b)      # the full one is gone: slow path, or b's fast path
    s.alloc(a)


def _sharing(s: Script) -> None:
    rng = s.rng
    s.open()
    s.prefill(0, rng.randint(1, 3))
    s.prefill(1, 3 * SPC)                        # CPU 1 fills clusters 1..3
    order = [1, 0] + [rng.choice((0, 1)) for _ in range(2)]
    for cpu in order:
        s.alloc(cpu)


def _emptying(s: Script) -> None:
    rng = s.rng
    a = rng.choice((0, 1))
    b = 1 - a
    s.open()
    s.prefill(a, rng.randint(1, 3))
    mine = s.prefill(b, rng.randint(2, 4))
    rng.shuffle(mine)
    for al in mine:
        s.free(al, b)
    s.alloc(b)
    s.work()


def _sleep(s: Script) -> None:
    rng = s.rng
    sleep_fail = rng.random() < 0.3
    meanwhile = rng.random() < 0.5
    pre = rng.randint(1, 3)
    for variant in ("seed", "merged"):
        s.open(variant, note=f"swap_cluster_alloc_table as {variant}")
        s.prefill(1, pre)
        s.alloc(0, atomic_fail=True, sleep_fail=sleep_fail, wake_on=1, meanwhile=1 if meanwhile else None)
        s.alloc(0)


def _reader(s: Script) -> None:
    rng = s.rng
    reader = rng.choice((0, 1))
    writer = 1 - reader
    reuse = rng.random() < 0.6
    s.open()
    s.prefill(reader, 1)
    x = s.alloc(writer, state=CACHE_ONLY)
    s.lookup(reader, x.entry, free_meanwhile=(writer, x), realloc=reuse)
    s.work()


@dataclass(frozen=True)
class LessonSpec:
    title: str
    intro: str
    script: Callable[[Script], None]


LESSONS: dict[str, LessonSpec] = {
    "paths": LessonSpec(
        "the fast path and the slow path", (
            "folio_alloc_swap first tries swap_alloc_fast: the cluster this CPU cached in "
            "percpu_swap_cluster.offset[order], under the CPU's local lock. With nothing usable cached it "
            "takes swap_alloc_slow: cluster_alloc_swap_entry walks nonfull, free, then frag lists, isolates "
            "a cluster, gives it a swap table if it has none, and caches the next offset. A cluster that "
            "fills up goes to full_clusters and leaves the cache."), _paths),
    "sharing": LessonSpec(
        "two CPUs sharing a cluster", (
            "When no free cluster is left, the slow path takes a cluster from frag_clusters, even one "
            "another CPU has cached: both CPUs then allocate from it, each scanning on from its own cached "
            "offset and skipping the slots the other took."), _sharing),
    "emptying": LessonSpec(
        "a cluster emptying and losing its table", (
            "Each free drops a slot's count under ci->lock. When a cluster's last slot goes, the cluster "
            "returns to free_clusters and swap_cluster_free_table detaches and frees its swap table: an "
            "empty cluster costs no table memory. A CPU's cache may still point into it."), _emptying),
    "sleep": LessonSpec(
        "the sleeping table allocation, with migration: seed vs merged", (
            "A cluster taken from free_clusters needs a table. If the atomic allocation fails, "
            "swap_cluster_alloc_table drops every lock and sleeps for one; the task may wake on another "
            "CPU. The seed (patch v2 14/15) then re-checks that CPU's per-CPU cluster and uses it instead, "
            "leaving the isolated cluster on no list (lost until swapoff, branch T5), or returns NULL if the "
            "sleep failed (T6b). The merged version (Linux 6.18) installs the table in the isolated "
            "cluster, or puts it back on free_clusters. Both variants run the same problem here."), _sleep),
    "reader": LessonSpec(
        "a lockless reader during a table free", (
            "swap_cache_get_folio reads a slot's table entry without ci->lock: inside rcu_read_lock it "
            "loads the cluster's table pointer, then the entry. Meanwhile another CPU may free the last "
            "slot, and swap_cluster_free_table frees the table. The table slab is SLAB_TYPESAFE_BY_RCU: "
            "the memory stays a table, but may already belong to another cluster, so the reader must "
            "check the folio it finds (folio_matches_swap_entry)."), _reader),
}


def run_lesson(name: str, seed: int = 0) -> LessonRun:
    """Run lesson ``name`` on ``seed``: its steps, pictures, questions and answers."""
    spec = LESSONS[name]
    s = Script(name, seed)
    try:
        spec.script(s)
        final = s.stage.frame(f"{name} ({s.stage.alloc_table}): the end", s.note)
    finally:
        checks = s.close()
    digest = 0
    for st in s.stages:
        digest = (digest * 1000003 ^ st.digest) & _MASK64
    return LessonRun(name, spec.title, seed, spec.intro, s.setup, s.steps, final, checks,
                     sum(st.points for st in s.stages), digest)
