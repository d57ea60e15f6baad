"""The twin: one scenario run on the live kernel and through the model, compared slot by slot.

A **scenario** is JSON (version 1)::

    {"version": 1,
     "name": "fast-path",                    # optional: what it shows
     "description": "...",                   # optional
     "device": {"size": "4M",                # bytes, or a number with K/M/G (a multiple of 4 KiB;
                                             #   the swap header's last_page is size/4096 - 1)
                "bad_pages": [700, 701],     # optional: the header's bad-page list (1..last_page)
                "kind": "ssd",               # ssd | hdd (hdd: the global cluster cursor, no per-CPU cache)
                "discard": false},           # optional: swapon --discard=pages
     "cpus": 2,                              # CPUs 0..cpus-1 (the i-th CPU this process may use)
     "ops": [{"cpu": 0, "alloc": 3, "order": 2},   # 3 folios of order 2, one after another, on CPU 0
             {"cpu": 1, "free": [0, 2]}],          # free folios 0 and 2 (ids count allocated folios from 0)
     "expect": [[1, 2, 3, 4], ...]}           # optional: recorded kernel slots per folio (golden)

Every ``alloc`` makes ``alloc`` folios of ``order`` (default 0), each swapped out on its own: the
model's ``Model.alloc(cpu, order, state="swapped")``, the kernel's ``MADV_PAGEOUT`` of one
freshly touched folio.  A folio's **slots** are one per page, in address order: the swap offset,
or ``None`` when the page stayed in memory (no slot).  When a large folio gets no slots the kernel
splits it and swaps its pages out one at a time, the head page first, then the tail pages from the
highest down; the replay does the same.  ``free`` zaps folios in the order given, each page by
page in address order (the kernel's ``MADV_DONTNEED``; runs of consecutive slots are one
``free_swap_and_cache_nr`` batch there, which ends in the same lists).  An op may carry ``"note"``.

* ``parse_scenario(doc)`` / ``load_scenario(path)``: a validated ``Scenario`` (``ScenarioError``,
  whose message names the value, otherwise).
* ``replay_model(scenario, alloc_table)``: the model's slots per folio (``Replay``);
  ``model_state(scenario, alloc_table, op)``: the model's snapshots around one op.
* ``compare(kernel, model)``: every page's slot; the first difference and the count.
* ``random_scenario(seed, orders=, hdd=, max_cpus=)``: device size, bad pages, CPUs, orders and
  frees varied, the device driven near full and past it, so every allocation path is hit.
* ``cost_scenario(order, folios)`` / ``model_cost(order, folios)`` (``shmswap twin --cost``): one CPU
  allocating ``folios`` folios of ``order`` on an empty device with room for all of them; the
  model's side is ``Model.alloc(0, order)`` (a folio, ``folio_alloc_swap``, the map count and the
  writeback) per folio, timed as one ``perf_counter_ns`` span with the garbage collector off.

Not drivable from user space (and so not in the format): cache-only slots (after a pageout no
page stays in the swap cache) and so the full-cluster reclaim and its worker; table allocation
failures, sleeps and migrations (the kernel does not fail them on demand; the model runs with
``atomic_fail=0``, ``sleep_fail=0``, ``migrate=0``, where both ``alloc_table`` variants must agree
with the kernel); several devices (the model has one).
"""

from __future__ import annotations

import gc
import json
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources

from ..config import PAGE_SIZE, Config, ConfigError, parse_size, shown
from ..model import Model, Snapshot
from ..substrate.observe import Observer

__all__ = ["ScenarioError", "Scenario", "Replay", "Difference", "parse_scenario", "load_scenario",
           "scenario_doc", "model_config", "replay_model", "model_state", "compare", "random_scenario",
           "split_order", "describe_difference", "shipped", "shipped_names", "KERNEL_ORDERS", "MAX_BAD_PAGES",
           "VERSION", "ALLOC_TABLES", "cost_scenario", "model_cost"]

