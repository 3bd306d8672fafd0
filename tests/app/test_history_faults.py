"""A full disk or a damaged file while saving history: one clear error, nothing saved is lost."""

from __future__ import annotations

import sqlite3

import pytest

from app.history import HistoryError, HistoryStore
from tests.tmpfs import tiny_tmpfs


def fill(store: HistoryStore, cid: int) -> None:
    """Cap the database at its current size: the next growth fails with SQLITE_FULL."""
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store._db.execute(f"PRAGMA max_page_count={pages}")


def saved_state(path):
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = con.execute("SELECT role, content, finished FROM messages ORDER BY id").fetchall()
    con.close()
    return rows


def test_disk_full_is_one_clear_error_and_keeps_what_was_saved(tmp_path):
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(path)
    cid = store.create_conversation("c")
    store.add_message(cid, "user", "hello")
    mid = store.add_message(cid, "assistant", "", finished=False)
    store.update_message(mid, "Hi there", finished=False)
    before = saved_state(path)
    fill(store, cid)
    with pytest.raises(HistoryError, match=f"{path}: database or disk is full. Free some disk"):
        store.update_message(mid, "x" * 200_000)
    with pytest.raises(HistoryError):
        store.add_message(cid, "user", "y" * 200_000)
    assert saved_state(path) == before
    store.update_message(mid, "Hi there!", finished=True)  # small writes still fit: usable
    store.close()
    assert saved_state(path)[-1] == ("assistant", "Hi there!", 1)


def test_on_error_reports_instead_of_raising(tmp_path):
    seen = []
    store = HistoryStore(tmp_path / "h.sqlite3", on_error=seen.append)
    cid = store.create_conversation("c")
    fill(store, cid)
    assert store.add_message(cid, "user", "z" * 200_000) is None
    assert len(seen) == 1 and "database or disk is full" in seen[0]
    store.close()


def test_really_full_disk(tmp_path):
    with tiny_tmpfs(tmp_path / "full", "160k") as mnt:
        if mnt is None:
            pytest.skip("cannot mount a tmpfs here (needs root on Linux)")
        path = mnt / "h.sqlite3"
        store = HistoryStore(path)
        cid = store.create_conversation("c")
        ids = []
        with pytest.raises(HistoryError, match="full"):
            for i in range(1000):
                ids.append(store.add_message(cid, "user", f"{i} " + "w" * 4000))
        store.close()
        rows = saved_state(path)
        assert len(rows) == len(ids) > 3
        assert all(content.startswith(f"{i} ") for i, (_, content, _) in enumerate(rows))


def test_damaged_file_is_a_clear_error(tmp_path):
    path = tmp_path / "h.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(HistoryError, match=f"Cannot open the conversation history {path}"):
        HistoryStore(path)


def test_window_shows_a_banner_when_history_cannot_be_saved(qtbot, make_window):
    window = make_window()
    fill(window.store, window.store.create_conversation("c"))
    window.store.rename_conversation(1, "t" * 300_000)
    assert "History not saved" in window.banner.title.text()
    assert "database or disk is full" in window.banner.message
