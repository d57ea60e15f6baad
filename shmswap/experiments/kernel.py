"""The live kernel's side of the twin: a dedicated zram swap device driven from this process.

``preflight(device)`` refuses, with a one-line ``Refused``, to run when: not root; the kernel is
older than 6.18; there is no free zram device (``/sys/block/zramN`` with ``disksize`` 0); another
swap device is active and no device was named (``device=`` names a dedicated one; ours then gets
the highest priority).  ``KernelSwap`` then runs a scenario::

    with KernelSwap(scenario, "zram0") as k:
        for i, op in enumerate(scenario.ops):
            k.op(i, op)                        # alloc: pin, touch, MADV_PAGEOUT, read pagemap; free: MADV_DONTNEED
        k.replay.slots                         # each folio's slots, one per page (None: stayed in memory)

    with KernelSwap(cost_scenario(order, folios), "zram0") as k:
        k.pageout_cost("random")               # shmswap twin --cost: the timed MADV_PAGEOUT of each folio

Setting up: ``disksize`` (the scenario's size), a version-1 swap header written here (``last_page``,
the bad-page list at byte 1536, ``SWAPSPACE2`` at 4086), ``queue/rotational`` 1 for an HDD,
``swapon`` with a fixed priority (and ``SWAP_FLAG_DISCARD_PAGES`` when the scenario asks).  Each
allocation pins this task to the op's CPU (``sched_setaffinity``: ``MADV_PAGEOUT`` allocates in the
caller's context, so that CPU's per-CPU cluster cache is the one used), touches a fresh anonymous
region of 2^order pages (a large folio: only ``hugepages-<size>kB/enabled`` set to ``madvise``,
``MADV_HUGEPAGE`` on that region, the folio's order checked in ``/proc/kpageflags``, then
``MADV_NOHUGEPAGE``), pages it out and reads each page's slot from ``/proc/self/pagemap``.  After
every op the device's ``Used`` in ``/proc/swaps`` must equal the pages this process holds there:
anything else means another task (the DAMON pageout scheme's kdamond) swapped onto the device,
and ``Disturbed`` is raised so the caller reruns the scenario.

Restoring, in every case (normal end, an exception, SIGINT, SIGTERM: the signals are turned into
exceptions while a device is set up and blocked while restoring): the mappings are zapped and
unmapped, swapoff, ``reset`` of the zram device, ``rotational``, every THP size setting touched,
the CPU affinity and the signal handlers as they were.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import signal
import struct
import time

from ..config import PAGE_SIZE
from .twin import Replay, Scenario

__all__ = ["Refused", "KernelError", "Disturbed", "Terminated", "preflight", "KernelSwap", "swap_header",
           "proc_swaps", "free_zram_devices", "MIN_KERNEL", "COST_DATA", "comp_algorithm"]

MIN_KERNEL = (6, 18)
MADV_DONTNEED, MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_PAGEOUT = 4, 14, 15, 21
PROT_READ, PROT_WRITE = 1, 2
MAP_PRIVATE, MAP_ANONYMOUS, MAP_NORESERVE = 0x02, 0x20, 0x4000
SWAP_FLAG_PREFER, SWAP_FLAG_DISCARD, SWAP_FLAG_DISCARD_PAGES = 0x8000, 0x10000, 0x40000
PRIORITY = 32767
KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL = 15, 16
PM_PRESENT, PM_SWAP = 1 << 63, 1 << 62
PMD_PAGES = 512
THP = "/sys/kernel/mm/transparent_hugepage"
FOLIO_TRIES = 4
COST_DATA = ("random", "zeros")   # what pageout_cost fills the pages with

_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.mmap.restype = ctypes.c_void_p
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.swapon.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.swapoff.argtypes = [ctypes.c_char_p]
_libc.sched_getcpu.restype = ctypes.c_int


class Refused(RuntimeError):
    """The machine cannot run the twin (one line: why)."""


class KernelError(RuntimeError):
    """The kernel side failed (a syscall, a folio of the wrong order, lost accounting)."""


class Disturbed(KernelError):
    """Another task used the device during the scenario: rerun it."""


class Terminated(BaseException):
    """SIGTERM arrived while a device was set up (restored before this propagates)."""


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def proc_swaps() -> list[dict]:
    """``/proc/swaps`` as dicts: name, type, size_kb, used_kb, priority."""
    out = []
    for line in _read("/proc/swaps").splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 5:
            out.append({"name": parts[0], "type": parts[1], "size_kb": int(parts[2]), "used_kb": int(parts[3]),
                        "priority": int(parts[4])})
    return out


def free_zram_devices() -> list[str]:
    """zram devices with no disk size (free to set up), in name order."""
    try:
        names = sorted(n for n in os.listdir("/sys/block") if re.fullmatch(r"zram[0-9]+", n))
    except OSError:
        return []
    return [n for n in names if _read(f"/sys/block/{n}/disksize") == "0"]


def comp_algorithm(device: str) -> str:
    """The zram device's compression algorithm (the bracketed one), or '' if unknown."""
    try:
        m = re.search(r"\[([^\]]+)\]", _read(f"/sys/block/{device}/comp_algorithm"))
    except OSError:
        return ""
    return m.group(1) if m else ""


