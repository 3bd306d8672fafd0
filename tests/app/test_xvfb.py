"""The main-window tests again on a real X server (Xvfb + Qt's xcb platform), not offscreen.

The test session itself runs offscreen (one QApplication, one platform per process), so this
starts an Xvfb of its own and reruns those files in a child pytest there. Skipped where Xvfb is
not installed (macOS, or Linux without `apt-get install xvfb`; see .ci/run for the packages).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = ("tests/app/test_main_window.py", "tests/app/test_real_window.py")


@pytest.fixture
def xvfb_display():
    if not sys.platform.startswith("linux") or shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb; see .ci/run)")
    read, write = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1400x900x24",
                             "-nolisten", "tcp"], pass_fds=(write,),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(write)
    with os.fdopen(read) as f:
        number = f.readline().strip()  # Xvfb writes its display number once it is ready
    if not number:
        proc.kill()
        pytest.skip(f"Xvfb did not start: {proc.stderr.read().decode()[-500:]}")
    yield f":{number}"
    proc.terminate()
    proc.wait(10)


@pytest.mark.slow
def test_main_window_tests_pass_on_a_real_x_server(xvfb_display, tmp_path):
    env = {**os.environ, "DISPLAY": xvfb_display, "QT_QPA_PLATFORM": "xcb",
           "PYTHONPATH": str(ROOT), "CANOPY_SCREEN_GRAB": str(tmp_path / "screen.png")}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
                        *FILES], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "PASSED tests/app/test_real_window.py::test_type_enter_stop_regenerate" in out, out
    assert "SKIPPED" not in out, out[-4000:]  # nothing fell back to "no real platform"
    assert (tmp_path / "screen.png").stat().st_size > 10_000
