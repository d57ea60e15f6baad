"""Worker-side code of shmswap: the workload a CPU runs (and, with the runtime, the process entry points)."""