VERSION = 1
KERNEL_ORDERS = (0, 2, 3, 4, 5, 6, 7, 8, 9)   # anonymous folio orders a 6.18 kernel makes (no order 1)
MAX_BAD_PAGES = (PAGE_SIZE - 1536 - 10) // 4  # MAX_SWAP_BADPAGES: the list ends before SWAPSPACE2
SPC = 512                                      # the kernel's SWAPFILE_CLUSTER
ALLOC_TABLES = ("seed", "merged")
MAX_PAGES = 1 << 22                            # 16 GiB: far beyond a useful twin
_TOP = {"version", "name", "description", "device", "cpus", "ops", "expect"}
_DEVICE = {"size", "bad_pages", "kind", "discard"}


class ScenarioError(ValueError):
    """A scenario is invalid; the message names the value."""


@dataclass(frozen=True)
class Scenario:
    """A validated scenario (see the module docstring)."""

    size: int                                   # bytes, a multiple of PAGE_SIZE
    bad_pages: tuple[int, ...]
    kind: str
    discard: bool
    cpus: int
    ops: tuple[dict, ...]
    name: str = ""
    description: str = ""
    expect: tuple[tuple[int | None, ...], ...] | None = None

    @property
    def pages(self) -> int:
        """si->max: the header's last_page + 1."""
        return self.size // PAGE_SIZE

    @property
    def folios(self) -> list[int]:
        """Each folio's order, by id."""
        return [op.get("order", 0) for op in self.ops if "alloc" in op for _ in range(op["alloc"])]

    @property
    def orders(self) -> set[int]:
        return {op.get("order", 0) for op in self.ops if "alloc" in op}


def _fail(where: str, value, why: str) -> ScenarioError:
    return ScenarioError(f"{where}: {shown(value)} {why}")


