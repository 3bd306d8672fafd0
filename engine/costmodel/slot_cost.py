"""What one more verified node costs a tree with no draft model behind it (draft-free `tree`
mode): the price a draft-free branch node's acceptance must pay, like StepPolicy.node_worth does
when a draft model's policy runs.

v(N) is fitted on recent passes as the policy fits it (rules.fit_passes: one-node passes apart
from the line v0 + v1 N through bigger ones; forgotten per step); the running rate r is recent
tokens per second. A node accepted with probability p is worth its slot while p >= r * v1 (it
wins p tokens, costs v1 seconds that win r v1 tokens elsewhere); together a step's nodes pay
for the seconds they add to the pass (`extra_slot_seconds`, rules.branches_pay). While the
pass is IO-bound (waiting for streamed layers fills most of it) verifying one more node costs
next to nothing and v's slope is noise: the worth is 0.
"""

from __future__ import annotations

from collections import deque

from ..config import VERIFY_COST_PRIOR
from . import rules
from .tree_record import DECAY

MAX_WORTH = 0.5  # as StepPolicy's threshold cap: never prune harder than this


class SlotCost:
    """Recent passes (nodes, seconds, tokens, IO wait) -> the acceptance a node must reach."""

    def __init__(self, verify_prior: float | None = None, window: int = 32):
        self.prior = VERIFY_COST_PRIOR if verify_prior is None else verify_prior
        self.passes: deque[tuple[int, float, int, float, int]] = deque(maxlen=window)
        self.singles: deque[float] = deque(maxlen=8)  # seconds of recent one-node passes
        self.steps = 0
        self.fitted = None  # _fit() of the passes so far (cleared by observe)

    def observe(self, nodes: int, seconds: float, tokens: int, io_wait: float = 0.0) -> None:
        """One verified step: `nodes` verified in `seconds` (IO waits included, `io_wait` of
        them), `tokens` emitted."""
        self.steps += 1
        self.fitted = None
        self.passes.append((nodes, seconds, tokens, min(io_wait, seconds), self.steps))
        if nodes == 1:
            self.singles.append(seconds)

    def _weight(self, step: int) -> float:
        return DECAY ** (self.steps - step)

    def _fit(self):
        """(IO-bound?, v, v's slope, running rate) of the recent passes, once per step."""
        if self.fitted is None:
            self.fitted = self._fit_passes()
        return self.fitted

    def _fit_passes(self):
        w = [self._weight(p[4]) for p in self.passes]
        seconds = sum(wt * p[1] for wt, p in zip(w, self.passes))
        io_bound = rules.is_io_bound(sum(wt * p[3] for wt, p in zip(w, self.passes)), seconds)
        v, slope = rules.fit_passes([(p[0], p[1], wt) for wt, p in zip(w, self.passes)],
                                    self.singles, self.prior)
        rate = sum(wt * p[2] for wt, p in zip(w, self.passes)) / max(seconds, 1e-9)
        return io_bound, v, slope, rate

    def worth(self) -> float:
        """The acceptance probability a draft-free node needs for its verify slot."""
        if len(self.passes) < 2:
            return 0.0
        io_bound, _, slope, rate = self._fit()
        return 0.0 if io_bound else min(MAX_WORTH, rate * slope)

    @property
    def running_rate(self) -> float | None:
        return self._fit()[3] if len(self.passes) >= 2 else None

    def extra_slot_seconds(self, base: int, extra: int) -> float | None:
        """Seconds `extra` nodes add to a pass of `base` nodes (None: too few passes timed)."""
        if len(self.passes) < 2:
            return None
        io_bound, v, _, _ = self._fit()
        return rules.extra_slot_seconds(v, io_bound, base, extra, (p[0] for p in self.passes),
                                        bool(self.singles))
