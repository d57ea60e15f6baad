"""A schedule script run on a model that lives on (shmswap.runner.stepwise): the teaching mode's
steps.  The W1 race (races/w1-t5.race) run statement by statement on one device must lose the
cluster in the seed and not in the merged variant, exactly as ``run_script`` does on a fresh one."""

import pytest

from shmswap.config import Config
from shmswap.runner.deterministic import ScheduleFailure
from shmswap.runner.script import state_digest
from shmswap.runner.stepwise import run_schedule, schedule_script, script_op
from shmswap.substrate.preempt import Point

CFG = Config(cpus=2, size="512K", slots_per_cluster=8, orders="0:1", atomic_fail=0, sleep_fail=0, migrate=0)

W1 = """cpu0: alloc
cpu1: alloc
fail atomic 1
run cpu0 until sleep in swap_cluster_alloc_table
run cpu1 until its per-CPU cluster for order 0 changes
cpu0 wakes on cpu1
run cpu1
run cpu0"""


def kept(results):
    def make_op(model, op):
        if op[0] != "alloc":
            return script_op(model, op)

        def alloc():
            for _ in range(op[3]):
                results.append((model.system.current.wid, model.alloc(order=op[1], state=op[2])))
        return alloc
    return make_op


@pytest.mark.parametrize("variant,findings", [("seed", ["T5"]), ("merged", [])])
def test_w1_step_by_step_on_one_device(open_model, variant, findings):
    m = open_model(CFG.with_(alloc_table=variant))
    got = []
    setup = run_schedule(m, "cpu0: alloc times 7\nrun cpu0", make_op=kept(got))
    assert [w for w, _ in got] == [0] * 7 and sorted(a.entry for _, a in got) == list(range(1, 8))
    assert set(setup.choices) == {0}                          # nobody else ran
    got.clear()
    sched = run_schedule(m, W1, make_op=kept(got))
    kinds = [(idx, kind) for _, idx, kind, _, _ in sched.trace]
    woke = kinds.index((0, int(Point.TABLE_SLEEP)))          # cpu0 resumes from its sleep...
    assert kinds[0][0] == 0 and 1 in {i for i, _ in kinds[:woke]}    # ...after cpu1 ran meanwhile
    assert {i for i, _ in kinds[woke:]} == {0}
    assert sorted(w for w, _ in got) == [0, 1] and all(a is not None for _, a in got)
    assert [f.branch for f in m.check().findings] == findings


def test_the_same_script_gives_the_same_trace_and_state(open_model):
    runs = []
    for _ in range(2):
        m = open_model(CFG)
        run_schedule(m, "cpu0: alloc times 7\nrun cpu0")
        s = run_schedule(m, W1)
        runs.append((s.trace, s.digest, state_digest(m)))
    assert runs[0] == runs[1]


def test_stops_look_in_the_middle_and_change_nothing(open_model):
    """A stop after ``run cpu0 until sleep ...`` sees cpu0 asleep with its cluster isolated and cpu1
    not run yet; one after ``cpu0 wakes on cpu1`` sees what cpu1 did meanwhile; the schedule is the
    one the script makes without stops."""
    plain = open_model(CFG)
    run_schedule(plain, "cpu0: alloc times 7\nrun cpu0")
    without = run_schedule(plain, W1)
    m = open_model(CFG)
    run_schedule(m, "cpu0: alloc times 7\nrun cpu0")
    seen = {}

    def look(name):
        def at(sched):
            seen[name] = (sched.step, sched.task(0).pending[0], m.snapshot())
        return at
    lines = W1.splitlines()
    asleep_at = lines.index("run cpu0 until sleep in swap_cluster_alloc_table") + 1
    sched = run_schedule(m, W1, stops={lines.index("cpu0 wakes on cpu1") + 1: look("woken"), asleep_at: look("asleep")})
    assert (sched.trace, sched.digest) == (without.trace, without.digest)
    step, where, asleep = seen["asleep"]
    assert where == Point.TABLE_SLEEP                          # cpu0 parked at its sleep
    isolated = asleep.clusters[1]
    assert isolated["list"] is None and not isolated["table"] and isolated["count"] == 0
    assert asleep.percpu[1]["offset"][0] == 0                  # cpu1 has not run yet
    step2, where, woken = seen["woken"]
    assert where == Point.TABLE_SLEEP and step2 > step         # still asleep, after steps of cpu1
    assert woken.percpu[1]["offset"][0] != 0                   # cpu1 allocated meanwhile
    assert woken.clusters[1]["list"] is None                   # cpu0 still asleep: nothing put back


def test_refusals(open_model):
    m = open_model(CFG)
    with pytest.raises(ScheduleFailure, match="only operations"):
        run_schedule(m, "cpu0: alloc\nexpect findings none")
    with pytest.raises(ScheduleFailure, match="cpu1"):
        run_schedule(m, "cpu0: alloc\nrun cpu1 until sleep")          # cpu1 has nothing to do
    assert schedule_script(m, "run cpu0").config is m.cfg
    with pytest.raises(ScheduleFailure, match="stop after 2"):
        run_schedule(m, "cpu0: alloc\nrun cpu0", stops={2: lambda sched: None})   # after the last line: no
    with pytest.raises(ScheduleFailure, match="stop after statement 1 failed: ValueError: invalid literal"):
        run_schedule(m, "cpu0: alloc\nrun cpu0", stops={1: lambda sched: int("no")})
