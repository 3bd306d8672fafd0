"""Drag and drop of models: a GGUF is imported on the engine thread, a folder is offered as
target or draft with the compatibility check."""

import time

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QLabel

from app import accessibility
from app.dropzone import ImportDialog, UseModelDialog, import_destination
from engine.events import LoadProgress
from engine.testing import make_tiny_model
from tests.app.fake_engine import FakeLoader


def drop(widget, path) -> bool:
    """Drag `path` over `widget` and drop it, as the OS would; True if the drag was accepted."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    move = Qt.DropAction.CopyAction
    enter = QDragEnterEvent(QPoint(5, 5), move, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, enter)
    if not enter.isAccepted():
        return False
    event = QDropEvent(QPointF(5, 5), move, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, event)
    return event.isAccepted()


@pytest.fixture
def pair(tmp_path):
    target = make_tiny_model(tmp_path / "models" / "tiny-target", seed=1)
    draft = make_tiny_model(tmp_path / "models" / "tiny-draft", seed=2, like=target, noise=0.1)
    return target, draft


def _with_target(qtbot, window, target):
    s = window.settings
    s.target = str(target)
    with qtbot.waitSignal(window.bridge.sig_load_finished, timeout=5000):
        window.apply_settings(s, load=True)


def test_dropping_a_model_folder_offers_target_or_draft(qtbot, make_window, pair):
    target, draft = pair
    loader = FakeLoader()
    w = make_window(loader)
    w.show()
    _with_target(qtbot, w, target)
    # dropped on the prompt box, a text field that would otherwise paste the path
    assert drop(w.chat.prompt, draft)
    qtbot.waitUntil(lambda: isinstance(w.importer.dialog, UseModelDialog), timeout=2000)
    dialog = w.importer.dialog
    assert dialog.isVisible() and dialog.draft_button.isEnabled()
    assert "✔" in dialog.findChild(QLabel).text() and accessibility.missing(dialog) == []
    assert w.chat.prompt.toPlainText() == ""
    with qtbot.waitSignal(w.bridge.sig_load_finished, timeout=5000):
        dialog.draft_button.click()
    assert loader.calls[-1][:2] == (str(target), str(draft))
    assert w.settings.draft == str(draft)
    # a folder as the new target: the draft stays (same tokenizer)
    other = make_tiny_model(target.parent / "tiny-other", seed=3, like=target, noise=0.2)
    assert drop(w, other)
    qtbot.waitUntil(lambda: w.importer.dialog is not dialog, timeout=2000)
    with qtbot.waitSignal(w.bridge.sig_load_finished, timeout=5000):
        w.importer.dialog.target_button.click()
    assert loader.calls[-1][:2] == (str(other), str(draft))


def test_draft_needs_a_compatible_target(qtbot, make_window, pair, tmp_path):
    target, draft = pair
    w = make_window()
    w.show()
    assert drop(w, draft)  # no target chosen yet: only "Use as Target"
    qtbot.waitUntil(lambda: isinstance(w.importer.dialog, UseModelDialog), timeout=2000)
    assert not w.importer.dialog.draft_button.isEnabled()
    assert w.importer.dialog.target_button.isEnabled()
    w.importer.dialog.reject()
    plain = tmp_path / "not-a-model"
    plain.mkdir()
    drop(w, plain)
    qtbot.waitUntil(lambda: w.banner.isVisible(), timeout=2000)
    assert "config.json" in w.banner.message
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert not drop(w, notes)  # not offered: the text field may take it as text


def test_dropping_a_gguf_imports_it_then_offers_it(qtbot, make_window, pair, tmp_path):
    pytest.importorskip("gguf")
    from tests.engine.test_gguf import write_gguf

    target, _ = pair
    gguf_file = tmp_path / "Tiny-Chat.Q8.gguf"
    write_gguf(target, gguf_file)
    loader = FakeLoader()
    w = make_window(loader)
    w.show()
    assert drop(w.tree.view, gguf_file)
    qtbot.waitUntil(lambda: isinstance(w.importer.dialog, ImportDialog), timeout=2000)
    dialog = w.importer.dialog
    assert dialog.destination.name == "tiny-chat.q8"
    progress = []
    w.bridge.sig_load_progress.connect(lambda what, done, total: progress.append(what))
    with qtbot.waitSignal(w.bridge.sig_task_finished, timeout=60000):
        dialog.import_button.click()
        assert w.progress.isVisible() and w.cancel_button.isVisible()
    assert (dialog.destination / "config.json").is_file() and progress
    qtbot.waitUntil(lambda: isinstance(w.importer.dialog, UseModelDialog), timeout=2000)
    with qtbot.waitSignal(w.bridge.sig_load_finished, timeout=5000):
        w.importer.dialog.target_button.click()
    assert loader.calls[-1][0] == str(dialog.destination)
    # a second import of the same file goes to a new folder
    assert import_destination(dialog.destination.parent, gguf_file).name == "tiny-chat.q8-2"


def test_import_can_be_cancelled(qtbot, make_window, monkeypatch, tmp_path):
    import engine.formats.gguf

    def slow_import(path, out, *, dtype=None, progress=None, overwrite=False):
        for i in range(400):
            progress(LoadProgress("converting", i, 400))
            time.sleep(0.01)
        raise AssertionError("not cancelled")

    monkeypatch.setattr(engine.formats.gguf, "import_gguf", slow_import)
    gguf_file = tmp_path / "big.gguf"
    gguf_file.write_bytes(b"GGUF" + bytes(64))
    w = make_window()
    w.show()
    assert drop(w, gguf_file)
    qtbot.waitUntil(lambda: isinstance(w.importer.dialog, ImportDialog), timeout=2000)
    w.importer.dialog.import_button.click()
    qtbot.waitUntil(lambda: w.progress.maximum() == 400, timeout=5000)
    with qtbot.waitSignal(w.bridge.sig_busy_changed, timeout=5000):
        w.cancel_button.click()
    qtbot.waitUntil(lambda: w.model_label.text() == "Import cancelled.", timeout=2000)
    assert w.importer.job is None and not w.banner.isVisible()


def test_dock_icon_drop_is_offered(qtbot, make_window, pair):
    from PySide6.QtGui import QFileOpenEvent

    _, draft = pair
    w = make_window()
    QApplication.sendEvent(QApplication.instance(), QFileOpenEvent(str(draft)))
    qtbot.waitUntil(lambda: isinstance(w.importer.dialog, UseModelDialog), timeout=2000)
    assert w.importer.dialog.folder == draft


def test_a_broken_gguf_is_one_readable_error(qtbot, make_window, tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(range(40)))
    w = make_window()
    w.show()
    assert drop(w, broken)
    qtbot.waitUntil(lambda: isinstance(w.importer.dialog, ImportDialog), timeout=2000)
    with qtbot.waitSignal(w.bridge.sig_failed, timeout=10000):
        w.importer.dialog.import_button.click()
    assert w.banner.isVisible() and "broken.gguf" in w.banner.message
    assert "Traceback" not in w.banner.message and w.importer.job is None
    assert not w.importer.dialog.destination.exists()  # nothing half-written
    assert not w.first_run.isVisible()  # not mistaken for a failed demo-pair build
