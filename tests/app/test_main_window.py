from engine.errors import ModelError
from engine.events import LoadProgress
from tests.app.fake_engine import ANSWER, FakeLoader
from tests.app.window_actions import ask as _ask
from tests.app.window_actions import loaded as _loaded


def test_chat_round_trip_regenerate_edit(qtbot, make_window):
    loader = FakeLoader()
    window = _loaded(qtbot, make_window(loader))
    window.show()
    assert window.chat.send_button.isEnabled()
    _ask(qtbot, window, "first question")
    assert [w.role for w in window.chat.messages] == ["user", "assistant"]
    answer = window.chat.messages[-1]
    assert answer.text == ANSWER and "end of answer" in answer.footer.text()
    assert answer.steps_button.isVisibleTo(answer)
    assert window.conversations.titles() == ["first question"]
    assert loader.session.requests[-1][0] == [{"role": "user", "content": "first question"}]
    # regenerate: same history goes to the engine again, one answer remains
    with qtbot.waitSignal(window.bridge.sig_generation_finished, timeout=5000):
        window.regenerate()
    assert len(window.chat.messages) == 2
    assert loader.session.requests[-1][0] == [{"role": "user", "content": "first question"}]
    _ask(qtbot, window, "second")
    assert len(window.store.messages(window.conversation_id)) == 4
    # edit the first message and resend: later messages are replaced
    with qtbot.waitSignal(window.bridge.sig_generation_finished, timeout=5000):
        window.edit_and_resend(0, "edited question")
    roles = [(m.role, m.content) for m in window.store.messages(window.conversation_id)]
    assert roles == [("user", "edited question"), ("assistant", ANSWER)]
    assert [w.text for w in window.chat.messages] == ["edited question", ANSWER]
    # replay the steps of the answer
    window.show_steps(1)
    assert window.tree.slider.maximum() == len(window.steps_by_message[
        window.store.messages(window.conversation_id)[1].id]) - 1
    assert window.tree.slider.value() == 0


def test_stop_keeps_partial_answer(qtbot, make_window):
    loader = FakeLoader()
    loader.session.delay = 0.03
    window = _loaded(qtbot, make_window(loader))
    window.send("long answer please")
    qtbot.waitUntil(lambda: len(window.tree.steps) >= 2, timeout=5000)
    assert window.chat.stop_button.isVisibleTo(window.chat)
    with qtbot.waitSignal(window.bridge.sig_generation_aborted, timeout=5000):
        window.chat.stop_button.click()
    saved = window.store.messages(window.conversation_id)[-1]
    assert saved.finished and saved.stop_reason == "cancelled"
    assert 0 < len(saved.content) < len(ANSWER)
    assert "stopped" in window.chat.messages[-1].footer.text()
    assert window.chat.send_button.isVisibleTo(window.chat)


def test_errors_are_shown_and_app_stays_usable(qtbot, make_window):
    loader = FakeLoader()
    loader.fail = ModelError("Model folder not found: /models/t. Check the path.")
    window = make_window(loader)
    window.show()
    s = window.settings
    s.target = "/models/t"
    with qtbot.waitSignal(window.bridge.sig_failed, timeout=5000):
        window.apply_settings(s, load=True)
    assert window.banner.isVisible()
    assert window.banner.message == "Model folder not found: /models/t. Check the path."
    assert "Traceback" not in window.banner.message
    assert not window.chat.send_button.isEnabled()
    loader.fail = None
    with qtbot.waitSignal(window.bridge.sig_load_finished, timeout=5000):
        window.load_models()
    assert not window.banner.isVisible()
    loader.session.fail = "Reading layer 3 failed: disk unplugged."
    with qtbot.waitSignal(window.bridge.sig_failed, timeout=5000):
        window.send("hi")
    assert "disk unplugged" in window.banner.message
    assert [w.role for w in window.chat.messages] == ["user"]  # empty answer dropped
    loader.session.fail = None
    _ask(qtbot, window, "again")
    assert window.chat.messages[-1].text == ANSWER


def test_internal_errors_are_one_readable_line(qtbot, make_window):
    loader = FakeLoader()
    window = _loaded(qtbot, make_window(loader))

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")
        yield

    loader.session.chat = broken
    with qtbot.waitSignal(window.bridge.sig_failed, timeout=5000):
        window.send("hi")
    assert window.banner.message.startswith("Internal error: ZeroDivisionError")
    assert "\n" not in window.banner.message


def test_first_run_builds_demo_pair(qtbot, make_window, monkeypatch, tmp_path):
    import engine.formats.demo

    def fake_build(home=None, *, progress=None, **kw):
        for i in range(3):
            progress(LoadProgress("building", i, 3))
        return tmp_path / "t", tmp_path / "d"

    monkeypatch.setattr(engine.formats.demo, "build_demo_pair", fake_build)
    loader = FakeLoader()
    window = make_window(loader)
    window.show()
    window.start()
    assert window.first_run.isVisible() and not window.chat.send_button.isEnabled()
    with qtbot.waitSignal(window.bridge.sig_load_finished, timeout=5000):
        window.first_run.build_button.click()
    assert not window.first_run.isVisible()
    assert loader.calls[-1][:2] == (str(tmp_path / "t"), str(tmp_path / "d"))
    assert window.settings.target == str(tmp_path / "t")
    assert window.chat.send_button.isEnabled()


def test_conversations_persist_across_windows(qtbot, make_window):
    window = _loaded(qtbot, make_window())
    _ask(qtbot, window, "about trees")
    first = window.conversation_id
    window.new_conversation()
    _ask(qtbot, window, "about rivers")
    window.rename_conversation(window.conversation_id, "Rivers")
    assert set(window.conversations.titles()) == {"about trees", "Rivers"}
    window.conversations.search.setText("trees")
    assert window.conversations.titles() == ["about trees"]
    window.conversations.search.setText("")
    window.delete_conversation(window.conversation_id)
    assert window.conversations.titles() == ["about trees"]
    assert window.chat.messages == []
    window.bridge.shutdown()
    again = make_window()
    assert again.conversations.titles() == ["about trees"]
    again.open_conversation(first)
    assert [w.text for w in again.chat.messages] == ["about trees", ANSWER]
