"""A bounded sample of a stream of values, for percentiles over a run of any length.

The manager runs a grace period every 20 ms, for as long as the run lasts; keeping every latency
grows its memory by ~120 KB a minute, forever.  ``Reservoir`` keeps every value until it holds
``capacity`` of them (short runs: exact percentiles), then a uniform random sample of everything
seen (Vitter's algorithm R), in one preallocated int64 array: its memory never grows.
"""

from __future__ import annotations

import random

import numpy as np

__all__ = ["Reservoir"]

DEFAULT_CAPACITY = 8192


class Reservoir:
    """``append(v)``; ``len()`` values kept; ``seen`` values offered; ``np.asarray(r)`` the sample."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._buf = np.zeros(capacity, dtype=np.int64)
        self._n = 0
        self.seen = 0
        self._rng = random.Random(seed)

    def append(self, value: int) -> None:
        self.seen += 1
        if self._n < self.capacity:
            self._buf[self._n] = value
            self._n += 1
            return
        j = self._rng.randrange(self.seen)
        if j < self.capacity:
            self._buf[j] = value

    def values(self) -> np.ndarray:
        """The kept values (a copy): all of them while ``seen <= capacity``."""
        return self._buf[:self._n].copy()

    def percentile(self, q: float) -> float:
        return float(np.percentile(self._buf[:self._n], q)) if self._n else 0.0

    def clear(self) -> None:
        self._n = self.seen = 0

    def __len__(self) -> int:
        return self._n

    def __iter__(self):
        return iter(self._buf[:self._n].tolist())

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self._buf[:self._n]
        return out.astype(dtype) if dtype is not None else out.copy()
