"""Draft adaptation in the GUI: the settings' switches and Clear, recording chats, the idle
trigger, a message interrupting adaptation, and the live panel's marks (fake engine; one run of
the real engine on tiny models)."""

from __future__ import annotations

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QMessageBox

from app.settings import AppSettings
from app.settings_dialog import SettingsDialog
from tests.app.fake_engine import FakeAdaptation, FakeLoader
from tests.app.window_actions import ask as _ask
from tests.app.window_actions import loaded as _loaded

STATUS = {"sequences": 3, "positions": 120, "bytes": 3 << 20, "cap_bytes": 64 << 20,
          "recorded_total": 3, "adopted_version": 2}


def _answer(monkeypatch, button):
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: button)


def test_dialog_switches_round_trip_and_clear_asks_first(qtbot, monkeypatch, tiny_pair):
    s = AppSettings(target=str(tiny_pair["target"]), draft=str(tiny_pair["noisy"]),
                    record_chats=False, adapt_when_idle=True, adapt_idle_minutes=7.5,
                    adapt_cap_mb=32)
    dialog = SettingsDialog(s, adapt_status=STATUS)
    qtbot.addWidget(dialog)
    box = dialog.adaptation
    assert dialog.values() == s
    assert "3 answers recorded" in box.status.text() and "3.0 MB of 64 MB" in box.status.text()
    assert "adapter v2" in box.status.text()
    box.record.setChecked(True)
    box.adapt.setChecked(False)
    assert not box.idle_minutes.isEnabled()
    box.cap.setValue(128)
    values = dialog.values()
    assert (values.record_chats, values.adapt_when_idle, values.adapt_cap_mb) == (True, False, 128)
    assert values.adapt_config().cap_bytes == 128 << 20
    cleared = []
    box.sig_clear_requested.connect(lambda: cleared.append(True))
    _answer(monkeypatch, QMessageBox.StandardButton.No)
    box.clear_button.click()
    assert cleared == []  # declined: nothing deleted
    _answer(monkeypatch, QMessageBox.StandardButton.Yes)
    box.clear_button.click()
    assert cleared == [True]
    box.set_status(None)  # no pair with a draft: nothing to clear
    assert not box.clear_button.isEnabled() and "Load a target and a draft" in box.status.text()


def test_chats_record_unless_switched_off_and_clear_reaches_the_engine(qtbot, make_window,
                                                                       monkeypatch):
    loader = FakeLoader()
    window = _loaded(qtbot, make_window(loader), adapt_when_idle=False)
    _ask(qtbot, window, "one")
    qtbot.waitUntil(lambda: (window.bridge.adapt_status or {}).get("sequences") == 1, timeout=2000)
    off = AppSettings(**vars(window.settings))
    off.record_chats = False
    window.apply_settings(off)
    _ask(qtbot, window, "two")
    assert loader.adaptation.recorded == 1
    # Settings…: the dialog shows the buffer; a confirmed Clear empties it on the engine thread
    _answer(monkeypatch, QMessageBox.StandardButton.Yes)

    def interact():
        dialog = window.settings_dialog
        assert "1 answers recorded" in dialog.adaptation.status.text()
        window.bridge.sig_adapt_status.connect(lambda _: dialog.reject())
        dialog.adaptation.clear_button.click()

    QTimer.singleShot(0, interact)
    window.open_settings()
    assert loader.adaptation.sequences == 0 and window.bridge.adapt_status["sequences"] == 0


def test_idle_time_starts_adaptation_and_the_live_panel_marks_it(qtbot, make_window):
    loader = FakeLoader()
    window = _loaded(qtbot, make_window(loader), adapt_idle_minutes=0.005)  # 0.3 s
    _ask(qtbot, window, "first")
    assert loader.adaptation.runs == 0  # one recording: nothing to hold out yet
    with qtbot.waitSignal(window.bridge.sig_adapt_finished, timeout=5000) as blocker:
        _ask(qtbot, window, "second")
    assert blocker.args[0]["version"] == 1 and loader.adaptation.runs == 1
    assert "adapter v1 in use" in window.adapt_label.text()
    assert [label for _, label in window.live.adapt_marks] == ["v1"]
    assert window.live.adapt_marks[0][0] == len(window.live.accept_history) + 0.5
    assert len(window.live.accept_history) == 2  # one point per answer
    assert not window.bridge.busy  # adaptation never greys out the menus


def test_a_message_stops_adaptation_at_once(qtbot, make_window):
    loader = FakeLoader()
    loader.adaptation = FakeAdaptation(slices=200, delay=0.02)
    window = _loaded(qtbot, make_window(loader), adapt_when_idle=False)
    _ask(qtbot, window, "first")
    assert not window.idle.adapt_now() and "two recorded answers" in window.adapt_label.text()
    _ask(qtbot, window, "second")
    assert window.idle.due() is False  # switched off
    with qtbot.waitSignal(window.bridge.sig_adapt_progress, timeout=5000):
        window.menu_actions.adapt_now.trigger()  # on demand, the switch notwithstanding
    assert window.bridge.adapting and "Adapting the draft" in window.adapt_label.text()
    bridge = window.bridge
    with qtbot.waitSignals([bridge.sig_adapt_stopped, bridge.sig_generation_finished],
                           order="strict", timeout=5000):
        window.send("a question while it adapts")
    assert loader.adaptation.cancelled_runs == 1
    assert loader.adaptation.slices_done < 200 and loader.adaptation.version is None
    assert "paused for your message" in window.adapt_label.text()
    assert window.chat.messages[-1].text  # the answer came
    assert window.live.adapt_marks == []  # an interrupted run adopts nothing


def test_real_engine_records_chats_and_adapts(qtbot, make_window, tiny_pair):
    from app.bridge import default_loader

    window = make_window(default_loader)
    s = window.settings
    s.target, s.draft, s.max_tokens, s.adapt_when_idle = (
        str(tiny_pair["target"]), str(tiny_pair["noisy"]), 16, False)
    with qtbot.waitSignal(window.bridge.sig_load_finished, timeout=60000):
        window.apply_settings(s, load=True)
    for text in ("hello", "more please", "and again"):
        with qtbot.waitSignal(window.bridge.sig_generation_finished, timeout=60000):
            window.send(text)
    qtbot.waitUntil(lambda: window.bridge.adapt_status["sequences"] == 3, timeout=10000)
    assert window.bridge.adapt_status["positions"] > 0
    with qtbot.waitSignal(window.bridge.sig_adapt_finished, timeout=120000) as blocker:
        window.bridge.adapt()
    result = blocker.args[0]
    assert result["trainable_parameters"] > 0 and result["train_sequences"] >= 1
    with qtbot.waitSignal(window.bridge.sig_generation_finished, timeout=60000):
        window.send("after adapting")  # the (possibly adapted) draft still drafts
