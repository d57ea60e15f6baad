"""Tests of workers.reader: where a torture reader looks (a cluster a CPU's next exit empties, the
cluster whose table is alone on its slab page) and its lookup, validated as a swap-in's."""

from conftest import CACHED, alloc_folio, assert_clean, release, stat

from shmswap.substrate.stats import Stat
from workers.reader import TortureReader


def reader(system, wid):
    return TortureReader(system.system, system.system.shm.cfg, wid)


def test_nothing_to_look_at_is_no_lookup(make_system):
    s = make_system(n_workers=3, cpus=1)
    s.shm.pages["cpu"][0] = 0                  # the page of cluster 0's table (alone on it) is cpu0's active slab
    r = reader(s, 2)
    s.switch_to(s.tasks[2])
    assert r.target() is None and r.step() is False
    assert stat(s, Stat.TORTURE_READS, 2) == 0


def test_it_reads_in_the_cluster_a_cpu_published_for_its_next_exit(make_system):
    s = make_system(n_workers=3, cpus=1)
    e = alloc_folio(s, 0, CACHED)
    s.system.cur.set_rec_exiting(e)            # cpu0 (current) publishes the cluster of e
    r = reader(s, 2)
    si, entry = r.exiting()
    spc = s.system.shm.cfg.slots_per_cluster
    assert si is s.si and entry // spc == e // spc
    release(s, e)
    assert_clean(s, findings=True)


def test_it_reads_in_the_cluster_whose_table_is_alone_on_its_page(make_system):
    s = make_system(n_workers=3, cpus=1)
    e = alloc_folio(s, 0, CACHED)              # in cluster 0, whose table swapon allocated alone on page 0
    spc = s.system.shm.cfg.slots_per_cluster
    table = int(s.shm.clu["table"][e // spc])
    assert s.system.slab.last_on_its_page(table)
    r = reader(s, 2)
    si, entry = r.last_on_page()
    assert si is s.si and entry // spc == e // spc
    s.switch_to(s.tasks[2])
    assert r.step() is True and stat(s, Stat.TORTURE_READS, 2) == 1
    s.switch_to(s.tasks[0])
    release(s, e)
    assert_clean(s, findings=True)
