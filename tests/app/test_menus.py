"""The menu bar: platform roles, standard shortcuts, and each action reaching its slot."""

import json
import platform
import sys

import PySide6
import pytest
from PySide6.QtCore import Qt, qVersion
from PySide6.QtGui import QAction, QGuiApplication, QKeySequence
from PySide6.QtWidgets import QApplication

from app.main_window import MainWindow
from tests.app.fake_engine import ANSWER
from tests.app.window_actions import ask as _ask
from tests.app.window_actions import loaded as _loaded

Key = QKeySequence.StandardKey


def _standard(key) -> set[str]:
    return {k.toString() for k in QKeySequence.keyBindings(key)}


def test_menus_roles_and_standard_shortcuts(make_window):
    w = make_window()
    a = w.menu_actions
    titles = [m.text().replace("&", "") for m in w.menuBar().actions()]
    # on macOS the Canopy items live in the application menu that Qt builds from their roles
    app_menu = [] if sys.platform == "darwin" else ["Canopy"]
    assert titles == app_menu + ["File", "Edit", "View", "Model", "Help"]
    assert a.about.menuRole() == QAction.MenuRole.AboutRole
    assert a.settings.menuRole() == QAction.MenuRole.PreferencesRole
    assert a.quit.menuRole() == QAction.MenuRole.QuitRole
    standard = {a.new_chat: Key.New, a.find: Key.Find, a.zoom_in: Key.ZoomIn,
                a.zoom_out: Key.ZoomOut, a.edit["undo"]: Key.Undo, a.edit["redo"]: Key.Redo,
                a.edit["cut"]: Key.Cut, a.edit["copy"]: Key.Copy, a.edit["paste"]: Key.Paste,
                a.edit["selectAll"]: Key.SelectAll, a.help: Key.HelpContents}
    for action, key in standard.items():
        assert action.shortcut().toString() in _standard(key), action.text()
    # the platform's binding where it has one (⌘, and ⌘Q on macOS), Ctrl+, / Ctrl+Q otherwise
    assert a.settings.shortcut().toString() in (_standard(Key.Preferences) or {"Ctrl+,"})
    assert a.quit.shortcut().toString() in (_standard(Key.Quit) or {"Ctrl+Q"})
    assert a.stop.shortcut() == QKeySequence("Ctrl+.")  # Qt's Ctrl is ⌘ on macOS
    assert a.zoom_reset.shortcut() == QKeySequence("Ctrl+0")
    assert not w.findChildren(PySide6.QtWidgets.QToolBar)  # the menu bar replaced the toolbar
    shortcuts = [s.toString() for act in a.all() for s in act.shortcuts()]
    assert len(shortcuts) == len(set(shortcuts))  # no two actions share a key


def test_menu_actions_reach_their_slots(qtbot, make_window, monkeypatch):
    calls = []
    for name in ("open_settings", "load_models"):
        monkeypatch.setattr(MainWindow, name, lambda self, n=name: calls.append(n))
    w = make_window()
    w.show()
    w.menu_actions.settings.trigger()
    w.menu_actions.reload.trigger()
    assert calls == ["open_settings", "load_models"]
    stops = []
    monkeypatch.setattr(w.bridge, "stop", lambda kind=None: stops.append(kind))
    assert not w.menu_actions.stop.isEnabled()  # nothing runs
    w.bridge.sig_busy_changed.emit(True)
    assert w.menu_actions.stop.isEnabled() and not w.menu_actions.reload.isEnabled()
    w.menu_actions.stop.trigger()
    assert stops == [None]  # stops whatever runs: answer, load, import
    w.bridge.sig_busy_changed.emit(False)
    assert w.tree_dock.isVisible()
    w.menu_actions.token_tree.trigger()
    assert not w.tree_dock.isVisible()
    w.menu_actions.live_panel.trigger()
    assert not w.live_dock.isVisible()
    base = w.chat.font().pointSizeF()
    w.menu_actions.zoom_in.trigger()
    w.menu_actions.zoom_in.trigger()
    assert w.chat.font().pointSizeF() > base and w.appearance.zoom_level == 2
    w.menu_actions.zoom_out.trigger()
    assert w.appearance.zoom_level == 1
    w.menu_actions.zoom_reset.trigger()
    assert w.chat.font().pointSizeF() == pytest.approx(base)
    w.menu_actions.help.trigger()
    assert w.help_box.isVisible()
    assert w.menu_actions.find.shortcut().toString(QKeySequence.SequenceFormat.NativeText) in \
        w.help_box.text()
    w.help_box.close()


