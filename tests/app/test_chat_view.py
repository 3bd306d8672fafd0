from PySide6.QtGui import QGuiApplication

from app.chat_view import ChatView
from app.markdown import DRAFT, TARGET, TINTS, render
from app.message_widget import footer_text
from app.steps import step_sources
from tests.app.fake_engine import make_step


def test_step_sources_draft_then_target():
    step = make_step(0, ["ab", "cd"], 2, bonus="E")
    assert step.text == "abcdE"
    assert step_sources(step) == bytes([DRAFT] * 4 + [TARGET])


def test_step_sources_follow_each_tokens_text_segment():
    """Two drafted byte tokens make one character "é" (the first completes nothing); the tint
    follows the engine's per-token segments, not the nodes' single-token texts ("\ufffd")."""
    from dataclasses import replace

    step = replace(make_step(0, ["\ufffd", "\ufffd"], 2, bonus="!"),
                   token_texts=("", "é", "!"), text="é!")
    assert step_sources(step) == bytes([DRAFT, TARGET])


def test_markdown_tints_and_code_blocks():
    text = "Hi **there**\n```py\nx = 1\n```\n- item"
    sources = bytes([DRAFT] * 5 + [TARGET] * (len(text) - 5))
    out = render(text, sources)
    assert f'<span style="background-color:{TINTS[DRAFT]}">Hi </span>' in out.html
    assert "<b>" in out.html and "<li>" in out.html
    assert out.code_blocks == ["x = 1"]
    assert 'href="copy:0"' in out.html
    plain = render(text, sources, tint=False)
    assert "background-color:" + TINTS[DRAFT] not in plain.html
    # an unclosed fence (mid-stream) renders as code
    assert render("```\nprint(1", None).code_blocks == ["print(1"]


def test_chat_view_streams_coloured_tokens(qtbot):
    view = ChatView()
    qtbot.addWidget(view)
    view.show()
    view.add_user_message("hello")
    answer = view.begin_answer()
    assert view.stop_button.isVisible() and not view.send_button.isVisible()
    view.append_step(make_step(0, ["Tree", " dra"], 2, bonus="ft"))
    view.append_step(make_step(1, [], 0, bonus="!"))
    view.refresh()
    html = answer.browser.toHtml().lower()
    assert TINTS[DRAFT] in html and TINTS[TARGET] in html
    assert answer.browser.toPlainText() == "Tree draft!"
    view.finish_answer({"tokens_per_second": 12.5, "time_to_first_token": 0.2,
                        "tokens_per_pass": 2.0, "generated_tokens": 4}, "eos")
    assert view.send_button.isVisible() and not view.stop_button.isVisible()
    assert "12.5 tok/s" in answer.footer.text() and "end of answer" in answer.footer.text()
    view.set_tint(False)
    assert TINTS[DRAFT] not in answer.browser.toHtml().lower()


def test_chat_view_signals(qtbot):
    view = ChatView()
    qtbot.addWidget(view)
    view.show()
    view.prompt.setPlainText("  question  ")
    with qtbot.waitSignal(view.sig_send_requested) as blocker:
        view.send_button.click()
    assert blocker.args == ["question"]
    user = view.add_user_message("question")
    view.begin_answer()
    with qtbot.waitSignal(view.sig_stop_requested):
        view.stop_button.click()
    view.finish_answer({}, "cancelled")
    user.action_button.click()  # Edit
    assert user.editor.isVisibleTo(user)
    user.editor.setPlainText("better question")
    with qtbot.waitSignal(view.sig_edit_resend_requested) as blocker:
        user.resend_button.click()
    assert blocker.args == [0, "better question"]
    with qtbot.waitSignal(view.sig_regenerate_requested):
        view.regenerate_button.click()


def test_code_copy_link(qtbot):
    view = ChatView()
    qtbot.addWidget(view)
    answer = view.begin_answer()
    answer.append_text("```\ncode here\n```", bytes([TARGET]) * 17)
    answer.refresh()
    from PySide6.QtCore import QUrl

    answer.browser.anchorClicked.emit(QUrl("copy:0"))
    assert QGuiApplication.clipboard().text() == "code here"


def test_footer_text_interrupted():
    assert footer_text({}, None, finished=False) == "interrupted"
