"""The model picker's "Download…" dialog: a Hub repo into the HF cache, with progress and Cancel.

The download needs no MLX, so it runs on a plain worker thread (not the engine thread, which
may be generating); progress crosses to the GUI thread as a queued signal.
"""

from __future__ import annotations

import threading

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

MB = 2**20


def catalog_entries() -> list[tuple[str, str]]:
    """(repo id, label) of the catalog's models: download size and fit for this machine."""
    try:
        from engine.costmodel.catalog import fit, load_catalog, machine_ram_bytes
    except ImportError:
        return []
    try:
        models, pairs = load_catalog()
    except (OSError, ValueError, KeyError):
        return []
    ram = machine_ram_bytes()
    drafts = {d.repo_id: d for _, d in pairs}
    placement = {t.repo_id: fit(t, d, ram).placement for t, d in pairs}
    out = []
    for repo, m in models.items():
        role = "draft" if repo in drafts and repo not in placement else placement.get(repo, "")
        out.append((repo, f"{repo.split('/')[-1]} · {m.download_bytes / 1e9:.1f} GB · {role}"))
    return out


class _Relay(QObject):
    """Lives in the GUI thread; the worker emits, Qt queues the calls to the GUI thread."""

    progress = Signal(object, object)  # (done bytes, total bytes): may exceed 32-bit ints
    done = Signal(str, str)  # (snapshot path or "", error message or "")


class DownloadDialog(QDialog):
    """Ask for a repo id (and revision), pull it, report the folder.

    `pull(repo_id, revision, progress=..., should_stop=...)` defaults to engine.formats.hub's
    `pull_model`; tests inject one aimed at a local server.
    """

    sig_downloaded = Signal(str)
    """(path) the snapshot folder of a complete download."""

    def __init__(self, parent: QWidget | None = None, pull=None, repo_id: str = ""):
        super().__init__(parent)
        self.setWindowTitle("Download a model from the Hugging Face Hub")
        if pull is None:
            from engine.formats.hub import pull_model as pull
        self._pull = pull
        self.repo = QLineEdit(repo_id)
        self.repo.setPlaceholderText("mlx-community/Qwen2.5-0.5B-Instruct-4bit")
        self.repo.setToolTip("The Hub repository, ORG/NAME")
        self.revision = QLineEdit()
        self.revision.setPlaceholderText("main")
        self.revision.setToolTip("Branch, tag or commit (empty: main)")
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setValue(0)
        self.status = QLabel("Only the files a model needs are downloaded, into the Hugging "
                             "Face cache (shared with mlx-lm and LM Studio).")
        self.status.setWordWrap(True)
        self.use_as = QComboBox()
        self.use_as.addItems(["target", "draft"])
        self.use_as.setToolTip("Pick the downloaded model as the target or as the draft")
        self.catalog = QComboBox()  # known-good Mac models, with how each fits this machine
        self.catalog.addItem("(type a repo id below)", "")
        for repo, label in catalog_entries():
            self.catalog.addItem(label, repo)
        self.catalog.currentIndexChanged.connect(self._pick_catalog)
        self.catalog.setToolTip("Known-good Mac models: download size and how it fits this RAM")
        form = QFormLayout()
        form.addRow("Known-good", self.catalog)
        form.addRow("Repo id", self.repo)
        form.addRow("Revision", self.revision)
        form.addRow("Use as", self.use_as)
        self.start_button = QPushButton("Download")
        self.start_button.setDefault(True)
        self.start_button.setToolTip("Download only the files a model needs into the HF cache")
        self.start_button.clicked.connect(self.start)
        buttons = QDialogButtonBox()
        buttons.addButton(self.start_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.cancel_button = buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setToolTip("Stop the download (finished files are kept) or close")
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.bar)
        layout.addWidget(self.status)
        layout.addWidget(buttons)
        self._relay = _Relay(self)
        self._relay.progress.connect(self._on_progress)
        self._relay.done.connect(self._on_done)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.path = ""
        self.error = ""

    def _pick_catalog(self, _index: int) -> None:
        repo = self.catalog.currentData()
        if repo:
            self.repo.setText(repo)

    def use_as_draft(self) -> bool:
        return self.use_as.currentText() == "draft"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        repo, revision = self.repo.text().strip(), self.revision.text().strip() or None
        if self.running or not repo:
            return
        self._stop.clear()
        self.path = self.error = ""
        self.start_button.setEnabled(False)
        self.repo.setEnabled(False)
        self.revision.setEnabled(False)
        self.bar.setValue(0)
        self.status.setText(f"Downloading {repo}…")
        relay = self._relay

        def work():
            from engine.errors import CanopyError

            try:
                path = self._pull(repo, revision,
                                  progress=lambda e: relay.progress.emit(e.done, e.total),
                                  should_stop=self._stop.is_set)
                relay.done.emit(str(path), "")
            except CanopyError as e:
                relay.done.emit("", str(e))
            except Exception as e:  # a message for a person, never a silent dead thread
                relay.done.emit("", f"Download failed: {type(e).__name__}: {e}")

        self._thread = threading.Thread(target=work, name="canopy-download", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        """Stop a running download (finished files stay for a later resume), else close."""
        if self.running:
            self._stop.set()
            self.status.setText("Cancelling…")
        else:
            self.reject()

    def _on_progress(self, done, total) -> None:
        if total:
            self.bar.setValue(int(1000 * done / total))
            self.status.setText(f"{done / MB:.1f} of {total / MB:.1f} MB")

    def _on_done(self, path: str, error: str) -> None:
        self.start_button.setEnabled(True)
        self.repo.setEnabled(True)
        self.revision.setEnabled(True)
        self.path, self.error = path, error
        if path:
            self.bar.setValue(1000)
            self.status.setText(f"Downloaded to {path}")
            self.sig_downloaded.emit(path)
            self.accept()
        else:
            self.status.setText(error)

    def done(self, result: int) -> None:  # closing the window cancels a running download
        if self.running:
            self._stop.set()
        super().done(result)
