"""What a benchmark ran on: platform, versions, BLAS, load."""

from __future__ import annotations

import sys
import time

from ..blas_threads import USER_SETTING, threads_for
from ..streaming.weights import page_cache_evictable


def peer_environment() -> dict:
    """The environment for a child process: this one's, minus a BLAS thread count, so mlx-lm
    runs with its defaults (all cores) and Canopy as shipped (engine.blas_threads)."""
    import os

    return {k: v for k, v in os.environ.items() if k != USER_SETTING}


def environment() -> dict:
    import os
    import platform

    import mlx.core as mx

    preload = os.environ.get("LD_PRELOAD", "")
    if sys.platform == "darwin":
        blas = "Apple Accelerate / Metal (MLX on macOS)"
    elif "openblas" in preload.lower():
        lib = next(p for p in preload.split(":") if "openblas" in p.lower())
        threads = os.environ.get(USER_SETTING)
        threads = (f"{USER_SETTING}={threads}" if threads else
                   f"threads per generation: resident {threads_for(False)}, "
                   f"streamed {threads_for(True)}; peers their default")
        blas = f"OpenBLAS ({lib}, {threads})"
    else:
        blas = "MLX CPU wheel's reference BLAS (no OpenBLAS preloaded)"
    try:
        from importlib.metadata import version

        mlx_lm_version = version("mlx-lm")
    except Exception:
        mlx_lm_version = "?"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "mlx": mx.__version__,
        "mlx_lm": mlx_lm_version,
        "blas": blas,
        "device": str(mx.default_device()),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        # what the calibration's "cold" read bandwidth is: "evicted" (page cache dropped) or,
        # where the OS cannot evict (macOS), reads of files this process has already read
        "cold_reads": "evicted" if page_cache_evictable() else "may be cached (cannot evict)",
    }


def env_load():
    import os

    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None
