"""The human report (shmswap/report.py): the echoed command line reproduces the run (parsed back with
``shmswap run``'s own parser), and the text agrees with the JSON with several devices and nested
reclaim."""

from __future__ import annotations

import shlex
from dataclasses import fields

import pytest
from conftest import reset_prim

from shmswap import Config, run_inprocess
from shmswap.cli import build_parser
from shmswap.commands.run import config_from_args
from shmswap.report import _NOT_OPTIONS, command_line, library_settings, render


@pytest.fixture(autouse=True)
def _reset_prim():
    yield
    reset_prim()


def _parse(argv: list[str]):
    return build_parser().parse_args(["run", *argv])


def _rows(cfg: Config) -> list[dict] | None:
    """finish.device_figures' rows, as far as the command line needs them."""
    configs = cfg.device_configs()
    return [{"type": i, "discard": c.discard} for i, (c, _) in enumerate(configs)] if len(configs) > 1 else None


@pytest.mark.parametrize("argv", [
    [],
    ["--device", "ssd:64M:prio=5,hdd:128M,ssd:32M:prio=5", "--alloc-table", "merged", "--seconds", "3"],
    ["--discard", "on", "--device", "ssd:64M:discard=off,hdd:128M"],        # part 1 takes --discard on
    ["--discard", "on", "--device", "ssd:64M,hdd:128M:discard=off"],
    ["--device", "ssd:64M:discard=on,hdd:128M:prio=3:discard=off"],
    ["--device", "hdd", "--size", "512M", "--discard", "on", "--seconds", "0.25"],
    ["--size", "1572864K", "--slots-per-cluster", "8"],
    ["--size", "12292K", "--slots-per-cluster", "8"],
    ["--orders", "0:0.3333333333333333,1:0.6666666666666667", "--ops", "500", "--strict", "--pin", "--lockdep",
     "--size", "3M", "--fill", "0.123456789", "--sleep-reclaim", "0.5", "--max-order", "4"],
])
def test_echoed_command_line_parses_back_to_the_same_configuration(argv):
    cfg = config_from_args(_parse(argv))
    line = command_line(cfg.as_dict(), None, _rows(cfg))
    again = _parse(shlex.split(line))
    assert config_from_args(again) == cfg, line
    assert config_from_args(again).device_configs() == cfg.device_configs(), line
    assert not again.deterministic and not again.processes
    assert "--devices" not in line
    if cfg.devices:
        # The list is the one --device; device 0's kind, size and discard are in it.
        assert line.count("--device ") == 1 and "--size" not in line and f"--device {cfg.devices}" in line


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_echoed_command_line_of_a_deterministic_run(mode):
    cfg = config_from_args(_parse(["--cpus", "2", "--size", "256K", "--slots-per-cluster", "8", "--seed", "7"]))
    again = _parse(shlex.split(command_line(cfg.as_dict(), {"mode": mode, "steps": 10, "digest": "0"})))
    assert again.deterministic and again.processes == (mode == "processes")
    assert config_from_args(again) == cfg


def test_every_configuration_field_is_echoed_as_an_option_of_run_or_named_apart():
    """A new Config field without its ``shmswap run`` option would be echoed as an option that does not
    exist (the audit's ``--devices``): each is an option, or listed as not one."""
    run = next(a for a in build_parser()._subparsers._group_actions[0].choices.values() if a.prog.endswith(" run"))
    options = set(run._option_string_actions)
    for f in fields(Config):
        if f.init and f.name not in _NOT_OPTIONS and f.name != "devices":     # devices: echoed as --device
            assert f"--{f.name.replace('_', '-')}" in options, f.name


def test_library_settings_are_named_apart_only_when_changed():
    assert library_settings(Config().as_dict()) == {}
    cfg = Config(objs_per_slab_page=4, lookup_ratio=0.5)
    assert library_settings(cfg.as_dict()) == {"objs_per_slab_page": 4, "lookup_ratio": 0.5}
    assert "library" not in command_line(cfg.as_dict())


THREE = dict(devices="ssd:1M:prio=5,ssd:512K:prio=5,hdd:256K:discard=on", slots_per_cluster=8, cpus=2,
             orders={0: 1.0}, ops=3000, seed=3, atomic_fail=0.5, migrate=0.5, sleep_reclaim=0.5)


def test_report_with_several_devices_agrees_with_the_json():
    res = run_inprocess(Config(**THREE, alloc_table="seed"))
    d, text = res.as_dict(), render(res)
    lines = text.splitlines()
    t, counts = d["tables"], d["finding_counts"]
    variant = next(ln for ln in lines if ln.startswith("variant: "))
    assert "device=" not in variant and "discard=" not in variant and "devices: 3, see the devices table" in variant
    assert (f"swap tables (summed over the 3 devices; peak: the sum of their peaks): live {t['live']:,}, "
            f"peak {t['peak']:,}") in text
    assert f"vs static {t['static_equivalent']:,} " in text and t["static_equivalent"] == 56
    # The devices table has each device's discard.
    table = lines[lines.index("devices (at the end of the workload, before swapoff):") + 1:][:5]
    assert table[0].split()[:4] == ["type", "kind", "discard", "prio"]
    assert [r.split()[:3] for r in table[2:]] == [["0", "ssd", "off"], ["1", "ssd", "off"], ["2", "hdd", "on"]]
    # The findings header counts what its lines are; every line names its device.
    header = next(ln for ln in lines if ln.startswith("FINDINGS"))
    assert header == (f"FINDINGS ({len(d['findings'])}): {counts['lost_clusters']:,} clusters the seed lost "
                      f"(reference §5.3), {counts['w12_events']:,} W12 events that lost no cluster (reference §10)")
    listed = [ln for ln in lines if ln.startswith("  [") and "] device " in ln]
    assert len(listed) == len(d["findings"]) == counts["lost_clusters"] + counts["w12_events"]
    assert sum(" cluster " in ln.split(": ")[0] for ln in listed) == counts["lost_clusters"]
    assert any(ln.split("] ")[1].startswith("device 0 cluster ") for ln in listed)
    # The nested reclaim line is followed by its explanation, the JSON's.
    n = d["nested_reclaim"]
    assert f"  {n['explanation']}" in lines
    # And the first line is a command that runs this again.
    first = lines[0]
    assert first.startswith("shmswap run ")
    # (with --ops the command line leaves seconds unset, as ``shmswap run --ops`` does)
    assert config_from_args(_parse(shlex.split(first)[2:])) == Config(**THREE, alloc_table="seed", seconds=None)


def test_report_with_one_device_keeps_its_variant_line_and_findings():
    cfg = Config(size="1M", slots_per_cluster=8, cpus=2, orders={0: 1.0}, ops=3000, seed=3, atomic_fail=0.5,
                 migrate=0.5)
    res = run_inprocess(cfg)
    text = render(res)
    assert "device=ssd, discard=off" in text and "devices:" not in text
    assert res.check.findings and f"FINDINGS ({len(res.check.findings)}): {len(res.check.findings)} clusters " \
        "the seed lost (reference §5.3)\n" in text
    assert "] cluster " in text and "] device 0" not in text
    assert "swap tables: live" in text
    assert "nested reclaim" not in text
