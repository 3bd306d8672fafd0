"""The main window: conversations | chat, with the token tree and live panel as docks.

It wires the views to the engine bridge and the history store: sending, streaming (one repaint
and one history write per frame), stop, regenerate, edit-and-resend, loading models, first run
and errors (shown in a banner; the window stays usable). Loading models and applying settings
(app/window_models.py), idle-time draft adaptation (app/idle_adapt.py), the menu bar
(app/menus.py), drag and drop of models (app/dropzone.py), light/dark appearance and zoom
(app/appearance.py) and the saved window layout (app/window_state.py) live in their own modules.
"""

from __future__ import annotations

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import (
    QDockWidget,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from engine.errors import ConfigError
from engine.events import Finished, StepEvent

from .accessibility import describe
from .appearance import Appearance
from .bridge import EngineBridge
from .chat_view import ChatView
from .conversation_list import ConversationList
from .dropzone import ModelImporter
from .find_bar import FindBar
from .history import HistoryStore
from .idle_adapt import IdleAdaptation
from .live_panel import LivePanel
from .menus import build_menus
from .panels import ErrorBanner, FirstRunPanel
from .settings import AppSettings, load_settings, save_settings
from .tree_view import TreePanel
from .window_models import ModelsMixin
from .window_state import restore_window_state, save_window_state


class MainWindow(ModelsMixin, QMainWindow):
    def __init__(self, bridge: EngineBridge, store: HistoryStore, qsettings: QSettings,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.bridge, self.store, self.qsettings = bridge, store, qsettings
        self.settings: AppSettings = load_settings(qsettings)
        self.conversation_id: int | None = None
        self.answer_id: int | None = None  # the assistant message being streamed
        self._saved_len = -1
        self._prompt_tokens = 0
        self._generated = 0
        self.steps_by_message: dict[int, list[StepEvent]] = {}
        self.setWindowTitle("Canopy")
        self.resize(1400, 900)

        self.conversations = ConversationList()
        self.chat = ChatView()
        self.banner = ErrorBanner()
        self.first_run = FirstRunPanel()
        self.first_run.hide()
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        self.find_bar = FindBar(self.chat)
        right_layout.addWidget(self.banner)
        right_layout.addWidget(self.first_run)
        right_layout.addWidget(self.find_bar)
        right_layout.addWidget(self.chat, 1)
        self.splitter = splitter = QSplitter()
        splitter.setObjectName("mainSplitter")
        splitter.addWidget(self.conversations)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([220, 700])
        self.setCentralWidget(splitter)

        self.tree = TreePanel()
        self.live = LivePanel()
        self.tree_dock = self._dock("Token tree", self.tree, Qt.DockWidgetArea.RightDockWidgetArea)
        self.live_dock = self._dock("Live", self.live, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.resizeDocks([self.tree_dock], [640], Qt.Orientation.Horizontal)
        self.resizeDocks([self.live_dock], [300], Qt.Orientation.Vertical)

        self.model_label = QLabel("No model loaded")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.hide()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.hide()
        self.cancel_button.clicked.connect(lambda: self.bridge.stop())
        describe(self.cancel_button, "Cancel", "Cancel the load or import in progress")
        describe(self.progress, "Progress", "Progress of the load or import")
        self.adapt_label = QLabel("")
        self.adapt_label.setObjectName("adaptLabel")
        self.adapt_label.hide()
        describe(self.adapt_label, "Draft adaptation", "What the draft's idle-time adaptation "
                                                       "is doing")
        self.statusBar().addWidget(self.model_label, 1)
        self.statusBar().addPermanentWidget(self.adapt_label)
        self.statusBar().addPermanentWidget(self.progress)
        self.statusBar().addPermanentWidget(self.cancel_button)
        self.importer = ModelImporter(self)
        self.settings_dialog = None  # while open (open_settings)
        self.idle = IdleAdaptation(bridge, self.live, self.adapt_label, lambda: self.settings,
                                   self)
        bridge.record = self.settings.record_chats
        bridge.adapt_config = self.settings.adapt_config()
        self.menu_actions = build_menus(self)
        self.menu_actions.stop.setEnabled(False)  # only while something runs
        self._connect()
        self.chat.set_tint(self.settings.tint_tokens)
        self.menu_actions.tint_by_source.setChecked(self.settings.tint_by_source)
        self.menu_actions.tint_by_source.toggled.connect(self._on_tint_by_source)
        self.refresh_conversations()
        self.chat.set_ready(False, "Load a model to start chatting.")
        QWidget.setTabOrder(self.chat.prompt, self.chat.send_button)
        QWidget.setTabOrder(self.chat.send_button, self.tree.view)
        QWidget.setTabOrder(self.tree.view, self.tree.slider)
        self.appearance = Appearance(self)
        restore_window_state(self, qsettings)

    def _dock(self, title: str, widget: QWidget, area) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title.replace(" ", "") + "Dock")
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def stop_all(self) -> None:
        """Model › Stop: the answer, load, import or build in progress."""
        self.bridge.stop()

    def _connect(self) -> None:
        b, c = self.bridge, self.chat
        b.sig_load_progress.connect(self._on_progress)
        b.sig_load_finished.connect(self._on_loaded)
        b.sig_load_aborted.connect(lambda: self._set_loading(False, "Loading cancelled."))
        b.sig_busy_changed.connect(self._on_busy)
        b.sig_prefill_done.connect(self._on_prefill)
        b.sig_step.connect(self._on_step)
        b.sig_frame.connect(self._on_frame)
        b.sig_layers_changed.connect(self.live.set_layers)
        b.sig_generation_finished.connect(self._on_finished)
        b.sig_generation_aborted.connect(self._on_finished)
        b.sig_failed.connect(self._on_failed)
        b.sig_task_finished.connect(self._on_task_finished)
        c.sig_send_requested.connect(self.send)
        c.sig_stop_requested.connect(lambda: b.stop("generate"))
        c.sig_regenerate_requested.connect(self.regenerate)
        c.sig_edit_resend_requested.connect(self.edit_and_resend)
        c.sig_system_prompt_changed.connect(self._on_system_prompt)
        c.sig_tint_toggled.connect(self._on_tint)
        c.sig_steps_requested.connect(self.show_steps)
        lst = self.conversations
        lst.sig_conversation_selected.connect(self.open_conversation)
        lst.sig_new_requested.connect(self.new_conversation)
        lst.sig_rename_requested.connect(self.rename_conversation)
        lst.sig_delete_requested.connect(self._confirm_delete)
        lst.sig_search_changed.connect(lambda q: self.refresh_conversations(q))
        self.first_run.sig_build_requested.connect(self.build_demo_pair)
        self.first_run.sig_choose_requested.connect(self.open_settings)
        self.first_run.sig_cancel_requested.connect(lambda: b.stop("task"))

    # ---- conversations ----
    def refresh_conversations(self, query: str | None = None) -> None:
        query = self.conversations.search.text() if query is None else query
        self.conversations.set_conversations(self.store.search(query), self.conversation_id)

    def new_conversation(self) -> None:
        if self.bridge.generating:
            return
        self.conversation_id = None
        self.chat.clear()
        self.chat.set_system_prompt(self.settings.system_prompt)
        self.tree.set_steps([])
        self.refresh_conversations()
        self.chat.prompt.setFocus()

    def open_conversation(self, conversation_id: int) -> None:
        if self.bridge.generating or conversation_id == self.conversation_id:
            return
        conversation = self.store.conversation(conversation_id)
        if conversation is None:
            return
        self.conversation_id = conversation_id
        self.chat.set_system_prompt(conversation.system_prompt)
        self.chat.set_messages(self.store.messages(conversation_id))
        self.chat.show_steps_buttons(self.store.positions_with_steps(conversation_id))
        self.tree.set_steps([])

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        self.store.rename_conversation(conversation_id, title)
        self.refresh_conversations()

    def delete_conversation(self, conversation_id: int) -> None:
        if self.bridge.generating and conversation_id == self.conversation_id:
            return
        self.store.delete_conversation(conversation_id)
        self.bridge.forget_conversation(conversation_id)
        if conversation_id == self.conversation_id:
            self.new_conversation()
        self.refresh_conversations()

    def _confirm_delete(self, conversation_id: int) -> None:
        answer = QMessageBox.question(self, "Delete conversation",
                                      "Delete this conversation? This cannot be undone.")
        if answer == QMessageBox.StandardButton.Yes:
            self.delete_conversation(conversation_id)

    def _on_system_prompt(self, text: str) -> None:
        if self.conversation_id is not None:
            self.store.set_system_prompt(self.conversation_id, text)
        self.settings.system_prompt = text
        save_settings(self.qsettings, self.settings)

    def _on_tint(self, on: bool) -> None:
        self.settings.tint_tokens = on
        save_settings(self.qsettings, self.settings)

    def _on_tint_by_source(self, on: bool) -> None:
        self.settings.tint_by_source = on
        save_settings(self.qsettings, self.settings)

    # ---- generation ----
    def send(self, text: str) -> None:
        if self.bridge.generating:
            return
        if self.conversation_id is None:
            title = " ".join(text.split())[:48] or "New chat"
            self.conversation_id = self.store.create_conversation(
                title, self.chat.system_edit.text())
        self.store.add_message(self.conversation_id, "user", text)
        self.chat.add_user_message(text)
        self._generate()

    def regenerate(self) -> None:
        messages = self.store.messages(self.conversation_id) if self.conversation_id else []
        if self.bridge.generating or not messages or messages[-1].role != "assistant":
            return
        last = messages[-1].position
        self.store.delete_messages_from(self.conversation_id, last)
        self.chat.remove_from(last)
        self._generate()

    def edit_and_resend(self, position: int, text: str) -> None:
        if self.bridge.generating or self.conversation_id is None:
            return
        self.store.delete_messages_from(self.conversation_id, position)
        self.chat.remove_from(position)
        self.send(text)

    def _generate(self) -> None:
        try:  # the dialog cannot produce invalid settings; a hand-edited AppSettings can
            config = self.settings.generation_config()
        except ConfigError as exc:
            self.banner.show_error(str(exc), "Invalid setting")
            return
        history = [{"role": m.role, "content": m.content}
                   for m in self.store.messages(self.conversation_id)]
        self.answer_id = self.store.add_message(self.conversation_id, "assistant", "",
                                                finished=False)
        self.steps_by_message[self.answer_id] = []
        self._saved_len = -1
        self._generated = 0
        self.chat.begin_answer()
        self.tree.set_steps([])
        self.live.reset()
        self.refresh_conversations()
        system = self.chat.system_edit.text().strip() or None
        self.bridge.chat(history, config, system, conversation=self.conversation_id)

    def _on_prefill(self, tokens: int, seconds: float) -> None:
        self._prompt_tokens = tokens
        self.chat.set_context(tokens, self.bridge.context_length)

    def _on_step(self, step: StepEvent, t: float) -> None:
        self.chat.append_step(step)
        self.tree.add_step(step)
        self.live.add_step(step, t)
        self._generated += len(step.token_ids)
        if self.answer_id is not None:
            self.steps_by_message[self.answer_id].append(step)

    def _on_frame(self) -> None:
        self.chat.refresh()
        self.tree.refresh()
        self.live.refresh()
        self.chat.set_context(self._prompt_tokens + self._generated, self.bridge.context_length)
        self._save_answer()

    def _save_answer(self, stats: dict | None = None, reason: str | None = None,
                     finished: bool | None = None) -> None:
        """Write the streaming answer as shown (a kill mid-answer loses nothing on screen)."""
        w = self.chat.streaming_message
        if self.answer_id is None or w is None:
            return
        if finished is None and len(w.text) == self._saved_len:
            return
        self._saved_len = len(w.text)
        self.store.update_message(self.answer_id, w.text, sources=bytes(w.sources),
                                  stats=stats, stop_reason=reason, finished=finished)

    def _on_finished(self, event: Finished | None) -> None:
        stats = event.stats.to_dict() if event is not None else {}
        reason = event.reason if event is not None else "cancelled"
        self._save_answer(stats, reason, finished=True)
        w = self.chat.streaming_message
        if w is not None and self.answer_id is not None:
            steps = self.steps_by_message.get(self.answer_id)
            w.steps_button.setVisible(bool(steps))
            if steps:
                self.store.set_steps(self.answer_id, steps)
        self.chat.finish_answer(stats, reason)
        self.live.set_kv_cache(stats)
        self.live.end_answer()
        self.answer_id = None
        self.tree.live_check.setChecked(True)
        self.live.refresh()
        self.tree.refresh()

    def _on_failed(self, context: str, message: str) -> None:
        if context == "task" and self.importer.take_failure(message):
            return
        if context == "adapt":  # background work: the status bar says it (IdleAdaptation)
            return
        titles = {"load": "Could not load the model", "generate": "Generation failed",
                  "task": "Could not build the demo pair"}
        if not (context == "task" and message == "Cancelled."):
            self.banner.show_error(message, titles.get(context, "Error"))
        if context == "load":
            self._set_loading(False, "No model loaded")
            self.chat.set_ready(False, "Load a model to start chatting (Model › Load… or "
                                       "Settings…).")
            self.first_run.offer(broken=True)  # offer to (re)build the demo pair
        elif context == "task":
            self.first_run.set_building(False)
            self.first_run.status.setText("Not built: " + message)
        elif context == "generate" and self.answer_id is not None:
            w = self.chat.streaming_message
            if w is not None and not w.text:  # nothing shown: drop the empty answer
                self.store.delete_messages_from(self.conversation_id, w.position)
                self.chat.finish_answer({}, None)
                self.chat.remove_from(w.position)
            else:
                self._save_answer({}, "error", finished=True)
                self.chat.finish_answer({}, "error")
            self.answer_id = None

    def show_steps(self, position: int) -> None:
        """Replay the steps of the answer at `position` in the tree panel."""
        messages = self.store.messages(self.conversation_id) if self.conversation_id else []
        if 0 <= position < len(messages):
            mid = messages[position].id
            steps = self.steps_by_message.get(mid) or self.store.steps(mid)  # after a restart
            self.tree.set_steps(steps, show=0)
            self.tree.live_check.setChecked(False)
            self.tree_dock.show()
            if not steps:
                self.tree.info.setText("Steps are kept for answers generated in this session.")

    def closeEvent(self, event):
        save_window_state(self, self.qsettings)
        self._save_answer()
        self.bridge.shutdown(timeout=5.0)
        super().closeEvent(event)
