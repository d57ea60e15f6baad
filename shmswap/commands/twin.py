"""``shmswap twin``: run scenarios on the live kernel and through the model, and compare every slot.

``shmswap twin SCENARIO...`` (files, or the names of shipped scenarios; ``--shipped`` runs them
all) or ``shmswap twin --random N --seed S [--orders 0,2,4,9] [--hdd] [--discard]``.  Each
scenario runs once on a dedicated zram swap device (``shmswap.experiments.kernel``) and through the
model with each ``--alloc-table`` variant (table allocations never fail there, so both must agree
with the kernel); every page's slot is compared.  On the first difference the op, both slots and
the model's state around the op are printed.  A scenario another task disturbed (``/proc/swaps``
Used beyond what the twin holds: the DAMON pageout scheme) is rerun, up to ``--retries`` times; a
difference is confirmed by a second kernel run that gives the same slots.

``--cost`` measures instead of comparing: for each of ``--orders``, on one CPU, the kernel's
``MADV_PAGEOUT`` of fresh folios of that order into the zram device (the reclaim path, the slot
allocation and zram's compression of ``--cost-data``: random bytes, or zeros that zram stores as
same-filled pages) beside the model's ``Model.alloc`` of as many folios of that order, in one run;
``--cost-pages`` pages per order (``--cost-pages >> order`` folios).  The table gives microseconds
per page (kernel) and per allocated slot (model), per folio for both, and the model/kernel ratio.

``--model-only`` runs no kernel: the variants are compared with each other and with a scenario's
recorded ``expect`` slots.  ``--record DIR`` writes each scenario with the kernel's slots as its
``expect`` (golden scenarios the tests replay without a kernel).

Exit status: 0 when every slot agrees; 1 on a difference, a model violation, a scenario that
stayed disturbed, or a kernel failure; 2 for bad arguments or a machine that cannot run the twin
(one line: not root, a kernel older than 6.18, no free zram device, another swap device active);
130 after SIGINT and 143 after SIGTERM, with the machine restored.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time

from ..experiments.kernel import (
    COST_DATA,
    THP,
    Disturbed,
    KernelError,
    KernelSwap,
    Refused,
    Terminated,
    comp_algorithm,
    preflight,
)
from ..experiments.twin import (
    ALLOC_TABLES,
    KERNEL_ORDERS,
    Replay,
    compare,
    cost_scenario,
    describe_difference,
    load_scenario,
    model_cost,
    random_scenario,
    replay_model,
    scenario_doc,
    shipped,
    shipped_names,
)
from .common import check_output_path, cut, error, int_arg, progress_bar, write_atomically

__all__ = ["add_parser", "main"]

DEFAULT_ORDERS = "0,2,4,9"
DEFAULT_COST_PAGES = 16384


def add_parser(sub) -> argparse.ArgumentParser:
    t = sub.add_parser("twin", help="compare the model with the live kernel, slot by slot",
                       description="Run scenarios on a dedicated zram swap device and through the model "
                                   "(both alloc_table variants) and compare every slot.")
    t.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                   help=f"scenario files, or shipped scenario names ({', '.join(shipped_names())})")
    t.add_argument("--shipped", action="store_true", help="run every shipped scenario")
    t.add_argument("--random", type=int_arg, default=0, metavar="N", help="run N random scenarios")
    t.add_argument("--seed", type=int_arg, default=1, help="the first random scenario's seed (then seed+1, ...)")
    t.add_argument("--orders", default=DEFAULT_ORDERS,
                   help=f"folio orders of random scenarios (of {','.join(map(str, KERNEL_ORDERS))})")
    t.add_argument("--hdd", action="store_true", help="random scenarios on a rotating device (global cursor)")
    t.add_argument("--discard", action="store_true", help="random scenarios with swapon --discard=pages")
    t.add_argument("--max-cpus", type=int_arg, default=2, help="random scenarios use 1..N CPUs")
    t.add_argument("--max-pages", type=int_arg, default=8192, help="random devices hold up to about N pages")
    t.add_argument("--device", default=None,
                   help="a dedicated zram device (default: the first free one; needed when another swap "
                        "device is active)")
    t.add_argument("--retries", type=int_arg, default=3, help="reruns of a disturbed scenario")
    t.add_argument("--model-only", action="store_true",
                   help="no kernel: compare the variants with each other and with recorded expect slots")
    t.add_argument("--record", default=None, metavar="DIR",
                   help="write each scenario with the kernel's slots as its expect to DIR/NAME.json")
    t.add_argument("--cost", action="store_true",
                   help="measure instead: the kernel's pageout per page by folio order on one CPU beside the "
                        "model's cost per allocated slot (--orders, --cost-pages, --cost-data)")
    t.add_argument("--cost-pages", type=int_arg, default=DEFAULT_COST_PAGES, metavar="P",
                   help=f"--cost: pages per order, in P >> order folios (default {DEFAULT_COST_PAGES})")
    t.add_argument("--cost-data", choices=COST_DATA, default="random",
                   help="--cost: what the pages hold: random bytes (zram compresses each, fails, stores it "
                        "whole) or zeros (same-filled pages: nothing compressed)")
    t.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON to this path")
    t.add_argument("--quiet", action="store_true", help="no progress output, only the summary")
    t.set_defaults(func=main)
    return t


def _orders(text: str) -> list[int]:
    if not re.fullmatch(r"\s*[0-9]{1,2}(\s*,\s*[0-9]{1,2})*\s*", text, re.ASCII):
        raise ValueError(f"--orders: {cut(repr(text))} is not a list of orders like 0,2,4,9")
    out = sorted({int(x) for x in text.split(",")})
    for o in out:
        if o not in KERNEL_ORDERS:
            raise ValueError(f"--orders: order {o} is not one of {','.join(map(str, KERNEL_ORDERS))} "
                             "(the kernel makes no anonymous order-1 folios)")
    return out


def _scenarios(args) -> list:
    out = []
    names = list(args.scenarios) + (shipped_names() if args.shipped else [])
    for name in names:
        out.append(load_scenario(name) if os.path.exists(name) or name.endswith(".json") else shipped(name))
    if args.random:
        orders = _orders(args.orders)
        for k in range(args.random):
            out.append(random_scenario(args.seed + k, orders=orders, hdd=args.hdd, max_cpus=args.max_cpus,
                                       discard=args.discard, max_pages=args.max_pages))
    return out


def _validate(args) -> None:
    if args.cost:
        if args.scenarios or args.random or args.shipped or args.model_only or args.record:
            raise ValueError("--cost runs no scenarios: it takes only --orders, --cost-pages, --cost-data, "
                             "--device, --retries, --json, --quiet")
        if not 1 <= args.cost_pages <= 1 << 20:
            raise ValueError(f"--cost-pages: {args.cost_pages} is out of range 1..{1 << 20}")
    if args.random < 0:
        raise ValueError(f"--random: {args.random} is negative")
    if not args.scenarios and not args.random and not args.shipped and not args.cost:
        raise ValueError("no scenario: name scenario files, --shipped, or --random N")
    if not 1 <= args.max_cpus <= 256:
        raise ValueError(f"--max-cpus: {args.max_cpus} is out of range 1..256")
    if not 512 <= args.max_pages <= 1 << 20:
        raise ValueError(f"--max-pages: {args.max_pages} is out of range 512..{1 << 20}")
    if not 0 <= args.retries <= 100:
        raise ValueError(f"--retries: {args.retries} is out of range 0..100")
    if args.record is not None and (args.model_only or not os.path.isdir(args.record)):
        raise ValueError(f"--record: {cut(repr(args.record))} is not a directory"
                         if not args.model_only else "--record needs the kernel (not --model-only)")
    problem = check_output_path("--json", args.json)
    if problem:
        raise ValueError(problem)


def _replay_models(s) -> dict:
    """Both variants' replays, with SIGINT and SIGTERM held off meanwhile (a second or less), so a
    signal never leaves a model's shared segments half made; it is taken right after."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        return {v: replay_model(s, v) for v in ALLOC_TABLES}
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