def preflight(device: str | None = None) -> str:
    """The zram device to use, or ``Refused`` naming why the twin cannot run here."""
    if os.geteuid() != 0:
        raise Refused("the kernel twin needs root (swapon, /sys/block/zram*, /proc/kpageflags)")
    release = os.uname().release
    m = re.match(r"([0-9]+)\.([0-9]+)", release)
    if not m or (int(m.group(1)), int(m.group(2))) < MIN_KERNEL:
        raise Refused(f"kernel {release!r} is older than {MIN_KERNEL[0]}.{MIN_KERNEL[1]}, "
                      "whose allocator the model follows")
    swaps = proc_swaps()
    if device is not None:
        if not re.fullmatch(r"zram[0-9]+", device):
            raise Refused(f"--device: {device!r} is not a zram device name (zram0, zram1, ...)")
        if not os.path.isdir(f"/sys/block/{device}"):
            raise Refused(f"--device: {device!r} does not exist (modprobe zram)")
        if device not in free_zram_devices():
            raise Refused(f"--device: {device!r} is in use (disksize {_read(f'/sys/block/{device}/disksize')})")
        return device
    if swaps:
        raise Refused(f"another swap device is active ({swaps[0]['name']}): its allocations would mix with "
                      "the twin's; swap it off or name a dedicated device with --device")
    free = free_zram_devices()
    if not free:
        raise Refused("no free zram device (modprobe zram, or reset one: echo 1 > /sys/block/zram0/reset)")
    return free[0]


def swap_header(pages: int, bad_pages) -> bytes:
    """A version-1 swap header page: ``last_page`` = pages - 1 and the bad-page list."""
    page = bytearray(PAGE_SIZE)
    bad = list(bad_pages)
    struct.pack_into("<III", page, 1024, 1, pages - 1, len(bad))
    struct.pack_into(f"<{len(bad)}I", page, 1536, *bad)
    page[PAGE_SIZE - 10:] = b"SWAPSPACE2"
    return bytes(page)


def _errno_text(what: str) -> str:
    e = ctypes.get_errno()
    return f"{what}: {os.strerror(e)} (errno {e})"


