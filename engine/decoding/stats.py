"""Accumulates per-step measurements into the `Stats` of a finished generation."""

from __future__ import annotations

import time
from collections import defaultdict

from ..events import Stats, StepEvent
from ..streaming.memory import peak_rss_bytes


class StatsRecorder:
    def __init__(self, mode: str, prompt_tokens: int, io_start=None):
        self.mode = mode
        self.prompt_tokens = prompt_tokens
        self.io_start = io_start
        self.start = time.perf_counter()
        self.prefill_seconds = 0.0
        self.first_token_at: float | None = None
        self.passes = 0
        self.proposed = 0
        self.accepted = 0
        self.draft_seconds = 0.0
        self.verify_seconds = 0.0
        self.reached = defaultdict(int)  # depth d: steps whose tree offered a node at d on the path
        self.taken = defaultdict(int)  # depth d: steps that accepted a node at depth d
        self.peak_resident = 0
        self.proposed_by_source = defaultdict(int)  # non-root nodes per source (TokenTree)
        self.accepted_by_source = defaultdict(int)

    def prefill_done(self, seconds: float) -> None:
        self.prefill_seconds = seconds
        self.decode_start = time.perf_counter()

    @staticmethod
    def io_fields(before, after) -> dict:
        if before is None or after is None:
            return {}
        return {
            "io_wait_seconds": after.io_wait_seconds - before.io_wait_seconds,
            "bytes_read": after.bytes_read - before.bytes_read,
            "target_resident_bytes": after.resident_bytes,
            "layers_pinned": after.layers_pinned,
            "layers_streamed": after.layers_streamed,
        }

    def step(self, event: StepEvent, depth: list[int], seconds: float) -> None:
        if self.first_token_at is None and event.token_ids:
            self.first_token_at = time.perf_counter()
        self.passes += 1
        self.proposed += len(event.tree_tokens) - 1
        self.accepted += len(event.accepted) - 1
        self.draft_seconds += event.draft_seconds
        self.verify_seconds += event.verify_seconds
        self.peak_resident = max(self.peak_resident, event.target_resident_bytes)
        for s in event.tree_sources[1:]:
            self.proposed_by_source[s] += 1
        for node in event.accepted[1:]:
            self.accepted_by_source[event.tree_sources[node]] += 1
        # acceptance by depth: among steps whose accepted path could continue to depth d
        # (the last accepted node at depth d-1 had drafted children), how many did.
        parents = event.tree_parents
        has_child = {p for p in parents if p >= 0}
        for d, node in enumerate(event.accepted):
            if node in has_child:
                self.reached[d + 1] += 1
                if d + 1 < len(event.accepted):
                    self.taken[d + 1] += 1

    def finish(self, generated: int, io_end=None, extra: dict | None = None) -> Stats:
        now = time.perf_counter()
        decode = now - getattr(self, "decode_start", self.start)
        depths = range(1, max(self.reached, default=0) + 1)
        extra = dict(extra or {})
        if self.proposed_by_source:
            extra["proposed_by_source"] = dict(self.proposed_by_source)
            extra["accepted_by_source"] = {
                s: self.accepted_by_source[s] for s in self.proposed_by_source}
        bytes_read = io_wait = 0
        peak = self.peak_resident
        if io_end is not None:
            bytes_read = io_end.bytes_read - self.io_start.bytes_read
            io_wait = io_end.io_wait_seconds - self.io_start.io_wait_seconds
            peak = max(peak, io_end.peak_resident_bytes)
            extra |= {
                "io_seconds": io_end.io_seconds - self.io_start.io_seconds,
                "budget_bytes": io_end.budget_bytes,
                "layers_pinned": io_end.layers_pinned,
                "layers_streamed": io_end.layers_streamed,
            }
        return Stats(
            mode=self.mode,
            prompt_tokens=self.prompt_tokens,
            generated_tokens=generated,
            target_passes=self.passes,
            tokens_per_pass=generated / self.passes if self.passes else 0.0,
            tokens_per_second=generated / decode if decode > 0 else 0.0,
            prefill_seconds=self.prefill_seconds,
            decode_seconds=decode,
            time_to_first_token=(self.first_token_at or now) - self.start,
            acceptance_by_depth=tuple(
                self.taken[d] / self.reached[d] if self.reached[d] else 0.0 for d in depths
            ),
            draft_tokens_proposed=self.proposed,
            draft_tokens_accepted=self.accepted,
            draft_seconds=self.draft_seconds,
            verify_seconds=self.verify_seconds,
            peak_target_resident_bytes=peak,
            target_bytes_read=bytes_read,
            target_bytes_read_per_token=bytes_read / generated if generated else 0.0,
            io_wait_seconds=io_wait,
            peak_rss_bytes=peak_rss_bytes(),
            extra=extra,
        )
