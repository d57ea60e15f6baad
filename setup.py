"""Build the one C module: atomics and the lock over shared-memory words (DESIGN §3)."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("shmswap._prim", ["shmswap/_prim.c"], extra_compile_args=["-O2", "-std=gnu11"])])
