"""Menu commands that only read the main window: About, Help, Export Conversation."""

from __future__ import annotations

from PySide6.QtWidgets import QFileDialog, QMessageBox

from .about import AboutDialog, about_rows
from .export import export_conversation
from .menus import shortcut_summary

HELP = (
    "<p><b>Canopy</b> answers with a large <i>target</i> model helped by a small <i>draft</i>: "
    "the draft proposes a tree of tokens, the target checks the whole tree in one pass. "
    "Green text was drafted and accepted; orange text the target produced itself.</p>"
    "<p>Drop a <b>.gguf</b> file on the window to import it, or a model folder to use it as "
    "target or draft. View › Token Tree shows each step's tree (Left/Right arrows move through "
    "steps; ✓ accepted, ✗ rejected, ★ the target's bonus token).</p>"
)


def show_about(window) -> AboutDialog:
    s = window.settings
    dialog = AboutDialog(about_rows(window.bridge.loaded_description, s.target, s.draft), window)
    window.about_dialog = dialog
    dialog.open()
    return dialog


def help_html(window) -> str:
    rows = "".join(f"<tr><td>{name}</td><td>&nbsp;&nbsp;{keys}</td></tr>"
                   for name, keys in shortcut_summary(window.menu_actions))
    return HELP + f"<p><b>Shortcuts</b></p><table>{rows}</table>"


def show_help(window) -> QMessageBox:
    box = QMessageBox(QMessageBox.Icon.Information, "Canopy Help", help_html(window),
                      QMessageBox.StandardButton.Close, window)
    window.help_box = box
    box.open()
    return box


def export_current(window) -> str | None:
    """Ask where to save the open conversation (Markdown or JSON) and write it."""
    cid = window.conversation_id
    conversation = window.store.conversation(cid) if cid is not None else None
    if conversation is None:
        window.statusBar().showMessage("Open a conversation to export it.", 4000)
        return None
    safe = "".join(c if c.isalnum() or c in " -_" else "_" for c in conversation.title).strip()
    path, _ = QFileDialog.getSaveFileName(window, "Export conversation", f"{safe or 'chat'}.md",
                                          "Markdown (*.md);;JSON (*.json)")
    if not path:
        return None
    try:
        export_conversation(path, conversation, window.store.messages(cid), window.store)
    except OSError as e:
        window.banner.show_error(f"Could not write {path}: {e.strerror}. Choose another "
                                 "folder.", "Export failed")
        return None
    window.statusBar().showMessage(f"Exported to {path}", 4000)
    return path
