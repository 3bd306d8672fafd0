"""One chat message: rendered markdown (tinted by token source), actions, and a stats footer."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from engine.events import StepEvent

from .accessibility import describe
from .markdown import COPY_SCHEME, LIGHT_COLORS, NONE, TARGET, render
from .steps import step_sources


class AutoHeightBrowser(QTextBrowser):
    """A read-only rich text view as tall as its content (the chat list scrolls, not it)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setOpenLinks(False)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.document().setDocumentMargin(2)
        self.document().contentsChanged.connect(self._fit)

    def _fit(self) -> None:
        doc = self.document()
        doc.setTextWidth(max(50, self.viewport().width()))
        height = int(doc.size().height()) + 6
        if height != self.height():
            self.setFixedHeight(height)

    def resizeEvent(self, event):
        super().resizeEvent(event)
        self._fit()

    def sizeHint(self) -> QSize:
        return QSize(400, self.height())


def footer_text(stats: dict, reason: str | None, finished: bool) -> str:
    """e.g. "14.2 tok/s · TTFT 0.31 s · 2.7 tok/pass · 96 tokens · eos"."""
    parts = []
    if stats:
        parts.append(f"{stats.get('tokens_per_second', 0.0):.1f} tok/s")
        ttft = stats.get("ttft_seconds", stats.get("time_to_first_token", 0.0))  # older chats
        parts.append(f"TTFT {ttft:.2f} s")
        parts.append(f"{stats.get('tokens_per_pass', 0.0):.2f} tok/pass")
        parts.append(f"{stats.get('generated_tokens', 0)} tokens")
    if not finished:
        parts.append("interrupted")
    elif reason:
        parts.append({"eos": "end of answer", "length": "max tokens", "cancelled": "stopped"}.get(
            reason, reason))
    return " · ".join(parts)


