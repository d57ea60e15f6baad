"""Variants of the model as policy objects chosen by configuration (DESIGN §7).

| option          | policy                         | what it decides                                    |
|-----------------|--------------------------------|----------------------------------------------------|
| ``alloc_table`` | ``SeedAllocTable`` / ``Merged``| ``swap_cluster_alloc_table`` (alloc_table.py)      |
| ``tables``      | ``DynamicTables`` / ``Static`` | whether a freed cluster gives its table back       |
| ``percpu``      | ``PercpuOn`` / ``PercpuOff``   | the per-CPU fast path and cache updates            |
| ``reclaim``     | slab / page                    | slab reclamation mode (slab.py, by geometry)       |

The device kind (``ssd``/``hdd``) and discard are the kernel's own device flags
(``SWP_SOLIDSTATE``, ``SWP_PAGE_DISCARD``) and are tested where the kernel tests them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config
from .alloc_table import MergedAllocTable, SeedAllocTable
from .cluster import swap_cluster_free_table

__all__ = ["Variant", "DynamicTables", "StaticTables", "PercpuOn", "PercpuOff"]


class DynamicTables:
    """Tables on demand (the seed): a cluster that becomes FREE frees its table."""

    name = "dynamic"
    free_clusters_have_tables = False

    def on_free_cluster(self, si, ci: int) -> None:
        swap_cluster_free_table(si, ci)


class StaticTables:
    """Every table allocated at swapon and kept until swapoff (before the patch)."""

    name = "static"
    free_clusters_have_tables = True

    def on_free_cluster(self, si, ci: int) -> None:
        return None


class PercpuOn:
    """The per-CPU cluster cache of ``struct percpu_swap_cluster``."""

    name = "on"
    enabled = True


class PercpuOff:
    """No per-CPU cache: ``swap_alloc_fast`` is skipped and ``offset[]`` is never written."""

    name = "off"
    enabled = False


@dataclass(frozen=True)
class Variant:
    alloc_table: object
    tables: object
    percpu: object
    device: str
    discard: str
    reclaim: str

    @classmethod
    def from_config(cls, cfg: Config) -> Variant:
        return cls(
            alloc_table=SeedAllocTable() if cfg.alloc_table == "seed" else MergedAllocTable(),
            tables=DynamicTables() if cfg.tables == "dynamic" else StaticTables(),
            percpu=PercpuOn() if cfg.percpu == "on" else PercpuOff(),
            device=cfg.device, discard=cfg.discard, reclaim=cfg.reclaim,
        )

    def as_dict(self) -> dict[str, str]:
        return {"alloc_table": self.alloc_table.name, "tables": self.tables.name,
                "percpu": self.percpu.name, "device": self.device, "discard": self.discard,
                "reclaim": self.reclaim}

    def describe(self) -> str:
        d = self.as_dict()
        return ", ".join(f"{k}={v}" for k, v in d.items())
