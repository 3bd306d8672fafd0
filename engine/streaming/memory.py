"""Memory as the OS sees it: the process high-water mark and MLX's buffer cache.

MLX keeps freed buffers in a cache for reuse; a streamed target frees a layer's buffers every
pass, so without a cap the cache (and the process) grows towards the whole model.
"""

from __future__ import annotations

import re
import resource
import sys
import threading

import mlx.core as mx

_caps: dict[object, int] = {}  # live caps of streamed models (MLX's cache limit is global)
_mlx_own_limit = 0  # MLX's limit before the first cap, restored when the last one goes
_lock = threading.Lock()


def peak_rss_bytes() -> int:
    """The process's peak resident set size, as the OS counts it.

    Linux: VmHWM of /proc/self/status (the current program's high-water mark); not ru_maxrss,
    which keeps the parent's high-water mark across fork + exec, so a child started by a large
    process would report the parent's peak. macOS: ru_maxrss (bytes there)."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/self/status") as f:
                m = re.search(r"^VmHWM:\s+(\d+)\s+kB", f.read(), re.M)
            if m:
                return int(m.group(1)) * 1024
        except OSError:
            pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def reset_peak_rss() -> bool:
    """Restart the process's high-water mark from its current RSS (Linux: /proc/self/clear_refs
    "5"), so a later `peak_rss_bytes` covers only what ran since. False where the OS cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _apply_caps() -> None:
    limits = list(_caps.values()) + ([_mlx_own_limit] if _mlx_own_limit > 0 else [])
    limit = min(limits) if _caps else _mlx_own_limit
    mx.set_cache_limit(limit)
    if _caps and mx.get_cache_memory() > limit:
        mx.clear_cache()


def cap_buffer_cache(limit_bytes: int) -> object:
    """Cap MLX's buffer cache at `limit_bytes` while a streamed model lives (never raising a
    lower cap: the tightest live cap, or MLX's own lower limit, wins) and trim what it holds
    beyond that. Returns a handle for `release_buffer_cache_cap`; caps may be released in any
    order (two streamed sessions open at once), and MLX's own limit returns with the last."""
    global _mlx_own_limit
    handle = object()
    with _lock:
        if not _caps:
            _mlx_own_limit = mx.set_cache_limit(limit_bytes)  # read MLX's own limit
        _caps[handle] = limit_bytes
        _apply_caps()
    return handle


def release_buffer_cache_cap(handle: object) -> None:
    with _lock:
        if _caps.pop(handle, None) is not None:
            _apply_caps()
