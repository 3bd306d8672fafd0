"""The main window driven by real input events on a real X server, and a grab of the screen.

Runs where Qt has a real windowing platform (xcb under Xvfb: tests/app/test_xvfb.py starts one
and reruns this file with the main-window tests); under `offscreen` it is skipped. Key presses
and mouse clicks go through the X server with xdotool when it is installed (else QTest events).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.app.fake_engine import ANSWER, FakeLoader

pytestmark = pytest.mark.skipif(
    os.environ.get("QT_QPA_PLATFORM", "") in ("offscreen", "minimal"),
    reason="needs a real windowing platform (tests/app/test_xvfb.py runs it under Xvfb)")


def xdotool(*args: str) -> None:
    subprocess.run(["xdotool", *args], check=True, timeout=30)


class Driver:
    """Types and clicks through the X server (xdotool), or with QTest where it is missing."""

    def __init__(self, qtbot, window):
        from PySide6.QtGui import QGuiApplication

        self.qtbot, self.window = qtbot, window
        self.x11 = (shutil.which("xdotool") is not None
                    and QGuiApplication.platformName() == "xcb")

    def focus(self, widget) -> None:
        self.window.activateWindow()
        widget.setFocus()
        if self.x11:
            xdotool("windowfocus", "--sync", str(int(self.window.winId())))
        self.qtbot.waitUntil(widget.hasFocus, timeout=5000)

    def type(self, widget, text: str) -> None:
        from PySide6.QtTest import QTest

        self.focus(widget)
        if self.x11:
            xdotool("type", "--delay", "15", text)
            self.qtbot.waitUntil(lambda: widget.toPlainText() == text, timeout=5000)
        else:
            QTest.keyClicks(widget, text)

    def enter(self, widget) -> None:
        from PySide6.QtCore import Qt
        from PySide6.QtTest import QTest

        self.focus(widget)
        if self.x11:
            xdotool("key", "Return")
        else:
            QTest.keyClick(widget, Qt.Key.Key_Return)

    def click(self, button) -> None:
        from PySide6.QtCore import Qt
        from PySide6.QtTest import QTest

        self.qtbot.waitUntil(button.isVisible, timeout=5000)
        if self.x11:
            p = button.mapToGlobal(button.rect().center())
            xdotool("mousemove", "--sync", str(p.x()), str(p.y()), "click", "1")
        else:
            QTest.mouseClick(button, Qt.MouseButton.LeftButton)


def test_type_enter_stop_regenerate_with_real_events(qtbot, make_window, tmp_path):
    from PySide6.QtGui import QGuiApplication

    loader = FakeLoader()
    loader.session.delay = 0.15  # slow enough to press Stop mid-answer on a busy machine
    window = make_window(loader)
    s = window.settings
    s.target, s.draft = "/models/t", "/models/d"
    with qtbot.waitSignal(window.bridge.sig_load_finished, timeout=5000):
        window.apply_settings(s, load=True)
    window.move(0, 0)
    window.show()
    qtbot.waitExposed(window)
    chat = window.chat
    drive = Driver(qtbot, window)

    drive.type(chat.prompt, "What is a token tree?")
    drive.enter(chat.prompt)
    qtbot.waitUntil(lambda: len(window.tree.steps) >= 2, timeout=10000)
    assert chat.prompt.toPlainText() == ""  # Enter sent it
    with qtbot.waitSignal(window.bridge.sig_generation_aborted, timeout=10000):
        drive.click(chat.stop_button)
    saved = window.store.messages(window.conversation_id)
    assert [m.role for m in saved] == ["user", "assistant"]
    assert saved[0].content == "What is a token tree?"
    assert saved[1].stop_reason == "cancelled" and 0 < len(saved[1].content) < len(ANSWER)

    loader.session.delay = 0.0
    qtbot.waitUntil(lambda: chat.regenerate_button.isEnabled(), timeout=5000)
    with qtbot.waitSignal(window.bridge.sig_generation_finished, timeout=10000):
        drive.click(chat.regenerate_button)
    qtbot.waitUntil(lambda: not window.bridge.busy, timeout=5000)
    saved = window.store.messages(window.conversation_id)
    assert [m.content for m in saved] == ["What is a token tree?", ANSWER]
    assert chat.messages[-1].text == ANSWER

    screen = QGuiApplication.primaryScreen()
    shot = screen.grabWindow(0)  # the whole screen, as the X server shows it
    path = tmp_path / "screen.png"
    assert shot.save(str(path)) and path.stat().st_size > 10_000
    image = shot.toImage()
    assert (image.width(), image.height()) == (screen.geometry().width(),
                                               screen.geometry().height())
    colors = {image.pixel(x, y) for x in range(0, image.width(), 23)
              for y in range(0, image.height(), 23)}
    assert len(colors) > 20  # the window's text and widgets, not a blank screen
    if out := os.environ.get("CANOPY_SCREEN_GRAB"):
        shutil.copy(path, out)
