"""The settings' "Draft adaptation" group: record chats, adapt when idle, the buffer on disk.

The draft learns from the target's distributions recorded while you chat (engine/adapt). This
group switches recording and idle-time adaptation, sets the idle time and the buffer's cap, shows
what is on disk, and asks (after a confirmation) for the recordings to be cleared or the adapters
reset; the main window carries those requests to the engine thread.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QWidget,
)

from .accessibility import describe

MB = 2**20


def status_text(status: dict | None) -> str:
    """The buffer line: answers recorded, size on disk against the cap, adapter in use."""
    if status is None:
        return "Load a target and a draft to record (the draft is what learns)."
    size = f"{status['bytes'] / MB:.1f} MB of {status['cap_bytes'] / MB:.0f} MB"
    version = status.get("adopted_version")
    adapter = f"adapter v{version} in use" if version is not None else "draft as shipped"
    return f"{status['sequences']} answers recorded · {size} on disk · {adapter}"


class AdaptationBox(QGroupBox):
    """Switches and buffer state of online draft adaptation (values go through AppSettings)."""

    sig_clear_requested = Signal()
    """The user confirmed: delete every recording of the loaded pair."""
    sig_reset_requested = Signal()
    """The user confirmed: forget the pair's adapters (the draft goes back to as shipped)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Draft adaptation", parent)
        self.record = QCheckBox("record the target's choices while chatting (stays on this "
                                "computer)")
        self.adapt = QCheckBox("teach the draft from them when the app is idle")
        self.idle_minutes = QDoubleSpinBox()
        self.idle_minutes.setRange(0.5, 240.0)
        self.idle_minutes.setDecimals(1)
        self.idle_minutes.setSuffix(" min")
        self.cap = QSpinBox()
        self.cap.setRange(1, 16384)
        self.cap.setSuffix(" MB")
        self.status = QLabel(status_text(None))
        self.status.setWordWrap(True)
        self.status.setObjectName("adaptStatus")
        self.clear_button = QPushButton("Clear recordings…")
        self.clear_button.clicked.connect(self.confirm_clear)
        self.reset_button = QPushButton("Reset adapters…")
        self.reset_button.clicked.connect(self.confirm_reset)
        self.adapt.toggled.connect(self.idle_minutes.setEnabled)
        row = QHBoxLayout()
        row.addWidget(self.clear_button)
        row.addWidget(self.reset_button)
        row.addStretch(1)
        form = QFormLayout(self)
        form.addRow("", self.record)
        form.addRow("", self.adapt)
        form.addRow("Idle time before adapting", self.idle_minutes)
        form.addRow("Recordings cap", self.cap)
        form.addRow("On disk", self.status)
        form.addRow("", row)
        for widget, name, tip in (
            (self.record, "Record chats", "Keep the target's top-32 probabilities at each "
             "verified token of your answers, in a bounded folder per model pair"),
            (self.adapt, "Adapt when idle", "After the idle time, fine-tune small LoRA adapters "
             "on the draft's last blocks; a message you send stops it at once"),
            (self.idle_minutes, "Idle time", "Minutes without a generation before adapting"),
            (self.cap, "Recordings cap", "Most disk space the recordings of one pair may take; "
             "the oldest go first"),
            (self.clear_button, "Clear recordings", "Delete every recording of this model pair"),
            (self.reset_button, "Reset adapters", "Forget what the draft learned"),
        ):
            describe(widget, name, tip)
        self.set_status(None)

    def set_status(self, status: dict | None) -> None:
        """What the bridge reports (None: no pair with a draft is loaded)."""
        self.status.setText(status_text(status))
        self.clear_button.setEnabled(status is not None and status["sequences"] > 0)
        self.reset_button.setEnabled(status is not None
                                     and status.get("adopted_version") is not None)

    def confirm_clear(self) -> None:
        answer = QMessageBox.question(
            self, "Clear recordings", "Delete every recorded answer of this model pair? "
            "Adapters already learned stay. This cannot be undone.")
        if answer == QMessageBox.StandardButton.Yes:
            self.sig_clear_requested.emit()

    def confirm_reset(self) -> None:
        answer = QMessageBox.question(
            self, "Reset adapters", "Forget every adapter learned for this model pair? The "
            "draft goes back to as shipped; recordings stay.")
        if answer == QMessageBox.StandardButton.Yes:
            self.sig_reset_requested.emit()
