"""What the OS and MLX say this process holds right now: RSS, open fds, threads, MLX memory.

Linux reads /proc/self; macOS asks `ps` for the RSS and lists /dev/fd. No psutil needed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass

import mlx.core as mx


@dataclass(frozen=True)
class ProcessSample:
    rss_bytes: int  # resident set size now (not the high-water mark)
    open_fds: int
    threads: int  # Python threads (threading.active_count)
    os_threads: int  # kernel threads, including MLX's and BLAS's own pools
    mlx_active_bytes: int
    mlx_cache_bytes: int


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        pass
    out = subprocess.run(["ps", "-o", "rss=", "-p", str(os.getpid())], capture_output=True,
                         text=True, check=True).stdout
    return int(out.strip()) * 1024  # ps reports KiB


def open_fds() -> int:
    folder = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    return len(os.listdir(folder)) - 1  # listdir's own descriptor


def os_threads() -> int:
    if os.path.isdir("/proc/self/task"):
        return len(os.listdir("/proc/self/task"))
    if sys.platform == "darwin":
        out = subprocess.run(["ps", "-M", "-p", str(os.getpid())], capture_output=True,
                             text=True).stdout
        return max(1, len(out.strip().splitlines()) - 1)
    return threading.active_count()


def sample_process() -> ProcessSample:
    return ProcessSample(
        rss_bytes=rss_bytes(),
        open_fds=open_fds(),
        threads=threading.active_count(),
        os_threads=os_threads(),
        mlx_active_bytes=int(mx.get_active_memory()),
        mlx_cache_bytes=int(mx.get_cache_memory()),
    )


def available_bytes() -> int:
    """Memory another process could take now: Linux's MemAvailable; elsewhere (macOS) the
    physical memory less this process's RSS (`sysctl hw.memsize`), an upper estimate."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    out = subprocess.run(["sysctl", "-n", "hw.memsize"], capture_output=True, text=True,
                         check=True).stdout
    return int(out.strip()) - rss_bytes()
