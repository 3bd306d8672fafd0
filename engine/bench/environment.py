"""What a benchmark ran on: platform, versions, BLAS, load."""

from __future__ import annotations

import sys
import time

from ..streaming.weights import page_cache_evictable


def environment() -> dict:
    import os
    import platform

    import mlx.core as mx

    preload = os.environ.get("LD_PRELOAD", "")
    if sys.platform == "darwin":
        blas = "Apple Accelerate / Metal (MLX on macOS)"
    elif "openblas" in preload.lower():
        lib = next(p for p in preload.split(":") if "openblas" in p.lower())
        blas = f"OpenBLAS ({lib}, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')})"
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
