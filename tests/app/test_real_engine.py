"""The real engine (tiny random models) end to end through the window and the screenshot path."""

import pytest
from PySide6.QtGui import QImage

from engine.testing import make_tiny_model


def _load(qtbot, window, target, draft, budget_mb=0, mode="tree", max_tokens=24):
    s = window.settings
    s.target, s.draft, s.budget_mb, s.mode, s.max_tokens = (
        str(target), str(draft), budget_mb, mode, max_tokens)
    with qtbot.waitSignal(window.bridge.sig_load_finished, timeout=60000):
        window.apply_settings(s, load=True)


def test_real_engine_through_the_window(qtbot, make_window, tiny_pair):
    from app.bridge import default_loader

    window = make_window(default_loader)
    window.show()
    _load(qtbot, window, tiny_pair["target"], tiny_pair["noisy"])
    with qtbot.waitSignal(window.bridge.sig_generation_finished, timeout=60000) as blocker:
        window.send("hello")
    finished = blocker.args[0]
    assert finished.reason in ("eos", "length")
    answer = window.chat.messages[-1]
    assert answer.text == finished.text and answer.text
    stored = window.store.messages(window.conversation_id)[-1]
    assert stored.finished and stored.content == finished.text
    assert stored.stats["generated_tokens"] == len(finished.token_ids)
    steps = window.steps_by_message[stored.id]
    assert len(steps) == finished.stats.target_passes
    assert window.tree.view.step is steps[-1]
    assert sum(window.live.tokens) == len(finished.token_ids)


@pytest.fixture(scope="module")
def streamed_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("streamed")
    target = make_tiny_model(root / "target", seed=4, hidden_size=256, num_layers=4,
                             intermediate_size=512)
    return target, make_tiny_model(root / "draft", like=target, noise=0.1, seed=5)


def test_real_streamed_target_and_stop(qtbot, make_window, streamed_pair):
    from app.bridge import default_loader

    window = make_window(default_loader)
    target, draft = streamed_pair
    _load(qtbot, window, target, draft, budget_mb=6, max_tokens=400)
    window.send("stream me")
    qtbot.waitUntil(lambda: len(window.tree.steps) >= 3, timeout=60000)
    with qtbot.waitSignal(window.bridge.sig_generation_aborted, timeout=60000):
        window.chat.stop_button.click()
    step = window.tree.steps[-1]
    assert step.layers_streamed == 4 and step.bytes_read > 0
    assert len(window.live.strip.states) == 4
    assert max(window.live.resident_mb) <= 6
    # still usable after Stop: a full short answer
    window.settings.max_tokens = 8
    with qtbot.waitSignal(window.bridge.sig_generation_finished, timeout=60000):
        window.send("again")


def test_screenshot_mid_answer_and_after(qtbot, tiny_pair, tmp_path):
    from app.gui import screenshot

    after, mid = tmp_path / "after.png", tmp_path / "mid.png"
    code = screenshot(after, "hello tree", str(tiny_pair["target"]), str(tiny_pair["noisy"]),
                      mid_png=mid, max_tokens=48, size=(1400, 900))
    assert code == 0
    for path in (after, mid):
        image = QImage(str(path))
        assert image.width() == 1400 and image.height() == 900
    assert after.stat().st_size > 50_000  # a real rendering, not a blank window
