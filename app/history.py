"""Conversation history in SQLite (WAL), in the platform's app-data folder.

An answer is written as it streams (`update_message` once per repaint), so killing the app loses
nothing that was on screen; such a message reopens with `finished = False`. A finished answer's
per-step records (app.step_records) are stored with it for tree replay after a restart.
The store is plain sqlite3; only `default_history_path` asks Qt where app data lives.
A write that fails (disk full, read-only folder) is rolled back - what was saved before stays
intact - and becomes one HistoryError, or a call to `on_error` (the window's banner).
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import CanopyError

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    system_prompt TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL DEFAULT '',
    sources BLOB,
    stats TEXT,
    stop_reason TEXT,
    finished INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, position);
"""
# columns added after the first release: (table, column, declaration), added on open if missing
MIGRATIONS = (("messages", "steps", "BLOB"),)


@dataclass
class Conversation:
    id: int
    title: str
    system_prompt: str
    updated: float


@dataclass
class Message:
    id: int
    conversation_id: int
    position: int
    role: str  # "user" | "assistant"
    content: str
    sources: bytes = b""  # one byte per character of content: markdown.NONE/TARGET/SOURCE_CODES
    stats: dict = field(default_factory=dict)
    stop_reason: str | None = None
    finished: bool = True


class HistoryError(CanopyError):
    """The conversation history could not be read or saved."""


