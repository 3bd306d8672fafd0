"""The main window's model side: start-up, loading, the settings dialog, building a pair.

A mixin of MainWindow (app/main_window.py): it uses the window's bridge, banner, first-run panel,
status bar widgets and idle adaptation controller.
"""

from __future__ import annotations

from .model_choice import demo_paths
from .settings import AppSettings, save_settings
from .settings_dialog import SettingsDialog


class ModelsMixin:
    """Loading models and applying settings (see module docstring)."""

    def start(self) -> None:
        """Load the configured models, or the demo pair if built, or offer to build it."""
        if not self.settings.target:
            paths = demo_paths()
            try:
                built = paths is not None and paths[0].is_dir() and paths[1].is_dir()
            except OSError as e:  # e.g. no permission on the models folder
                self.banner.show_error(f"Cannot read the models folder {paths[0].parent}: "
                                       f"{e.strerror}. Fix its permissions, or build the demo "
                                       "pair again.", "Models folder unreadable")
                built = False
            if built:
                self.settings.target, self.settings.draft = str(paths[0]), str(paths[1])
                save_settings(self.qsettings, self.settings)
        if self.settings.target:
            self.load_models()
        else:
            self.first_run.show()
            self.chat.set_ready(False, "No models yet: build the demo pair or choose models.")

    def load_models(self) -> None:
        s = self.settings
        if not s.target:
            self.open_settings()
            return
        self.banner.hide()
        self._set_loading(True, f"Loading {s.target} …")
        self.chat.set_ready(False, "Loading the model…")
        self.bridge.load(s.target, s.draft or None, s.budget_bytes)

    def open_settings(self) -> None:
        dialog = SettingsDialog(self.settings, self, adapt_status=self.bridge.adapt_status)
        dialog.adaptation.sig_clear_requested.connect(self.bridge.clear_recordings)
        dialog.adaptation.sig_reset_requested.connect(self.bridge.reset_adapters)
        self.bridge.sig_adapt_status.connect(dialog.adaptation.set_status)
        self.settings_dialog = dialog  # tests drive the open dialog
        dialog.sig_build_demo_requested.connect(dialog.reject)
        dialog.sig_build_demo_requested.connect(self.build_demo_pair)
        dialog.sig_build_coder_requested.connect(dialog.reject)
        dialog.sig_build_coder_requested.connect(lambda: self.build_demo_pair("coder"))
        try:
            if dialog.exec():
                self.apply_settings(dialog.values(), load=True)
        finally:
            self.bridge.sig_adapt_status.disconnect(dialog.adaptation.set_status)
            self.settings_dialog = None

    def apply_settings(self, settings: AppSettings, load: bool = False) -> None:
        models_changed = (settings.target, settings.draft, settings.budget_mb) != (
            self.settings.target, self.settings.draft, self.settings.budget_mb)
        cap_changed = settings.adapt_cap_mb != self.settings.adapt_cap_mb
        self.settings = settings
        save_settings(self.qsettings, settings)
        self.apply_adaptation_settings(cap_changed)
        if load and (models_changed or not self.bridge.has_session):
            self.first_run.hide()
            self.load_models()

    def apply_adaptation_settings(self, cap_changed: bool = True) -> None:
        """Recording switch, the recordings' cap and the idle timer follow the settings."""
        s = self.settings
        self.bridge.record = s.record_chats
        if cap_changed:
            self.bridge.set_adapt_cap(s.adapt_config().cap_bytes)
        self.idle.restart()

    def build_demo_pair(self, pair: str = "smollm2") -> None:
        try:
            if pair == "coder":
                from engine.formats.pairs import build_coder_pair as build_demo_pair
            else:
                from engine.formats.demo import build_demo_pair
        except ImportError:
            self.banner.show_error("The demo-pair builder is not part of this build. Choose "
                                   "your own target and draft folders instead.")
            return
        self.first_run.show()
        self.first_run.set_building(True)
        self._set_loading(True, "Building the coder pair (1.6 GB download)…" if pair == "coder"
                          else "Building the demo pair…")
        self._demo_job = self.bridge.run_task(lambda report: build_demo_pair(progress=report))

    def _on_task_finished(self, job_id: int, result) -> None:
        if self.importer.take_result(job_id, result) or job_id != getattr(self, "_demo_job",
                                                                          None):
            return
        self.first_run.set_building(False)
        self.first_run.hide()
        target, draft = result
        s = AppSettings(**vars(self.settings))
        s.target, s.draft = str(target), str(draft)
        self.apply_settings(s, load=True)

    def _set_loading(self, loading: bool, text: str = "") -> None:
        self.progress.setVisible(loading)
        self.cancel_button.setVisible(loading)
        self.progress.setRange(0, 0)
        if text:
            self.model_label.setText(text)

    def _on_progress(self, what: str, done: int, total: int) -> None:
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(done)
        self.model_label.setText(f"{what} {done}/{total}")
        if self.first_run.isVisible():
            self.first_run.set_progress(what, done, total)

    def _on_loaded(self, description: str, context_length: int, layers: int) -> None:
        self._set_loading(False, f"{description} · {self.settings.mode} · "
                                 f"context {context_length}")
        self.first_run.hide()
        self.live.set_target(self.settings.budget_bytes, layers)
        self.chat.set_ready(True, "Ask anything. Green tokens were drafted and accepted; "
                                  "orange ones the target produced itself.")
        self.chat.set_context(0, context_length)

    def _on_busy(self, busy: bool) -> None:
        a = self.menu_actions
        for action in (a.settings, a.reload, a.load):
            action.setEnabled(not busy)
        self.menu_actions.stop.setEnabled(busy)
        if not busy:
            self.progress.hide()
            self.cancel_button.hide()
