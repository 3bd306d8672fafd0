"""The one place that decides, per step, how the tree drafter spends its time.

Measured online from verification results (forgotten exponentially per target step):
- timing: one draft forward over m tokens d(m) ~ a + b m; one target pass over N tokens
  v(N) ~ v0 + v1 N (IO included when the target is streamed); the rest of a step, o;
- acceptance of recent trees: best-first trees grow in rounds (the start forward, then one
  forward per batch of `expand_width` nodes), and the accepted path can only go one round
  deeper per round. E_s(R) = 1 + accepted nodes of tree s within its first R + 1 batches;
  beyond the rounds a tree had, the path continues one more round with probability rho (how
  often a path that reached a batch reached the next one, over recent trees);
- the calibration A(pi): the fraction of nodes with draft path probability ~pi that the target
  accepted (log10 bins), shrunk toward kappa * pi (kappa: accepted / sum of path probabilities).

Each step, with the cost model's formulas (engine.costmodel.formulas (1)-(3)):
- the node budget: R* = argmax_R sum_s E_s(R) / sum_s T(R), T(R) = d(s) + R d(w) + v(N) + o,
  N = 1 + w (R + 1); the drafter grows a best-first tree of at most N nodes;
- the threshold: a node whose path probability pi gives A(pi) per second of its verify cost
  (v1) below the rate to beat is not worth a slot (costmodel.marginal_threshold);
- the mode: when speculation's best predicted rate loses to ar's 1 / (v(1) + o) (after two
  trees, or at once when even a draft whose every token were accepted could not win: a draft as
  slow as the target's pass, costmodel.speculation_can_win), the drafter falls back to `ar`:
  root-only trees, no draft work. It probes with a small tree every `interval` steps (doubling
  while probes lose, up to PROBE_MAX) and returns when a probe predicts a win; when bound by
  timing it does not probe, but rechecks the bound as ar's pass time is measured.
The first step drafts one forward's worth (root + top-k children) and the second is a plain
ar step, to measure d, v(N) and v(1) before deciding; R grows at most to 4 R_seen + 3 per
step (exploration is bounded by what was observed).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from . import formulas as cm

LOG_MIN, LOG_MAX, BINS = -5.0, 0.0, 20
DECAY = 0.97  # per target step: recent steps dominate
MIN_SEEN = 4.0  # pseudo-nodes of the calibration prior per bin
WINDOW = 16  # recent trees kept
PROBE_FIRST, PROBE_MAX = 16, 256  # steps in ar before a probe; doubles while probes lose
RETURN_MARGIN = 1.05  # a probe must predict a win by this much to return to speculation
CAN_WIN_MARGIN = 1.10  # perfect acceptance must beat ar by this much to be worth probing
START_TOKENS = 1.5  # s of costmodel (3)


@dataclass(frozen=True)
class Plan:
    """What the drafter does this step."""

    speculate: bool  # False: root only (ar)
    max_nodes: int
    threshold: float
    probe: bool = False
    rounds: int | None = None  # expansion forwards after the first (None: up to the caps)


def _fit(points, prior_slope: float, prior_weight: float = 32.0) -> tuple[float, float]:
    """Weighted least squares y = a + b x over (x, y, weight), b >= 0, with the slope shrunk
    toward a prior (`prior_slope` times the mean per unit of x; `prior_weight` in units of
    weight * x^2), so a few noisy points with little spread cannot make it up. Plain Python."""
    sw = sum(p[2] for p in points)
    xm = sum(p[0] * p[2] for p in points) / sw
    ym = sum(p[1] * p[2] for p in points) / sw
    sxx = sum(p[2] * (p[0] - xm) ** 2 for p in points)
    sxy = sum(p[2] * (p[0] - xm) * (p[1] - ym) for p in points)
    b0 = prior_slope * ym / (1 + prior_slope * xm)
    b = max(0.0, (sxy + prior_weight * b0) / (sxx + prior_weight))
    return max(ym - b * xm, 0.0), b


@dataclass(frozen=True)
class TreeRecord:
    step: int
    nodes: int
    cum: list[int]  # cum[i]: accepted nodes among nodes 1..i
    reach: list[bool]  # reach[r]: the accepted path has a node in batch r


class AutoPolicy:
    """Chooses node budget, threshold and ar fallback from the cost model (see module doc).

    Args:
        tree: the tree configuration (caps, initial threshold, expand width).
        adapt_threshold: learn the threshold (else keep `tree.threshold`).
        auto: choose the node budget and fall back to ar (else always `tree.max_nodes`).
    """

    def __init__(self, tree, adapt_threshold: bool = True, auto: bool = True):
        self.tree, self.adapt, self.auto = tree, adapt_threshold, auto
        self.w = max(1, tree.expand_width)
        self.max_rounds = cm.tree_rounds(tree.max_nodes, self.w)
        self.threshold = tree.threshold
        self.lo, self.hi = 1e-4, 0.5
        self.seen, self.accepted, self.mass = np.zeros(BINS), np.zeros(BINS), np.zeros(BINS)
        centres = LOG_MIN + (np.arange(BINS) + 0.5) * (LOG_MAX - LOG_MIN) / BINS
        self.prior = 10.0**centres
        self.edges = 10.0 ** np.linspace(LOG_MIN, LOG_MAX, BINS + 1)
        self.steps = 0
        self.last_tree_step = 0
        self.trees: deque[TreeRecord] = deque(maxlen=WINDOW)
        self.forwards: deque = deque(maxlen=32)  # (tokens, seconds, step)
        self.passes: deque = deque(maxlen=32)  # (nodes, seconds, step)
        self.overheads: deque = deque(maxlen=16)
        self.d: cm.Curve | None = None  # d(m), refitted after each step
        self.v: cm.Curve | None = None  # v(N)
        self.o = 0.0
        self.mode = "tree"
        self.rounds = 0  # R of the next speculative step
        self.ar_sampled = False  # a root-only step has been timed
        self.evidence = 0  # trees observed since speculation (re)started
        self.since = 0  # ar steps since the last probe / fallback
        self.interval = PROBE_FIRST
        self.timing_bound = False
        self.switches: list[tuple[int, str]] = []  # (step, mode entered)

    # ---- estimates -------------------------------------------------------------------------
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

    def nodes_for(self, rounds: int) -> int:
        return min(self.tree.max_nodes, 1 + self.w * (rounds + 1))

    def ar_rate(self) -> float | None:
        return None if self.v is None else 1.0 / (self.v(1) + self.o)

    def tree_seconds(self, rounds: int) -> float:
        n = self.nodes_for(rounds)
        return cm.tree_draft_seconds(self.d, n, self.w, START_TOKENS) + self.v(n) + self.o

    def rho(self) -> float:
        """P(the accepted path reaches batch r + 1 | it reached batch r and r + 1 was drafted)."""
        pairs = hits = 0.0
        first = firsts = 0.0
        for t in self.trees:
            wt = self._weight(t.step)
            first += wt * t.reach[0]
            firsts += wt
            for r in range(len(t.reach) - 1):
                if t.reach[r]:
                    pairs += wt
                    hits += wt * t.reach[r + 1]
        prior = (first + 0.5) / (firsts + 1.0)  # Laplace: one lucky tree does not make rho 1
        return (hits + 2 * prior) / (pairs + 2)

    def tree_rate(self, rounds: int, rho: float | None = None) -> float | None:
        """Predicted tokens/s with R = `rounds`: sum_s E_s(R) / sum_s T(R), recent trees."""
        if not self.trees or self.d is None or self.v is None:
            return None
        rho = self.rho() if rho is None else rho
        n = self.nodes_for(rounds)
        tokens = weight = 0.0
        for t in self.trees:
            wt = self._weight(t.step)
            have = len(t.reach)  # batches tree s had
            e = 1.0 + t.cum[min(n, t.nodes) - 1]
            if rounds + 1 > have and t.reach[-1]:  # extrapolate: one round deeper w.p. rho
                e += sum(rho**j for j in range(1, rounds + 2 - have))
            tokens += wt * e
            weight += wt
        return tokens / (weight * self.tree_seconds(rounds))

    def best_rounds(self) -> tuple[int, float] | None:
        rho = self.rho()
        seen = max((len(t.reach) - 1 for t in self.trees), default=0)
        top = min(self.max_rounds, 4 * seen + 3)
        rates = [(self.tree_rate(r, rho), r) for r in range(top + 1)]
        if rates[0][0] is None:
            return None
        rate, r = max(rates)
        return r, rate

    def can_win(self) -> bool:
        d, v, w = self.d, self.v, self.w
        if d is None or v is None:
            return True
        return cm.speculation_can_win(
            lambda n: cm.tree_draft_seconds(d, n, w, 1.0),
            v,
            self.o,
            self.tree.max_nodes,
            w,
            CAN_WIN_MARGIN,
        )

    # ---- the per-step decision -------------------------------------------------------------
    def plan(self) -> Plan:
        if not self.auto:
            return Plan(True, self.tree.max_nodes, self.threshold)
        if self.mode == "tree":
            if self.trees and not self.ar_sampled:  # time one ar step: v(1), o without a draft
                return Plan(False, 1, self.threshold)
            return Plan(True, self.nodes_for(self.rounds), self.threshold, rounds=self.rounds)
        self.since += 1
        if not self.timing_bound and self.since >= self.interval:
            self.since = 0
            return Plan(True, self.nodes_for(1), self.threshold, probe=True, rounds=1)
        return Plan(False, 1, self.threshold)

    def observe(self, result) -> None:
        """Learn from one verified step (engine.decoding.drafters.StepResult)."""
        self.steps += 1
        tree = result.proposal.tree
        n = len(tree)
        draft_s = getattr(result, "draft_seconds", 0.0)
        verify_s = getattr(result, "verify_seconds", 0.0) or result.step_seconds
        self.passes.append((n, verify_s, self.steps))
        self.overheads.append(max(0.0, result.step_seconds - draft_s - verify_s))
        for m, s in getattr(result.proposal, "forwards", ()):
            self.forwards.append((m, s, self.steps))
        self.ar_sampled |= n == 1
        if n > 1:
            self._observe_tree(tree, result.accepted)
            self.evidence += 1
        self._refit()
        best, ar = self.best_rounds(), self.ar_rate()
        if best is None or ar is None:
            return
        rounds, spec = best
        self._update_threshold(max(spec, ar))
        if not self.auto:
            return
        if self.mode == "tree":
            self.rounds = rounds
            if spec < ar and (self.evidence >= 2 or not self.can_win()):
                self._enter("ar")
        elif n > 1:  # a probe
            if spec >= ar * RETURN_MARGIN:
                self.rounds = rounds
                self._enter("tree")
            else:
                self.interval = min(PROBE_MAX, self.interval * 2)
        elif self.timing_bound and self.since % PROBE_FIRST == 0:
            self.timing_bound = not self.can_win()  # ar's pass time is measured: recheck

    def _observe_tree(self, tree, accepted) -> None:
        decay = DECAY ** (self.steps - self.last_tree_step)
        self.last_tree_step = self.steps
        self.seen *= decay
        self.accepted *= decay
        self.mass *= decay
        taken = set(accepted)
        cum, total = [0] * len(tree), 0
        reach = [False] * math.ceil((len(tree) - 1) / self.w)
        for i in range(1, len(tree)):
            b = self.bin_of(tree.path_prob[i])
            hit = i in taken
            self.seen[b] += 1
            self.accepted[b] += hit
            self.mass[b] += tree.path_prob[i]
            total += hit
            cum[i] = total
            reach[(i - 1) // self.w] |= hit
        self.trees.append(TreeRecord(self.steps, len(tree), cum, reach))

    def _enter(self, mode: str) -> None:
        self.mode, self.since = mode, 0
        self.switches.append((self.steps, mode))
        if mode == "ar":
            self.timing_bound = not self.can_win()
        else:
            self.interval, self.evidence = PROBE_FIRST, 0

    def _update_threshold(self, rate: float) -> None:
        """A node takes a verify slot (v1 seconds): worth it while A(pi) / v1 >= rate."""
        if not self.adapt or self.v is None or rate <= 0:
            return
        per_node = max(self.v(2) - self.v(1), 1e-6)
        edge = cm.marginal_threshold(self.calibration(), self.edges, per_node, rate)
        self.threshold = float(min(max(edge, self.lo), self.hi))
