"""Several swap devices: swapon of a list, the avail plist walk with its requeue, the per-CPU
``si[]``/``offset[]`` pair shared by every device, per-device swapoff, and the seed's W12
cross-device re-check (reference §4.3, §5.3, §8, §10 W12), forced deterministically."""

from collections import Counter

import pytest
from conftest import TestModel, reset_prim, stat

from shmswap.config import Config, ConfigError
from shmswap.mm.alloc_table import LOST_W12, XDEV_OUT_OF_RANGE, XDEV_TAKEN, decode_lost, decode_xdev, lost_device
from shmswap.mm.device import avail_prio, plist_types
from shmswap.mm.swapon import swapon_again
from shmswap.substrate.stats import Stat


def _model(devices: str, **kw) -> TestModel:
    base = dict(devices=devices, slots_per_cluster=8, cpus=2, orders={0: 1.0}, atomic_fail=0.0, sleep_fail=0.0,
                migrate=0.0)
    base.update(kw)
    return TestModel(Config(**base), n_workers=3)


@pytest.fixture
def models():
    made: list[TestModel] = []

    def make(devices: str, **kw) -> TestModel:
        m = _model(devices, **kw)
        made.append(m)
        return m

    yield make
    for m in reversed(made):
        m.close()
    reset_prim()


def test_device_list_parses_and_names_the_bad_part():
    cfg = Config(devices="ssd:1M:prio=5,hdd:4M:discard=on,ssd:2M", slots_per_cluster=8)
    got = [(c.device, c.size, c.discard, p) for c, p in cfg.device_configs()]
    # the priority each swapon asks for: -1 is none (swapon gives --least_priority, see below)
    assert got == [("ssd", 1 << 20, "off", 5), ("hdd", 4 << 20, "on", -1), ("ssd", 2 << 20, "off", -1)]
    assert [(c.device, p) for c, p in Config().device_configs()] == [("ssd", -1)]
    for bad, part in (("ssd:1M,tape:1M", "'tape:1M'"), ("ssd:1M:prio=x", "'ssd:1M:prio=x'"),
                      ("ssd:12345", "'ssd:12345'"), ("ssd", "'ssd'")):
        with pytest.raises(ConfigError, match=part):
            Config(devices=bad, slots_per_cluster=8)


def test_priorities_and_round_robin(models):
    m = models("ssd:64K:prio=5,ssd:64K:prio=5,ssd:256K:prio=1")
    a = m.devices[0]
    assert plist_types(a, a.avail_base) == [0, 1, 2] and plist_types(a, a.active_base) == [0, 1, 2]
    # the per-CPU cache off: every allocation walks the plist, equal priorities alternate
    m.system.variant.percpu.enabled = False
    got = [m.alloc(cpu=0).type for _ in range(8)]
    assert got == [0, 1, 0, 1, 0, 1, 0, 1]
    # both high-priority devices fill (15 usable slots each), then the low one is used
    more = Counter(x.type for x in (m.alloc(cpu=0) for _ in range(30)) if x)
    assert more == {0: 11, 1: 11, 2: 8}
    assert plist_types(a, a.avail_base) == [2]
    assert m.check().ok, m.check().violations


def _prios(m) -> list[int]:
    return [d.prio for d in m.devices]


def _least(m) -> int:
    return int(m.shm.dev["least_priority"])


def test_default_priorities_start_at_minus_two_and_rank_equal_on_the_avail_list(models):
    """setup_swap_info at 07adc4cf: ``static int least_priority = -1``, ``si->prio =
    --least_priority`` for a swapon without a priority (-2, then -3), and on the device's own node
    ``avail_lists[nid].prio = 1``: the model's one node is every device's, so the default-priority
    devices rank equal on swap_avail_heads[0], below a device with a priority, while
    swap_active_head keeps them by priority."""
    m = models("ssd:64K,ssd:64K:prio=-1,ssd:64K:prio=0")
    a = m.devices[0]
    assert _prios(m) == [-2, -3, 0] and _least(m) == -3
    assert [avail_prio(d) for d in m.devices] == [-1, -1, 0]
    assert plist_types(a, a.active_base) == [2, 0, 1]
    assert plist_types(a, a.avail_base) == [2, 0, 1]


