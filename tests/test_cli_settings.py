"""Invalid generation settings on the command line: exit 2 with one line naming the setting,
before any model is loaded (the target folder here does not even exist)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "flag, value, setting",
    [("--top-p", "0", "top_p"), ("--temperature", "-1", "temperature"),
     ("--max-tokens", "0", "max_tokens"), ("--tree-nodes", "0", "max_nodes"),
     ("--threshold", "2", "threshold"), ("--chain-length", "0", "chain_length")],
)
def test_invalid_setting_exits_2_with_one_line(tmp_path, flag, value, setting):
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "generate", "--target", str(tmp_path / "none"),
         "--prompt", "x", flag, value], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and setting in lines[0] and "Traceback" not in out.stderr
