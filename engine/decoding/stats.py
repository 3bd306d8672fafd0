"""Accumulates per-step measurements into the `Stats` of a finished generation.

Two definitions live here and nowhere else:
- acceptance by depth (`DepthAcceptance`), used by the stats, the GUI's live plot, the benchmark
  and the cost model's calibration;
- decode versus prefill IO: decode figures are sums over the StepEvents; what the target read
  while prefilling is reported under `prefill_*` keys.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..events import Stats, StepEvent
from ..streaming.memory import peak_rss_bytes


@dataclass
class DepthAcceptance:
    """Acceptance by depth, counted over steps.

    rates()[d - 1] = P(the target accepts a drafted node at depth d | the step's accepted path
    reached depth d - 1 at a node the drafter gave children). A step counts toward depth d
    exactly when its last accepted node at depth d - 1 had drafted children: steps that ended
    because the tree stopped there say nothing about depth d. Depth 1's rate is "the first draft
    token is accepted" among steps that drafted anything. The root (depth 0) is never counted.
    """

    reached: list[int] = field(default_factory=list)  # [d - 1]: steps that could accept depth d
    taken: list[int] = field(default_factory=list)  # [d - 1]: ... and did

    def add(self, step: StepEvent) -> None:
        """Count one step (needs only `tree_parents` and `accepted`)."""
        has_children = set(step.tree_parents) - {-1}
        path = step.accepted
        for d, node in enumerate(path):  # node sits at depth d on the accepted path
            if node not in has_children:
                break  # a leaf of the tree: the path could not go deeper
            while len(self.reached) <= d:
                self.reached.append(0)
                self.taken.append(0)
            self.reached[d] += 1
            self.taken[d] += d + 1 < len(path)

    def rates(self) -> tuple[float, ...]:
        return tuple(t / r if r else 0.0 for t, r in zip(self.taken, self.reached, strict=True))

    def overall(self) -> float:
        """Acceptance per drafted position, all depths together (what distillation raises)."""
        reached = sum(self.reached)
        return sum(self.taken) / reached if reached else 0.0


def acceptance_by_depth(steps: Iterable[StepEvent]) -> tuple[float, ...]:
    """DepthAcceptance's rates over `steps` (see its docstring for the definition)."""
    counts = DepthAcceptance()
    for step in steps:
        counts.add(step)
    return counts.rates()


class StatsRecorder:
    def __init__(self, mode: str, prompt_tokens: int, io_start=None):
        self.mode = mode
        self.prompt_tokens = prompt_tokens
        self.io_start = io_start  # IO snapshot before prefill
        self.io_decode_start = io_start  # ... and after it
        self.io_last = None  # after the last step
        self.start = time.perf_counter()
        self.prefill_seconds = 0.0
        self.first_token_at: float | None = None
        self.passes = 0
        self.proposed = 0
        self.accepted = 0
        self.draft_seconds = 0.0
        self.verify_seconds = 0.0
        self.bytes_read = 0
        self.io_wait_seconds = 0.0
        self.depth = DepthAcceptance()
        self.peak_resident = 0
        self.proposed_by_source = defaultdict(int)  # non-root nodes per source (TokenTree)
        self.accepted_by_source = defaultdict(int)

    def prefill_done(self, seconds: float, io_now=None) -> None:
        self.prefill_seconds = seconds
        self.decode_start = time.perf_counter()
        self.io_decode_start = self.io_last = io_now

    def io_fields(self, io_now) -> dict:
        """StepEvent IO fields: everything since the previous step (or the end of prefill), so
        the steps' sums are the decode totals, read-ahead between steps included."""
        before, self.io_last = self.io_last, io_now
        if before is None or io_now is None:
            return {}
        return {
            "io_wait_seconds": io_now.io_wait_seconds - before.io_wait_seconds,
            "bytes_read": io_now.bytes_read - before.bytes_read,
            "target_resident_bytes": io_now.resident_bytes,
            "layers_pinned": io_now.layers_pinned,
            "layers_streamed": io_now.layers_streamed,
        }

    def step(self, event: StepEvent) -> None:
        if self.first_token_at is None and event.token_ids:
            self.first_token_at = time.perf_counter()
        self.passes += 1
        self.proposed += len(event.tree_tokens) - 1
        self.accepted += len(event.accepted) - 1
        self.draft_seconds += event.draft_seconds
        self.verify_seconds += event.verify_seconds
        self.bytes_read += event.bytes_read
        self.io_wait_seconds += event.io_wait_seconds
        self.peak_resident = max(self.peak_resident, event.target_resident_bytes)
        for s in event.tree_sources[1:]:
            self.proposed_by_source[s] += 1
        for node in event.accepted[1:]:
            self.accepted_by_source[event.tree_sources[node]] += 1
        self.depth.add(event)

    def io_extra(self, io_end) -> dict:
        """IO thread seconds (decode, prefill) and the store's configuration."""
        start, decode_start, last = self.io_start, self.io_decode_start, self.io_last
        if start is None or decode_start is None or io_end is None:
            return {}
        last = last or decode_start
        return {
            "prefill_io_seconds": decode_start.io_seconds - start.io_seconds,
            "io_seconds": last.io_seconds - decode_start.io_seconds,
            "budget_bytes": io_end.budget_bytes,
            "layers_pinned": io_end.layers_pinned,
            "layers_streamed": io_end.layers_streamed,
        }

    def finish(self, generated: int, io_end=None, extra: dict | None = None) -> Stats:
        now = time.perf_counter()
        decode = now - getattr(self, "decode_start", self.start)
        extra = dict(extra or {})
        if self.proposed_by_source:
            extra["proposed_by_source"] = dict(self.proposed_by_source)
            extra["accepted_by_source"] = {
                s: self.accepted_by_source[s] for s in self.proposed_by_source}
        peak = self.peak_resident
        prefill_read = prefill_wait = 0
        if io_end is not None:
            peak = max(peak, io_end.peak_resident_bytes)
        if self.io_start is not None and self.io_decode_start is not None:
            prefill_read = self.io_decode_start.bytes_read - self.io_start.bytes_read
            prefill_wait = self.io_decode_start.io_wait_seconds - self.io_start.io_wait_seconds
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
            acceptance_by_depth=self.depth.rates(),
            draft_tokens_proposed=self.proposed,
            draft_tokens_accepted=self.accepted,
            draft_seconds=self.draft_seconds,
            verify_seconds=self.verify_seconds,
            peak_target_resident_bytes=peak,
            target_bytes_read=self.bytes_read,
            target_bytes_read_per_token=self.bytes_read / generated if generated else 0.0,
            io_wait_seconds=self.io_wait_seconds,
            prefill_target_bytes_read=prefill_read,
            prefill_io_wait_seconds=prefill_wait,
            peak_rss_bytes=peak_rss_bytes(),
            extra=self.io_extra(io_end) | extra,
        )
