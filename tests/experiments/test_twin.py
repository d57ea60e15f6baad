"""The twin (``shmswap twin``): scenarios, their replay through the model API, and the live kernel.

The model tests always run: the shipped scenarios carry the slots the live kernel gave them
(``expect``, recorded with ``shmswap twin --shipped --record``), and the model must give the same
with both ``alloc_table`` variants.  A deliberately wrong model (NONFULL lists never scanned, by
monkeypatching the allocator) must be reported as a difference.  The kernel tests run only as
root on Linux 6.18+ with a free zram device and no swap active, and skip naming the reason
elsewhere; they run a few small scenarios and leave the device reset and off.
"""

from __future__ import annotations

import json
import os

import pytest

import shmswap.mm.allocator as allocator
from shmswap.cli import main
from shmswap.experiments import kernel as kernel_mod
from shmswap.experiments.kernel import KernelSwap, Refused, preflight, proc_swaps, swap_header
from shmswap.experiments.twin import (
    ALLOC_TABLES,
    SPC,
    ScenarioError,
    compare,
    cost_scenario,
    describe_difference,
    model_cost,
    parse_scenario,
    random_scenario,
    replay_model,
    scenario_doc,
    shipped,
    shipped_names,
    split_order,
)
from shmswap.substrate.layout import list_nonfull

SMALL = {"version": 1, "device": {"size": "4M"}, "cpus": 2,
         "ops": [{"cpu": 0, "alloc": 3}, {"cpu": 1, "alloc": 1, "order": 2}, {"cpu": 0, "free": [1]},
                 {"cpu": 0, "alloc": 2}]}


def _kernel_reason() -> str | None:
    try:
        preflight()
    except Refused as e:
        return str(e)
    if len(os.sched_getaffinity(0)) < 2:
        return "fewer than 2 CPUs"
    return None


KERNEL_SKIP = _kernel_reason()
needs_kernel = pytest.mark.skipif(KERNEL_SKIP is not None, reason=f"no kernel twin here: {KERNEL_SKIP}")


# -- the format ------------------------------------------------------------------------------------------

def test_parse_small_scenario():
    s = parse_scenario(SMALL, "small")
    assert (s.pages, s.cpus, s.kind, s.discard, s.name) == (1024, 2, "ssd", False, "small")
    assert s.folios == [0, 0, 0, 2, 0, 0]
    assert parse_scenario(scenario_doc(s)) == s


@pytest.mark.parametrize("change, words", [
    ({"version": 2}, "version: 2"),
    ({"device": {"size": "4M", "kind": "nvme"}}, "device.kind: 'nvme'"),
    ({"device": {"size": "4097"}}, "device.size: '4097'"),
    ({"device": {"size": "1M"}}, "device.size: '1M'"),
    ({"device": {"size": "4M", "bad_pages": [0]}}, "device.bad_pages: 0"),
    ({"device": {"size": "4M", "bad_pages": [1024]}}, "device.bad_pages: 1024"),
    ({"cpus": 0}, "cpus: 0"),
    ({"ops": [{"cpu": 2, "alloc": 1}]}, "ops[0].cpu: 2"),
    ({"ops": [{"cpu": 0, "alloc": 1, "order": 10}]}, "ops[0].order: 10"),
    ({"ops": [{"cpu": 0, "free": [0]}]}, "ops[0].free: 0"),
    ({"ops": [{"cpu": 0, "alloc": 1}, {"free": [0]}, {"free": [0]}]}, "ops[2].free: 0"),
    ({"ops": [{"alloc": 1, "free": [0]}]}, "needs exactly one"),
    ({"colour": 1}, "scenario: 'colour'"),
])
def test_bad_scenarios_name_the_value(change, words):
    with pytest.raises(ScenarioError, match=None) as e:
        parse_scenario({**SMALL, **change})
    assert words in str(e.value)


