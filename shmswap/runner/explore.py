"""Exploration: run a scenario under K PCT schedules, stop at the first failure, shrink it.

Each schedule is the scenario (a script: configuration and operations, or a workload) run by the
deterministic scheduler under ``PCTPolicy(seed=i, depth)``.  The target is ``violation`` (a
checker violation, a crash or a deadlock) or ``finding`` (also the seed's lost clusters, T5 and
T6b, which are findings, not violations).  The failing choice list is shrunk greedily (drop runs
of choices, then merge, then cut the tail; a replay that cannot follow a choice lets the lowest
runnable task run instead) and printed as a script of ``run cpuN for K`` lines that replays the
failure exactly.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass

from ..model import Model
from .deterministic import ChoicePolicy, FirstPolicy, PCTPolicy
from .script import Script, ScriptRun, parse_script, run_script, script_from_choices

__all__ = ["explore", "Exploration", "shrink"]


@dataclass
class Exploration:
    found: bool
    schedules: int                   # schedules run until the first failure (or all of them)
    seed: int | None                 # the PCT seed that failed
    failure: str                     # what failed
    steps: int                       # steps of the failing schedule
    shrunk_steps: int
    script: str                      # the shrunk, replayable script ("" if nothing found)
    interrupted: str | None = None   # the stop signal that ended the search early (its name)


def _describe(run: ScriptRun, until: str) -> str:
    if run.failure_kind in ("crash", "deadlock"):
        return run.failure or ""
    c = run.check
    if c.get("violations"):
        return "violations: " + ", ".join(f"{i} ({w})" for i, w in c["violations"])
    return "findings: " + ", ".join(f"{b} ({w})" for w, b in c.get("findings", []))


def _runs(choices: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for c in choices:
        if out and out[-1][0] == c:
            out[-1].append(c)
        else:
            out.append([c])
    return out


def shrink(script: Script, choices: list[int], fails: Callable[[list[int]], ScriptRun | None],
           budget: int = 300, stop: list[int] | None = None) -> list[int]:
    """Greedy: remove runs of choices while the replay still fails; returns the actual choices
    of the last failing replay, with the tail that the fallback would choose anyway cut.
    A stop signal (in ``stop``) ends it with what it has."""
    stop = stop if stop is not None else []
    best = list(choices)
    tries = 0
    changed = True
    while changed and tries < budget and not stop:
        changed = False
        runs = _runs(best)
        i = 0
        while i < len(runs) and tries < budget and not stop:
            cand = [c for j, r in enumerate(runs) if j != i for c in r]
            tries += 1
            r = fails(cand)
            if r is not None:
                best = _cut(r.choices, cand)
                runs = _runs(best)
                changed = True
            else:
                i += 1
        # halve long runs
        runs = _runs(best)
        for i in range(len(runs)):
            if len(runs[i]) > 1 and tries < budget and not stop:
                cand = [c for j, r in enumerate(runs) for c in (r[: len(r) // 2] if j == i else r)]
                tries += 1
                r = fails(cand)
                if r is not None:
                    best = _cut(r.choices, cand)
                    changed = True
                    break
    return best


def _cut(actual: list[int], asked: list[int]) -> list[int]:
    """The choices that mattered: the replay's own choices up to the length asked for."""
    return list(actual[: len(asked)])


def explore(text: str, schedules: int = 100, until: str = "violation", depth: int = 3, seed: int = 0,
            setup: Callable[[Model], None] | None = None, max_steps: int = 200_000,
            progress: Callable[[int], None] | None = None, stop: list[int] | None = None) -> Exploration:
    """Run up to ``schedules`` PCT schedules of the scenario ``text``; shrink the first failure.

    ``stop``: the stop signals received (a list that grows): the schedule running stops at its
    next step and does not count; the result says how many ran (``interrupted``: the signal).
    A failure found is still shrunk as far as it got."""
    stop = stop if stop is not None else []
    script = parse_script(text)
    script.stmts = [s for s in script.stmts if s.kind != "expect"]
    est = 0
    for i in range(schedules):
        if stop:
            return Exploration(False, i, None, "", 0, 0, "", _signal_name(stop))
        pct = PCTPolicy(seed + i, depth, max(est, 50))
        run = run_script(parse_again(script), policy=pct, setup=setup, keep_trace=False,
                         max_steps=max_steps, stop=stop)
        if run.failure_kind == "interrupted":
            return Exploration(False, i, None, "", 0, 0, "", _signal_name(stop))
        est = max(est, run.steps)
        if progress is not None:
            progress(i + 1)
        if run.failed(until) and run.failure_kind not in ("script", "limit", "divergence"):
            target = _describe(run, until)
            kind = "violation" if until == "violation" else "finding"

            def fails(cand: list[int]) -> ScriptRun | None:
                r = run_script(parse_again(script), policy=ChoicePolicy(cand, FirstPolicy(), strict=False),
                               setup=setup, keep_trace=False, max_steps=max_steps)
                return r if r.failed(until) and r.failure_kind not in ("script", "limit", "divergence") else None

            short = shrink(script, run.choices, fails, stop=stop)
            final = fails(short)          # not stopped: the script printed must be one that fails
            expect = _expects(final or run, until)
            text_out = script_from_choices(script, short, f"found by shmswap explore (PCT seed {seed + i}, depth "
                                           f"{depth}, schedule {i + 1}): {kind}: {_describe(final or run, until)}",
                                           expect)
            return Exploration(True, i + 1, seed + i, target, run.steps, len(short), text_out,
                               _signal_name(stop) if stop else None)
    return Exploration(False, schedules, None, "", 0, 0, "")


def _signal_name(stop: list[int]) -> str:
    return signal.Signals(stop[0]).name


def parse_again(script: Script) -> Script:
    """A fresh copy (statements keep per-run state)."""
    s = parse_script(script.text)
    s.stmts = [x for x in s.stmts if x.kind != "expect"]
    return s


def _expects(run: ScriptRun, until: str) -> list[str]:
    if run.failure_kind == "crash":
        return [f"crash {run.failure.split(': ', 1)[-1][:60]}"]
    if run.failure_kind == "deadlock":
        return ["deadlock"]
    c = run.check
    if c.get("violations"):
        inv, where = c["violations"][0]
        return [f"violation {inv} {where}"]
    where, branch = c["findings"][0]
    return [f"finding {branch} {where}"]
