"""Small in-window panels: the error banner and the first-run offer to build the demo pair."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .accessibility import describe


class ErrorBanner(QFrame):
    """A readable message at the top of the window; the app stays usable underneath."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("errorBanner")
        self.title = QLabel("<b>Something went wrong</b>")
        self.label = QLabel("")
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        dismiss = QPushButton("Dismiss")
        dismiss.clicked.connect(self.hide)
        describe(dismiss, "Dismiss error", "Hide this message")
        text = QVBoxLayout()
        text.addWidget(self.title)
        text.addWidget(self.label)
        layout = QHBoxLayout(self)
        layout.addLayout(text, 1)
        layout.addWidget(dismiss, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def show_error(self, message: str, title: str = "Something went wrong") -> None:
        self.title.setText(f"<b>{title}</b>")
        self.label.setText(message)
        self.show()

    @property
    def message(self) -> str:
        return "" if self.isHidden() else self.label.text()


class FirstRunPanel(QFrame):
    """Shown when no models are configured: build the demo pair, or pick models."""

    sig_build_requested = Signal()
    """Build the demo pair now."""
    sig_choose_requested = Signal()
    """Open the models dialog instead."""
    sig_cancel_requested = Signal()
    """Cancel the build in progress."""

    DEMO = (
        "Canopy can build a <b>demo pair</b>: SmolLM2-135M-Instruct as the target and a "
        "4-bit requantization of it as the draft (about 100 MB to download, a minute or two "
        "to build). Or pick your own target and draft folders."
    )
    FIRST_RUN = "No models are set up yet. " + DEMO
    BROKEN = "The models could not be loaded (see the message above). " + DEMO

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("firstRun")
        self.title = title = QLabel("<h3>Welcome to Canopy</h3>")
        self.text = text = QLabel(self.FIRST_RUN)
        text.setWordWrap(True)
        self.build_button = QPushButton("Build the demo pair")
        self.build_button.setDefault(True)
        self.build_button.clicked.connect(self.sig_build_requested)
        self.choose_button = QPushButton("Choose models…")
        self.choose_button.clicked.connect(self.sig_choose_requested)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.sig_cancel_requested)
        describe(self.build_button, "Build the demo pair",
                 "Download SmolLM2-135M and build a target and draft from it")
        describe(self.choose_button, "Choose models", "Pick your own target and draft folders")
        describe(self.cancel_button, "Cancel building", "Stop building the demo pair")
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.build_button)
        buttons.addWidget(self.choose_button)
        buttons.addStretch(1)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(text)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        self.set_building(False)

    def offer(self, broken: bool) -> None:
        """Show the offer: on first run, or after the configured models failed to load."""
        self.title.setText("<h3>Models unavailable</h3>" if broken else
                           "<h3>Welcome to Canopy</h3>")
        self.text.setText(self.BROKEN if broken else self.FIRST_RUN)
        self.show()

    def set_building(self, building: bool) -> None:
        self.build_button.setEnabled(not building)
        self.choose_button.setEnabled(not building)
        self.cancel_button.setVisible(building)
        self.progress.setVisible(building)
        if building:
            self.progress.setRange(0, 0)
            self.status.setText("Starting…")

    def set_progress(self, what: str, done: int, total: int) -> None:
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(done)
        self.status.setText(f"{what} ({done}/{total})" if total else what)