class _KernelRun:
    """While the kernel driver runs: SIGTERM raises ``Terminated``; Ctrl-C and SIGTERM end the run
    in order (status 130, 143) and a kernel error in one line (status 1), the driver having
    restored the machine on the way out.  ``status`` is what the run ends with."""

    status = 0

    def __enter__(self) -> _KernelRun:
        self.old_term = signal.signal(signal.SIGTERM, _on_sigterm)
        return self

    def __exit__(self, typ, exc, tb) -> bool:
        signal.signal(signal.SIGTERM, self.old_term)
        if typ is None:
            return False
        if issubclass(typ, KeyboardInterrupt):
            self.status = 130
        elif issubclass(typ, Terminated):
            self.status = 143
        elif issubclass(typ, KernelError):
            print(f"shmswap: error: {cut(str(exc), 300)}", file=sys.stderr)
            self.status = 1
        else:
            return False
        return True


def _run_kernel(s, device: str, retries: int, note) -> tuple[Replay, int]:
    """The kernel's slots for ``s`` and how many runs were disturbed."""
    disturbed = 0
    while True:
        try:
            with KernelSwap(s, device) as k:
                for i, op in enumerate(s.ops):
                    k.op(i, op)
                return k.replay, disturbed
        except Disturbed as e:
            disturbed += 1
            note(f"{s.name}: disturbed ({e}); rerun {disturbed}/{retries}")
            if disturbed > retries:
                raise