class MessageWidget(QFrame):
    """A user or assistant message.

    Streaming answers grow through `append_step` and repaint in `refresh` (once per frame).
    """

    sig_edit_resend_requested = Signal(int, str)
    """(position, new_text) the user edited this message and asked to resend it."""
    sig_regenerate_requested = Signal()
    """The user asked for a new answer in place of this one."""
    sig_steps_requested = Signal(int)
    """(position) show this answer's steps in the token tree."""

    def __init__(self, role: str, text: str = "", sources: bytes = b"", position: int = 0,
                 tint: bool = True, parent: QWidget | None = None,
                 colors: dict[str, str] | None = None):
        super().__init__(parent)
        self.role = role
        self.position = position
        self.text = text
        self.sources = bytearray(sources or bytes([NONE]) * len(text))
        self.tint = tint
        self.by_source = False  # tint accepted draft tokens by who proposed them
        self.colors = colors or LIGHT_COLORS  # markdown colours of the current appearance
        self.code_blocks: list[str] = []
        self._dirty = True
        self.setObjectName("userMessage" if role == "user" else "assistantMessage")
        self.setFrameShape(QFrame.Shape.StyledPanel)

        self.who = QLabel("You" if role == "user" else "Assistant")
        self.who.setObjectName("messageRole")
        self.browser = AutoHeightBrowser(self)
        self.browser.anchorClicked.connect(self._on_anchor)
        self.footer = QLabel("")
        self.footer.setObjectName("messageFooter")
        self.copy_button = QPushButton("Copy")
        self.copy_button.setFlat(True)
        self.copy_button.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.text))
        self.action_button = QPushButton("Edit" if role == "user" else "Regenerate")
        self.action_button.setFlat(True)
        self.action_button.clicked.connect(self._on_action)
        self.steps_button = QPushButton("Steps")
        self.steps_button.setFlat(True)
        self.steps_button.setToolTip("Replay this answer's token trees")
        self.steps_button.setVisible(False)
        self.steps_button.clicked.connect(lambda: self.sig_steps_requested.emit(self.position))
        who = "your message" if role == "user" else "the answer"
        describe(self.browser, "Your message" if role == "user" else "Answer",
                 None if role == "user" else
                 "Tinted green: drafted and accepted; orange: the target's own tokens")
        describe(self.copy_button, f"Copy {who}", f"Copy {who} to the clipboard")
        describe(self.action_button, "Edit message" if role == "user" else "Regenerate answer",
                 "Edit this message and resend it" if role == "user" else
                 "Replace this answer with a new one")

        header = QHBoxLayout()
        header.addWidget(self.who)
        header.addStretch(1)
        for b in (self.steps_button, self.copy_button, self.action_button):
            header.addWidget(b)
        self.editor = QPlainTextEdit()
        self.editor.setVisible(False)
        describe(self.editor, "Edit message", "Edit the message, then Resend")
        self.resend_button = QPushButton("Resend")
        self.resend_button.clicked.connect(self._on_resend)
        self.cancel_edit_button = QPushButton("Cancel")
        self.cancel_edit_button.clicked.connect(lambda: self.set_editing(False))
        describe(self.resend_button, "Resend", "Replace this message and everything after it")
        describe(self.cancel_edit_button, "Cancel editing", "Keep the message as it was")
        edit_row = QHBoxLayout()
        edit_row.addStretch(1)
        edit_row.addWidget(self.cancel_edit_button)
        edit_row.addWidget(self.resend_button)
        self.edit_bar = QWidget()
        self.edit_bar.setLayout(edit_row)
        self.edit_bar.setVisible(False)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 4, 8, 4)
        layout.setSpacing(2)
        layout.addLayout(header)
        layout.addWidget(self.browser)
        layout.addWidget(self.editor)
        layout.addWidget(self.edit_bar)
        layout.addWidget(self.footer)
        self.footer.setVisible(role == "assistant")
        self.refresh()

    # ---- content ----
    def append_text(self, text: str, sources: bytes) -> None:
        self.text += text
        self.sources += sources[: len(text)].ljust(len(text), bytes([TARGET]))
        self._dirty = True

    def append_step(self, step: StepEvent) -> None:
        self.append_text(step.text, step_sources(step))

    def set_tint(self, tint: bool) -> None:
        if tint != self.tint:
            self.tint = tint
            self._dirty = True
            self.refresh()

    def set_tint_by_source(self, on: bool) -> None:
        if on != self.by_source:
            self.by_source = on
            self._dirty = True
            self.refresh()

    def set_colors(self, colors: dict[str, str]) -> None:
        """Re-render with the markdown colours of a new appearance (light/dark)."""
        if colors != self.colors:
            self.colors = colors
            self._dirty = True
            self.refresh()

    def set_footer(self, stats: dict, reason: str | None, finished: bool = True) -> None:
        self.footer.setText(footer_text(stats, reason, finished))

    def set_streaming(self, streaming: bool) -> None:
        self.action_button.setEnabled(not streaming)
        if streaming:
            self.footer.setText("generating…")

    def refresh(self) -> None:
        """Re-render if the text changed since the last frame."""
        if not self._dirty:
            return
        self._dirty = False
        shown = self.text if self.text else ("…" if self.role == "assistant" else "")
        rendered = render(shown, bytes(self.sources) if self.text else None,
                          tint=self.tint and self.role == "assistant", colors=self.colors,
                          by_source=self.by_source)
        self.code_blocks = rendered.code_blocks
        self.browser.setHtml(rendered.html)

    # ---- actions ----
    def set_editing(self, editing: bool) -> None:
        self.editor.setVisible(editing)
        self.edit_bar.setVisible(editing)
        self.browser.setVisible(not editing)
        if editing:
            self.editor.setPlainText(self.text)
            self.editor.setFocus()

    def _on_action(self) -> None:
        if self.role == "user":
            self.set_editing(True)
        else:
            self.sig_regenerate_requested.emit()

    def _on_resend(self) -> None:
        text = self.editor.toPlainText().strip()
        if text:
            self.set_editing(False)
            self.sig_edit_resend_requested.emit(self.position, text)

    def _on_anchor(self, url: QUrl) -> None:
        if url.scheme() == COPY_SCHEME:
            index = int(url.path() or url.toString().split(":", 1)[1])
            if 0 <= index < len(self.code_blocks):
                QGuiApplication.clipboard().setText(self.code_blocks[index])
        elif url.scheme() in ("http", "https"):
            QDesktopServices.openUrl(url)
