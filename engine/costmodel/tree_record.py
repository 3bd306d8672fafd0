"""What the auto policy remembers of recent trees: acceptance by draft path probability (the
calibration A(pi)) and, per tree, how many of its first N nodes the target accepted.

engine.costmodel.policy predicts E(N), the tokens a budget of N nodes wins, from this record.
Forgetting is exponential per target step (DECAY), the same for every estimate.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

LOG_MIN, LOG_MAX, BINS = -5.0, 0.0, 20
DECAY = 0.97  # per target step: recent steps dominate
MIN_SEEN = 4.0  # pseudo-nodes of the calibration prior per bin
WINDOW = 16  # recent trees kept

Weight = Callable[[int], float]  # a step's weight now (DECAY ** steps since)


@dataclass(frozen=True)
class TreeRecord:
    step: int
    nodes: int
    cum: list[int]  # cum[i]: accepted nodes among nodes 1..i
    depth: int  # the deepest drafted node
    path: int  # depth of the accepted path (0: no draft token accepted)


class RecentTrees:
    """The calibration bins and the last WINDOW trees."""

    def __init__(self):
        self.seen, self.accepted, self.mass = np.zeros(BINS), np.zeros(BINS), np.zeros(BINS)
        centres = LOG_MIN + (np.arange(BINS) + 0.5) * (LOG_MAX - LOG_MIN) / BINS
        self.prior = 10.0**centres
        self.edges = 10.0 ** np.linspace(LOG_MIN, LOG_MAX, BINS + 1)
        self.last_step = 0
        self.trees: deque[TreeRecord] = deque(maxlen=WINDOW)

    @staticmethod
    def bin_of(path_prob: float) -> int:
        x = math.log10(max(path_prob, 1e-12))
        b = int((x - LOG_MIN) / (LOG_MAX - LOG_MIN) * BINS)
        return min(max(b, 0), BINS - 1)

    def calibration(self) -> np.ndarray:
        """A(pi) per bin, shrunk toward kappa * pi with MIN_SEEN pseudo-nodes."""
        kappa = (self.accepted.sum() + 1.0) / (self.mass.sum() + 1.0)
        prior = np.minimum(1.0, kappa * self.prior)
        return (self.accepted + MIN_SEEN * prior) / (self.seen + MIN_SEEN)

    def observe(self, step: int, tree, accepted, n: int) -> None:
        """Tree of `n` draft nodes verified at `step`; `accepted`: the accepted path's nodes."""
        decay = DECAY ** (step - self.last_step)
        self.last_step = step
        self.seen *= decay
        self.accepted *= decay
        self.mass *= decay
        taken = set(accepted)
        cum, total = [0] * n, 0
        for i in range(1, n):
            b = self.bin_of(tree.path_prob[i])
            hit = i in taken
            self.seen[b] += 1
            self.accepted[b] += hit
            self.mass[b] += tree.path_prob[i]
            total += hit
            cum[i] = total
        depth, path = max(tree.depth[:n]), sum(1 for a in accepted[1:] if a < n)
        self.trees.append(TreeRecord(step, n, cum, depth, path))

    def rho(self, weight: Weight) -> float:
        """P(the accepted path reaches depth k + 1 | it reached depth k and k + 1 was drafted)."""
        pairs = hits = 0.0
        first = firsts = 0.0
        for t in self.trees:
            wt = weight(t.step)
            first += wt * (t.path >= 1)
            firsts += wt
            for k in range(1, t.depth):
                if t.path >= k:
                    pairs += wt
                    hits += wt * (t.path >= k + 1)
        prior = (first + 0.5) / (firsts + 1.0)  # Laplace: one lucky tree does not make rho 1
        return (hits + 2 * prior) / (pairs + 2)

    def tokens(self, nodes: int, cap: int, rho: float, weight: Weight) -> float | None:
        """E(N): sum_s E_s(N) over recent trees, weighted (None before any tree); a path may
        go on below a tree's depth, one level w.p. rho, down to depth `cap`."""
        if not self.trees:
            return None
        tokens = total = 0.0
        for t in self.trees:
            wt = weight(t.step)
            # its accepted nodes among the first N, on a path no deeper than the rounds allow
            # (a tree the threshold kept narrow reached depths a budget of N cannot)
            e = 1.0 + min(t.cum[min(nodes, t.nodes) - 1], cap)
            if nodes > t.nodes and t.path == t.depth and cap > t.depth:
                e += sum(rho**j for j in range(1, cap - t.depth + 1))  # one level deeper w.p. rho
            tokens += wt * e
            total += wt
        return tokens / total
