"""The n-gram pool: what the target itself said after short token sequences.

Every verified node gives one n-gram for free: the last n-1 tokens of its path (committed
tokens included) followed by the target's argmax there. Rejected branches count too: the
target's prediction in a context that did not happen is still a plausible continuation of
those n-1 tokens elsewhere (the harvest behind lookahead decoding, Fu et al. 2024).
"""

from __future__ import annotations

from collections.abc import Sequence

from .tree import TokenTree


class NgramPool:
    """Per first token, up to `size` continuations of `n - 1` tokens, most recent first."""

    def __init__(self, n: int, size: int):
        self.n, self.size = n, size
        self.grams: dict[int, list[tuple[int, ...]]] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self.grams.values())

    def add(self, gram: Sequence[int]) -> None:
        key, rest = int(gram[0]), tuple(int(t) for t in gram[1:])
        known = self.grams.setdefault(key, [])
        if rest in known:
            known.remove(rest)
        known.insert(0, rest)
        del known[self.size :]

    def lookup(self, token: int, limit: int) -> list[tuple[int, ...]]:
        """Continuations (n - 1 tokens each) seen after `token`, most recent first."""
        return self.grams.get(int(token), [])[:limit]

    def harvest(self, tree: TokenTree, target_argmax: Sequence[int], before: Sequence[int]) -> None:
        """Add one n-gram per node whose path (after the committed tokens `before`) is long
        enough: path tail + the target's argmax at the node."""
        need = self.n - 1
        before = list(before[-need:]) if need else []
        paths: list[list[int]] = []  # each node's last `need` tokens, ending with its own
        for i, parent in enumerate(tree.parents):
            head = before if parent < 0 else paths[parent]
            paths.append((head + [tree.tokens[i]])[-need:])
            if len(paths[i]) == need:
                self.add(paths[i] + [int(target_argmax[i])])