def test_new_chat_find_and_export(qtbot, make_window, monkeypatch, tmp_path):
    w = _loaded(qtbot, make_window())
    w.show()
    _ask(qtbot, w, "tell me about trees")
    w.menu_actions.find.trigger()
    assert w.find_bar.isVisible()
    w.find_bar.edit.setText("target")  # ANSWER: "the target checks the whole tree…"
    assert w.find_bar.matches and w.find_bar.count.text().startswith("1 of")
    index, start, end = w.find_bar.matches[0]
    assert w.chat.messages[index].browser.textCursor().selectedText().lower() == "target"
    w.activateWindow()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is w.find_bar.edit, timeout=2000)
    qtbot.keyClick(w.find_bar.edit, Qt.Key.Key_Escape)  # not taken by the chat's Esc (Stop)
    assert not w.find_bar.isVisible()

    import app.commands

    out = tmp_path / "chat.json"
    monkeypatch.setattr(app.commands.QFileDialog, "getSaveFileName",
                        lambda *a, **k: (str(out), "JSON (*.json)"))
    w.menu_actions.export.trigger()
    data = json.loads(out.read_text())
    assert [m["role"] for m in data["messages"]] == ["user", "assistant"]
    assert data["messages"][1]["content"] == ANSWER
    md = tmp_path / "chat.md"
    monkeypatch.setattr(app.commands.QFileDialog, "getSaveFileName",
                        lambda *a, **k: (str(md), "Markdown (*.md)"))
    w.menu_actions.export.trigger()
    assert md.read_text().startswith("# tell me about trees") and "## Assistant" in md.read_text()

    w.menu_actions.new_chat.trigger()
    assert w.conversation_id is None and w.chat.messages == []


def test_edit_actions_act_on_the_focused_field(qtbot, make_window):
    w = make_window()
    w.show()
    w.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is w, timeout=2000)
    field = w.chat.system_edit
    field.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is field, timeout=2000)
    qtbot.keyClicks(field, "be brief")
    w.menu_actions.edit["selectAll"].trigger()
    w.menu_actions.edit["copy"].trigger()
    assert QGuiApplication.clipboard().text() == "be brief"
    w.menu_actions.edit["cut"].trigger()
    assert field.text() == ""
    w.menu_actions.edit["paste"].trigger()
    w.menu_actions.edit["paste"].trigger()
    assert field.text() == "be briefbe brief"
    w.menu_actions.edit["undo"].trigger()
    assert field.text() == "be brief"
    w.menu_actions.edit["redo"].trigger()
    assert field.text() == "be briefbe brief"


def test_about_lists_versions_and_copies_them(qtbot, make_window):
    import mlx.core as mx

    w = _loaded(qtbot, make_window())
    w.menu_actions.about.trigger()
    dialog = w.about_dialog
    text = dialog.details.toPlainText()
    for needed in ("Canopy", "MLX", mx.__version__, "mlx-lm", qVersion(), PySide6.__version__,
                   platform.python_version(), platform.machine(), "Chip",
                   "fake-target + fake-draft", "/models/t", "/models/d"):
        assert needed in text, needed
    dialog.copy_button.click()
    assert QGuiApplication.clipboard().text() == text
    dialog.close()


def test_mac_menu_layout_leaves_no_empty_app_menu(make_window, monkeypatch):
    import app.menus

    monkeypatch.setattr(app.menus.sys, "platform", "darwin")
    w = make_window()
    menus = {m.text().replace("&", ""): m.menu() for m in w.menuBar().actions()}
    assert list(menus) == ["File", "Edit", "View", "Model", "Help"]
    # Qt moves these into the application menu by their roles
    a = w.menu_actions
    assert {a.about, a.settings, a.quit} <= set(menus["File"].actions())
