"""Tests of shmswap.config: validation names the bad value; derived geometry; size parsing."""

import math

import pytest

from shmswap.config import PAGE_SIZE, Config, ConfigError, parse_orders, parse_size


def test_defaults_are_valid():
    cfg = Config()
    assert cfg.slots_per_cluster == 512
    assert cfg.max_order == 9
    assert cfg.nr_orders == 10
    assert cfg.pmd_order == 9
    assert cfg.max_slots == (1 << 30) // PAGE_SIZE
    assert cfg.nr_clusters == cfg.max_slots // 512
    assert cfg.ssd


@pytest.mark.parametrize("spc,order", [(8, 3), (16, 4), (64, 6), (256, 8), (512, 9)])
def test_max_order_defaults_to_log2_slots_per_cluster(spc, order):
    cfg = Config(slots_per_cluster=spc, orders={0: 1.0}, size=spc * PAGE_SIZE)
    assert cfg.max_order == order
    assert cfg.pmd_order == order
    assert cfg.nr_orders == order + 1


def test_max_order_may_be_lower():
    cfg = Config(slots_per_cluster=64, max_order=2, orders={0: 0.5, 2: 0.5})
    assert cfg.max_order == 2 and cfg.pmd_order == 6 and cfg.nr_orders == 3


@pytest.mark.parametrize("text,value", [
    ("4096", 4096), ("1K", 1 << 10), ("1k", 1 << 10), ("512M", 512 << 20), ("3G", 3 << 30),
    ("1T", 1 << 40), ("2GiB", 2 << 30), ("8KB", 8 << 10), (" 64M ", 64 << 20), (12288, 12288),
])
def test_parse_size_suffixes(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1X", "1.5G", "-1M", "G"])
def test_parse_size_rejects(text):
    with pytest.raises(ConfigError, match="--size") as e:
        parse_size(text)
    assert repr(text) in str(e.value)


def test_size_accepts_strings_and_derives_geometry():
    cfg = Config(size="64M", slots_per_cluster=16, orders={0: 1.0})
    assert cfg.size == 64 << 20
    assert cfg.max_slots == 16384
    assert cfg.nr_clusters == 1024
    odd = Config(size=(3 * 16 + 5) * PAGE_SIZE, slots_per_cluster=16, orders={0: 1.0})
    assert odd.nr_clusters == 4      # rounded up: the last cluster has a tail


@pytest.mark.parametrize("size,shown", [
    (4097, "4097"),                       # not a multiple of the page size
    (PAGE_SIZE * 100, str(PAGE_SIZE * 100)),  # less than one 512-slot cluster
    ("8192T", str(8192 << 40)),           # beyond 2^40 slots
])
def test_bad_sizes(size, shown):
    with pytest.raises(ConfigError, match="--size") as e:
        Config(size=size)
    assert shown in str(e.value)


def test_orders_must_sum_to_one():
    with pytest.raises(ConfigError, match="sum to 0.7") as e:
        Config(orders={0: 0.5, 2: 0.2})
    assert "--orders" in str(e.value)
    with pytest.raises(ConfigError, match="sum to 1.5"):
        Config(orders="0:1,1:0.5")
    with pytest.raises(ConfigError, match="empty"):
        Config(orders={})


def test_order_above_max_order():
    with pytest.raises(ConfigError, match="order 10 is outside 0..9"):
        Config(orders={0: 0.5, 10: 0.5})
    with pytest.raises(ConfigError, match="order 3 is outside 0..2"):
        Config(max_order=2, orders={0: 0.5, 3: 0.5})
    # an explicit mix with order 4 is too big for 8-slot clusters (the default mix is folded instead)
    with pytest.raises(ConfigError, match="order 4 is outside 0..3"):
        Config(slots_per_cluster=8, orders={0: 0.7, 2: 0.2, 4: 0.1})


def test_order_probability_out_of_range():
    with pytest.raises(ConfigError, match=r"probability -0.5 of order 0 is not in \[0, 1\]"):
        Config(orders={0: -0.5, 2: 1.5})
    with pytest.raises(ConfigError, match="probability 1.5 of order 2"):
        Config(orders={0: 0.0, 2: 1.5})


@pytest.mark.parametrize("max_order", [10, -1, 1.5])
def test_max_order_out_of_range(max_order):
    with pytest.raises(ConfigError, match="--max-order") as e:
        Config(max_order=max_order, orders={0: 1.0})
    assert repr(max_order) in str(e.value)


@pytest.mark.parametrize("spc", [4, 24, 100, 1024, 0, 7])
def test_slots_per_cluster_power_of_two_in_range(spc):
    with pytest.raises(ConfigError, match="--slots-per-cluster") as e:
        Config(slots_per_cluster=spc, orders={0: 1.0})
    assert f": {spc} " in str(e.value)


def test_slots_per_cluster_must_be_int():
    with pytest.raises(ConfigError, match="--slots-per-cluster: '8' is not an integer"):
        Config(slots_per_cluster="8", orders={0: 1.0})


@pytest.mark.parametrize("name", ["atomic_fail", "sleep_fail", "migrate", "fill", "cache_only"])
@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan])
def test_probabilities_in_unit_interval(name, value):
    with pytest.raises(ConfigError, match=f"--{name.replace('_', '-')}") as e:
        Config(**{name: value})
    assert repr(value) in str(e.value)