def test_random_scenarios_are_valid_and_fill_the_device():
    for seed in range(5):
        s = random_scenario(seed, orders=(0, 2, 4, 9), max_cpus=2)
        assert s == random_scenario(seed, orders=(0, 2, 4, 9), max_cpus=2)
        r = replay_model(s)
        assert not r.problems
        assert any(x is None for sl in r.slots for x in sl) or max(r.usage) > 0.8 * s.pages


def test_split_order_is_head_then_tails_from_the_highest():
    assert split_order(2) == [0, 3, 2, 1]


def test_swap_header_layout():
    h = swap_header(1541, [3, 17])
    assert len(h) == 4096 and h[4086:] == b"SWAPSPACE2"
    assert int.from_bytes(h[1024:1028], "little") == 1
    assert int.from_bytes(h[1028:1032], "little") == 1540
    assert int.from_bytes(h[1032:1036], "little") == 2
    assert int.from_bytes(h[1536:1540], "little") == 3


# -- the model against recorded kernel slots ----------------------------------------------------------------

@pytest.mark.parametrize("name", shipped_names())
@pytest.mark.parametrize("alloc_table", ALLOC_TABLES)
def test_shipped_scenarios_match_the_recorded_kernel(name, alloc_table):
    s = shipped(name)
    assert s.description and s.expect is not None, "shipped scenarios say what they show and carry kernel slots"
    r = replay_model(s, alloc_table)
    assert not r.problems
    compared, d = compare(list(s.expect), r)
    assert compared == sum(1 << o for o in s.folios)
    assert d is None, "\n".join(describe_difference(s, alloc_table, d))


def test_a_wrong_model_is_reported(monkeypatch):
    """NONFULL lists never scanned (a wrong list order): the twin must see it."""
    real = allocator.alloc_swap_scan_list

    def skip_nonfull(si, lst, order, usage, scan_all):
        return 0 if lst == list_nonfull(order) else real(si, lst, order, usage, scan_all)

    s = shipped("nonfull-before-free")
    monkeypatch.setattr(allocator, "alloc_swap_scan_list", skip_nonfull)
    compared, d = compare(list(s.expect), replay_model(s, "seed", check=False))
    assert d is not None and d.count > 0
    text = "\n".join(describe_difference(s, "seed", d))
    assert f"kernel slot {d.kernel}, model slot {d.model}" in text and "nonfull_clusters[0]" in text


def test_cli_model_only_reports_a_difference(tmp_path, capsys, monkeypatch):
    doc = scenario_doc(shipped("percpu-fast-path"))
    doc["expect"][0] = [7]                                 # a kernel that disagrees
    path = tmp_path / "wrong.json"
    path.write_text(json.dumps(doc))
    out = tmp_path / "out.json"
    assert main(["twin", "--model-only", "--quiet", str(path), "--json", str(out)]) == 1
    text = capsys.readouterr().out
    assert "kernel slot 7, model slot 1" in text and ", 2 differences" in text
    assert json.loads(out.read_text())["summary"]["differences"] == 2


def test_cli_model_only_shipped_agree(capsys):
    assert main(["twin", "--model-only", "--quiet", "--shipped", "--random", "2"]) == 0
    assert ", 0 differences" in capsys.readouterr().out


