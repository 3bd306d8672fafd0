"""Prompt lookup: draft tokens copied from the prompt and the conversation so far.

Where the answer repeats text it has already seen (code edits, summaries, answers over a given
passage) the tokens after an earlier occurrence of the last few tokens are good guesses. The
`LookupDrafter` hangs such continuations, and n-gram pool continuations, off the root of
another drafter's tree (the draft model's, or just the root): one pass verifies them all.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..config import AHEAD_HITS_DECAY, AHEAD_MAX_BRANCH_HITS, LookupConfig
from ..costmodel.rules import branches_pay
from ..costmodel.slot_cost import SlotCost
from .branch_prior import (
    ALT,
    DEEP,
    RESUME,
    BranchPrior,
    LookupMemory,
    expected_tokens,
    match_kind,
)
from .drafters import Proposal
from .ngram_pool import NgramPool
from .tree import TokenTree

RESUME_OFFSETS = (1, 0, 2, 3)  # source tokens skipped: one replaced, one inserted, dropped
EXPLORE_EVERY = 16  # steps whose branches did not pay: every this many, the first one goes
OUTCOME_DECAY = 0.9  # root-only steps' tokens and seconds, with and without branches
OUTCOME_MIN = 2.0  # (decayed) steps of each kind before their rates are compared


def find_matches(
    context: np.ndarray, ngram_min: int, ngram_max: int, max_len: int, max_branches: int
) -> list[tuple[int, int]]:
    """Where continuations start after earlier occurrences of the context's last n tokens,
    each with n (the match's length).

    Longer matches first (n = ngram_max .. ngram_min), then the most recent occurrence first;
    a continuation that is a prefix of one already found is skipped.
    """
    found: list[tuple[int, ...]] = []
    starts: list[tuple[int, int]] = []
    size = len(context)
    for n in range(ngram_max, ngram_min - 1, -1):
        if size <= n:
            continue
        # windows starting at 0 .. size-n-1: each has at least one token after it
        windows = np.lib.stride_tricks.sliding_window_view(context[: size - 1], n)
        for start in np.flatnonzero((windows == context[-n:]).all(axis=1))[::-1]:
            cont = tuple(int(t) for t in context[start + n : start + n + max_len])
            if any(f[: len(cont)] == cont for f in found):
                continue
            found.append(cont)
            starts.append((int(start + n), n))
            if len(found) >= max_branches:
                return starts
    return starts


def find_continuations(
    context: np.ndarray, ngram_min: int, ngram_max: int, max_len: int, max_branches: int
) -> list[tuple[int, ...]]:
    """The continuations of `find_matches` (token ids)."""
    return [continuation(context, s, max_len)
            for s, _ in find_matches(context, ngram_min, ngram_max, max_len, max_branches)]


def continuation(context: np.ndarray, start: int, max_len: int) -> tuple[int, ...]:
    """The (at most `max_len`) token ids of `context` from `start` on."""
    return tuple(int(t) for t in context[start : start + max_len])


class LookupDrafter:
    """Adds draft-free branches (prompt lookup, n-gram pool) to `inner`'s tree.

    `inner` is a TreeDrafter (the merged tree) or a NoDrafter (draft-free tree mode). The extra
    nodes cost verification only; `Proposal.free_nodes` tells the cost model how many.
    """

    def __init__(self, inner, config: LookupConfig, verify_prior: float | None = None,
                 memory: LookupMemory | None = None):
        self.inner, self.config = inner, config
        # what earlier answers learned (engine.decoding.branch_prior.LookupMemory)
        self.memory = (memory or LookupMemory.for_lookup(config)).next_answer()
        # no draft model's policy to price a verify slot: price it from the passes themselves
        self.slots = SlotCost(verify_prior) if getattr(inner, "policy", None) is None else None
        self.history: list[int] = []  # committed tokens (the target cache's contents)
        self.pool = NgramPool(config.pool_ngram, config.pool_size) if (
            "ngram" in config.sources) else None
        self.wants_target_argmax = self.pool is not None
        self.work_while_waiting = getattr(inner, "work_while_waiting", None)
        self.draft = getattr(inner, "draft", None)  # the draft model, for the prompt cache
        self.step_committed = 0
        self.steps = 0  # verified steps (feedback)
        self.first_extra = 0  # index of the first draft-free node of the current tree
        # draft-free node -> (BranchPrior kind, depth of the node its branch hangs below)
        self.kinds: dict[int, tuple[str, int]] = {}
        self.full_tree: tuple[TokenTree, list[int]] | None = None  # before `pruned`, kept nodes
        self.hits = 0.0  # recent branchy steps whose target token started a branch (decaying)
        # this step's copies from the text: (history position of the first token, node they
        # hang below, their nodes); and where the text was left, with the steps since
        self.copies: list[tuple[int, int, list[int]]] = []
        self.left: list[tuple[int, int]] = []
        # this step's draft-free branches: (node they hang below, their new nodes' estimates)
        self.expected: list[tuple[int, list[float]]] = []

    @property
    def prior(self) -> BranchPrior:
        return self.memory.prior

    @property
    def outcomes(self) -> dict[bool, list[float]]:
        """Root-only steps of the inner drafter, with branches (True) and without: decayed
        [tokens, seconds, steps] — what the branches really won, launches ahead included."""
        return self.memory.outcomes
    @property
    def threshold(self) -> float:
        return self.inner.threshold

    @property
    def wait_tokens(self) -> int:
        return getattr(self.inner, "wait_tokens", 0)

    @property
    def wait_tokens_used(self) -> int:
        return getattr(self.inner, "wait_tokens_used", 0)

    @property
    def wait_catch_up_tokens(self) -> int:
        return getattr(self.inner, "wait_catch_up_tokens", 0)

    def prefill(self, prompt_ids):
        self.inner.prefill(prompt_ids)
        self.history = list(prompt_ids[:-1])

    def branches(self, tail: list[int], limit: int
                 ) -> list[tuple[str, tuple[int, ...], int, int]]:
        """Continuations of history + `tail` (the root, and a tree path below it): prompt lookup
        first, then the n-gram pool; at most `limit` from each. Each with the history position
        it was copied from (-1: from the pool) and the length of the match that found it (0:
        from the pool)."""
        cfg, out = self.config, []
        if "prompt" in cfg.sources:
            context = np.array(self.history + tail, dtype=np.int64)
            for s, n in find_matches(context, cfg.ngram_min, cfg.ngram_max,
                                     cfg.max_continuation, limit):
                out.append(("prompt", continuation(context, s, cfg.max_continuation), s, n))
        if self.pool is not None:
            out += [("ngram", g, -1, 0) for g in self.pool.lookup(tail[-1], limit)]
        return out

    def resumed(self) -> list[tuple[tuple[int, ...], int]]:
        """Copies resumed where the target left the text in recent steps: an edit replaces,
        inserts or drops a token or two and then copies on, so the text after the spot it left
        is a good guess even where the last tokens (new ones) match nothing."""
        cfg, size, out = self.config, len(self.history), []
        for pos, _ in self.left:
            for skip in RESUME_OFFSETS:
                if pos + skip < size:
                    start = pos + skip
                    out.append((tuple(self.history[start : start + cfg.max_continuation]), start))
        return out

    def propose(self, root, committed):
        proposal: Proposal = self.inner.propose(root, committed)
        tree = proposal.tree
        self.step_committed = committed
        before = self.first_extra = len(tree)
        cap = before + self.config.max_nodes
        # a node is worth its verification slot while its learned acceptance pays for the slot
        # at the policy's rate (or clears min_prob); the first branch's first node always goes,
        # so a source that fell below the cut can earn its way back
        cut = max(self.config.min_prob, self.node_worth())
        placed, self.kinds, self.copies, self.expected = [], {}, [], []
        found = self.branches([root], self.config.max_branches)
        if "prompt" in self.config.sources:
            found += [("prompt" + RESUME, c, start, 0) for c, start in self.resumed()]
        first, lengths = before, len(self.config.match_prior)
        for k, (source, tokens, start, n) in enumerate(found):
            kind = source + ALT if source in placed else (
                match_kind(source, n, lengths) if n else source)
            probs = self._estimates(kind, len(tokens), cut, first_free=k == 0)
            self._place(tree, 0, tokens[: len(probs)], source, kind, cap, before, start, probs)
            placed.append(source)
            first = len(tree) if k == 0 else first
        self._below_draft(tree, before, cut, cap)
        self._pay_for_the_pass(tree, before, first)
        extra = len(tree) - before
        if extra:
            proposal.proposal_probs = list(proposal.proposal_probs) + [None] * extra
            proposal.chain = False
            proposal.free_nodes += extra
        return proposal

    def _pay_for_the_pass(self, tree, before: int, first: int) -> None:
        """Drop this step's draft-free nodes when together they do not pay for the seconds
        they add to the pass (rules.branches_pay; on a CPU a root-only step's first extra node
        turns a one-token pass into a tree pass), or on a root-only step when recent such steps
        emitted fewer tokens per second with branches than without (`branches_lost`). Before
        the extra seconds are priced (on a CPU: until a one-node and a tree pass were timed)
        unless such steps already lost (an earlier answer's), and every EXPLORE_EVERY dropped
        steps, the first branch (ending at `first`) goes alone, so the price and the sources'
        acceptance get measured; on the first step none goes (its token is the time to first
        token)."""
        extra = len(tree) - before
        rate, seconds = self._price.running_rate, self._price.extra_slot_seconds(before, extra)
        priced = rate is not None and seconds is not None
        lost = before == 1 and self.branches_lost()
        if not extra or priced and branches_pay(expected_tokens(self.expected), seconds,
                                                rate) and not lost:
            self.memory.unpaid = 0
            return
        self.memory.unpaid += 1
        explore = self.steps > 0 and (not priced and not lost
                                      or self.memory.unpaid % EXPLORE_EVERY == 0)
        size = first if explore else before
        tree.truncate(size)
        self.kinds = {n: v for n, v in self.kinds.items() if n < size}
        self.copies = [(start, parent, [n for n in nodes if n < size])
                       for start, parent, nodes in self.copies if parent < size]

    def branches_lost(self) -> bool:
        """Did recent root-only steps with branches emit fewer tokens per second than those
        without? (The predicted price can miss what a branchy step really costs: a pass
        launched ahead on the root, then the branches verified after it.)"""
        (t1, s1, n1), (t0, s0, n0) = self.outcomes[True], self.outcomes[False]
        return n1 >= OUTCOME_MIN and n0 >= OUTCOME_MIN and t1 * s0 < t0 * s1

    def _estimates(self, kind: str, length: int, cut: float, scale: float = 1.0,
                   first_free: bool = False) -> list[float]:
        """Acceptance estimates (`scale` times the kind's by depth) of a branch's leading nodes
        that clear `cut`; with `first_free` its first node goes whatever its estimate."""
        probs: list[float] = []
        while len(probs) < length:
            p = scale * self.prior.prob(kind, len(probs) + 1)
            if p < cut and not (first_free and not probs):
                break
            probs.append(p)
        return probs

    def _place(self, tree, parent, tokens, source, kind, cap, before, start=-1,
               probs=()) -> list[int]:
        """Hang `tokens` below `parent`; `probs`: each one's acceptance estimate."""
        source = source.split("+")[0]
        nodes = tree.add_branch(parent, tokens, self.config.prior, source, cap)
        fresh = [p for n, p in zip(nodes, probs) if n >= before and n not in self.kinds]
        if fresh:
            self.expected.append((parent, fresh))
        for n in nodes:
            if n >= before:
                self.kinds.setdefault(n, (kind, tree.depth[parent]))
        if start >= 0 and nodes:
            self.copies.append((start, parent, nodes))
        return nodes

    def _below_draft(self, tree, before: int, cut: float, cap: int) -> None:
        """Continue the draft's most likely leaves with what follows their paths in the text
        or the pool: where the draft stops (its depth cap, its threshold) the text may go on,
        and a copy that resumes after a word the draft got right is found from there."""
        if before <= 1 or not self.config.below_draft:
            return
        drafted = range(1, before)
        inner = {tree.parents[i] for i in drafted}
        leaves = sorted((i for i in drafted if i not in inner), key=lambda i: -tree.path_prob[i])
        for leaf in leaves[: self.config.below_draft]:
            if len(tree) >= cap:
                return
            tail = [tree.tokens[i] for i in tree.path(leaf)]
            for source, tokens, start, _ in self.branches(tail, 1):
                kind = source + DEEP
                probs = self._estimates(kind, len(tokens), cut, scale=tree.path_prob[leaf])
                if probs:
                    self._place(tree, leaf, tokens[: len(probs)], source, kind, cap, before,
                                start, probs)
                    break  # one continuation per leaf

    @property
    def _price(self):
        """Who prices a verify slot: the draft's policy, or without a draft model the passes'
        own (costmodel.slot_cost)."""
        return self.slots if self.slots is not None else self.inner.policy

    def node_worth(self) -> float:
        """The acceptance a draft-free node needs to pay for its verify slot (`_price`)."""
        if self.slots is not None:
            return self.slots.worth()
        worth = self.inner.policy.node_worth
        return 0.0 if worth is None else worth

    def commit(self, tree, path, bonus, committed):
        self.inner.commit(tree, path, bonus, committed)
        self.history.extend(tree.tokens[i] for i in path)

    def rollback(self, committed):
        self.inner.rollback(committed)
        del self.history[committed:]
        self.full_tree = None

    def next_root_only(self) -> bool:
        """The inner drafter stays root-only and branches rarely start with the target's token:
        the decode loop may launch the next pass before its branches are known (greedy; it
        then keeps only the branch `pruned` leaves)."""
        promise = getattr(self.inner, "next_root_only", None)
        return promise is not None and promise() and self.hits < AHEAD_MAX_BRANCH_HITS

    def pruned(self, proposal: Proposal, first: int) -> Proposal:
        """The root and the subtree of its child carrying `first`, the target's greedy token
        after the root (computed ahead): greedy verification rejects every other child. The
        prior still learns from the whole tree (feedback)."""
        tree = proposal.tree
        kept, index = [0], {0: 0}
        out = TokenTree.with_root(tree.tokens[0])
        for i in range(1, len(tree)):
            parent = tree.parents[i]
            if parent in index and (parent != 0 or tree.tokens[i] == first):
                index[i] = out.add(tree.tokens[i], index[parent], tree.probs[i], tree.sources[i])
                kept.append(i)
        self.full_tree = (tree, kept)
        return replace(proposal, tree=out, proposal_probs=[None] * len(out),
                       chain=len(out) == 1, free_nodes=len(out) - self.first_extra)

    def feedback(self, result):
        self.inner.feedback(result)
        self.steps += 1
        if self.slots is not None:
            io = max(result.io_wait_seconds, result.io_busy_seconds or 0.0)
            self.slots.observe(len(result.proposal.tree), result.verify_seconds or
                               result.step_seconds, len(result.accepted), io)
        tree, accepted = result.proposal.tree, result.accepted
        if self.first_extra == 1:  # the inner drafter's tree was the root alone
            # each kind's evidence fades with its own new steps: what branches cost stays known
            # while they are held back (until an exploring step adds to it)
            arm = self.outcomes[len(tree) > 1]
            arm[:] = [OUTCOME_DECAY * x for x in arm]
            arm[0] += len(accepted)
            arm[1] += result.step_seconds
            arm[2] += 1
        if self.full_tree is not None:  # pruned: learn from the tree the drafter proposed
            tree, kept = self.full_tree
            accepted = [kept[i] for i in accepted]
            self.full_tree = None
        if len(tree) > self.first_extra:  # a branchy step: did a branch's first token hold?
            hit = len(accepted) > 1 and accepted[1] >= self.first_extra
            self.hits = AHEAD_HITS_DECAY * self.hits + (1 - AHEAD_HITS_DECAY) * hit
        self.prior.observe(tree, accepted, self.first_extra, self.kinds)
        self._note_left(tree, accepted)
        if self.pool is not None and result.target_argmax is not None:
            c = self.step_committed
            before = self.history[max(0, c - self.config.pool_ngram) : c]
            self.pool.harvest(result.proposal.tree, result.target_argmax, before)

    def _note_left(self, tree, accepted) -> None:
        """Where the copy that went furthest along the accepted path left the text (the bonus
        token took that position's place); older spots move on by this step's tokens."""
        steps = self.config.resume_steps
        if not steps or "prompt" not in self.config.sources:
            return
        taken, best = set(accepted), None
        for start, parent, nodes in self.copies:
            if parent not in taken:
                continue
            k = 0
            while k < len(nodes) and nodes[k] in taken:
                k += 1
            reach = tree.depth[parent] + k
            if best is None or reach > best[0]:
                best = (reach, start + k)
        moved = [(pos + len(accepted), age + 1) for pos, age in self.left if age + 1 < steps]
        self.left = ([(best[1], 0)] if best is not None else []) + moved
        del self.left[steps:]
