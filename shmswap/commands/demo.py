"""``shmswap demo``: the teaching mode, in the manner of the OSTEP homework simulators.

A lesson (``shmswap.experiments.lessons``) runs on a tiny device (2 CPUs, 4 clusters of 8 slots)
under the deterministic scheduler, one operation per step; a step that interleaves two CPUs (a
sleeping table allocation, a lockless reader's window) prints the schedule script that makes it.
The output echoes every argument (``ARG name value``), gives one line per step (which CPU, which
kernel function, what changed) with the questions that step asks, draws the clusters (slots in use
and the CPU each was allocated on, list, table) and each CPU's per-CPU cache after it -- and, for a
step whose script stops in the middle (the sleep, the reader's window), at that moment too
("during step N") --, and ends with one machine-readable line (``RESULT {json}``).  ``-s SEED``
picks the problem.  Without ``-c`` every answer reads ``?``; with ``-c`` the answers are printed:
the two outputs differ only on the lines that carry ``=>`` (and on the ``ARG solve`` and
``RESULT`` lines).

``--png DIR`` / ``--svg DIR`` draw every picture in order (``step-00.png`` is the start; a step's
"during" pictures come before its "after" one), ``--gif FILE`` animates them, ``--html FILE``
writes one offline page that steps through the lesson with the answers hidden until revealed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap

from rich.console import Console
from rich.text import Text

from ..experiments.demo_page import html_page
from ..experiments.drawing import LEGEND, gif, png, svg, terminal
from ..experiments.lessons import CLUSTERS, CPUS, LESSONS, SPC, LessonRun, run_lesson
from .common import check_output_path, cut_path, error, int_arg, write_atomically

__all__ = ["add_parser", "main", "render"]

HIDDEN = "?"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="the teaching mode: predict the allocator's next move, step by step",
                       description="A lesson on a tiny device (2 CPUs, 4 clusters of 8 slots), one operation per "
                       "step, under the deterministic scheduler. Predict each answer, then rerun with -c. Lessons: "
                       + "; ".join(f"{k}: {v.title}" for k, v in LESSONS.items()) + ".")
    p.add_argument("lesson", nargs="?", default="paths", choices=list(LESSONS), help="the lesson")
    p.add_argument("-s", "--seed", type=int_arg, default=0, help="picks the problem")
    p.add_argument("-c", "--solve", action="store_true", help="print the answers")
    p.add_argument("--png", metavar="DIR", default=None, help="draw every step as PNG into DIR")
    p.add_argument("--svg", metavar="DIR", default=None, help="draw every step as SVG into DIR")
    p.add_argument("--gif", metavar="FILE", default=None, help="animate the steps into FILE")
    p.add_argument("--html", metavar="FILE", default=None,
                   help="one offline page stepping through the lesson (answers hidden until revealed)")
    p.set_defaults(func=main)
    return p


def _answer(text: str, solve: bool) -> str:
    return f"=> {text if solve else HIDDEN}"


def render(run: LessonRun, args: dict, solve: bool) -> list[Text | str]:
    """The terminal output, line by line (rich ``Text`` for the drawings)."""
    out: list[Text | str] = [f"ARG {k} {v}" for k, v in args.items()]
    out.append(f"ARG device {CPUS} CPUs, {CLUSTERS} clusters of {SPC} slots, order 0, ssd")
    out.append("ARG scheduler deterministic")
    out.append("")
    out.append(f"Lesson {run.name}: {run.title}")
    out += textwrap.wrap(run.intro, 100)
    out += textwrap.wrap("Every step runs under the deterministic scheduler: one task at a time (cpu0 and cpu1, "
                         "each starting its operations on its CPU, and the manager). A step that interleaves "
                         "them prints its schedule script, in the format of shmswap replay.", 100)
    out.append("")
    out.append(f"The problem (seed {run.seed}), before step 1:")
    out += [f"  {s}" for s in run.setup]
    out.append(f"({LEGEND})")
    for i, st in enumerate(run.steps):
        if i == 0:
            out += terminal(st.before)
        elif st.fresh:
            out.append("")
            out.append(f"The same problem on a fresh device ({st.before.note or st.before.variant}):")
            out += terminal(st.before)
        out.append("")
        out.append(f"{st.headline()}  {_answer(st.changed, solve)}")
        if st.schedule:
            out.append("      schedule: " + "; ".join(st.schedule))
        for q in st.questions:
            out.append(f"      Q: {q.ask}  {_answer(q.answer, solve)}")
        for m in st.during:
            out.append(f"  during step {st.n}, the schedule stopped after `{m.line}`: {m.text}")
            out += terminal(m.frame)
        if st.during:
            out.append(f"  after step {st.n}:")
        out += terminal(st.after)
    out.append("")
    for c in run.checks:
        out.append(f"checker ({c['alloc_table']}): {c['violations']} violations; findings "
                   + _answer(", ".join(c["findings"]) or "none", solve))
    return out


def _result(run: LessonRun, args: dict, solve: bool, written: list[str]) -> dict:
    doc = {"demo": run.name, "seed": run.seed, "solve": solve, "steps": len(run.steps),
           "questions": sum(len(s.questions) for s in run.steps), "check_ok": run.check_ok,
           "violations": sum(c["violations"] for c in run.checks), "files": written,
           "scheduler": "deterministic", "sched_points": run.points, "sched_digest": f"{run.digest:016x}",
           "schedules": {str(s.n): s.schedule for s in run.steps if s.schedule},
           "pictures": len(run.frames), "during": {str(s.n): [m.line for m in s.during] for s in run.steps if s.during}}
    if solve:
        doc["answers"] = [{"step": s.n, "cpu": s.cpu, "func": s.func, "changed": s.changed,
                           "questions": [[q.ask, q.answer] for q in s.questions]} for s in run.steps]
        doc["findings"] = {c["alloc_table"]: c["findings"] for c in run.checks}
    return doc


def _check_dir(option: str, path: str | None) -> str | None:
    if path is None:
        return None
    if not path.strip():
        return f"{option}: the path is empty"
    if os.path.exists(path) and not os.path.isdir(path):
        return f"{option}: {cut_path(path)} is not a directory"
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        return f"{option}: cannot create {cut_path(path)}: directory {cut_path(parent)} does not exist"
    return None


def main(args: argparse.Namespace) -> int:
    for problem in (_check_dir("--png", args.png), _check_dir("--svg", args.svg),
                    check_output_path("--gif", args.gif), check_output_path("--html", args.html)):
        if problem:
            error(problem)
    echo = {"lesson": args.lesson, "seed": args.seed, "solve": args.solve, "png": args.png, "svg": args.svg,
            "gif": args.gif, "html": args.html}
    run = run_lesson(args.lesson, args.seed)
    console = Console(file=sys.stdout, highlight=False, soft_wrap=True)
    for line in render(run, echo, args.solve):
        console.print(line, markup=False) if isinstance(line, str) else console.print(line)
    written = []
    frames = run.frames
    for option, ext, draw in ((args.png, "png", png), (args.svg, "svg", svg)):
        if option is None:
            continue
        os.makedirs(option, exist_ok=True)
        for i, frame in enumerate(frames):
            path = os.path.join(option, f"step-{i:02}.{ext}")
            data = draw(frame)
            write_atomically(path, data)
            written.append(path)
    if args.gif:
        write_atomically(args.gif, gif(frames))
        written.append(args.gif)
    if args.html:
        write_atomically(args.html, html_page(run, echo))
        written.append(args.html)
    sys.stdout.write("RESULT " + json.dumps(_result(run, echo, args.solve, written), sort_keys=True) + "\n")
    return 0 if run.check_ok else 1
