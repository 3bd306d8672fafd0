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

`CatchUp` keeps the timed chunks and these rules; `CatchUpDecisions` is the auto policy's side
(engine.costmodel.policy.StepPolicy): the gain, whether and how much to catch up, and when.
"""

from __future__ import annotations

import math
from collections import deque

from ..config import CATCH_UP_PERFECT_SHARE
from . import formulas as cm
from . import rules
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


class CatchUpDecisions:
    """The auto policy's decisions about the draft's catch-up (mixed into
    engine.costmodel.policy.StepPolicy, which owns `catch` (a CatchUp), the timing fits d, v,
    o, the answer's `max_tokens` and `generated`, and ar_rate / best_nodes / io state)."""

    def catch_up_gain(self) -> float:
        """G: seconds speculation should save over the tokens left (infinite while the answer's
        limit or the timings are unknown): at the trees' measured acceptance (best_nodes);
        before any tree, CATCH_UP_PERFECT_SHARE of what a draft whose every token is accepted
        would save. The catch-up is an investment only acceptance repays: priced at perfect
        acceptance, a 2-bit draft at a quarter of a streamed pass per token caught up for 45 s
        on a 32-token prompt and then won 2 of 15 drafted tokens; priced at a typical
        acceptance, a CPU's good draft (whose chain at 0.6 per token loses to ar) never
        caught up to show its 0.9."""
        if self.max_tokens is None or self.d is None or self.v is None:
            return float("inf")
        best = self.best_nodes()
        if best is not None:
            rate, share = best[1], 1.0
        else:
            rate = cm.perfect_rate(self._tree_draft_seconds(self.d), self.v, self.o,
                                   self.tree.max_nodes, self.w)
            share = CATCH_UP_PERFECT_SHARE
        saved = 1.0 / self.ar_rate() - (1.0 / rate if rate > 0 else float("inf"))
        return share * max(0, self.max_tokens - self.generated) * max(0.0, saved)

    def catch_up_pays(self, pending: int) -> bool:
        if pending <= TAIL:  # nothing to price (CatchUp.pays): plan() asks every step
            return True
        d = self.d
        return self.catch.pays(pending, self.catch_up_gain(), None if d is None else d(1),
                               0.0 if d is None else d(pending))

    def catch_up_chunk(self, pending: int) -> int | None:
        """Tokens of the next catch-up forward before a tree (None: it stops paying, unless the
        policy is fixed): the first at most a root-only step's seconds, then all that is left
        (in GROWTH-fold chunks)."""
        if self.auto and not self.catch_up_pays(pending):
            return None
        if self.d is None or self.v is None:
            return pending
        step = self.v(1) + self.o if self.catch.line(self.d(1)) is None else float("inf")
        return self.catch.chunk(pending, step, self.d(1))

    def catch_up_while_waiting(self, facts: rules.WaitFacts, pending: int) -> int:
        """Tokens to catch up on during this IO wait (0: none): while it may pay, in a chunk that
        fits the IO thread's busy time (the first one, unmeasured, runs anyway: it measures)."""
        if self.d is None or pending <= 0:
            return 0
        if self.auto and ((self.mode == "ar" and self.timing_bound)
                          or not self.catch_up_pays(pending)):
            return 0
        return self.catch.chunk(pending, rules.io_busy_seconds(facts), self.d(1))

    def observe_catch_up(self, tokens: int, seconds: float) -> None:
        """A timed catch-up chunk: also a draft forward over `tokens` for d's fit (its head is
        not run: a little optimistic), the spread of sizes a 1-token timing lacks."""
        self.catch.observe(tokens, seconds)
        self.timing.forwards.append((tokens, seconds, self.steps))
        self._refit()
