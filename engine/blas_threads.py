"""How many threads MLX's CPU matmuls use, chosen per generation.

On Linux MLX's CPU matmuls go through OpenBLAS (preloaded by the launcher, `app/blas.py`),
whose thread count can change at run time. Measured here (2 cores, Qwen2.5-Coder 1.5B fp32
target): resident, a 1-token forward takes 797 ms with 1 thread and 388 ms with 2 (the 0.5B
draft 241 -> 147 ms); streamed at a 50 % budget, ar ran at 0.175 tok/s with 1 thread and
0.113 with 2 (OpenBLAS's spinning workers starve the IO thread that reads layers). So a
resident target gets every core, a streamed one leaves a core to its IO thread.

On macOS MLX computes on the GPU (Metal) and its CPU matmuls use Accelerate, which has no such
switch: there, and wherever the OpenBLAS symbols are absent, this is a no-op. A user's own
OPENBLAS_NUM_THREADS is respected as given.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Mapping

USER_SETTING = "OPENBLAS_NUM_THREADS"


@functools.cache
def _openblas() -> tuple | None:
    """OpenBLAS's (set, get) thread functions if the process has OpenBLAS loaded."""
    try:
        lib = ctypes.CDLL(None)  # the process's global symbols, LD_PRELOAD included
    except OSError:
        return None
    setter = getattr(lib, "openblas_set_num_threads", None)
    getter = getattr(lib, "openblas_get_num_threads", None)
    if setter is None or getter is None:
        return None
    setter.argtypes, getter.restype = [ctypes.c_int], ctypes.c_int
    return setter, getter


def blas_threads() -> int | None:
    """Threads OpenBLAS uses now, or None where MLX's matmuls do not go through OpenBLAS."""
    fns = _openblas()
    return None if fns is None else int(fns[1]())


def threads_for(streamed: bool, cores: int | None = None) -> int:
    """All cores for a resident target; one left to the IO thread while streaming."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores - 1) if streamed else cores


def use_blas_threads(streamed: bool, environ: Mapping[str, str] = os.environ) -> int | None:
    """Set OpenBLAS's threads for a generation on a resident or streamed target.

    Returns the count in use (None without OpenBLAS). A user's OPENBLAS_NUM_THREADS wins.
    """
    fns = _openblas()
    if fns is None:
        return None
    if USER_SETTING not in environ:
        wanted = threads_for(streamed)
        if int(fns[1]()) != wanted:
            fns[0](wanted)
    return int(fns[1]())
