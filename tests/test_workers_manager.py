"""The manager's service of the CPU workers' sleeping table allocations (workers/manager.py,
workers/cpu.py ``Mailbox``) with several swap devices: each served from its own device's slab."""

from __future__ import annotations

import os
import threading

import multiprocess as mp
import pytest
from conftest import reset_prim

from shmswap.config import Config
from shmswap.model import Model
from workers.cpu import Mailbox
from workers.manager import Manager, Watch

CPUS = 2
CFG = Config(cpus=CPUS, devices="ssd:1M:prio=5,ssd:512K", slots_per_cluster=8, orders="0:1", seconds=1)


@pytest.fixture
def manager():
    """The manager's side in this process: the owner's model and its ``Manager``; one worker pipe."""
    reset_prim()
    model = Model.owner(CFG, CPUS + 1, supervisor=Watch())
    ctl, ctl_child = mp.Pipe()
    worker_end, manager_end = mp.Pipe()
    try:
        yield Manager(model, CFG, ctl_child, [manager_end], os.getpid(), Watch()), worker_end
    finally:
        for c in (ctl, ctl_child, worker_end, manager_end):
            c.close()
        model.close()
        reset_prim()


def _live(model: Model) -> list[int]:
    return [slab.statistics()["live"] for slab in model.system.slabs]


def test_a_worker_attaches_every_device_each_with_its_mailbox(manager):
    mgr, worker_end = manager
    owner = mgr.model
    names = owner.system.names()
    assert len(names) == 2 and set(names[0].values()).isdisjoint(names[1].values())
    worker = Model.attach(CFG, CPUS + 1, names, 0, sleep_allocs=lambda t: Mailbox(worker_end, t))
    try:
        assert [(si.type, si.max) for si in worker.devices] == [(0, 256), (1, 128)]
        assert [si.sleep_alloc.type for si in worker.devices] == [0, 1]
        # Device 1's sleeping allocation, asked through the mailbox, comes from device 1's slab.
        before = _live(owner)
        got: list[int] = []
        asker = threading.Thread(target=lambda: got.append(worker.devices[1].sleep_alloc(5)))
        asker.start()
        owner.on_manager()
        while asker.is_alive():
            mgr._serve(0.01)
            asker.join(0.01)
        assert got and got[0] >= 0
        assert _live(owner) == [before[0], before[1] + 1] and mgr.sleep_served == 1
        assert owner.system.device_shms[1].objs["owner"][got[0]] == 5        # zeroed for cluster 5
        owner.system.slabs[1].free(got[0])
    finally:
        worker.system.detach()


def test_a_dead_sleepers_table_goes_back_to_its_devices_slab(manager):
    mgr, worker_end = manager
    owner = mgr.model
    before = [slab.statistics() for slab in owner.system.slabs]
    worker_end.send(("sleep", 1, 3, 0))     # what a Mailbox of device 1 sends (cpu0); then the sleeper dies
    worker_end.close()
    owner.on_manager()
    for _ in range(5):
        mgr._serve(0.01)
    assert mgr.sleep_served == 1
    grew = [{k: after[k] - b[k] for k in ("sleep_allocs", "live", "frees")}
            for b, after in zip(before, (slab.statistics() for slab in owner.system.slabs), strict=True)]
    # served from device 1's slab, and freed back there
    assert grew == [{"sleep_allocs": 0, "live": 0, "frees": 0}, {"sleep_allocs": 1, "live": 0, "frees": 1}]
