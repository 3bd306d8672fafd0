"""Find in conversation (⌘F): a bar above the chat that selects matches message by message."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QShortcut, QTextCursor
from PySide6.QtWidgets import QHBoxLayout, QLabel, QLineEdit, QPushButton, QWidget

from .accessibility import describe


class FindBar(QWidget):
    """Searches the text of `chat.messages`; Enter: next match, Shift+Enter: previous, Esc closes.

    A match is shown by selecting it in its message and scrolling that message into view.
    """

    def __init__(self, chat, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("findBar")
        self.chat = chat
        self.matches: list[tuple[int, int, int]] = []  # (message index, start, end)
        self.current = -1
        self.edit = QLineEdit()
        self.edit.setPlaceholderText("Find in conversation")
        self.edit.setClearButtonEnabled(True)
        self.edit.textChanged.connect(lambda _: self.search())
        self.edit.returnPressed.connect(lambda: self.step(1))
        self.count = QLabel("")
        previous, following, close = QPushButton("◀"), QPushButton("▶"), QPushButton("Done")
        previous.clicked.connect(lambda: self.step(-1))
        following.clicked.connect(lambda: self.step(1))
        close.clicked.connect(self.close_bar)
        describe(self.edit, "Find in conversation", "Text to find in this conversation's messages")
        describe(previous, "Previous match", "Previous match (Shift+Enter)")
        describe(following, "Next match", "Next match (Enter)")
        describe(close, "Close find", "Close the find bar (Esc)")
        QShortcut(QKeySequence("Escape"), self.edit, activated=self.close_bar,
                  context=Qt.ShortcutContext.WidgetShortcut)
        QShortcut(QKeySequence("Shift+Return"), self.edit, activated=lambda: self.step(-1),
                  context=Qt.ShortcutContext.WidgetShortcut)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 2, 4, 2)
        layout.addWidget(self.edit, 1)
        layout.addWidget(self.count)
        for b in (previous, following, close):
            layout.addWidget(b)
        self.hide()

    def open(self) -> None:
        self.show()
        self.edit.setFocus()
        self.edit.selectAll()
        self.search()

    def close_bar(self) -> None:
        self.hide()
        self.chat.prompt.setFocus()

    def search(self) -> None:
        """Find every case-insensitive occurrence and show the first."""
        needle = self.edit.text()
        self.matches, self.current = [], -1
        if needle:
            for i, w in enumerate(self.chat.messages):
                doc = w.browser.document()
                found = doc.find(needle, 0)  # document positions (code blocks are tables)
                while not found.isNull():
                    self.matches.append((i, found.selectionStart(), found.selectionEnd()))
                    found = doc.find(needle, found)
        self.step(1)

    def step(self, delta: int) -> None:
        if not self.matches:
            self.count.setText("no matches" if self.edit.text() else "")
            return
        self.current = (self.current + delta) % len(self.matches)
        index, start, end = self.matches[self.current]
        widget = self.chat.messages[index]
        cursor = QTextCursor(widget.browser.document())
        cursor.setPosition(start)
        cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
        widget.browser.setTextCursor(cursor)
        self.chat.scroll.ensureWidgetVisible(widget)
        self.count.setText(f"{self.current + 1} of {len(self.matches)}")


