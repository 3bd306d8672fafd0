"""The chat: messages, the prompt box with Send/Stop, system prompt, context usage, tint toggle.

A view only: it emits `sig_*_requested` signals and the main window talks to the engine bridge
and the history store. Streaming answers grow via `append_step` and repaint on `refresh`.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from engine.events import StepEvent

from .accessibility import describe
from .history import Message
from .markdown import LIGHT_COLORS
from .message_widget import MessageWidget


class PromptEdit(QPlainTextEdit):
    """Enter sends, Shift+Enter adds a line."""

    sig_submit = Signal()

    def keyPressEvent(self, event):
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and not (
            event.modifiers() & Qt.KeyboardModifier.ShiftModifier
        ):
            self.sig_submit.emit()
            return
        super().keyPressEvent(event)


class ChatView(QWidget):
    sig_send_requested = Signal(str)
    """(text) the user sent a new message."""
    sig_stop_requested = Signal()
    """Stop the answer being generated."""
    sig_regenerate_requested = Signal()
    """Replace the last answer with a new one."""
    sig_edit_resend_requested = Signal(int, str)
    """(position, text) replace the user message at `position` and everything after it."""
    sig_system_prompt_changed = Signal(str)
    """(text) the system prompt was edited (applies to the next request)."""
    sig_tint_toggled = Signal(bool)
    """(on) tint draft-accepted vs target tokens."""
    sig_steps_requested = Signal(int)
    """(position) show the token trees of the answer at `position`."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.messages: list[MessageWidget] = []
        self._streaming: MessageWidget | None = None
        self._tint = True
        self._by_source = False  # tint drafted tokens by source (View menu)
        self._colors = LIGHT_COLORS

        self.system_edit = QLineEdit()
        self.system_edit.setPlaceholderText("System prompt (optional)")
        describe(self.system_edit, "System prompt",
                 "Instructions for the model, sent before the conversation (optional)")
        self.system_edit.editingFinished.connect(
            lambda: self.sig_system_prompt_changed.emit(self.system_edit.text())
        )
        self.tint_check = QCheckBox("Tint tokens")
        self.tint_check.setChecked(True)
        describe(self.tint_check, "Tint tokens",
                 "Green: drafted and accepted. Orange: the target's own token.")
        self.tint_check.toggled.connect(self.set_tint)
        self.tint_check.toggled.connect(self.sig_tint_toggled)
        self.legend = legend = QLabel("")
        self._set_legend()
        self.context_bar = QProgressBar()
        self.context_bar.setObjectName("contextBar")
        self.context_bar.setMinimumWidth(170)
        self.context_bar.setMaximumWidth(240)
        self.context_bar.setTextVisible(True)
        describe(self.context_bar, "Context used", "Tokens of the model's context in use")
        self.set_context(0, 0)
        top = QHBoxLayout()
        top.addWidget(self.tint_check)
        top.addWidget(legend)
        top.addStretch(1)
        top.addWidget(self.context_bar)

        self._list = QWidget()
        self._list.setObjectName("messageList")
        self._list_layout = QVBoxLayout(self._list)
        self._list_layout.setContentsMargins(6, 6, 6, 6)
        self._list_layout.setSpacing(8)
        self._list_layout.addStretch(1)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setWidget(self._list)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        describe(self.scroll, "Conversation", "The messages of this conversation")
        self.placeholder = QLabel("")
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWordWrap(True)
        self.placeholder.setObjectName("chatPlaceholder")
        self._list_layout.insertWidget(0, self.placeholder)

        self.prompt = PromptEdit()
        self.prompt.setPlaceholderText("Ask anything…  (Enter sends, Shift+Enter: new line)")
        self.prompt.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.prompt.setFixedHeight(64)
        self.prompt.sig_submit.connect(self._on_send)
        describe(self.prompt, "Message", "Type a message. Enter sends, Shift+Enter: new line")
        self.send_button = QPushButton("Send")
        self.send_button.setObjectName("sendButton")
        self.send_button.clicked.connect(self._on_send)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("stopButton")
        self.stop_button.clicked.connect(self.sig_stop_requested)
        self.stop_button.setVisible(False)
        describe(self.send_button, "Send", "Send the message (Enter)")
        describe(self.stop_button, "Stop", "Stop the answer (Esc)")
        self.regenerate_button = QPushButton("Regenerate")
        self.regenerate_button.clicked.connect(self.sig_regenerate_requested)
        describe(self.regenerate_button, "Regenerate", "Replace the last answer with a new one")
        buttons = QVBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.regenerate_button)
        bottom = QHBoxLayout()
        bottom.addWidget(self.prompt, 1)
        bottom.addLayout(buttons)
        # only while the chat has focus: Esc also closes the find bar and dialogs
        QShortcut(QKeySequence("Escape"), self, activated=self._on_escape,
                  context=Qt.ShortcutContext.WidgetWithChildrenShortcut)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.system_edit)
        layout.addLayout(top)
        layout.addWidget(self.scroll, 1)
        layout.addLayout(bottom)
        self._update_buttons()

    # ---- building the list ----
    def clear(self) -> None:
        for w in self.messages:
            w.setParent(None)
            w.deleteLater()
        self.messages = []
        self._streaming = None
        self._update_buttons()

    def set_messages(self, messages: list[Message]) -> None:
        """Show a stored conversation."""
        self.clear()
        for m in messages:
            w = self._add(m.role, m.content, m.sources)
            if m.role == "assistant":
                w.set_footer(m.stats, m.stop_reason, m.finished)
        self._update_buttons()
        self.scroll_to_bottom()

    def show_steps_buttons(self, positions: set[int]) -> None:
        """Offer step replay on the answers at `positions` (their steps are stored)."""
        for w in self.messages:
            w.steps_button.setVisible(w.position in positions)

    def add_user_message(self, text: str) -> MessageWidget:
        w = self._add("user", text)
        self.scroll_to_bottom()
        return w

    def begin_answer(self) -> MessageWidget:
        """Add an empty assistant message that the next steps stream into."""
        w = self._add("assistant", "")
        w.set_streaming(True)
        self._streaming = w
        self.set_generating(True)
        self.scroll_to_bottom()
        return w

    def append_step(self, step: StepEvent) -> None:
        if self._streaming is not None:
            self._streaming.append_step(step)

    def refresh(self) -> None:
        """Repaint what changed (called once per frame by the main window)."""
        if self._streaming is None:
            return
        bar = self.scroll.verticalScrollBar()
        at_bottom = bar.value() >= bar.maximum() - 40
        self._streaming.refresh()
        if at_bottom:
            self.scroll_to_bottom()

    def finish_answer(self, stats: dict, reason: str | None, finished: bool = True) -> None:
        w = self._streaming
        if w is not None:
            w.refresh()
            w.set_streaming(False)
            w.set_footer(stats, reason, finished)
        self._streaming = None
        self.set_generating(False)

    def remove_from(self, position: int) -> None:
        """Drop messages at `position` and after (edit-and-resend, regenerate)."""
        keep = [w for w in self.messages if w.position < position]
        for w in self.messages[len(keep):]:
            w.setParent(None)
            w.deleteLater()
        self.messages = keep
        self._update_buttons()

    @property
    def streaming_message(self) -> MessageWidget | None:
        return self._streaming

    # ---- state ----
    def set_generating(self, generating: bool) -> None:
        self.send_button.setVisible(not generating)
        self.stop_button.setVisible(generating)
        self._update_buttons()

    @property
    def generating(self) -> bool:
        return self.stop_button.isVisible() or self._streaming is not None

    def set_ready(self, ready: bool, hint: str = "") -> None:
        """Whether a model is loaded; `hint` shows in the empty chat when not."""
        self._ready = ready
        self.placeholder.setText(hint)
        self.placeholder.setVisible(bool(hint) and not self.messages)
        self._update_buttons()

    def set_context(self, used: int, total: int) -> None:
        self.context_bar.setMaximum(max(total, 1))
        self.context_bar.setValue(min(used, max(total, 1)))
        self.context_bar.setFormat(f"context {used} / {total}" if total else "context –")

    def set_tint(self, tint: bool) -> None:
        self._tint = tint
        if self.tint_check.isChecked() != tint:
            self.tint_check.setChecked(tint)
        for w in self.messages:
            w.set_tint(tint)

    def set_tint_by_source(self, on: bool) -> None:
        """Tint accepted draft tokens by who proposed them: the draft model, prompt lookup,
        the n-gram pool or the Jacobi window (else all alike, as "draft")."""
        self._by_source = on
        self._set_legend()
        for w in self.messages:
            w.set_tint_by_source(on)

    def set_colors(self, colors: dict[str, str]) -> None:
        """Markdown colours (tints, code blocks) for the current appearance, on every message."""
        self._colors = colors
        self._set_legend()
        for w in self.messages:
            w.set_colors(colors)

    def _set_legend(self) -> None:
        c = self._colors
        names = ([("draft", "draft model"), ("prompt", "prompt"), ("ngram", "n-gram pool"),
                  ("jacobi", "Jacobi")] if self._by_source else [("draft", "draft")])
        self.legend.setText(" ".join(
            f'<span style="background-color:{c[key]}">&nbsp;{label}&nbsp;</span>'
            for key, label in names + [("target", "target")]))

    def set_system_prompt(self, text: str) -> None:
        self.system_edit.setText(text)

    def scroll_to_bottom(self) -> None:
        QTimer.singleShot(0, lambda: self.scroll.verticalScrollBar().setValue(
            self.scroll.verticalScrollBar().maximum()))

    # ---- internals ----
    def _add(self, role: str, text: str, sources: bytes = b"") -> MessageWidget:
        w = MessageWidget(role, text, sources, position=len(self.messages), tint=self._tint,
                          colors=self._colors)
        w.set_tint_by_source(self._by_source)
        w.sig_edit_resend_requested.connect(self.sig_edit_resend_requested)
        w.sig_regenerate_requested.connect(self.sig_regenerate_requested)
        w.sig_steps_requested.connect(self.sig_steps_requested)
        self.messages.append(w)
        self._list_layout.insertWidget(self._list_layout.count() - 1, w)
        self.placeholder.setVisible(False)
        self._update_buttons()
        return w

    def _on_send(self) -> None:
        text = self.prompt.toPlainText().strip()
        if not text or self.generating or not getattr(self, "_ready", True):
            return
        self.prompt.clear()
        self.sig_send_requested.emit(text)

    def _on_escape(self) -> None:
        if self.generating:
            self.sig_stop_requested.emit()

    def _update_buttons(self) -> None:
        ready = getattr(self, "_ready", True)
        busy = self._streaming is not None or self.stop_button.isVisible()
        self.send_button.setEnabled(ready and not busy)
        has_answer = bool(self.messages) and self.messages[-1].role == "assistant"
        self.regenerate_button.setEnabled(ready and not busy and has_answer)
        for w in self.messages:
            w.action_button.setEnabled(ready and not busy)
            w.action_button.setVisible(w.role == "user" or w is self.messages[-1])
