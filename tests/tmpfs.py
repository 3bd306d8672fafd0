"""A tiny tmpfs for real disk-full tests (root on Linux); callers skip where it cannot mount."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path


@contextlib.contextmanager
def tiny_tmpfs(path: Path, size: str = "256k"):
    """Mount a tmpfs of `size` at `path` (created) for the block; yields None when impossible."""
    path.mkdir(parents=True, exist_ok=True)
    if not shutil.which("mount") or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True).returncode != 0:
        yield None
        return
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
