"""The one place where engine events become Qt signals.

All MLX work runs on `engine.runtime.EngineThread` (MLX streams belong to the thread that made
them). Its callbacks only append `(job_id, event, time)` (and, when a job is over,
`(job_id, JOB_END, time)`) to a queue; a GUI-thread timer drains the queue at most 30 times per
second and emits one documented signal per event, then one `sig_frame` so views repaint once
per frame however fast the engine runs.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from PySide6.QtCore import QObject, QTimer, Signal

from engine.events import Failed, Finished, LoadProgress, PrefillDone, StepEvent

from .bridge_adapt import AdaptationFactory, AdaptationJobs, AdaptState

FRAME_MS = 33  # <= 30 repaints per second

# loader(target, draft, *, budget_bytes, progress[, stream]) -> session (on the engine thread)
Loader = Callable[..., object]
JOB_END = object()  # queued by the engine thread after a job's last event
BACKGROUND = ("adapt", "adapt-admin")  # jobs that do not make the app busy (menus stay usable)


@dataclass(frozen=True)
class Loaded:
    """Private marker: the session of a load job is ready."""

    description: str
    context_length: int
    target_layers: int


@dataclass(frozen=True)
class _TaskDone:
    result: object


class _LoadCancelled(BaseException):
    """Raised from a progress callback to abandon a load; a BaseException so that loaders
    which wrap `Exception`s into person-readable errors let it through."""


def default_loader(target, draft, *, budget_bytes=None, progress=None, stream=None):
    from engine.session import Session

    return Session.load(target, draft, budget_bytes=budget_bytes, progress=progress,
                        stream=stream)


def _close(session) -> None:
    """Release a session's IO thread and streamed layers (fakes may have no close)."""
    close = getattr(session, "close", None)
    if close is not None:
        close()


