"""The conversations sidebar: search, list, new / rename / delete."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .accessibility import describe
from .history import Conversation

ID_ROLE = Qt.ItemDataRole.UserRole


class ConversationList(QWidget):
    sig_conversation_selected = Signal(int)
    """(conversation_id) show this conversation."""
    sig_new_requested = Signal()
    """Start a new conversation."""
    sig_rename_requested = Signal(int, str)
    """(conversation_id, title) the user edited a title in place."""
    sig_delete_requested = Signal(int)
    """(conversation_id) the user asked to delete it (the window confirms)."""
    sig_search_changed = Signal(str)
    """(query) filter the list by title and message text."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search conversations")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self.sig_search_changed)
        self.list = QListWidget()
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.currentItemChanged.connect(self._on_current)
        self.list.itemChanged.connect(self._on_item_changed)
        new = QPushButton("New")
        new.clicked.connect(self.sig_new_requested)
        rename = QPushButton("Rename")
        rename.clicked.connect(self._on_rename)
        delete = QPushButton("Delete")
        delete.clicked.connect(self._on_delete)
        buttons = QHBoxLayout()
        for b in (new, rename, delete):
            buttons.addWidget(b)
        describe(self.search, "Search conversations", "Filter conversations by title and text")
        describe(self.list, "Conversations", "Your conversations; double-click to rename")
        describe(new, "New chat", "Start a new conversation")
        describe(rename, "Rename conversation", "Rename the selected conversation")
        describe(delete, "Delete conversation", "Delete the selected conversation")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.search)
        layout.addWidget(self.list, 1)
        layout.addLayout(buttons)
        self._filling = False

    def set_conversations(self, conversations: list[Conversation], current: int | None) -> None:
        self._filling = True
        self.list.clear()
        for c in conversations:
            item = QListWidgetItem(c.title)
            item.setData(ID_ROLE, c.id)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
            item.setToolTip(c.title)
            self.list.addItem(item)
            if c.id == current:
                self.list.setCurrentItem(item)
        self._filling = False

    def current_id(self) -> int | None:
        item = self.list.currentItem()
        return item.data(ID_ROLE) if item else None

    def titles(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())]

    def _on_current(self, item, _previous) -> None:
        if item is not None and not self._filling:
            self.sig_conversation_selected.emit(item.data(ID_ROLE))

    def _on_item_changed(self, item) -> None:
        if not self._filling and item.text().strip():
            self.sig_rename_requested.emit(item.data(ID_ROLE), item.text().strip())

    def _on_rename(self) -> None:
        item = self.list.currentItem()
        if item is not None:
            self.list.editItem(item)

    def _on_delete(self) -> None:
        conversation_id = self.current_id()
        if conversation_id is not None:
            self.sig_delete_requested.emit(conversation_id)
