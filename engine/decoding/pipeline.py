"""Compute-IO pipeline, draft side: useful draft work while the target waits for its layers.

While a streamed target verifies tree T, the draft assumes T's most probable path will be
accepted and keeps drafting past its leaf L (LLMCad's speculative generation during
verification): it processes L, guesses the target's bonus token g1 = argmax, processes g1,
guesses g2, ... one token per call. If verification then accepts exactly root..L and the bonus
is g1, the next step starts with g1..gm already in the draft's cache and their distributions
known; otherwise the extra cache entries are dropped. Either way the output is unchanged: the
target still verifies everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np

from .tree import NEG_INF, TokenTree


@dataclass
class Extension:
    """Draft work beyond the leaf of the most probable path of the tree under verification."""

    tree: TokenTree
    committed: int
    leaf: int
    leaf_processed: bool = False
    tokens: list[int] = field(default_factory=list)  # g1, g2, ...: guessed continuation
    dists: list[mx.array] = field(default_factory=list)  # dist after leaf, g1, g2, ...
    processed: int = 0  # how many of `tokens` are in the draft cache

    @classmethod
    def for_tree(cls, tree: TokenTree, committed: int, dists: dict[int, mx.array]) -> Extension:
        """`dists`: draft distributions of the nodes the draft already processed."""
        node = 0  # follow the most probable child down to a leaf
        while kids := tree.children(node):
            node = max(kids, key=lambda k: tree.probs[k])
        ext = cls(tree, committed, node)
        if node in dists:  # expanded while drafting, its children not chosen: g1 is known
            ext.leaf_processed = True
            ext.dists.append(dists[node])
            ext.tokens.append(most_likely(dists[node]))
        return ext


def most_likely(dist: mx.array) -> int:
    return int(mx.argmax(dist).item())


def extend_once(draft, ext: Extension, max_tokens: int) -> bool:
    """One draft forward extending `ext`; False when there is nothing more to do.

    `draft` is the DraftModel whose cache holds committed + draft.slot_nodes.
    """
    if len(ext.tokens) >= max_tokens:
        return False
    tree = ext.tree
    if not ext.leaf_processed:
        dist = draft.expand(tree, [ext.leaf], ext.committed)[0]
        ext.leaf_processed = True
        ext.dists.append(dist)
        ext.tokens.append(most_likely(dist))
        return True
    # process g_{processed+1}: sees committed, the leaf's ancestors (in slot order), earlier g's
    token = ext.tokens[ext.processed]
    anc = set(tree.path(ext.leaf))
    row = [0.0] * ext.committed + [0.0 if n in anc else NEG_INF for n in draft.slot_nodes]
    row += [0.0] * (ext.processed + 1)
    position = ext.committed + tree.depth[ext.leaf] + 1 + ext.processed
    logits = draft.model(
        mx.array([[token]]),
        cache=draft.cache,
        positions=mx.array([position], dtype=mx.int32),
        mask=mx.array(np.array([row], np.float32)),
    )
    dist = draft.distribution(logits[0, -1])
    ext.processed += 1
    ext.dists.append(dist)
    ext.tokens.append(most_likely(dist))
    return True


def reusable(ext: Extension | None, path: list[int], bonus: int) -> bool:
    """Did verification take exactly root..leaf, then the guessed bonus g1?"""
    return (
        ext is not None
        and ext.leaf_processed
        and path[-1] == ext.leaf
        and bool(ext.tokens)
        and ext.tokens[0] == bonus
    )


def extension_slots(ext: Extension, draft) -> list[int]:
    """Cache slots of g1..g_processed (they follow the tree's slots)."""
    first = ext.committed + len(draft.slot_nodes)
    return list(range(first, first + ext.processed))