class EngineBridge(QObject, AdaptationJobs):
    """Owns the engine thread and the loaded session; emits `sig_*` signals in the GUI thread.

    Args:
        loader: builds a session on the engine thread (default `Session.load`). Tests pass a
            scripted fake whose `chat(messages, config, should_stop, system)` yields events.
        stream: how a streamed target reads its layers (engine.config.StreamConfig), passed
            to the loader as `stream=` when given.
        adaptation: builds the pair's engine.adapt.run.Adaptation after a load (default: the
            real one, with the adopted adapter in use); see app/bridge_adapt.py.
    """

    sig_busy_changed = Signal(bool)
    """(busy) True while a load, generation or task is queued or running (not adaptation)."""
    sig_load_progress = Signal(str, int, int)
    """(what, done, total) from the engine's LoadProgress events."""
    sig_load_finished = Signal(str, int, int)
    """(description, context_length, target_layers) the session is ready to chat."""
    sig_load_aborted = Signal()
    """Loading was cancelled; the previous session (if any) was dropped."""
    sig_generation_started = Signal(int)
    """(job_id) a chat request reached the engine thread's queue."""
    sig_prefill_done = Signal(int, float)
    """(prompt_tokens, seconds)."""
    sig_step = Signal(object, float)
    """(StepEvent, seconds since the generation started) one per target pass."""
    sig_generation_finished = Signal(object)
    """(Finished) the answer is complete (reason "eos" or "length")."""
    sig_generation_aborted = Signal(object)
    """(Finished or None) Stop was honoured; Finished carries what was produced, if any."""
    sig_task_finished = Signal(int, object)
    """(job_id, result) a `run_task` function returned on the engine thread."""
    sig_failed = Signal(str, str)
    """(context, message) "load", "generate" or "task": a person-readable message."""
    sig_layers_changed = Signal(object)
    """(tuple of "pinned" | "resident" | "loading" | "streamed") per target layer, polled each
    frame while generating with a streamed target."""
    sig_adapt_progress = Signal(object)
    """(engine.adapt.train.AdaptProgress) one adaptation slice done."""
    sig_adapt_finished = Signal(object)
    """(dict) an adaptation run is over: Adaptation.last (version, adopted, held-out metrics)."""
    sig_adapt_stopped = Signal()
    """An adaptation run was cancelled (e.g. by a chat request); the draft is as before."""
    sig_adapt_status = Signal(object)
    """(dict or None) the pair's recordings and adapter: Adaptation.status(); None: no draft."""
    sig_frame = Signal()
    """Once per drained frame (<= 30/s) that carried events: views repaint now."""

    def __init__(self, loader: Loader | None = None, parent: QObject | None = None,
                 stream=None, adaptation: AdaptationFactory | None = None):
        super().__init__(parent)
        self._init_adaptation(adaptation)
        from engine.runtime import EngineThread

        self._loader = loader or default_loader
        self._stream = stream
        self._queue: queue.Queue = queue.Queue()
        self._engine = EngineThread(self._on_engine_event, self._on_job_end)
        self._session = None  # touched only inside jobs, i.e. on the engine thread
        self._kinds: dict[int, str] = {}  # job id -> "load" | "generate" | "task" | BACKGROUND
        self._ended: set[int] = set()  # jobs whose terminal signal was emitted
        self._started: dict[int, float] = {}
        self._current_generation: int | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(FRAME_MS)
        self._timer.timeout.connect(self._drain)
        self.context_length = 0
        self.loaded_description = ""
        self.budget_bytes: int | None = None
        # StreamedModel.layer_states: lock-protected Python state (no MLX), safe to poll here
        self._layer_probe: Callable[[], tuple] | None = None
        self._last_layers: tuple | None = None
        self._forgotten: set[int] = set()  # conversations whose prompt caches go
        # where conversations' KV caches are kept across restarts (None: memory only)
        self.prompt_cache_folder: str | None = None

    # ---- public API (GUI thread) ----
    @property
    def busy(self) -> bool:
        return any(kind not in BACKGROUND for kind in self._kinds.values())

    @property
    def has_session(self) -> bool:
        return bool(self.loaded_description)

    @property
    def generating(self) -> bool:
        return self._current_generation is not None

    def load(self, target: str, draft: str | None, budget_bytes: int | None = None) -> int:
        """Load a target (+ draft) on the engine thread; progress and result arrive as signals."""
        self.stop("adapt")  # the old pair's adaptation ends with it
        self.loaded_description = ""
        self.budget_bytes = budget_bytes
        self._layer_probe = None

        # The old session's IO thread and prefetched layers go before the new budget applies,
        # even if this load is cancelled before it starts (so: a job of its own, never cancelled).
        self._engine.submit(self._close_session)

        def job(should_stop):
            def progress(event: LoadProgress):
                if should_stop():
                    raise _LoadCancelled()
                self._engine.report(event)

            extra = {} if self._stream is None else {"stream": self._stream}
            try:
                session = self._loader(target, draft, budget_bytes=budget_bytes,
                                       progress=progress, **extra)
            except _LoadCancelled:
                return
            except ImportError as exc:
                yield Failed(
                    f"This build cannot load that way yet ({exc.name or exc}). "
                    "Try loading the whole target (no memory budget)."
                )
                return
            if should_stop():
                _close(session)
                return
            self._session = session
            cache = getattr(session, "prompt_cache", None)
            if cache is not None and self.prompt_cache_folder:
                cache.config = replace(cache.config, folder=self.prompt_cache_folder)
            model = getattr(getattr(session, "target", None), "model", None)
            self._layer_probe = getattr(model, "layer_states", None)
            yield self._open_adaptation(session, target, draft)
            yield Loaded(_describe(session), int(getattr(session, "context_length", 0) or 0),
                         _target_layers(session))

        return self._submit("load", job)

    def chat(self, messages: list[dict], config, system: str | None = None,
             conversation: int | None = None) -> int:
        """Generate an answer to `messages` with a GenerationConfig; returns the job id.

        conversation: the chat's id; its KV caches stay in the session for the next turn.
        A running adaptation is stopped first (it yields within one optimizer step); with
        `record` on, the answer is recorded for adaptation.
        """
        self.stop("adapt")
        forgotten, self._forgotten = self._forgotten, set()
        extra = {"conversation": conversation} if conversation is not None else {}
        # ar mode: nothing is drafted, and an observer would turn off its passes launched ahead
        record = self.record and getattr(config, "mode", None) != "ar"

        def job(should_stop) -> Iterator[object]:
            if self._session is None:
                yield Failed("No model is loaded. Pick a target (and draft) and press Load.")
                return
            cache = getattr(self._session, "prompt_cache", None)
            for key in forgotten if cache is not None else ():
                cache.drop(key)
            observer_for, recorders = self._recording(record)
            more = {"observer_for": observer_for} if observer_for is not None else {}
            yield from self._session.chat(messages, config, should_stop, system, **extra, **more)
            yield from self._keep(recorders)

        job_id = self._submit("generate", job)
        self._current_generation = job_id
        self.sig_generation_started.emit(job_id)
        return job_id

    def run_task(self, fn: Callable[[Callable[[object], None]], object]) -> int:
        """Run `fn(report)` on the engine thread (e.g. building the demo pair).

        `report(LoadProgress)` becomes sig_load_progress; the return value, sig_task_finished.
        """

        def job(should_stop):
            def report(event):
                if should_stop():
                    raise _LoadCancelled()
                self._engine.report(event)

            try:
                result = fn(report)
            except _LoadCancelled:
                return
            yield _TaskDone(result)

        return self._submit("task", job)

    def forget_conversation(self, conversation: int) -> None:
        """Drop a (deleted) conversation's KV caches; done on the engine thread before the next
        answer, since only that thread touches the session."""
        self._forgotten.add(conversation)

    def layer_states(self) -> tuple | None:
        """Per target layer: "pinned", "resident", "loading" or "streamed" (None: not streamed)."""
        probe = self._layer_probe
        return tuple(probe()) if probe is not None else None

    def stop(self, kind: str | None = None) -> None:
        """Cooperative stop of queued or running jobs of one kind ("load", "generate", "task",
        "adapt") or of all; the engine finishes its current step and rewinds its caches."""
        for job_id, job_kind in list(self._kinds.items()):
            if kind is None or job_kind == kind:
                self._engine.cancel(job_id)

    def shutdown(self, timeout: float = 10.0) -> None:
        self.stop()
        self._timer.stop()

        def flush(_stop):  # conversations' caches to disk, so a reopened chat starts at once
            cache = getattr(self._session, "prompt_cache", None)
            if cache is not None:
                cache.flush()
            return iter(())

        self._engine.submit(flush)
        self._engine.shutdown(timeout)
        # Closing only stops and joins the IO thread (no MLX work): safe from this thread.
        old, self._session = self._session, None
        _close(old)

    # ---- engine thread side ----
    def _on_engine_event(self, job_id: int, event: object) -> None:
        self._queue.put((job_id, event, time.perf_counter()))

    def _close_session(self, _should_stop) -> Iterator[object]:
        old, self._session = self._session, None
        self._adaptation = None
        _close(old)
        if old is not None:
            from engine.runtime import release_memory

            del old
            release_memory()  # else the old pair's ~1 GB stays in the process until reused
        return iter(())

    def _on_job_end(self, job_id: int) -> None:
        self._queue.put((job_id, JOB_END, time.perf_counter()))

    def _submit(self, kind: str, job) -> int:
        # Registered before the GUI thread drains again, so every event finds its kind.
        was_busy = self.busy
        job_id = self._engine.submit(job)
        self._kinds[job_id] = kind
        self._started[job_id] = time.perf_counter()
        if not was_busy and self.busy:
            self.sig_busy_changed.emit(True)
        if not self._timer.isActive():
            self._timer.start()
        return job_id

    # ---- GUI thread side ----
    def _drain(self) -> None:
        emitted = False
        while True:
            try:
                job_id, event, t = self._queue.get_nowait()
            except queue.Empty:
                break
            if event is JOB_END:
                self._end_job(job_id)
                continue
            if job_id in self._ended and not isinstance(event, AdaptState):
                continue  # a status after a chat's Finished still counts
            self._dispatch(job_id, event, t)
            emitted = True
        if self._current_generation is not None and self._layer_probe is not None:
            layers = self.layer_states()
            if layers != self._last_layers:
                self._last_layers = layers
                self.sig_layers_changed.emit(layers)
                emitted = True
        if emitted:
            self.sig_frame.emit()
        if not self._kinds and self._queue.empty():
            self._timer.stop()

    def _dispatch(self, job_id: int, event: object, t: float) -> None:
        kind = self._kinds.get(job_id, "task")
        if self._dispatch_adapt(job_id, event):
            return
        if isinstance(event, LoadProgress):
            self.sig_load_progress.emit(event.what, event.done, event.total)
        elif isinstance(event, Loaded):
            self.context_length = event.context_length
            self.loaded_description = event.description
            self._ended.add(job_id)
            self.sig_load_finished.emit(event.description, event.context_length,
                                        event.target_layers)
        elif isinstance(event, PrefillDone):
            self.sig_prefill_done.emit(event.tokens, event.seconds)
        elif isinstance(event, StepEvent):
            self.sig_step.emit(event, t - self._started.get(job_id, t))
        elif isinstance(event, Finished):
            self._ended.add(job_id)
            self._current_generation = None
            if event.reason == "cancelled":
                self.sig_generation_aborted.emit(event)
            else:
                self.sig_generation_finished.emit(event)
        elif isinstance(event, Failed):
            self._ended.add(job_id)
            if kind == "generate":
                self._current_generation = None
            self.sig_failed.emit(kind, event.message)
        elif isinstance(event, _TaskDone):
            self._ended.add(job_id)
            self.sig_task_finished.emit(job_id, event.result)

    def _end_job(self, job_id: int) -> None:
        if job_id not in self._kinds:  # an internal job (closing a session)
            return
        kind = self._kinds.pop(job_id)
        self._started.pop(job_id, None)
        if job_id not in self._ended and kind == "adapt":
            self.sig_adapt_stopped.emit()
        elif job_id not in self._ended:  # stopped before its terminal event
            if kind == "generate":
                self._current_generation = None
                self.sig_generation_aborted.emit(None)
            elif kind == "load":
                self.sig_load_aborted.emit()
            elif kind == "task":
                self.sig_failed.emit("task", "Cancelled.")
        self._ended.discard(job_id)
        if kind not in BACKGROUND and not self.busy:
            self.sig_busy_changed.emit(False)


def _describe(session) -> str:
    target = getattr(session, "target", None)
    draft = getattr(session, "draft", None)
    name = getattr(target, "name", None) or "model"
    return f"{name} + {draft.name}" if draft is not None else f"{name} (no draft)"


def _target_layers(session) -> int:
    target = getattr(session, "target", None)
    try:
        return int(target.num_layers)
    except (AttributeError, TypeError):
        return 0
