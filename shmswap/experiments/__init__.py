"""Experiments over many runs: sweeps, race studies, memory comparisons (above the runners)."""