@pytest.mark.parametrize("argv, words", [
    (["twin"], "no scenario"),
    (["twin", "--random", "1", "--orders", "0,1"], "order 1"),
    (["twin", "--random", "1", "--orders", "x"], "--orders: 'x'"),
    (["twin", "no-such-scenario"], "'no-such-scenario'"),
    (["twin", "--random", "-1"], "--random: -1"),
])
def test_cli_bad_arguments(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv + ["--model-only"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


# -- the live kernel ------------------------------------------------------------------------------------------

def _device_clean(name: str) -> bool:
    return (not any(x["name"] == f"/dev/{name}" for x in proc_swaps())
            and open(f"/sys/block/{name}/disksize").read().strip() == "0")


@needs_kernel
@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["percpu-fast-path", "hdd-global-cursor", "large-folio-split"])
def test_kernel_gives_the_recorded_slots(name):
    s = shipped(name)
    device = preflight()
    for _ in range(3):
        try:
            with KernelSwap(s, device) as k:
                for i, op in enumerate(s.ops):
                    k.op(i, op)
            break
        except kernel_mod.Disturbed:
            continue
    assert _device_clean(device)
    compared, d = compare(k.replay, replay_model(s))
    assert d is None, "\n".join(describe_difference(s, "seed", d))
    assert [list(x) for x in s.expect] == k.replay.slots


@needs_kernel
@pytest.mark.timeout(120)
def test_kernel_restores_the_machine_after_an_error():
    s = parse_scenario(SMALL)
    device = preflight()
    rotational = open(f"/sys/block/{device}/queue/rotational").read()
    with pytest.raises(RuntimeError, match="boom"):
        with KernelSwap(s, device) as k:
            k.op(0, s.ops[0])
            raise RuntimeError("boom")
    assert _device_clean(device)
    assert open(f"/sys/block/{device}/queue/rotational").read() == rotational


@needs_kernel
@pytest.mark.timeout(120)
def test_cli_random_against_the_kernel(capsys):
    assert main(["twin", "--random", "2", "--seed", "7", "--max-pages", "2048", "--quiet"]) == 0
    assert ", 0 differences" in capsys.readouterr().out
    assert not proc_swaps()


def test_refusals_are_one_line(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(Refused, match="root"):
        preflight()


# -- shmswap twin --cost ---------------------------------------------------------------------------------

@pytest.mark.parametrize("order, folios", [(0, 100), (4, 5), (9, 3)])
def test_cost_scenario_has_room_and_the_model_times_every_folio(order, folios):
    s = cost_scenario(order, folios)
    assert s.cpus == 1 and s.folios == [order] * folios and s.pages % SPC == 0
    assert s.pages - SPC >= folios << order            # room beside the header page's cluster
    c = model_cost(order, folios)
    assert (c["folios"], c["slots"], c["failed"], c["problems"]) == (folios, folios << order, 0, [])
    assert c["ns"] > 0 and c["us_per_slot"] == pytest.approx(c["us_per_folio"] / (1 << order))


@pytest.mark.parametrize("argv, words", [
    (["twin", "--cost", "--shipped"], "--cost runs no scenarios"),
    (["twin", "--cost", "--cost-pages", "0"], "--cost-pages: 0"),
    (["twin", "--cost", "--orders", "1"], "order 1"),
])
def test_cli_cost_bad_arguments(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


def test_cli_cost_refused_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(SystemExit) as e:
        main(["twin", "--cost"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "root" in err and err.count("\n") == 1


@needs_kernel
@pytest.mark.timeout(120)
@pytest.mark.parametrize("data", ["random", "zeros"])
def test_cli_cost_against_the_kernel(data, tmp_path, capsys):
    out = tmp_path / "cost.json"
    assert main(["twin", "--cost", "--orders", "0,4", "--cost-pages", "64", "--cost-data", data, "--quiet",
                 "--json", str(out)]) == 0
    assert "kernel us/page" in capsys.readouterr().out
    assert not proc_swaps()
    doc = json.loads(out.read_text())
    assert (doc["version"], doc["kind"], doc["status"], doc["data"], doc["pages_per_order"]) == (
        1, "cost", 0, data, 64)
    assert doc["cpu"] in os.sched_getaffinity(0) and doc["device"].startswith("zram")
    assert [r["order"] for r in doc["orders"]] == [0, 4]
    for r in doc["orders"]:
        k, m = r["kernel"], r["model"]
        assert r["folios"] == 64 >> r["order"] and r["pages"] == 64
        assert (k["pages"], k["swapped_pages"], k["whole_folios"]) == (64, 64, r["folios"])
        assert k["ns"] > 0 and k["us_per_page"] == pytest.approx(k["ns"] / 1e3 / 64)
        assert k["us_per_folio"] == pytest.approx(k["us_per_page"] * (1 << r["order"]))
        assert (m["slots"], m["failed"], m["problems"]) == (64, 0, [])
        assert r["ratio"] == pytest.approx(m["us_per_slot"] / k["us_per_page"])
