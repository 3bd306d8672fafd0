"""On Linux, MLX's CPU wheel links a slow reference BLAS; OpenBLAS preloaded is 10-20x faster.

`LD_PRELOAD` must be set before the process starts, so the launcher re-executes itself once
with it when Debian's OpenBLAS is installed, and says so on stderr. macOS is untouched (MLX
uses Metal/Accelerate there). Set CANOPY_NO_OPENBLAS=1 to opt out. The thread count is set per
generation (engine.blas_threads: all cores resident, one left to the IO thread when streaming).
"""

from __future__ import annotations

import os
import sys

OPENBLAS = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
)


def openblas_path() -> str | None:
    return next((p for p in OPENBLAS if os.path.exists(p)), None)


def maybe_reexec_with_openblas(argv: list[str], command: list[str] | None = None) -> None:
    """Re-execute `command` (default: `python -m app.cli ARGV`) with OpenBLAS preloaded.

    A frozen bundle has its own launcher (packaging/entry.py), which calls `reexec_with_openblas`.
    """
    if not getattr(sys, "frozen", False):
        reexec_with_openblas(command or [sys.executable, "-m", "app.cli", *argv])


def reexec_with_openblas(command: list[str]) -> None:
    """Replace this process by `command` with OpenBLAS preloaded, once, where it applies."""
    if not sys.platform.startswith("linux") or os.environ.get("CANOPY_NO_OPENBLAS"):
        return
    lib = openblas_path()
    if lib is None or lib in os.environ.get("LD_PRELOAD", ""):
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(filter(None, [lib, env.get("LD_PRELOAD")]))
    print(f"canopy: using OpenBLAS ({lib}) for MLX's CPU matmuls", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, command, env)
