"""Constants of include/linux/swap.h and mm/swap.h: device flags, map bytes, cluster flags.

A leaf module: every other module of the kernel model takes its constants from here, so no
module has to import another (or copy a literal) just to test a flag.

| name                     | kernel                              | meaning                                   |
|--------------------------|-------------------------------------|-------------------------------------------|
| ``SWP_*``                | ``enum`` in include/linux/swap.h    | ``si->flags``                             |
| ``SWAP_USAGE_OFFLIST_BIT``| mm/swapfile.c                      | set in ``inuse_pages`` while off the avail list |
| ``SWAP_HAS_CACHE`` ...   | include/linux/swap.h                | ``swap_map`` byte values                  |
| ``CLUSTER_FLAG_*``       | mm/swap.h                           | which list a cluster is on (NONE: isolated) |
| ``TTRS_*``               | mm/swapfile.c                       | ``__try_to_reclaim_swap`` flags           |
| ``NULL_TABLE``           | (model)                             | a cluster's table handle when ``ci->table`` is NULL |
"""

from __future__ import annotations

__all__ = [
    "SWP_USED", "SWP_WRITEOK", "SWP_SOLIDSTATE", "SWP_PAGE_DISCARD", "SWP_BLKDEV",
    "SWAP_USAGE_OFFLIST_BIT", "SWAP_USAGE_COUNTER_MASK",
    "SWAP_MAP_MAX", "SWAP_MAP_BAD", "SWAP_HAS_CACHE", "SWAP_MAP_SHMEM",
    "CLUSTER_FLAG_NONE", "CLUSTER_FLAG_FREE", "CLUSTER_FLAG_NONFULL", "CLUSTER_FLAG_FRAG",
    "CLUSTER_FLAG_USABLE", "CLUSTER_FLAG_FULL", "CLUSTER_FLAG_DISCARD", "FLAG_NAMES",
    "TTRS_ANYWAY", "TTRS_UNMAPPED", "TTRS_FULL", "NULL_TABLE", "KernelBug", "SWP_TYPE_SHIFT", "SWP_OFFSET_MASK",
]

# swp_entry_t: the device's type above the offset (the model's encoding: type << 48 | offset)
SWP_TYPE_SHIFT = 48
SWP_OFFSET_MASK = (1 << SWP_TYPE_SHIFT) - 1     # swp_offset()

# si->flags
SWP_USED, SWP_WRITEOK, SWP_SOLIDSTATE, SWP_PAGE_DISCARD, SWP_BLKDEV = 1, 2, 4, 8, 16

# si->inuse_pages
SWAP_USAGE_OFFLIST_BIT = 1 << 30
SWAP_USAGE_COUNTER_MASK = SWAP_USAGE_OFFLIST_BIT - 1

# swap_map bytes
SWAP_MAP_MAX = 0x3E
SWAP_MAP_BAD = 0x3F
SWAP_HAS_CACHE = 0x40
SWAP_MAP_SHMEM = 0xBF

# swap_cluster_info.flags
CLUSTER_FLAG_NONE = 0
CLUSTER_FLAG_FREE = 1
CLUSTER_FLAG_NONFULL = 2
CLUSTER_FLAG_FRAG = 3
CLUSTER_FLAG_USABLE = CLUSTER_FLAG_FRAG
CLUSTER_FLAG_FULL = 4
CLUSTER_FLAG_DISCARD = 5
FLAG_NAMES = {0: "NONE", 1: "FREE", 2: "NONFULL", 3: "FRAG", 4: "FULL", 5: "DISCARD"}

# __try_to_reclaim_swap
TTRS_ANYWAY, TTRS_UNMAPPED, TTRS_FULL = 1, 2, 4

NULL_TABLE = -1


class KernelBug(AssertionError):
    """A BUG_ON / VM_BUG_ON of the kernel fired: the model reached a state the kernel forbids."""