def test_default_priority_devices_alternate(models):
    """Equal rank on the avail list: swap_alloc_slow's plist_requeue rotates between the two
    default-priority devices (with -2 and -3 as ranks, every allocation went to device 0)."""
    m = models("ssd:64K,ssd:64K")
    m.system.variant.percpu.enabled = False          # every allocation walks the plist
    assert [m.alloc(cpu=0).type for _ in range(8)] == [0, 1, 0, 1, 0, 1, 0, 1]
    assert m.check().ok, m.check().violations


def test_swapoff_of_a_default_priority_device_moves_the_lower_ones_up(models):
    """SYSCALL swapoff at 07adc4cf: ``if (p->prio < 0) { plist_for_each_entry_continue(si,
    &swap_active_head, list) { si->prio++; ... } least_priority++; }``; a later swapon without a
    priority gets the new lowest (``--least_priority``), not the old value."""
    m = models("ssd:64K:prio=7,ssd:64K,ssd:64K,ssd:64K")
    a = m.devices[0]
    assert _prios(m) == [7, -2, -3, -4] and _least(m) == -4
    m.swapoff(2)                                     # -3: the one below it moves up
    assert _prios(m)[1:2] + _prios(m)[3:] == [-2, -3] and _least(m) == -3
    assert plist_types(a, a.active_base) == [0, 1, 3] and plist_types(a, a.avail_base) == [0, 1, 3]
    m.on_manager()
    swapon_again(m.devices[2], -1)                   # no priority asked: the new lowest
    assert _prios(m) == [7, -2, -4, -3] and _least(m) == -4
    assert plist_types(a, a.active_base) == [0, 1, 3, 2]
    assert plist_types(a, a.avail_base) == [0, 1, 3, 2]
    assert m.check().ok, m.check().violations
    m.swapoff(0)                                     # a given priority: nothing moves
    assert _prios(m)[1:] == [-2, -4, -3] and _least(m) == -4
    m.swapoff(1)
    assert _prios(m)[2:] == [-3, -2] and _least(m) == -3
    assert plist_types(a, a.active_base) == [3, 2] and plist_types(a, a.avail_base) == [3, 2]


def test_percpu_cache_names_the_device(models):
    m = models("ssd:64K:prio=5,ssd:256K:prio=9")
    x = m.alloc(cpu=0)
    assert x.type == 1
    assert m.devices[0].pcp.si(0, 0) == 2 and m.devices[0].pcp.offset(0, 0) == x.entry + 1
    y = m.alloc(cpu=0)                                  # the fast path, on device 1
    assert y.type == 1 and y.entry == x.entry + 1
    assert m.lookup(0, y.entry, type=1) is None         # written back: a shadow
    m.free(x)
    m.free(y)
    m.run_pending_work()
    assert m.check().ok


def test_swapoff_of_one_device_while_the_other_runs(models):
    m = models("ssd:64K:prio=9,ssd:256K:prio=5")
    held = [m.alloc(cpu=i % 2) for i in range(20)]
    assert {h.type for h in held} == {0, 1}
    m.swapoff(0)
    # flush_percpu_swap_cluster: cmpxchg(&pcp_si[i], si, NULL): device 0's si[] cleared, device 1's kept
    assert not (m.shm.pcp["si"] == 1).any() and (m.shm.pcp["si"] == 2).any()
    assert m.shm.pcp["offset"].any()
    assert plist_types(m.devices[0], m.devices[0].avail_base) == [1]
    assert all(m.alloc(cpu=i % 2).type == 1 for i in range(10))
    assert m.check_device(1).ok
    m.swapoff(1)


def _w12_setup(m):
    """Device A (type 0, prio 10, 2 clusters, discard) full; CPU 1's cache then points into
    device B (type 1); A's cluster 1 freed and discarded back to free_clusters."""
    a_held = [m.alloc(cpu=0) for _ in range(15)]
    assert {h.type for h in a_held} == {0}
    return a_held


