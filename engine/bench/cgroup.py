"""Run a child process inside a Linux memory cgroup (v1 or v2) with a hard limit.

Used to show that a streamed target fits where the resident one is killed. Needs root (or a
delegated, writable cgroup); `memory_cgroup` raises CgroupUnavailable otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


class CgroupUnavailable(RuntimeError):
    pass


def _create(name: str, limit_bytes: int) -> tuple[Path, str]:
    v1 = ROOT / "memory"
    if (v1 / "cgroup.procs").exists():
        group = v1 / name
        limit_file = "memory.limit_in_bytes"
    elif (ROOT / "cgroup.controllers").exists() and "memory" in (
            ROOT / "cgroup.subtree_control").read_text().split():
        group = ROOT / name
        limit_file = "memory.max"
    else:
        raise CgroupUnavailable("no memory cgroup controller at /sys/fs/cgroup")
    try:
        group.mkdir(exist_ok=True)
        (group / limit_file).write_text(str(limit_bytes))
    except OSError as e:
        raise CgroupUnavailable(f"cannot create {group}: {e.strerror or e}") from e
    return group, limit_file


@contextmanager
def memory_cgroup(limit_bytes: int, name: str | None = None) -> Iterator[dict]:
    """A fresh memory cgroup limited to `limit_bytes`; yields {"preexec_fn", "path", "peak"}.

    Pass `preexec_fn` to `subprocess.run` to start the child inside the group; `peak()` is the
    group's high-water mark where the kernel reports one (page cache included).
    """
    group, _ = _create(name or f"canopy-{os.getpid()}", limit_bytes)
    procs = group / "cgroup.procs"

    def enter() -> None:
        procs.write_text(str(os.getpid()))

    def peak() -> int | None:
        for f in ("memory.max_usage_in_bytes", "memory.peak"):
            if (group / f).exists():
                return int((group / f).read_text().split()[0])
        return None

    try:
        yield {"preexec_fn": enter, "path": group, "peak": peak}
    finally:
        try:
            group.rmdir()
        except OSError:
            pass
