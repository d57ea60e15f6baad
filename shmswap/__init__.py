"""shmswap: a shared-memory model of the Linux swap-slot allocator with dynamic swap tables.

``shmswap.run(Config(...))`` runs the model once and returns a ``Result``; ``shmswap run`` is the
command line.  The modules mirror the kernel's concepts: ``cluster`` (swap_cluster_info and its
lists), ``allocator`` and ``swap_free`` (mm/swapfile.c), ``alloc_table`` (swap_cluster_alloc_table
and its variants), ``swap_table`` and ``swap_cache`` (mm/swap_table.h, mm/swap_state.c), ``slab``
and ``rcu`` (the table slab and grace periods), ``checker`` (the invariants).
"""

from .config import Config, ConfigError


def run(config: Config):
    """Run the model once as ``shmswap run`` does (a manager and CPU worker processes); a ``Result``."""
    from .runtime import run_multiprocess
    return run_multiprocess(config)


__all__ = ["Config", "ConfigError", "run"]
