"""Drafters: who proposes the token tree each step.

A drafter has two verbs (as in transformers' candidate generators): `propose` a tree hanging off
the root (the last committed token) and take `feedback` on what the target accepted. The
verifier, the cost model and the GUI do not care where a tree came from.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import mlx.core as mx
import numpy as np

from ..config import TreeConfig
from ..costmodel.catch_up import TAIL as CATCH_UP_TAIL
from .draft_model import DraftModel
from .frontier import Frontier
from .pipeline import Extension, extend_once, extension_slots, reusable
from .sampling import sample
from .tree import TokenTree

BOUND_SLACK = 0.5  # a draft is judged by half its layers' bound before it is timed whole


@dataclass
class Proposal:
    tree: TokenTree
    # proposal_probs[i]: distribution node i was sampled from; None = chosen deterministically
    proposal_probs: list[np.ndarray | None]
    chain: bool = False  # a plain chain: the target may use a causal mask
    forwards: list[tuple[int, float]] = field(default_factory=list)  # (tokens, seconds) per
    # draft forward (top-k selection included), for the cost model
    probe: bool = False  # a speculative step taken while the policy had fallen back to ar
    free_nodes: int = 0  # nodes from draft-free sources (prompt lookup, n-grams, Jacobi): they
    # cost verification, not draft forwards


@dataclass(frozen=True)
class StepResult:
    """What verification decided, fed back to the drafter."""

    proposal: Proposal
    accepted: tuple[int, ...]
    bonus_token: int
    step_seconds: float
    draft_seconds: float = 0.0
    verify_seconds: float = 0.0  # the target pass (IO waits included) and acceptance
    io_wait_seconds: float = 0.0  # of which waiting for streamed layers (draft work included)
    target_argmax: tuple[int, ...] | None = None  # per node, for drafters that learn from it
    wait_work_seconds: float = 0.0  # of the wait, draft work for the next tree (pipeline)
    io_busy_seconds: float | None = None  # the IO thread's reading during the step (streamed)


class Drafter(Protocol):
    def prefill(self, prompt_ids: list[int]) -> None: ...
    def propose(self, root: int, committed: int) -> Proposal: ...
    def commit(self, tree: TokenTree, path: list[int], bonus: int, committed: int) -> None: ...
    def rollback(self, committed: int) -> None: ...
    def feedback(self, result: StepResult) -> None: ...
    def next_root_only(self) -> bool: ...
    @property
    def threshold(self) -> float: ...


class ModelDrafter:
    """Shared plumbing of drafters backed by a resident draft model."""

    draft: DraftModel

    def prefill(self, prompt_ids):
        self.draft.prefill(prompt_ids)

    def commit(self, tree, path, bonus, committed):
        self.draft.commit(tree, path, committed)

    def rollback(self, committed):
        self.draft.rollback(committed)

    def next_root_only(self) -> bool:
        return False


class NoDrafter:
    """`ar` mode: the tree is just the root; the target decodes alone."""

    threshold = 0.0

    def prefill(self, prompt_ids):
        pass

    def propose(self, root, committed):
        return Proposal(TokenTree.with_root(root), [None], chain=True)

    def commit(self, tree, path, bonus, committed):
        pass

    def rollback(self, committed):
        pass

    def feedback(self, result):
        pass

    def next_root_only(self) -> bool:
        return True


class ChainDrafter(ModelDrafter):
    """mlx-lm style: k tokens in a line, greedy or sampled from the draft."""

    threshold = 0.0

    def __init__(self, draft: DraftModel, length: int, rng: np.random.Generator):
        self.draft, self.length, self.rng = draft, length, rng

    def propose(self, root, committed):
        tree = TokenTree.with_root(root)
        proposals: list[np.ndarray | None] = [None]
        q = self.draft.start(root)
        for step in range(self.length):
            if self.draft.sampling.greedy:
                local = int(mx.argmax(q).item())
                prob, dist = float(q[local].item()), None
            else:
                local_q = np.array(q, dtype=np.float64)
                local = sample(local_q, self.rng)
                prob, dist = float(local_q[local]), self.draft.over_vocab(local_q)
            token = self.draft.token_id(local)
            node = tree.add(token, len(tree) - 1, prob)
            proposals.append(dist)
            if step + 1 < self.length:
                q = self.draft.expand(tree, [node], committed)[0]
        return Proposal(tree, proposals, chain=True)

    def feedback(self, result):
        pass


class TreeDrafter(ModelDrafter):
    """Best-first token tree with branch navigation and self-adaptive fallback.

    Candidates wait in a frontier keyed by path probability; each round the best `width` join
    the tree and are expanded together in one draft forward with the tree mask (engine.decoding
    .frontier). Drafting stops when the best candidate's path probability falls below the
    (learned) threshold or the node/depth/round caps are reached. The policy
    (engine.costmodel.policy.StepPolicy) sets budget, width, rounds and threshold per step.
    With a streamed target, `work_while_waiting` drafts the next step's tree while the target's
    layers load (engine.decoding.pipeline), when the policy says the work fits in the wait.
    """

    def __init__(self, draft: DraftModel, config: TreeConfig, policy=None,
                 root_first: bool = False):
        self.draft, self.config = draft, config
        self.policy = policy  # StepPolicy, or None: fixed threshold and cap, no IO-wait rule
        self.extension: Extension | None = None  # draft work during the current verification
        self.carry: Extension | None = None  # ... that the accepted path made reusable
        self.wait_calls = 0  # draft forwards during this step's IO waits
        self.wait_forwards: list[tuple[int, float]] = []  # (tokens, seconds), for the policy
        self.wait_tokens = 0  # draft tokens processed while the target waited for IO
        self.wait_tokens_used = 0  # ... that the next step started from (reused tree nodes)
        self.wait_catch_up_tokens = 0  # pending tokens the draft caught up on during IO waits
        self.started = not root_first  # root_first: the first step is root-only (propose)

    @property
    def threshold(self) -> float:
        return self.policy.threshold if self.policy is not None else self.config.threshold

    def propose(self, root, committed):
        cfg, threshold, max_nodes = self.config, self.threshold, self.config.max_nodes
        rounds, width, k = None, cfg.expand_width, cfg.top_k  # rounds: forwards after the first
        if not self.started:
            # the first token is the target's alone: the draft's prefill (deferred into its
            # pending tokens) does not delay it, and the policy gets its timed ar step
            self.started = True
            return self.propose_root(committed, root)
        policy = self.policy
        if policy is not None and policy.wants_draft_timing():  # cheap exit for a slow draft
            self.time_draft(root)
        plan = policy.plan(len(self.draft.pending)) if policy is not None else None
        if plan is not None:
            if not plan.speculate or not self.caught_up():
                return self.propose_root(committed, root)
            threshold, max_nodes, rounds = plan.threshold, plan.max_nodes, plan.rounds
            width, k = plan.width or width, plan.children or k
        self.wait_calls = 0
        forwards: list[tuple[int, float]] = []
        clock = [time.perf_counter()]

        def processed(nodes: list[int], dists: mx.array, tokens: int) -> None:
            node_dists.update(zip(nodes, dists))
            frontier.push(tree, nodes, dists)  # waits for the forward
            now = time.perf_counter()
            forwards.append((tokens, now - clock[0]))
            clock[0] = now

        carry, self.carry = self.carry, None
        if carry is not None and carry.next_tree.tokens[0] == root:
            tree, frontier, node_dists = self.resume(carry)
            expanded = carry.next_forwards - 1
        else:
            tree, node_dists = TokenTree.with_root(root), {}
            frontier = Frontier(k, self.draft.to_ids)
            fed = len(self.draft.pending) + 1
            processed([0], self.draft.start(root)[None], fed)
            expanded = 0
        while frontier and len(tree) < max_nodes:
            batch = frontier.pop_batch(tree, width, max_nodes, threshold)
            grow = [n for n in batch if tree.depth[n] < cfg.max_depth]
            if not grow or len(tree) >= max_nodes or (rounds is not None and expanded >= rounds):
                break
            processed(grow, self.draft.expand(tree, grow, committed), len(grow))
            expanded += 1
        self.extension = Extension.for_tree(
            tree, committed, node_dists, width=width, max_nodes=max_nodes, rounds=rounds,
            max_depth=cfg.max_depth, threshold=threshold, top_k=k, vocab_ids=self.draft.to_ids,
        )
        return Proposal(tree, [None] * len(tree), forwards=forwards,
                        probe=plan is not None and plan.probe)

    def time_draft(self, token: int) -> None:
        """Give the policy d(1): a whole 1-token forward, unless even half the lower bound of
        its layers alone (timing noise aside) shows the draft cannot win (then that bound: it
        decides the same)."""
        policy, draft = self.policy, self.draft
        bound = draft.layers_seconds(token, fresh=policy.retime)
        if policy.could_win_with_draft(BOUND_SLACK * bound):
            bound = draft.forward_seconds(token, fresh=policy.retime)
        policy.observe_draft_timing(bound)

    def caught_up(self) -> bool:
        """Catch the draft up on its pending tokens before a tree, in timed chunks while the
        policy says it pays (engine.costmodel.catch_up); False: it stopped paying."""
        policy, draft = self.policy, self.draft
        while len(draft.pending) > CATCH_UP_TAIL:
            tokens = policy.catch_up_chunk(len(draft.pending))
            if tokens is None:
                policy.drop_plan()
                return False
            policy.observe_catch_up(tokens, draft.catch_up(tokens))
        return True

    def propose_root(self, committed: int, root: int) -> Proposal:
        """The policy fell back to ar: the root alone, no draft work (the draft catches up on
        the committed tokens in one batched forward when speculation resumes)."""
        if self.carry is not None:  # drop draft work done for a tree we will not grow
            self.carry = None
            self.draft.rollback(committed)
        self.extension = None
        return Proposal(TokenTree.with_root(root), [None], chain=True)

    def resume(self, carry: Extension) -> tuple[TokenTree, Frontier, dict]:
        """Start from the tree drafted during the last verification (its nodes are cached)."""
        self.draft.slot_nodes = list(carry.slots)
        self.draft.pending = []
        self.wait_tokens_used += len(carry.slots)
        return carry.next_tree, carry.frontier, dict(carry.next_dists)

    def work_while_waiting(self, facts) -> bool:
        """One draft forward for the next step's tree while the target waits for a layer, if
        the policy says it fits (engine.costmodel.rules.wait_work_fits); False: declined or
        nothing left to do."""
        ext = self.extension
        if ext is None or ext.done:
            return self.catch_up_while_waiting(facts)
        tokens = ext.next_tokens()
        policy = self.policy
        if policy is not None and not policy.draft_while_waiting(facts, self.wait_calls, tokens):
            return False
        t0 = time.perf_counter()
        if not extend_once(self.draft, ext):
            return False
        self.wait_forwards.append((tokens, time.perf_counter() - t0))
        self.wait_calls += 1
        self.wait_tokens += tokens
        return True

    def catch_up_while_waiting(self, facts) -> bool:
        """No tree to extend: time the draft, or catch it up on pending tokens, while the policy
        says it fits the wait (engine.costmodel.catch_up)."""
        policy, draft = self.policy, self.draft
        if policy is None:
            return False
        if policy.wants_draft_timing(waiting=True):
            self.time_draft(draft.pending[0] if draft.pending else 0)
            return True
        tokens = policy.catch_up_while_waiting(facts, len(draft.pending))
        if tokens <= 0:
            return False
        policy.observe_catch_up(tokens, draft.catch_up(tokens))
        self.wait_catch_up_tokens += tokens
        return True

    def commit(self, tree, path, bonus, committed):
        ext, self.extension = self.extension, None
        if reusable(ext, path, bonus):
            self.draft.commit(tree, path, committed, extension_slots(ext, self.draft))
            self.carry = ext
        else:
            self.draft.commit(tree, path, committed)

    def rollback(self, committed):
        self.extension = self.carry = None
        self.draft.rollback(committed)

    def next_root_only(self) -> bool:
        """The policy is at ar and stays there next step, whatever this step shows (lets the
        decode loop start the next target pass before this one is read)."""
        return self.policy is not None and self.policy.next_is_ar()

    def feedback(self, result):
        if self.policy is not None:
            self.policy.observe_forwards(self.wait_forwards)
            self.policy.observe(result)
        self.wait_forwards = []
