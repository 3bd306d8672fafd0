"""The menu bar, by platform convention: Canopy, File, Edit, View, Model, Help.

Shortcuts are `QKeySequence` standard keys (⌘ on a Mac, Ctrl elsewhere) and About, Settings and
Quit carry menu roles, so on macOS Qt moves them into the application menu. Edit actions act on
whichever text field has focus.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QApplication, QMainWindow

Key = QKeySequence.StandardKey
Role = QAction.MenuRole
EDIT_METHODS = ("undo", "redo", "cut", "copy", "paste", "selectAll")
# for platforms whose theme defines no binding (⌘Q and ⌘, on a Mac; Ctrl elsewhere)
FALLBACK_KEYS = {Key.Quit: "Ctrl+Q", Key.Preferences: "Ctrl+,", Key.Redo: "Ctrl+Shift+Z"}


@dataclass
class MenuActions:
    about: QAction
    settings: QAction
    quit: QAction
    new_chat: QAction
    export: QAction
    import_model: QAction
    edit: dict[str, QAction]  # EDIT_METHODS name -> action
    find: QAction
    token_tree: QAction
    live_panel: QAction
    tint_by_source: QAction
    zoom_in: QAction
    zoom_out: QAction
    zoom_reset: QAction
    load: QAction
    reload: QAction
    stop: QAction
    adapt_now: QAction
    help: QAction

    def all(self) -> list[QAction]:
        fixed = [v for k, v in vars(self).items() if k != "edit"]
        return fixed + list(self.edit.values())


def edit_focused(method: str) -> bool:
    """Call `method` (undo, copy, …) on the focused text field; False if it has none."""
    widget = QApplication.focusWidget()
    line_edit = getattr(widget, "lineEdit", None)  # an editable combo box
    if callable(line_edit) and line_edit() is not None:
        widget = line_edit()
    fn = getattr(widget, method, None)
    if not callable(fn):
        return False
    fn()
    return True


def _action(window: QMainWindow, text: str, slot=None, shortcut=None, tip: str = "",
            role: QAction.MenuRole = Role.NoRole) -> QAction:
    action = QAction(text, window)
    if isinstance(shortcut, Key):
        keys = QKeySequence.keyBindings(shortcut)
        fallback = FALLBACK_KEYS.get(shortcut)
        action.setShortcuts(keys or ([QKeySequence(fallback)] if fallback else []))
    elif shortcut is not None:
        action.setShortcut(QKeySequence(shortcut))
    action.setMenuRole(role)
    action.setToolTip(tip or text.rstrip("…"))
    action.setStatusTip(tip or text.rstrip("…"))
    if slot is not None:
        action.triggered.connect(lambda _checked=False: slot())
    return action


def build_menus(window) -> MenuActions:
    """Create the menu bar of `window` (a MainWindow) and return its actions."""
    from . import commands  # commands uses shortcut_summary from here
    w, bar = window, window.menuBar()
    edit = {name: _action(w, text, lambda m=name: edit_focused(m), key)
            for name, text, key in (("undo", "Undo", Key.Undo), ("redo", "Redo", Key.Redo),
                                    ("cut", "Cut", Key.Cut), ("copy", "Copy", Key.Copy),
                                    ("paste", "Paste", Key.Paste),
                                    ("selectAll", "Select All", Key.SelectAll))}
    tree, live = w.tree_dock.toggleViewAction(), w.live_dock.toggleViewAction()
    tree.setText("Token Tree")
    tree.setToolTip("Show or hide the token tree of each step")
    live.setText("Live Panel")
    live.setToolTip("Show or hide the live speed, acceptance and memory plots")
    a = MenuActions(
        about=_action(w, "About Canopy", lambda: commands.show_about(w), role=Role.AboutRole),
        settings=_action(w, "Settings…", w.open_settings, Key.Preferences,
                         "Models, memory budget, decoding and sampling", Role.PreferencesRole),
        quit=_action(w, "Quit Canopy", w.close, Key.Quit, role=Role.QuitRole),
        new_chat=_action(w, "New Chat", w.new_conversation, Key.New),
        export=_action(w, "Export Conversation…", lambda: commands.export_current(w), None,
                       "Save this conversation as Markdown or JSON"),
        import_model=_action(w, "Import Model (GGUF or folder)…", w.importer.choose_any, None,
                             "Import a GGUF file, or use a model folder as target or draft"),
        edit=edit,
        find=_action(w, "Find in Conversation…", w.find_bar.open, Key.Find),
        token_tree=tree,
        live_panel=live,
        tint_by_source=_action(w, "Tint Tokens by Source", None, None,
                               "Colour accepted draft tokens by who proposed them: the draft "
                               "model, prompt lookup, the n-gram pool or the Jacobi window"),
        zoom_in=_action(w, "Zoom In", lambda: w.appearance.zoom_by(1), Key.ZoomIn),
        zoom_out=_action(w, "Zoom Out", lambda: w.appearance.zoom_by(-1), Key.ZoomOut),
        zoom_reset=_action(w, "Actual Size", lambda: w.appearance.zoom_by(0), "Ctrl+0"),
        load=_action(w, "Load…", w.importer.choose_folder, None,
                     "Use a model folder as the target or the draft"),
        reload=_action(w, "Reload", w.load_models, None, "Load the chosen models again"),
        stop=_action(w, "Stop", w.stop_all, "Ctrl+.",
                     "Stop the answer, the load or the import in progress"),
        adapt_now=_action(w, "Adapt Draft Now", w.idle.adapt_now, None,
                          "Teach the draft from the recorded answers now (a message stops it)"),
        help=_action(w, "Canopy Help", lambda: commands.show_help(w), Key.HelpContents),
    )
    # On macOS Qt moves role actions into the application menu ("Canopy"); a menu of our own
    # holding only them would stay behind empty, so there they go into File.
    file_menu = bar.addMenu("&File") if sys.platform == "darwin" else None
    app_menu = file_menu or bar.addMenu("&Canopy")
    app_menu.addActions([a.about, a.settings])
    app_menu.addSeparator()
    app_menu.addAction(a.quit)
    file_menu = file_menu or bar.addMenu("&File")
    file_menu.addActions([a.new_chat, a.export])
    file_menu.addSeparator()
    file_menu.addAction(a.import_model)
    edit_menu = bar.addMenu("&Edit")
    edit_menu.addActions([edit["undo"], edit["redo"]])
    edit_menu.addSeparator()
    edit_menu.addActions([edit["cut"], edit["copy"], edit["paste"], edit["selectAll"]])
    edit_menu.addSeparator()
    edit_menu.addAction(a.find)
    view_menu = bar.addMenu("&View")
    view_menu.addActions([tree, live])
    view_menu.addSeparator()
    a.tint_by_source.setCheckable(True)
    a.tint_by_source.toggled.connect(w.chat.set_tint_by_source)
    view_menu.addAction(a.tint_by_source)
    view_menu.addSeparator()
    view_menu.addActions([a.zoom_in, a.zoom_out, a.zoom_reset])
    model_menu = bar.addMenu("&Model")
    model_menu.addActions([a.load, a.reload, a.stop])
    model_menu.addSeparator()
    model_menu.addAction(a.adapt_now)
    help_menu = bar.addMenu("&Help")
    help_menu.addAction(a.help)
    return a


def shortcut_summary(actions: MenuActions) -> list[tuple[str, str]]:
    """(action, shortcut in this platform's notation) for the Help text."""
    fmt = QKeySequence.SequenceFormat.NativeText
    return [(act.text().replace("&", ""), act.shortcut().toString(fmt))
            for act in actions.all() if not act.shortcut().isEmpty()]
