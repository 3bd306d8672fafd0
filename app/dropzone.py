"""Models by drag and drop (and File > Import Model…, Model > Load…).

Dropping a `.gguf` file on the window offers to import it into the models folder; the import
runs on the engine thread (`bridge.run_task`) with progress and Cancel in the status bar, then
offers the new folder like a dropped one. Dropping a model folder offers to use it as target or
draft, with the draft/target compatibility check shown before anything loads.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEvent, QMimeData, QObject, QTimer
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QLabel,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .accessibility import describe
from .model_choice import check_pair_message
from .settings import AppSettings

MB = 2**20
DRAG_EVENTS = (QEvent.Type.DragEnter, QEvent.Type.DragMove, QEvent.Type.Drop)


def dropped_paths(mime: QMimeData) -> list[Path]:
    """Local `.gguf` files and folders among the dragged URLs (anything else is not for us)."""
    out = []
    for url in mime.urls() if mime.hasUrls() else []:
        if not url.isLocalFile():
            continue
        path = Path(url.toLocalFile())
        if path.is_dir() or (path.suffix.lower() == ".gguf" and path.is_file()):
            out.append(path)
    return out


def import_destination(home: Path, gguf: Path) -> Path:
    """`home/<file stem>`, numbered if that folder exists already."""
    stem = gguf.stem.lower().replace(" ", "-")
    out, n = home / stem, 2
    while out.exists():
        out, n = home / f"{stem}-{n}", n + 1
    return out


def pair_checks(folder: str, settings: AppSettings) -> dict[str, tuple[bool, str]]:
    """Compatibility of `folder` as the target (with the current draft) and as the draft
    (with the current target): role -> (ok, message)."""
    as_target = check_pair_message(folder, settings.draft) if settings.draft else \
        (True, "No draft is chosen: plain autoregressive decoding until you add one.")
    as_draft = check_pair_message(settings.target, folder) if settings.target else \
        (False, "Choose a target first.")
    return {"target": as_target, "draft": as_draft}


class UseModelDialog(QDialog):
    """Use a model folder as the target or the draft; `choice` is "target", "draft" or None."""

    def __init__(self, folder: Path, settings: AppSettings, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Use model")
        self.folder, self.choice = folder, None
        checks = pair_checks(str(folder), settings)
        self.target_ok, target_msg = checks["target"]
        draft_ok, draft_msg = checks["draft"]
        size = sum(f.stat().st_size for f in folder.glob("*.safetensors")) / MB
        text = QLabel(
            f"<b>{folder.name}</b> ({size:.0f} MB)<br>{folder}<br><br>"
            f"<b>As target:</b> {'✔' if self.target_ok else '✖'} {target_msg}"
            + ("" if self.target_ok else " The draft will be cleared.")
            + f"<br><b>As draft:</b> {'✔' if draft_ok else '✖'} {draft_msg}")
        text.setWordWrap(True)
        text.setMinimumWidth(460)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.target_button = QPushButton("Use as Target" if self.target_ok else
                                         "Use as Target (no draft)")
        self.draft_button = QPushButton("Use as Draft")
        self.draft_button.setEnabled(draft_ok)
        describe(self.target_button, "Use as target", "Load this model as the target")
        describe(self.draft_button, "Use as draft",
                 "Load this model as the draft" if draft_ok else draft_msg)
        buttons.addButton(self.target_button, QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.addButton(self.draft_button, QDialogButtonBox.ButtonRole.AcceptRole)
        describe(buttons.button(QDialogButtonBox.StandardButton.Cancel), "Cancel",
                 "Keep the current models")
        self.target_button.clicked.connect(lambda: self._choose("target"))
        self.draft_button.clicked.connect(lambda: self._choose("draft"))
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(text)
        layout.addWidget(buttons)

    def _choose(self, role: str) -> None:
        self.choice = role
        self.accept()


class ImportDialog(QDialog):
    """Confirm converting a GGUF file into a model folder at `destination`."""

    def __init__(self, gguf: Path, destination: Path, dtype: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Import GGUF model")
        self.gguf, self.destination = gguf, destination
        text = QLabel(
            f"Import <b>{gguf.name}</b> ({gguf.stat().st_size / MB:.0f} MB)?<br><br>"
            f"Canopy converts it into a model folder ({dtype} weights):<br>{destination}<br><br>"
            "Progress shows in the status bar; Cancel there (or Model › Stop) stops it.")
        text.setWordWrap(True)
        text.setMinimumWidth(460)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.import_button = buttons.addButton("Import", QDialogButtonBox.ButtonRole.AcceptRole)
        describe(self.import_button, "Import", "Convert the GGUF file into a model folder")
        describe(buttons.button(QDialogButtonBox.StandardButton.Cancel), "Cancel",
                 "Do not import")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(text)
        layout.addWidget(buttons)


class ModelImporter(QObject):
    """Drop target, import job and the offers of one main window.

    The window forwards its task results and failures (`take_result`, `take_failure`) so the
    import and the demo-pair build can share the engine's task channel.
    """

    def __init__(self, window):
        super().__init__(window)  # dies with the window, which also removes the event filter
        self.window = window
        self.job: int | None = None
        self.dialog: QDialog | None = None
        window.setAcceptDrops(True)
        # an application-wide filter: text fields accept drops themselves and would take files
        QApplication.instance().installEventFilter(self)

    # ---- drag and drop ----
    def eventFilter(self, obj, event) -> bool:
        kind = event.type()
        if kind == QEvent.Type.FileOpen:  # a .gguf or folder dropped on the Dock icon (macOS)
            path = Path(event.file())
            if path.is_dir() or path.suffix.lower() == ".gguf":
                QTimer.singleShot(0, lambda: self.offer(path))
                return True
            return False
        if kind not in DRAG_EVENTS or not isinstance(obj, QWidget):
            return False
        if obj is not self.window and not self.window.isAncestorOf(obj):
            return False
        paths = dropped_paths(event.mimeData())
        if not paths:
            return False
        event.acceptProposedAction()
        if kind == QEvent.Type.Drop:
            QTimer.singleShot(0, lambda: self.offer(paths[0]))  # not inside the OS drag loop
        return True

    # ---- offers ----
    def offer(self, path: Path) -> None:
        """A GGUF file: offer to import it; a model folder: offer to use it."""
        path = Path(path)
        w = self.window
        if path.is_file() and path.suffix.lower() == ".gguf":
            from engine.formats.demo import default_target_dtype, models_home

            if self.job is not None:
                w.banner.show_error("An import is already running. Wait for it or stop it "
                                    "(Model › Stop).", "Import in progress")
                return
            dialog = ImportDialog(path, import_destination(models_home(), path),
                                  default_target_dtype(), w)
            dialog.accepted.connect(lambda: self.start_import(dialog.gguf, dialog.destination))
        elif path.is_dir() and (path / "config.json").is_file():
            dialog = UseModelDialog(path, w.settings, w)
            dialog.accepted.connect(lambda: self.use(dialog.folder, dialog.choice))
        else:
            w.banner.show_error(f"{path} is neither a GGUF file nor a model folder (a model "
                                "folder has a config.json). Drop a .gguf file or a model folder.",
                                "Not a model")
            return
        self.dialog = dialog
        dialog.open()  # window-modal: a sheet on macOS; tests click its buttons

    def use(self, folder: Path, role: str | None) -> None:
        if role not in ("target", "draft"):
            return
        w = self.window
        s = AppSettings(**vars(w.settings))
        if role == "target":
            s.target = str(folder)
            if s.draft and not pair_checks(str(folder), w.settings)["target"][0]:
                s.draft = ""
        else:
            s.draft = str(folder)
        w.first_run.hide()
        w.apply_settings(s, load=True)

    def choose_any(self) -> None:
        """File › Import Model…: a GGUF file or a model folder."""
        box = QMessageBox(QMessageBox.Icon.Question, "Import model",
                          "Import a GGUF file, or use a model folder as target or draft?",
                          QMessageBox.StandardButton.Cancel, self.window)
        gguf = box.addButton("GGUF File…", QMessageBox.ButtonRole.AcceptRole)
        folder = box.addButton("Model Folder…", QMessageBox.ButtonRole.AcceptRole)
        box.exec()
        if box.clickedButton() is gguf:
            self.choose_gguf()
        elif box.clickedButton() is folder:
            self.choose_folder()

    def choose_gguf(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.window, "Import GGUF model", "",
                                              "GGUF models (*.gguf);;All files (*)")
        if path:
            self.offer(Path(path))

    def choose_folder(self) -> None:
        """Model › Load…: a model folder, used as target or draft."""
        path = QFileDialog.getExistingDirectory(self.window, "Model folder",
                                                self.window.settings.target)
        if path:
            self.offer(Path(path))

    # ---- the import job ----
    def start_import(self, gguf: Path, destination: Path) -> int:
        from engine.formats import gguf as gguf_format
        from engine.formats.demo import default_target_dtype

        dtype = default_target_dtype()
        self.job = self.window.bridge.run_task(
            lambda report: gguf_format.import_gguf(gguf, destination, dtype=dtype,
                                                   progress=report))
        self.window._set_loading(True, f"Importing {gguf.name}…")
        return self.job

    def take_result(self, job_id: int, result) -> bool:
        """The window's task result: ours if it ends the import (then offer the folder)."""
        if job_id != self.job:
            return False
        self.job = None
        self.window.model_label.setText(f"Imported {Path(result).name}.")
        self.offer(Path(result))
        return True

    def take_failure(self, message: str) -> bool:
        """The window's task failure: ours while an import runs."""
        if self.job is None:
            return False
        self.job = None
        self.window._set_loading(False)
        if message == "Cancelled.":
            self.window.model_label.setText("Import cancelled.")
        else:
            self.window.banner.show_error(message, "Could not import the GGUF file")
        return True
