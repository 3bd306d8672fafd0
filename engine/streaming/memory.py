"""Memory as the OS sees it: the process high-water mark and MLX's buffer cache.

MLX keeps freed buffers in a cache for reuse; a streamed target frees a layer's buffers every
pass, so without a cap the cache (and the process) grows towards the whole model.
"""

from __future__ import annotations

import resource
import sys

import mlx.core as mx


def peak_rss_bytes() -> int:
    """The process's peak resident set size (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def cap_buffer_cache(limit_bytes: int) -> int:
    """Cap MLX's buffer cache at `limit_bytes` (never raising an existing lower cap) and trim
    what it holds beyond that; returns the previous cap (to restore when streaming ends)."""
    previous = mx.set_cache_limit(limit_bytes)
    mx.set_cache_limit(min(limit_bytes, previous) if previous > 0 else limit_bytes)
    if mx.get_cache_memory() > limit_bytes:
        mx.clear_cache()
    return previous
