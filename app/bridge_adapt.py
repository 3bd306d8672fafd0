"""The bridge's draft-adaptation jobs (engine/adapt) on the engine thread.

`EngineBridge` mixes this in: after a load it builds the pair's `Adaptation` (which puts the
adopted adapter in use), records chats when asked, and runs adaptation as an "adapt" job in
slices that a chat request cancels at once (`EngineBridge.chat` stops it first). Status events
(buffer size on disk, cap, adapter in use) follow every change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from engine.errors import CanopyError
from engine.events import Failed

# make_adaptation(session, target_dir, draft_dir, AdaptConfig) -> Adaptation-like or None
AdaptationFactory = Callable[..., object]


@dataclass(frozen=True)
class AdaptState:
    """Private marker: the pair's recording buffer and adapter state (None: no adaptation),
    or why adaptation is unavailable."""

    status: dict | None
    error: str | None = None


@dataclass(frozen=True)
class AdaptDone:
    """Private marker: an adaptation run finished; `result` is Adaptation.last."""

    result: dict


def default_adaptation(session, target, draft, config):
    """The pair's Adaptation with its adopted adapter in use (None without a draft)."""
    if draft is None or getattr(session, "draft", None) is None:
        return None
    from engine.adapt.run import Adaptation

    adaptation = Adaptation(session, target, draft, config)
    adaptation.use_adopted()
    return adaptation


class AdaptationJobs:
    """Mixin for EngineBridge (uses its `_submit`, `stop` and `sig_adapt_*` signals)."""

    def _init_adaptation(self, factory: AdaptationFactory | None) -> None:
        from engine.config import AdaptConfig

        self._make_adaptation = factory or default_adaptation
        self._adaptation = None  # touched only inside jobs, i.e. on the engine thread
        self.adapt_config = AdaptConfig()  # used by the next load (the cap: set_adapt_cap)
        self.record = True  # chats record for adaptation (read when a chat is requested)
        self.adapt_status: dict | None = None  # last status from the engine thread

    # ---- public API (GUI thread) ----
    @property
    def adapting(self) -> bool:
        return "adapt" in self._kinds.values()

    def adapt(self) -> int:
        """Adapt the draft from its recordings in slices (sig_adapt_progress per slice; then
        sig_adapt_finished, or sig_adapt_stopped when cancelled, e.g. by a chat request)."""

        def job(should_stop) -> Iterator[object]:
            adaptation = self._adaptation
            if adaptation is None:
                yield Failed("Adaptation needs a loaded target and draft.")
                return
            for progress in adaptation.run(should_stop):
                if progress.cancelled:
                    return  # no terminal event: the job's end reports the stop
                yield progress
            yield AdaptDone(adaptation.last)
            yield AdaptState(adaptation.status())

        return self._submit("adapt", job)

    def clear_recordings(self) -> int:
        """Delete the loaded pair's recordings (adapters stay)."""
        return self._admin(lambda a: a.clear_buffer())

    def reset_adapters(self) -> int:
        """Forget the pair's adapters; the draft is used as shipped."""
        return self._admin(lambda a: a.reset())

    def set_adapt_cap(self, cap_bytes: int) -> int:
        """A new cap for the recordings (this pair now, and pairs loaded later)."""
        from dataclasses import replace

        self.adapt_config = replace(self.adapt_config, cap_bytes=cap_bytes)
        return self._admin(lambda a: a.set_cap(cap_bytes))

    # ---- engine thread side ----
    def _admin(self, fn) -> int:
        def job(_should_stop) -> Iterator[object]:
            if self._adaptation is not None:
                fn(self._adaptation)
                yield AdaptState(self._adaptation.status())

        return self._submit("adapt-admin", job)

    def _open_adaptation(self, session, target, draft) -> AdaptState:
        """Build the new session's Adaptation; a broken store never fails the load."""
        try:
            self._adaptation = self._make_adaptation(session, target, draft, self.adapt_config)
        except CanopyError as exc:
            self._adaptation = None
            return AdaptState(None, str(exc))
        return AdaptState(self._adaptation.status() if self._adaptation is not None else None)

    def _recording(self, record: bool) -> tuple[Callable | None, list]:
        """(observer_for for Session.chat or None, the list its recorders go into)."""
        adaptation = self._adaptation
        if not record or adaptation is None:
            return None, []
        made: list = []

        def observer_for(prompt_ids):
            made.append(adaptation.recorder(prompt_ids))
            return made[-1]

        return observer_for, made

    def _keep(self, recorders: list) -> Iterator[object]:
        """After a chat: verified positions are valid teacher signal even if it was stopped."""
        if not recorders or self._adaptation is None:
            return
        for recorder in recorders:
            self._adaptation.keep(recorder)
        yield AdaptState(self._adaptation.status())

    # ---- GUI thread side ----
    def _dispatch_adapt(self, job_id: int, event: object) -> bool:
        from engine.adapt.train import AdaptProgress

        if isinstance(event, AdaptProgress):
            self.sig_adapt_progress.emit(event)
        elif isinstance(event, AdaptDone):
            self._ended.add(job_id)
            self.sig_adapt_finished.emit(event.result)
        elif isinstance(event, AdaptState):
            self.adapt_status = event.status
            self.sig_adapt_status.emit(event.status)
            if event.error:
                self.sig_failed.emit("adapt", event.error)
        else:
            return False
        return True
