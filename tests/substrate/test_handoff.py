"""Tests of shmswap.substrate.handoff: ``take_matching`` takes the matching records in one pass and
keeps the others in their order, across the ring's wrap-around."""

from shmswap.substrate.state import HANDOFF_SLOTS


def test_take_matching_keeps_the_rest_in_order(system):
    ring = system.system.handoff
    for i in range(HANDOFF_SLOTS - 3):          # move head and tail near the end: the kept ones wrap
        assert ring.push([i, 0, -1, 0])
        assert ring.pop() == [i, 0, -1, 0]
    for i in range(8):
        assert ring.push([i, i % 2, -1, 0])
    taken = ring.take_matching(lambda rec: rec[1] == 1)
    assert [rec[0] for rec in taken] == [1, 3, 5, 7]
    assert ring.take_matching(lambda rec: rec[1] == 1) == []
    assert ring.push([8, 0, -1, 0])
    out = []
    while (rec := ring.pop()) is not None:
        out.append(rec[0])
    assert out == [0, 2, 4, 6, 8]
    st = ring.statistics()
    assert st["held"] == 0 and st["pushed"] == st["taken"]
