from app.history import HistoryStore
from tests.app.fake_engine import ANSWER


def test_conversations_crud_and_search(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    a = store.create_conversation("Rust lifetimes")
    b = store.create_conversation("Pasta recipes", system_prompt="You cook.")
    store.add_message(a, "user", "what is a borrow checker?")
    store.add_message(b, "user", "how long to boil 100% durum?")
    assert {c.title for c in store.conversations()} == {"Rust lifetimes", "Pasta recipes"}
    assert [c.id for c in store.search("BORROW")] == [a]
    assert [c.id for c in store.search("pasta")] == [b]
    assert [c.id for c in store.search("100%")] == [b]  # LIKE wildcards are literal
    assert store.search("_") == []
    store.rename_conversation(a, "Ownership")
    assert store.conversation(a).title == "Ownership"
    store.delete_conversation(b)
    assert [c.id for c in store.conversations()] == [a]
    assert store.messages(b) == []  # cascaded
    store.close()


def test_survives_reopen_and_keeps_unfinished_answer(tmp_path):
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(path)
    cid = store.create_conversation("chat")
    store.add_message(cid, "user", "hi")
    mid = store.add_message(cid, "assistant", "", finished=False)
    store.update_message(mid, "Hel", sources=b"\x01\x01\x02")
    store.update_message(mid, "Hello", sources=b"\x01\x01\x02\x02\x01")
    # no close(): like a killed process
    again = HistoryStore(path)
    messages = again.messages(cid)
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[1].content == "Hello" and not messages[1].finished
    assert messages[1].sources == b"\x01\x01\x02\x02\x01"
    again.update_message(mid, "Hello!", stats={"generated_tokens": 3}, stop_reason="eos",
                         finished=True)
    m = again.messages(cid)[1]
    assert m.finished and m.stats == {"generated_tokens": 3} and m.stop_reason == "eos"
    again.delete_messages_from(cid, 1)
    assert len(again.messages(cid)) == 1
    assert again._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again.close()
    store.close()


def test_window_saves_answer_while_streaming(qtbot, make_window, tmp_path):
    from tests.app.fake_engine import FakeLoader

    loader = FakeLoader()
    loader.session.delay = 0.03
    window = make_window(loader)
    window.apply_settings(_with_target(window.settings), load=True)
    qtbot.waitUntil(lambda: window.bridge.has_session, timeout=5000)
    window.send("tell me")
    qtbot.waitUntil(lambda: len(window.tree.steps) >= 4, timeout=5000)
    qtbot.wait(80)  # a couple of frames
    shown = window.chat.streaming_message.text
    assert shown and len(shown) < len(ANSWER)
    # read the file from another connection, as a restarted app would
    other = HistoryStore(tmp_path / "history.sqlite3")
    cid = other.conversations()[0].id
    saved = other.messages(cid)[-1]
    assert not saved.finished and saved.content and shown.startswith(saved.content)
    other.close()
    with qtbot.waitSignal(window.bridge.sig_generation_finished, timeout=10000):
        pass
    final = window.store.messages(cid)[-1]
    assert final.finished and final.content == ANSWER and final.stop_reason == "eos"


def _with_target(settings):
    settings.target, settings.draft = "/models/t", "/models/d"
    return settings
