"""Build the one C module: atomics and the lock over shared-memory words (DESIGN §3)."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("shmswap.substrate._prim", ["shmswap/substrate/_prim.c"],
                             extra_compile_args=["-O2", "-std=gnu11"])])
