"""Idle-time draft adaptation: when no answer has been generated for a while, adapt the draft.

The timer restarts whenever a generation ends or a model loads and stops while one runs. When it
fires, and adaptation is switched on, a pair with a draft is loaded, nothing else runs and there
are recordings the last completed run has not seen, it asks the bridge for an "adapt" job. A
message stops that job at once (EngineBridge.chat); the next idle period starts it over. Progress
shows in the status bar; finished runs are marked on the live panel's acceptance curve.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QLabel

MIN_SEQUENCES = 2  # one recorded answer is held out to judge the adapters


class IdleAdaptation(QObject):
    """Drives `bridge.adapt()` from idleness; `label` shows progress; `live` gets the marks.

    settings: a callable returning the current AppSettings (switch and idle minutes).
    """

    def __init__(self, bridge, live, label: QLabel, settings, parent: QObject | None = None):
        super().__init__(parent)
        self.bridge, self.live, self.label, self._settings = bridge, live, label, settings
        self.timer = QTimer(self, singleShot=True)
        self.timer.timeout.connect(self.start_if_due)
        self._trained_on = 0  # recorded_total seen by the last completed run
        self._running_on = 0
        b = bridge
        b.sig_load_finished.connect(lambda *_: self.restart())
        b.sig_generation_started.connect(lambda _: self.timer.stop())
        b.sig_generation_finished.connect(lambda _: self.restart())
        b.sig_generation_aborted.connect(lambda _: self.restart())
        b.sig_adapt_progress.connect(self._on_progress)
        b.sig_adapt_finished.connect(self._on_finished)
        b.sig_adapt_stopped.connect(self._on_stopped)
        b.sig_failed.connect(self._on_failed)

    def restart(self) -> None:
        """Idleness starts now (after an answer, a load or a settings change)."""
        s = self._settings()
        if s.adapt_when_idle:
            self.timer.start(max(1, int(s.adapt_idle_minutes * 60_000)))
        else:
            self.timer.stop()

    def due(self) -> bool:
        status = self.bridge.adapt_status
        return bool(
            self._settings().adapt_when_idle and self.bridge.has_session and status is not None
            and not self.bridge.busy and not self.bridge.adapting
            and status["sequences"] >= MIN_SEQUENCES
            and status["recorded_total"] > self._trained_on)

    def start_if_due(self) -> bool:
        if not self.due():
            return False
        self._start()
        return True

    def adapt_now(self) -> bool:
        """Model › Adapt Draft Now: on demand, whatever the timer and the switch say."""
        status = self.bridge.adapt_status
        if self.bridge.adapting or self.bridge.generating:
            return False
        if status is None or not self.bridge.has_session:
            self._say("Draft adaptation needs a loaded target and draft.")
            return False
        if status["sequences"] < MIN_SEQUENCES:
            self._say("Draft adaptation needs at least two recorded answers: chat some more.")
            return False
        self._start()
        return True

    def _start(self) -> None:
        self._running_on = self.bridge.adapt_status["recorded_total"]
        self._say("Adapting the draft to your chats…")
        self.bridge.adapt()

    def _say(self, text: str) -> None:
        self.label.setText(text)
        self.label.show()

    def _on_progress(self, p) -> None:
        held = "" if p.holdout_agreement is None else (
            f" · held-out agreement {p.holdout_agreement:.2f}")
        self._say(f"Adapting the draft: epoch {p.epoch}, step {p.steps} · "
                           f"KL {p.train_loss:.3f}{held}")

    def _on_finished(self, result: dict | None) -> None:
        self._trained_on = self._running_on
        if not result:
            self._say("Draft adaptation: nothing to learn yet.")
            return
        before, after = result["holdout_agreement_before"], result["holdout_agreement_after"]
        if result.get("adopted") and result.get("version") is not None:
            text = f"Draft adapter v{result['version']} in use (held-out agreement " \
                   f"{before:.2f} → {after:.2f})."
            mark = f"v{result['version']}"
        else:
            text = f"Draft adaptation found no better adapter (held-out {before:.2f}); " \
                   "the draft is unchanged."
            mark = "no gain"
        self._say(text)
        self.live.mark_adaptation(mark)
        self.live.refresh()

    def _on_stopped(self) -> None:
        self._say("Draft adaptation paused for your message; it resumes when idle.")

    def _on_failed(self, context: str, message: str) -> None:
        if context == "adapt":
            self._trained_on = self._running_on  # the same data would fail the same way
            self._say(f"Draft adaptation stopped: {message}")
