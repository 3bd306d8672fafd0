"""Pricing the draft's catch-up: committed tokens its cache has not processed yet.

The draft's prefill is deferred behind the target's first token, and root-only (`ar`) steps
leave the draft behind, so before its first tree (and before a probe) the draft must process
c pending tokens: forwards without a head, cu(c) seconds. On a GPU cu(c) is a small prefill;
on a CPU running quantized kernels it grows like c d(1) (no batching gain): a 2-bit 1.5B draft
takes ~1.4 s per token here, ~350 s for a 256-token prompt, where the fit of d(m) (one-token
forwards and a prior slope) predicted ~12 s.

It is worth paying only if speculation repays it over the tokens left to generate (the
policy's `catch_up_gain`): at the rate its measured trees predict, and before any tree with
half of what perfect acceptance would save (config.CATCH_UP_PERFECT_SHARE; the whole of it
made a 45 s catch-up of a 2-bit draft look worth it):

    cu(c) <= G = share * tokens_left * (1 / r_ar - 1 / r_spec)                      (gain)

cu(c) = a + b c, a line through the timed catch-up chunks and the 1-token forward d(1) (which
also runs the head: a little optimistic); with every point at one token, b = their seconds per
token and a = 0. Before any chunk was timed cu(c) is d's fit at c (optimistic), and the first
chunk is sized to cost at most one root-only step even if each token cost a whole d(1) (at
least one token: it measures); later chunks grow at most GROWTH-fold, so the chunk that shows
a catch-up cannot pay costs at most a few steps. In a streamed target's IO waits a chunk must
fit in the time the IO thread stays busy (rules.io_busy_seconds): there the catch-up is free.
"""

from __future__ import annotations

import math
from collections import deque

from .rules import fit_line

TAIL = 8  # pending tokens the tree's first draft forward takes along (priced as its start)
GROWTH = 4  # a chunk is at most this many times the last one


class CatchUp:
    """Recent catch-up chunks and the rules above (the policy owns one)."""

    def __init__(self) -> None:
        self.chunks: deque = deque(maxlen=4)  # (tokens, seconds) of recent catch-up forwards

    def observe(self, tokens: int, seconds: float) -> None:
        if tokens > 0:
            self.chunks.append((tokens, seconds))

    def line(self, one_forward: float | None) -> tuple[float, float] | None:
        """(a, b) of cu(c) = a + b c (None before any chunk); `one_forward`: d(1) if known."""
        if not self.chunks:
            return None
        points = [(m, s, 1.0) for m, s in self.chunks]
        if one_forward is not None:
            points.append((1, one_forward, 1.0))
        if len({m for m, _, _ in points}) == 1:  # no spread: seconds per token
            return 0.0, sum(s for _, s, _ in points) / sum(m for m, _, _ in points)
        return fit_line(points, 0.0, prior_weight=0.0)

    def seconds(self, pending: int, one_forward: float | None, fitted: float) -> float:
        """cu(pending): the chunks' line once measured, else `fitted` (d's fit at c tokens)."""
        line = self.line(one_forward)
        return fitted if line is None else line[0] + line[1] * pending

    def pays(self, pending: int, gain: float, one_forward: float | None,
             fitted: float) -> bool:
        """Is catching up on `pending` tokens worth it against the gain bound G?"""
        return pending <= TAIL or self.seconds(pending, one_forward, fitted) <= gain

    def chunk(self, pending: int, allowed: float, one_forward: float) -> int:
        """Tokens for one catch-up forward that should take at most `allowed` seconds: by the
        chunks' line, at most GROWTH times the last chunk; before any chunk, by d(1) =
        `one_forward` per token and at least one token."""
        line = self.line(one_forward)
        if line is None:
            fits = allowed / one_forward if one_forward > 0 else math.inf
            return max(1, min(pending, _floor(fits)))
        a, b = line
        fits = (allowed - a) / b if b > 0 else (math.inf if allowed >= a else 0.0)
        return max(0, min(pending, _floor(fits), GROWTH * self.chunks[-1][0]))


def _floor(x: float) -> int:
    return int(x) if math.isfinite(x) else 1 << 30
