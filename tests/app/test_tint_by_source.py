"""The chat tints accepted draft tokens by who proposed them (draft model, prompt lookup, n-gram
pool, Jacobi window) when View > Tint Tokens by Source is on; off, all alike as "draft"."""

from dataclasses import replace

from app.chat_view import ChatView
from app.markdown import DRAFT, LIGHT_COLORS, NGRAM, PROMPT, TARGET, render
from app.steps import step_sources
from tests.app.fake_engine import make_step


def sourced_step(index: int = 0):
    """Chain nodes 1, 3, 5 accepted (make_step, width 2): proposed by prompt, draft, n-gram."""
    step = make_step(index, ["ab", "c", "de"], 3, bonus="!")
    names = ["root"] + ["draft"] * (len(step.tree_tokens) - 1)
    for node, name in zip(step.accepted[1:], ("prompt", "draft", "ngram")):
        names[node] = name
    return replace(step, tree_sources=tuple(names))


def test_step_sources_name_each_accepted_nodes_proposer():
    step = sourced_step()
    assert step.text == "abcde!"
    assert step_sources(step) == bytes([PROMPT] * 2 + [DRAFT] + [NGRAM] * 2 + [TARGET])


def test_render_by_source_or_all_alike():
    sources = bytes([PROMPT, PROMPT, DRAFT, NGRAM, TARGET])
    by = render("abcd!", sources, by_source=True).html
    assert LIGHT_COLORS["prompt"] in by and LIGHT_COLORS["ngram"] in by
    alike = render("abcd!", sources).html
    assert LIGHT_COLORS["prompt"] not in alike and LIGHT_COLORS["ngram"] not in alike
    assert f'background-color:{LIGHT_COLORS["draft"]}">abcd<' in alike  # one draft run


def test_chat_view_toggles_source_tints_and_legend(qtbot):
    view = ChatView()
    qtbot.addWidget(view)
    view.add_user_message("hello")
    answer = view.begin_answer()
    view.append_step(sourced_step())
    view.refresh()
    assert LIGHT_COLORS["prompt"] not in answer.browser.toHtml().lower()
    view.set_tint_by_source(True)
    html = answer.browser.toHtml().lower()
    assert LIGHT_COLORS["prompt"] in html and LIGHT_COLORS["ngram"] in html
    assert LIGHT_COLORS["draft"] in html and LIGHT_COLORS["target"] in html
    assert "prompt" in view.legend.text() and "n-gram pool" in view.legend.text()
    later = view.begin_answer()  # new messages follow the toggle
    assert later.by_source
    view.set_tint(False)  # the plain tint toggle still wins
    assert LIGHT_COLORS["prompt"] not in answer.browser.toHtml().lower()


def test_view_menu_action_reaches_the_chat(make_window):
    w = make_window()
    action = w.menu_actions.tint_by_source
    view_menu = next(m.menu() for m in w.menuBar().actions() if m.text() == "&View")
    assert action in view_menu.actions() and action.isCheckable() and not action.isChecked()
    action.trigger()
    assert w.chat._by_source and "n-gram pool" in w.chat.legend.text()
    action.trigger()
    assert not w.chat._by_source


def test_tint_by_source_is_kept_between_sessions(make_window):
    """The View menu toggle is a setting: a new window (the next session, same settings file)
    starts with it as it was left, menu and chat alike."""
    first = make_window()
    assert not first.menu_actions.tint_by_source.isChecked()
    first.menu_actions.tint_by_source.trigger()
    assert first.settings.tint_by_source
    second = make_window()
    assert second.settings.tint_by_source
    assert second.menu_actions.tint_by_source.isChecked() and second.chat._by_source
    second.menu_actions.tint_by_source.trigger()
    third = make_window()
    assert not third.menu_actions.tint_by_source.isChecked() and not third.chat._by_source
