"""One validated configuration object for a model run.

Every value is checked when the object is built; a bad one raises ``ConfigError`` whose message
names the option and the value, before anything (a segment, a process) is created.  The CLI turns
that into one line on stderr and exit status 2.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields, replace

__all__ = ["Config", "ConfigError", "PAGE_SIZE", "parse_size", "parse_orders", "parse_devices",
           "shown", "check_seconds",
           "DEFAULT_ORDERS", "SECONDS_LIMIT"]

PAGE_SIZE = 4096
DEFAULT_ORDERS = {0: 0.7, 2: 0.2, 4: 0.1}
SECONDS_LIMIT = 1e7
_SHOWN_MAX = 60
_MAX_DIGITS = 20
_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_CHOICES = {
    "device": ("ssd", "hdd"),
    "discard": ("off", "on"),
    "alloc_table": ("seed", "merged"),
    "tables": ("dynamic", "static"),
    "percpu": ("on", "off"),
    "reclaim": ("slab", "page"),
    "rcu": ("normal", "none"),
    "reader": ("normal", "broken"),
    "reader_delays": ("on", "off"),
    "lifetimes": ("on", "off"),
    "inject_bug": ("", "lose-cluster"),
    "start_method": ("fork", "spawn", "forkserver"),
}


class ConfigError(ValueError):
    """A configuration value is invalid; the message names it."""


def shown(value) -> str:
    """``repr(value)`` cut at 60 characters with an ellipsis: what an error message echoes."""
    text = repr(value)
    return text if len(text) <= _SHOWN_MAX else text[:_SHOWN_MAX - 1] + "…"


def parse_size(text: str | int) -> int:
    """'1G', '512M', '4096' -> bytes (ASCII digits only)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = re.fullmatch(r"\s*([0-9]+)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.I | re.ASCII)
        if not m:
            raise ConfigError(f"--size: cannot parse {shown(text)} (use a number with K, M, G or T)")
        if len(m.group(1)) > _MAX_DIGITS:
            raise ConfigError(f"--size: {shown(text)} is too large")
        value = int(m.group(1)) * _SUFFIX[m.group(2).upper()]
    return value


def parse_orders(text: str | dict) -> dict[int, float]:
    """'0:0.7,2:0.2,4:0.1' -> {0: 0.7, 2: 0.2, 4: 0.1}."""
    if isinstance(text, dict):
        try:
            return {int(k): float(v) for k, v in text.items()}
        except (TypeError, ValueError):
            raise ConfigError(f"--orders: cannot parse {shown(text)}") from None
    out: dict[int, float] = {}
    for part in str(text).split(","):
        m = re.fullmatch(r"\s*([0-9]{1,6})\s*:\s*([0-9.eE+-]+)\s*", part, re.ASCII)
        if not m:
            raise ConfigError(f"--orders: cannot parse {shown(part)} in {shown(text)} (use order:probability,...)")
        order = int(m.group(1))
        if order in out:
            raise ConfigError(f"--orders: order {order} given twice in {shown(text)}")
        try:
            p = float(m.group(2))
        except ValueError:
            raise ConfigError(f"--orders: bad probability {shown(m.group(2))} in {shown(text)}") from None
        if not math.isfinite(p):
            raise ConfigError(f"--orders: probability {shown(m.group(2))} of order {order} is not a number in [0, 1]")
        out[order] = p
    return out


def check_seconds(value) -> float:
    """``--seconds``: a finite number of seconds in (0, 1e7)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--seconds: {shown(value)} is not a number") from None
    if not (0 < v < SECONDS_LIMIT):
        raise ConfigError(f"--seconds: {shown(value)} is not in the range 0 < S < {SECONDS_LIMIT:.0f}")
    return v


def _probability(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--{name}: {shown(value)} is not a number") from None
    if not (0.0 <= v <= 1.0) or math.isnan(v):
        raise ConfigError(f"--{name}: {shown(value)} is not a probability in [0, 1]")
    return v


@dataclass(frozen=True)
class Config:
    """A run's configuration.  Field names are the CLI's option names with '_' for '-'."""

    cpus: int = 4
    size: int = 1 << 30
    device: str = "ssd"
    discard: str = "off"
    slots_per_cluster: int = 512
    max_order: int | None = None
    orders: dict[int, float] | None = None   # None: DEFAULT_ORDERS, orders above max_order folded into it
    ops: int | None = None
    seconds: float | None = 8.0
    fill: float = 0.8
    seed: int = 1
    alloc_table: str = "seed"
    tables: str = "dynamic"
    percpu: str = "on"
    reclaim: str = "slab"
    rcu: str = "normal"
    reader: str = "normal"
    atomic_fail: float = 0.05
    sleep_fail: float = 0.0
    sleep_latency_us: int = 0
    migrate: float = 0.5
    migrate_to: str = "random"
    watchdog_s: float = 10.0
    pin: bool = False
    strict: bool = False
    json: str | None = None
    quiet: bool = False
    inject_bug: str = ""
    bad_pages: tuple[int, ...] = ()
    objs_per_slab_page: int = 8
    cache_only: float = 0.05
    lookup_ratio: float = 1.0
    reader_delay_us: int = 0
    reader_delays: str = "on"       # --reader-delays: rcutorture-style random delays in the read sections
    torture_readers: int = 2        # --torture-readers: reader processes that take the long delays
    lifetimes: str = "on"           # --lifetimes: the workload runs processes that swap out, live, then exit
    lockdep: bool = False           # --lockdep: lock-order checking (checks/lockdep.py) and the DEBUG_VM asserts
    start_method: str = "fork"
    lockstat: bool = True
    sample_ms: int = 0              # --sample-ms: the manager samples the shared state every N ms (0: off)
    trace: str | None = None        # --trace: write the run's events as Chrome trace-event JSON here
    trace_limit: int = 200_000      # --trace-limit: at most this many trace events in all
    trace_lock_ns: int = 100_000    # --trace-lock-ns: trace lock waits of at least this many ns
    devices: str = ""               # --device KIND:SIZE[:prio=N][:discard=on|off],...: several devices
    sleep_reclaim: float = 0.0      # --sleep-reclaim P: the sleeping table allocation reclaims (nested swap-out)
    swapoff_every: float = 0.0      # --swapoff-every S: swapoff + swapon of one device every S seconds (0: off)

    _size_text: str = field(default="", init=False, repr=False, compare=False)
    _orders_default: bool = field(default=False, init=False, repr=False, compare=False)
    notes: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)
    _device_specs: tuple = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        s = object.__setattr__
        if self.devices:
            specs = parse_devices(self.devices, self.discard)
            s(self, "_device_specs", specs)
            s(self, "device", specs[0][0])
            s(self, "size", specs[0][1])
            s(self, "discard", specs[0][3])
        s(self, "_size_text", str(self.size))
        s(self, "size", parse_size(self.size))
        s(self, "_orders_default", self.orders is None)
        s(self, "orders", parse_orders(DEFAULT_ORDERS if self.orders is None else self.orders))
        s(self, "bad_pages", tuple(int(b) for b in self.bad_pages))
        self._check_ints()
        self._check_choices()
        self._check_geometry()
        self._fold_default_orders()
        self._check_workload()
        self._check_observation()

    def _fold_default_orders(self) -> None:
        """The default order mix fits the device: orders above max_order are folded into it."""
        if not self._orders_default or max(self.orders) <= self.max_order:
            return
        folded: dict[int, float] = {}
        for o, p in self.orders.items():
            folded[min(o, self.max_order)] = folded.get(min(o, self.max_order), 0.0) + p
        was = ",".join(f"{o}:{p:g}" for o, p in self.orders.items())
        now = ",".join(f"{o}:{p:g}" for o, p in folded.items())
        object.__setattr__(self, "orders", folded)
        object.__setattr__(self, "notes", (f"default order mix {was} folded to {now}: orders above "
                                           f"--max-order {self.max_order} do not fit the device",))

    # -- validation ---------------------------------------------------------------------------------
    def _check_ints(self) -> None:
        for name in ("cpus", "slots_per_cluster", "seed", "sleep_latency_us", "objs_per_slab_page",
                     "reader_delay_us"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ConfigError(f"--{_opt(name)}: {v!r} is not an integer")
        if not 1 <= self.cpus <= 256:
            raise ConfigError(f"--cpus: {self.cpus} is out of range 1..256")
        for name in ("sleep_latency_us", "reader_delay_us"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{_opt(name)}: {getattr(self, name)} is negative")
        if self.objs_per_slab_page < 1:
            raise ConfigError(f"objs_per_slab_page: {self.objs_per_slab_page} is below 1")
        for name in ("atomic_fail", "sleep_fail", "migrate", "fill", "cache_only", "sleep_reclaim"):
            object.__setattr__(self, name, _probability(_opt(name), getattr(self, name)))
        if self.seconds is not None:
            check_seconds(self.seconds)
        if self.ops is not None and (not isinstance(self.ops, int) or self.ops < 1):
            raise ConfigError(f"--ops: {shown(self.ops)} must be a positive integer")
        try:
            watchdog = float(self.watchdog_s)
        except (TypeError, ValueError):
            raise ConfigError(f"--watchdog-s: {shown(self.watchdog_s)} is not a number") from None
        if not (0 < watchdog < SECONDS_LIMIT):
            raise ConfigError(f"--watchdog-s: {shown(self.watchdog_s)} is not in the range 0 < S < "
                              f"{SECONDS_LIMIT:.0f}")
        if self.lookup_ratio < 0:
            raise ConfigError(f"lookup_ratio: {self.lookup_ratio!r} is negative")
        try:
            every = float(self.swapoff_every)
        except (TypeError, ValueError):
            raise ConfigError(f"--swapoff-every: {shown(self.swapoff_every)} is not a number") from None
        if isinstance(self.swapoff_every, bool) or not (0 <= every < SECONDS_LIMIT):
            raise ConfigError(f"--swapoff-every: {shown(self.swapoff_every)} is not in the range 0 <= S < "
                              f"{SECONDS_LIMIT:.0f} (0: off)")
        object.__setattr__(self, "swapoff_every", every)

    def _check_choices(self) -> None:
        for name, allowed in _CHOICES.items():
            v = getattr(self, name)
            if isinstance(v, str) and v.lower() in allowed:
                v = v.lower()
                object.__setattr__(self, name, v)
            if v not in allowed:
                choices = "|".join(a for a in allowed if a)
                raise ConfigError(f"--{_opt(name)}: {shown(v)} is not one of {choices}")
        if isinstance(self.migrate_to, str) and self.migrate_to.lower() == "random":
            object.__setattr__(self, "migrate_to", "random")
        if self.migrate_to != "random":
            try:
                if not re.fullmatch(r"[+-]?[0-9]{1,6}", str(self.migrate_to), re.ASCII):
                    raise ValueError(self.migrate_to)
                cpu = int(self.migrate_to)
            except ValueError:
                raise ConfigError(f"--migrate-to: {shown(self.migrate_to)} is neither 'random' nor a CPU") from None
            if not 0 <= cpu < self.cpus:
                raise ConfigError(f"--migrate-to: CPU {cpu} does not exist (cpus 0..{self.cpus - 1})")

    def _check_geometry(self) -> None:
        spc = self.slots_per_cluster
        if spc < 8 or spc > 512 or spc & (spc - 1):
            raise ConfigError(f"--slots-per-cluster: {spc} is not a power of two from 8 to 512")
        pmd = spc.bit_length() - 1
        if self.max_order is None:
            object.__setattr__(self, "max_order", pmd)
        if not isinstance(self.max_order, int) or not 0 <= self.max_order <= pmd:
            raise ConfigError(f"--max-order: {self.max_order!r} is not in 0..{pmd} "
                              f"(log2 of --slots-per-cluster {spc})")
        size = f"{self._size_text!r} ({self.size} bytes)"
        if self.size % PAGE_SIZE:
            raise ConfigError(f"--size: {size} is not a multiple of the page size {PAGE_SIZE}")
        if self.size // PAGE_SIZE < spc:
            raise ConfigError(f"--size: {size} is less than one cluster ({spc} slots of {PAGE_SIZE} B)")
        if self.size // PAGE_SIZE > 1 << 40:
            raise ConfigError(f"--size: {size} is beyond the model's 2^40 slots")
        for b in self.bad_pages:
            if not 0 < b < self.max_slots:
                raise ConfigError(f"bad page {b} is outside the device (1..{self.max_slots - 1})")

    def _check_workload(self) -> None:
        if not self.orders:
            raise ConfigError("--orders: empty")
        for o, p in self.orders.items():
            if not 0 <= o <= self.max_order:
                raise ConfigError(f"--orders: order {o} is outside 0..{self.max_order} (--max-order)")
            if not 0 <= p <= 1:
                raise ConfigError(f"--orders: probability {p} of order {o} is not in [0, 1]")
        total = sum(self.orders.values())
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(f"--orders: probabilities sum to {total:g}, not 1")

    def _check_observation(self) -> None:
        """--sample-ms, --trace-limit, --trace-lock-ns (tracing and sampling watch; they never steer), and
        --torture-readers."""
        for name, lo, hi in (("sample_ms", 0, 60_000), ("trace_limit", 100, 10_000_000),
                             ("trace_lock_ns", 0, 10**12), ("torture_readers", 0, 64)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ConfigError(f"--{_opt(name)}: {v!r} is not an integer")
            if not lo <= v <= hi:
                raise ConfigError(f"--{_opt(name)}: {v} is out of range {lo}..{hi}")
        if self.trace is not None and (not isinstance(self.trace, str) or not self.trace.strip()):
            raise ConfigError(f"--trace: {self.trace!r} is not a file name")

    @property
    def n_torture_readers(self) -> int:
        """The reader processes a multiprocess run starts (none without ``--reader-delays on``)."""
        return self.torture_readers if self.reader_delays == "on" else 0

    # -- derived geometry ---------------------------------------------------------------------------
    @property
    def max_slots(self) -> int:
        """si->max: slots in the device (one per 4 KiB page)."""
        return self.size // PAGE_SIZE

    @property
    def nr_clusters(self) -> int:
        return -(-self.max_slots // self.slots_per_cluster)

    @property
    def pmd_order(self) -> int:
        """The order of a whole cluster (the kernel's PMD_ORDER)."""
        return self.slots_per_cluster.bit_length() - 1

    @property
    def nr_orders(self) -> int:
        """SWAP_NR_ORDERS: orders 0..max_order."""
        return self.max_order + 1

    @property
    def ssd(self) -> bool:
        return self.device == "ssd"

    def device_configs(self) -> list[tuple[Config, int]]:
        """Every device as (its configuration, the priority its swapon asks for), in swapon order:
        type 0 is this configuration; without --device lists, the one device of
        --size/--device/--discard.  A device without ``prio=N`` (or with ``prio=-1``) asks for
        none, -1 as the swapon syscall passes it, and gets ``--least_priority`` at swapon
        (mm/swapon.py ``setup_swap_info``): -2 for the first such device, -3 for the next."""
        if not self._device_specs:
            return [(self, -1)]
        out: list[tuple[Config, int]] = []
        for i, (kind, size, prio, discard) in enumerate(self._device_specs):
            if prio is None:
                prio = -1
            if i == 0:
                out.append((self, prio))
                continue
            try:
                cfg = self.with_(devices="", size=size, device=kind, discard=discard, bad_pages=())
            except ConfigError as e:
                raise ConfigError(f"--device: device {i} ({kind}:{size}): {e}") from None
            out.append((cfg, prio))
        return out

    def with_(self, **changes) -> Config:
        """A copy with some fields changed (validated again; the default order mix stays the default)."""
        if self._orders_default and "orders" not in changes:
            changes["orders"] = None
        return replace(self, **changes)

    def as_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        out["orders"] = {str(k): v for k, v in self.orders.items()}
        out["bad_pages"] = list(self.bad_pages)
        return out


def parse_devices(text: str, discard: str = "off") -> tuple:
    """'ssd:1G:prio=5,hdd:4G:discard=on' -> ((kind, size text, prio or None, discard), ...)."""
    out = []
    for part in str(text).split(","):
        bits = [b.strip() for b in part.split(":")]
        where = f"--device: part {shown(part)} in {shown(text)}"
        if len(bits) < 2 or bits[0].lower() not in _CHOICES["device"]:
            raise ConfigError(f"{where}: use KIND:SIZE[:prio=N][:discard=on|off] with KIND ssd or hdd")
        kind, size, prio, disc = bits[0].lower(), bits[1], None, discard
        try:
            if parse_size(size) % PAGE_SIZE:
                raise ConfigError(f"size {shown(size)} is not a multiple of the page size {PAGE_SIZE}")
        except ConfigError as e:
            raise ConfigError(f"{where}: {str(e).removeprefix('--size: ')}") from None
        for opt in bits[2:]:
            m = re.fullmatch(r"(prio|discard)=([+-]?[0-9]{1,5}|on|off)", opt, re.ASCII | re.I)
            if not m:
                raise ConfigError(f"{where}: {shown(opt)} is neither prio=N nor discard=on|off")
            key, val = m.group(1).lower(), m.group(2).lower()
            if key == "prio":
                if val in ("on", "off") or not -1 <= int(val) <= 32767:
                    raise ConfigError(f"{where}: prio {shown(val)} is not in -1..32767")
                prio = int(val)
            elif val not in ("on", "off"):
                raise ConfigError(f"{where}: discard={shown(val)} is not on or off")
            else:
                disc = val
        out.append((kind, size, prio, disc))
    if len(out) > 32:
        raise ConfigError(f"--device: {len(out)} devices, more than MAX_SWAPFILES (32)")
    return tuple(out)


def _opt(name: str) -> str:
    return name.replace("_", "-")
