"""Online adaptation of one loaded session: record, adapt in slices, adopt or not, use.

`Adaptation` is what the CLI and the GUI bridge hold next to a `Session`: it owns the pair's
store (buffer + adapter versions) and the adapter currently applied to the session's draft.
Everything runs on the caller's thread (the engine thread): MLX work stays on one thread.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable, Iterator

import mlx.core as mx

from ..config import AdaptConfig
from ..errors import CanopyError
from .lora import AppliedAdapter
from .record import Recorder
from .store import PairStore
from .train import AdaptProgress, Trainer


class Adaptation:
    """Recording and adaptation state of a session's (target, draft) pair.

    fuse: write adapters into the draft's float weights (faster per forward than applying them
    as LoRA modules; quantized linears are always applied unfused).
    """

    def __init__(self, session, target_dir, draft_dir, config: AdaptConfig | None = None,
                 home=None, fuse: bool = True):
        if session.draft is None:
            raise CanopyError("Adaptation needs a draft model: load a target and a draft.")
        self.session, self.config, self.fuse = session, config or AdaptConfig(), fuse
        self.store = PairStore(target_dir, draft_dir, self.config, home)
        self.applied: AppliedAdapter | None = None
        self.version: int | None = None
        self._cache_version: int | None = None  # adapter the prompt cache's draft KV matches
        self.last: dict | None = None  # metrics of the last finished run

    # -- use ---------------------------------------------------------------------------------
    def use_adopted(self) -> int | None:
        """Apply the pair's adopted adapter version to the draft (if any); returns it."""
        self._remove()
        adapter = self.store.load_adopted()
        if adapter is not None:
            self.applied = AppliedAdapter(self.session.draft.model, adapter, self.fuse)
            self.version = self.store.adopted
        self._draft_changed()
        return self.version

    def _remove(self) -> None:
        if self.applied is not None:
            self.applied.remove()
        self.applied, self.version = None, None

    def _draft_changed(self) -> None:
        """If the draft's weights differ from those the conversations' cached draft KV was
        computed with, drop that KV (the target's stays), so no stale draft state is reused."""
        cache = getattr(self.session, "prompt_cache", None)
        if cache is not None and self.version != self._cache_version:
            cache.drop_drafts(f"adapter-{self.version}" if self.version is not None else "")
        self._cache_version = self.version

    def reset(self) -> None:
        """Forget every adapter version; the draft is back to the shipped weights."""
        self._remove()
        self.store.reset()
        self._draft_changed()

    def status(self) -> dict:
        """The buffer on disk and the adopted version (what the settings show)."""
        buffer = self.store.buffer
        return {"sequences": len(buffer), "positions": buffer.positions,
                "bytes": buffer.size_bytes, "cap_bytes": buffer.cap_bytes,
                "recorded_total": buffer.recorded_total, "adopted_version": self.store.adopted}

    def clear_buffer(self) -> None:
        """Delete every recording of this pair (adapters stay)."""
        self.store.buffer.clear()

    def set_cap(self, cap_bytes: int) -> None:
        """A new ceiling for the buffer; the oldest recordings go at once if it is now over."""
        self.store.buffer.cap_bytes = cap_bytes
        self.store.buffer.trim()

    # -- record ------------------------------------------------------------------------------
    def recorder(self, prompt_ids: list[int]) -> Recorder:
        """An observer for `Session.generate`; hand it to `keep` when the generation ends."""
        return Recorder(prompt_ids, self.config.top_k)

    def keep(self, recorder: Recorder) -> None:
        seq = recorder.sequence()
        if seq is not None:
            self.store.buffer.add(seq)

    # -- adapt -------------------------------------------------------------------------------
    def run(self, should_stop: Callable[[], bool] | None = None) -> Iterator[AdaptProgress]:
        """Train from the buffer in slices (see Trainer.slices); then save the best adapter as
        a new version, adopted only if held-out agreement did not drop, and use the adopted
        one. Stopped early (or closed), nothing is saved and the draft is as before."""
        cfg = self.config
        train, holdout = self.store.buffer.split(cfg.holdout_fraction)
        current = self.store.load_adopted()
        self._remove()  # train against the shipped draft; the adapter is continued instead
        try:
            mx.reset_peak_memory()
            start = time.perf_counter()
            trainer = Trainer(self.session.draft.model, train, holdout, cfg, initial=current)
            last = None
            for progress in trainer.slices(should_stop):
                last = progress
                yield progress
            if last is None or last.cancelled:
                return
            seconds = time.perf_counter() - start
            best = trainer.best_adapter
            before, after = trainer.baseline, trainer.best
            adopt = best is not None and after[1] >= before[1]
            metrics = {
                "holdout_loss_before": before[0], "holdout_loss_after": after[0],
                "holdout_agreement_before": before[1], "holdout_agreement_after": after[1],
                "adapt_seconds": seconds, "steps": last.steps, "epochs": last.epoch,
                "train_sequences": len(train), "holdout_sequences": len(holdout),
                "train_positions": sum(len(s) for s in train),
                "trainable_parameters": trainer.trainable_parameters,
                "layers": trainer.tail.layer_ids, "rank": cfg.rank,
                "peak_memory_bytes": mx.get_peak_memory(),
                "peak_rss_bytes": peak_rss_bytes(),
            }
            version = self.store.save(best, metrics, adopt) if best is not None else None
            self.last = {**metrics, "version": version, "adopted": adopt}
        finally:
            self.use_adopted()


def peak_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # macOS bytes, Linux KiB