def _cost_kernel(order: int, folios: int, device: str, data: str, retries: int, note) -> tuple[dict, str]:
    """The kernel's pageout of ``folios`` folios of ``order`` (rerun when disturbed) and zram's
    compression algorithm."""
    disturbed = 0
    while True:
        try:
            with KernelSwap(cost_scenario(order, folios), device) as k:
                algorithm = comp_algorithm(device)
                out = k.pageout_cost(data)
                cpu = k.cpu_ids[0]
            out["disturbed"] = disturbed
            out["cpu"] = cpu
            return out, algorithm
        except Disturbed as e:
            disturbed += 1
            note(f"order {order}: disturbed ({e}); rerun {disturbed}/{retries}")
            if disturbed > retries:
                raise


def _cost_model(order: int, folios: int, cpu: int) -> dict:
    """``model_cost`` pinned to ``cpu`` (the kernel's), SIGINT and SIGTERM held off meanwhile."""
    saved = os.sched_getaffinity(0)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        os.sched_setaffinity(0, {cpu})
        return model_cost(order, folios)
    finally:
        os.sched_setaffinity(0, saved)
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _fmt(x, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def main_cost(args) -> int:
    """``shmswap twin --cost``: the kernel's pageout cost beside the model's, by folio order."""
    try:
        orders = _orders(args.orders)
        for o in orders:
            if o and not os.path.exists(f"{THP}/hugepages-{4 << o}kB/enabled"):
                raise Refused(f"order {o}: {THP}/hugepages-{4 << o}kB/enabled is missing (no order-{o} folios here)")
        device = preflight(args.device)
    except (ValueError, Refused) as e:
        error(str(e))

    def note(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr)

    rows: list[dict] = []
    algorithm = ""
    with _KernelRun() as run:
        for o in orders:
            folios = max(1, args.cost_pages >> o)
            try:
                kern, algorithm = _cost_kernel(o, folios, device, args.cost_data, args.retries, note)
            except Disturbed as e:
                rows.append({"order": o, "folios": folios, "error": f"stayed disturbed: {e}"})
                note(f"order {o}: stayed disturbed: {e}")
                run.status = 1
                continue
            model = _cost_model(o, folios, kern["cpu"])
            kern["us_per_page"] = kern["ns"] / 1e3 / kern["pages"]
            kern["us_per_folio"] = kern["ns"] / 1e3 / folios
            ratio = model["us_per_slot"] / kern["us_per_page"] if model["us_per_slot"] and kern["ns"] else None
            rows.append({"order": o, "folios": folios, "pages": folios << o, "kernel": kern, "model": model,
                         "ratio": ratio})
            if kern["swapped_pages"] != folios << o or kern["whole_folios"] != folios:
                note(f"order {o}: the kernel swapped {kern['swapped_pages']} of {folios << o} pages, "
                     f"{kern['whole_folios']} of {folios} folios whole")
            if model["failed"] or model["problems"]:
                note(f"order {o}: the model failed {model['failed']} folios; problems: {model['problems'][:3]}")
                run.status = 1
    status = run.status
    done = [r for r in rows if "kernel" in r]
    cpu = done[0]["kernel"]["cpu"] if done else None
    print(f"twin --cost: Linux {os.uname().release}, {device} ({algorithm or '?'}), CPU {cpu}, "
          f"{args.cost_data} pages, {args.cost_pages} pages per order")
    print(f"{'order':>5} {'folios':>7} {'kernel us/page':>15} {'kernel us/folio':>16} {'model us/slot':>14} "
          f"{'model us/folio':>15} {'ratio':>7}")
    for r in done:
        k, m = r["kernel"], r["model"]
        print(f"{r['order']:>5} {r['folios']:>7} {_fmt(k['us_per_page']):>15} {_fmt(k['us_per_folio']):>16} "
              f"{_fmt(m['us_per_slot']):>14} {_fmt(m['us_per_folio']):>15} {_fmt(r['ratio']):>7}")
    if args.json:
        doc = {"version": 1, "kind": "cost", "status": status, "kernel": os.uname().release, "device": device,
               "comp_algorithm": algorithm, "cpu": cpu, "data": args.cost_data, "pages_per_order": args.cost_pages,
               "orders": rows}
        status = _write_json(args.json, doc, status)
    return status


def _write_json(path: str, doc: dict, status: int) -> int:
    """Write ``doc`` whole to ``path``; a failure is one line and makes the status at least 1."""
    try:
        write_atomically(path, json.dumps(doc, indent=1) + "\n")
    except OSError as e:
        print(f"shmswap: error: --json: cannot write {cut(repr(path))}: {e.strerror}", file=sys.stderr)
        return status or 1
    return status


def main(args) -> int:
    try:
        _validate(args)
    except ValueError as e:
        error(str(e))
    if args.cost:
        return main_cost(args)
    try:
        scenarios = _scenarios(args)
        device = None
        if not args.model_only:
            for s in scenarios:
                bad = sorted(s.orders - set(KERNEL_ORDERS))
                if bad:
                    raise ValueError(f"scenario {s.name}: order {bad[0]} cannot run on the kernel "
                                     "(no anonymous order-1 folios); use --model-only")
                if s.cpus > len(os.sched_getaffinity(0)):
                    raise ValueError(f"scenario {s.name}: cpus {s.cpus} is more than the "
                                     f"{len(os.sched_getaffinity(0))} CPUs this process may use")
            device = preflight(args.device)
    except (ValueError, Refused) as e:
        error(str(e))
    quiet = args.quiet

    def note(text: str) -> None:
        if not quiet:
            print(text, file=sys.stderr)

    rows: list[dict] = []
    totals = {"scenarios": 0, "slots": 0, "differences": 0, "problems": 0}
    printed = False
    with _KernelRun() as run:
        with progress_bar("twin", len(scenarios), quiet) as update:
            for n, s in enumerate(scenarios):
                if update:
                    update(n, s.name)
                row = {"name": s.name, "pages": s.pages, "bad_pages": len(s.bad_pages), "kind": s.kind,
                       "discard": s.discard, "cpus": s.cpus, "ops": len(s.ops), "folios": len(s.folios),
                       "variants": {}}
                t0 = time.monotonic()
                models = _replay_models(s)
                row["model_seconds"] = round(time.monotonic() - t0, 3)
                if args.model_only:
                    reference, ref_name = (list(s.expect), "expect") if s.expect is not None else (
                        models["seed"], "seed")
                else:
                    t0 = time.monotonic()
                    try:
                        reference, row["disturbed"] = _run_kernel(s, device, args.retries, note)
                    except Disturbed as e:
                        row["error"] = f"stayed disturbed: {e}"
                        totals["problems"] += 1
                        rows.append(row)
                        note(f"{s.name}: {row['error']}")
                        continue
                    ref_name = "kernel"
                    row["kernel_seconds"] = round(time.monotonic() - t0, 3)
                    row["swapped_pages"] = sum(x is not None for sl in reference.slots for x in sl)
                    row["unswapped_pages"] = sum(x is None for sl in reference.slots for x in sl)
                row["reference"] = ref_name
                for v, m in models.items():
                    if ref_name == "seed" and v == "seed":
                        continue
                    compared, d = compare(reference, m)
                    if d is not None and ref_name == "kernel":
                        again, more = _run_kernel(s, device, args.retries, note)   # confirm: same slots twice?
                        row["disturbed"] += more
                        if again.slots != reference.slots:
                            note(f"{s.name}: the kernel gave other slots on a second run: disturbed; "
                                 "comparing with the second run")
                            reference = again
                            compared, d = compare(reference, m)
                    entry = {"slots": compared, "differences": 0 if d is None else d.count,
                             "problems": m.problems}
                    totals["slots"] += compared
                    totals["problems"] += len(m.problems)
                    if d is not None:
                        entry["first"] = {"op": d.op, "folio": d.folio, "page": d.page, "kernel": d.kernel,
                                          "model": d.model, "operation": s.ops[d.op]}
                        totals["differences"] += d.count
                        row.setdefault("scenario", scenario_doc(s))
                        if not printed:
                            print("\n".join(describe_difference(s, v, d)))
                            printed = True
                    row["variants"][v] = entry
                    for p in m.problems[:3]:
                        note(f"{s.name} ({v}): model violation: {p}")
                if args.record and ref_name == "kernel":
                    write_atomically(os.path.join(args.record, f"{s.name}.json"),
                                     json.dumps(scenario_doc(s, reference.slots), indent=1) + "\n")
                totals["scenarios"] += 1
                rows.append(row)
                if not quiet:
                    diffs = sum(e["differences"] for e in row["variants"].values())
                    note(f"{s.name}: {s.kind} {s.pages} pages, {len(s.bad_pages)} bad, {s.cpus} CPUs, "
                         f"{len(s.folios)} folios: {diffs} differences against {ref_name}")
    status = run.status
    against = "expect/seed" if args.model_only else "kernel"
    variants = ",".join(ALLOC_TABLES)
    print(f"twin: {totals['scenarios']} scenarios, {totals['slots']} slots compared ({variants} against "
          f"{against}), {totals['differences']} differences"
          + (f", {totals['problems']} problems" if totals["problems"] else ""))
    if not status and (totals["differences"] or totals["problems"]):
        status = 1
    if args.json:
        doc = {"version": 1, "status": status, "summary": totals, "scenarios": rows,
               "kernel": None if args.model_only else os.uname().release}
        status = _write_json(args.json, doc, status)
    return status
