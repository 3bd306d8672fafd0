"""The frontier of a best-first token tree: candidate children waiting to join it.

Candidates are the top-k children of every processed node, keyed by path probability; each
round the best `width` join the tree together (one draft forward expands them with the tree
mask). Likely branches grow deep, unlikely ones never start.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

import mlx.core as mx
import numpy as np

from .tree import TokenTree


def top_k(probs: mx.array, k: int) -> tuple[list[list[int]], list[list[float]]]:
    """Top-k token ids and probabilities per row of (rows, vocab), best first."""
    k = min(k, probs.shape[-1])
    idx = mx.argpartition(-probs, kth=k - 1, axis=-1)[:, :k]
    vals = mx.take_along_axis(probs, idx, axis=-1)
    order = mx.argsort(-vals, axis=-1)
    idx, vals = mx.take_along_axis(idx, order, axis=-1), mx.take_along_axis(vals, order, axis=-1)
    return idx.tolist(), vals.tolist()


class Frontier:
    """Candidates of one tree, best path probability first."""

    def __init__(self, k: int, to_ids: Callable[[np.ndarray], np.ndarray] | None = None):
        self.k = k
        self.to_ids = to_ids  # a draft vocabulary subset's local indices -> token ids, or None
        self.heap: list = []
        self.tie = itertools.count()

    def __bool__(self) -> bool:
        return bool(self.heap)

    def push(self, tree: TokenTree, nodes: list[int], dists: mx.array) -> None:
        """Top-k children of processed `nodes` (their draft distributions `dists`)."""
        ids, vals = top_k(dists, self.k)  # .tolist() waits for the forward
        if self.to_ids is not None:
            ids = self.to_ids(np.array(ids)).tolist()
        for node, toks, probs in zip(nodes, ids, vals):
            for t, p in zip(toks, probs):
                heapq.heappush(self.heap, (-tree.path_prob[node] * p, next(self.tie), node, t, p))

    def pop_batch(self, tree: TokenTree, width: int, max_nodes: int, threshold: float) -> list[int]:
        """Add up to `width` best candidates to `tree` (never past `max_nodes`); returns them.
        A best candidate below `threshold` ends the tree: nothing left is worth drafting."""
        batch: list[int] = []
        while self.heap and len(batch) < width and len(tree) < max_nodes:
            if -self.heap[0][0] < threshold:
                self.heap.clear()
                break
            _, _, parent, token, prob = heapq.heappop(self.heap)
            batch.append(tree.add(token, parent, prob))
        return batch
