"""shmswap: a shared-memory model of the Linux swap-slot allocator with dynamic swap tables.

The package's layers, lowest first (each imports only from below; ``.importlinter`` holds it):

* ``config``: the validated configuration;
* ``substrate``: the shared-memory substrate (the C module of atomics and locks, segments, record
  layouts, statistics, preemption points and the observer protocol, run control);
* ``mm``: the kernel model, one module per kernel concept (mm/swapfile.c, mm/swap_state.c,
  mm/swap_table.h, include/linux/swap.h), named after the kernel's directory;
* ``checks``: the invariant checker, the oracles, the faults;
* ``result``, ``model`` (the public model API), ``finish`` (the end of every run), ``report``;
* ``workers`` (a top-level package): the manager and CPU worker processes and the workload;
* ``runner``: the multiprocess driver and the single-process runner; ``cli`` on top.

``shmswap.run(Config(...))`` runs the model as ``shmswap run`` does and returns a ``Result``;
``shmswap.Model`` drives it step by step in one process.
"""

from .config import Config, ConfigError
from .model import Allocation, Model, Snapshot
from .result import Result
from .runner.driver import run_multiprocess as run
from .runner.inprocess import run_inprocess
from .substrate.observe import Observer

__all__ = ["Config", "ConfigError", "Model", "Allocation", "Snapshot", "Observer", "Result", "run", "run_inprocess"]
