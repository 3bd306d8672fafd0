"""`lookahead` mode: Jacobi decoding with the target alone, verified as one token tree.

The lookahead window holds `ngram - 1` levels of `window` guessed tokens. Level 0 is a chain
below the root (column i at depth i + 1); the token of level j, column i hangs below level
j - 1, column i (depth i + j + 1). So every window token's path is the diagonal of lookahead
decoding (Fu et al. 2024) and the window is an ordinary TokenTree branch: the target computes it
in the same pass as the candidates, with the same tree mask, and the pure acceptance rule may
even accept window tokens. After the pass, the target's argmax at the last level's tokens
becomes the new last level (one Jacobi iteration), the levels move up one, and everything shifts
left by the number of accepted draft tokens. The paths of the verified nodes plus the target's
predictions feed the n-gram pool; pool n-grams starting with the root are the candidates.
"""

from __future__ import annotations

import numpy as np

from ..config import LookaheadConfig
from .drafters import Proposal
from .ngram_pool import NgramPool
from .tree import TokenTree

PRIOR = 0.5  # display probability of a guessed node (acceptance uses the target alone)


class LookaheadDrafter:
    threshold = 0.0
    wants_target_argmax = True

    def __init__(self, config: LookaheadConfig):
        self.config = config
        self.pool = NgramPool(config.ngram, config.pool_size)
        self.history: list[int] = []
        self.levels: list[list[int]] = []  # ngram - 1 levels of `window` guesses
        self.window_nodes: list[list[int]] = []  # tree node of each guess in the last proposal
        self.step_committed = 0
        # its own generator: refilling the window must not consume the sampling rng
        self.fill_rng = np.random.default_rng(0)

    def fill(self, count: int) -> list[int]:
        """Fresh guesses: tokens drawn from the recent context (the paper starts from random
        tokens; context tokens are as good and keep guesses in the text's vocabulary)."""
        recent = self.history[-256:] or [0]
        return [int(t) for t in self.fill_rng.choice(recent, count)]

    def prefill(self, prompt_ids):
        self.history = list(prompt_ids[:-1])
        self.levels = [self.fill(self.config.window) for _ in range(self.config.ngram - 1)]

    def propose(self, root, committed):
        cfg = self.config
        self.step_committed = committed
        tree = TokenTree.with_root(root)
        unlimited = 1 << 30
        for gram in self.pool.lookup(root, cfg.candidates):
            tree.add_branch(0, gram, PRIOR, "ngram", unlimited)
        nodes, above = [], [0] * cfg.window
        for j, level in enumerate(self.levels):
            if j == 0:  # level 0 is a chain below the root
                row = tree.add_branch(0, level, PRIOR, "jacobi", unlimited)
            else:  # level j, column i below level j - 1, column i
                row = [tree.add_branch(above[i], [t], PRIOR, "jacobi", unlimited)[0]
                       for i, t in enumerate(level)]
            nodes.append(row)
            above = row
        self.window_nodes = nodes
        return Proposal(tree, [None] * len(tree), free_nodes=len(tree) - 1)

    def commit(self, tree, path, bonus, committed):
        self.history.extend(tree.tokens[i] for i in path)

    def rollback(self, committed):
        del self.history[committed:]

    def feedback(self, result):
        argmax = result.target_argmax
        if argmax is None:
            return
        c, n = self.step_committed, self.config.ngram
        tree = result.proposal.tree
        self.pool.harvest(tree, argmax, self.history[max(0, c - n) : c])
        newest = [int(argmax[node]) for node in self.window_nodes[-1]]
        shift = len(result.accepted) - 1  # the new root sits shift + 1 deeper than the old one
        levels = self.levels[1:] + [newest]
        w = self.config.window
        self.levels = [(lv[shift:] + self.fill(min(shift, w)))[:w] for lv in levels]