class KernelSwap:
    """A scenario's device on the live kernel (see the module docstring); a context manager."""

    def __init__(self, scenario: Scenario, device: str) -> None:
        self.s = scenario
        self.device = device
        self.path = f"/dev/{device}"
        self.sys = f"/sys/block/{device}"
        self.replay = Replay()
        self.cpu_ids = sorted(os.sched_getaffinity(0))
        if scenario.cpus > len(self.cpu_ids):
            raise Refused(f"scenario {scenario.name!r} needs {scenario.cpus} CPUs; this process may use "
                          f"{len(self.cpu_ids)}")
        if scenario.orders - {0} and not os.path.exists(f"{THP}/hugepages-{4 << max(scenario.orders)}kB/enabled"):
            raise Refused(f"scenario {scenario.name!r} needs order-{max(scenario.orders)} folios: "
                          f"{THP}/hugepages-{4 << max(scenario.orders)}kB/enabled is missing")
        self._saved_affinity = os.sched_getaffinity(0)
        self._saved_rotational: str | None = None
        self._saved_thp: dict[str, str] = {}
        self._thp_order: int | None = None
        self._handlers: dict[int, object] = {}
        self._swapped_on = False
        self._sized = False
        self._arena = 0
        self._arena_len = 0
        self._pagemap = -1
        self._kpageflags = -1
        self._next = 0                          # the arena's next free page
        self._regions: list[tuple[int, int]] = []   # per folio: its address and pages
        self._held: list[int] = []              # per folio: pages swapped out on the device
        self.type: int | None = None            # the device's swap type, from the first swapped page

    # -- setting up and restoring ----------------------------------------------------------------------
    def __enter__(self) -> KernelSwap:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._handlers[sig] = signal.getsignal(sig)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            self._setup()
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    @staticmethod
    def _on_sigterm(signum, frame) -> None:
        raise Terminated()

    def _setup(self) -> None:
        s = self.s
        self._saved_rotational = _read(f"{self.sys}/queue/rotational")
        if s.kind == "hdd":
            _write(f"{self.sys}/queue/rotational", "1")
        elif self._saved_rotational != "0":
            _write(f"{self.sys}/queue/rotational", "0")
        self._sized = True
        _write(f"{self.sys}/disksize", str(s.pages * PAGE_SIZE))
        with open(self.path, "r+b", buffering=0) as f:
            f.write(swap_header(s.pages, s.bad_pages))
            os.fsync(f.fileno())
        flags = SWAP_FLAG_PREFER | PRIORITY
        if s.discard:
            flags |= SWAP_FLAG_DISCARD | SWAP_FLAG_DISCARD_PAGES
        if _libc.swapon(self.path.encode(), flags) != 0:
            raise KernelError(_errno_text(f"swapon {self.path}"))
        self._swapped_on = True
        me = self._swap_line()
        want = (s.pages - 1 - len(s.bad_pages)) * 4
        if me["size_kb"] != want:
            raise KernelError(f"{self.path}: /proc/swaps Size {me['size_kb']} kB, the header asks for {want} kB")
        if me["used_kb"]:
            raise Disturbed(f"{self.path}: {me['used_kb']} kB used before the first operation")
        pages = sum(2 << o for o in s.folios) + 2 * PMD_PAGES     # room for every folio, aligned
        self._arena_len = pages * PAGE_SIZE
        addr = _libc.mmap(None, self._arena_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                          -1, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            self._arena_len = 0
            raise KernelError(_errno_text("mmap of the folios' arena"))
        self._arena = addr
        self._next = 0
        self._pagemap = os.open("/proc/self/pagemap", os.O_RDONLY)
        if s.orders - {0}:
            self._kpageflags = os.open("/proc/kpageflags", os.O_RDONLY)

    def _restore(self) -> None:
        """Undo every setting, whatever state the setup reached; signals are blocked meanwhile."""
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        errors: list[str] = []
        try:
            if self._arena:
                _libc.madvise(self._arena, self._arena_len, MADV_DONTNEED)
                _libc.munmap(self._arena, self._arena_len)
                self._arena = 0
            for fd in (self._pagemap, self._kpageflags):
                if fd >= 0:
                    os.close(fd)
            self._pagemap = self._kpageflags = -1
            if self._swapped_on:
                for attempt in range(50):
                    if _libc.swapoff(self.path.encode()) == 0:
                        self._swapped_on = False
                        break
                    if ctypes.get_errno() == errno.EINVAL and not any(
                            x["name"] == self.path for x in proc_swaps()):
                        self._swapped_on = False
                        break
                    time.sleep(0.02 * (attempt + 1))
                else:
                    errors.append(_errno_text(f"swapoff {self.path}"))
            if self._sized and not self._swapped_on:
                for attempt in range(50):
                    try:
                        _write(f"{self.sys}/reset", "1")
                        self._sized = False
                        break
                    except OSError:
                        time.sleep(0.02 * (attempt + 1))
                else:
                    errors.append(f"echo 1 > {self.sys}/reset failed")
            if self._saved_rotational is not None:
                try:
                    if _read(f"{self.sys}/queue/rotational") != self._saved_rotational:
                        _write(f"{self.sys}/queue/rotational", self._saved_rotational)
                except OSError as e:
                    errors.append(f"{self.sys}/queue/rotational: {e}")
            for path, value in self._saved_thp.items():
                try:
                    _write(path, value)
                except OSError as e:
                    errors.append(f"{path}: {e}")
            self._saved_thp.clear()
            self._thp_order = None
            os.sched_setaffinity(0, self._saved_affinity)
            for sig, handler in self._handlers.items():
                signal.signal(sig, handler)
            self._handlers.clear()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        if errors:
            raise KernelError("could not restore the machine: " + "; ".join(errors))

    # -- the operations ------------------------------------------------------------------------------------
    def op(self, index: int, op: dict) -> None:
        """Run one op of the scenario, then check the device's accounting."""
        self._pin(op["cpu"])
        if "alloc" in op:
            for _ in range(op["alloc"]):
                self._alloc(index, op["order"])
        else:
            for f in op["free"]:
                addr, n = self._regions[f]
                if _libc.madvise(addr, n * PAGE_SIZE, MADV_DONTNEED) != 0:
                    raise KernelError(_errno_text(f"MADV_DONTNEED of folio {f}"))
                self._held[f] = 0
            if self.s.discard:
                self._settle_discard()
        held = sum(self._held)
        self.replay.usage.append(held)
        used = self._swap_line()["used_kb"]
        if used != held * 4:
            raise Disturbed(f"after op {index}: {self.path} has {used} kB used, this process holds {held * 4} kB")

    def _pin(self, cpu: int) -> None:
        real = self.cpu_ids[cpu]
        os.sched_setaffinity(0, {real})
        if _libc.sched_getcpu() != real:
            os.sched_yield()
            if _libc.sched_getcpu() != real:
                raise KernelError(f"pinned to CPU {real} but running on CPU {_libc.sched_getcpu()}")

    def _set_thp(self, order: int) -> None:
        """Only the size of ``order`` enabled (``madvise``); every size touched is restored later."""
        if self._thp_order == order:
            return
        for name in sorted(os.listdir(THP)):
            path = f"{THP}/{name}/enabled"
            if not name.startswith("hugepages-") or not os.path.exists(path):
                continue
            want = "madvise" if name == f"hugepages-{4 << order}kB" else "never"
            current = re.search(r"\[(\w+)\]", _read(path)).group(1)
            if current != want:
                self._saved_thp.setdefault(path, current)
                _write(path, want)
        self._thp_order = order

    def _region(self, order: int) -> int:
        n = 1 << order
        self._next += (-(self._arena // PAGE_SIZE + self._next)) % n     # naturally aligned
        page = self._next
        self._next += n
        if self._next * PAGE_SIZE > self._arena_len:
            raise KernelError("the folios' arena is exhausted")
        return self._arena + page * PAGE_SIZE

    def _pagemap_entries(self, addr: int, n: int) -> tuple[int, ...]:
        raw = os.pread(self._pagemap, 8 * n, (addr // PAGE_SIZE) * 8)
        return struct.unpack(f"<{n}Q", raw)

    def _folio_order_ok(self, addr: int, order: int) -> bool:
        n = 1 << order
        ents = self._pagemap_entries(addr, n)
        if not all(e & PM_PRESENT for e in ents):
            return False
        pfns = [e & ((1 << 55) - 1) for e in ents]
        if pfns[0] % n or pfns != list(range(pfns[0], pfns[0] + n)):
            return False
        flags = struct.unpack(f"<{n}Q", os.pread(self._kpageflags, 8 * n, pfns[0] * 8))
        return bool(flags[0] >> KPF_COMPOUND_HEAD & 1) and all(f >> KPF_COMPOUND_TAIL & 1 for f in flags[1:])

    def _touch(self, addr: int, n: int, fill: int) -> None:
        for k in range(n):
            ctypes.memset(addr + k * PAGE_SIZE, fill, 1)

    def _make_folio(self, fid: int, order: int, fill: int) -> int:
        """A fresh folio of ``order`` (each page's first byte written with ``fill``): its address."""
        n = 1 << order
        addr = self._region(order)
        length = n * PAGE_SIZE
        if order:
            self._set_thp(order)
            for _ in range(FOLIO_TRIES):
                if _libc.madvise(addr, length, MADV_HUGEPAGE) != 0:
                    raise KernelError(_errno_text(f"MADV_HUGEPAGE of folio {fid}"))
                self._touch(addr, n, fill)
                if self._folio_order_ok(addr, order):
                    break
                _libc.madvise(addr, length, MADV_DONTNEED)
                time.sleep(0.01)
            else:
                raise KernelError(f"could not make an order-{order} folio ({4 << order} kB) for folio {fid}: "
                                  "memory too fragmented?")
            if _libc.madvise(addr, length, MADV_NOHUGEPAGE) != 0:
                raise KernelError(_errno_text(f"MADV_NOHUGEPAGE of folio {fid}"))
        else:
            self._touch(addr, 1, fill)
        return addr

    def _alloc(self, index: int, order: int) -> None:
        fid = len(self.replay.slots)
        n = 1 << order
        length = n * PAGE_SIZE
        addr = self._make_folio(fid, order, 1 + fid % 251)
        if _libc.madvise(addr, length, MADV_PAGEOUT) != 0:
            raise KernelError(_errno_text(f"MADV_PAGEOUT of folio {fid}"))
        slots = self._slots(fid, addr, n)
        self.replay.slots.append(slots)
        self.replay.folio_op.append(index)
        self._regions.append((addr, n))
        self._held.append(sum(s is not None for s in slots))

    def _slots(self, fid: int, addr: int, n: int) -> list[int | None]:
        """Each page's swap offset from pagemap (None: still in memory), on the twin's device."""
        slots: list[int | None] = []
        for page, e in enumerate(self._pagemap_entries(addr, n)):
            if e & PM_SWAP:
                typ, off = e & 31, (e >> 5) & ((1 << 50) - 1)
                if self.type is None:
                    self.type = typ
                if typ != self.type:
                    raise KernelError(f"folio {fid} page {page} went to swap type {typ}, not the twin's "
                                      f"device (type {self.type}): the model has one device")
                slots.append(off)
            elif e & PM_PRESENT:
                slots.append(None)
            else:
                raise KernelError(f"folio {fid} page {page} is neither in memory nor swapped (pagemap {e:#x})")
        return slots

    def pageout_cost(self, data: str = "random") -> dict:
        """The scenario's folios (one alloc op: ``cost_scenario``) paged out on its CPU, each by its
        own timed ``MADV_PAGEOUT``, then zapped (``MADV_DONTNEED``, not timed).

        Every folio is made first (its order checked) and filled with ``data``: ``random`` (bytes
        from ``os.urandom``, new for every page: zram tries to compress each page and stores it
        whole) or ``zeros`` (zram's same-filled pages: nothing compressed or stored).  Returns
        ``ns`` (the sum of the timed calls), ``folios``, ``pages``, ``swapped_pages``,
        ``whole_folios`` (every page swapped, onto consecutive slots) and ``max_folio_ns``.
        ``Disturbed`` when the device's Used is not the pages swapped."""
        if data not in COST_DATA:
            raise ValueError(f"data {data!r} is not one of {COST_DATA}")
        if len(self.s.ops) != 1 or "alloc" not in self.s.ops[0]:
            raise ValueError(f"scenario {self.s.name!r} is not one alloc op (cost_scenario)")
        op = self.s.ops[0]
        order, count = op["order"], op["alloc"]
        n = 1 << order
        length = n * PAGE_SIZE
        self._pin(op["cpu"])
        addrs = []
        for fid in range(count):
            addr = self._make_folio(fid, order, 0 if data == "zeros" else 1)
            if data == "random":
                ctypes.memmove(addr, os.urandom(length), length)
            addrs.append(addr)
            self._regions.append((addr, n))
            self._held.append(0)
        madvise, clock = _libc.madvise, time.perf_counter_ns
        times = []
        for fid, addr in enumerate(addrs):
            t0 = clock()
            rc = madvise(addr, length, MADV_PAGEOUT)
            t1 = clock()
            if rc != 0:
                raise KernelError(_errno_text(f"MADV_PAGEOUT of folio {fid}"))
            times.append(t1 - t0)
        swapped = whole = 0
        for fid, addr in enumerate(addrs):
            slots = self._slots(fid, addr, n)
            self._held[fid] = k = sum(s is not None for s in slots)
            swapped += k
            whole += k == n and slots == list(range(slots[0], slots[0] + n))
        used = self._swap_line()["used_kb"]
        if used != swapped * 4:
            raise Disturbed(f"{self.path} has {used} kB used after the pageouts; {swapped * 4} kB are this process's")
        for fid, addr in enumerate(addrs):
            if _libc.madvise(addr, length, MADV_DONTNEED) != 0:
                raise KernelError(_errno_text(f"MADV_DONTNEED of folio {fid}"))
            self._held[fid] = 0
        return {"ns": sum(times), "folios": count, "pages": count * n, "swapped_pages": swapped,
                "whole_folios": whole, "max_folio_ns": max(times)}

    def _settle_discard(self) -> None:
        """Wait for the discard work a free queued: the device's discard counter stops moving."""
        last, still = None, 0
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            fields = _read(f"{self.sys}/stat").split()
            now = tuple(fields[11:15]) if len(fields) >= 15 else ()
            still = still + 1 if now == last else 0
            if still >= 3:
                return
            last = now
            time.sleep(0.002)

    def _swap_line(self) -> dict:
        for x in proc_swaps():
            if x["name"] == self.path:
                return x
        raise KernelError(f"{self.path} is not in /proc/swaps")

