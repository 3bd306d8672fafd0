"""Tokens per target pass in the cost model (engine.costmodel.formulas (2)).

Tokens per pass (acceptance, measured on calibration prompts, engine.costmodel.acceptance):
    ar: 1;   chain(k): 1 + sum_{d=1..k} prod_{j<=d} alpha_j   (alpha_j = P(depth j | depth j-1))
    tree(N): E(N) = 1 + mean over calibration steps of the accepted nodes among a tree's first N
      nodes. Best-first trees are prefixes of bigger ones (nodes join in path-probability order,
      the node cap only truncates), so one run with big trees gives E(N) for every N <= its cap.
A calibrated draft (P(accept) = draft probability) gives the closed form used for devices with
no measurement: E(N) = 1 + the sum of the N - 1 largest path probabilities of the draft's tree
(`calibrated_tree_tokens`).

R(N), the draft's expansion forwards after the first, and the perfect-acceptance bound that
`formulas.speculation_can_win` uses live here too.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence


def chain_tokens(alpha: Sequence[float], k: int) -> float:
    """1 + sum_{d=1..k} prod_{j<=d} alpha_j (alpha beyond the measured depths: the last one)."""
    total, reach = 1.0, 1.0
    for d in range(k):
        a = alpha[min(d, len(alpha) - 1)] if alpha else 0.0
        reach *= a
        total += reach
    return total


def tree_tokens(curve: Sequence[float], nodes: int) -> float:
    """E(N) from the measured curve (flat beyond its last point: extra nodes add nothing)."""
    if nodes <= 1 or not curve:
        return 1.0
    return curve[min(nodes, len(curve)) - 1]


def calibrated_tree_tokens(
    profile: Sequence[float], nodes: int, width: int = 4, max_depth: int = 12
) -> float:
    """E(N) of a calibrated draft whose top-k candidates at every position have probabilities
    `profile` (best first), grown like the tree drafter: each round the `width` best candidates
    join the tree and their children become candidates. E(N) = 1 + the sum of the joined
    nodes' path probabilities (a calibrated draft is accepted with its own probability)."""
    total, joined = 1.0, 0
    heap = [(-p, 1) for p in profile]  # (-path prob, depth): the root's children
    heapq.heapify(heap)
    while heap and joined < nodes - 1:
        batch = [heapq.heappop(heap) for _ in range(min(width, len(heap), nodes - 1 - joined))]
        joined += len(batch)
        for neg, depth in batch:
            total += -neg
            if depth < max_depth:
                for p in profile:
                    heapq.heappush(heap, (neg * p, depth + 1))
    return total


def tree_rounds(nodes: int, width: int) -> int:
    """R(N): expansion forwards after the first (the last batch of nodes is not expanded)."""
    return max(0, math.ceil((nodes - 1) / max(1, width)) - 1)


def perfect_tokens(nodes: int, width: int) -> float:
    """Tokens per pass if every drafted token of one path is accepted: depth R(N) + 1, + bonus."""
    return 1.0 + min(nodes - 1, tree_rounds(nodes, width) + 1)
