"""The subcommands of ``shmswap``, one module each (presentation layer)."""