def test_probability_not_a_number():
    with pytest.raises(ConfigError, match="--migrate: 'often' is not a number"):
        Config(migrate="often")


def test_probability_bounds_are_inclusive():
    cfg = Config(atomic_fail=0, sleep_fail=1, migrate=1.0)
    assert (cfg.atomic_fail, cfg.sleep_fail, cfg.migrate) == (0.0, 1.0, 1.0)


@pytest.mark.parametrize("cpus", [0, -1, 257, 1000])
def test_cpus_out_of_range(cpus):
    with pytest.raises(ConfigError, match=f"--cpus: {cpus} is out of range 1..256"):
        Config(cpus=cpus)


def test_cpus_bounds():
    assert Config(cpus=1).cpus == 1
    assert Config(cpus=256).cpus == 256
    with pytest.raises(ConfigError, match="--cpus: True is not an integer"):
        Config(cpus=True)


def test_migrate_to_must_name_an_existing_cpu():
    with pytest.raises(ConfigError, match="--migrate-to: CPU 4 does not exist") as e:
        Config(cpus=4, migrate_to="4")
    assert "0..3" in str(e.value)
    with pytest.raises(ConfigError, match="CPU -1 does not exist"):
        Config(cpus=4, migrate_to="-1")
    with pytest.raises(ConfigError, match="--migrate-to: 'elsewhere'"):
        Config(migrate_to="elsewhere")
    assert Config(cpus=4, migrate_to="3").migrate_to == "3"
    assert Config(migrate_to="random").migrate_to == "random"


@pytest.mark.parametrize("name,value", [
    ("device", "nvme"), ("discard", "maybe"), ("alloc_table", "v3"), ("tables", "lazy"),
    ("percpu", "yes"), ("reclaim", "both"), ("rcu", "fast"), ("reader", "sloppy"),
    ("inject_bug", "lose-table"),
])
def test_choices_name_the_value(name, value):
    with pytest.raises(ConfigError, match=f"--{name.replace('_', '-')}: '{value}' is not one of"):
        Config(**{name: value})


def test_bad_pages_must_be_inside_the_device():
    cfg = Config(size=64 * PAGE_SIZE, slots_per_cluster=8, orders={0: 1.0}, bad_pages=[5, 63])
    assert cfg.bad_pages == (5, 63)
    for bad in (0, 64, -3):
        with pytest.raises(ConfigError, match=f"bad page {bad} is outside the device"):
            Config(size=64 * PAGE_SIZE, slots_per_cluster=8, orders={0: 1.0}, bad_pages=(bad,))


