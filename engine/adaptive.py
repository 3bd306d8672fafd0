"""Self-adaptive fallback: learn, from verification results, which draft nodes pay for themselves.

Two things are measured online:
- calibration A(pi): the fraction of tree nodes with draft path probability ~pi that the target
  accepted (binned on log10 pi, exponentially forgotten);
- cost: step seconds ~ t0 + c * nodes (least squares on recent steps), and the achieved rate
  r = emitted tokens / step seconds.
Adding a node with path probability pi raises the step's expected tokens by A(pi) and its time
by c; it helps throughput while A(pi) / c >= r. The threshold is the smallest pi (bin edge) from
which every higher bin still satisfies that. Until enough is seen, A(pi) = pi (a calibrated
draft) and the configured threshold is used.
"""

from __future__ import annotations

import math

import numpy as np

LOG_MIN, LOG_MAX, BINS = -5.0, 0.0, 20
DECAY = 0.97  # per step: recent steps dominate
MIN_SEEN = 4.0  # nodes per bin before its rate is trusted


class AdaptiveThreshold:
    def __init__(self, initial: float, lo: float = 1e-4, hi: float = 0.5):
        self.threshold = initial
        self.lo, self.hi = lo, hi
        self.seen = np.zeros(BINS)
        self.accepted = np.zeros(BINS)
        self.steps: list[tuple[int, float, int]] = []  # (nodes, seconds, emitted) recent window
        centres = LOG_MIN + (np.arange(BINS) + 0.5) * (LOG_MAX - LOG_MIN) / BINS
        self.prior = 10.0**centres

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

    def cost_per_node(self) -> tuple[float, float] | None:
        """(c seconds per node, rate tokens/s) from the recent steps, or None if unknown."""
        if len(self.steps) < 4:
            return None
        n = np.array([s[0] for s in self.steps], float)
        t = np.array([s[1] for s in self.steps], float)
        emitted = sum(s[2] for s in self.steps)
        rate = emitted / max(t.sum(), 1e-9)
        if n.std() < 0.5:  # no spread in tree sizes: assume time scales with nodes
            c = t.mean() / max(n.mean(), 1.0)
        else:
            c = max(np.polyfit(n, t, 1)[0], 1e-6)
        return c, rate

    def observe(self, result) -> None:
        tree = result.proposal.tree
        self.seen *= DECAY
        self.accepted *= DECAY
        accepted = set(result.accepted)
        for i in range(1, len(tree)):
            b = self.bin_of(tree.path_prob[i])
            self.seen[b] += 1
            self.accepted[b] += i in accepted
        self.steps = [*self.steps[-15:], (len(tree), result.step_seconds, len(result.accepted))]
        cost = self.cost_per_node()
        if cost is None:
            return
        c, rate = cost
        worth = self.calibration() / c >= rate
        # lowest bin from which all higher bins are worth their cost
        k = BINS
        while k > 0 and worth[k - 1]:
            k -= 1
        edge = 10.0 ** (LOG_MIN + k * (LOG_MAX - LOG_MIN) / BINS)
        self.threshold = float(min(max(edge, self.lo), self.hi))
