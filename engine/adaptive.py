"""The one place that decides, per step, how the tree drafter spends its time.

Measured online from verification results (forgotten exponentially per target step):
- acceptance calibration A(pi): the fraction of tree nodes with draft path probability ~pi that
  the target accepted (binned on log10 pi);
- E(N): accepted nodes among the first N nodes of recent trees (best-first trees are prefixes of
  bigger ones, see engine.costmodel);
- timing: one draft forward over m tokens d(m) ~ a + b m; one target pass over N tokens
  v(N) ~ v0 + v1 N (IO included when the target is streamed); the rest of a step (overhead).

Each step, with the cost model's formulas (engine.costmodel (1)-(3)):
- speculation's tokens/s at the node cap N, sum E_s / sum T_s over recent trees, against ar's
  1 / (v(1) + o). While speculation wins, the tree grows (the cap doubles while trees fill it,
  halves when a smaller tree would be faster). When it loses, the drafter falls back to `ar`
  (root-only trees, no draft work) and probes with a small tree every `interval` steps
  (doubling while probes lose); a winning probe returns to speculation. When even a draft
  whose every token is accepted could not beat ar (a draft as slow as the target's pass), it
  does not probe (`speculation_can_win`), but rechecks as ar's pass time is measured.
- the threshold: a node with path probability pi is worth drafting while A(pi) per second of
  its cost beats the rate to beat, max(speculation, ar) (costmodel.marginal_threshold).
Until enough is seen, A(pi) = pi (a calibrated draft) and the configured threshold is used.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from . import costmodel as cm

LOG_MIN, LOG_MAX, BINS = -5.0, 0.0, 20
DECAY = 0.97  # per target step: recent steps dominate
MIN_SEEN = 4.0  # nodes per bin before its rate is trusted
WINDOW = 16  # recent trees kept for E(N)
PROBE_FIRST, PROBE_MAX = 16, 256  # steps in ar before a probe; doubles while probes lose
RETURN_MARGIN = 1.05  # a probe must beat ar by this much to return to speculation
CAN_WIN_MARGIN = 1.10  # perfect acceptance must beat ar by this much to be worth probing
START_TOKENS = 1.5  # s of costmodel (3)


@dataclass(frozen=True)
class Plan:
    """What the drafter does this step."""

    speculate: bool  # False: root only (ar)
    max_nodes: int
    threshold: float
    probe: bool = False


def _fit(points, prior_slope: float) -> tuple[float, float]:
    """Weighted least squares y = a + b x over (x, y, weight), b >= 0; with no spread in x, the
    prior slope (as a fraction of the mean) splits the mean. Plain Python: a few dozen points."""
    sw = sum(p[2] for p in points)
    xm = sum(p[0] * p[2] for p in points) / sw
    ym = sum(p[1] * p[2] for p in points) / sw
    var = sum(p[2] * (p[0] - xm) ** 2 for p in points) / sw
    if var < 0.25:
        b = prior_slope * ym / (1 + prior_slope * xm)
    else:
        b = max(0.0, sum(p[2] * (p[0] - xm) * (p[1] - ym) for p in points) / sw / var)
    return max(ym - b * xm, 0.0), b


class AutoPolicy:
    """Chooses threshold, node cap and ar fallback from the cost model (see module doc).

    Args:
        tree: the tree configuration (caps, initial threshold, expand width).
        adapt_threshold: learn the threshold (else keep `tree.threshold`).
        auto: choose the node cap and fall back to ar (else always the full `tree.max_nodes`).
    """

    def __init__(self, tree, adapt_threshold: bool = True, auto: bool = True):
        self.tree, self.adapt, self.auto = tree, adapt_threshold, auto
        self.threshold = tree.threshold
        self.lo, self.hi = 1e-4, 0.5
        self.seen = np.zeros(BINS)
        self.accepted = np.zeros(BINS)
        centres = LOG_MIN + (np.arange(BINS) + 0.5) * (LOG_MAX - LOG_MIN) / BINS
        self.prior = 10.0**centres
        self.edges = 10.0 ** np.linspace(LOG_MIN, LOG_MAX, BINS + 1)
        self.steps = 0
        self.trees: deque = deque(maxlen=WINDOW)  # (step, nodes, cum accepted by node index)
        self.forwards: deque = deque(maxlen=32)  # (tokens, seconds, step)
        self.passes: deque = deque(maxlen=32)  # (nodes, seconds, step)
        self.overheads: deque = deque(maxlen=16)
        self.mode = "tree"
        self.cap = min(tree.max_nodes, 1 + tree.expand_width) if auto else tree.max_nodes
        self.hold = 0  # steps before the cap may grow again (after a shrink)
        self.since = 0  # ar steps since the last probe / fallback
        self.interval = PROBE_FIRST
        self.timing_bound = False
        self.switches: list[tuple[int, str]] = []  # (step, mode entered), for stats and tests
        self.d: cm.Curve | None = None  # d(m), fitted after each step
        self.v: cm.Curve | None = None  # v(N)
        self.o = 0.0  # overhead per step

    # ---- estimates ---------------------------------------------------------------------------
    @staticmethod
    def bin_of(path_prob: float) -> int:
        x = math.log10(max(path_prob, 1e-12))
        b = int((x - LOG_MIN) / (LOG_MAX - LOG_MIN) * BINS)
        return min(max(b, 0), BINS - 1)

    def calibration(self) -> np.ndarray:
        """A(pi) per bin: measured where trusted, the prior elsewhere."""
        rate = np.divide(self.accepted, self.seen, out=self.prior.copy(), where=self.seen > 0)
        trust = np.clip(self.seen / MIN_SEEN, 0.0, 1.0)
        return trust * rate + (1 - trust) * self.prior

    def _weight(self, step: int) -> float:
        return DECAY ** (self.steps - step)

    def _refit(self) -> None:
        if self.forwards:
            a, b = _fit([(m, s, self._weight(k)) for m, s, k in self.forwards], 1 / 32)
            self.d = cm.Curve.linear(a, b)
        if self.passes:
            a, b = _fit([(n, s, self._weight(k)) for n, s, k in self.passes], 1 / 64)
            self.v = cm.Curve.linear(a, b)
        self.o = sorted(self.overheads)[len(self.overheads) // 2] if self.overheads else 0.0

    def ar_rate(self) -> float | None:
        return None if self.v is None else 1.0 / (self.v(1) + self.o)

    def tree_seconds(self, nodes: int) -> float | None:
        if self.d is None or self.v is None:
            return None
        w = self.tree.expand_width
        return cm.tree_draft_seconds(self.d, nodes, w, START_TOKENS) + self.v(nodes) + self.o

    def tree_rate(self, cap: int) -> float | None:
        """Predicted tokens/s of trees capped at `cap`: sum E_s / sum T_s over recent trees."""
        if not self.trees:
            return None
        tokens = seconds = 0.0
        for step, n, cum in self.trees:
            size = min(n, cap)
            t = self.tree_seconds(size)
            if t is None:
                return None
            w = self._weight(step)
            tokens += w * (1 + cum[size - 1])
            seconds += w * t
        return tokens / seconds

    def can_win(self) -> bool:
        d, v, w = self.d, self.v, self.tree.expand_width
        if d is None or v is None:
            return True
        return cm.speculation_can_win(
            lambda n: cm.tree_draft_seconds(d, n, w, 1.0),
            lambda n: v(n) * CAN_WIN_MARGIN,
            self.o,
            self.tree.max_nodes,
            w,
        )

    # ---- the per-step decision -----------------------------------------------------------------
    def plan(self) -> Plan:
        if self.mode == "tree":
            return Plan(True, self.cap, self.threshold)
        self.since += 1
        if not self.timing_bound and self.since >= self.interval:
            self.since = 0
            probe = max(2, min(self.cap, 1 + 2 * self.tree.expand_width))
            return Plan(True, probe, self.threshold, probe=True)
        return Plan(False, 1, self.threshold)

    def observe(self, result) -> None:
        """Learn from one verified step (engine.drafters.StepResult)."""
        self.steps += 1
        tree = result.proposal.tree
        n = len(tree)
        draft_s = getattr(result, "draft_seconds", 0.0)
        verify_s = getattr(result, "verify_seconds", 0.0) or result.step_seconds
        self.passes.append((n, verify_s, self.steps))
        self.overheads.append(max(0.0, result.step_seconds - draft_s - verify_s))
        for m, s in getattr(result.proposal, "forwards", ()):
            self.forwards.append((m, s, self.steps))
        if n > 1:
            self._observe_tree(tree, result.accepted)
        self._refit()
        if not self.auto:
            self._update_threshold(self.ar_rate() or 0.0)
            return
        spec, ar = self.tree_rate(self.cap), self.ar_rate()
        if spec is None or ar is None:
            return
        if self.mode == "tree":
            if spec < ar:
                self._enter("ar")
            else:
                self._resize(spec)
        elif getattr(result.proposal, "probe", False) or n > 1:
            if spec >= ar * RETURN_MARGIN:
                self._enter("tree")
            else:
                self.interval = min(PROBE_MAX, self.interval * 2)
        elif self.timing_bound and self.since % PROBE_FIRST == 0:
            self.timing_bound = not self.can_win()  # ar's pass time is measured: recheck
        if self.mode == "tree" or n > 1:
            self._update_threshold(max(spec, ar))

    def _observe_tree(self, tree, accepted) -> None:
        decay = DECAY ** (self.steps - getattr(self, "_last_tree_step", self.steps))
        self._last_tree_step = self.steps
        self.seen *= decay
        self.accepted *= decay
        taken = set(accepted)
        cum, total = [0] * len(tree), 0
        for i in range(1, len(tree)):
            b = self.bin_of(tree.path_prob[i])
            self.seen[b] += 1
            self.accepted[b] += i in taken
            total += i in taken
            cum[i] = total
        self.trees.append((self.steps, len(tree), cum))

    def _enter(self, mode: str) -> None:
        self.mode, self.since = mode, 0
        self.switches.append((self.steps, mode))
        if mode == "ar":
            self.timing_bound = not self.can_win()
        else:
            self.interval = PROBE_FIRST

    def _resize(self, rate: float) -> None:
        if self.hold > 0:
            self.hold -= 1
        recent = [n for step, n, _ in self.trees if step > self.steps - 4]
        half = max(2, self.cap // 2)
        smaller = self.tree_rate(half) if half < self.cap else None
        if smaller is not None and smaller > rate * 1.02:
            self.cap, self.hold = half, 8
        elif recent and min(recent) >= self.cap and self.hold == 0:
            self.cap = min(self.tree.max_nodes, self.cap * 2)

    def _update_threshold(self, rate: float) -> None:
        if not self.adapt or rate <= 0:
            return
        d, v, w = self.d, self.v, self.tree.expand_width
        if d is None or v is None:
            return
        per_node = d(w) / w + (v(2 * w) - v(w)) / w  # one more expanded node, one more verified
        edge = cm.marginal_threshold(self.calibration(), self.edges, per_node, rate)
        self.threshold = float(min(max(edge, self.lo), self.hi))
