"""The tree policy's timing measures (engine.costmodel.policy), each point forgotten
exponentially per target step by the policy's weight:

- d(m) ~ a + b m: one draft forward over m tokens (top-k selection included), a line whose
  slope is shrunk toward a prior (rules.fit_line) so a few noisy points cannot make it up;
- v(N): one target pass over N tokens, v(1) from root-only passes on their own and a line
  through tree passes (rules.fit_passes: on a CPU the jump from one token to a few is most of a
  small tree's verify cost); IO included when the target is streamed;
- o: the rest of a step (median of recent steps);
- the share of recent passes spent waiting for layers or with the IO thread reading
  (rules.is_io_bound).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from . import formulas as cm
from . import rules
from .timing_store import PairTiming

DRAFT_SLOPE_PRIOR = 1 / 32  # d's slope prior, per token, relative to its mean


def draft_curve(points) -> cm.Curve:
    """d(m) through (tokens, seconds, weight) forwards, its slope shrunk toward the prior."""
    return cm.Curve.linear(*rules.fit_line(points, DRAFT_SLOPE_PRIOR))


class StepTiming:
    def __init__(self, verify_prior: float):
        self.verify_prior = verify_prior  # v's slope prior (engine.config: platform default)
        self.forwards: deque = deque(maxlen=32)  # (tokens, seconds, step)
        self.passes: deque = deque(maxlen=32)  # (nodes, seconds, step, io wait seconds)
        self.singles: deque = deque(maxlen=8)  # seconds of recent root-only passes
        self.overheads: deque = deque(maxlen=16)
        self.d: cm.Curve | None = None  # d(m), refitted after each step
        self.v: cm.Curve | None = None  # v(N)
        self.v_slope = 0.0  # seconds per verified node beyond the first two (v's slope)
        self.o = 0.0

    def add_pass(self, nodes: int, seconds: float, step: int, io: float) -> None:
        self.passes.append((nodes, seconds, step, min(io, seconds)))
        if nodes == 1:
            self.singles.append(seconds)

    def seed(self, stored: PairTiming) -> None:
        """One point each from the pair's measures stored by an earlier process."""
        self.forwards.append((1, stored.draft_forward_seconds, 0))
        self.add_pass(1, stored.target_pass_seconds, 0,
                      min(stored.target_io_seconds, stored.target_pass_seconds))
        self.overheads.append(stored.overhead_seconds)

    def refit(self, weight: Callable[[int], float]) -> None:
        if self.forwards:
            self.d = draft_curve([(m, s, weight(k)) for m, s, k in self.forwards])
        if self.passes:
            points = [(n, s, weight(k)) for n, s, k, _ in self.passes]
            self.v, self.v_slope = rules.fit_passes(points, self.singles, self.verify_prior)
        self.o = sorted(self.overheads)[len(self.overheads) // 2] if self.overheads else 0.0

    def io_and_total(self, weight: Callable[[int], float]) -> tuple[float, float]:
        """Recent passes' IO seconds and their seconds, each weighted as forgotten."""
        wait = sum(weight(k) * io for _, _, k, io in self.passes)
        total = sum(weight(k) * s for _, s, k, _ in self.passes)
        return wait, total

    def measured(self, weight: Callable[[int], float]) -> PairTiming | None:
        """d(1), v(1) with its IO share, o (None until a draft forward and a target pass were
        timed), for the next process."""
        if self.d is None or self.v is None:
            return None
        wait, total = self.io_and_total(weight)
        v1 = self.v(1)
        if self.d(1) <= 0 or v1 <= 0:
            return None
        return PairTiming(self.d(1), v1, v1 * min(1.0, wait / total) if total > 0 else 0.0,
                          self.o)