def _int(where: str, value, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(where, value, "is not an integer")
    if not lo <= value <= hi:
        raise _fail(where, value, f"is out of range {lo}..{hi}")
    return value


def parse_scenario(doc, name: str = "") -> Scenario:
    """A validated ``Scenario`` from the parsed JSON ``doc`` (``name`` if it names none)."""
    if not isinstance(doc, dict):
        raise _fail("scenario", doc, "is not a JSON object")
    for k in doc:
        if k not in _TOP:
            raise _fail("scenario", k, f"is not a key of a scenario ({', '.join(sorted(_TOP))})")
    if doc.get("version") != VERSION:
        raise _fail("version", doc.get("version"), f"is not {VERSION}")
    dev = doc.get("device")
    if not isinstance(dev, dict):
        raise _fail("device", dev, "is not an object with size, bad_pages, kind, discard")
    for k in dev:
        if k not in _DEVICE:
            raise _fail("device", k, f"is not a key of a device ({', '.join(sorted(_DEVICE))})")
    if "size" not in dev:
        raise ScenarioError("device: size is missing")
    try:
        size = parse_size(dev["size"])
    except ConfigError:
        raise _fail("device.size", dev["size"], "is not a size (bytes, or a number with K, M or G)") from None
    if size % PAGE_SIZE:
        raise _fail("device.size", dev["size"], f"is not a multiple of {PAGE_SIZE}")
    pages = size // PAGE_SIZE
    if not SPC <= pages <= MAX_PAGES:
        raise _fail("device.size", dev["size"], f"is not {SPC}..{MAX_PAGES} pages")
    bad = dev.get("bad_pages", [])
    if not isinstance(bad, list):
        raise _fail("device.bad_pages", bad, "is not a list")
    if len(bad) > MAX_BAD_PAGES:
        raise _fail("device.bad_pages", len(bad), f"bad pages are more than the header holds ({MAX_BAD_PAGES})")
    bad_pages = tuple(sorted({_int("device.bad_pages", b, 1, pages - 1) for b in bad}))
    kind = dev.get("kind", "ssd")
    if kind not in ("ssd", "hdd"):
        raise _fail("device.kind", kind, "is not ssd or hdd")
    discard = dev.get("discard", False)
    if not isinstance(discard, bool):
        raise _fail("device.discard", discard, "is not true or false")
    cpus = _int("cpus", doc.get("cpus"), 1, 256)
    ops = doc.get("ops")
    if not isinstance(ops, list):
        raise _fail("ops", ops, "is not a list")
    out: list[dict] = []
    live: set[int] = set()
    next_id = 0
    for i, op in enumerate(ops):
        where = f"ops[{i}]"
        if not isinstance(op, dict):
            raise _fail(where, op, "is not an object")
        cpu = _int(f"{where}.cpu", op.get("cpu", 0), 0, cpus - 1)
        if ("alloc" in op) == ("free" in op):
            raise _fail(where, op, "needs exactly one of alloc and free")
        if "alloc" in op:
            extra = set(op) - {"cpu", "alloc", "order", "note"}
            if extra:
                raise _fail(where, sorted(extra)[0], "is not a key of an alloc op (cpu, alloc, order, note)")
            n = _int(f"{where}.alloc", op["alloc"], 1, 1 << 20)
            order = _int(f"{where}.order", op.get("order", 0), 0, 9)
            out.append({"cpu": cpu, "alloc": n, "order": order})
            live.update(range(next_id, next_id + n))
            next_id += n
        else:
            extra = set(op) - {"cpu", "free", "note"}
            if extra:
                raise _fail(where, sorted(extra)[0], "is not a key of a free op (cpu, free, note)")
            ids = op["free"]
            if not isinstance(ids, list) or not ids:
                raise _fail(f"{where}.free", ids, "is not a non-empty list of folio ids")
            for f in ids:
                if not isinstance(f, int) or isinstance(f, bool) or f not in live:
                    raise _fail(f"{where}.free", f, "is not a folio that is allocated and not yet freed")
                live.discard(f)
            out.append({"cpu": cpu, "free": list(ids)})
        if "note" in op:
            out[-1]["note"] = str(op["note"])
    expect = doc.get("expect")
    if expect is not None:
        orders = [o.get("order", 0) for o in out if "alloc" in o for _ in range(o["alloc"])]
        if not isinstance(expect, list) or len(expect) != len(orders):
            raise _fail("expect", "…", f"is not a list of {len(orders)} folios' slots")
        for f, (slots, order) in enumerate(zip(expect, orders, strict=True)):
            if not isinstance(slots, list) or len(slots) != 1 << order or not all(
                    s is None or (isinstance(s, int) and 0 < s < pages) for s in slots):
                raise _fail(f"expect[{f}]", slots, f"is not {1 << order} slots (each 1..{pages - 1} or null)")
        expect = tuple(tuple(s) for s in expect)
    text = doc.get("name", name)
    return Scenario(size=size, bad_pages=bad_pages, kind=kind, discard=discard, cpus=cpus, ops=tuple(out),
                    name=str(text or name), description=str(doc.get("description", "")), expect=expect)


def load_scenario(path: str) -> Scenario:
    """Read and validate a scenario file; ``ScenarioError`` naming the file otherwise."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except OSError as e:
        raise ScenarioError(f"scenario {shown(path)}: cannot read it ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ScenarioError(f"scenario {shown(path)}: not JSON ({e})") from None
    base = path.rsplit("/", 1)[-1].removesuffix(".json")
    try:
        return parse_scenario(doc, base)
    except ScenarioError as e:
        raise ScenarioError(f"scenario {shown(path)}: {e}") from None


def shipped_names() -> list[str]:
    """The shipped scenarios (``shmswap/experiments/scenarios/*.json``), by name."""
    files = resources.files(__package__).joinpath("scenarios")
    return sorted(f.name.removesuffix(".json") for f in files.iterdir() if f.name.endswith(".json"))


def shipped(name: str) -> Scenario:
    """A shipped scenario by name (``ScenarioError`` if there is none)."""
    if name not in shipped_names():
        raise ScenarioError(f"scenario {shown(name)}: no such file, nor a shipped scenario "
                            f"({', '.join(shipped_names())})")
    text = resources.files(__package__).joinpath("scenarios", f"{name}.json").read_text()
    try:
        return parse_scenario(json.loads(text), name)
    except ScenarioError as e:
        raise ScenarioError(f"shipped scenario {name}: {e}") from None


def scenario_doc(s: Scenario, expect: Iterable | None = None) -> dict:
    """The JSON document of ``s`` (with ``expect`` replaced when given)."""
    doc: dict = {"version": VERSION}
    if s.name:
        doc["name"] = s.name
    if s.description:
        doc["description"] = s.description
    doc["device"] = {"size": s.size, "bad_pages": list(s.bad_pages), "kind": s.kind, "discard": s.discard}
    doc["cpus"] = s.cpus
    doc["ops"] = [dict(op) for op in s.ops]
    exp = expect if expect is not None else s.expect
    if exp is not None:
        doc["expect"] = [list(x) for x in exp]
    return doc


# -- the model's side ----------------------------------------------------------------------------------

def model_config(s: Scenario, alloc_table: str = "seed") -> Config:
    """The model's configuration for ``s``: the kernel's clusters, table allocations that never
    fail, no migration, the scenario's device."""
    return Config(size=s.size, slots_per_cluster=SPC, cpus=s.cpus, device=s.kind,
                  discard="on" if s.discard else "off", bad_pages=s.bad_pages, alloc_table=alloc_table,
                  orders={0: 1.0}, atomic_fail=0.0, sleep_fail=0.0, migrate=0.0, cache_only=0.0,
                  seconds=1.0)


def split_order(order: int) -> list[int]:
    """The pages of a split folio in the order the kernel swaps them out: the head, then the tails
    from the highest down."""
    return [0] + list(range((1 << order) - 1, 0, -1))


@dataclass
class Replay:
    """What a replay recorded: each folio's slots (one per page, address order; None: no slot),
    the op that made each folio, and the device usage after each op."""

    slots: list[list[int | None]] = field(default_factory=list)
    folio_op: list[int] = field(default_factory=list)
    usage: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class _ModelRun:
    """The model driven op by op (``replay_model`` and ``model_state`` share it)."""

    def __init__(self, m: Model, s: Scenario) -> None:
        self.m, self.s = m, s
        self.replay = Replay()
        self.held: list[list] = []          # per folio: the Allocations, in address order of their pages

    def op(self, i: int, op: dict) -> None:
        m, r = self.m, self.replay
        if "alloc" in op:
            order = op["order"]
            for _ in range(op["alloc"]):
                a = m.alloc(op["cpu"], order)
                if a is not None:
                    slots, held = [a.entry + k for k in range(1 << order)], [a]
                else:
                    per_page: dict[int, object] = {}
                    if order:
                        for page in split_order(order):
                            per_page[page] = m.alloc(op["cpu"], 0)
                    slots = [per_page[k].entry if per_page.get(k) is not None else None
                             for k in range(1 << order)]
                    held = [per_page[k] for k in sorted(per_page) if per_page[k] is not None]
                r.slots.append(slots)
                r.folio_op.append(i)
                self.held.append(held)
        else:
            m.on(op["cpu"])
            for f in op["free"]:
                for a in self.held[f]:
                    m.free(a)
                self.held[f] = []
            if self.s.discard:
                m.run_pending_work()        # the kernel's discard work is waited for after each free op
                m.on(op["cpu"])
        r.usage.append(m.usage())


def replay_model(s: Scenario, alloc_table: str = "seed", *, observers: Iterable[Observer] = (),
                 check: bool = True) -> Replay:
    """Replay ``s`` through the model API; with ``check`` the invariant checker runs at the end
    (its violations go to ``Replay.problems``) and the model frees everything."""
    with Model(model_config(s, alloc_table), observers=observers) as m:
        run = _ModelRun(m, s)
        for i, op in enumerate(s.ops):
            run.op(i, op)
        if check:
            result = m.check()
            run.replay.problems += [str(v) for v in result.violations]
            m.free_all()
        return run.replay


def model_state(s: Scenario, alloc_table: str, op_index: int) -> tuple[Snapshot, Snapshot]:
    """The model's snapshots just before and just after op ``op_index``."""
    with Model(model_config(s, alloc_table)) as m:
        run = _ModelRun(m, s)
        for i, op in enumerate(s.ops[:op_index]):
            run.op(i, op)
        before = m.snapshot()
        run.op(op_index, s.ops[op_index])
        return before, m.snapshot()


# -- the cost of a slot (shmswap twin --cost) -------------------------------------------------------------

def cost_scenario(order: int, folios: int) -> Scenario:
    """One CPU allocating ``folios`` folios of ``order`` on an empty device with room for all of
    them: whole clusters, one more for the header page's cluster and one spare."""
    pages = max(2, (folios << order) // SPC + 2) * SPC
    return parse_scenario({"version": VERSION, "device": {"size": str(pages * PAGE_SIZE)}, "cpus": 1,
                           "ops": [{"cpu": 0, "alloc": folios, "order": order}]}, f"cost-order-{order}")


def model_cost(order: int, folios: int, alloc_table: str = "seed") -> dict:
    """The model's time for ``cost_scenario(order, folios)``: ``Model.alloc(0, order)`` per folio
    (state swapped: the folio, its slots, the map count, the writeback), one timed span with the
    garbage collector off; then everything is freed (not timed) and the checker runs.

    Returns ``ns`` (the span), ``folios``, ``slots`` (allocated), ``failed`` (folios that got no
    slot: none on this device), ``us_per_slot``, ``us_per_folio`` and ``problems``."""
    s = cost_scenario(order, folios)
    with Model(model_config(s, alloc_table)) as m:
        m.on(0)
        alloc = m.alloc
        got = []
        enabled = gc.isenabled()
        gc.disable()
        try:
            t0 = time.perf_counter_ns()
            for _ in range(folios):
                got.append(alloc(None, order))
            ns = time.perf_counter_ns() - t0
        finally:
            if enabled:
                gc.enable()
        failed = sum(a is None for a in got)
        slots = (folios - failed) << order
        m.free_all()
        problems = [str(v) for v in m.check().violations]
    return {"ns": ns, "folios": folios, "slots": slots, "failed": failed,
            "us_per_slot": ns / 1e3 / slots if slots else None,
            "us_per_folio": ns / 1e3 / folios if folios else None, "problems": problems}


# -- comparing -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Difference:
    """The first page whose slots differ, and how many pages differ in all."""

    folio: int
    page: int
    op: int
    kernel: int | None
    model: int | None
    count: int


def compare(kernel: Replay | list, model: Replay) -> tuple[int, Difference | None]:
    """(pages compared, the first Difference or None) between a kernel's and the model's slots."""
    ks = kernel.slots if isinstance(kernel, Replay) else [list(x) for x in kernel]
    compared, first, count = 0, None, 0
    for f, (k, mo) in enumerate(zip(ks, model.slots, strict=True)):
        for p, (a, b) in enumerate(zip(k, mo, strict=True)):
            compared += 1
            if a != b:
                count += 1
                if first is None:
                    first = (f, p, a, b)
    if first is None:
        return compared, None
    f, p, a, b = first
    return compared, Difference(f, p, model.folio_op[f], a, b, count)


# -- random scenarios --------------------------------------------------------------------------------------

def random_scenario(seed: int, *, orders: Iterable[int] = (0, 2, 4, 9), hdd: bool = False, max_cpus: int = 2,
                    discard: bool = False, max_pages: int = 8192, name: str = "") -> Scenario:
    """A scenario from ``seed``: a device of 1 to ``max_pages // 512`` clusters and an odd tail,
    sometimes bad pages, 1..``max_cpus`` CPUs, folios of ``orders`` (order 0 the most), filled to
    85-110 % of the device and thinned out again, in two to four rounds."""
    rng = random.Random(seed)
    orders = sorted(set(orders))
    clusters = rng.randint(1, max(1, max_pages // SPC))
    tail = rng.choice([0, 0, rng.randint(1, SPC - 1)])
    pages = clusters * SPC + tail
    bad: list[int] = []
    if rng.random() < 0.5:
        bad = sorted(rng.sample(range(1, pages), rng.randint(1, min(40, pages // 8))))
        if rng.random() < 0.3:                  # a run of bad pages: a cluster with no room for a big folio
            start = rng.randrange(1, max(2, pages - 64))
            bad = sorted(set(bad) | set(range(start, min(pages, start + rng.randint(2, 48)))))
        bad = bad[:MAX_BAD_PAGES]
    cpus = rng.randint(1, max_cpus)
    weights = [4.0 if o == 0 else 1.0 for o in orders]
    ops: list[dict] = []
    live: dict[int, int] = {}                  # folio id -> pages
    next_id, used = 0, 0
    for _ in range(rng.randint(2, 4)):
        target = int(pages * rng.uniform(0.85, 1.1))
        while used < target:
            order = rng.choices(orders, weights)[0]
            n = rng.randint(1, 24 if order == 0 else max(1, 8 >> (order // 3)))
            ops.append({"cpu": rng.randrange(cpus), "alloc": n, "order": order})
            for f in range(next_id, next_id + n):
                live[f] = 1 << order
            next_id += n
            used += n << order
            if rng.random() < 0.15 and live:   # frees while filling
                ids = rng.sample(sorted(live), max(1, len(live) // rng.randint(6, 20)))
                ops.append({"cpu": rng.randrange(cpus), "free": ids})
                used -= sum(live.pop(f) for f in ids)
        share = rng.uniform(0.3, 0.8)
        victims = [f for f in sorted(live) if rng.random() < share]
        rng.shuffle(victims)
        while victims:
            k = rng.randint(1, 32)
            take, victims = victims[:k], victims[k:]
            ops.append({"cpu": rng.randrange(cpus), "free": take})
            used -= sum(live.pop(f) for f in take)
    doc = {"version": VERSION, "name": name or f"random-{seed}",
           "device": {"size": pages * PAGE_SIZE, "bad_pages": bad, "kind": "hdd" if hdd else "ssd",
                      "discard": discard},
           "cpus": cpus, "ops": ops}
    return parse_scenario(doc)


# -- explaining a difference -------------------------------------------------------------------------------

def _cluster_line(snap: Snapshot, slot: int | None) -> str:
    if slot is None:
        return "no slot"
    c = snap.clusters[slot // SPC]
    return (f"slot {slot}: cluster {c['index']} {c['flag']} on {c['list']} at {c['position']}, "
            f"count {c['count']}, order {c['order']}")


def describe_difference(s: Scenario, alloc_table: str, d: Difference) -> list[str]:
    """The op, both slots and the model's state around the op, as lines."""
    op = s.ops[d.op]
    before, after = model_state(s, alloc_table, d.op)
    order = op.get("order", 0)
    lines = [f"first difference in {s.name or 'scenario'} ({alloc_table}): op {d.op} {json.dumps(op)}",
             f"  folio {d.folio} page {d.page}: kernel slot {d.kernel}, model slot {d.model} "
             f"({d.count} pages differ in all)"]
    for label, snap in (("before", before), ("after", after)):
        lines.append(f"  model {label} op {d.op}:")
        if s.kind == "ssd":
            pc = snap.percpu[op["cpu"]]
            lines.append(f"    CPU {op['cpu']} per-CPU cache: order {order} offset {pc['offset'][order]} "
                         f"(si {pc['si'][order]}); offsets by order {pc['offset']}")
        else:
            lines.append(f"    global cluster cursor by order {snap.device['global_next']}")
        for name in ("free_clusters", f"nonfull_clusters[{order}]", f"frag_clusters[{order}]",
                     "nonfull_clusters[0]", "frag_clusters[0]", "discard_clusters"):
            if name in snap.lists:
                items = snap.lists[name]
                lines.append(f"    {name}: {items[:8]}{' …' if len(items) > 8 else ''} ({len(items)})")
        lines.append(f"    kernel's {_cluster_line(snap, d.kernel)}")
        lines.append(f"    model's  {_cluster_line(snap, d.model)}")
        lines.append(f"    device: inuse {snap.device['inuse_pages']} of {snap.device['pages']} usable")
    return lines
