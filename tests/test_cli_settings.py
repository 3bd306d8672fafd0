"""Invalid generation settings on the command line: exit 2 with one line naming the flag,
before any model is loaded (the target folder here does not even exist)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "flag, value",
    [("--top-p", "0"), ("--temperature", "-1"), ("--max-tokens", "0"), ("--tree-nodes", "0"),
     ("--threshold", "2"), ("--chain-length", "0"), ("--draft-vocab", "0")],
)
def test_invalid_setting_exits_2_with_one_line(tmp_path, flag, value):
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "generate", "--target", str(tmp_path / "none"),
         "--prompt", "x", flag, value], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    # The message names the flag the person typed, not the config field behind it.
    assert len(lines) == 1 and f"Invalid {flag} " in lines[0] and "Traceback" not in out.stderr
