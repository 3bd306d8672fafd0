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

from ..config import SamplingConfig, TreeConfig
from ..costmodel.catch_up import TAIL as CATCH_UP_TAIL
from ..models.cache import KVCache, make_cache
from .draft_vocab import DraftVocab
from .frontier import Frontier
from .pipeline import Extension, extend_once, extension_slots, reusable
from .sampling import sample, target_distribution
from .tree import TokenTree


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


class DraftModel:
    """The resident draft model and its KV cache, kept in step with the committed sequence.

    Its cache holds the committed tokens it has processed; `pending` are committed tokens it has
    not seen yet (accepted nodes it never expanded). Tree nodes it expands are appended to the
    cache in expansion order (`slot_nodes`) until `commit` keeps the accepted ones.

    Padded vocabularies may differ in size (`target_vocab`): the draft only proposes ids the
    target has, and target tokens beyond the draft's rows are fed to it as id 0 (an embedding
    lookup out of range reads arbitrary memory; the target verifies everything anyway).
    """

    def __init__(self, model, sampling: SamplingConfig, prefill_chunk: int = 256,
                 target_vocab: int | None = None, measured: dict | None = None,
                 subset: DraftVocab | None = None):
        self.model = model
        self.subset = subset  # the rows the draft scores (draft_vocab), or None: all of them
        self.measured = {} if measured is None else measured  # kept across answers
        self.sampling = sampling
        self.prefill_chunk = prefill_chunk
        self.vocab = model.args.vocab_size
        self.proposable = min(self.vocab, target_vocab or self.vocab)
        self.cache: list[KVCache] = make_cache(len(model.layers))
        self.pending: list[int] = []
        self.slot_nodes: list[int] = []
        self.seconds = 0.0

    def forward(self, tokens: list[int], cache, positions=None, mask=None) -> mx.array:
        """Logits (1, L, draft vocabulary) of `tokens`: over the subset's rows when there is
        one (local index j = token `ids[j]`), else over every row."""
        x = mx.array([self.feedable(tokens)])
        if self.subset is None:
            return self.model(x, cache=cache, positions=positions, mask=mask)
        return self.subset.logits(self.model.hidden(x, cache, positions, mask))

    @property
    def to_ids(self):
        """Local draft-vocabulary indices -> token ids (None: they are the ids). Looked up at
        call time: the subset grows while a carried frontier still holds older indices."""
        return None if self.subset is None else (lambda local: self.subset.ids[local])

    def token_id(self, local: int) -> int:
        return local if self.subset is None else int(self.subset.ids[local])

    def over_vocab(self, q: np.ndarray) -> np.ndarray:
        """A draft distribution over token ids (zero outside the subset): the q that sampled
        acceptance must use for a token drawn from `q`."""
        if self.subset is None:
            return q
        full = np.zeros(self.proposable, dtype=np.float64)
        full[self.subset.ids] = q
        return full

    def distribution(self, logits: mx.array) -> mx.array:
        """Draft probabilities: the sampling distribution, or softmax (confidence) if greedy."""
        if self.subset is None and self.proposable < self.vocab:  # rows the target lacks
            logits = logits[..., : self.proposable]
        if self.sampling.greedy:
            return mx.softmax(logits.astype(mx.float32), axis=-1)
        return target_distribution(logits, self.sampling)

    def prefill(self, prompt_ids: list[int]) -> None:
        """Deferred: the prompt tokens before the last (the first step's root) that the cache
        does not hold yet (one kept from an earlier turn, engine.decoding.prompt_cache, holds
        the first `offset`) become pending; the first draft forward catches up on them, after
        the target's first token."""
        self.pending = list(prompt_ids[self.offset : -1])
        if self.subset is not None:  # the conversation's own tokens stay draftable
            self.subset.include(prompt_ids)

    def forward_seconds(self, token: int, fresh: bool = False) -> float:
        """Seconds of one 1-token forward on a scratch cache (this cache untouched): the cost
        model's first measure of d, taken before any catch-up on pending tokens; timed once per
        loaded draft (later answers reuse it: 0 s of draft work) unless `fresh`."""
        key = "forward_1" if self.subset is None else f"forward_1/rows={self.subset.low}"
        if fresh or key not in self.measured:
            scratch = make_cache(len(self.model.layers))
            t0 = time.perf_counter()
            mx.eval(self.forward([token], scratch))
            self.measured[key] = time.perf_counter() - t0
        return self.measured[key]

    def feedable(self, ids: list[int]) -> list[int]:
        """`ids` with any id beyond the draft's rows (a target's padding token) replaced by 0."""
        return [t if t < self.vocab else 0 for t in ids]

    @property
    def offset(self) -> int:
        return self.cache[0].offset

    def catch_up(self, tokens: int | None = None) -> float:
        """Feed the first `tokens` (None: all) pending committed tokens (they pile up while the
        drafter falls back to ar, and hold the deferred prompt); returns the seconds it took."""
        t0 = time.perf_counter()
        n = len(self.pending) if tokens is None else min(tokens, len(self.pending))
        chunk, self.pending = self.pending[:n], self.pending[n:]
        if self.subset is not None:
            self.subset.include(chunk)
        chunk = self.feedable(chunk)
        for i in range(0, len(chunk), self.prefill_chunk):  # the head is never evaluated
            self.model(mx.array([chunk[i : i + self.prefill_chunk]]), cache=self.cache)
            mx.eval([c.keys for c in self.cache])
        return time.perf_counter() - t0

    def start(self, root: int) -> mx.array:
        """Feed pending tokens + root as a chain; returns the root's draft distribution."""
        if len(self.pending) >= self.prefill_chunk:
            self.catch_up()
        chain = self.pending + [root]
        if self.subset is not None:  # target tokens (bonus, corrections) join the subset
            self.subset.include(chain)
        self.pending = []
        self.slot_nodes = [0]
        return self.distribution(self.forward(chain, self.cache)[0, -1])

    def expand(self, tree: TokenTree, nodes: list[int], committed: int) -> mx.array:
        """One draft forward over several tree nodes; returns their distributions (len, vocab)."""
        keys = self.slot_nodes + nodes
        mask = tree.attention_mask(committed, nodes, keys)
        logits = self.forward([tree.tokens[i] for i in nodes], self.cache,
                              tree.positions(committed, nodes), mask)
        self.slot_nodes = keys
        return self.distribution(logits[0])

    def commit(self, tree: TokenTree, path: list[int], committed: int,
               extra_slots: list[int] = ()) -> None:
        """Keep committed + the accepted nodes this cache processed (+ `extra_slots`, drafted
        past the path during verification); accepted nodes it never processed become pending."""
        if not self.slot_nodes:  # nothing drafted this step (ar fallback): catch up later
            self.pending = self.pending + [tree.tokens[n] for n in path]
            return
        slot = {node: committed + i for i, node in enumerate(self.slot_nodes)}
        seen = [n for n in path if n in slot]  # a prefix of the path
        for c in self.cache:
            c.keep(committed, [slot[n] for n in seen] + list(extra_slots))
        self.pending = [tree.tokens[n] for n in path[len(seen) :]]
        self.slot_nodes = []

    def rollback(self, committed: int) -> None:
        """Drop any uncommitted tree entries (used when a step is abandoned)."""
        for c in self.cache:
            c.trim(c.offset - min(c.offset, committed))
        self.slot_nodes = []


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
            policy.observe_draft_timing(self.draft.forward_seconds(root, fresh=policy.retime))
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
            token = draft.pending[0] if draft.pending else 0
            policy.observe_draft_timing(draft.forward_seconds(token, fresh=policy.retime))
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