@pytest.mark.parametrize("kw,match", [
    ({"seconds": 0}, "--seconds: 0"), ({"seconds": -2.0}, "--seconds: -2.0"),
    ({"ops": 0}, "--ops: 0"), ({"watchdog_s": 0}, "--watchdog-s: 0"),
    ({"sleep_latency_us": -5}, "--sleep-latency-us: -5"), ({"objs_per_slab_page": 0}, "objs_per_slab_page: 0"),
    ({"lookup_ratio": -1.0}, "lookup_ratio: -1.0"),
])
def test_other_numbers(kw, match):
    with pytest.raises(ConfigError, match=match):
        Config(**kw)


def test_parse_orders():
    assert parse_orders("0:0.7, 2:0.2,4:0.1") == {0: 0.7, 2: 0.2, 4: 0.1}
    assert parse_orders({"1": "0.25", 0: 0.75}) == {1: 0.25, 0: 0.75}
    with pytest.raises(ConfigError, match="cannot parse 'x'"):
        parse_orders("0:0.5,x")
    with pytest.raises(ConfigError, match="bad probability"):
        parse_orders("0:1e")


def test_with_revalidates_and_as_dict():
    cfg = Config(slots_per_cluster=8, orders={0: 1.0})
    assert cfg.with_(cpus=8).cpus == 8
    with pytest.raises(ConfigError, match="--cpus: 0"):
        cfg.with_(cpus=0)
    d = cfg.with_(bad_pages=(3,)).as_dict()
    assert d["orders"] == {"0": 1.0} and d["bad_pages"] == [3] and d["slots_per_cluster"] == 8


def test_configerror_is_valueerror():
    assert issubclass(ConfigError, ValueError)


# -- bad input named, accepted-but-wrong input refused, sensible input accepted (issue 11 item 5) ----

@pytest.mark.parametrize("kw,match", [
    ({"size": "9" * 5000}, "--size: .* is too large"),
    ({"size": "\uff11G"}, "--size: cannot parse '\uff11G'"),
    ({"size": "-1G"}, "--size: cannot parse '-1G'"),
    ({"orders": "0:0.5,0:0.5"}, "--orders: order 0 given twice"),
    ({"orders": "0:1e400"}, "--orders: probability '1e400' of order 0"),
    ({"orders": "\uff10:1"}, "--orders: cannot parse"),
    ({"watchdog_s": float("inf")}, "--watchdog-s: inf is not in the range"),
    ({"seconds": 1e7}, "--seconds: 10000000.0 is not in the range 0 < S < 10000000"),
    ({"migrate_to": "\u0662"}, "--migrate-to: '\u0662' is neither"),
    ({"torture_readers": -1}, "--torture-readers: -1 is out of range 0..64"),
    ({"torture_readers": "2"}, "--torture-readers: '2' is not an integer"),
])
def test_bad_values_are_refused_by_name(kw, match):
    with pytest.raises(ConfigError, match=match):
        Config(**kw)


def test_echoed_values_are_cut():
    with pytest.raises(ConfigError) as e:
        Config(device="x" * 100_000)
    assert len(str(e.value)) < 120 and "\u2026" in str(e.value)


def test_choices_are_case_insensitive():
    cfg = Config(device="SSD", alloc_table="Merged", start_method="FORK", migrate_to="Random")
    assert (cfg.device, cfg.alloc_table, cfg.start_method, cfg.migrate_to) == ("ssd", "merged", "fork", "random")


def test_default_order_mix_is_folded_to_fit_the_device():
    cfg = Config(size="64K", slots_per_cluster=8)
    assert cfg.max_order == 3 and cfg.orders == {0: 0.7, 2: 0.2, 3: 0.1}
    assert cfg.notes and "folded" in cfg.notes[0]
    assert Config().orders == {0: 0.7, 2: 0.2, 4: 0.1} and Config().notes == ()
    assert Config(slots_per_cluster=8).with_(slots_per_cluster=512, max_order=None).orders == {0: 0.7, 2: 0.2, 4: 0.1}
    with pytest.raises(ConfigError, match="order 4 is outside 0..3"):
        Config(slots_per_cluster=8, orders="0:0.7,2:0.2,4:0.1")    # an explicit mix is never changed
