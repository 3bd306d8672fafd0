"""What the main-window tests do to a window over the fake engine: load a pair, ask a question
and wait for the answer."""

from __future__ import annotations


def loaded(qtbot, window, **settings):
    """`window` with the fake pair loaded (and `settings` applied to its AppSettings)."""
    s = window.settings
    s.target, s.draft = "/models/t", "/models/d"
    for key, value in settings.items():
        setattr(s, key, value)
    with qtbot.waitSignal(window.bridge.sig_load_finished, timeout=5000):
        window.apply_settings(s, load=True)
    return window


def ask(qtbot, window, text):
    """Send `text` and wait until the answer is finished and the engine idle."""
    with qtbot.waitSignal(window.bridge.sig_generation_finished, timeout=5000):
        window.send(text)
    qtbot.waitUntil(lambda: not window.bridge.busy, timeout=2000)