def test_w12_seed_takes_a_cluster_of_the_wrong_device(models):
    for variant in ("seed", "merged"):
        m = models("ssd:64K:prio=10:discard=on,ssd:512K:prio=5", alloc_table=variant)
        a_held = _w12_setup(m)
        b = m.alloc(cpu=1)                              # CPU 1: si[0] = B, offset[0] = 2
        assert b.type == 1 and m.devices[0].pcp.si(1, 0) == 2 and m.devices[0].pcp.offset(1, 0) == 2
        for h in a_held:                                # A's cluster 1 empties, and slot 3 of cluster 0
            if h.entry >= 8 or h.entry == 3:
                m.free(h)
        m.run_pending_work()                            # discard: cluster 1 back on free_clusters
        m.faults.atomic, m.faults.migrate_to = 1, 1
        x = m.alloc(cpu=0)                              # isolates A's cluster 1, sleeps, wakes on CPU 1
        assert x is not None and x.type == 0
        res = m.check()
        assert res.ok, res.violations
        if variant == "merged":
            assert not res.findings and int(m.devices[0].shm.dev["xdev"]) == 0
            continue
        assert [f.branch for f in res.findings] == ["W12"]
        assert "cluster 1" in res.findings[0].where and "device 1" in res.findings[0].reason
        branch, wid, cpu, other = decode_lost(int(m.shm.clu["lost"][1]))
        assert (branch, wid, cpu, other) == (LOST_W12, 0, 1, 0)
        assert lost_device(int(m.shm.clu["lost"][1])) == 2
        assert decode_xdev(int(m.shm.dev["xdev_log"][0][0]))[0] == XDEV_TAKEN
        assert x.entry >> 3 == 0                        # allocated in A's cluster 0, at B's offset


def test_w12_seed_offset_past_the_end_of_a_smaller_device(models):
    for variant in ("seed", "merged"):
        m = models("ssd:64K:prio=10,ssd:512K:prio=5", alloc_table=variant)
        a_held = _w12_setup(m)
        for _ in range(17):
            b = m.alloc(cpu=1)                          # CPU 1's offset[0] = 18: B's cluster 2
        assert b.type == 1 and m.devices[0].pcp.offset(1, 0) == 18
        for h in a_held:
            if h.entry >= 8:
                m.free(h)                               # A's cluster 1 free again, A back on the plist
        m.run_pending_work()
        m.faults.atomic, m.faults.migrate_to = 1, 1
        x = m.alloc(cpu=0)
        assert x is not None and x.type == 0 and x.entry >> 3 == 1
        res = m.check()
        assert res.ok, res.violations
        if variant == "merged":
            assert not res.findings
            continue
        assert [f.branch for f in res.findings] == ["W12"]
        assert "past the end" in res.findings[0].reason and "cluster 2" in res.findings[0].reason
        kind, wid, cpu, tag, iso = decode_xdev(int(m.shm.dev["xdev_log"][0][0]))
        assert (kind, wid, cpu, tag, iso) == (XDEV_OUT_OF_RANGE, 0, 1, 2, 1)
        assert stat(m, Stat.SLEEPS, 0) == 1


def test_w12_stale_offset_after_swapoff_replayed_into_a_smaller_device(models):
    """The per-CPU state a swapoff leaves (si[] NULL, offset[] stale) replayed into a smaller
    device: the seed's re-check would index past its cluster array; before, ValueError."""
    m = models("ssd:64K:prio=5,ssd:512K:prio=10")
    for _ in range(20):
        m.alloc(cpu=1)                                  # B (prio 10): CPU 1's offset[0] = 21
    m.swapoff(1)
    assert m.devices[0].pcp.si(1, 0) == 0 and m.devices[0].pcp.offset(1, 0) == 21
    m.alloc(cpu=0)                                      # A's header cluster first
    m.faults.atomic, m.faults.migrate_to = 1, 1
    held = [m.alloc(cpu=0) for _ in range(7)]           # fills cluster 0, then cluster 1 needs a table
    assert all(h is not None and h.type == 0 for h in held)
    res = m.check_device(0)
    assert res.ok, res.violations
    assert [f.branch for f in res.findings] == ["W12"] and "si[] NULL" in res.findings[0].reason