def _saving(method):
    """Roll back a failed write and report it once, clearly; the store stays usable."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as e:
            try:
                self._db.rollback()
            except sqlite3.Error:
                pass
            error = HistoryError(
                f"Could not save the conversation history to {self.path}: {e}. Free some disk "
                "space (or make the folder writable); what was saved before is kept.")
            if self.on_error is None:
                raise error from e
            self.on_error(str(error))
            return None

    return wrapper


def default_history_path() -> Path:
    from PySide6.QtCore import QStandardPaths

    folder = Path(QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation))
    return folder / "history.sqlite3"


class HistoryStore:
    """Conversations and their messages. One connection, used from the GUI thread."""

    def __init__(self, path: str | Path, on_error: Callable[[str], None] | None = None):
        self.path = Path(path)
        self.on_error = on_error  # failed writes: called with the message instead of raising
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path))
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a kill
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
            for table, column, decl in MIGRATIONS:
                have = {r["name"] for r in self._db.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
            self._db.commit()
        except (OSError, sqlite3.Error) as e:
            raise HistoryError(
                f"Cannot open the conversation history {self.path}: {e}. Move the file away "
                "(a new history is started) or free some disk space.") from e

    def close(self) -> None:
        self._db.close()

    # ---- conversations ----
    @_saving
    def create_conversation(self, title: str = "New chat", system_prompt: str = "") -> int:
        now = time.time()
        cur = self._db.execute(
            "INSERT INTO conversations (title, system_prompt, created, updated) VALUES (?,?,?,?)",
            (title, system_prompt, now, now),
        )
        self._db.commit()
        return int(cur.lastrowid)

    @_saving
    def rename_conversation(self, conversation_id: int, title: str) -> None:
        self._db.execute("UPDATE conversations SET title=? WHERE id=?", (title, conversation_id))
        self._db.commit()

    @_saving
    def set_system_prompt(self, conversation_id: int, system_prompt: str) -> None:
        self._db.execute(
            "UPDATE conversations SET system_prompt=? WHERE id=?", (system_prompt, conversation_id)
        )
        self._db.commit()

    @_saving
    def delete_conversation(self, conversation_id: int) -> None:
        self._db.execute("DELETE FROM conversations WHERE id=?", (conversation_id,))
        self._db.commit()

    def conversation(self, conversation_id: int) -> Conversation | None:
        row = self._db.execute(
            "SELECT * FROM conversations WHERE id=?", (conversation_id,)
        ).fetchone()
        return _conversation(row) if row else None

    def conversations(self) -> list[Conversation]:
        rows = self._db.execute("SELECT * FROM conversations ORDER BY updated DESC, id DESC")
        return [_conversation(r) for r in rows]

    def search(self, query: str) -> list[Conversation]:
        """Conversations whose title or any message contains `query` (case-insensitive)."""
        if not query.strip():
            return self.conversations()
        like = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._db.execute(
            "SELECT * FROM conversations c WHERE c.title LIKE ? ESCAPE '\\' OR EXISTS ("
            " SELECT 1 FROM messages m WHERE m.conversation_id = c.id"
            " AND m.content LIKE ? ESCAPE '\\') ORDER BY updated DESC, id DESC",
            (like, like),
        )
        return [_conversation(r) for r in rows]

    # ---- messages ----
    @_saving
    def add_message(
        self, conversation_id: int, role: str, content: str = "", *, finished: bool = True
    ) -> int:
        row = self._db.execute(
            "SELECT COALESCE(MAX(position), -1) + 1 FROM messages WHERE conversation_id=?",
            (conversation_id,),
        ).fetchone()
        now = time.time()
        cur = self._db.execute(
            "INSERT INTO messages (conversation_id, position, role, content, finished, created)"
            " VALUES (?,?,?,?,?,?)",
            (conversation_id, row[0], role, content, int(finished), now),
        )
        self._touch(conversation_id, now)
        self._db.commit()
        return int(cur.lastrowid)

    @_saving
    def update_message(
        self,
        message_id: int,
        content: str,
        *,
        sources: bytes | None = None,
        stats: dict | None = None,
        stop_reason: str | None = None,
        finished: bool | None = None,
    ) -> None:
        """Write the message as it is now; called repeatedly while an answer streams."""
        sets, args = ["content=?"], [content]
        if sources is not None:
            sets.append("sources=?")
            args.append(bytes(sources))
        if stats is not None:
            sets.append("stats=?")
            args.append(json.dumps(stats))
        if stop_reason is not None:
            sets.append("stop_reason=?")
            args.append(stop_reason)
        if finished is not None:
            sets.append("finished=?")
            args.append(int(finished))
        self._db.execute(f"UPDATE messages SET {', '.join(sets)} WHERE id=?", (*args, message_id))
        self._db.commit()

    def messages(self, conversation_id: int) -> list[Message]:
        rows = self._db.execute(
            "SELECT * FROM messages WHERE conversation_id=? ORDER BY position", (conversation_id,)
        )
        return [_message(r) for r in rows]

    @_saving
    def set_steps(self, message_id: int, steps: list) -> None:
        """Store an answer's StepEvents (compactly) for replay after a restart."""
        from .step_records import encode_steps

        self._db.execute("UPDATE messages SET steps=? WHERE id=?", (encode_steps(steps),
                                                                   message_id))
        self._db.commit()

    def steps(self, message_id: int) -> list:
        """The StepEvents stored with a message ([] when none were kept or they are unreadable)."""
        from .step_records import decode_steps

        row = self._db.execute("SELECT steps FROM messages WHERE id=?", (message_id,)).fetchone()
        try:
            return decode_steps(row["steps"]) if row else []
        except ValueError:
            return []

    def positions_with_steps(self, conversation_id: int) -> set[int]:
        """Positions of the conversation's messages that have stored steps."""
        rows = self._db.execute(
            "SELECT position FROM messages WHERE conversation_id=? AND steps IS NOT NULL",
            (conversation_id,))
        return {r["position"] for r in rows}

    @_saving
    def delete_messages_from(self, conversation_id: int, position: int) -> None:
        """Drop the message at `position` and all later ones (edit-and-resend, regenerate)."""
        self._db.execute(
            "DELETE FROM messages WHERE conversation_id=? AND position>=?",
            (conversation_id, position),
        )
        self._db.commit()

    def _touch(self, conversation_id: int, now: float) -> None:
        self._db.execute("UPDATE conversations SET updated=? WHERE id=?", (now, conversation_id))


def _conversation(row) -> Conversation:
    return Conversation(row["id"], row["title"], row["system_prompt"], row["updated"])


def _message(row) -> Message:
    return Message(
        id=row["id"],
        conversation_id=row["conversation_id"],
        position=row["position"],
        role=row["role"],
        content=row["content"],
        sources=bytes(row["sources"] or b""),
        stats=json.loads(row["stats"]) if row["stats"] else {},
        stop_reason=row["stop_reason"],
        finished=bool(row["finished"]),
    )
