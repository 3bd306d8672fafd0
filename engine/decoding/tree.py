"""TokenTree: the draft's proposal for one step.

Node 0 is the root: the last committed token, which the target has not processed yet. Nodes
are stored in creation order with `parents[i] < i`; position of node i is
`committed + depth[i]`. The same mask and positions serve the draft (expanding a few nodes per
forward) and the target (verifying the whole tree in one pass).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np

NEG_INF = float("-inf")


@dataclass
class TokenTree:
    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)  # draft P(token | parent path)
    depth: list[int] = field(default_factory=list)
    path_prob: list[float] = field(default_factory=list)  # product of probs from the root
    # who proposed each node: "root", "draft" (draft model), "prompt" (prompt lookup),
    # "ngram" (n-gram pool), "jacobi" (lookahead window)
    sources: list[str] = field(default_factory=list)

    @classmethod
    def with_root(cls, token: int) -> TokenTree:
        tree = cls()
        tree.tokens, tree.parents, tree.probs = [token], [-1], [1.0]
        tree.depth, tree.path_prob, tree.sources = [0], [1.0], ["root"]
        return tree

    def __len__(self) -> int:
        return len(self.tokens)

    def add(self, token: int, parent: int, prob: float, source: str = "draft") -> int:
        """Append a child of `parent`; returns the new node's index."""
        self.sources.append(source)
        self.tokens.append(int(token))
        self.parents.append(parent)
        self.probs.append(float(prob))
        self.depth.append(self.depth[parent] + 1)
        self.path_prob.append(self.path_prob[parent] * float(prob))
        return len(self.tokens) - 1

    def truncate(self, size: int) -> None:
        """Drop the nodes from index `size` on (children come after their parents)."""
        for column in (self.tokens, self.parents, self.probs, self.depth, self.path_prob,
                       self.sources):
            del column[size:]

    def child(self, node: int, token: int) -> int | None:
        """The child of `node` carrying `token`, if any."""
        return next((i for i in self.children(node) if self.tokens[i] == token), None)

    def add_branch(self, parent: int, tokens: Sequence[int], prob: float, source: str,
                   max_nodes: int) -> list[int]:
        """Hang `tokens` below `parent` as a chain, reusing nodes that already carry the same
        prefix (a trie merge: siblings stay distinct); stops once the tree has `max_nodes`.
        Returns the node of each token placed."""
        nodes = []
        for t in tokens:
            nxt = self.child(parent, int(t))
            if nxt is None:
                if len(self) >= max_nodes:
                    break
                nxt = self.add(int(t), parent, prob, source)
            nodes.append(nxt)
            parent = nxt
        return nodes

    def children(self, node: int) -> list[int]:
        return [i for i, p in enumerate(self.parents) if p == node]

    def path(self, node: int) -> list[int]:
        """Node indices from the root to `node`, inclusive."""
        out = []
        while node >= 0:
            out.append(node)
            node = self.parents[node]
        return out[::-1]

    def ancestors(self) -> np.ndarray:
        """(n, n) bool: [i, j] is True when j is i or an ancestor of i."""
        n = len(self)
        anc = np.zeros((n, n), dtype=bool)
        for i in range(n):
            if self.parents[i] >= 0:
                anc[i] = anc[self.parents[i]]
            anc[i, i] = True
        return anc

    def positions(self, committed: int, nodes: Sequence[int] | None = None) -> mx.array:
        nodes = range(len(self)) if nodes is None else nodes
        return mx.array([committed + self.depth[i] for i in nodes], dtype=mx.int32)

    def attention_mask(
        self,
        committed: int,
        query_nodes: Sequence[int] | None = None,
        key_nodes: Sequence[int] | None = None,
        dtype=mx.float32,
    ) -> mx.array:
        """Additive mask (len(query_nodes), committed + len(key_nodes)).

        Every query sees all `committed` cache entries, then, among `key_nodes` (tree nodes in
        the cache order that follows the committed prefix), exactly its ancestors and itself.
        Defaults: all nodes as queries and keys (the target's one-pass verification).
        """
        all_nodes = list(range(len(self)))
        q = all_nodes if query_nodes is None else list(query_nodes)
        k = all_nodes if key_nodes is None else list(key_nodes)
        visible = self.ancestors()[np.ix_(q, k)]
        block = np.where(visible, 0.0, NEG_INF).astype(np.float32)
        full = np.concatenate([np.zeros((len(q), committed), np.float32), block], axis=1)
        return mx.array(full).astype(dtype)
