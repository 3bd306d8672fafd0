"""The window passes its conversation id, so a follow-up reuses the conversation's KV caches."""

from tests.app.fake_engine import FakeLoader
from tests.app.test_main_window import _ask, _loaded


def test_conversation_id_reaches_the_engine_and_delete_forgets_it(qtbot, make_window):
    loader = FakeLoader()
    window = _loaded(qtbot, make_window(loader))
    _ask(qtbot, window, "first")
    first = window.conversation_id
    _ask(qtbot, window, "second")
    assert loader.session.conversations == [first, first]
    window.new_conversation()
    _ask(qtbot, window, "other chat")
    assert loader.session.conversations[-1] not in (None, first)
    window.delete_conversation(first)
    assert first in window.bridge._forgotten


def test_follow_up_reuses_the_cache_with_the_real_engine(qtbot, make_window, tiny_pair):
    from app.bridge import default_loader

    window = make_window(default_loader)
    s = window.settings
    s.target, s.draft, s.budget_mb, s.mode, s.max_tokens = (
        str(tiny_pair["target"]), str(tiny_pair["noisy"]), 0, "tree", 12)
    with qtbot.waitSignal(window.bridge.sig_load_finished, timeout=60000):
        window.apply_settings(s, load=True)
    _ask_real(qtbot, window, "hello")
    first = window.store.messages(window.conversation_id)[-1].stats
    assert first["prefill_cached_tokens"] == 0 and first["kv_cache_bytes"] > 0
    _ask_real(qtbot, window, "and then?")
    second = window.store.messages(window.conversation_id)[-1].stats
    # the whole first turn (prompt, answer) came from the cache, only the new turn was prefilled
    assert second["prefill_cached_tokens"] >= first["prompt_tokens"]
    assert "KV cache" in window.live.memory.text()
    assert "prompt tokens reused" in window.live.memory.text()


def _ask_real(qtbot, window, text):
    with qtbot.waitSignal(window.bridge.sig_generation_finished, timeout=60000):
        window.send(text)
    qtbot.waitUntil(lambda: not window.bridge.busy, timeout=5000)


def test_reopened_chat_after_restart_reuses_the_disk_cache(qtbot, make_window, tiny_pair,
                                                           tmp_path):
    from app.bridge import default_loader

    def start():
        window = make_window(default_loader, history=tmp_path / "chat.sqlite3")
        s = window.settings
        s.target, s.draft, s.budget_mb, s.mode, s.max_tokens = (
            str(tiny_pair["target"]), str(tiny_pair["noisy"]), 0, "tree", 8)
        with qtbot.waitSignal(window.bridge.sig_load_finished, timeout=60000):
            window.apply_settings(s, load=True)
        return window

    first = start()
    _ask_real(qtbot, first, "hello")
    cid = first.conversation_id
    first.bridge.shutdown(timeout=30)  # as when the app quits: caches flushed to disk
    assert list((tmp_path / "prompt-cache").glob("*.safetensors"))
    second = start()
    second.open_conversation(cid)
    _ask_real(qtbot, second, "more")
    stats = second.store.messages(cid)[-1].stats
    assert stats["prefill_cached_tokens"] > 0
