"""Draft-free branches (prompt lookup, n-gram pool) in the step policy's accounting.

They cost verification slots, not draft forwards, and they win tokens with or without the draft
model's tree: per step, the tokens they would have won alone are the longest prefix of the
accepted path that one of them spells (a counterfactual every step measures, ar steps included).
The policy credits a speculative step with max(draft path, that prefix) and the ar alternative
(root + the same branches) with that prefix, and charges both the branches' verify slots.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence


def spelled(branches: Sequence[Sequence[int]], tokens: Sequence[int]) -> int:
    """Length of the longest prefix of `tokens` that one of `branches` starts with."""
    best = 0
    for branch in branches:
        k = 0
        while k < min(len(branch), len(tokens)) and branch[k] == tokens[k]:
            k += 1
        best = max(best, k)
    return best


class FreeBranches:
    """Recent steps' draft-free branches: tokens they won alone and verify slots they took."""

    def __init__(self, window: int = 32):
        self.records: deque[tuple[int, int, int]] = deque(maxlen=window)  # (step, won, nodes)

    def __bool__(self) -> bool:
        return bool(self.records)

    def observe(self, step: int, proposal, accepted: Sequence[int]) -> int:
        """Record one verified step (engine.decoding.drafters.Proposal); returns the tokens its
        branches won alone (0 when it had none)."""
        branches = getattr(proposal, "free_branches", None)
        if branches is None:
            return 0
        tree = proposal.tree
        won = spelled(branches, [tree.tokens[i] for i in accepted[1:]])
        self.records.append((step, won, getattr(proposal, "free_nodes", 0)))
        return won

    def _mean(self, column: int, weight: Callable[[int], float]) -> float:
        total = sum(weight(r[0]) for r in self.records)
        if total <= 0:
            return 0.0
        return sum(weight(r[0]) * r[column] for r in self.records) / total

    def tokens(self, weight: Callable[[int], float]) -> float:
        """Tokens per step the branches win alone (weighted by step recency)."""
        return self._mean(1, weight)

    def nodes(self, weight: Callable[[int], float]) -> float:
        """Verify slots per step the branches take."""
        return self._mean(2, weight)
