"""Compute-IO pipeline, draft side: the next step's tree, drafted while the target waits for
its layers.

While a streamed target verifies tree T, the draft assumes T's most probable path root..L will
be accepted and that the target's bonus token will be g1 = the draft's argmax after L. It grows
the tree the next step would propose from there: a best-first tree rooted at g1, in the draft's
cache after T's entries (the forward over L first, if drafting T never expanded it). If
verification then accepts exactly root..L and the bonus is g1, the next step starts from that
tree (its nodes already in the draft's cache, its frontier ready); otherwise the extra cache
entries are dropped. Either way the output is unchanged: the target verifies every token.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np

from .frontier import Frontier
from .tree import NEG_INF, TokenTree


@dataclass
class Extension:
    """Draft work for the next step beyond the most probable path of the tree under verification.

    The next tree follows this step's plan: `width` nodes per forward, at most `max_nodes`
    nodes and `rounds` expansion forwards after its first (g1's)."""

    tree: TokenTree
    committed: int
    leaf: int
    width: int
    max_nodes: int
    rounds: int | None
    max_depth: int
    threshold: float
    frontier: Frontier
    leaf_dist: mx.array | None = None  # draft distribution after the leaf
    next_tree: TokenTree | None = None  # rooted at the guessed bonus g1
    next_dists: dict[int, mx.array] = field(default_factory=dict)
    slots: list[int] = field(default_factory=list)  # next-tree nodes in the draft cache, in order
    next_forwards: int = 0  # draft forwards that processed next-tree nodes
    done: bool = False

    @classmethod
    def for_tree(
        cls, tree: TokenTree, committed: int, dists: dict[int, mx.array], **plan
    ) -> Extension:
        """`dists`: draft distributions of the nodes the draft already processed; `plan`: width,
        max_nodes, rounds, max_depth, threshold, top_k of the next tree."""
        node = 0  # follow the most probable child down to a leaf
        while kids := tree.children(node):
            node = max(kids, key=lambda k: tree.probs[k])
        frontier = Frontier(plan.pop("top_k"), plan.pop("vocab_ids", None))
        return cls(tree, committed, node, frontier=frontier, leaf_dist=dists.get(node), **plan)

    def next_tokens(self) -> int:
        """Tokens the next forward of `extend_once` processes."""
        if self.leaf_dist is None or self.next_tree is None:
            return 1
        return max(1, min(self.width, self.max_nodes - len(self.next_tree)))


def most_likely(dist: mx.array) -> int:
    return int(mx.argmax(dist).item())


def extend_once(draft, ext: Extension) -> bool:
    """One draft forward for the next step's tree; False when there is nothing more to do.

    `draft` is the DraftModel whose cache holds committed + draft.slot_nodes (+ ext.slots).
    """
    if ext.done:
        return False
    if ext.leaf_dist is None:
        ext.leaf_dist = draft.expand(ext.tree, [ext.leaf], ext.committed)[0]
        mx.eval(ext.leaf_dist)
        return True
    if ext.next_tree is None:
        ext.next_tree = TokenTree.with_root(draft.token_id(most_likely(ext.leaf_dist)))
        nodes = [0]
    else:
        nt = ext.next_tree
        if len(nt) >= ext.max_nodes or (
            ext.rounds is not None and ext.next_forwards - 1 >= ext.rounds
        ):
            ext.done = True
            return False
        batch = ext.frontier.pop_batch(nt, ext.width, ext.max_nodes, ext.threshold)
        nodes = [n for n in batch if nt.depth[n] < ext.max_depth]
        if not nodes:
            ext.done = True
            return False
    dists = _forward(draft, ext, nodes)
    ext.slots += nodes
    ext.next_dists.update(zip(nodes, dists))
    ext.frontier.push(ext.next_tree, nodes, dists)
    ext.next_forwards += 1
    return True


def _forward(draft, ext: Extension, nodes: list[int]) -> mx.array:
    """Draft distributions of next-tree `nodes`: each sees the committed tokens, the path
    root..leaf of the tree under verification, and its own ancestors in the next tree."""
    nt = ext.next_tree
    on_path = set(ext.tree.path(ext.leaf))
    current = np.array([0.0 if n in on_path else NEG_INF for n in draft.slot_nodes], np.float32)
    visible = nt.ancestors()[np.ix_(nodes, ext.slots + nodes)]
    mask = np.concatenate(
        [
            np.zeros((len(nodes), ext.committed), np.float32),
            np.broadcast_to(current, (len(nodes), len(current))),
            np.where(visible, 0.0, NEG_INF).astype(np.float32),
        ],
        axis=1,
    )
    base = ext.committed + ext.tree.depth[ext.leaf] + 1  # position of g1
    logits = draft.forward(
        [nt.tokens[n] for n in nodes],
        draft.cache,
        positions=mx.array([base + nt.depth[n] for n in nodes], dtype=mx.int32),
        mask=mx.array(mask),
    )
    return draft.distribution(logits[0])


def reusable(ext: Extension | None, path: list[int], bonus: int) -> bool:
    """Did verification take exactly root..leaf, then the guessed bonus g1?"""
    return (
        ext is not None
        and ext.next_tree is not None
        and path[-1] == ext.leaf
        and ext.next_tree.tokens[0] == bonus
    )


def extension_slots(ext: Extension, draft) -> list[int]:
    """Cache slots of the next tree's processed nodes (they follow the tree's slots)."""
    first = ext.committed + len(draft.slot_nodes)
    return list(range(first, first + len(ext.slots)))
